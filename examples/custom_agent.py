"""Plug your own agent into partial_obs_v0: a plain function, then a torch module.

An agent is anything that maps an observation to an action of the declared space. Here:

1. ``pixel_agent``: a plain function. It speaks the first ``message_bits`` pixels of its view,
   thresholded, and picks the candidate world whose (own) view best matches what it heard.
2. ``TorchAgent``: an ``nn.Module`` acting on the *batched* face: one forward pass decides for
   every agent in ``num_envs`` worlds at once (CPU or GPU, same code).

    python examples/custom_agent.py --episodes 20
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import commenv


def pixel_agent(obs: np.ndarray, layout: dict[str, slice], bits: int, k: int) -> np.ndarray:
    """Speak thresholded pixels; choose the candidate that agrees most with heard messages."""
    view = obs[layout["view"]]
    message = (view[:bits] > 0.5).astype(np.int8)
    heard = obs[layout["heard"]].reshape(-1, 1 + bits)
    present, heard_bits = heard[:, 0] > 0, heard[:, 1:]
    choice = np.zeros(k, dtype=np.int8)
    if k and present.any():
        cands = obs[layout["candidates"]].reshape(k, -1)[:, :bits] > 0.5
        agreement = (cands[:, None, :] == (heard_bits[present] > 0.5)[None]).mean((1, 2))
        choice[int(np.argmax(agreement))] = 1
    return np.concatenate([message, choice])


def random_agent(space):
    return lambda obs: space.sample()


def run_parallel(policy_for, episodes: int, seed: int, **config) -> float:
    """Mean episode reward per agent of ``policy_for(env, agent)(obs)`` over PettingZoo episodes."""
    env = commenv.partial_obs_v0(**config)
    totals = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        policies = {a: policy_for(env, a) for a in env.agents}
        total = 0.0
        while env.agents:
            actions = {a: policies[a](obs[a]) for a in env.agents}
            obs, rewards, *_ = env.step(actions)
            total += sum(rewards.values())
        totals.append(total / len(env.possible_agents))
    return float(np.mean(totals))


class TorchAgent(nn.Module):
    """An MLP from observation to Bernoulli action bits, shared by every agent."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, act_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs (..., obs_dim)`` -> sampled bits ``(..., act_dim)`` as floats."""
        return torch.bernoulli(torch.sigmoid(self.net(obs)))


def run_batched(num_envs: int, device: str, seed: int, **config) -> float:
    """One episode in ``num_envs`` worlds at once with a :class:`TorchAgent`."""
    game = commenv.partial_obs_v0.batched(num_envs=num_envs, device=device, **config)
    agent_names = game.possible_agents
    obs, _ = game.reset(seed=seed)
    torch.manual_seed(seed)
    model = TorchAgent(
        game.observation_space(agent_names[0]).shape[0], game.action_space(agent_names[0]).n
    ).to(device)
    total = torch.zeros(num_envs, device=device)
    done = False
    with torch.no_grad():
        while not done:
            stacked = torch.stack([obs[a] for a in agent_names], 1)  # (num_envs, n, obs_dim)
            acts = model(stacked)
            actions = {a: acts[:, i] for i, a in enumerate(agent_names)}
            obs, rewards, _, trunc, _ = game.step(actions)
            total += sum(rewards.values()) / len(agent_names)
            done = bool(trunc[agent_names[0]].all())
    return float(total.mean())


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--num-envs", type=int, default=256, help="worlds for the torch agent")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no contention)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from commenv.bench.tools import select_device

    torch.set_num_threads(args.threads)

    config = dict(message_bits=16, num_candidates=4, noise=0.1, level="both")

    def pixel_for(env, agent):
        game = env.game
        return lambda o: pixel_agent(o, game.obs_layout, game.message_bits, game.num_candidates)

    results = {
        "pixel function": run_parallel(pixel_for, args.episodes, args.seed, **config),
        "random": run_parallel(
            lambda env, a: random_agent(env.action_space(a)), args.episodes, args.seed, **config
        ),
        "untrained torch module (batched)": run_batched(
            args.num_envs, str(select_device(args.device)), args.seed, **config
        ),
    }
    print("| agent | mean episode reward per agent |\n|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |")
    return results


if __name__ == "__main__":
    main()
