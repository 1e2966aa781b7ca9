"""Batched episodes of every game with random valid actions whose every bit is the same on any
CPU, hashed: the player of ``tests/test_cpu_isa.py`` (in-process, and as
``python -m tests.isa_player name:dataset ...`` in a fresh process, one digest per line). Its
pieces serve the quiz tests too: :func:`flatten` (``test_quiz_reset``) and
:func:`random_quiz_action` (``test_quiz_faces``' recorded digests)."""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import torch

import commenv


def flatten(out, world: int | None = None) -> list[torch.Tensor]:
    """Every tensor of a reset/step output (of one world, or all), in a fixed order."""
    found: list[torch.Tensor] = []

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, tuple | list):
            for v in x:
                walk(v)
        elif isinstance(x, torch.Tensor):
            found.append((x if world is None else x[world]).detach().cpu())

    walk(out)
    return found


def exact_distributions(shape: tuple[int, ...], rng: torch.Generator) -> torch.Tensor:
    """Random distributions whose every bit is the same on every CPU: small integer weights
    over their sum (exact in float32 in any order) and one correctly rounded division. A
    softmax is not: its vectorised ``exp`` gives other last bits with AVX-512 than with AVX2."""
    weights = torch.randint(1, 9, shape, generator=rng).float()
    return weights / weights.sum(-1, keepdim=True)


def random_quiz_action(game: Any, rng: torch.Generator) -> dict[str, Any]:
    """A random valid action of batched quiz_v0's selected agent, the same bits on any CPU:
    the teacher selects up to ``batch_size`` samples per world with exact target
    distributions, the student answers with exact distributions."""
    W, B, C = game.num_envs, game.batch_size, game.num_classes
    if game.agent_selection == "teacher":
        M = game.stack_size * B
        k = torch.randint(0, B + 1, (W, 1), generator=rng)
        ranks = torch.rand(W, M, generator=rng).argsort(1).argsort(1)
        act = {"select": ranks < k, "targets": exact_distributions((W, M, C), rng)}
    else:
        act = exact_distributions((W, B, C), rng)
    return {game.agent_selection: act}


def play(name: str, dataset: str, num_envs: int | None = None) -> str:
    """sha256 of every tensor a batched episode of game ``name`` on ``dataset`` returns."""
    h = hashlib.sha256()
    rng = torch.Generator().manual_seed(7)

    def eat(out: Any) -> None:
        for x in flatten(out):
            h.update(x.contiguous().numpy().tobytes())

    family = getattr(commenv, name)
    if name == "partial_obs_v0":
        B = num_envs or 3
        game = family.batched(
            num_envs=B, device="cpu", dataset=dataset, noise=0.3
        )  # device-free: CPU kernels
        eat(game.reset(seed=5))
        n = game.action_space(game.possible_agents[0]).n
        for t in range(30):
            if t in (9, 21):  # a partial reset draws from the world's own stream
                eat(game.reset(env_index=[1]))
            bits = {a: torch.randint(0, 2, (B, n), generator=rng) for a in game.possible_agents}
            eat(game.step(bits))
    elif name == "node_graph_v0":
        B = num_envs or 2
        # float payloads as sent (32 bits), rounded to half precision, and at 8-bit levels
        for content, float_bits in (("logits", 32), ("codes", 16), ("gaussian_codes", 8)):
            game = family.batched(  # device-free: the CPU kernels are what is compared
                num_envs=B, device="cpu", dataset=dataset, n_nodes=4, content=content,
                batch_size=8, feature_dim=4, float_bits=float_bits,
            )  # fmt: skip
            eat(game.reset(seed=5))
            N, K, M, P = game.n_nodes, game.max_out, game.batch_size, game.payload_dim
            for t in range(30):
                if t == 12:
                    eat(game.reset(env_index=[0]))
                bits = torch.randint(0, 2, (B, N, K), generator=rng)
                eat(game.step_tensors(bits, torch.rand(B, N, M, P, generator=rng) * 8 - 4))
    else:
        W = num_envs or 2
        game = family.batched(  # device-free: the CPU kernels are what is compared
            W, "cpu", dataset=dataset, stack_size=2, batch_size=8, exam_every=2, exam_size=20,
            max_lessons=6,
        )  # fmt: skip
        eat(game.reset(seed=5))
        restarted = False
        for t in range(60):
            if t > 20 and game.can_reset_worlds and not restarted:  # once, at a round start
                eat(game.reset(env_index=[0]))
                restarted = True
            eat(game.step(random_quiz_action(game, rng)))
    return h.hexdigest()


if __name__ == "__main__":
    for pair in sys.argv[1:]:
        print(pair, play(*pair.split(":")))
