"""Drive a batched ``quiz_v0`` game with a student and a teacher agent, with early stopping.

:func:`run_quiz` is the loop every quiz benchmark shares: the student answers quizzes and exams
and studies lessons, the teacher picks lessons, the env counts forward and backward passes and
scores exams; the loop keeps each env's best-validation student and stops once every env went
``patience_epochs`` quiz epochs without a better exam (the thesis: 20).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from commenv.core import check_int, describe
from commenv_agents.teacher import Student


@dataclass
class QuizRun:
    """What one :func:`run_quiz` call measured (per env tensors have a leading ``num_envs``)."""

    curve: list[dict[str, Any]] = field(default_factory=list)
    """One entry per exam: ``backward_passes``, ``forward_passes``, ``epoch``, ``accuracy``
    (lists over envs)."""
    best_val: torch.Tensor | None = None
    best_backward: torch.Tensor | None = None
    best_forward: torch.Tensor | None = None
    best_state: dict[str, torch.Tensor] | None = None
    forward_passes: torch.Tensor | None = None
    backward_passes: torch.Tensor | None = None
    epochs: int = 0
    wall_seconds: float = 0.0
    stopped_by: str = ""


def turn_action(
    game: Any,
    obs: dict[str, torch.Tensor],
    infos: dict[str, dict],
    student: Any,
    teacher: Any,
    ack: torch.Tensor,
) -> dict[str, Any]:
    """The action of the agent whose turn it is: the teacher's lesson, or the student's answers
    (quiz and exam turns) or study step (acknowledged with ``ack``, whose content is unused)."""
    agent = game.agent_selection
    if agent == "teacher":
        return {agent: teacher.act(obs["teacher"], infos["teacher"])}
    parts = game.unpack_student(obs["student"])
    if game.phase == "study":
        student.study(parts["images"], parts["targets"], parts["mask"])
        return {agent: ack}
    return {agent: student.answer(parts["images"])}


def run_quiz(
    game: Any,
    student: Student,
    teacher: Any,
    *,
    seed: int = 0,
    patience_epochs: int = 20,
    max_epochs: int | None = None,
    show_progress: bool = True,
    desc: str = "quiz",
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> QuizRun:
    """Play ``game`` (a :class:`commenv.quiz.QuizGame`) to early stopping; see :class:`QuizRun`.

    The student's best-validation parameters are in ``run.best_state`` (load them with
    ``student.load_state_dict`` to score the test set). With ``test=(images (n, D), labels)``
    every curve point also holds the students' test accuracy (measured, never used to stop).
    """
    from commenv.bench.tools import progress

    check_int("patience_epochs", patience_epochs)
    check_int("max_epochs", max_epochs, optional=True)
    if student.num_envs != game.num_envs:
        raise ValueError(
            f"the student holds {student.num_envs} students, the game num_envs={game.num_envs} "
            "worlds"
        )
    if test is not None and (len(test) != 2 or len(test[0]) != len(test[1]) or not len(test[1])):
        raise ValueError(
            f"test must be (images (n, D), labels (n,)) with n >= 1, got {describe(test)}"
        )
    obs, infos = game.reset(seed=seed)
    N, B, C = game.num_envs, game.batch_size, game.num_classes
    ack = torch.full((N, B, C), 1.0 / C, device=game.device)
    run = QuizRun()
    best = torch.full((N,), -1.0, device=game.device)
    best_epoch = torch.zeros(N, dtype=torch.long, device=game.device)
    run.best_backward = torch.zeros(N, dtype=torch.long, device=game.device)
    run.best_forward = torch.zeros_like(run.best_backward)
    run.best_state = student.state_dict()
    bar = progress(desc=desc, unit="exam", **({} if show_progress else {"disable": True}))
    start = time.perf_counter()
    while True:
        action = turn_action(game, obs, infos, student, teacher, ack)
        obs, _, term, trunc, infos = game.step(action)
        info = infos["student"]
        if bool(info["exam_done"][0]):
            acc, epoch = info["exam_accuracy"], info["epoch"]
            run.curve.append(
                {
                    "backward_passes": info["backward_passes"].tolist(),
                    "forward_passes": info["forward_passes"].tolist(),
                    "epoch": int(epoch[0]),
                    "accuracy": acc.tolist(),
                }
            )
            if test is not None:
                run.curve[-1]["test_accuracy"] = student.accuracy(*test).tolist()
            better = acc > best
            if bool(better.any()):
                best = torch.where(better, acc, best)
                best_epoch = torch.where(better, epoch, best_epoch)
                run.best_backward = torch.where(better, info["backward_passes"], run.best_backward)
                run.best_forward = torch.where(better, info["forward_passes"], run.best_forward)
                _keep_improved(run.best_state, student.state_dict(), better)
            bar.update(1)
            bar.set_postfix(val=f"{float(best.max()):.4f}", epoch=int(epoch[0]))
            if bool((epoch - best_epoch >= patience_epochs).all()):
                run.stopped_by = f"no better exam for {patience_epochs} epochs"
                break
            if max_epochs is not None and int(epoch[0]) >= max_epochs:
                run.stopped_by = f"max_epochs={max_epochs}"
                break
        if bool(trunc["student"].all()) or bool(term["student"].all()):
            run.stopped_by = "episode ended (max_lessons or target_accuracy)"
            break
    bar.close()
    run.wall_seconds = time.perf_counter() - start
    run.best_val = best
    run.forward_passes = infos["student"]["forward_passes"]
    run.backward_passes = infos["student"]["backward_passes"]
    run.epochs = int(infos["student"]["epoch"][0])
    return run


def _keep_improved(
    best: dict[str, torch.Tensor], current: dict[str, torch.Tensor], better: torch.Tensor
) -> None:
    """Copy the parameters of the envs that improved (leading dim = env) into ``best``."""
    for name, value in current.items():
        mask = better.view(-1, *([1] * (value.ndim - 1)))
        best[name] = torch.where(mask, value, best[name])
