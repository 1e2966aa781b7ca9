"""Agent-steps per second of the commenv games beside PettingZoo's MPE2 reference (issue 18).

Measured in one run, in interleaved rounds (median of ``--rounds``, one torch thread), so the
ratios hold on a shared, noisy machine. The ``environments`` section times, round after round:

- MPE2 ``simple_speaker_listener_v4`` (random actions), the yardstick of every ``x MPE2``;
- the PettingZoo faces: ``partial_obs_v0`` and ``node_graph_v0`` (parallel), ``quiz_v0`` (AEC:
  the quiz is turn-based), random valid actions;
- batched ``partial_obs_v0`` at 1, 256, 4,096, 16,384 and 32,768 worlds (``--quick``: up to
  16,384), and the throughput ratio of the largest size to 4,096;
- VMAS ``simple_speaker_listener`` (uniform actions in its Boxes) and our batched game through
  the TorchRL adapter (frames/s, ``step_and_maybe_reset``) at the same sizes, and the ratio ours
  / VMAS at 4,096 (``pip install vmas`` / ``torchrl``: rows with a note, or absent, without);
- at 4,096 worlds: ``reuse_obs=True``, ``obs_dtype="uint8"`` (also at the largest size), a
  training loop's stepping that resets only the finished worlds (``reset(env_index=mask)``;
  "not available" when the game lacks it), and the observation write alone;
- ``node_graph_v0`` at ``n_nodes=100`` on 1 and 64 worlds (world-steps/s), their ratio, and 64
  worlds' observation write alone;
- the bounds: what the observation write alone allows (against VMAS; 64 worlds of node_graph
  against one world's step), so a verdict says where a target needs smaller observations.

The ``memory`` section measures resident memory per world of batched ``partial_obs_v0`` and of
VMAS the same way: the growth of process RSS over building, resetting and stepping the game,
in a fresh subprocess per size (so no allocator cache carries over), between two sizes,
divided by the difference in worlds; and one step's observation bytes per world. The other
sections time the reference agents (node_graph population, quiz agents, unsupervised
population).

The issue-18 targets are judged by the run itself, one line each (:data:`TARGETS`); two of
them compare with ``docs/results/speed/before-issue18/`` (the same rows, measured on the code
before issue 18) as a ratio of ratios.

    commenv bench speed            # every size, 2-s windows: the longest preset
    commenv bench speed --quick    # about a minute
    commenv bench speed --runs environments --device cuda
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import commenv
from commenv.bench.graph import speed_rows as graph_speed_rows
from commenv.bench.quiz import speed_rows as quiz_speed_rows
from commenv.bench.report import SPEED_COLUMNS
from commenv.bench.tools import (
    RUN_OPTIONS,
    RunStore,
    figure,
    markdown_table,
    parse_config,
    pyplot,
    require_runs,
    result_options,
    save_figure,
    select_device,
    select_runs,
    unread,
    verdict,
)
from commenv.bench.unsupervised import speed_rows as unsupervised_speed_rows
from commenv.core import check_int

Stepper = Callable[[], int]  # one call = some steps; returns the units done (agent- or world-steps)


# -- steppers -------------------------------------------------------------------------------
def random_play(env, seed: int = 0) -> Stepper:
    """Random actions in a PettingZoo ParallelEnv, resetting when the episode ends."""
    env.reset(seed=seed)
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    for space in spaces.values():
        space.seed(seed)

    def step() -> int:
        if not env.agents:
            env.reset()
        actions = {a: spaces[a].sample() for a in env.agents}
        env.step(actions)
        return len(actions)

    return step


def aec_play(env, seed: int = 0) -> Stepper:
    """Random valid actions in a PettingZoo AEC env, one agent-step (the selected agent's
    turn) per call, resetting when the episode ends."""
    env.reset(seed=seed)
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    for space in spaces.values():
        space.seed(seed)

    def step() -> int:
        agent = env.agent_selection
        if env.terminations[agent] or env.truncations[agent]:
            env.reset()
            agent = env.agent_selection
        env.step(spaces[agent].sample())
        return 1

    return step


def mpe2_stepper(seed: int = 0) -> Stepper | None:
    """Random play in MPE2's simple_speaker_listener_v4, the reference."""
    try:
        from mpe2 import simple_speaker_listener_v4
    except ImportError:
        return None
    return random_play(simple_speaker_listener_v4.parallel_env(max_cycles=25), seed)


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
    collector steps it (``step_and_maybe_reset``), or ``None`` without ``torchrl``. The bits
    are drawn as for the batched rows (:func:`random_bit_tensor`, as float32: the adapter's
    action dtype), so the two rows differ by the route alone; TorchRL's own
    ``action_spec.rand()`` costs about twice that draw."""
    from commenv.torchrl_env import make_torchrl_env

    try:
        env = make_torchrl_env("partial_obs_v0", num_envs=num_envs, device=device)
    except ImportError:  # the adapter imports without torchrl and says so when built
        return None
    env.set_seed(seed)
    td = env.reset()
    draw, key = random_bit_tensor(env.game, seed), (env.group, "action")
    n_agents = len(env.agents)

    def step() -> int:
        nonlocal td
        td.set(key, draw().float())
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


def random_bit_tensor(game, seed: int = 0) -> Callable[[], torch.Tensor]:
    """A draw of random bit actions of every agent ``(num_envs, n_agents, n)`` (uint8) for a
    MultiBinary game."""
    device, num_envs, agents = game.device, game.num_envs, game.possible_agents
    gen = torch.Generator(device=device).manual_seed(seed)
    n_act = game.action_space(agents[0]).n
    shifts = torch.arange(8, device=device, dtype=torch.uint8)
    n_bytes = (n_act + 7) // 8

    def draw() -> torch.Tensor:
        # Random bits from random bytes: 8x fewer RNG draws than one randint per bit.
        octets = torch.randint(
            0, 256, (num_envs, len(agents), n_bytes, 1), generator=gen, device=device,
            dtype=torch.uint8,
        )  # fmt: skip
        return ((octets >> shifts) & 1).flatten(-2)[..., :n_act]

    return draw


def random_bits(game, seed: int = 0) -> Callable[[], dict[str, torch.Tensor]]:
    """A draw of random bit actions ``{agent: (num_envs, n)}`` for a MultiBinary game."""
    draw_all, agents = random_bit_tensor(game, seed), game.possible_agents

    def draw() -> dict[str, torch.Tensor]:
        bits = draw_all()
        return {a: bits[:, i] for i, a in enumerate(agents)}

    return draw


def batched_stepper(num_envs: int, device: str = "cpu", seed: int = 0, **config) -> Stepper:
    """Random bit actions in ``num_envs`` worlds of the batched core; all worlds restart
    together when the (shared) episode ends."""
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device, **config)
    game.reset(seed=seed)
    draw, agent = random_bits(game, seed), game.possible_agents[0]

    def step() -> int:
        _, _, _, trunc, _ = game.step(draw())
        if bool(trunc[agent][0]):
            game.reset()
        return num_envs * len(game.possible_agents)

    step.game = game  # type: ignore[attr-defined]  # the memory probe asks it for its own report
    return step


def accepts_env_index(game) -> bool:
    """Whether ``game.reset`` takes ``env_index`` (the per-world reset of issue 18)."""
    try:
        return "env_index" in inspect.signature(game.reset).parameters
    except (TypeError, ValueError):
        return False


def per_world_reset_stepper(num_envs: int, device: str = "cpu", seed: int = 0) -> Stepper | str:
    """Random bits in ``num_envs`` worlds stepped as a batched training loop does: after each
    step only the worlds that finished restart (``reset(env_index=done)``). The worlds' clocks
    are staggered first (world ``i`` restarts at step ``i % max_cycles``), the steady state of
    such a loop, so about ``num_envs / max_cycles`` worlds restart at every step.

    Returns a string saying why when the game has no per-world reset (feature detection)."""
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device)
    if not accepts_env_index(game):
        return "not available: partial_obs_v0's batched reset() takes no env_index on this commit"
    game.reset(seed=seed)
    draw, agent = random_bits(game, seed), game.possible_agents[0]
    phase = torch.arange(num_envs, device=game.device) % game.max_cycles
    try:
        for k in range(game.max_cycles):
            game.step(draw())
            game.reset(env_index=phase == k)
    except (NotImplementedError, TypeError) as exc:
        return f"not available: reset(env_index=mask) raised {type(exc).__name__}: {exc}"

    def step() -> int:
        _, _, term, trunc, _ = game.step(draw())
        done = term[agent] | trunc[agent]
        if bool(done.any()):
            game.reset(env_index=done)
        return num_envs * len(game.possible_agents)

    return step


def observation_stepper(num_envs: int, device: str = "cpu", seed: int = 0, **config) -> Stepper:
    """Only the observation write of ``num_envs`` worlds of batched ``partial_obs_v0`` (the
    views of the world and the candidates, the heard messages), after one random step so
    every world has candidates: the floor under any step that returns these observations."""
    warm = batched_stepper(num_envs, device, seed, **config)
    warm()
    game = warm.game  # type: ignore[attr-defined]

    def observe() -> int:
        game._observe()  # what step() writes last, and nothing else
        return num_envs * len(game.possible_agents)

    return observe


NG_BIT_DRAWS = 8  # pre-drawn broadcast patterns the node_graph rows cycle through


def node_graph_stepper(num_envs: int, n_nodes: int = 100, device: str = "cpu", seed: int = 0):
    """Random broadcast bits in ``num_envs`` worlds of batched ``node_graph_v0`` (labels,
    fully connected) through its fast path ``step_tensors``; returns world-steps done. The
    bits are drawn before timing (:data:`NG_BIT_DRAWS` patterns, cycled), so the row times
    the game, not the random number generator."""
    game = commenv.node_graph_v0.batched(num_envs=num_envs, device=device, n_nodes=n_nodes)
    game.reset(seed=seed)
    gen = torch.Generator(device=game.device).manual_seed(seed)
    shape = (NG_BIT_DRAWS, num_envs, n_nodes, game.max_out)
    draws = torch.randint(0, 2, shape, generator=gen, device=game.device, dtype=torch.int8)
    turn = itertools.count()

    def step() -> int:
        _, _, trunc, _ = game.step_tensors(draws[next(turn) % NG_BIT_DRAWS])
        if bool(trunc[0]):
            game.reset()
        return num_envs

    step.game = game  # type: ignore[attr-defined]
    return step


def node_graph_observation_stepper(
    num_envs: int, n_nodes: int = 100, device: str = "cpu", seed: int = 0
) -> Stepper:
    """Only the observation write of ``num_envs`` worlds of batched ``node_graph_v0`` (every
    node's minibatch images, labels and flags), after a few steps of :func:`node_graph_stepper`
    so that inboxes hold messages: the floor under any step that returns these observations."""
    warm = node_graph_stepper(num_envs, n_nodes, device, seed)
    for _ in range(4):
        warm()
    game = warm.game  # type: ignore[attr-defined]

    def observe() -> int:
        game.observe_all()
        return num_envs

    return observe


def _settle() -> None:
    """Wait for queued CUDA work: a stepper that never reads a result back (the observation
    write alone) would otherwise be timed by how fast it queues kernels."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def rate(step: Stepper, seconds: float) -> float:
    """Units per second of ``step`` over about ``seconds`` (at least one timed call)."""
    step()  # warm-up
    _settle()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        done += step()
    _settle()
    return done / (time.perf_counter() - start)


SECTIONS: dict[str, str] = {
    "environments": "every face beside MPE2 and VMAS, one interleaved run (agent-steps/s)",
    "memory": "resident memory per world (RSS growth, a fresh subprocess per size)",
    "node_graph population": "batched population vs the sequential per-node loop",
    "quiz agents": "quiz_v0 lessons/s: env alone, student step, full loop",
    "unsupervised population": "batched VAE/BiGAN population vs the sequential per-node loop",
}
"""The benchmark's runs (``--runs``): each is measured, recorded and resumed as a whole."""

BEFORE = Path("docs/results/speed/before-issue18/speed.json")
"""The rows measured on the code before issue 18 (relative to the repository root)."""


@dataclass
class Args:
    """Agent-steps per second of the commenv games beside PettingZoo's MPE2 reference."""

    quick: bool = False
    """quick preset: short measurement windows, batched sizes up to 16,384 (memory is
    measured at the full sizes)"""
    seconds: float = 2.0
    """measurement window per row and round"""
    rounds: int = 3
    """interleaved rounds (median taken)"""
    runs: str = "all"
    """comma-separated sections by name or slug: environments, memory, node-graph-population,
    quiz-agents, unsupervised-population (VMAS rows need `pip install vmas`; without it only
    our rows are timed)"""
    device: str = "auto"
    """device of the batched games and populations: auto (CUDA when present) | cpu | cuda
    (memory is always measured on the CPU)"""
    threads: int = 1
    """torch CPU threads, >= 1 (default 1: MPE2 uses one core too)"""
    seed: int = 0
    """seed of the random actions"""
    sizes: tuple[int, ...] = (1, 256, 4096, 16384, 32768)
    """worlds of the batched partial_obs_v0 rows (4,096 is the reference size of the targets)"""
    memory_sizes: tuple[int, int] = (4096, 32768)
    """the two sizes whose RSS difference gives the memory per world"""
    out_dir: Path = Path("results/speed")
    """where JSON/CSV/PNG go (results/speed-quick with --quick)"""
    before: Path = BEFORE
    """result file of the rows before issue 18 (judges the '>= 2x before' targets; relative
    paths are looked up from the working directory, then from the repository root; a file
    named here must be there, only the default may be absent)"""
    resume: bool = False
    """keep the sections a killed run finished (its partial file) and measure only the others"""


QUICK: dict = dict(
    seconds=0.3,
    sizes=(1, 256, 4096, 16384),
    out_dir=Path("results/speed-quick"),
)
"""What ``--quick`` changes."""

REFERENCE = "MPE2 simple_speaker_listener_v4 (reference)"
PO_PZ = "partial_obs_v0 PettingZoo parallel face"
PO_AEC = "partial_obs_v0 PettingZoo AEC face"
REUSE_4096 = "partial_obs_v0 batched, num_envs=4096, reuse_obs=True"
NG_PZ = "node_graph_v0 PettingZoo parallel face"
QUIZ_AEC = "quiz_v0 PettingZoo AEC face"
OBS_SCALE_RATIO = "ratio: partial_obs_v0 observation write alone, largest size / 4,096 worlds"
NG_OBS_64 = "node_graph_v0 batched, n_nodes=100, num_envs=64, observation write alone"
RESET_4096 = "partial_obs_v0 batched, num_envs=4096, per-world reset"
NG_WORLDS = (1, 64)
SCALE_RATIO = "ratio: partial_obs_v0 batched, largest size / 4,096 worlds"
VMAS_RATIO = "ratio: partial_obs_v0 batched / VMAS at 4,096 worlds"
NG_RATIO = "ratio: node_graph_v0 n_nodes=100, 64 worlds / 1 world"
MEM_OURS = "memory: partial_obs_v0 batched (KiB/world)"
MEM_U8 = "memory: partial_obs_v0 batched, obs_dtype=uint8 (KiB/world)"
U8_SCALE_RATIO = "ratio: partial_obs_v0 batched, obs_dtype=uint8, largest size / 4,096 worlds"
U8_VMAS_RATIO = "ratio: partial_obs_v0 batched, obs_dtype=uint8 / VMAS at 4,096 worlds"
MEM_VMAS = "memory: VMAS simple_speaker_listener (KiB/world)"
MEM_OBS = "memory: one step's observations of partial_obs_v0 (KiB/world)"
VMAS_BOUND = "bound: partial_obs_v0 observation write alone / VMAS at 4,096 worlds"
NG_BOUND = "bound: node_graph_v0 n_nodes=100, 64 worlds' observation write alone / 1 world's step"


def batched_name(n: int) -> str:
    return f"partial_obs_v0 batched, num_envs={n}"


def uint8_name(n: int) -> str:
    return f"partial_obs_v0 batched, num_envs={n}, obs_dtype=uint8"


def node_graph_name(n: int) -> str:
    return f"node_graph_v0 batched, n_nodes=100, num_envs={n}"


def observation_name(n: int) -> str:
    return f"partial_obs_v0 batched, num_envs={n}, observation write alone"


def vmas_name(n: int) -> str:
    return f"VMAS simple_speaker_listener, num_envs={n}"


def torchrl_name(n: int) -> str:
    return f"partial_obs_v0 batched via TorchRL, num_envs={n}"


VMAS_4096 = vmas_name(4096)
PO_OBS_4096 = observation_name(4096)
TORCHRL_4096 = torchrl_name(4096)


@dataclass
class Spec:
    """One timed row: its stepper (or why it has none, in ``note``), the unit the stepper
    counts, the agents per world (world-steps <-> agent-steps) and whether the row shows
    world-steps/s (not for the one-world PettingZoo faces)."""

    stepper: Stepper | None
    unit: str = "agent"  # "agent": the stepper counts agent-steps; "world": world-steps
    agents_per_world: int = 2
    note: str = ""
    worlds: bool = True


def env_specs(args: Args, device: torch.device) -> dict[str, Spec]:
    """Every row of the interleaved run, in table order."""
    dev, seed = str(device), args.seed
    ref = mpe2_stepper(seed)
    specs: dict[str, Spec] = {
        REFERENCE: Spec(ref, note="" if ref else "not available: pip install mpe2", worlds=False),
        PO_PZ: Spec(random_play(commenv.partial_obs_v0(), seed), worlds=False),
        PO_AEC: Spec(
            aec_play(commenv.partial_obs_v0.env(), seed),
            note="one turn per agent-step",
            worlds=False,
        ),
        NG_PZ: Spec(random_play(commenv.node_graph_v0(), seed), note="n_nodes=10", worlds=False),
        QUIZ_AEC: Spec(
            aec_play(commenv.quiz_v0.env(), seed), note="one turn per agent-step", worlds=False
        ),
    }
    for n in args.sizes:
        specs[batched_name(n)] = Spec(batched_stepper(n, dev, seed))
    beside = sorted({*args.sizes, 4096})  # VMAS and TorchRL at every size, 4,096 for the target
    for n in beside:
        vm = vmas_stepper(n, dev, seed)
        specs[vmas_name(n)] = Spec(vm, note="" if vm else "not available: pip install vmas")
    for n in beside:
        via_torchrl = optional_torchrl_stepper(n, dev, seed)
        if via_torchrl is not None:  # None: torchrl not installed, the row is left out
            specs[torchrl_name(n)] = Spec(
                None if isinstance(via_torchrl, str) else via_torchrl,
                note=via_torchrl
                if isinstance(via_torchrl, str)
                else "frames/s = world-steps/s; step_and_maybe_reset",
            )
    specs[REUSE_4096] = Spec(
        batched_stepper(4096, dev, seed, reuse_obs=True),
        note="observations written into one buffer, overwritten every step",
    )
    ends = sorted({4096, max(args.sizes)})  # the reference size and the largest
    for n in ends:
        specs[uint8_name(n)] = Spec(
            batched_stepper(n, dev, seed, obs_dtype="uint8"),
            note="8-bit observations: a quarter of the bytes",
        )
    for n in ends:
        specs[observation_name(n)] = Spec(
            observation_stepper(n, dev, seed),
            note="only the observation write of a step (a floor: no step returning it is faster)",
        )
    reset = per_world_reset_stepper(4096, dev, seed)
    specs[RESET_4096] = Spec(
        None if isinstance(reset, str) else reset,
        note=reset if isinstance(reset, str) else "reset(env_index=done) of finished worlds",
    )
    for n in NG_WORLDS:
        specs[node_graph_name(n)] = Spec(
            node_graph_stepper(n, 100, dev, seed), unit="world", agents_per_world=100
        )
    specs[NG_OBS_64] = Spec(
        node_graph_observation_stepper(64, 100, dev, seed),
        unit="world",
        agents_per_world=100,
        note="only the observation write of a step (a floor: no step returning it is faster)",
    )
    return specs


def interleaved(specs: dict[str, Spec], rounds: int, seconds: float) -> dict[str, float]:
    """Median rate of every spec with a stepper over ``rounds`` interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name, s in specs.items() if s.stepper}
    for _ in range(rounds):
        for name in samples:
            samples[name].append(rate(specs[name].stepper, seconds))  # type: ignore[arg-type]
    return {name: statistics.median(values) for name, values in samples.items()}


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def env_rows(args: Args, device: torch.device) -> list[dict]:
    """The interleaved env table: agent-steps/s (world-steps/s where it means more) of every
    face, ``x MPE2``, and the ratios the targets read."""
    specs = env_specs(args, device)
    medians = interleaved(specs, args.rounds, args.seconds)
    ref = medians.get(REFERENCE)
    rows, agent_rate, world_rate = [], {}, {}
    for name, spec in specs.items():
        med = medians.get(name)
        agents = world = None
        if med is not None:
            agents = med * spec.agents_per_world if spec.unit == "world" else med
            world = agents / spec.agents_per_world if spec.worlds else None
        agent_rate[name], world_rate[name] = agents, world
        rows.append(
            {
                "benchmark": name,
                "agent-steps/s": None if agents is None else int(agents),
                "x MPE2": _ratio(agents, ref),
                "world-steps/s": None if world is None else int(world),
                "note": spec.note,
            }
        )
    largest = max(args.sizes)
    scale = _ratio(agent_rate.get(batched_name(largest)), agent_rate.get(batched_name(4096)))
    ratios = {
        SCALE_RATIO: (
            scale if largest > 4096 else None,
            f"agent-steps/s at {largest:,} / at 4,096 worlds"
            if largest > 4096 and 4096 in args.sizes
            else "not available: --sizes needs 4096 and a larger size",
        ),
        VMAS_RATIO: (
            _ratio(agent_rate.get(batched_name(4096)), agent_rate.get(VMAS_4096)),
            "agent-steps/s, ours / VMAS, same run",
        ),
        NG_RATIO: (
            _ratio(world_rate.get(node_graph_name(64)), world_rate.get(node_graph_name(1))),
            "world-steps/s",
        ),
        U8_SCALE_RATIO: (
            _ratio(agent_rate.get(uint8_name(largest)), agent_rate.get(uint8_name(4096)))
            if largest > 4096
            else None,
            f"obs_dtype=uint8: agent-steps/s at {largest:,} / at 4,096 worlds (not a target)",
        ),
        U8_VMAS_RATIO: (
            _ratio(agent_rate.get(uint8_name(4096)), agent_rate.get(VMAS_4096)),
            "obs_dtype=uint8: agent-steps/s, ours / VMAS, same run (not a target)",
        ),
        VMAS_BOUND: (
            _ratio(agent_rate.get(PO_OBS_4096), agent_rate.get(VMAS_4096)),
            "the most the VMAS ratio can be with these observations: writing them alone",
        ),
        OBS_SCALE_RATIO: (
            _ratio(agent_rate.get(observation_name(largest)), agent_rate.get(PO_OBS_4096))
            if largest > 4096
            else None,
            f"the observation write alone at {largest:,} / at 4,096 worlds: what its memory "
            "traffic keeps of the step's scaling",
        ),
        NG_BOUND: (
            _ratio(world_rate.get(NG_OBS_64), world_rate.get(node_graph_name(1))),
            "the most the 64/1 ratio can be with these observations: writing 64 worlds' alone",
        ),
    }
    for name, (value, note) in ratios.items():
        rows.append({"benchmark": name, "ratio": value, "note": note})
    return rows


# -- memory ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process now (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Restart the kernel's high-water mark of this process' RSS at its current RSS (Linux
    ``/proc/self/clear_refs``); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """The kernel's high-water mark of this process' RSS (``VmHWM``), or ``None``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_probe(engine: str, num_envs: int, steps: int = 30, seed: int = 0) -> dict[str, Any]:
    """RSS (bytes) of this process before building ``engine`` (``"partial_obs"``,
    ``"partial_obs_uint8"`` (``obs_dtype="uint8"``) or ``"vmas"``) with ``num_envs`` worlds on
    the CPU, and its peak over building, resetting and ``steps`` random steps (more than one
    episode of 25, so a reset is counted too): the kernel's high-water mark, restarted just
    before building, where Linux offers it (so the buffers a step allocates and frees count
    too), else the largest RSS seen between steps."""
    torch.set_num_threads(1)
    torch.zeros(1).add_(1)  # torch's own lazy start-up, not the game's memory
    hwm = reset_peak_rss()
    before = rss_bytes()
    if engine == "partial_obs":
        step = batched_stepper(num_envs, "cpu", seed)
    elif engine == "partial_obs_uint8":
        step = batched_stepper(num_envs, "cpu", seed, obs_dtype="uint8")
    elif engine == "vmas":
        vm = vmas_stepper(num_envs, "cpu", seed)
        if vm is None:
            raise ImportError("the vmas memory probe needs vmas: pip install vmas")
        step = vm
    else:
        raise ValueError(
            f"unknown engine {engine!r}; valid choices: ['partial_obs', 'partial_obs_uint8', "
            "'vmas']"
        )
    peak = rss_bytes()
    for _ in range(steps):
        step()
        peak = max(peak, rss_bytes())
    if hwm:
        peak = max(peak, peak_rss_bytes() or 0)
    return {
        "before": before,
        "peak": peak,
        "method": "VmHWM" if hwm else "sampled RSS",
        "self_report": self_report(getattr(step, "game", None)),
    }


def self_report(game: Any) -> dict[str, Any]:
    """What the game says of its own memory: every public method with ``memory`` in its name
    that takes no argument, and what it returns (JSON-able, else its repr). Printed beside the
    RSS figure, never instead of it."""
    out: dict[str, Any] = {}
    for name in dir(type(game)) if game is not None else ():
        method = getattr(game, name, None)
        if name.startswith("_") or "memory" not in name.lower() or not callable(method):
            continue
        try:
            value = method()
        except TypeError:  # needs arguments: not a report
            continue
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)[:300]
        out[name] = value
    return out


def measured_rss(engine: str, num_envs: int, steps: int = 30) -> dict[str, int]:
    """:func:`memory_probe` in a fresh Python process (allocator caches do not carry over)."""
    code = (
        "import json, sys; from commenv.bench.speed import memory_probe; "
        f"print('RSS', json.dumps(memory_probe({engine!r}, {int(num_envs)}, {int(steps)})))"
    )
    env = {**os.environ, "COMMENV_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RSS ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe of {engine} at {num_envs} worlds failed:\n{out.stderr}")
    return json.loads(lines[-1][4:])


def memory_per_world(
    engine: str, sizes: tuple[int, int], steps: int = 30, repeats: int = 3
) -> float:
    """KiB per world: the growth of peak RSS over ``sizes[0]`` -> ``sizes[1]`` worlds (each
    size in its own fresh processes, its RSS before building subtracted) over the difference."""
    return memory_measurement(engine, sizes, steps, repeats)[0]


def memory_measurement(
    engine: str, sizes: tuple[int, int], steps: int = 30, repeats: int = 3
) -> tuple[float, dict[str, Any]]:
    """:func:`memory_per_world` and, at the larger size, how the peak was read (``method``)
    and the game's own report (:func:`self_report`). Each size's growth is the median of
    ``repeats`` fresh processes: where the allocator puts a step's buffers (heap or mapped
    pages) varies from process to process, by a few hundred bytes per world."""
    small, large = sorted(sizes)
    if small == large:
        raise ValueError(f"memory_sizes must be two different sizes, got {sizes}")
    grown, report = [], {}
    for n in (small, large):
        probes = [measured_rss(engine, n, steps) for _ in range(max(1, repeats))]
        grown.append(statistics.median(r["peak"] - r["before"] for r in probes))
        report = {"method": probes[-1].get("method"), **(probes[-1].get("self_report") or {})}
    return (grown[1] - grown[0]) / (large - small) / 1024, report


def observation_bytes(game) -> int:
    """Bytes of one step's observations of one world of a batched ``game``."""
    spaces = [game.observation_space(a) for a in game.possible_agents]
    return sum(int(math.prod(sp.shape)) * sp.dtype.itemsize for sp in spaces)


def memory_rows(args: Args) -> list[dict]:
    """KiB/world of batched partial_obs_v0 and (when installed) VMAS, by the same method."""
    small, large = sorted(args.memory_sizes)

    def how(method: str | None) -> str:
        peak = "peak RSS (kernel high-water mark)" if method == "VmHWM" else "largest RSS"
        return (
            f"growth of {peak} {small:,} -> {large:,} worlds, median of 3 fresh processes per "
            "size, CPU"
        )

    def ours(engine: str, name: str, what: str = "") -> dict:
        kib, report = memory_measurement(engine, (small, large))
        method = report.pop("method", None)
        note = how(method) + what
        note += f"; the game's own report at {large:,} worlds: {report}" if report else ""
        row = {"benchmark": name, "KiB/world": kib, "note": note[:400]}
        return {**row, "self_report": report} if report else row

    rows = [
        ours("partial_obs", MEM_OURS),
        ours("partial_obs_uint8", MEM_U8, "; obs_dtype=uint8, not a target"),
        {
            "benchmark": MEM_OBS,
            "KiB/world": observation_bytes(commenv.partial_obs_v0.batched(num_envs=1)) / 1024,
            "note": "the bytes of one step's observations, held while the caller reads them: "
            "the least any game returning them keeps (computed from the observation space)",
        },
    ]
    if importlib.util.find_spec("vmas") is None:
        rows.append({"benchmark": MEM_VMAS, "note": "not available: pip install vmas"})
    else:
        kib, report = memory_measurement("vmas", (small, large))
        rows.append({"benchmark": MEM_VMAS, "KiB/world": kib, "note": how(report.get("method"))})
    return rows


# -- targets --------------------------------------------------------------------------------
SPEED_REGIME = (
    "`commenv bench speed --threads 1` (2-s windows, full sizes) gives the reported figure"
)
SAME_RUN = "a machine-dependent ratio, both sides measured in this run under the same load"
OTHER_DAY = "machine-dependent ratios; the before file was measured on the same machine earlier"
SAME_METHOD = "a machine-dependent figure (the allocator's too); VMAS is measured the same way"


Reader = Callable[[dict[str, dict], dict[str, dict] | None], tuple[float | None, str]]
"""Reads one figure from the rows (by name) and the before file's: ``(value, what)``."""


@dataclass(frozen=True)
class Target:
    """One target of issue 18: ``value(rows, before) -> (value, what)`` read from the rows,
    judged ``value >= bound`` (``<=`` with ``at_most``)."""

    claim: str
    bound: float
    meaning: str
    value: Reader
    at_most: bool = False
    context: str = SAME_RUN
    limit: Reader | None = None
    """What the observations alone allow on this run (a bound row), quoted beside the figure."""


def _missing(row: dict | None, column: str) -> str:
    """Why a target has no figure: the row was not run, or its ``column`` is empty (for
    ``x MPE2`` and the VMAS ratios: the reference was not measured, e.g. not installed)."""
    if row is None:
        return "the row was not measured in this run"
    if row.get("note"):
        return row["note"]
    return (
        f"its {column!r} is empty: the reference it is divided by was not measured in this run "
        "(pip install mpe2 vmas)"
    )


def _read(row_key: str, column: str, fmt: str) -> Callable:
    def read(by_name: dict[str, dict], before: dict[str, dict] | None):
        row = by_name.get(row_key)
        value = None if row is None else row.get(column)
        if value is None or value != value:  # absent or NaN
            return None, f"{row_key}: {_missing(row, column)}"
        return value, fmt.format(value)

    return read


def _vs_before(row_key: str) -> Callable:
    """This run's ``x MPE2`` of ``row_key`` over the before file's: a ratio of ratios."""

    def read(by_name: dict[str, dict], before: dict[str, dict] | None):
        now = (by_name.get(row_key) or {}).get("x MPE2")
        if now is None:
            return None, f"{row_key}: {_missing(by_name.get(row_key), 'x MPE2')}"
        if before is None:
            return (
                None,
                f"no before-issue18 rows to compare with ({BEFORE} absent, or this run is it)",
            )
        then = (before.get(row_key) or {}).get("x MPE2")
        if not then:
            return None, f"the before-issue18 file has no {row_key!r} row"
        return now / then, (
            f"{now:.3f}x MPE2 now / {then:.3f}x MPE2 before issue 18 = {now / then:.2f}x, "
            "a ratio of ratios"
        )

    return read


def _with_note(read: Callable, row_key: str) -> Callable:
    """``read``, its figure followed by the row's note (how it was measured)."""

    def with_note(by_name: dict[str, dict], before: dict[str, dict] | None):
        value, what = read(by_name, before)
        note = (by_name.get(row_key) or {}).get("note")
        return value, what if value is None or not note else f"{what}, {note}"

    return with_note


def _scaling(by_name: dict[str, dict], before: dict[str, dict] | None):
    value, what = _read(SCALE_RATIO, "ratio", "{:.2f}x")(by_name, before)
    note = (by_name.get(SCALE_RATIO) or {}).get("note", "")
    if value is not None and "32,768" not in note:
        what += f", {note}: this run's largest size, not 32,768"
    return value, what


TARGETS: tuple[Target, ...] = (
    Target(
        "PettingZoo face of partial_obs_v0 >= 1.5x MPE2",
        1.5,
        "one world through the PettingZoo API steps faster than MPE2's speaker-listener",
        _read(PO_PZ, "x MPE2", "{:.2f}x MPE2"),
    ),
    Target(
        "node_graph_v0 PettingZoo face >= 2x its throughput before issue 18",
        2.0,
        "x MPE2 today over x MPE2 in the before-issue18 file, so each day's load cancels",
        _vs_before(NG_PZ),
        context=OTHER_DAY,
    ),
    Target(
        "quiz_v0 PettingZoo (AEC) face >= 2x its throughput before issue 18",
        2.0,
        "x MPE2 today over x MPE2 in the before-issue18 file, so each day's load cancels",
        _vs_before(QUIZ_AEC),
        context=OTHER_DAY,
    ),
    Target(
        "batched partial_obs_v0 >= 150x MPE2 at 4,096 worlds",
        150.0,
        "4,096 batched worlds on one thread do that many times MPE2's agent-steps",
        _read(batched_name(4096), "x MPE2", "{:.1f}x MPE2"),
    ),
    Target(
        "batched partial_obs_v0 >= 1x VMAS simple_speaker_listener at 4,096 worlds",
        1.0,
        "our batched game does at least VMAS' agent-steps/s at the same size",
        _read(VMAS_RATIO, "ratio", "{:.2f}x VMAS"),
        limit=_read(VMAS_BOUND, "ratio", "writing the observations alone reaches {:.2f}x VMAS"),
    ),
    Target(
        "batched partial_obs_v0 at 32,768 worlds >= 0.9x its throughput at 4,096",
        0.9,
        "agent-steps/s stay flat as the batch grows past 4,096 worlds",
        _scaling,
        limit=_read(OBS_SCALE_RATIO, "ratio", "the observation write alone keeps {:.2f}x"),
    ),
    Target(
        "batched partial_obs_v0 <= 3 KiB resident per world",
        3.0,
        "peak RSS grows by at most 3 KiB per added world",
        _with_note(_read(MEM_OURS, "KiB/world", "{:.2f} KiB/world"), MEM_OURS),
        at_most=True,
        context=SAME_METHOD,
        limit=_read(MEM_OBS, "KiB/world", "one step's observations alone are {:.2f} KiB/world"),
    ),
    Target(
        "node_graph_v0 at n_nodes=100: 64 worlds >= 20x one world's world-steps/s",
        20.0,
        "batching 64 worlds of 100 nodes pays at least 20x over one",
        _read(NG_RATIO, "ratio", "{:.2f}x"),
        limit=_read(NG_BOUND, "ratio", "writing 64 worlds' observations alone allows {:.2f}x"),
    ),
)
"""The targets of issue 18, judged on every run."""


POPULATION_TARGET = 5.0
"""Issue 15: a batched unsupervised population of N = 10 at least this many times the
sequential per-node loop's node-steps/s."""


def judge_populations(agents: list[dict]) -> list[dict[str, Any]]:
    """Issue 15's speed target on every batched/sequential pair of unsupervised populations
    the agents' rows hold (each family and width the section measured: judged on all, not on
    the best): ``claim``, ``value`` (the ratio), ``ok`` and ``what``."""
    by_name = {r["name"]: r for r in agents if "name" in r}
    out = []
    for name, row in by_name.items():
        if not (name.startswith("unsupervised ") and name.endswith(" batched")):
            continue
        sequential = by_name.get(name.removesuffix("batched") + "sequential")
        if not sequential or not sequential.get("steps_per_s") or not row.get("steps_per_s"):
            continue
        ratio = row["steps_per_s"] / sequential["steps_per_s"]
        model = name.removeprefix("unsupervised ").removesuffix(" batched")
        what = f"{ratio:.2f}x, training steps alone"
        bound = by_name.get(name.removesuffix("batched") + "matrix products alone", {})
        if bound.get("ratio") is not None:
            what += f"; its matrix products alone allow {bound['ratio']:.2f}x"
            if bound.get("ideal") is not None:
                what += f", {bound['ideal']:.2f}x at this core's best matmul rate"
        out.append(
            {
                "claim": f"batched unsupervised {model} >= {POPULATION_TARGET:g}x the "
                "sequential per-node loop",
                "value": ratio,
                "ok": ratio >= POPULATION_TARGET,
                "what": what,
            }
        )
    return out


def population_verdict_lines(agents: list[dict]) -> list[str]:
    """One line per :func:`judge_populations` target (issue 15's), as :func:`verdict_lines`
    (the populations are timed on the CPU, whatever ``--device``)."""
    meaning = (
        "one batched model of N nodes trains that many times faster than N one-node models "
        f"stepped in turn; {SAME_RUN} (on cpu)"
    )
    return [
        verdict(j["claim"], j["ok"], f"this run ({j['what']})", meaning, SPEED_REGIME)
        for j in judge_populations(agents)
    ]


def judge(rows: list[dict], before: list[dict] | None = None) -> list[dict[str, Any]]:
    """Each target: ``claim``, ``value``, ``ok`` (``None``: not judged) and ``what`` (the
    figure, or why it is missing)."""
    by_name = {r["benchmark"]: r for r in rows if "benchmark" in r}
    before_by = None if before is None else {r["benchmark"]: r for r in before if "benchmark" in r}
    out = []
    for t in TARGETS:
        value, what = t.value(by_name, before_by)
        ok = None if value is None else (value <= t.bound if t.at_most else value >= t.bound)
        if ok is not None and t.limit is not None:
            limit, said = t.limit(by_name, before_by)
            what += "" if limit is None else f"; {said}"
        out.append({"claim": t.claim, "value": value, "ok": ok, "what": what})
    return out


def targets(rows: list[dict], before: list[dict] | None = None) -> dict[str, bool]:
    """Which targets the rows meet (the targets they cannot judge are absent)."""
    return {j["claim"]: j["ok"] for j in judge(rows, before) if j["ok"] is not None}


def verdict_lines(rows: list[dict], before: list[dict] | None, device: Any) -> list[str]:
    """One line per target: the verdict, the measured figure, what it means on this run, and
    what to run for the reported figure; a target the rows cannot judge says why."""
    meanings = {t.claim: f"{t.meaning}; {t.context}" for t in TARGETS}
    lines = []
    for j in judge(rows, before):
        if j["ok"] is None:
            lines.append(f"- {j['claim']}: not judged — {j['what']}")
            continue
        meaning = f"{meanings[j['claim']]} (on {device})"
        lines.append(verdict(j["claim"], j["ok"], f"this run ({j['what']})", meaning, SPEED_REGIME))
    return lines


def load_before(
    path: Path, this_run: Path | None = None, required: bool = False
) -> list[dict] | None:
    """The rows of the before-issue18 result file, looked up from the working directory and
    then from the repository root (``None`` when neither has it, or when it is ``this_run``'s
    own result file: the before run is not judged against itself). A file that is not a
    result file, or (``required``) none at all, is ``ValueError`` naming ``--before``."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (path, root / path):
        if candidate.is_file():
            if this_run is not None and candidate.resolve() == this_run.resolve():
                return None
            try:
                rows = json.loads(candidate.read_text())["rows"]
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
                why = f"{type(exc).__name__}: {exc}"
                rows = None
            else:
                why = f"its rows are {type(rows).__name__}"
            if not isinstance(rows, list):
                raise ValueError(
                    f"--before must be a speed.json result file (JSON with a list of rows), got "
                    f"{str(candidate)!r} ({why})"
                )
            return rows
    if required:
        raise ValueError(
            f"--before must name an existing speed.json result file, got {str(path)!r} (not "
            f"found in the working directory nor under {root})"
        )
    return None


# -- the run --------------------------------------------------------------------------------
ENV_COLUMNS = list(SPEED_COLUMNS)  # the results page shows the same columns


OPTION_SECTIONS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("seconds", "rounds", "sizes", "before", "seed"), ("environments",)),
    "memory_sizes": ("memory",),
    "device": ("environments", "node_graph population"),  # memory is measured on the CPU
}
"""The options that only some sections read (the agents' sections take their sizes from
--quick), and those sections."""


def inert_options(args: Args) -> dict[str, str]:
    """The options of the sections ``--runs`` leaves out, and why (typed, they are refused:
    :func:`~commenv.bench.tools.refuse_inert`)."""
    chosen = select_runs(args.runs, list(SECTIONS))
    return unread(chosen, OPTION_SECTIONS, "only the {} section reads it; --runs selects none")


def check_args(args: Args) -> None:
    """``ValueError`` naming the option for sizes that cannot be measured."""
    if not args.sizes:
        raise ValueError("--sizes needs at least one number of worlds, got none")
    for n in (*args.sizes, *args.memory_sizes):
        check_int("sizes", n)
    if len(set(args.memory_sizes)) != 2:
        raise ValueError(f"--memory-sizes needs two different sizes, got {args.memory_sizes}")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_config(
        Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK, inert=inert_options
    )
    check_args(args)
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    chosen = select_runs(args.runs, list(SECTIONS))
    require_runs(chosen, "--runs")
    # the before file is read now, not after the measurements: an unreadable one, or one the
    # user named that is not there, is refused before any work (the default may be absent)
    before = load_before(args.before, Path(args.out_dir) / "speed.json", args.before != BEFORE)
    config = result_options(args, ignore=(*RUN_OPTIONS, "before"))
    store = RunStore(args.out_dir, "speed", args.resume, config, inert_options(args))
    measure = {
        "environments": lambda: env_rows(args, device),
        "memory": lambda: memory_rows(args),
        "node_graph population": lambda: graph_speed_rows(args.quick, device=device),
        "quiz agents": lambda: quiz_speed_rows(args.quick),
        "unsupervised population": lambda: unsupervised_speed_rows(args.quick),
    }
    print(
        f"bench speed: torch threads {torch.get_num_threads()}, device {device}, median of "
        f"{args.rounds} interleaved rounds of {args.seconds:.1f} s; "
        f"{sum(s in store for s in chosen)} of {len(chosen)} sections resumed",
        flush=True,
    )
    for section in chosen:
        if section not in store:
            store.add(section, {"rows": measure[section]()})
    table = ("environments", "memory")
    env = [row for s in chosen if s in table for row in store.rows[s]["rows"]]
    agents = [row for s in chosen if s not in table for row in store.rows[s]["rows"]]
    lines = verdict_lines(env, before, device) if env else []
    if env:
        print(markdown_table(env, ENV_COLUMNS, digits=2))
        print("\nTargets of issue 18, judged on this run:\n" + "\n".join(lines))
    population_lines = population_verdict_lines(agents)
    if agents:
        print(markdown_table(agents, ["name", "steps_per_s", "note"], digits=0))
    if population_lines:
        print("\nIssue 15's speed target, judged on this run:\n" + "\n".join(population_lines))
    verdicts = {j["claim"]: j["ok"] for j in judge_populations(agents)}
    extra = {
        "targets": {**targets(env, before), **verdicts},
        "verdict_lines": lines + population_lines,
    }
    json_path, csv_path = store.finish(env + agents, args, extra)
    png = figure(plot, env, agents, Path(args.out_dir) / "speed.png")
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return env + agents


def plot(env: list[dict], agents: list[dict], path: Path) -> Path:
    """Bar charts (log scale): agent-steps/s of the env rows, KiB/world of the memory rows,
    steps/s of the agent rows."""
    plt = pyplot()
    panels = [
        (env, "benchmark", "agent-steps/s", "environments (one interleaved run)"),
        (env, "benchmark", "KiB/world", "resident memory per world"),
        (agents, "name", "steps_per_s", "reference agents"),
    ]
    panels = [(rows, *rest) for rows, *rest in panels if any(r.get(rest[1]) for r in rows)]
    panels = panels or [([], "benchmark", "agent-steps/s", "no timed rows")]
    heights = [1 + sum(1 for r in rows if r.get(value)) for rows, _, value, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(8, 0.8 + 0.35 * sum(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (rows, label, value, title) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in rows if r.get(value)]
        ax.barh([r[label] for r in rows], [r[value] for r in rows], color="C0")
        if value != "KiB/world":  # rates span decades; memory per world does not
            ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(value, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    from commenv.bench.tools import cli_main

    raise SystemExit(cli_main(main, "speed"))
