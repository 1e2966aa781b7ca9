"""Train a PPO teacher on ``commenv/QuizTeacher-v0`` and compare it with fixed teachers.

The student (2x32, Adam) is built into the env; PPO learns which stacked samples to send back
as lessons. After training, every teacher plays ``--eval-episodes`` fresh students to
``--target-accuracy`` on the validation split, and the script prints the backward passes each
needed beside a random-selection teacher (``B`` of the ``S * B`` stacked samples uniformly) and
the thesis' cross-entropy teacher (the ``B`` samples with the largest CE feature).

    python examples/ppo_quiz_teacher.py --quick      # digits, a few minutes on 2 CPU cores
    python examples/ppo_quiz_teacher.py --timesteps 50000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium  # noqa: E402

import commenv  # noqa: E402, F401  (registers commenv/QuizTeacher-v0)
from commenv import benchtools  # noqa: E402
from commenv.quiz_teacher import FEATURES  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--quick", action="store_true", help="short PPO run (4,096 steps)")
    p.add_argument("--timesteps", type=int, default=20_000, help="PPO training steps (lessons)")
    p.add_argument("--dataset", default="digits", help="dataset of the quiz")
    p.add_argument("--stack-size", type=int, default=2, help="minibatches on the teacher's stack")
    p.add_argument("--target-accuracy", type=float, default=0.9,
                   help="validation accuracy that ends an episode")
    p.add_argument("--max-lessons", type=int, default=300, help="lesson budget per episode")
    p.add_argument("--eval-episodes", type=int, default=5, help="fresh students per teacher")
    p.add_argument("--seed", type=int, default=0, help="seed of PPO and the env")
    p.add_argument("--out-dir", default="results/quiz", help="where JSON/CSV go")
    args = p.parse_args(argv)
    if args.quick:
        args.timesteps = min(args.timesteps, 4_096)
        args.eval_episodes = min(args.eval_episodes, 3)
    return args


def make_env(args: argparse.Namespace) -> gymnasium.Env:
    return gymnasium.make(
        "commenv/QuizTeacher-v0", dataset=args.dataset, stack_size=args.stack_size,
        target_accuracy=args.target_accuracy, max_lessons=args.max_lessons,
    )


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
    import torch
    from stable_baselines3 import PPO

    args = parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a shared machine
    benchtools.seed_everything(args.seed)
    env = make_env(args)
    batch_size = env.unwrapped.game.batch_size
    start = time.perf_counter()
    model = PPO("MlpPolicy", env, n_steps=512, batch_size=128, learning_rate=3e-4,
                gamma=0.99, seed=args.seed, verbose=0)
    model.learn(total_timesteps=args.timesteps, progress_bar=False)
    train_s = time.perf_counter() - start
    print(f"PPO trained for {args.timesteps} lessons in {train_s:.0f} s")

    rng = np.random.default_rng(args.seed)

    def random_policy(_obs: np.ndarray) -> np.ndarray:
        action = np.zeros(env.action_space.n, np.int8)
        action[rng.choice(env.action_space.n, size=batch_size, replace=False)] = 1
        return action

    teachers = {
        "PPO teacher": lambda obs: model.predict(obs, deterministic=True)[0],
        "random selection": random_policy,
        "CE teacher (thesis)": lambda obs: ce_policy(obs, batch_size),
    }
    rows = []
    for name, policy in benchtools.progress(teachers.items(), desc="evaluate", leave=True):
        rows.append({"teacher": name, **evaluate(env, policy, args.eval_episodes, args.seed)})
    columns = ["teacher", "bp to target (mean)", "reached", "final val acc"]
    print(f"\nBackward passes to {100 * args.target_accuracy:.0f}% validation accuracy on "
          f"{args.dataset}, stack {args.stack_size} (budget {args.max_lessons} lessons)\n")
    print(benchtools.markdown_table(rows, columns))
    paths = benchtools.write_results(args.out_dir, f"ppo_quiz_teacher_{args.dataset}", rows, args,
                                     extra={"ppo_train_seconds": train_s})
    print(f"wrote {paths[0]}")
    return rows


if __name__ == "__main__":
    main()
