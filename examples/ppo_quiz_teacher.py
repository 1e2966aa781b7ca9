"""Train a PPO teacher on ``commenv/QuizTeacher-v0`` and compare it with fixed teachers.

The student (2x32, Adam) is built into the env; PPO learns which stacked samples to send back
as lessons. After training, every teacher plays ``--eval-episodes`` fresh students to
``--target-accuracy`` on the validation split, and the script prints the backward passes each
needed beside a random-selection teacher (``B`` of the ``S * B`` stacked samples uniformly) and
the thesis' cross-entropy teacher (the ``B`` samples with the largest CE feature).

    python examples/ppo_quiz_teacher.py --quick      # digits, a few minutes on 2 CPU cores
    python examples/ppo_quiz_teacher.py --timesteps 50000
    python examples/ppo_quiz_teacher.py --policy mlp # SB3's flat MlpPolicy instead

The default policy (``--policy per-sample``) scores every stacked sample with one small MLP
shared by all samples (its 5 features plus the 2 global ones -> a selection logit), so the
teacher learns one rule for all ``S * B`` positions instead of one per position; the critic
reads the mean of the per-sample hidden units.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium
import numpy as np

import commenv  # noqa: F401  (registers commenv/QuizTeacher-v0)
from commenv.bench import tools as benchtools
from commenv.quiz_teacher import FEATURES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument("--quick", action="store_true", help="short PPO run (4,096 steps)")
    p.add_argument("--timesteps", type=int, default=20_000, help="PPO training steps (lessons)")
    p.add_argument("--dataset", default="digits", help="dataset of the quiz")
    p.add_argument("--stack-size", type=int, default=2, help="minibatches on the teacher's stack")
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=0.9,
        help="validation accuracy that ends an episode",
    )
    p.add_argument("--max-lessons", type=int, default=300, help="lesson budget per episode")
    p.add_argument("--eval-episodes", type=int, default=5, help="fresh students per teacher")
    p.add_argument(
        "--policy",
        default="per-sample",
        choices=["per-sample", "mlp"],
        help="per-sample: one shared scorer per stacked sample; mlp: SB3's MlpPolicy",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of PPO and the env")
    p.add_argument(
        "--device", default="auto", help="PPO's device: auto (CUDA when present), cpu, cuda"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny networks: 1)")
    p.add_argument(
        "--out-dir", default="results/ppo_quiz_teacher", help="where ppo_quiz_teacher.json/csv go"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.timesteps = min(args.timesteps, 4_096)
        args.eval_episodes = min(args.eval_episodes, 3)
    return args


def make_env(args: argparse.Namespace) -> gymnasium.Env:
    return gymnasium.make(
        "commenv/QuizTeacher-v0",
        dataset=args.dataset,
        stack_size=args.stack_size,
        target_accuracy=args.target_accuracy,
        max_lessons=args.max_lessons,
    )


def per_sample_policy_class() -> type:
    """An SB3 actor-critic whose action logits are one shared MLP applied to every sample."""
    import torch
    from stable_baselines3.common.policies import ActorCriticPolicy
    from torch import nn

    n_global = 2  # the observation ends with the last exam accuracy and the budget used

    class PerSampleExtractor(nn.Module):
        def __init__(self, obs_dim: int, hidden: int = 32) -> None:
            super().__init__()
            self.n_samples = (obs_dim - n_global) // FEATURES
            self.latent_dim_pi, self.latent_dim_vf = self.n_samples, hidden
            self.body = nn.Sequential(
                nn.Linear(FEATURES + n_global, hidden),
                nn.Tanh(),
                nn.Linear(hidden, hidden),
                nn.Tanh(),
            )
            self.score = nn.Linear(hidden, 1)
            self.critic = nn.Sequential(nn.Linear(hidden + n_global, hidden), nn.Tanh())

        def _hidden(self, obs):
            per = obs[:, :-n_global].unflatten(1, (self.n_samples, FEATURES))
            glob = obs[:, -n_global:]
            rows = glob[:, None].expand(-1, self.n_samples, -1)
            return self.body(torch.cat([per, rows], -1)), glob

        def forward_actor(self, obs):
            return self.score(self._hidden(obs)[0]).squeeze(-1)  # (N, S * B) logits

        def forward_critic(self, obs):
            h, glob = self._hidden(obs)
            return self.critic(torch.cat([h.mean(1), glob], -1))

        def forward(self, obs):
            return self.forward_actor(obs), self.forward_critic(obs)

    class PerSamplePolicy(ActorCriticPolicy):
        def _build_mlp_extractor(self) -> None:
            self.mlp_extractor = PerSampleExtractor(self.features_dim)

        def _build(self, lr_schedule) -> None:
            super()._build(lr_schedule)
            # The extractor already gives one logit per sample: no position-mixing layer.
            self.action_net = nn.Identity()
            self.optimizer = self.optimizer_class(
                self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
            )

    return PerSamplePolicy


def ce_policy(obs: np.ndarray, batch_size: int) -> np.ndarray:
    """The thesis' teacher inside the view: the ``B`` samples of highest cross-entropy."""
    ce = obs[:-2].reshape(-1, FEATURES)[:, 2]
    action = np.zeros(len(ce), np.int8)
    action[np.argsort(-ce, kind="stable")[:batch_size]] = 1
    return action


def evaluate(env: gymnasium.Env, policy: Any, episodes: int, seed: int) -> dict[str, Any]:
    """Backward passes to the target (episodes that never reach it count as ``None``)."""
    reached, final = [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=10_000 + seed + ep)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(policy(obs))
        reached.append(info["backward_passes"] if terminated else None)
        final.append(info["exam_accuracy"])
    hits = [r for r in reached if r is not None]
    return {
        "bp to target (mean)": float(np.mean(hits)) if hits else None,
        "reached": f"{len(hits)}/{episodes}",
        "bp per episode": reached,
        "final val acc": 100 * float(np.mean(final)),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)  # --help works without SB3
    benchtools.require("stable_baselines3", extra="rl")
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(args.threads)  # tiny networks: more threads only contend
    benchtools.seed_everything(args.seed)
    env = make_env(args)
    batch_size = env.unwrapped.game.batch_size
    start = time.perf_counter()
    policy = per_sample_policy_class() if args.policy == "per-sample" else "MlpPolicy"
    model = PPO(
        policy,
        env,
        n_steps=512,
        batch_size=128,
        learning_rate=3e-4,
        gamma=0.99,
        seed=args.seed,
        verbose=0,
        device=str(benchtools.select_device(args.device)),
    )
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    train_s = time.perf_counter() - start
    print(f"PPO trained for {args.timesteps} lessons in {train_s:.0f} s")

    rng = np.random.default_rng(args.seed)

    def random_policy(_obs: np.ndarray) -> np.ndarray:
        action = np.zeros(env.action_space.n, np.int8)
        action[rng.choice(env.action_space.n, size=batch_size, replace=False)] = 1
        return action

    teachers = {
        f"PPO teacher ({args.policy})": lambda obs: model.predict(obs, deterministic=True)[0],
        "random selection": random_policy,
        "CE teacher (thesis)": lambda obs: ce_policy(obs, batch_size),
    }
    rows = []
    for name, policy in benchtools.progress(teachers.items(), desc="evaluate", leave=True):
        rows.append({"teacher": name, **evaluate(env, policy, args.eval_episodes, args.seed)})
    columns = ["teacher", "bp to target (mean)", "reached", "final val acc"]
    print(
        f"\nBackward passes to {100 * args.target_accuracy:.0f}% validation accuracy on "
        f"{args.dataset}, stack {args.stack_size} (budget {args.max_lessons} lessons)\n"
    )
    print(benchtools.markdown_table(rows, columns))
    paths = benchtools.write_results(
        args.out_dir,
        "ppo_quiz_teacher",
        rows,
        args,
        extra={"ppo_train_seconds": train_s},
    )
    print(f"wrote {paths[0]}, {paths[1]}")
    return rows


if __name__ == "__main__":
    main()
