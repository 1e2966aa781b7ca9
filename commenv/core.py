"""The batched core every game stands on, and the PettingZoo face put on top of it.

A game is a :class:`BatchedEnv`: its state is torch tensors with a leading ``num_envs``
dimension on one ``device``, and :meth:`BatchedEnv.step` is tensor operations over the whole
batch (the VMAS contract). Agents that train on GPU use this face directly.

:class:`BatchedParallelEnv` wraps a game built with ``num_envs=1`` into a PettingZoo
``ParallelEnv`` (numpy in, numpy out, actions validated against exactly the declared spaces);
the AEC form comes from PettingZoo's generic ``parallel_to_aec`` conversion, with each action
checked at its own turn (:class:`ValidatingAECEnv`).

Bad input is refused here, once for every game (``docs/bad_input.md``): one checker per kind
of constructor argument (:func:`check_int`, :func:`check_seed`, :func:`check_float`,
:func:`check_probability`, :func:`check_bool`, :func:`check_choice`, :func:`check_device`,
:func:`check_data_root`, :func:`check_memory` with :data:`MEMORY_LIMIT_BYTES`) and one action
check per face (:func:`validate_action` for numpy, :func:`batched_actions` for tensors).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from commenv.spaces import Selection, Simplex, check_distributions

TensorDict = dict[str, torch.Tensor]
StepResult = tuple[TensorDict, TensorDict, TensorDict, TensorDict, dict[str, dict]]
"""What a batched ``step`` returns: ``(obs, rewards, terminations, truncations, infos)``."""


MAX_CYCLES_LIMIT = 2**62
"""The longest episode a game accepts (``max_cycles``, quiz's ``max_lessons``): clocks and
counters are int64 tensors, and longer limits would overflow them at the first step (a
benchmark that wants no limit passes e.g. ``10**12``)."""
MEMORY_LIMIT_BYTES = 256 * 2**20
"""Bound on the memory a game allocates per step for observations and inboxes (all agents and
worlds together): 256 MiB. A configuration above it raises at construction with the computed
size, unless it is built with ``allow_large=True``."""


def format_space(space: gymnasium.Space) -> str:
    """Short description of a space for error messages."""
    dtype = getattr(space, "dtype", None)
    return f"{space} (dtype {dtype})"


def describe(value: Any) -> str:
    """Short description of what arrived, for error messages."""
    if isinstance(value, np.ndarray | torch.Tensor):
        return f"{type(value).__name__} shape {tuple(value.shape)} dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"[:200]


# -- configuration checkers: one per kind of parameter ----------------------------------------
def _is_real(value: Any) -> bool:
    """A real number that is not a bool (``True`` is not a count, a weight nor a seed)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise ``ValueError`` listing the valid choices when ``value`` is not one of them."""
    try:
        ok = isinstance(value, str | type(None)) and value in choices
    except TypeError:  # unhashable or array-like: never a choice
        ok = False
    if not ok:
        got = repr(value) if isinstance(value, str) else describe(value)  # a str speaks for itself
        raise ValueError(f"unknown {name} {got}; valid choices: {list(choices)}")


def check_int(
    name: str, value: Any, low: int = 1, high: int | None = None, *, optional: bool = False
) -> int | None:
    """``value`` as an ``int`` in ``[low, high]`` (``None`` allowed when ``optional``), or
    ``ValueError`` saying what arrived. Floats, strings and bools are refused, not cast."""
    if optional and value is None:
        return None
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not ok or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        none = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer {bound}{none}, got {describe(value)}")
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer in [0, 2**63 - 1] (``mask_seed``, ``data_seed``...)."""
    return check_int(name, value, 0, 2**63 - 1)


def generator_seed(seed: int) -> int:
    """What a torch generator is seeded with for the user's ``seed``: ``seed`` itself below
    2**32, else a 32-bit hash of it. torch's CPU generator keeps only the low 32 bits of its
    seed, so without the hash seeds 2**32 apart would play the same episode."""
    if seed < 2**32:
        return seed
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


@contextlib.contextmanager
def torch_seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """torch's CPU stream and, for a GPU ``device``, that GPU's, seeded with ``seed`` for the
    block, then handed back to the caller as they were. Only those streams: not every GPU's,
    as ``torch.manual_seed`` seeds them (lazily for GPUs not yet initialised)."""
    device = torch.device(device)
    gpus = []
    if device.type == "cuda":
        gpus = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=gpus, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if gpus:
            with torch.cuda.device(gpus[0]):
                torch.cuda.manual_seed(seed)
        yield


def check_float(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` when ``low_open``),
    or ``ValueError`` naming ``name``. Strings such as ``"0.3"`` and bools are refused."""
    if optional and value is None:
        return None
    ok = _is_real(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and v <= high
    if not ok:
        lo = "(" if low_open else "["
        span = f"in {lo}{low}, {high}]" if math.isfinite(low) or math.isfinite(high) else ""
        if math.isfinite(low) and not math.isfinite(high):
            span = f"> {low}" if low_open else f">= {low}"
        none = " or None" if optional else ""
        raise ValueError(
            f"{name} must be a finite number {span}{none}".rstrip() + f", got {describe(value)}"
        )
    return float(value)


def check_probability(name: str, value: Any) -> float:
    """A probability: a number in [0, 1]."""
    return check_float(name, value, 0.0, 1.0)


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` exactly (``"yes"``, ``1`` and ``None`` are refused)."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_device(value: Any, name: str = "device") -> torch.device:
    """A ``torch.device`` that exists on this machine, or ``ValueError`` naming ``device``.

    ``"cuda"`` without CUDA (or a CUDA index past the last GPU) says so here, instead of a
    deep ``AssertionError`` on the first tensor.
    """

    def fail(why: str) -> ValueError:
        return ValueError(
            f"{name} must be a device this machine has ('cpu', 'cuda' when CUDA is available, "
            f"'mps' on Apple silicon); {why}, got {describe(value)}"
        )

    if not isinstance(value, str | torch.device):
        raise fail("not a torch device nor a string")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise fail("not a torch device name") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise fail("CUDA is not available here (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise fail(f"this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise fail("MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise fail(f"device type {dev.type!r} is not supported")
    return dev


def check_data_root(value: Any, name: str = "data_root") -> str | None:
    """``None`` (the default search path) or an existing directory; a missing one raises
    rather than silently falling back to another location."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not Path(value).expanduser().is_dir():
        raise ValueError(
            f"{name} must be None or an existing directory (a missing one is not replaced by "
            f"another location), got {describe(value)}"
        )
    return str(Path(value).expanduser())


def check_memory(what: str, nbytes: int, allow_large: bool, **sizes: int) -> None:
    """Raise when ``nbytes`` exceed :data:`MEMORY_LIMIT_BYTES` unless ``allow_large``; the
    error names the configuration ``sizes`` the estimate came from."""
    if not check_bool("allow_large", allow_large) and nbytes > MEMORY_LIMIT_BYTES:
        config = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
        raise ValueError(
            f"{config} needs {nbytes / 2**20:,.0f} MiB of {what}; expected at most "
            f"{MEMORY_LIMIT_BYTES / 2**20:,.0f} MiB (commenv.core.MEMORY_LIMIT_BYTES), "
            f"got {nbytes:,} bytes: pass allow_large=True if you mean it"
        )


# -- action validation, numpy faces ------------------------------------------------------------
def _numeric_kind(arr: np.ndarray) -> str | None:
    """Why an array's dtype can never be an action (``None`` when it is a real number)."""
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        return "not a numeric array"
    if np.issubdtype(arr.dtype, np.complexfloating):
        return "complex values"
    return None


def _bits_ok(arr: np.ndarray, space: gymnasium.Space) -> bool:
    """Integer-space values checked in their own dtype, before any cast (256 is not a bit)."""
    if isinstance(space, gymnasium.spaces.MultiBinary):
        return bool(np.all((arr == 0) | (arr == 1)))
    return bool(np.all((arr >= 0) & (arr < space.nvec)))


def _validate_dict(agent: str, space: gymnasium.spaces.Dict, action: dict) -> dict:
    """Composite actions (e.g. node_graph_v0's broadcast bits + payload): every key."""
    out = {}
    for key, sub in space.spaces.items():
        try:
            out[key] = validate_action(agent, sub, action[key])
        except ValueError as exc:
            raise ValueError(f"{exc} (key {key!r} of a Dict action)") from None
    return out


def validate_action(
    agent: str, space: gymnasium.Space, action: Any
) -> np.ndarray | dict[str, np.ndarray]:
    """Return ``action`` as an array of ``space``, or raise ``ValueError`` naming both sides.

    The one action check of every numpy face (Parallel and AEC). A ``Dict`` space takes a dict
    with exactly its keys and returns a dict of arrays.

    Nothing is clipped, wrapped or cast silently: a float array of 0.0/1.0 is accepted for a
    ``MultiBinary`` space (it is exactly representable), 0.5, 256 or -255 are not; float spaces
    (``Box``, ``Simplex``) take floating-point arrays only.
    """

    def fail(why: str) -> ValueError:
        return ValueError(
            f"invalid action for agent {agent!r}: {why}; expected {format_space(space)}, "
            f"got {describe(action)}"
        )

    if (  # the common case, checked with three array ops: integer bits of the right shape
        type(action) is np.ndarray
        and type(space) is gymnasium.spaces.MultiBinary
        and action.dtype.kind in "biu"
        and action.shape == space.shape
    ):
        if ((action == 0) | (action == 1)).all():
            return action.astype(space.dtype)
        raise fail("values out of the space")
    if isinstance(space, gymnasium.spaces.Dict):
        if not isinstance(action, dict) or set(action) != set(space.spaces):
            raise fail(f"expected a dict with keys {sorted(space.spaces)}")
        return _validate_dict(agent, space, action)
    if isinstance(action, torch.Tensor):
        action = action.detach().cpu().numpy()
    try:
        arr = np.asarray(action)
    except Exception as exc:  # ragged lists and the like
        raise fail(f"not convertible to an array ({exc})") from None
    if (why := _numeric_kind(arr)) is not None:
        raise fail(why)
    if tuple(arr.shape) != tuple(space.shape or ()):
        raise fail(f"wrong shape {tuple(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise fail("contains NaN or inf")
    if isinstance(space, gymnasium.spaces.MultiBinary | gymnasium.spaces.MultiDiscrete):
        if np.issubdtype(arr.dtype, np.floating) and not np.all(arr == np.round(arr)):
            raise fail("non-integer values")
        if not _bits_ok(arr, space):
            raise fail("values out of the space")
        arr = arr.astype(space.dtype)
        if isinstance(space, Selection) and int(arr.sum()) > space.max_selected:
            raise fail(
                f"the selection picks {int(arr.sum())} samples, more than {space.max_selected}"
            )
    elif not np.issubdtype(arr.dtype, np.floating):
        raise fail(f"expected a floating-point array, got dtype {arr.dtype}")
    elif isinstance(space, Simplex):  # say which row is wrong
        check_distributions(
            f"invalid action for agent {agent!r}", torch.as_tensor(arr)[None], space
        )
    elif type(space) is gymnasium.spaces.Box and arr.dtype != space.dtype:
        # numpy's default float64 (and lists) taken as the space's dtype, as the batched face
        # takes them: Box.contains refuses any dtype that does not cast to it safely
        with np.errstate(over="ignore"):  # an overflow is refused just below
            cast = arr.astype(space.dtype)
        if not np.all(np.isfinite(cast)):
            raise fail(f"values beyond the range of {space.dtype}")
        arr = cast
    if not space.contains(arr):
        raise fail("values out of the space")
    return arr


def check_action_keys(
    actions: Any, expected: list[str], valid: list[str], face: str = "step()"
) -> None:
    """The dict every ``step`` takes: a mapping with exactly the ``expected`` agents' keys.

    ``TypeError`` for something that is not a dict; ``ValueError`` naming unknown agents
    (with the ``valid`` ones) or missing ones.
    """
    if not isinstance(actions, Mapping):
        raise TypeError(
            f"{face} expected a dict {{agent: action}} for agents {expected}, "
            f"got {describe(actions)}"
        )
    unknown = [a for a in actions if a not in valid]
    if unknown:
        raise ValueError(f"unknown agent key(s) {unknown!r}; valid agents: {valid}")
    missing = [a for a in expected if a not in actions]
    extra = [a for a in actions if a not in expected]
    if missing or extra:
        why = f"missing actions for agent(s) {missing}" if missing else ""
        if extra:
            why += ("; " if why else "") + f"no action expected now from {extra}"
        raise ValueError(f"{face} needs actions for exactly the keys {expected}: {why}")


# -- action validation, batched faces ----------------------------------------------------------
def _as_tensor(agent: str, value: Any, device: torch.device, fail: Any) -> torch.Tensor:
    """One agent's batched action as a real-valued tensor on ``device``."""
    if not isinstance(value, torch.Tensor):
        try:
            arr = np.asarray(value)
        except Exception as exc:
            raise fail(f"not convertible to an array ({exc})") from None
        if (why := _numeric_kind(arr)) is not None:
            raise fail(why)
        value = torch.as_tensor(arr)
    elif value.is_complex():
        raise fail("complex values")
    return value if value.device == device else value.to(device)


def _batched_dict(
    agents: list[str],
    space: gymnasium.spaces.Dict,
    actions: Mapping[str, Any],
    num_envs: int,
    device: torch.device,
    relaxed: bool,
) -> TensorDict:
    """:func:`batched_actions` of a ``Dict`` space: a dict of stacked tensors, key by key."""
    for a in agents:
        value = actions[a]
        if not isinstance(value, Mapping) or set(value) != set(space.spaces):
            raise ValueError(
                f"invalid action for agent {a!r}: expected a dict with keys "
                f"{sorted(space.spaces)} for {space}, got "
                f"{sorted(value) if isinstance(value, Mapping) else describe(value)}"
            )
    return {
        k: batched_actions(
            agents,
            sub,
            {a: actions[a][k] for a in agents},
            num_envs,
            device,
            relaxed=relaxed,
            key=k,
        )
        for k, sub in space.spaces.items()
    }


def batched_actions(
    agents: list[str],
    space: gymnasium.Space,
    actions: Mapping[str, Any],
    num_envs: int,
    device: torch.device,
    *,
    relaxed: bool = False,
    key: str | None = None,
) -> torch.Tensor | TensorDict:
    """Stack the batched actions of ``agents`` (all of one ``space``) into
    ``(num_envs, len(agents), *space.shape)`` and check them: the one action check of every
    batched face. A ``Dict`` space gives a dict of stacked tensors, key by key.

    ``relaxed``: ``MultiBinary`` takes any value in [0, 1] (relaxed messages), not only 0/1.
    ``key``: the ``Dict`` key being checked (named in errors).
    """
    if isinstance(space, gymnasium.spaces.Dict):
        return _batched_dict(agents, space, actions, num_envs, device, relaxed)
    expected = (num_envs, *space.shape)
    dims = ", ".join(map(str, space.shape))
    floats = not isinstance(space, gymnasium.spaces.MultiBinary | gymnasium.spaces.MultiDiscrete)
    parts = []
    for a in agents:

        def fail(why: str, a: str = a) -> ValueError:
            return ValueError(
                f"invalid action for agent {a!r}{_key(key)}: {why}; expected {space} in each of "
                f"num_envs={num_envs} worlds, a tensor of shape (num_envs, {dims}) = "
                f"{expected}, got {describe(actions[a])}"
            )

        t = _as_tensor(a, actions[a], device, fail)
        if tuple(t.shape) != expected:
            hint = " (missing the leading num_envs dimension?)" if t.shape == space.shape else ""
            raise fail(f"wrong shape {tuple(t.shape)}{hint}")
        if floats and not t.is_floating_point():  # before stacking promotes it
            raise fail(f"expected a floating-point tensor, got dtype {t.dtype}")
        parts.append(t)
    stacked = torch.stack(parts, 1) if len(parts) > 1 else parts[0].unsqueeze(1)
    check_batch_values(agents, space, stacked, relaxed=relaxed, key=key)
    return stacked


def _key(key: str | None) -> str:
    return "" if key is None else f" (key {key!r})"


def _check_bits(
    agents: list[str], space: gymnasium.Space, x: torch.Tensor, relaxed: bool, where: str, fail
) -> None:
    """Bits (0/1, or [0, 1] when ``relaxed``) and a ``Selection``'s bound on the ones."""
    if relaxed:
        y = x.detach()  # integer bits are checked in their own dtype: no float copy
        low, high = torch.aminmax(y if y.dtype != torch.bool else y.to(torch.uint8))
        # NaN propagates into both
        if not (0 <= float(low) and float(high) <= 1):
            raise fail(~((x >= 0) & (x <= 1)), "expected values in [0, 1]")
    else:
        bad = (x != 0) & (x != 1)  # NaN is neither
        if bool(bad.any()):
            raise fail(bad, "expected bits, 0 or 1")
    if isinstance(space, Selection):
        count = x.reshape(*x.shape[:2], -1).sum(-1)
        if bool((count > space.max_selected).any()):
            env, i = (int(v) for v in (count > space.max_selected).nonzero()[0])
            raise ValueError(
                f"invalid action for agent {agents[i]!r}{where}: the selection picks too "
                f"many samples; expected at most {space.max_selected} ones in {space}, "
                f"got {int(count[env, i])} in env {env}"
            )


def check_batch_values(
    agents: list[str],
    space: gymnasium.Space,
    x: torch.Tensor,
    *,
    relaxed: bool = False,
    key: str | None = None,
) -> None:
    """Raise ``ValueError`` naming the first agent whose slice of ``x`` ``(num_envs,
    len(agents), *space.shape)`` is outside ``space`` (NaN and inf are always outside)."""
    where = _key(key)

    def fail(bad: torch.Tensor, why: str) -> ValueError:
        i = int(bad.reshape(bad.shape[0], bad.shape[1], -1).any(-1).any(0).nonzero()[0])
        shown = x[:, i][bad[:, i]][:4].tolist()
        return ValueError(
            f"invalid action for agent {agents[i]!r}{where}: {why} for {space}, got values {shown}"
        )

    if x.is_complex():
        raise ValueError(
            f"invalid action for agent {agents[0]!r}{where}: complex values; expected "
            f"{space}, got dtype {x.dtype}"
        )
    if isinstance(space, gymnasium.spaces.MultiBinary):
        _check_bits(agents, space, x, relaxed, where, fail)
        return
    if not x.is_floating_point():
        raise ValueError(
            f"invalid action for agent {agents[0]!r}{where}: expected a floating-point tensor "
            f"for {space}, got dtype {x.dtype}"
        )
    if isinstance(space, Simplex):
        for i, a in enumerate(agents):
            check_distributions(f"invalid action for agent {a!r}{where}", x[:, i].detach(), space)
        return
    bad = ~torch.isfinite(x)
    box = isinstance(space, gymnasium.spaces.Box)
    if box and (space.bounded_below.any() or space.bounded_above.any()):
        low = torch.as_tensor(space.low, device=x.device)
        high = torch.as_tensor(space.high, device=x.device)
        bad = bad | (x < low) | (x > high)
    if bool(bad.any()):
        raise fail(bad, "NaN, inf or values outside the bounds")


def check_env_index(
    env_index: Any, num_envs: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The worlds a per-world ``reset`` names, as a ``(num_envs,)`` bool mask on ``device``.

    ``env_index`` is an ``int`` in ``[0, num_envs)``, a non-empty sequence or 1-D integer
    tensor of such indices (repeats allowed), or a ``(num_envs,)`` bool mask (numpy or torch;
    an all-False mask resets nothing). Anything else raises ``ValueError`` saying what arrived,
    before any world is touched.
    """

    def fail(why: str) -> ValueError:
        return ValueError(
            f"env_index must be an int in [0, {num_envs - 1}], a sequence of them or a "
            f"({num_envs},) bool mask; {why}"
        )

    if isinstance(env_index, bool | np.bool_):
        raise fail(f"got {describe(env_index)}")
    if isinstance(env_index, int | np.integer):
        idx = torch.tensor([int(env_index)])
    else:
        try:
            idx = torch.as_tensor(
                np.asarray(env_index) if not isinstance(env_index, torch.Tensor) else env_index
            )
        except (TypeError, ValueError, RuntimeError):
            raise fail(f"got {describe(env_index)}") from None
        if idx.dtype == torch.bool:
            if idx.shape != (num_envs,):
                raise fail(f"got a bool mask of shape {tuple(idx.shape)}")
            return idx.to(device)
        if idx.ndim != 1 or idx.numel() == 0 or idx.dtype.is_floating_point or idx.is_complex():
            raise fail(f"got {describe(env_index)}")
        idx = idx.long()
    if bool(((idx < 0) | (idx >= num_envs)).any()):
        raise fail(f"got {idx.tolist()}")
    mask = torch.zeros(num_envs, dtype=torch.bool)
    mask[idx.cpu()] = True
    return mask.to(device)


def refuse_seeded_partial_reset(seed: Any) -> None:
    """``ValueError`` for ``reset(seed=..., env_index=...)``: a partial reset continues the
    game's random streams, and reseeding part of a batch has no meaning."""
    if seed is not None:
        raise ValueError(
            f"reset(seed=..., env_index=...) got seed={seed!r}: a partial reset continues the "
            "game's random streams (reseeding part of a batch has no meaning); call "
            "reset(env_index=...) without a seed, or reset(seed=...) to reseed every world"
        )


def check_partial_reset(
    seed: Any, env_index: Any, num_envs: int, device: torch.device | str, started: bool
) -> torch.Tensor:
    """The bool mask of a ``reset(seed, env_index)`` that restarts some worlds, after the
    checks every game shares: no seed (:func:`refuse_seeded_partial_reset`), a valid selector
    (:func:`check_env_index`) and a running batch (``started``: a full reset came first)."""
    refuse_seeded_partial_reset(seed)
    mask = check_env_index(env_index, num_envs, device)
    if not started:
        raise ValueError("reset(env_index=...) called before reset(); call reset() first")
    return mask


REUSE_BYTES = 2**20
"""Observation tensors of at least this many bytes are recycled once nothing holds them (CPU
only): above glibc's mmap threshold a fresh tensor costs a page fault per 4 KiB each step."""


def _int64(pattern: int) -> int:
    """A 64-bit pattern as the signed int64 a torch tensor holds it."""
    return pattern - (1 << 64) if pattern >= 1 << 63 else pattern


_GOLDEN, _MIX1, _MIX2 = map(_int64, (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift_right(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def splitmix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64 (Steele, Lea and Flood 2014) of int64 tensors, elementwise: a bijection of
    64-bit patterns whose outputs pass as independent uniform bits. Integer arithmetic with
    two's-complement wrap-around only, so every device and CPU kernel gives the same bits."""
    z = z + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


class WorldStreams:
    """Random numbers keyed by world: what a partial reset (``reset(env_index=...)``) draws.

    Draw ``j`` of world ``w`` under counters ``c_1 .. c_k`` (a restart count, an epoch) is
    SplitMix64 chained over ``(key, w, c_1, .., c_k, j)``: a pure function of those, as
    Philox-style counter-based generators are (JAX's ``fold_in``, NumPy's
    ``SeedSequence.spawn``). So the episode a world starts after its ``r``-th restart depends
    on the seed, the world's index and ``r`` alone, never on which other worlds restarted
    before or at the same time (a shared generator's next draws depend on every draw before
    them), and it is the same on every device and CPU.
    """

    def __init__(self, key: int, device: torch.device) -> None:
        self.key, self.device = key % 2**64, device
        self._key = splitmix64(torch.tensor([_int64(self.key)], device=device))

    def bits(self, worlds: torch.Tensor, *counters: torch.Tensor, n: int) -> torch.Tensor:
        """``(len(worlds), n)`` int64 of 63 uniform random bits each (values in
        ``[0, 2**63)``); ``counters`` are ``(len(worlds),)`` integer tensors."""
        h = splitmix64(self._key ^ worlds.to(self.device, torch.int64))
        for counter in counters:
            h = splitmix64(h ^ counter.to(self.device, torch.int64))
        j = torch.arange(n, device=self.device)
        return _shift_right(splitmix64(h[:, None] ^ j), 1)

    def uniform(self, worlds: torch.Tensor, *counters: torch.Tensor, n: int) -> torch.Tensor:
        """``(len(worlds), n)`` float32 uniform in ``[0, 1)`` on the ``2**-24`` grid
        ``torch.rand`` draws float32 from."""
        top = self.bits(worlds, *counters, n=n) >> 39  # the top 24 of the 63 bits
        return top.to(torch.float32) * 2.0**-24

    def integers(
        self, high: int, worlds: torch.Tensor, *counters: torch.Tensor, n: int
    ) -> torch.Tensor:
        """``(len(worlds), n)`` int64 in ``[0, high)`` (a remainder of 63 bits: a bias below
        ``high / 2**63``)."""
        return self.bits(worlds, *counters, n=n) % high

    def permutations(self, worlds: torch.Tensor, *counters: torch.Tensor, n: int) -> torch.Tensor:
        """``(len(worlds), n)`` uniform random permutations of ``range(n)``: the order of
        ``n`` 63-bit keys (a stable sort, so even a tie has one answer)."""
        return self.bits(worlds, *counters, n=n).argsort(dim=1, stable=True)


POOL_SIZE = 3
"""How many recent observation tensors a large batch keeps for reuse."""
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


class ObservationPool:
    """Fresh-looking observation tensors of one ``shape`` for a game's steps.

    Small batches (under :data:`REUSE_BYTES`), other devices, or a torch without storage
    use counts get a new tensor every call. Large CPU batches get back one of their last
    :data:`POOL_SIZE` tensors that nothing outside the pool references any more (no view, no
    numpy array), so a step does not page-fault tens of MiB of new memory, and a tensor the
    caller still holds is never written.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        device: torch.device,
        enabled: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        self.element_size = torch.empty(0, dtype=dtype).element_size()
        nbytes = self.element_size * math.prod(self.shape)
        self.recycles = (
            enabled and nbytes >= REUSE_BYTES and _USE_COUNT is not None
        ) and self.device.type == "cpu"
        self.kept: list[torch.Tensor] = []

    @staticmethod
    def unreferenced(t: torch.Tensor) -> bool:
        """Nothing but the pool holds ``t``'s memory."""
        assert _USE_COUNT is not None
        return _USE_COUNT(t.untyped_storage()._cdata) <= 2  # the pool's tensor + this query's

    def spare_bytes(self, held: torch.Tensor | None = None) -> int:
        """Bytes of the kept tensors other than the one whose memory ``held`` uses (a game's
        state may hold one of them: that one is counted with the state)."""
        ptr = None if held is None else held.untyped_storage().data_ptr()
        spare = [b for b in self.kept if b.untyped_storage().data_ptr() != ptr]
        return sum(b.element_size() * b.nelement() for b in spare)

    def next(self) -> torch.Tensor:
        """A tensor of ``shape`` and ``dtype`` for the next observations (contents undefined)."""
        if not self.recycles:
            return torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for buf in self.kept:
            if self.unreferenced(buf):
                return buf
        buf = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        self.kept = [*self.kept[1 - POOL_SIZE :], buf] if POOL_SIZE > 1 else [buf]
        return buf

    def copy_of(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x``, in a recycled tensor when the pool recycles tensors like it (same
        shape and dtype, no gradient to keep), else ``x.clone()``."""
        if self.recycles and (x.shape, x.dtype) == (self.shape, self.dtype) and not x.requires_grad:
            return self.next().copy_(x)
        return x.clone()


class BatchedEnv(ABC):
    """A game over ``num_envs`` worlds at once, as torch tensors on ``device``.

    Contract (all tensors on ``self.device``):

    - ``reset(seed)`` -> ``(obs, infos)``; ``obs[agent]`` is ``(num_envs, *obs_shape)``.
    - ``step(actions)`` with ``actions[agent]`` ``(num_envs, *act_shape)`` ->
      ``(obs, rewards, terminations, truncations, infos)``; rewards ``(num_envs,)`` float32,
      terminations/truncations ``(num_envs,)`` bool, ``infos[agent]`` a dict of tensors with
      leading ``num_envs``.
    - ``observation_space(agent)`` / ``action_space(agent)``: the spaces of *one* env, the
      same object on every call.

    - ``reset(seed, env_index=...)`` restarts only the chosen worlds (an ``int``, a sequence
      or 1-D integer tensor of indices, or a ``(num_envs,)`` bool mask; see
      :func:`check_env_index`): their clocks go back to 0 and they draw a fresh episode, the
      other worlds are untouched, and the returned ``obs``/``infos`` cover the whole batch.
      A batched training loop resets the worlds that finished and never the whole batch
      (VMAS' ``reset_at``; TorchRL's ``_reset`` mask).
    """

    metadata: ClassVar[dict[str, Any]] = {}
    space_checks_suffice: ClassVar[bool] = False
    """True when the action spaces express every rule on actions, so the PettingZoo face's
    :func:`validate_action` is a complete check and the game may skip its own (``validate``)."""
    possible_agents: list[str]
    num_envs: int
    device: torch.device
    render_mode: str | None = None
    validate: bool = True

    @abstractmethod
    def reset(
        self, seed: int | None = None, env_index: Any = None
    ) -> tuple[TensorDict, dict[str, dict]]:
        """Start a new episode in every world, or only in the worlds ``env_index`` names."""

    @abstractmethod
    def step(
        self, actions: TensorDict
    ) -> tuple[TensorDict, TensorDict, TensorDict, TensorDict, dict[str, dict]]:
        """Advance every world by one step."""

    @abstractmethod
    def observation_space(self, agent: str) -> gymnasium.Space:
        """Observation space of ``agent`` in one world."""

    @abstractmethod
    def action_space(self, agent: str) -> gymnasium.Space:
        """Action space of ``agent`` in one world."""

    def render(self, env_index: int = 0) -> np.ndarray | None:
        """An RGB frame ``(H, W, 3)`` uint8 of world ``env_index``."""
        return None

    def _check_agent(self, agent: Any) -> None:
        """``ValueError`` unless ``agent`` is one of ``possible_agents`` (the spaces' check)."""
        known = self.__dict__.get("_known_agents")
        if known is None:
            known = self._known_agents = frozenset(self.possible_agents)
        try:
            ok = agent in known
        except TypeError:  # unhashable: no agent name
            ok = False
        if not ok:
            names = self.possible_agents
            shown = names if len(names) <= 4 else [names[0], "...", names[-1]]
            raise ValueError(f"unknown agent {agent!r}; the agents are {', '.join(shown)}")

    def _check_render_index(self, env_index: Any) -> int:
        """The world ``render(env_index)`` draws: an integer in [0, num_envs - 1]."""
        return check_int("env_index", env_index, 0, self.num_envs - 1)

    def close(self) -> None:
        """Release the episode state (the game can be ``reset`` again afterwards)."""
        self._state = {}

    def _init_common(
        self,
        *,
        num_envs: int,
        device: str | torch.device,
        render_mode: str | None,
        validate: bool,
    ) -> None:
        """Check and set the constructor arguments every game shares.

        ``ValueError`` for a ``render_mode`` not in ``metadata["render_modes"]`` (listing the
        valid choices), a ``num_envs`` that is not an integer >= 1, a ``device`` this machine
        does not have (:func:`check_device`) or a ``validate`` that is not a bool.
        """
        check_choice("render_mode", render_mode, (None, *self.metadata.get("render_modes", ())))
        self.num_envs = check_int("num_envs", num_envs)
        self.device = check_device(device)
        self.render_mode = render_mode
        self.validate = check_bool("validate", validate)

    def _seed_generator(self, seed: int) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(seed))
        return gen

    def _seed_streams(self, seed: int | None) -> tuple[torch.Generator, WorldStreams]:
        """The game's main stream (seeded with ``seed`` itself, :func:`generator_seed`: every
        full reset and step) and the per-world streams partial resets draw from (keyed by a
        number derived from ``seed``, :class:`WorldStreams`), so that restarting some worlds
        never shifts the draws of the others' current episodes, and what a restarted world
        draws depends only on the seed, its index and how often it restarted;
        ``None`` draws a fresh seed. A seed that is not an integer in [0, 2**63 - 1] raises
        ``ValueError`` here, before the game changes anything."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % 2**63
        seed = check_seed("seed", seed)
        derived = int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint64)[0])
        return self._seed_generator(generator_seed(seed)), WorldStreams(derived, self.device)


def to_numpy(value: Any) -> Any:
    """First world of a batched value, as numpy (0-d tensors become Python scalars)."""
    if isinstance(value, torch.Tensor):
        first = value[0].detach().cpu() if value.ndim else value
        return first.item() if first.ndim == 0 else first.numpy()
    if isinstance(value, dict):
        scalars = [v for v in value.values() if isinstance(v, torch.Tensor) and v.ndim == 1]
        if len(scalars) == len(value) and len({v.dtype for v in scalars}) == 1:
            # the common case, one scalar per world per key: a single host transfer
            return dict(zip(value, torch.stack(scalars)[:, 0].tolist(), strict=True))
        return {k: to_numpy(v) for k, v in value.items()}
    return value


_to_numpy = to_numpy  # the old private name, kept for other branches


def _to_batched(arr: np.ndarray | dict, device: torch.device) -> torch.Tensor | TensorDict:
    """A validated action as a batch of one world (dicts stay dicts)."""
    if isinstance(arr, dict):
        return {k: _to_batched(v, device) for k, v in arr.items()}
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device).unsqueeze(0)


class GameFace:
    """What every PettingZoo face of a one-world game delegates to its ``game``."""

    game: BatchedEnv
    render_mode: str | None

    def render(self) -> np.ndarray | str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; nothing drawn")
            return None
        return self.game.render(0)

    def close(self) -> None:
        self.agents = []
        self.game.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.game, name)


class BatchedParallelEnv(GameFace, ParallelEnv):
    """PettingZoo ``ParallelEnv`` face of a :class:`BatchedEnv` built with ``num_envs=1``.

    Observations are numpy arrays of exactly the declared spaces; every action is checked by
    :func:`validate_action` before it reaches the game; agents leave ``self.agents`` when
    their episode ends. A game with a one-world numpy path (``one_world``: ``reset_one`` /
    ``step_one``, e.g. partial_obs_v0) runs on it, with no torch on the way.
    """

    _prechecked = False  # set by ValidatingAECEnv while it steps with actions it checked

    def __init__(self, game: BatchedEnv) -> None:
        if game.num_envs != 1:
            raise ValueError(f"the PettingZoo face needs num_envs=1, got {game.num_envs}")
        self.game = game
        if game.space_checks_suffice:  # this face checks every action itself, in numpy
            game.validate = False
        self.metadata = dict(type(game).metadata)
        self.possible_agents = list(game.possible_agents)
        self.agents: list[str] = []
        self.render_mode = game.render_mode
        self._obs_dtype = {a: game.observation_space(a).dtype for a in self.possible_agents}
        # A game with a one-world numpy path (reset_one/step_one, the same episodes as its
        # batched face) runs on it here, without torch on the way.
        self._one_world = bool(getattr(game, "one_world", False)) and game.device.type == "cpu"

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self.game.observation_space(agent)

    def action_space(self, agent: str) -> gymnasium.Space:
        return self.game.action_space(agent)

    def _obs(self, obs: TensorDict) -> dict[str, np.ndarray]:
        return {
            a: obs[a][0].cpu().numpy().astype(self._obs_dtype[a], copy=False) for a in self.agents
        }

    def _infos(self, infos: dict[str, dict]) -> dict[str, dict]:
        converted: dict[int, dict] = {}  # games often share one info dict between agents
        out = {}
        for a in self.agents:
            key = id(infos[a])
            if key not in converted:
                converted[key] = to_numpy(infos[a])
            out[a] = dict(converted[key])
        return out

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        # inference_mode: no autograd bookkeeping, which dominates tiny one-world steps
        if self._one_world:  # the game's own one-world numpy path
            out = self.game.reset_one(seed=seed)
            self.agents = list(self.possible_agents)  # after the game: a bad seed changes nothing
            return out
        with torch.inference_mode():
            obs, infos = self.game.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return self._obs(obs), self._infos(infos)

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ValueError(
                "step() called before reset() or on a finished episode; call reset() first"
            )
        check_action_keys(actions, self.agents, self.possible_agents)
        if self._one_world:
            checked = (
                actions
                if self._prechecked
                else {a: validate_action(a, self.action_space(a), actions[a]) for a in self.agents}
            )
            out = self.game.step_one(checked)
            self.agents = [a for a in self.agents if not (out[2][a] or out[3][a])]
            return out
        batched = {}
        for agent in self.agents:
            arr = validate_action(agent, self.action_space(agent), actions[agent])
            batched[agent] = _to_batched(arr, self.game.device)
        with torch.inference_mode():
            obs, rew, term, trunc, infos = self.game.step(batched)
            live = self.agents
            # One host transfer for every reward and flag (each is a (1,) tensor).
            per_agent = [rew[a] for a in live] + [term[a] for a in live] + [trunc[a] for a in live]
            flags = torch.cat(per_agent).tolist()
        n = len(live)
        out = (
            self._obs(obs),
            {a: float(flags[i]) for i, a in enumerate(live)},
            {a: bool(flags[n + i]) for i, a in enumerate(live)},
            {a: bool(flags[2 * n + i]) for i, a in enumerate(live)},
            self._infos(infos),
        )
        self.agents = [a for a in live if not (out[2][a] or out[3][a])]
        return out


class ValidatingAECEnv(parallel_to_aec_wrapper):
    """PettingZoo's ``parallel_to_aec`` wrapper that checks each action at its own turn.

    The plain conversion buffers every action until the last agent has acted, so a bad action
    of ``agent_0`` would surface at ``agent_1``'s turn (and then at every later step). Here
    :func:`validate_action` runs before the action is buffered: the error names the agent
    whose turn it is, and the env is left exactly as if the call never happened.
    """

    def step(self, action: Any) -> None:
        if "agent_selection" not in self.__dict__:  # set by the first reset
            raise ValueError("step() called before reset(); call reset() first")
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):
            action = validate_action(agent, self.action_space(agent), action)
        face = self.env
        face._prechecked = True  # every buffered action was checked here: not twice
        try:
            super().step(action)
        finally:
            face._prechecked = False

    def close(self) -> None:
        self.env.close()


def _forwarded(name: str, needs_reset: bool) -> property:
    """An attribute of the wrapped env, read in one hop (PettingZoo's wrappers forward every
    read through two ``__getattr__`` calls, a cost the AEC loop pays ~20 times a step)."""

    def get(self: OrderedAECEnv) -> Any:
        if needs_reset and not self._has_reset:
            raise AttributeError(f"{name} cannot be accessed before reset")
        return getattr(self.env, name)

    return property(get, doc=f"The wrapped env's ``{name}``.")


class OrderedAECEnv(OrderEnforcingWrapper):
    """PettingZoo's order-enforcing wrapper, whose misuse errors are ``ValueError``s (it
    raises ``AssertionError``, which ``python -O`` would not even strip consistently)."""

    agents = _forwarded("agents", True)
    agent_selection = _forwarded("agent_selection", True)
    rewards = _forwarded("rewards", True)
    terminations = _forwarded("terminations", True)
    truncations = _forwarded("truncations", True)
    infos = _forwarded("infos", True)
    _cumulative_rewards = _forwarded("_cumulative_rewards", False)
    possible_agents = _forwarded("possible_agents", False)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        flags = self._has_reset, self._has_updated
        try:
            super().reset(seed=seed, options=options)
        except Exception:  # e.g. a bad seed: the env is as before, and so is its order
            self._has_reset, self._has_updated = flags
            raise

    def step(self, action: Any) -> None:
        if not self._has_reset:
            raise ValueError("step() called before reset(); call reset() first")
        super().step(action)

    def observe(self, agent: str) -> Any:
        if not self._has_reset:
            raise ValueError("observe() called before reset(); call reset() first")
        return super().observe(agent)


class EnvFamily:
    """A versioned game the PettingZoo way: ``partial_obs_v0`` and friends.

    Calling the family returns the ``ParallelEnv``; ``.parallel_env(**cfg)``, ``.env(**cfg)``
    (AEC, by PettingZoo's ``parallel_to_aec``), ``.raw_env(**cfg)`` and
    ``.batched(num_envs, device, **cfg)`` (the tensor face) give the other forms, so the
    family also works where PettingZoo expects an env module (e.g. ``max_cycles_test``).
    """

    def __init__(self, name: str, game_cls: type[BatchedEnv], doc: str | None = None) -> None:
        self.name = name
        self.game_cls = game_cls
        # The game module's docstring is its documentation page (the PettingZoo way).
        self.__doc__ = doc or sys.modules[game_cls.__module__].__doc__ or game_cls.__doc__
        self.metadata = game_cls.metadata

    def defaults(self) -> dict[str, Any]:
        """The game's keyword arguments and their defaults (``num_envs``/``device`` excluded)."""
        import inspect

        params = inspect.signature(self.game_cls.__init__).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty and p.name not in ("num_envs", "device")
        }

    def batched(self, num_envs: int = 1, device: str | torch.device = "cpu", **config: Any):
        """The batched tensor face: ``num_envs`` worlds on ``device``."""
        return self.game_cls(num_envs=num_envs, device=device, **config)

    def parallel_env(self, **config: Any) -> BatchedParallelEnv:
        """PettingZoo ``ParallelEnv`` (numpy observations, validated actions)."""
        return BatchedParallelEnv(self.game_cls(num_envs=1, device="cpu", **config))

    def raw_env(self, **config: Any) -> ValidatingAECEnv:
        """AEC form without PettingZoo's order-enforcing wrapper."""
        return ValidatingAECEnv(self.parallel_env(**config))

    def env(self, **config: Any):
        """AEC form: PettingZoo's ``parallel_to_aec`` conversion, each action checked at its
        own turn (:class:`ValidatingAECEnv`), order enforced (:class:`OrderedAECEnv`)."""
        return OrderedAECEnv(self.raw_env(**config))

    def __call__(self, **config: Any) -> BatchedParallelEnv:
        return self.parallel_env(**config)

    def __repr__(self) -> str:
        return f"<commenv env family {self.name}>"
