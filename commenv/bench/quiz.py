"""Table 3.1 and figure 3.1 of the thesis: a hardness-selecting teacher accelerates a student.

Every configuration plays ``quiz_v0`` (batched face) with the reference agents of
``agents/teacher.py``: a 2x32 student (Adam) and a 2x1200 teacher with dropout, trained once to
convergence with early stopping and cached on disk (``--teacher-arch cnn``: our stronger CNN
teacher instead). ``stack 1 soft (distillation)`` is not in the thesis: every quiz sample comes
back with the teacher's soft labels, plain distillation with no selection; nor is ``stack 5 RHO
true`` (RHO-LOSS' reducible loss, the teacher standing in for the irreducible-loss model) and its
``(held-out IL)`` variant, whose teacher distributions come from two cross-fitted teachers that
never saw the sample they score, as the RHO-LOSS paper prescribes. The env counts
forward passes (quiz minibatches answered) and backward passes (lessons studied) and scores
exams on the validation split; each student stops after ``--patience-epochs`` quiz epochs
without a better exam (20 in the thesis) and is scored on the test set at its best-validation
checkpoint.

Every configuration trains ``--worlds`` students side by side (3 by default: one batched game,
one batched student model; the worlds differ in initialisation and data order) and reports
their spread. Columns: ``test acc`` and ``±`` (mean and std over worlds of the test accuracy at
each world's best-validation checkpoint), ``bp @best`` (backward passes at that checkpoint, the
thesis' column), ``bp to base`` (per world, the first exam whose *test* accuracy reaches the
baseline's ``test acc``; the median over worlds, ``–`` unless half of them got there),
``speed-up`` (baseline's ``bp to base`` / this row's), ``bp to base-0.5`` and ``speed-up -0.5``
(the same 0.5 points below the baseline's test accuracy), ``fp to base`` (forward passes at
``bp to base``), ``wall s``; the JSON/CSV add per-world values, ``bp to base val`` (reaching the
baseline's best *validation* accuracy) and the curves.

    commenv bench quiz --quick             # digits, a few minutes
    commenv bench quiz --workers 2         # Fashion-MNIST, table 3.1
    commenv bench quiz --teacher-arch cnn        # our stronger CNN teacher
    commenv bench quiz --student-hidden 256 --teacher-arch cnn   # a student that fits
    commenv bench quiz --dataset mnist --data-root ~/data/mnist
    commenv bench quiz --quick --teacher my_teachers:MyTeacher
    commenv bench quiz --runs "stack 5 CE soft,stack-5-random-soft" --resume

A user's teacher (``--teacher module:Class``) is built as ``Class(game=game, model=teacher_net,
seed=seed)`` and must provide ``act(obs, infos) -> {"select": (N, S*B) bool, "targets": (N, S*B,
C)}`` (see ``commenv_agents.teacher.HardnessTeacher``); it plays with ``--teacher-stack``
minibatches.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import tyro

import commenv
from commenv.bench import tools as benchtools
from commenv.bench.tools import as_option_error, parse_config
from commenv_agents.quiz_runner import run_quiz, turn_action
from commenv_agents.teacher import (
    TEACHER_ARCHS,
    HardnessTeacher,
    PassThroughTeacher,
    Student,
    cache_record,
    out_of_fold_probs_for,
    teacher_for,
)

# name: (stack_size, measure, targets); measure None is the no-communication baseline.
CONFIGS: dict[str, tuple[int, str | None, str]] = {
    "baseline": (1, None, "true"),
    "stack 2 CE soft": (2, "ce", "soft"),
    "stack 2 CE true": (2, "ce", "true"),
    "stack 2 Euclid soft": (2, "euclid", "soft"),
    "stack 2 random soft": (2, "random", "soft"),
    "stack 5 CE soft": (5, "ce", "soft"),
    "stack 5 CE true": (5, "ce", "true"),
    "stack 5 random soft": (5, "random", "soft"),
    "stack 5 RHO true": (5, "rho", "true"),
    "stack 5 RHO true (held-out IL)": (5, "rho", "true"),
    "stack 1 soft (distillation)": (1, "random", "soft"),
    "stack 10 CE soft": (10, "ce", "soft"),
    "stack 20 CE soft": (20, "ce", "soft"),
    "stack 10 RHO true": (10, "rho", "true"),
    "stack 20 RHO true": (20, "rho", "true"),
}
HELD_OUT = {"stack 5 RHO true (held-out IL)"}
"""Configurations whose teacher distributions come from cross-fitted teachers that never saw
the sample they score (``commenv_agents.teacher.out_of_fold_probs``, 2 folds): RHO-LOSS' irreducible
loss as its paper prescribes, from held-out data."""
THESIS: dict[str, tuple[float, int]] = {  # MNIST, table 3.1: test accuracy %, backward passes
    "baseline": (96.4, 39_000),
    "stack 2 CE soft": (96.9, 25_000),
    "stack 2 CE true": (96.5, 18_700),
    "stack 2 Euclid soft": (96.8, 18_700),
    "stack 2 random soft": (96.7, 32_800),
    "stack 5 CE soft": (96.8, 13_700),
    "stack 5 CE true": (96.8, 9_100),
}
COLUMNS = [
    "config",
    "thesis acc",
    "thesis bp",
    "test acc",
    "±",
    "bp @best",
    "bp to base",
    "speed-up",
    "bp to base-0.5",
    "speed-up -0.5",
    "fp to base",
    "epochs",
    "wall s",
]
TOLERANCE = 0.5
"""Points below the baseline's test accuracy for the ``-0.5`` columns (the thesis calls every
configuration within 0.5 of the baseline equivalent)."""


@dataclass
class Args:
    """Table 3.1 and figure 3.1 of the thesis: a hardness-selecting teacher accelerates a
    student."""

    quick: bool = False
    """quick preset: digits, exams every 10 lessons (about two minutes)"""
    dataset: str = "fashion-mnist"
    """digits | fashion-mnist | mnist | ..."""
    data_root: str | None = None
    """directory holding the dataset files"""
    runs: str = "all"
    """comma-separated configurations by name or slug, or 'all' (the baseline always runs:
    every other row is measured against it), e.g. 'stack 5 CE soft,stack-2-random-soft'"""
    teacher: str | None = None
    """add a user teacher 'module:Class' (built as Class(game=, model=, seed=))"""
    teacher_stack: int = 5
    """stack size of --teacher"""
    teacher_arch: Literal[TEACHER_ARCHS] = "mlp"
    """the teacher network: the thesis' 2x1200 MLP or our stronger CNN"""
    batch_size: int = 32
    """minibatch size (32 in the thesis)"""
    student_hidden: int = 32
    """units in each of the student's two hidden layers (32 in the thesis)"""
    patience_epochs: int = 20
    """stop after this many quiz epochs without a better exam (thesis: 20)"""
    max_epochs: int | None = None
    """hard cap on quiz epochs"""
    exam_every: int = 200
    """lessons between exams"""
    seed: int = 0
    """seed of the students and the env"""
    worlds: int = 3
    """students trained side by side per configuration (one batched game; the table shows their
    mean and std, the speed-ups their median)"""
    selection_temperature: float = 0.0
    """0: the thesis' top-k; > 0: sample the lesson without replacement with probabilities
    softmax(difficulty / T) (Gumbel top-k)"""
    workers: int = 1
    """configurations run in parallel processes (one torch thread each)"""
    device: str = "auto"
    """auto (CUDA when present) | cpu | cuda"""
    threads: int = 1
    """torch CPU threads (the models are tiny: 1 avoids contention)"""
    out_dir: Path = Path("results/quiz")
    """where JSON/CSV/PNG go (results/quiz-quick with --quick)"""
    no_plot: tyro.conf.FlagCreatePairsOff[bool] = False
    """skip figure 3.1"""
    resume: bool = False
    """keep the configurations a killed run of the same options finished (its partial file)
    and run only the others"""

    def __post_init__(self) -> None:
        if self.student_hidden < 1:
            raise ValueError(f"--student-hidden must be >= 1, got {self.student_hidden}")


QUICK: dict[str, Any] = dict(dataset="digits", exam_every=10, out_dir=Path("results/quiz-quick"))
"""What ``--quick`` changes."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The options, with ``args.names``: the configurations to run, baseline first."""
    args = parse_config(
        Args, argv, description=__doc__.split("\n\n")[0], quick=QUICK, inert=inert_options
    )
    names = benchtools.select_runs(args.runs, list(CONFIGS))
    args.names = names if "baseline" in names else ["baseline", *names]
    return args


def inert_options(args: Args) -> dict[str, str]:
    """The options these ``--runs`` and ``--teacher`` leave without effect, and why (typed,
    they are refused: :func:`~commenv.bench.tools.refuse_inert`): the baseline has no teacher,
    and a user's teacher is built with none of the reference teacher's options."""
    names = benchtools.select_runs(args.runs, list(CONFIGS))
    selecting = any(CONFIGS[n][1] is not None for n in names)  # a reference teacher row
    inert = {} if args.teacher else {"teacher_stack": "it is --teacher's stack; no --teacher"}
    if not selecting:
        inert["selection_temperature"] = "only the reference teachers select; --runs has none"
        if not args.teacher:
            inert["teacher_arch"] = "no row has a teacher: --runs selects the baseline alone"
    return inert


def teacher_training(args: Args) -> dict[str, Any]:
    """``teacher_for`` keywords: none for the thesis' MLP (train_teacher's defaults: 30 epochs
    at most, patience 5), ``arch="cnn"`` for ours."""
    return {} if args.teacher_arch == "mlp" else {"arch": args.teacher_arch}


TEACHER_KWARGS = ("game", "model", "seed")
"""What a user's ``--teacher`` class is built with."""


def build_teacher(
    name: str, game: Any, model: torch.nn.Module | None, args: Args, probs: Any = None
) -> Any:
    """The teacher agent of configuration ``name`` (or the user's ``--teacher``); ``probs``
    stand in for the teacher's distributions on the training set (the held-out ones of
    :data:`HELD_OUT` are computed when not given)."""
    if name.startswith("user:"):
        return benchtools.load_object(args.teacher)(game=game, model=model, seed=args.seed)
    _, measure, targets = CONFIGS[name]
    if measure is None:
        return PassThroughTeacher(game)
    if probs is None and name in HELD_OUT:
        probs = out_of_fold_probs_for(
            args.dataset, data_root=args.data_root, show_progress=False, **teacher_training(args)
        )
    return HardnessTeacher(
        game,
        model,
        measure=measure,
        targets=targets,
        seed=args.seed,
        selection_temperature=args.selection_temperature,
        train_probs=probs,
    )


def stack_size(name: str, args: Args) -> int:
    """The quiz stack of configuration ``name`` (the user's teacher: ``--teacher-stack``)."""
    return args.teacher_stack if name.startswith("user:") else CONFIGS[name][0]


def make_game(stack: int, args: Args, device: torch.device) -> Any:
    """The batched quiz_v0 of one configuration (``--worlds`` worlds)."""
    return commenv.quiz_v0.batched(
        args.worlds,
        device,
        dataset=args.dataset,
        data_root=args.data_root,
        stack_size=stack,
        batch_size=args.batch_size,
        exam_every=args.exam_every,
        max_lessons=10**12,
    )


def check_runs(names: list[str], args: Args, device: torch.device) -> None:
    """Every configuration's values refused before any teacher or student trains: the data
    set, each stack size's game and each built-in teacher (on stand-in distributions: no
    teacher network is trained), then dropped. ``ValueError`` names the option as typed."""
    benchtools.check_dataset(args.dataset, args.data_root)
    try:
        for stack in dict.fromkeys(stack_size(name, args) for name in names):
            game = make_game(stack, args, device)  # one at a time: each holds the data set
            probs = torch.zeros(len(game.train_x), game.num_classes)
            for name in names:  # a user's class: load_class checked it
                if stack_size(name, args) == stack and not name.startswith("user:"):
                    build_teacher(name, game, None, args, probs)
    except ValueError as exc:
        raise as_option_error(exc, args) from None


def run_config(name: str, args: Args, show_progress: bool = True) -> dict[str, Any]:
    """Train one student to early stopping; return its row (with curves)."""
    device = benchtools.select_device(args.device)
    benchtools.seed_everything(args.seed)
    stack = stack_size(name, args)
    needs_teacher = name.startswith("user:") or CONFIGS[name][1] is not None
    model = (
        teacher_for(
            args.dataset,
            data_root=args.data_root,
            device=device,
            show_progress=show_progress,
            **teacher_training(args),
        )
        if needs_teacher
        else None
    )
    game = make_game(stack, args, device)
    data = commenv.load_dataset(args.dataset, root=args.data_root)
    test = (data.test.flat().to(device), data.test.y.to(device))
    student = Student(
        game.num_features,
        game.num_classes,
        num_envs=args.worlds,
        hidden=args.student_hidden,
        seed=args.seed,
        device=device,
    )
    teacher = build_teacher(name, game, model, args)
    run = run_quiz(
        game,
        student,
        teacher,
        seed=args.seed,
        patience_epochs=args.patience_epochs,
        max_epochs=args.max_epochs,
        show_progress=show_progress,
        desc=name,
        test=test,
    )
    student.load_state_dict(run.best_state)
    test_acc = 100 * student.accuracy(*test)
    return {
        "config": name,
        "stack_size": stack,
        "worlds": args.worlds,
        "test acc": float(test_acc.mean()),
        "±": float(test_acc.std()) if args.worlds > 1 else None,
        "test acc per world": test_acc.tolist(),
        "best val acc": 100 * float(run.best_val.mean()),
        "best val acc per world": (100 * run.best_val).tolist(),
        "bp @best": round(float(run.best_backward.float().quantile(0.5))),
        "bp @best per world": run.best_backward.tolist(),
        "fp @best": round(float(run.best_forward.float().quantile(0.5))),
        "backward passes": run.backward_passes.tolist(),
        "forward passes": run.forward_passes.tolist(),
        "epochs": run.epochs,
        "wall s": run.wall_seconds,
        "stopped by": run.stopped_by,
        "bits": game.channel.total_bits(),
        "curve": run.curve,
    }


def _first_reach(curve: list[dict], key: str, world: int, target: float) -> dict | None:
    for point in curve:
        if 100 * point[key][world] >= target - 1e-9:
            return point
    return None


def _median_reach(
    curve: list[dict], key: str, target: float, counter: str = "backward_passes"
) -> tuple[float | None, list[int | None]]:
    """Per world, ``counter`` at the first exam whose ``key`` accuracy reaches ``target``; and
    their median, ``None`` unless at least half of the worlds got there (a world that never
    reached it counts as infinitely slow)."""
    worlds = len(curve[0][key]) if curve else 0
    hits = [_first_reach(curve, key, w, target) for w in range(worlds)]
    per_world = [h[counter][w] if h else None for w, h in enumerate(hits)]
    if not per_world:
        return None, per_world
    median = statistics.median(float("inf") if v is None else v for v in per_world)
    return (round(median) if median != float("inf") else None), per_world


def add_comparisons(rows: list[dict[str, Any]]) -> None:
    """Backward passes to reach the baseline's accuracy, speed-ups, thesis numbers.

    The target is the baseline's mean test accuracy (at each world's best-validation
    checkpoint); every world of a row is timed to its first exam at or above it and the row
    reports the median over worlds (one world: exactly that world).
    """
    base = next(r for r in rows if r["config"] == "baseline")
    target, target_val = base["test acc"], base["best val acc"]
    base_bp, _ = _median_reach(base["curve"], "test_accuracy", target)
    base_tol, _ = _median_reach(base["curve"], "test_accuracy", target - TOLERANCE)
    for row in rows:
        curve = row["curve"]
        row["bp to base"], row["bp to base per world"] = _median_reach(
            curve, "test_accuracy", target
        )
        row["fp to base"], _ = _median_reach(curve, "test_accuracy", target, "forward_passes")
        row["bp to base val"], _ = _median_reach(curve, "accuracy", target_val)
        row["bp to base-0.5"], _ = _median_reach(curve, "test_accuracy", target - TOLERANCE)
        row["speed-up"] = base_bp / row["bp to base"] if base_bp and row["bp to base"] else None
        row["speed-up -0.5"] = (
            base_tol / row["bp to base-0.5"] if base_tol and row["bp to base-0.5"] else None
        )
        row["thesis acc"], row["thesis bp"] = THESIS.get(row["config"], (None, None))


def draw_figure(rows: list[dict[str, Any]], path: Path, dataset: str) -> Path:
    """Figure 3.1: validation accuracy per backward pass (left: stack 2; right: stack sizes)."""
    plt = benchtools.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    left = {
        "baseline",
        "stack 2 CE soft",
        "stack 2 CE true",
        "stack 2 Euclid soft",
        "stack 2 random soft",
    }
    # one colour per configuration on both panels (the default cycle has 10; tables have more)
    cmap = plt.get_cmap("tab20")
    colour = {row["config"]: cmap(i % 20) for i, row in enumerate(rows)}
    for row in rows:
        xs = [sum(p["backward_passes"]) / len(p["backward_passes"]) for p in row["curve"]]
        ys = [100 * sum(p["accuracy"]) / len(p["accuracy"]) for p in row["curve"]]
        on_left = row["config"] in left
        on_right = row["config"] in {"baseline", "stack 2 CE soft"} or not on_left
        for ax, show in ((axes[0], on_left), (axes[1], on_right)):
            if show:
                ax.plot(xs, ys, label=row["config"], lw=1.2, color=colour[row["config"]])
    lows = [100 * min(p["accuracy"]) for r in rows for p in r["curve"]]
    for ax, title in zip(axes, ("stack size 2", "stack sizes"), strict=True):
        ax.set_xlabel("backward passes (student parameter updates)")
        ax.set_title(f"{title} — {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if lows:
            ax.set_ylim(max(min(lows), sorted(lows)[len(lows) // 10] - 5), None)
    axes[0].set_ylabel("validation accuracy (%), mean over worlds")
    return benchtools.save_figure(fig, path)


def _worker(job: tuple[str, Args]) -> dict[str, Any]:
    torch.set_num_threads(1)
    return run_config(job[0], job[1], show_progress=False)


PRIORITY = [
    "baseline",
    "stack 5 CE soft",
    "stack 5 CE true",
    "stack 2 CE soft",
    "stack 2 random soft",
    "stack 10 CE soft",
    "stack 20 CE soft",
]
"""Configurations started first (each is recorded in the partial file as it finishes, so a
killed run resumes with ``--resume``)."""


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.teacher:  # the user's class is checked before any configuration runs
        benchtools.load_class(
            args.teacher, "--teacher", ("act",), "docs/agents.md#quiz", TEACHER_KWARGS
        )
    torch.set_num_threads(args.threads)
    names = list(args.names) + ([f"user:{args.teacher}"] if args.teacher else [])
    order = sorted(names, key=lambda n: PRIORITY.index(n) if n in PRIORITY else len(PRIORITY))
    device = benchtools.select_device(args.device)
    benchtools.require_runs(names, "--runs and --teacher")
    check_runs(names, args, device)  # every run's values refused now, not after the runs before
    store = benchtools.RunStore(
        args.out_dir, "quiz", args.resume, benchtools.result_options(args), inert_options(args)
    )
    jobs = [(n, args) for n in order if n not in store]
    print(
        f"bench quiz: {args.dataset} ({device}), {len(names)} configurations "
        f"({len(names) - len(jobs)} resumed), {args.worlds} worlds each",
        flush=True,
    )
    prepare_teachers([n for n, _ in jobs], args, device)
    start = time.perf_counter()
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = pool.imap_unordered(_worker, jobs)
            for row in benchtools.progress(results, total=len(jobs), desc="configs", leave=True):
                store.add(row["config"], row)
    else:
        for name, _ in benchtools.progress(jobs, desc="configs", leave=True):
            store.add(name, run_config(name, args))
    print(f"\n{len(jobs)} configurations in {time.perf_counter() - start:.0f} s")
    rows = [dict(store.rows[n]) for n in names]  # thesis order
    add_comparisons(rows)
    print(f"\n## Table 3.1 on {args.dataset} (thesis columns: MNIST)\n")
    print(benchtools.markdown_table(rows, COLUMNS))
    print(
        f"\nbatch size {args.batch_size}, patience {args.patience_epochs} epochs, exams every "
        f"{args.exam_every} lessons, seed {args.seed}, {args.teacher_arch} teacher, "
        f"2x{args.student_hidden} student, "
        f"{args.worlds} worlds per configuration "
        f"(test acc: mean ± std; bp columns: median over worlds)"
    )
    claims = thesis_claims(rows)
    if claims:
        print("\nThe thesis' claims on this run:\n")
        print("\n".join(verdict_lines(claims, args)))
    json_path, csv_path = store.finish(
        rows, args, {"thesis_claims": claims, "teachers": teacher_records(names, args)}
    )
    written = [json_path, csv_path]
    if not args.no_plot:
        written.append(
            benchtools.figure(draw_figure, rows, Path(args.out_dir) / "quiz.png", args.dataset)
        )
    print(f"\nwrote {', '.join(map(str, written))}")
    return rows


def prepare_teachers(names: list[str], args: Args, device: torch.device) -> None:
    """Train (or load) the teachers the configurations ``names`` need, once, before any worker
    needs them."""
    if any(n.startswith("user:") or CONFIGS[n][1] is not None for n in names):
        teacher_for(args.dataset, data_root=args.data_root, device=device, **teacher_training(args))
    if any(n in HELD_OUT for n in names):
        out_of_fold_probs_for(
            args.dataset, data_root=args.data_root, device=device, **teacher_training(args)
        )


def teacher_records(names: list[str], args: Args) -> dict[str, Any]:
    """The cached teacher files the configurations ``names`` used (:func:`cache_record`)."""
    kw = teacher_training(args)
    out: dict[str, Any] = {}
    if any(n.startswith("user:") or CONFIGS[n][1] is not None for n in names):
        out["teacher"] = cache_record(args.dataset, **kw)
    if any(n in HELD_OUT for n in names):
        out["out_of_fold"] = cache_record(args.dataset, out_of_fold=True, **kw)
    return out


CLAIMS: dict[str, tuple[str, str, str]] = {
    # claim: (row, comparison row, what the speed-up means)
    "stack 5 CE soft reaches the baseline sooner": (
        "stack 5 CE soft",
        "baseline",
        "selecting the hardest of 5 minibatches saves backward passes",
    ),
    "CE selection beats random selection (stack 2)": (
        "stack 2 CE soft",
        "stack 2 random soft",
        "the teacher's hardness measure, not the smaller lesson alone, does the work",
    ),
    "CE selection beats random selection (stack 5)": (
        "stack 5 CE soft",
        "stack 5 random soft",
        "the teacher's hardness measure, not the smaller lesson alone, does the work",
    ),
}
"""The claims of table 3.1 a run can judge from its rows."""


def _bp(row: dict[str, Any]) -> float:
    """Backward passes to the baseline's accuracy (never: infinitely many)."""
    return float("inf") if row["bp to base"] is None else row["bp to base"]


ACCURACY_CLAIM = "every teacher row ends within 0.5 points of the baseline"
STACK_CLAIM = "stack 5 CE soft reaches the baseline sooner than stack 2 CE soft"
RANDOM_CLAIM = "random selection is slower than every hardness measure (stack 2)"
MEANINGS = {
    **{claim: means for claim, (_, _, means) in CLAIMS.items()},
    ACCURACY_CLAIM: "selecting lessons costs no final accuracy, as the thesis found",
    STACK_CLAIM: "a larger stack to choose from saves more backward passes",
    RANDOM_CLAIM: "every hardness measure beats picking lessons at random",
}
"""What each claim of :func:`thesis_claims` means when it holds."""
FAILED = {
    ACCURACY_CLAIM: "some teacher row ends more than 0.5 points from the baseline",
    STACK_CLAIM: "the larger stack does not reach the baseline sooner on this preset",
    RANDOM_CLAIM: "some hardness measure is no faster than random selection on this preset",
}
"""What a claim means when it fails (the backward-pass claims: no saving)."""


def thesis_claims(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Which of table 3.1's claims this run's rows confirm (claims without rows absent): a row
    is faster when it reaches the baseline's test accuracy in fewer backward passes (the first
    exam at or above it, read on the test curve: ``bp to base``). Besides :data:`CLAIMS`, the
    thesis' text: every approach ends within 0.5 points of the baseline, stack 5 needs fewer
    backward passes than stack 2, random selection is worse than any measure."""
    by_name = {r["config"]: r for r in rows}
    claims = {
        claim: _bp(by_name[fast]) < _bp(by_name[slow])
        for claim, (fast, slow, _) in CLAIMS.items()
        if fast in by_name and slow in by_name
    }
    base = by_name.get("baseline")
    teachers = [
        r for r in rows if r["config"] != "baseline" and not r["config"].startswith("user:")
    ]
    if base is not None and teachers and all("test acc" in r for r in [base, *teachers]):
        claims[ACCURACY_CLAIM] = all(abs(r["test acc"] - base["test acc"]) <= 0.5 for r in teachers)
    if {"stack 5 CE soft", "stack 2 CE soft"} <= set(by_name):
        claims[STACK_CLAIM] = _bp(by_name["stack 5 CE soft"]) < _bp(by_name["stack 2 CE soft"])
    measures = [n for n in by_name if n.startswith("stack 2 ") and "random" not in n]
    if "stack 2 random soft" in by_name and measures:
        rand = _bp(by_name["stack 2 random soft"])
        claims[RANDOM_CLAIM] = all(_bp(by_name[n]) < rand for n in measures)
    return claims


def verdict_lines(claims: dict[str, bool], args: Args) -> list[str]:
    """One line per claim: verdict, what it means on this preset, what to run for the thesis'
    regime."""
    preset = f"{args.dataset}, {args.worlds} worlds, exams every {args.exam_every} lessons"
    regime = (
        "the thesis' regime (MNIST-size data, table 3.1) is `commenv bench quiz --workers 2` "
        "on Fashion-MNIST (about 15 min), reported in the README"
    )
    failed = "no saving in backward passes on this preset"
    return [
        benchtools.verdict(
            claim, ok, preset, MEANINGS[claim] if ok else FAILED.get(claim, failed), regime
        )
        for claim, ok in claims.items()
    ]


def speed_rows(quick: bool = True) -> list[dict[str, Any]]:
    """Rows for ``commenv bench speed``: quiz_v0 lessons per second (keys ``name``,
    ``steps_per_s``, ``note``).

    Measured in one process on digits with stack size 5 (a lesson = 5 quiz turns, the teacher's
    turn and the study turn): the env alone with fixed agents (uniform answers, the first B
    samples as the lesson) on 1 and 16 worlds, the student's training step alone, and the full
    loop with the reference student and CE teacher.
    """
    lessons = 200 if quick else 2000

    class Idle:  # fixed agents: the env's own cost per lesson
        def answer(self, images: torch.Tensor) -> torch.Tensor:
            return torch.full((*images.shape[:2], 10), 0.1)

        def study(self, *lesson: torch.Tensor) -> None:
            pass

        def act(self, obs: torch.Tensor, infos: dict) -> dict[str, torch.Tensor]:
            n, m = obs.shape[0], infos["stack_indices"].shape[1]
            return {
                "select": torch.arange(m).expand(n, m) < 32,
                "targets": torch.full((n, m, 10), 0.1),
            }

    def play(num_envs: int, student: Any, teacher: Any) -> float:
        game = commenv.quiz_v0.batched(
            num_envs, "cpu", stack_size=5, exam_every=10**9, max_lessons=10**12
        )
        if not isinstance(teacher, Idle):
            teacher = HardnessTeacher(game, teacher)
        ack = torch.full((num_envs, game.batch_size, game.num_classes), 0.1)
        obs, infos = game.reset(seed=0)
        start = time.perf_counter()
        while game.lessons < lessons or game.phase != "quiz":
            obs, _, _, _, infos = game.step(turn_action(game, obs, infos, student, teacher, ack))
        return num_envs * lessons / (time.perf_counter() - start)

    note = "digits, stack 5: 5 quiz turns + lesson + study per lesson"
    rows = [
        {
            "name": "quiz_v0 env alone (lessons/s)",
            "steps_per_s": play(1, Idle(), Idle()),
            "note": note,
        },
        {
            "name": "quiz_v0 env alone, 16 worlds (lessons/s)",
            "steps_per_s": play(16, Idle(), Idle()),
            "note": note + "; batched face",
        },
    ]
    student = Student(64, 10)
    x, y = torch.rand(1, 32, 64), torch.full((1, 32, 10), 0.1)
    mask = torch.ones(1, 32, dtype=torch.bool)
    start = time.perf_counter()
    for _ in range(lessons):
        student.study(x, y, mask)
    rows.append(
        {
            "name": "quiz_v0 student training step alone (steps/s)",
            "steps_per_s": lessons / (time.perf_counter() - start),
            "note": "2x32 MLP, Adam, batch 32 (what one lesson costs the student)",
        }
    )
    model = teacher_for("digits", show_progress=False)
    rows.append(
        {
            "name": "quiz_v0 full loop, reference agents (lessons/s)",
            "steps_per_s": play(1, Student(64, 10), model),
            "note": note + "; CE-soft teacher",
        }
    )
    return rows


if __name__ == "__main__":
    from commenv.bench.tools import cli_main

    raise SystemExit(cli_main(main, "quiz"))
