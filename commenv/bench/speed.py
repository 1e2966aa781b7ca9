"""Agent-steps per second of the commenv games beside PettingZoo's MPE2 reference.

Measured in one run, in interleaved rounds (median of ``--rounds``), so the ratios hold on a
shared, noisy machine:

- the batched core of partial_obs_v0 at ``num_envs`` 1, 256 and 4096 (tensor face);
- its PettingZoo ParallelEnv face (numpy in/out, validated actions);
- MPE2 ``simple_speaker_listener_v4`` (random actions), the reference.

Targets: batched >= 100x MPE2, PettingZoo face >= 1x MPE2. Then each game's agent rows:
node-steps/s of node_graph_v0's batched population vs the sequential per-node loop, and
quiz_v0's lessons/s (env alone on 1 and 16 worlds, the student's training step alone, the full
loop with the reference agents).

    commenv bench speed            # about a minute
    commenv bench speed --quick    # a few seconds
    commenv bench speed --runs environments --device cuda
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import commenv
from commenv.bench.graph import speed_rows as graph_speed_rows
from commenv.bench.quiz import speed_rows as quiz_speed_rows
from commenv.bench.tools import (
    RunStore,
    markdown_table,
    parse_config,
    pyplot,
    result_options,
    save_figure,
    select_device,
    select_runs,
    verdict,
)
from commenv.bench.unsupervised import speed_rows as unsupervised_speed_rows
from commenv.bench.vmas_rows import speed_rows as vmas_speed_rows

Stepper = Callable[[], int]  # one call = some steps; returns agent-steps done


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


def mpe2_stepper(seed: int = 0) -> Stepper | None:
    """Random play in MPE2's simple_speaker_listener_v4, the reference."""
    try:
        from mpe2 import simple_speaker_listener_v4
    except ImportError:
        return None
    return random_play(simple_speaker_listener_v4.parallel_env(max_cycles=25), seed)


def batched_stepper(num_envs: int, device: str = "cpu", seed: int = 0, **config) -> Stepper:
    """Random bit actions in ``num_envs`` worlds of the batched core."""
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device, **config)
    game.reset(seed=seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    n_act = game.action_space(game.possible_agents[0]).n
    agents = game.possible_agents

    shifts = torch.arange(8, device=device, dtype=torch.uint8)
    n_bytes = (n_act + 7) // 8

    def step() -> int:
        # Random bits from random bytes: 8x fewer RNG draws than one randint per bit.
        octets = torch.randint(
            0,
            256,
            (num_envs, len(agents), n_bytes, 1),
            generator=gen,
            device=device,
            dtype=torch.uint8,
        )
        bits = ((octets >> shifts) & 1).flatten(-2)[..., :n_act]
        _, _, _, trunc, _ = game.step({a: bits[:, i] for i, a in enumerate(agents)})
        if bool(trunc[agents[0]][0]):
            game.reset()
        return num_envs * len(agents)

    return step


def rate(step: Stepper, seconds: float) -> float:
    """Agent-steps per second of ``step`` over about ``seconds``."""
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done / elapsed


SECTIONS: dict[str, str] = {
    "environments": "every face beside MPE2 (agent-steps/s)",
    "node_graph population": "batched population vs the sequential per-node loop",
    "quiz agents": "quiz_v0 lessons/s: env alone, student step, full loop",
    "unsupervised population": "batched VAE/BiGAN population vs the sequential per-node loop",
    "vmas": "VMAS simple_speaker_listener beside the batched face (and the TorchRL route)",
}
"""The benchmark's runs (``--runs``): each is measured, recorded and resumed as a whole."""


@dataclass
class Args:
    """Agent-steps per second of the commenv games beside PettingZoo's MPE2 reference."""

    quick: bool = False
    """quick preset: short measurement windows (a few seconds)"""
    seconds: float = 2.0
    """measurement window per row and round"""
    rounds: int = 3
    """interleaved rounds (median taken)"""
    runs: str = "all"
    """comma-separated sections by name or slug: environments, node-graph-population,
    quiz-agents, unsupervised-population, vmas (VMAS rows need `pip install vmas`; without
    it only our rows are timed)"""
    device: str = "auto"
    """device of the batched core and population: auto (CUDA when present) | cpu | cuda"""
    threads: int = 1
    """torch CPU threads (default 1: MPE2 uses one core too; 0 = torch default)"""
    seed: int = 0
    """seed of the random actions"""
    out_dir: Path = Path("results/speed")
    """where JSON/CSV/PNG go (results/speed-quick with --quick)"""
    resume: bool = False
    """keep the sections a killed run finished (its partial file) and measure only the others"""


QUICK: dict = dict(seconds=0.3, out_dir=Path("results/speed-quick"))
"""What ``--quick`` changes."""


def env_rows(args: Args, device: torch.device) -> list[dict]:
    """The interleaved env table: agent-steps/s of every face and ``x MPE2``."""
    rows_spec: dict[str, Stepper | None] = {
        "MPE2 simple_speaker_listener_v4 (reference)": mpe2_stepper(args.seed),
        "partial_obs_v0 PettingZoo parallel face": random_play(commenv.partial_obs_v0(), args.seed),
    }
    for n in (1, 256, 4096):
        rows_spec[f"partial_obs_v0 batched, num_envs={n}"] = batched_stepper(
            n, str(device), args.seed
        )
    samples: dict[str, list[float]] = {name: [] for name in rows_spec}
    for _ in range(args.rounds):
        for name, step in rows_spec.items():
            if step is not None:
                samples[name].append(rate(step, args.seconds))
    reference = samples[next(iter(rows_spec))]
    ref = statistics.median(reference) if reference else float("nan")
    rows = []
    for name, values in samples.items():
        med = statistics.median(values) if values else None
        rows.append(
            {
                "benchmark": name,
                "agent-steps/s": None if med is None else int(med),
                "x MPE2": None if med is None else med / ref,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_config(Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    chosen = select_runs(args.runs, list(SECTIONS))
    store = RunStore(args.out_dir, "speed", args.resume, result_options(args))
    measure = {
        "environments": lambda: env_rows(args, device),
        "node_graph population": lambda: graph_speed_rows(args.quick, device=device),
        "quiz agents": lambda: quiz_speed_rows(args.quick),
        "unsupervised population": lambda: unsupervised_speed_rows(args.quick),
        "vmas": lambda: vmas_speed_rows(args.quick, device=str(device)),
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
    env = store.rows["environments"]["rows"] if "environments" in chosen else []
    agents = [row for s in chosen if s != "environments" for row in store.rows[s]["rows"]]
    if env:
        print(markdown_table(env, ["benchmark", "agent-steps/s", "x MPE2"], digits=2))
        print("\n".join(verdict_lines(env, args, device)))
    if agents:
        print(markdown_table(agents, ["name", "steps_per_s", "note"], digits=0))
    json_path, csv_path = store.finish(env + agents, args, {"targets": targets(env)})
    png = plot(env, agents, Path(args.out_dir) / "speed.png")
    print(f"\nwrote {json_path}, {csv_path}, {png}")
    return env + agents


SPEED_REGIME = "`commenv bench speed --threads 1` (2-s windows) gives the README's figure"
TARGETS = {
    "partial_obs_v0 batched, num_envs=4096": (100.0, "the batched core >= 100x MPE2"),
    "partial_obs_v0 PettingZoo parallel face": (1.0, "the PettingZoo face >= 1x MPE2"),
}


def targets(env: list[dict]) -> dict[str, bool]:
    """Which speed targets the env rows meet (absent without MPE2 or the row)."""
    by_name = {r["benchmark"]: r["x MPE2"] for r in env}
    return {
        claim: by_name[row] >= bound
        for row, (bound, claim) in TARGETS.items()
        if by_name.get(row) is not None and by_name[row] == by_name[row]  # not NaN
    }


def verdict_lines(env: list[dict], args: Args, device: torch.device) -> list[str]:
    """One line per target: verdict, the measured ratio, what it means on this run and what to
    run for the reported figure."""
    by_name = {r["benchmark"]: r["x MPE2"] for r in env}
    lines = []
    for row, (_, claim) in TARGETS.items():
        ok = targets(env).get(claim)
        if ok is None:
            continue
        where = f"this machine ({by_name[row]:.2f}x MPE2, {args.seconds:g}-s windows)"
        meaning = f"one run on {device}, both sides measured under the same load"
        lines.append(verdict(claim, ok, where, meaning, SPEED_REGIME))
    return lines


def plot(env: list[dict], agents: list[dict], path: Path) -> Path:
    """Bar charts (log scale): agent-steps/s of the env rows, steps/s of the agent rows."""
    plt = pyplot()
    panels = [
        (env, "benchmark", "agent-steps/s", "environments"),
        (agents, "name", "steps_per_s", "reference agents"),
    ]
    panels = [p for p in panels if p[0]]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(8, 1.2 + 0.35 * sum(len(p[0]) for p in panels)), squeeze=False
    )
    for ax, (rows, label, value, title) in zip(axes[:, 0], panels, strict=True):
        rows = [r for r in rows if r[value]]
        ax.barh([r[label] for r in rows], [r[value] for r in rows], color="C0")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(value, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
