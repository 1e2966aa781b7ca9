"""Side-by-side speed of partial_obs_v0's faces against MPE2 and VMAS (issue 18), one run.

Interleaved rounds, medians, one torch thread; every figure is a ratio measured in this run.

    python scripts/po_speed.py --faces pettingzoo           # PettingZoo faces vs MPE2
    python scripts/po_speed.py --faces batched --sizes 4096 32768
"""

from __future__ import annotations

import argparse
import statistics

import torch

import commenv
from commenv.bench.speed import batched_stepper, mpe2_stepper, random_play, rate


def aec_stepper(seed: int = 0, **config):
    """Random play on the AEC face, one call = one step of every agent."""
    env = commenv.partial_obs_v0.env(**config)
    env.reset(seed=seed)
    spaces = {a: env.action_space(a) for a in env.possible_agents}
    for space in spaces.values():
        space.seed(seed)

    def step() -> int:
        done = 0
        for agent in env.agent_iter(len(env.possible_agents)):
            _, _, term, trunc, _ = env.last()
            env.step(None if term or trunc else spaces[agent].sample())
            done += 1
            if not env.agents:
                env.reset()
                break
        return done

    return step


def vmas_stepper(num_envs: int, seed: int = 0):
    """VMAS simple_speaker_listener, discrete actions, uniform random, reset every 25 steps."""
    import vmas

    env = vmas.make_env(
        "simple_speaker_listener",
        num_envs=num_envs,
        device="cpu",
        continuous_actions=False,
        seed=seed,
    )
    env.reset()
    gen = torch.Generator().manual_seed(seed)
    sizes = (
        [int(s.n) for s in env.action_space.spaces] if hasattr(env.action_space, "spaces") else None
    )
    steps = [0]

    def step() -> int:
        acts = [torch.randint(0, n, (num_envs,), generator=gen) for n in sizes]
        env.step(acts)
        steps[0] += 1
        if steps[0] % 25 == 0:
            env.reset()
        return num_envs * len(acts)

    return step


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", default="pettingzoo", choices=["pettingzoo", "batched"])
    p.add_argument("--sizes", type=int, nargs="*", default=[4096, 32768])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--reuse-obs", action="store_true", help="batched face with reuse_obs=True")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.faces == "pettingzoo":
        steppers = {
            "mpe2": mpe2_stepper(0),
            "parallel": random_play(commenv.partial_obs_v0(), 0),
            "aec": aec_stepper(0),
        }
    else:
        steppers = {"mpe2": mpe2_stepper(0)}
        for n in args.sizes:
            steppers[f"vmas@{n}"] = vmas_stepper(n)
            steppers[f"batched@{n}"] = batched_stepper(n, reuse_obs=args.reuse_obs)
    rates: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(args.rounds):
        for name, step in steppers.items():
            rates[name].append(rate(step, args.seconds))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, value in med.items():
        line = f"{name:>14}: {value:12,.0f} agent-steps/s  {value / med['mpe2']:8.2f}x MPE2"
        if name.startswith("batched@"):
            n = name.split("@")[1]
            line += f"  {value / med['vmas@' + n]:.2f}x VMAS@{n}"
        print(line)
    if args.faces == "batched":
        for n in args.sizes:
            game = commenv.partial_obs_v0.batched(num_envs=n, reuse_obs=args.reuse_obs)
            game.reset(seed=0)
            bits = torch.zeros(n, game.action_space("agent_0").n)
            game.step(dict.fromkeys(game.possible_agents, bits))
            print(f"memory_per_world@{n}: {game.memory_per_world():,} bytes")
    if args.faces == "batched" and len(args.sizes) > 1:
        a, b = args.sizes[0], args.sizes[-1]
        print(f"batched@{b} / batched@{a}: {med[f'batched@{b}'] / med[f'batched@{a}']:.2f}")


if __name__ == "__main__":
    main()
