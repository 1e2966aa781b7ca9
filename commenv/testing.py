"""Run PettingZoo's own test suite on a commenv game configuration (used by our tests)."""

from __future__ import annotations

import functools
import types
from typing import Any

from commenv.core import EnvFamily


def pettingzoo_suite(
    family: EnvFamily,
    *,
    num_cycles: int = 20,
    seed_cycles: int = 10,
    max_cycles: bool = True,
    **config: Any,
) -> None:
    """``api_test`` (AEC), ``parallel_api_test``, ``seed_test``, ``parallel_seed_test``,
    ``render_test`` and, when the game truncates at ``max_cycles``, ``max_cycles_test``."""
    from pettingzoo.test import (
        api_test,
        max_cycles_test,
        parallel_api_test,
        parallel_seed_test,
        render_test,
        seed_test,
    )

    aec = functools.partial(family.env, **config)
    parallel = functools.partial(family.parallel_env, **config)
    parallel_api_test(parallel(), num_cycles=num_cycles)
    api_test(aec(), num_cycles=num_cycles)
    seed_test(aec, num_cycles=seed_cycles)
    parallel_seed_test(parallel, num_cycles=seed_cycles)
    render_test(aec)
    if max_cycles:
        max_cycles_test(types.SimpleNamespace(env=aec, parallel_env=parallel))


def documented_arguments(doc: str) -> dict[str, Any]:
    """The ``- ``name=default``: ...`` lines of a game's **Arguments** section, as a dict."""
    import ast
    import re

    section = doc.split("**Arguments**", 1)[1].split("**Version history.**", 1)[0]
    found: dict[str, Any] = {}
    for name, default in re.findall(r"^- ``(\w+)=(.+?)``:", section, flags=re.M):
        if name in found:
            raise AssertionError(f"argument {name!r} documented twice")
        found[name] = ast.literal_eval(default)
    return found


def check_documented_arguments(family: EnvFamily) -> None:
    """Every constructor argument of ``family``'s game has its own line in the doc page's
    Arguments section, with the real default; nothing else is documented there."""
    import inspect

    params = inspect.signature(family.game_cls.__init__).parameters
    real = {n: p.default for n, p in params.items() if n != "self"}
    documented = documented_arguments(family.__doc__)
    missing, extra = sorted(set(real) - set(documented)), sorted(set(documented) - set(real))
    assert not missing and not extra, f"undocumented {missing}, not arguments {extra}"
    wrong = {n: (documented[n], real[n]) for n in real if documented[n] != real[n]}
    assert not wrong, f"documented defaults differ from the code (doc, code): {wrong}"
