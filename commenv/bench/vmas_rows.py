"""Agent-steps/s of VMAS simple_speaker_listener beside batched partial_obs_v0, in one run.

Both engines are measured at the same numbers of worlds.

Both run random play on one torch thread: VMAS uniform actions in the Box of its speaker and
listener (continuous actions, ``max_steps=25``), ours random message/choice bits
(:func:`commenv.bench.speed.batched_stepper`, ``max_cycles=25``); each resets all its worlds
when the episode ends. A third row per size steps our game through the TorchRL adapter
(:mod:`commenv.torchrl_env`, random ``Binary`` actions, ``step_and_maybe_reset``), when
``torchrl`` is installed: the cost of the TorchRL route (an adapter that cannot be built on
this commit leaves that row without a figure, its note saying why). Sizes are timed in interleaved
rounds (VMAS, ours, ours via TorchRL, size by size, round after round) and the median of the
rounds is reported, so load from other processes hits all alike. ``commenv.bench.speed``
calls :func:`speed_rows`; without ``vmas`` installed (``pip install commenv[bench]``) only
our rows come back, with ``x_vmas`` empty.

    from commenv.bench.vmas_rows import speed_rows
    rows = speed_rows(quick=True)

Standalone, ``python -m commenv.bench.vmas_rows [--quick] [--out DIR]`` prints the rows and
writes ``vmas_rows.json``/``.csv`` (default ``results/vmas_rows``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Stepper = Callable[[], int]  # one call = one step of every world; returns agent-steps done

QUICK_SIZES: tuple[int, ...] = (256, 4096)
SIZES: tuple[int, ...] = (1, 256, 4096, 16384)


def vmas_stepper(num_envs: int, device: str = "cpu", seed: int = 0) -> Stepper | None:
    """Random play in VMAS ``simple_speaker_listener`` over ``num_envs`` worlds, or ``None``
    when ``vmas`` is not installed."""
    try:
        import vmas
    except ImportError:
        return None
    env = vmas.make_env(
        "simple_speaker_listener",
        num_envs=num_envs,
        device=device,
        continuous_actions=True,
        max_steps=25,
        seed=seed,
    )
    env.reset()
    # Uniform actions in each agent's Box, drawn as one tensor op per agent: VMAS's own
    # env.get_random_action costs about as much as a step (1.1 ms vs 1.6 ms at 1 world here).
    gen = torch.Generator(device=device).manual_seed(seed)
    bounds = [
        (torch.as_tensor(box.low, device=device), torch.as_tensor(box.high, device=device))
        for box in env.action_space
    ]

    def step() -> int:
        actions = [
            low + (high - low) * torch.rand(num_envs, len(low), generator=gen, device=device)
            for low, high in bounds
        ]
        _, _, dones, _ = env.step(actions)
        if bool(dones.all()):  # every world ends at max_steps together
            env.reset()
        return num_envs * len(bounds)

    return step


def torchrl_stepper(num_envs: int, device: str = "cpu", seed: int = 0) -> Stepper | None:
    """Random bits in batched partial_obs_v0 through the TorchRL adapter, the way a TorchRL
    collector steps it (``step_and_maybe_reset``), or ``None`` without ``torchrl``."""
    from commenv.torchrl_env import make_torchrl_env

    try:
        env = make_torchrl_env("partial_obs_v0", num_envs=num_envs, device=device)
    except ImportError:  # the adapter imports without torchrl and says so when built
        return None
    env.set_seed(seed)
    td = env.reset()
    spec = env.full_action_spec
    n_agents = len(env.agents)

    def step() -> int:
        nonlocal td
        td.update(spec.rand())
        _, td = env.step_and_maybe_reset(td)
        return num_envs * n_agents

    return step


def optional_torchrl_stepper(
    num_envs: int, device: str = "cpu", seed: int = 0
) -> Stepper | str | None:
    """:func:`torchrl_stepper`, or ``None`` without ``torchrl``, or a string saying why the
    adapter could not be built on this commit ("not available: ..."), so that a broken adapter
    costs its row, not the run."""
    try:
        return torchrl_stepper(num_envs, device, seed)
    except (ValueError, TypeError, RuntimeError) as exc:
        return f"not available: the TorchRL adapter raised {type(exc).__name__}: {exc}"


def _rate(step: Stepper, seconds: float) -> float:
    """Agent-steps per second of ``step`` over about ``seconds`` (at least one timed step)."""
    step()  # warm-up, not timed
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        done += step()
    return done / elapsed


def speed_rows(
    quick: bool,
    sizes: tuple[int, ...] | None = None,
    seconds: float | None = None,
    rounds: int | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Rows ``name``, ``steps_per_s`` (agent-steps/s, median of interleaved rounds), ``note``,
    ``engine`` (``vmas``, ``commenv``, ``torchrl``), ``num_envs`` and ``x_vmas`` (this row /
    VMAS at the same size) for VMAS ``simple_speaker_listener``, batched ``partial_obs_v0``
    and the same through the TorchRL adapter, at each size.

    ``quick``: sizes 256 and 4,096, 2 rounds of 0.3 s; otherwise 1, 256, 4,096 and 16,384
    worlds, 3 rounds of 1 s. One torch thread while measuring (restored after).
    """
    from commenv.bench.speed import batched_stepper  # lazy: speed.py imports this module

    sizes = sizes or (QUICK_SIZES if quick else SIZES)
    seconds = seconds or (0.3 if quick else 1.0)
    rounds = rounds or (2 if quick else 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        steppers: dict[tuple[str, int], Stepper] = {}
        broken: dict[int, str] = {}  # size -> why the TorchRL row is not available
        for n in sizes:
            vm = vmas_stepper(n, device)
            if vm is not None:
                steppers["vmas", n] = vm
            steppers["commenv", n] = batched_stepper(n, device)
            via_torchrl = optional_torchrl_stepper(n, device)
            if isinstance(via_torchrl, str):
                broken[n] = via_torchrl
            elif via_torchrl is not None:
                steppers["torchrl", n] = via_torchrl
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in steppers}
        for _ in range(rounds):
            for key, step in steppers.items():
                samples[key].append(_rate(step, seconds))
    finally:
        torch.set_num_threads(threads)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    rows = []
    for n in sizes:
        vmas_rate = medians.get(("vmas", n))
        for engine, label in (
            ("vmas", "VMAS simple_speaker_listener"),
            ("commenv", "partial_obs_v0 batched"),
            ("torchrl", "partial_obs_v0 batched via TorchRL EnvBase"),
        ):
            if engine == "torchrl" and n in broken:
                rows.append(
                    {
                        "name": f"{label}, num_envs={n}",
                        "steps_per_s": None,
                        "note": broken[n],
                        "engine": engine,
                        "num_envs": n,
                        "x_vmas": None,
                    }
                )
                continue
            if (engine, n) not in medians:
                continue
            ours = medians[engine, n]
            rows.append(
                {
                    "name": f"{label}, num_envs={n}",
                    "steps_per_s": ours,
                    "note": (
                        f"agent-steps/s, random play, 1 thread, {device}, median of {rounds} "
                        f"interleaved rounds of {seconds:g} s"
                        + ("" if vmas_rate is None else f"; {ours / vmas_rate:.2f}x VMAS")
                    ),
                    "engine": engine,
                    "num_envs": n,
                    "x_vmas": None if vmas_rate is None else ours / vmas_rate,
                }
            )
    return rows


@dataclass
class Args:
    quick: bool = False
    """sizes 256 and 4,096, 2 rounds of 0.3 s (default: 1 to 16,384 worlds, 3 rounds of 1 s)"""
    device: str = "cpu"
    """device of both engines"""
    out: str | None = None
    """folder for vmas_rows.json/.csv (default results/vmas_rows, -quick with --quick)"""


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    from commenv.bench.tools import markdown_table, parse_config, write_results

    args = parse_config(Args, argv, description=__doc__.splitlines()[0])
    rows = speed_rows(args.quick, device=args.device)
    print(markdown_table(rows, ["name", "steps_per_s", "x_vmas"], digits=2))
    out = args.out or ("results/vmas_rows-quick" if args.quick else "results/vmas_rows")
    paths = write_results(out, "vmas_rows", rows, args)
    print("wrote " + ", ".join(map(str, paths)))
    return rows


if __name__ == "__main__":
    main()
