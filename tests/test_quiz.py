"""quiz_v0: PettingZoo's own test suite, the turn structure, exact counting, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pettingzoo.test import (
    api_test,
    parallel_api_test,
    parallel_seed_test,
    render_test,
    seed_test,
)

import commenv
from commenv.quiz import QuizGame, Selection, Simplex

FAMILY = commenv.quiz_v0
CONFIGS = [
    {},  # defaults: digits, stack 2, batch 32, whole validation split
    {"stack_size": 1, "exam_every": 3, "exam_size": 40, "max_lessons": 12},
    {"stack_size": 5, "batch_size": 8, "exam_every": 2, "exam_size": 20, "max_lessons": 8},
    {
        "dataset": "synthetic",
        "stack_size": 3,
        "batch_size": 16,
        "exam_every": 1,
        "exam_size": 16,
        "target_accuracy": 0.15,
        "max_lessons": 20,
    },
]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "stack1", "stack5", "synthetic"])
def test_pettingzoo_suite(config):
    config = {"max_lessons": 10, **config}
    api_test(FAMILY.env(**config), num_cycles=200)
    parallel_api_test(FAMILY.parallel_env(**config), num_cycles=200)
    seed_test(lambda **kw: FAMILY.env(**config, **kw), num_cycles=60)
    parallel_seed_test(lambda **kw: FAMILY.parallel_env(**config, **kw), num_cycles=60)


def test_render_modes():
    render_test(lambda render_mode=None: FAMILY.env(render_mode=render_mode, stack_size=1))
    env = FAMILY.env(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env = FAMILY.env(render_mode="ansi")
    env.reset(seed=0)
    assert "quiz turn (student)" in env.render()


def test_registered_with_pettingzoo_and_collected():
    from pettingzoo import make

    assert commenv.ENVS["quiz_v0"] is FAMILY
    env = make("aec", "commenv/quiz-v0")
    env.reset(seed=1)
    assert env.agent_selection == "student"


def test_docstring_table_matches_spaces(device):
    game = FAMILY.batched(stack_size=3, batch_size=8, device=device)
    B, S, C, D = 8, 3, game.num_classes, game.num_features
    assert game.observation_space("student").shape == (3 + B * (D + C + 1),)
    assert game.observation_space("teacher").shape == (S * B * (2 * C + D),)
    assert game.action_space("student") == Simplex(B, C)
    act = game.action_space("teacher")
    assert act["select"] == Selection(S * B, B) and act["targets"] == Simplex(S * B, C)
    assert game.observation_space("student") is game.observation_space("student")


# -- a scripted game ---------------------------------------------------------------------------
def uniform(game: QuizGame) -> torch.Tensor:
    shape = (game.num_envs, game.batch_size, game.num_classes)
    return torch.full(shape, 1 / game.num_classes, device=game.device)


def first_k(game: QuizGame, k: int) -> dict[str, torch.Tensor]:
    M = game.stack_size * game.batch_size
    select = (torch.arange(M, device=game.device) < k).expand(game.num_envs, M)
    targets = torch.full((game.num_envs, M, game.num_classes), 0.1, device=game.device)
    return {"select": select, "targets": targets}


def oracle(game: QuizGame) -> torch.Tensor:
    """Answers with the true labels of the rows shown (what a perfect student would say)."""
    labels = game._infos()["student"]["labels"]
    return torch.nn.functional.one_hot(labels, game.num_classes).float()


def play_round(game: QuizGame, lesson: dict, answer=None) -> tuple:
    """S quizzes, a lesson, a study turn (and an exam if scheduled); returns the last step."""
    out = None
    while game.agent_selection == "student" and game.phase == "quiz":
        out = game.step({"student": uniform(game) if answer is None else answer(game)})
    out = game.step({"teacher": lesson})
    out = game.step({"student": uniform(game)})
    while game.phase == "exam":
        out = game.step({"student": uniform(game) if answer is None else answer(game)})
    return out


def test_turn_order_and_exact_counts(device):
    game = FAMILY.batched(2, stack_size=3, batch_size=8, exam_every=2, exam_size=20, device=device)
    obs, infos = game.reset(seed=0)
    phases = []
    for _ in range(3):
        phases.append(game.phase)
        game.step({"student": uniform(game)})
    assert phases == ["quiz"] * 3 and game.phase == "lesson" and game.agent_selection == "teacher"
    game.step({"teacher": first_k(game, 8)})
    assert game.phase == "study"
    _, _, _, _, infos = game.step({"student": uniform(game)})
    assert infos["student"]["forward_passes"].tolist() == [3, 3]
    assert infos["student"]["backward_passes"].tolist() == [1, 1]
    # an empty lesson costs no backward pass; the second lesson triggers an exam of 3 turns
    play_round(game, first_k(game, 0))
    info = game._infos()["student"]
    assert info["backward_passes"].tolist() == [1, 1] and info["forward_passes"].tolist() == [6, 6]
    assert info["lessons"].tolist() == [2, 2] and game.exam_turns == math.ceil(20 / 8)
    # channel: every answered sample and every lesson sample costs index bits + 32 C
    per = math.ceil(math.log2(len(game.train_y))) + 32 * game.num_classes
    assert int(game.channel.counters["answers"]["bits_sent"][0]) == 2 * 6 * 8 * per
    assert int(game.channel.counters["lesson"]["bits_sent"][1]) == 2 * 8 * per


def test_lesson_is_the_selection_in_stack_order(device):
    game = FAMILY.batched(3, stack_size=2, batch_size=4, device=device)
    game.reset(seed=3)
    for _ in range(2):
        game.step({"student": uniform(game)})
    infos = game._infos()["teacher"]
    select = torch.tensor([[1, 0, 0, 1, 0, 1, 0, 0], [0] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]).bool()
    select = select.to(device)
    targets = torch.softmax(torch.randn(3, 8, game.num_classes, device=device), -1)
    obs, *_ = game.step({"teacher": {"select": select, "targets": targets}})
    lesson = game.unpack_student(obs["student"])
    assert lesson["phase"][:, 1].eq(1).all()
    for env in range(3):
        chosen = infos["stack_indices"][env][select[env]]
        k = len(chosen)
        assert lesson["mask"][env].tolist() == [True] * k + [False] * (4 - k)
        assert torch.equal(lesson["images"][env, :k], game.train_x[chosen])
        assert torch.allclose(lesson["targets"][env, :k], targets[env][select[env]])
        assert lesson["images"][env, k:].abs().sum() == 0


def test_exam_scores_the_validation_split_and_rewards(device):
    game = FAMILY.batched(1, stack_size=1, batch_size=32, exam_every=1, exam_size=50, device=device)
    game.reset(seed=0)
    C = game.num_classes
    _, rew, *_, infos = play_round(game, first_k(game, 32), answer=oracle)
    assert infos["student"]["exam_done"].item() and infos["student"]["exam_accuracy"].item() == 1.0
    assert rew["teacher"].item() == pytest.approx(1 - 1 / C) and rew["student"] == rew["teacher"]
    _, rew, *_, infos = play_round(game, first_k(game, 32))  # uniform: argmax is class 0
    expected = (game.val_y[:50] == 0).float().mean().item()
    assert infos["student"]["exam_accuracy"].item() == pytest.approx(expected)
    assert rew["student"].item() == pytest.approx(expected - 1.0)


def test_validation_split_is_deterministic_and_exam_padding_masked(device):
    a = FAMILY.batched(stack_size=1, exam_size=40, device=device)
    b = FAMILY.batched(stack_size=1, exam_size=40, device=device)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    a.reset(seed=0)
    a.phase, a._turn_in_phase = "exam", 1
    a._show_exam()
    parts = a.unpack_student(a._student_obs)
    assert parts["mask"][0].sum() == 8 and parts["phase"][0].tolist() == [0, 0, 1]


def test_truncation_and_target_termination(device):
    env = FAMILY.env(stack_size=1, max_lessons=3, exam_every=100)
    env.reset(seed=0)
    turns = 0
    for agent in env.agent_iter(200):
        obs, rew, term, trunc, info = env.last()
        env.step(None if term or trunc else env.action_space(agent).sample())
        turns += 1
    assert turns == 3 * 3 + 2  # 3 rounds of quiz/lesson/study, then each agent steps None
    game = FAMILY.batched(
        stack_size=1, exam_every=1, exam_size=10, target_accuracy=0.9, device=device
    )
    game.reset(seed=0)
    _, _, term, trunc, _ = play_round(game, first_k(game, 32), answer=oracle)
    assert term["teacher"].all() and not trunc["teacher"].any()


def test_same_seed_same_episode_bit_for_bit(device):
    def episode(seed):
        game = FAMILY.batched(
            2, stack_size=2, batch_size=8, exam_every=2, exam_size=16, device=device
        )
        obs, _ = game.reset(seed=seed)
        seen = [obs["student"].clone()]
        for _ in range(3):
            play_round(game, first_k(game, 5))
            seen.append(game._student_obs.clone())
            seen.append(game._teacher_obs.clone())
        return seen

    a, b, c = episode(7), episode(7), episode(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_epochs_cover_the_training_set_without_replacement(device):
    game = FAMILY.batched(2, stack_size=1, batch_size=32, device=device)
    game.reset(seed=0)
    seen = []
    for _ in range(game.batches_per_epoch):
        seen.append(game._rows.clone())
        play_round(game, first_k(game, 1))
    seen = torch.cat(seen, 1)
    for env in range(2):
        assert len(torch.unique(seen[env])) == seen.shape[1]  # no repeats within an epoch
    assert not torch.equal(seen[0], seen[1])  # each world shuffles on its own


# -- bad input ---------------------------------------------------------------------------------
def test_bad_answers_raise_clear_errors(device):
    game = FAMILY.batched(stack_size=2, batch_size=4, device=device)
    game.reset(seed=0)
    good = uniform(game)
    cases = {
        "not a distribution": good * 2,
        "outside \\[0, 1\\]": good - 0.2,
        "NaN": good.clone().fill_(float("nan")),
        "shape": good[:, :3],
    }
    for match, answer in cases.items():
        with pytest.raises(ValueError, match=match):
            game.step({"student": answer})
    with pytest.raises(ValueError, match="student"):
        game.step({"student": torch.ones(1, 4, game.num_classes, dtype=torch.long)})


def test_bad_lessons_and_out_of_turn(device):
    game = FAMILY.batched(stack_size=2, batch_size=4, device=device)
    game.reset(seed=0)
    with pytest.raises(ValueError, match="lesson out of turn"):
        game.step({"teacher": first_k(game, 4)})
    with pytest.raises(ValueError, match="(?i)expected actions for \\['student'\\]"):
        game.step({"student": uniform(game), "teacher": first_k(game, 4)})
    game.step({"student": uniform(game)})
    game.step({"student": uniform(game)})
    with pytest.raises(ValueError, match="not this agent's turn"):
        game.step({"student": uniform(game)})
    with pytest.raises(ValueError, match="picks too many.*at most 4.*got 5"):
        game.step({"teacher": first_k(game, 5)})
    bad_targets = first_k(game, 4)
    bad_targets["targets"] = bad_targets["targets"] * 3
    with pytest.raises(ValueError, match="targets.*not a distribution"):
        game.step({"teacher": bad_targets})
    with pytest.raises(ValueError, match="keys \\['select', 'targets'\\]"):
        game.step({"teacher": torch.zeros(1, 8)})
    halves = first_k(game, 4)
    halves["select"] = halves["select"].float() * 0.5
    with pytest.raises(ValueError, match="0 or 1"):
        game.step({"teacher": halves})
    game.step({"teacher": first_k(game, 4)})  # still playable after the errors


def test_pettingzoo_face_rejects_bad_actions():
    env = FAMILY.env(stack_size=1, batch_size=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not a distribution"):
        env.step(np.zeros((4, 10), np.float32))
    with pytest.raises(ValueError, match="student.*not a numeric array"):
        env.step("softmax please")
    env.step(env.action_space("student").sample())
    too_many = {"select": np.ones(4, np.int8), "targets": np.full((4, 10), 0.1, np.float32)}
    too_many["select"] = np.ones(4, np.int8)
    env.step(too_many)  # 4 of 4 is allowed
    env.step(env.action_space("student").sample())
    env.step(env.action_space("student").sample())
    over = {"select": np.ones(4, np.int8), "targets": np.full((4, 10), 0.1, np.float32)}
    env2 = FAMILY.env(stack_size=2, batch_size=2)
    env2.reset(seed=0)
    env2.step(env2.action_space("student").sample())
    env2.step(env2.action_space("student").sample())
    with pytest.raises(ValueError, match="picks 4 samples"):
        env2.step(over)


def test_parallel_face_uses_only_the_active_agent():
    env = FAMILY.parallel_env(stack_size=1, batch_size=4)
    obs, infos = env.reset(seed=0)
    acts = {a: env.action_space(a).sample() for a in env.agents}
    obs, rew, term, trunc, infos = env.step(acts)
    assert infos["student"]["active_agent"] == "teacher"
    assert infos["student"]["forward_passes"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, "valid choices"),
        ({"render_mode": "video"}, "valid choices"),
        ({"stack_size": 0}, "stack_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"exam_size": 10**6}, "exam_size must be <="),
        ({"target_accuracy": 1.5}, "target_accuracy"),
        ({"batch_size": 5000}, "exceeds the training split"),
    ],
)
def test_bad_config(kwargs, match, device):
    with pytest.raises(ValueError, match=match):
        FAMILY.batched(**kwargs, device=device)


def test_step_before_reset(device):
    with pytest.raises(ValueError, match="before reset"):
        FAMILY.batched(device=device).step({"student": torch.zeros(1)})


def test_spaces_sample_valid_actions():
    sim, sel = Simplex(6, 4, seed=0), Selection(20, 5, seed=0)
    for _ in range(20):
        assert sim.contains(sim.sample()) and sel.contains(sel.sample())
    assert not sim.contains(np.zeros((6, 4), np.float32))
    assert not sel.contains(np.ones(20, np.int8))


def test_doc_page_matches_the_code():
    """Arguments one per line with the real defaults; the summary table names the spaces
    ``test_docstring_table_matches_spaces`` checks."""
    from commenv.testing import check_documented_arguments

    check_documented_arguments(commenv.quiz_v0)
    doc = commenv.quiz_v0.__doc__
    for row in (
        "| Student action | ``Simplex(B, C)``",
        "| Teacher action | ``Dict(select=Selection(S * B, at most B ones), "
        "targets=Simplex(S * B, C))``",
        "| Student observation | ``Box(0, 1, (3 + B * (D + C + 1),), float32)``",
        "| Teacher observation | ``Box(0, 1, (S * B * (2 * C + D),), float32)``",
    ):
        assert row in doc, row


def test_quiz_teacher_doc_lists_every_argument():
    import inspect

    import commenv.quiz_teacher as view
    from commenv.testing import documented_arguments

    params = inspect.signature(view.QuizTeacherEnv.__init__).parameters
    real = {n: p.default for n, p in params.items() if n != "self"}
    assert documented_arguments(view.__doc__) == real
