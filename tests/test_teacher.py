"""Reference quiz agents: difficulty, batched top-k, student, teacher model I/O, the runner and
the Gymnasium teacher view."""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import commenv
from commenv_agents.quiz_runner import run_quiz
from commenv_agents.teacher import (
    HardnessTeacher,
    PassThroughTeacher,
    Student,
    TeacherCNN,
    TeacherMLP,
    build_teacher_model,
    difficulty,
    gumbel_scores,
    load_teacher,
    out_of_fold_probs,
    predict_probs,
    save_teacher,
    select_topk,
    teacher_for,
    train_teacher,
)


@pytest.fixture(scope="module")
def tiny_teacher() -> TeacherMLP:
    """A small teacher trained for a few epochs on digits (fast; not the reference size)."""
    data = commenv.load_dataset("digits")
    model, _ = train_teacher(  # device-free: the Gymnasium views (CPU) use it; see teacher_on
        data.train.flat(),
        data.train.y,
        data.val.flat(),
        data.val.y,
        num_classes=10,
        hidden=64,
        batch_size=32,
        max_epochs=10,
        patience=3,
        show_progress=False,
    )
    return model


@pytest.fixture
def teacher_on(tiny_teacher, device) -> TeacherMLP:
    """The tiny teacher on the test device (a copy: the Gymnasium views keep the CPU one)."""
    return copy.deepcopy(tiny_teacher).to(device)


@pytest.fixture
def bench_quiz():
    """``commenv.bench.quiz`` as a module."""
    return importlib.import_module("commenv.bench.quiz")


# -- top-k against brute force -----------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 4),
    cols=st.integers(1, 9),
    data=st.data(),
)
def test_select_topk_matches_brute_force(rows, cols, data):
    k = data.draw(st.integers(0, cols))
    values = data.draw(st.lists(st.integers(-5, 5), min_size=rows * cols, max_size=rows * cols))
    scores = torch.tensor(values, dtype=torch.float32).reshape(rows, cols)
    mask = select_topk(scores, k)
    assert mask.sum(1).tolist() == [k] * rows
    for r in range(rows):
        best = max(
            (
                sum(values[r * cols + i] for i in subset)
                for subset in itertools.combinations(range(cols), k)
            ),
            default=0,
        )
        assert float(scores[r][mask[r]].sum()) == best  # the best achievable total
        if k and k < cols:  # nothing left out scores higher than anything taken
            assert scores[r][~mask[r]].max() <= scores[r][mask[r]].min()


def test_select_topk_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        select_topk(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="scores must be"):
        select_topk(torch.zeros(3), 1)


def test_gumbel_selection_samples_softmax_without_replacement():
    scores = torch.tensor([2.0, 1.0, 0.0, -1.0]).expand(40_000, 4)
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.5, 2.0):
        first = select_topk(gumbel_scores(scores, temperature, gen), 1).float().mean(0)
        torch.testing.assert_close(
            first, torch.softmax(scores[0] / temperature, 0), atol=0.01, rtol=0
        )
    two = select_topk(gumbel_scores(scores, 1.0, gen), 2)
    assert two.sum(1).eq(2).all()  # k distinct items per row
    p = torch.softmax(scores[0], 0)
    # P(item 0 among two) = p0 + sum_j p_j p0 / (1 - p_j), the without-replacement formula
    expected = p[0] + sum(p[j] * p[0] / (1 - p[j]) for j in range(1, 4))
    assert float(two[:, 0].float().mean()) == pytest.approx(float(expected), abs=0.01)


def test_selection_temperature_keeps_easy_samples_and_checks_its_value(teacher_on, device):
    tiny_teacher = teacher_on
    game = commenv.quiz_v0.batched(stack_size=5, device=device)
    obs, infos = game.reset(seed=0)
    while game.agent_selection != "teacher":
        obs, _, _, _, infos = game.step({"student": torch.full((1, 32, 10), 0.1)})
    hard = HardnessTeacher(game, tiny_teacher, measure="ce").act(obs["teacher"], infos["teacher"])
    soft = HardnessTeacher(game, tiny_teacher, measure="ce", selection_temperature=1.0).act(
        obs["teacher"], infos["teacher"]
    )
    assert soft["select"].sum() == hard["select"].sum() == 32
    assert (soft["select"] != hard["select"]).any()  # some easier samples were sampled in
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="selection_temperature"):
            HardnessTeacher(game, tiny_teacher, selection_temperature=bad)


# -- difficulty ------------------------------------------------------------------------------
def test_difficulty_formulas():
    p_t = torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    p_s = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
    ce = difficulty(p_t, p_s, "ce")
    expected = [
        -(0.7 * math.log(0.1) + 0.2 * math.log(0.6) + 0.1 * math.log(0.3)),
        -(math.log(0.5) + 2 * math.log(0.25)) / 3,
    ]
    assert ce.tolist() == pytest.approx(expected, rel=1e-5)
    eu = difficulty(p_t, p_s, "euclid")
    assert eu[0].item() == pytest.approx(math.sqrt(0.36 + 0.16 + 0.04), rel=1e-5)
    labels = torch.tensor([0, 2])
    rho = difficulty(p_t, p_s, "rho", labels=labels)
    assert rho.tolist() == pytest.approx(
        [math.log(0.7) - math.log(0.1), math.log(1 / 3) - math.log(0.25)], rel=1e-5
    )
    gen = torch.Generator().manual_seed(0)
    r = difficulty(p_t, p_s, "random", generator=gen)
    assert r.shape == (2,) and ((r >= 0) & (r < 1)).all()
    with pytest.raises(ValueError, match="needs the true labels"):
        difficulty(p_t, p_s, "rho")
    with pytest.raises(ValueError, match="valid choices"):
        difficulty(p_t, p_s, "kl")
    with pytest.raises(ValueError, match="same shape"):
        difficulty(p_t, p_s[:1], "ce")


# -- the student -----------------------------------------------------------------------------
def test_an_empty_lesson_moves_no_student(device):
    """A skipped lesson costs no backward pass, so it must not train: with Adam's momentum a
    zero gradient would still move the parameters (an RL teacher could farm free updates)."""
    s = Student(4, 3, num_envs=2, seed=0, device=device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 5, 4, generator=g).to(device)
    t = torch.softmax(torch.randn(2, 5, 3, generator=g), -1).to(device)
    half = torch.zeros(2, 5, dtype=torch.bool, device=device)
    half[0] = True  # world 0 studies, world 1's lesson is empty
    for first in (True, False):  # before Adam has moments, and after
        if not first:
            s.study(x, t, torch.ones_like(half))
        before = s.state_dict()
        moments = {k: v.clone() for k, v in s.optimizer.state_dict()["state"].get(0, {}).items()}
        s.study(x, t, half)
        after = s.state_dict()
        assert all(torch.equal(before[k][1], after[k][1]) for k in before)
        assert not all(torch.equal(before[k][0], after[k][0]) for k in before)
        state = s.optimizer.state_dict()["state"][0]
        for k in ("exp_avg", "exp_avg_sq"):
            kept = moments[k][1] if k in moments else torch.zeros_like(state[k][1])
            assert torch.equal(state[k][1], kept)
    before = s.state_dict()
    s.study(x, t, torch.zeros_like(half))  # nobody studies: nothing moves at all
    assert all(torch.equal(before[k], v) for k, v in s.state_dict().items())


def test_batched_students_train_exactly_like_separate_ones(device):
    torch.manual_seed(0)
    pair = Student(6, 3, num_envs=2, seed=1, device=device)
    alone = Student(6, 3, num_envs=1, seed=2, device=device)
    alone.load_state_dict({k: v[1:].clone() for k, v in pair.state_dict().items()})
    x = torch.rand(2, 5, 6).to(device)
    y = torch.softmax(torch.randn(2, 5, 3), -1).to(device)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], device=device).bool()
    for _ in range(3):
        pair.study(x, y, mask)
        alone.study(x[1:], y[1:], mask[1:])
    for name, value in pair.state_dict().items():
        assert torch.allclose(value[1:], alone.state_dict()[name], atol=1e-6)
    probs = pair.answer(x)
    assert probs.shape == (2, 5, 3) and torch.allclose(
        probs.sum(-1), torch.ones(2, 5, device=device)
    )


def test_empty_lesson_leaves_the_student_unchanged(device):
    s = Student(4, 3, seed=0, device=device)
    before = s.state_dict()
    lesson = torch.rand(1, 2, 4), torch.full((1, 2, 3), 1 / 3), torch.zeros(1, 2, dtype=torch.bool)
    s.study(*(t.to(device) for t in lesson))
    assert all(torch.equal(before[k], v) for k, v in s.state_dict().items())


# -- teacher model I/O -----------------------------------------------------------------------
def test_teacher_save_load_roundtrip(tmp_path: Path, teacher_on: TeacherMLP, device):
    tiny_teacher = teacher_on
    path = save_teacher(tiny_teacher, tmp_path / "t.pt", {"note": "test"})
    blob = torch.load(path, weights_only=True)  # plain tensors and numbers only
    assert blob["extra"] == {"note": "test"}
    loaded = load_teacher(path, device=device)
    x = torch.rand(7, 64)
    assert torch.equal(predict_probs(loaded, x, device), predict_probs(tiny_teacher, x, device))
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a teacher file"):
        load_teacher(tmp_path / "bad.pt", device=device)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    load_teacher(path, device=device)
    assert torch.equal(torch.random.get_rng_state(), state)  # loaded, not drawn
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_save_cut_short_leaves_no_file(tmp_path: Path, tiny_teacher, monkeypatch):
    """A save that dies half way (a kill, a full disk) leaves nothing at the final path, so
    the next run does not load half a teacher."""

    def dies(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_teacher(tiny_teacher, tmp_path / "t.pt")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_cache_file_is_trained_again(tmp_path: Path):
    """A teacher cache file cut short (left by a kill before saves were atomic) is a cache
    miss with a warning, not an error in every later run."""
    kw = dict(cache_dir=tmp_path, hidden=8, max_epochs=1, show_progress=False)
    first = teacher_for("digits", **kw)  # device-free: the cache is the subject (CPU)
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="cannot be read"):
        again = teacher_for("digits", **kw)  # device-free: as above
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )
    assert isinstance(load_teacher(path), TeacherMLP)  # device-free: rewritten whole


def test_cnn_teacher_trains_saves_and_loads(tmp_path: Path, device):
    data = commenv.load_dataset("digits")
    model, log = train_teacher(
        data.train.flat(),
        data.train.y,
        data.val.flat(),
        data.val.y,
        num_classes=10,
        arch="cnn",
        image_shape=data.image_shape,
        batch_size=32,
        max_epochs=5,
        patience=2,
        show_progress=False,
        device=device,
    )
    assert isinstance(model, TeacherCNN) and log["best_val_accuracy"] > 0.8
    path = save_teacher(model, tmp_path / "cnn.pt")
    loaded = load_teacher(path, device=device)  # weights_only=True: config and tensors only
    x = data.test.flat()[:50]
    assert isinstance(loaded, TeacherCNN)
    got, want = predict_probs(loaded, x, device), predict_probs(model, x, device)
    assert torch.allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="needs image_shape"):
        train_teacher(
            x, data.test.y[:50], x, data.test.y[:50], num_classes=10, arch="cnn", device=device
        )
    with pytest.raises(ValueError, match="valid choices"):
        build_teacher_model({"arch": "transformer"})
    with pytest.raises(ValueError, match="valid choices"):
        train_teacher(
            x, data.test.y[:50], x, data.test.y[:50], num_classes=10, arch="rnn", device=device
        )
    old = {k: v for k, v in TeacherMLP(64, 10, hidden=8).config.items()}  # files without arch
    assert isinstance(build_teacher_model(old), TeacherMLP)


def test_reference_architectures(device):
    t = TeacherMLP(784, 10)
    assert [m.out_features for m in t.net if isinstance(m, torch.nn.Linear)] == [1200, 1200, 10]
    assert sum(isinstance(m, torch.nn.Dropout) for m in t.net) == 2
    s = Student(784, 10, device=device)
    assert [layer.weight.shape[-1] for layer in s.model.layers] == [32, 32, 10]


def test_teacher_training_learns_and_stops_early(tiny_teacher: TeacherMLP, device):
    data = commenv.load_dataset("digits")
    acc = (predict_probs(tiny_teacher, data.test.flat()).argmax(-1) == data.test.y).float().mean()
    assert acc > 0.85
    # validation accuracy cannot improve on a constant input: stops after `patience` epochs
    flat = torch.zeros(64, 64)
    _, log = train_teacher(
        flat,
        torch.zeros(64, dtype=torch.long),
        flat[:8],
        torch.zeros(8, dtype=torch.long),
        num_classes=10,
        hidden=8,
        max_epochs=50,
        patience=2,
        show_progress=False,
        device=device,
    )
    assert log["best_epoch"] == 0 and log["epochs"] == 3


def _rng_states() -> tuple:
    np_state = np.random.get_state()[1].tolist()  # noqa: NPY002
    return random.getstate(), np_state, torch.random.get_rng_state()


def test_train_teacher_seeds_its_own_run_and_leaves_the_callers_rng_alone(device):
    """The same seed trains the same teacher whatever the caller's streams hold, and the
    caller's Python, NumPy and torch streams are where they were after it."""
    data = commenv.load_dataset("digits")
    kw = dict(num_classes=10, hidden=16, max_epochs=2, show_progress=False, seed=3)
    weights = []
    for caller_seed in (0, 99):
        random.seed(caller_seed)
        np.random.seed(caller_seed)  # noqa: NPY002 - the legacy global stream a user may hold
        torch.manual_seed(caller_seed)
        before = _rng_states()
        model, _ = train_teacher(
            data.train.flat()[:256], data.train.y[:256], data.val.flat(), data.val.y,
            device=device, **kw,
        )  # fmt: skip
        after = _rng_states()
        assert after[:2] == before[:2] and torch.equal(after[2], before[2])
        weights.append([p.detach().cpu() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


# -- teacher agents in the game --------------------------------------------------------------
def test_hardness_teacher_picks_the_hardest_with_its_targets(teacher_on: TeacherMLP, device):
    tiny_teacher = teacher_on
    game = commenv.quiz_v0.batched(2, stack_size=3, batch_size=8, device=device)
    obs, infos = game.reset(seed=0)
    student = Student(game.num_features, game.num_classes, num_envs=2, seed=0, device=device)
    for _ in range(3):
        parts = game.unpack_student(obs["student"])
        obs, _, _, _, infos = game.step({"student": student.answer(parts["images"])})
    for measure, targets in (("ce", "soft"), ("euclid", "true"), ("rho", "soft")):
        teacher = HardnessTeacher(game, tiny_teacher, measure=measure, targets=targets)
        lesson = teacher.act(obs["teacher"], infos["teacher"])
        parts = game.unpack_teacher(obs["teacher"])
        p_t = predict_probs(tiny_teacher, parts["images"].reshape(-1, 64), device)
        p_t = p_t.reshape(2, 24, 10)
        # the cached lookup by index equals a forward pass on the observed images
        assert torch.allclose(
            teacher.train_probs[infos["teacher"]["stack_indices"]], p_t, atol=1e-6
        )
        scores = difficulty(p_t, parts["answers"], measure, labels=parts["labels"].argmax(-1))
        assert lesson["select"].sum(1).tolist() == [8, 8]
        chosen = scores[lesson["select"]].reshape(2, 8)
        left = scores[~lesson["select"]].reshape(2, 16)
        assert (chosen.min(1).values >= left.max(1).values - 1e-6).all()
        expected = p_t if targets == "soft" else parts["labels"]
        assert torch.allclose(lesson["targets"], expected, atol=1e-6)
    with pytest.raises(ValueError, match="valid choices"):
        HardnessTeacher(game, tiny_teacher, targets="logits")
    with pytest.raises(ValueError, match="stack_size=1"):
        PassThroughTeacher(game)


def test_run_quiz_counts_and_checkpoints(teacher_on: TeacherMLP, device):
    config = dict(stack_size=2, batch_size=32, exam_every=5, max_lessons=10**9)
    game = commenv.quiz_v0.batched(1, device=device, **config)
    student = Student(game.num_features, game.num_classes, seed=0, device=device)
    teacher = HardnessTeacher(game, teacher_on)
    data = commenv.load_dataset("digits")
    run = run_quiz(
        game,
        student,
        teacher,
        patience_epochs=3,
        max_epochs=12,
        show_progress=False,
        test=(data.test.flat().to(device), data.test.y.to(device)),
    )
    bps = [p["backward_passes"][0] for p in run.curve]
    assert bps == list(range(5, 5 * len(bps) + 1, 5))  # an exam every 5 lessons
    assert int(run.forward_passes[0]) == 2 * int(run.backward_passes[0])
    best = max(p["accuracy"][0] for p in run.curve)
    assert float(run.best_val[0]) == pytest.approx(best)
    assert "test_accuracy" in run.curve[0] and best > 0.5
    student.load_state_dict(run.best_state)  # the checkpoint scores what the exam said
    acc = student.accuracy(game.val_x, game.val_y)
    assert float(acc[0]) == pytest.approx(best, abs=1e-6)


def test_bench_quiz_help_and_speed_rows(bench_quiz):
    with pytest.raises(SystemExit) as exc:
        bench_quiz.parse_args(["--help"])
    assert exc.value.code == 0
    with pytest.raises(ValueError, match="valid choices"):
        bench_quiz.parse_args(["--runs", "stack 3 magic"])
    args = bench_quiz.parse_args(["--quick", "--runs", "stack-5-ce-soft"])
    assert args.names == ["baseline", "stack 5 CE soft"] and args.dataset == "digits"
    assert args.student_hidden == 32  # the thesis' student unless asked otherwise
    with pytest.raises(SystemExit) as exc:
        bench_quiz.parse_args(["--student-hidden", "0"])
    assert exc.value.code == 2


# -- the Gymnasium teacher view --------------------------------------------------------------
def test_gymnasium_teacher_view_passes_checkers(tiny_teacher: TeacherMLP):
    import gymnasium
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    def make(**kw):
        return gymnasium.make(
            "commenv/QuizTeacher-v0", teacher_model=tiny_teacher, max_lessons=30, exam_every=5, **kw
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(make().unwrapped)
        sb3_check_env(make().unwrapped)
    env = make(overflow="error")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["forward_passes"] == 2
    with pytest.raises(ValueError, match="more than batch_size=32"):
        env.step(np.ones(64, np.int8))
    env = make()
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(64, np.int8))
    assert info["overflow"] == 32 and info["backward_passes"] == 1
    _, _, _, _, info = env.step(np.zeros(64, np.int8))  # an empty lesson: no backward pass
    assert info["backward_passes"] == 1 and info["forward_passes"] == 6
    with pytest.raises(ValueError, match="valid choices"):
        make(targets="logits")


def test_bench_takes_a_user_teacher(teacher_on: TeacherMLP, bench_quiz, device):
    args = bench_quiz.parse_args(["--quick", "--teacher", "commenv_agents.teacher:HardnessTeacher"])
    game = commenv.quiz_v0.batched(stack_size=args.teacher_stack, device=device)
    teacher = bench_quiz.build_teacher(f"user:{args.teacher}", game, teacher_on, args)
    assert isinstance(teacher, HardnessTeacher) and teacher.measure == "ce"


def test_bench_held_out_row_scores_with_cross_fitted_teachers(
    teacher_on: TeacherMLP, bench_quiz, monkeypatch, device
):
    tiny_teacher = teacher_on
    game = commenv.quiz_v0.batched(stack_size=5, device=device)
    held_out = torch.full((len(game.train_x), 10), 0.1, device=device)
    seen = {}

    def fake(dataset, **kwargs):
        seen["dataset"] = dataset
        return held_out

    monkeypatch.setattr(bench_quiz, "out_of_fold_probs_for", fake)
    args = bench_quiz.parse_args(["--quick", "--runs", "stack 5 RHO true (held-out IL)"])
    teacher = bench_quiz.build_teacher("stack 5 RHO true (held-out IL)", game, tiny_teacher, args)
    assert seen == {"dataset": "digits"} and torch.equal(teacher.train_probs, held_out)
    assert teacher.measure == "rho" and teacher.targets == "true"
    in_sample = bench_quiz.build_teacher("stack 5 RHO true", game, tiny_teacher, args)
    assert torch.allclose(in_sample.train_probs, predict_probs(tiny_teacher, game.train_x, device))


def test_bench_quiz_runs_several_worlds_end_to_end(tmp_path, capsys, bench_quiz, device):
    rows = bench_quiz.main(
        [
            "--quick",
            "--runs",
            "stack 2 CE soft",
            "--max-epochs",
            "2",
            "--worlds",
            "2",
            "--no-plot",
            "--out-dir",
            str(tmp_path),
            "--device",
            str(device),
        ]
    )
    assert [r["config"] for r in rows] == ["baseline", "stack 2 CE soft"]
    for row in rows:
        accs = row["test acc per world"]
        assert len(accs) == 2 and row["test acc"] == pytest.approx(sum(accs) / 2)
        assert row["±"] == pytest.approx(float(torch.tensor(accs).std()))
        assert len(row["curve"][0]["test_accuracy"]) == 2
    out = capsys.readouterr().out
    assert "| stack 2 CE soft |" in out and "2 worlds per configuration" in out
    assert (tmp_path / "quiz.json").exists() and (tmp_path / "quiz.csv").exists()
    assert not (tmp_path / "quiz.partial.jsonl").exists()  # a clean finish leaves no partial
    # the file names the cached teacher it used: which file, its hash and training log
    teacher = json.loads((tmp_path / "quiz.json").read_text())["teachers"]["teacher"]
    assert len(teacher["sha256"]) == 64 and teacher["file"].startswith("digits_split0_seed0")
    assert 0 < teacher["log"]["best_val_accuracy"] <= 1


def test_median_reach_counts_worlds_that_never_get_there_as_slowest(bench_quiz):
    curve = [
        {"backward_passes": [10, 10, 10], "test_accuracy": [0.5, 0.9, 0.1]},
        {"backward_passes": [20, 20, 20], "test_accuracy": [0.8, 0.9, 0.2]},
    ]
    assert bench_quiz._median_reach(curve, "test_accuracy", 80.0) == (20, [20, 10, None])
    assert bench_quiz._median_reach(curve, "test_accuracy", 85.0) == (None, [None, 10, None])


def test_ppo_per_sample_policy_is_equivariant_and_trains(tiny_teacher: TeacherMLP, example):
    import gymnasium
    from stable_baselines3 import PPO

    script = example("ppo_quiz_teacher")
    env = gymnasium.make(
        "commenv/QuizTeacher-v0", teacher_model=tiny_teacher, max_lessons=20, exam_every=5
    )
    model = PPO(
        script.per_sample_policy_class(),
        env,
        n_steps=16,
        batch_size=8,
        n_epochs=1,
        seed=0,
        verbose=0,
    )
    model.learn(total_timesteps=32)
    obs, _ = env.reset(seed=0)
    n = env.action_space.n
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    rows = torch.as_tensor(obs[:-2]).view(n, -1)
    shuffled = torch.cat([rows[perm].flatten(), torch.as_tensor(obs[-2:])])[None]
    policy = model.policy
    with torch.no_grad():
        logits = policy.action_net(policy.mlp_extractor.forward_actor(torch.as_tensor(obs)[None]))
        logits_shuffled = policy.action_net(policy.mlp_extractor.forward_actor(shuffled))
        value = policy.mlp_extractor.forward_critic(torch.as_tensor(obs)[None])
        value_shuffled = policy.mlp_extractor.forward_critic(shuffled)
    assert logits.shape == (1, n) and logits.std() > 0
    torch.testing.assert_close(logits_shuffled, logits[:, perm])  # one rule for every sample
    torch.testing.assert_close(value_shuffled, value)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (n,) and set(np.unique(action)) <= {0, 1}


# -- held-out teacher distributions (RHO-LOSS' irreducible-loss model) ------------------------
class _Memoriser(torch.nn.Module):
    """Predicts the label of every image it was trained on, uniform on any other."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.x, self.y, self.num_classes = x, y, num_classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        seen = (images[:, None, :] == self.x[None]).all(-1)  # (n, n_train)
        logits = torch.zeros(len(images), self.num_classes)
        hit = seen.any(1)
        logits[hit] = (
            50.0
            * torch.nn.functional.one_hot(
                self.y[seen[hit].float().argmax(1)], self.num_classes
            ).float()
        )
        return logits


def test_out_of_fold_probs_never_predict_a_sample_seen_in_training():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(30, 5, generator=gen), torch.randint(0, 3, (30,), generator=gen)
    calls = []

    def train_fn(tx, ty, vx, vy, *, num_classes, seed, device):
        calls.append(len(ty))
        return _Memoriser(tx, ty, num_classes), {}

    probs = out_of_fold_probs(x, y, x[:4], y[:4], num_classes=3, folds=3, train_fn=train_fn)
    assert calls == [20, 20, 20]  # each teacher trains on the two other thirds
    # a memoriser is sure about what it saw: out of fold, every sample gets its uniform guess
    assert torch.allclose(probs, torch.full((30, 3), 1 / 3))
    in_sample = predict_probs(_Memoriser(x, y, 3), x)
    assert torch.equal(in_sample.argmax(1), y)  # while in sample it is always right
    with pytest.raises(ValueError, match="folds"):
        out_of_fold_probs(x, y, x, y, num_classes=3, folds=1, train_fn=train_fn)


def test_hardness_teacher_uses_given_train_probs(device):
    game = commenv.quiz_v0.batched(1, stack_size=2, batch_size=8, device=device)
    obs, infos = game.reset(seed=0)
    student = Student(game.num_features, game.num_classes, seed=0, device=device)
    for _ in range(2):
        parts = game.unpack_student(obs["student"])
        obs, _, _, _, infos = game.step({"student": student.answer(parts["images"])})
    n = len(game.train_x)
    probs = torch.softmax(torch.randn(n, 10, generator=torch.Generator().manual_seed(1)), -1)
    probs = probs.to(device)
    teacher = HardnessTeacher(game, None, measure="rho", targets="soft", train_probs=probs)
    lesson = teacher.act(obs["teacher"], infos["teacher"])
    assert torch.allclose(lesson["targets"], probs[infos["teacher"]["stack_indices"]])
    with pytest.raises(ValueError, match="train_probs must be"):
        HardnessTeacher(game, None, train_probs=probs[:-1])
    with pytest.raises(ValueError, match="needs a teacher model or train_probs"):
        HardnessTeacher(game, None)


def test_bench_quiz_judges_the_claims_its_rows_can_decide(bench_quiz):
    rows = [
        {"config": "baseline", "bp to base": 670, "test acc": 93.0},
        {"config": "stack 5 CE soft", "bp to base": 370, "test acc": 93.4},
        {"config": "stack 5 random soft", "bp to base": None, "test acc": 92.1},  # never there
    ]
    claims = bench_quiz.thesis_claims(rows)
    assert claims == {
        "stack 5 CE soft reaches the baseline sooner": True,
        "CE selection beats random selection (stack 5)": True,
        "every teacher row ends within 0.5 points of the baseline": False,  # random: -0.9
    }
    rows[2]["test acc"] = 92.6
    assert bench_quiz.thesis_claims(rows)[bench_quiz.ACCURACY_CLAIM]
    rows += [
        {"config": "stack 2 CE soft", "bp to base": 500, "test acc": 93.0},
        {"config": "stack 2 Euclid soft", "bp to base": 800, "test acc": 93.0},
        {"config": "stack 2 random soft", "bp to base": 700, "test acc": 93.0},
    ]
    more = bench_quiz.thesis_claims(rows)
    assert more[bench_quiz.STACK_CLAIM]  # 370 < 500
    assert not more[bench_quiz.RANDOM_CLAIM]  # Euclid (800) is slower than random (700)
    rows[1]["bp to base"] = None
    assert not any(v for k, v in bench_quiz.thesis_claims(rows[:3]).items() if "within" not in k)
    args = bench_quiz.parse_args(["--quick"])
    lines = bench_quiz.verdict_lines(claims, args)
    assert len(lines) == 3 and all(
        "on digits" in line and "`commenv bench" in line for line in lines
    )
    failed = next(line for line in lines if bench_quiz.ACCURACY_CLAIM in line)
    assert "more than 0.5 points from the baseline" in failed  # its own reason, not bp's
    assert "backward passes" not in failed.split(" — ", 1)[1].split(";")[0]


def test_run_quiz_checks_its_limits_and_the_student_first(device):
    from commenv_agents.quiz_runner import run_quiz

    game = commenv.quiz_v0.batched(num_envs=2, device=device, stack_size=1, batch_size=4)
    teacher = PassThroughTeacher(game)
    two = Student(game.num_features, game.num_classes, num_envs=2, device=device)
    three = Student(game.num_features, game.num_classes, num_envs=3, device=device)
    for kwargs, match in (
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": 1.5}, "max_epochs"),
        ({"patience_epochs": -5}, "patience_epochs"),
        ({"test": (torch.zeros(0, game.num_features), torch.zeros(0, dtype=torch.long))}, "test"),
    ):
        with pytest.raises(ValueError, match=match):
            run_quiz(game, two, teacher, show_progress=False, **kwargs)
    with pytest.raises(ValueError, match="3 students"):
        run_quiz(game, three, teacher, show_progress=False)
    with pytest.raises(ValueError, match="empty test set"):
        two.accuracy(torch.zeros(0, game.num_features), torch.zeros(0, dtype=torch.long))
