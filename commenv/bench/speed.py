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
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import commenv
from commenv.bench.tools import markdown_table, write_results

Stepper = Callable[[], int]  # one call = some steps; returns agent-steps done


def random_play(env) -> Stepper:
    """Random actions in a PettingZoo ParallelEnv, resetting when the episode ends."""
    env.reset(seed=0)
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    for space in spaces.values():
        space.seed(0)

    def step() -> int:
        if not env.agents:
            env.reset()
        actions = {a: spaces[a].sample() for a in env.agents}
        env.step(actions)
        return len(actions)

    return step


def mpe2_stepper() -> Stepper | None:
    """Random play in MPE2's simple_speaker_listener_v4, the reference."""
    try:
        from mpe2 import simple_speaker_listener_v4
    except ImportError:
        return None
    return random_play(simple_speaker_listener_v4.parallel_env(max_cycles=25))


def batched_stepper(num_envs: int, device: str = "cpu", **config) -> Stepper:
    """Random bit actions in ``num_envs`` worlds of the batched core."""
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device, **config)
    game.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
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


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short measurement windows")
    p.add_argument("--seconds", type=float, default=None, help="window per row and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--device", default="cpu", help="device of the batched core")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: MPE2 uses one core too; 0 = torch default)",
    )
    p.add_argument(
        "--skip-agents",
        action="store_true",
        help="only the env rows (skip the reference agents' training-speed rows)",
    )
    p.add_argument("--out", default="results/speed", help="folder for JSON/CSV")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seconds = args.seconds or (0.3 if args.quick else 2.0)

    rows_spec: dict[str, Stepper | None] = {
        "MPE2 simple_speaker_listener_v4 (reference)": mpe2_stepper(),
        "partial_obs_v0 PettingZoo parallel face": random_play(commenv.partial_obs_v0()),
    }
    for n in (1, 256, 4096):
        rows_spec[f"partial_obs_v0 batched, num_envs={n}"] = batched_stepper(n, args.device)

    samples: dict[str, list[float]] = {name: [] for name in rows_spec}
    for _ in range(args.rounds):
        for name, step in rows_spec.items():
            if step is not None:
                samples[name].append(rate(step, seconds))
    ref = (
        statistics.median(samples[next(iter(rows_spec))])
        if rows_spec[next(iter(rows_spec))]
        else float("nan")
    )
    rows = []
    for name, values in samples.items():
        if not values:
            rows.append({"benchmark": name, "agent-steps/s": None, "x MPE2": None})
            continue
        med = statistics.median(values)
        rows.append({"benchmark": name, "agent-steps/s": int(med), "x MPE2": med / ref})
    print(
        f"torch threads: {torch.get_num_threads()}, device: {args.device}, "
        f"median of {args.rounds} interleaved rounds of {seconds:.1f} s"
    )
    print(markdown_table(rows, ["benchmark", "agent-steps/s", "x MPE2"], digits=2))

    # Each game's own speed rows (the reference agents' training steps, measured in one run).
    extra = []
    if not args.skip_agents:
        from commenv.bench.quiz import speed_rows as quiz_rows
        from commenv_agents.population import speed_rows as population_rows

        extra += population_rows(args.quick) + quiz_rows(args.quick)
        print(markdown_table(extra, ["name", "steps_per_s", "note"], digits=0))
    write_results(args.out, "speed", rows + extra, args)
    return rows + extra


if __name__ == "__main__":
    main()
