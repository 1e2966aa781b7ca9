"""What a batched face returns belongs to the caller: later steps and resets never change it.

A training loop keeps observations, rewards and infos of many steps (a rollout buffer), so a
tensor a game returned must not be a view of state the game goes on updating in place.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import commenv
from tests.isa_player import random_quiz_action

W = 3


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor of an output, in a fixed order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value) for t in _tensors(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


def _partial_obs(device):
    game = commenv.partial_obs_v0.batched(
        W, device=device, n_agents=3, drop_prob=0.2, blind_prob=0.2, max_cycles=5
    )
    n, gen = game.action_space("agent_0").n, torch.Generator().manual_seed(0)

    def act():
        return {
            a: torch.randint(0, 2, (W, n), generator=gen).float().to(device)
            for a in game.possible_agents
        }

    return game, act


def _node_graph(device):
    game = commenv.node_graph_v0.batched(
        W, device=device, n_nodes=4, batch_size=3, inbox_capacity=2, max_cycles=5
    )
    gen = torch.Generator().manual_seed(0)

    def act():
        bits = torch.randint(0, 2, (W, game.n_nodes, game.max_out), generator=gen)
        return {a: bits[:, i].to(device) for i, a in enumerate(game.possible_agents)}

    return game, act


def _quiz(device):
    game = commenv.quiz_v0.batched(
        W, device=device, stack_size=2, batch_size=40, exam_every=2, exam_size=40, max_lessons=4
    )
    rng = torch.Generator().manual_seed(0)

    def act():
        return {k: _to(v, device) for k, v in random_quiz_action(game, rng).items()}

    return game, act


def _to(value, device):
    if isinstance(value, dict):
        return {k: v.to(device) for k, v in value.items()}
    return value.to(device)


GAMES = {"partial_obs": _partial_obs, "node_graph": _node_graph, "quiz": _quiz}


def _keep(kept: list, out) -> None:
    """An output and a copy of its tensors as they are when returned."""
    tensors = _tensors(out)
    kept.append((tensors, [t.clone() for t in tensors]))


@pytest.mark.parametrize("name", sorted(GAMES))
def test_returned_tensors_never_change_afterwards(name, device):
    kept: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        game, act = GAMES[name](device)
        _keep(kept, game.reset(seed=0))
        for t in range(30):
            if t in (7, 18) and (name != "quiz" or game.can_reset_worlds):
                _keep(kept, game.reset(env_index=[1]))
            _keep(kept, game.step(act()))
        game.reset()
        _keep(kept, game.step(act()))
    changed = [
        (i, j)
        for i, (now, then) in enumerate(kept)
        for j, (a, b) in enumerate(zip(now, then, strict=True))
        if not torch.equal(a, b)
    ]
    assert not changed, f"outputs changed after they were returned: (output, tensor) {changed}"
