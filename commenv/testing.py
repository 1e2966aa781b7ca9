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
