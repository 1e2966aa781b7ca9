"""Train Stable-Baselines3 PPO on partial_obs_v0 through SuperSuit, compare with random play.

Every agent shares one PPO policy (parameter sharing, the SuperSuit route):
``pettingzoo_env_to_vec_env_v1`` turns the ParallelEnv's agents into vector-env slots and
``concat_vec_envs_v1`` stacks copies of the game. The script prints the mean episode reward
per agent of the trained policy beside a uniformly random policy's, on the same seeds.

    python examples/ppo_partial_obs.py --timesteps 50000
    python examples/ppo_partial_obs.py --device cuda --threads 4

One torch thread by default (``--threads``): on a few loaded cores torch's default thread
count makes this small policy many times slower, its OpenMP threads waiting on each other.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import commenv
from commenv.bench.tools import require


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timesteps", type=int, default=50_000, help="PPO training agent-steps")
    p.add_argument("--num-envs", type=int, default=8, help="copies of the game stacked for PPO")
    p.add_argument("--message-bits", type=int, default=4, help="bits per message")
    p.add_argument("--num-candidates", type=int, default=2, help="worlds to pick from (K)")
    p.add_argument("--level", default="both", choices=commenv.partial_obs.LEVELS)
    p.add_argument("--graph", default="two_way", help="channel graph (two_way, all_to_all, ...)")
    p.add_argument("--n-agents", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.1, help="pixel inversion probability")
    p.add_argument("--max-cycles", type=int, default=25, help="steps per episode")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--device", default="auto", help="PPO's device: auto (CUDA when present), cpu, cuda"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no contention)")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace) -> dict:
    return dict(
        n_agents=args.n_agents,
        graph=args.graph,
        level=args.level,
        noise=args.noise,
        message_bits=args.message_bits,
        num_candidates=args.num_candidates,
        max_cycles=args.max_cycles,
    )


def evaluate(policy, config: dict, episodes: int, seed: int) -> float:
    """Mean episode reward per agent; ``policy(obs_batch) -> actions`` or None for random."""
    env = commenv.partial_obs_v0(**config)
    totals = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        space = env.action_space(env.possible_agents[0])
        space.seed(seed + ep)
        total = 0.0
        while env.agents:
            if policy is None:
                actions = {a: space.sample() for a in env.agents}
            else:
                batch = np.stack([obs[a] for a in env.agents])
                acts = policy(batch)
                actions = dict(zip(env.agents, acts, strict=True))
            obs, rewards, *_ = env.step(actions)
            total += sum(rewards.values())
        totals.append(total / len(env.possible_agents))
    return float(np.mean(totals))


def cast_actions_wrapper(venv):
    """SB3 emits float32 MultiBinary actions; SuperSuit stacks them into the space's int8."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class CastActions(VecEnvWrapper):
        def step_async(self, actions: np.ndarray) -> None:
            self.venv.step_async(np.asarray(actions).round().astype(np.int8))

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            return self.venv.step_wait()

    return CastActions(venv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    require("supersuit", "stable_baselines3", extra="rl")
    import supersuit as ss
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    from commenv.bench.tools import select_device

    torch.set_num_threads(args.threads)
    device = select_device(args.device)

    config = make_config(args)
    vec = ss.pettingzoo_env_to_vec_env_v1(commenv.partial_obs_v0(**config))
    vec = ss.concat_vec_envs_v1(vec, args.num_envs, num_cpus=0, base_class="stable_baselines3")
    vec = cast_actions_wrapper(vec)
    # SuperSuit's ConcatVecEnv has no .seed(), which PPO(seed=...) calls: seed globally.
    set_random_seed(args.seed)
    model = PPO(
        "MlpPolicy",
        vec,
        n_steps=128,
        batch_size=256,
        learning_rate=1e-3,
        ent_coef=0.01,
        verbose=0,
        device=str(device),
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    train_s = time.perf_counter() - start
    vec.close()

    def ppo_policy(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch, deterministic=True)[0]

    trained = evaluate(ppo_policy, config, args.eval_episodes, seed=10_000)
    random = evaluate(None, config, args.eval_episodes, seed=10_000)
    print(f"partial_obs_v0 {config}")
    print(f"PPO trained {args.timesteps:,} agent-steps in {train_s:.0f} s")
    print("| policy | mean episode reward per agent |")
    print("|---|---|")
    print(f"| PPO (shared policy) | {trained:.2f} |")
    print(f"| random | {random:.2f} |")
    return {"ppo": trained, "random": random, "train_seconds": train_s}


if __name__ == "__main__":
    main()
