"""quiz_v0's per-world reset (``reset(env_index=...)``) on the batched face.

The worlds share one turn order, so a world restarts only at a round start whose exam schedule
a fresh episode shares; these tests prove that the other worlds continue exactly as without
the reset, that a restarted world plays a valid fresh episode, that the same seed and resets
give the same episodes, and that a refused or bad ``env_index`` changes nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import commenv
from tests.isa_player import flatten

FAMILY = commenv.quiz_v0
# 200-sample quizzes on digits: an epoch every 7 quizzes, so resets and epochs interleave
CONFIG = {"stack_size": 2, "batch_size": 200, "exam_every": 2, "exam_size": 50, "max_lessons": 6}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def actions(game, rng: torch.Generator) -> dict:
    """A random valid action of the agent whose turn it is, drawn on the CPU."""
    N, B, C, M = game.num_envs, game.batch_size, game.num_classes, game.stack_size * game.batch_size
    if game.agent_selection == "teacher":
        ranks = torch.rand(N, M, generator=rng).argsort(1).argsort(1)
        select = ranks < torch.randint(0, B + 1, (N, 1), generator=rng)
        targets = torch.softmax(torch.randn(N, M, C, generator=rng) * 3, -1)
        return {"teacher": {"select": select.to(game.device), "targets": targets.to(game.device)}}
    answers = torch.softmax(torch.randn(N, B, C, generator=rng) * 3, -1)
    return {"student": answers.to(game.device)}


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


def to_round_start(game, rng, outs=None) -> None:
    """Step until a partial reset is allowed again (the start of the round after an exam)."""
    while True:
        out = game.step(actions(game, rng))
        if outs is not None:
            outs.append(out)
        if game.can_reset_worlds:
            return


def scenario(device, resets: dict[int, list[int]], rounds: int = 6, num_envs: int = 4):
    """Play ``rounds`` exam cycles; before cycle ``k`` reset the worlds ``resets[k]``."""
    game = FAMILY.batched(num_envs, device=device, **CONFIG)
    rng = torch.Generator().manual_seed(11)
    outs = [game.reset(seed=5)]
    for k in range(rounds):
        if k in resets:
            outs.append(game.reset(env_index=resets[k]))
        to_round_start(game, rng, outs)
    return game, outs


def test_untouched_worlds_continue_exactly_as_without_the_reset(device):
    _, plain = scenario(device, {})
    game, reset = scenario(device, {1: [1, 3], 3: [3]})
    assert len(plain) + 2 == len(reset)
    # without the two reset outputs, the step outputs line up one for one
    steps_plain = plain[1:]
    steps_reset = [o for o in reset[1:] if len(o) == 5]
    assert len(steps_plain) == len(steps_reset)
    for a, b in zip(steps_plain, steps_reset, strict=True):
        for world in (0, 2):
            assert same(flatten(a, world), flatten(b, world))
    assert not all(
        same(flatten(a, 1), flatten(b, 1)) for a, b in zip(steps_plain, steps_reset, strict=True)
    )
    epochs = [int(o[4]["student"]["epoch"][0]) for o in steps_reset]
    assert max(epochs) >= 3  # the untouched worlds crossed epoch boundaries after the resets


def test_a_restarted_world_does_not_depend_on_the_other_worlds_restarts(device):
    """World 1 restarts before rounds 1 and 3 in both runs; in the second, worlds 0, 2 and 3
    also restart, before, with and between its restarts: world 1's whole run, epochs of its
    own included, is the same bit for bit (its shuffles come from its own streams)."""
    _, alone = scenario(device, {1: [1], 3: [1]})
    crowd = {0: [0], 1: [1, 2], 2: [0], 3: [3, 1], 4: [2]}
    _, crowded = scenario(device, crowd)

    def world_1(outs, resets):  # its step outputs and its own restarts' outputs
        starts = [k for k in sorted(resets) if 1 in resets[k]]
        restarts = [o for o in outs[1:] if len(o) == 2]
        mine = [restarts[sorted(resets).index(k)] for k in starts]
        return [flatten(o, 1) for o in outs if len(o) == 5] + [flatten(o, 1) for o in mine]

    a, b = world_1(alone, {1: [1], 3: [1]}), world_1(crowded, crowd)
    assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    epochs = [int(o[4]["student"]["epoch"][1]) for o in alone if len(o) == 5]
    assert max(epochs[-7:]) >= 2  # world 1 crossed an epoch of its own after a restart
    steps = [o for o in crowded if len(o) == 5]
    assert not all(
        same(flatten(x, 0), flatten(y, 0))
        for x, y in zip([o for o in alone if len(o) == 5], steps, strict=True)
    )


def test_a_reset_world_plays_a_valid_fresh_episode(device):
    game = FAMILY.batched(3, device=device, **CONFIG)
    rng = torch.Generator().manual_seed(0)
    game.reset(seed=1)
    for _ in range(2):
        to_round_start(game, rng)
    obs, infos = game.reset(env_index=torch.tensor([False, True, False]))
    info = infos["student"]
    assert info["lessons"].tolist() == [4, 0, 4] and info["epoch"][1] == 1
    assert info["forward_passes"].tolist() == [8, 0, 8] and info["backward_passes"][1] == 0
    assert info["exam_accuracy"][1] == -1 and info["exam_accuracy"][0] >= 0
    parts = game.unpack_student(obs["student"])
    assert parts["phase"][1].tolist() == [1, 0, 0] and bool(parts["mask"][1].all())
    rows = info["indices"][1]
    assert torch.equal(parts["images"][1], game.train_x[rows])
    assert len(torch.unique(rows)) == game.batch_size
    assert obs["teacher"][1].abs().sum() == 0 and obs["teacher"][0].abs().sum() > 0
    # its own clock: it truncates max_lessons lessons after its reset, the others earlier
    truncated_at = {}
    for _ in range(6):
        to_round_start(game, rng)
        out = game._truncated.tolist()
        for w in range(3):
            if out[w] and w not in truncated_at:
                truncated_at[w] = int(game._infos()["student"]["lessons"][w])
    assert truncated_at == {0: 6, 1: 6, 2: 6}
    # an epoch of a restarted world covers the training set without repeats
    _, infos = game.reset(env_index=1)
    quizzes = [infos["student"]["indices"][1]]
    while len(quizzes) < game.batches_per_epoch:
        *_, infos = game.step(actions(game, rng))
        if game.phase == "quiz":  # each step that ends on a quiz turn shows a new quiz
            quizzes.append(infos["student"]["indices"][1])
    assert len(torch.unique(torch.cat(quizzes))) == game.batches_per_epoch * game.batch_size


def test_same_seed_and_resets_same_episodes(device):
    _, a = scenario(device, {1: [0, 2], 2: [2], 4: [1]}, rounds=5)
    _, b = scenario(device, {1: [0, 2], 2: [2], 4: [1]}, rounds=5)
    _, c = scenario(device, {1: [0, 3], 2: [2], 4: [1]}, rounds=5)
    assert same(flatten(a), flatten(b))
    assert not same(flatten(a), flatten(c))


def test_bad_or_refused_env_index_changes_nothing(device):
    game = FAMILY.batched(3, device=device, **CONFIG)
    twin = FAMILY.batched(3, device=device, **CONFIG)
    with pytest.raises(ValueError, match="before the first reset"):
        game.reset(env_index=1)
    rng, rng_twin = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    game.reset(seed=3)
    twin.reset(seed=3)
    game.step(actions(game, rng))  # mid-round: a partial reset would break the turn order
    twin.step(actions(twin, rng_twin))
    assert not game.can_reset_worlds
    with pytest.raises(ValueError, match="shared turn order|share one turn order"):
        game.reset(env_index=[0])
    bad = [-1, 3, 1.5, "0", [], [[0]], np.ones(2, bool), torch.tensor([0.0]), True]
    for env_index in bad:
        with pytest.raises(ValueError, match="env_index"):
            game.reset(env_index=env_index)
    with pytest.raises(ValueError, match="seed"):
        game.reset(seed=0, env_index=0)
    before = game.reset(env_index=np.zeros(3, bool))  # an all-False mask resets nothing
    assert same(flatten(before), flatten((twin._observations(), twin._infos())))
    for _ in range(12):
        assert same(
            flatten(game.step(actions(game, rng))), flatten(twin.step(actions(twin, rng_twin)))
        )


def test_a_mask_naming_every_world_is_reset(device):
    game, twin = (
        FAMILY.batched(2, device=device, **CONFIG),
        FAMILY.batched(2, device=device, **CONFIG),
    )
    rng, rng_twin = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    game.reset(seed=9)
    twin.reset(seed=9)
    for _ in range(3):  # anywhere, mid-round too
        game.step(actions(game, rng))
        twin.step(actions(twin, rng_twin))
    assert same(flatten(game.reset(env_index=[0, 1])), flatten(twin.reset()))
    for _ in range(10):
        assert same(
            flatten(game.step(actions(game, rng))), flatten(twin.step(actions(twin, rng_twin)))
        )


def test_the_pettingzoo_engine_takes_the_one_world_selector():
    from commenv.quiz import QuizWorld

    world = QuizWorld(**CONFIG)
    obs, _ = world.reset(seed=0)
    again, _ = world.reset(env_index=np.zeros(1, bool))
    assert again["student"] is obs["student"]
    fresh, infos = world.reset(env_index=0)  # every world: a reset that continues the stream
    assert infos["student"]["lessons"] == 0 and not np.array_equal(fresh["student"], obs["student"])
