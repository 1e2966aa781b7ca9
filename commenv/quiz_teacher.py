"""``commenv/QuizTeacher-v0`` — quiz_v0 seen by the teacher alone (a Gymnasium env).

| | |
|---|---|
| Make | ``gymnasium.make("commenv/QuizTeacher-v0")`` (after ``import commenv``) |
| Action space | ``MultiBinary(S * B)``: a selection bit per stacked sample |
| Observation space | ``Box(0, 1, (S * B * 5 + 2,), float32)`` |
| Reward | change of the student's exam accuracy, minus an overflow penalty |

The reference student of ``commenv_agents.teacher`` (2 x 32 ReLU, Adam) is built in and answers the
quizzes and exams of a :class:`commenv.quiz.QuizGame`; the teacher is the only agent. Each
``step`` is one teacher turn: the action selects the lesson among the ``S * B`` stacked samples,
the targets are the built-in teacher network's soft labels (``targets="soft"``) or the true labels
(``"true"``), then the student studies the lesson, sits any scheduled exam and answers the next
``S`` quizzes.

**Observation**, per stacked sample ``(S * B, 5)`` row-major, then two global values:
student max probability, teacher max probability, ``1 - exp(-CE)`` with ``CE`` the cross-entropy
of the student's answer to the teacher's distribution, Euclidean distance / sqrt(2), and 1 when
the two argmaxes agree; then the last exam accuracy (0 before the first) and the fraction of the
lesson budget used.

**Action.** Set bits pick the lesson; at most ``B`` may be set in ``quiz_v0``. A policy with
independent bits (PPO's Bernoulli head) sets about half of them, so this view resolves an
overflow explicitly rather than failing: ``overflow="sample"`` (default) keeps a uniformly
random ``B`` of the selected samples and subtracts ``overflow_penalty * excess / B`` from the
reward (``info["overflow"]`` counts the excess); ``overflow="error"`` raises ``ValueError`` as the
multi-agent game does. An empty selection is a lesson skipped (no backward pass).

**Reward**: the change of exam accuracy whenever an exam ends during the step (the episode
return is the last exam accuracy minus chance), minus the overflow penalty. **Episode end**:
terminated when an exam reaches ``target_accuracy``; truncated after ``max_lessons`` lessons.
``info`` holds ``backward_passes``, ``forward_passes``, ``lessons``, ``exam_accuracy``,
``overflow``.

**Arguments** (``gymnasium.make("commenv/QuizTeacher-v0", **kwargs)``), checked at
construction (``docs/bad_input.md``):

- ``dataset="digits"``: image dataset, one of ``commenv.DATASETS``.
- ``stack_size=2``: quizzes ``S`` per lesson, an integer >= 1.
- ``batch_size=32``: rows ``B`` of a quiz and a lesson, an integer >= 1.
- ``targets="soft"``: what the lesson teaches, ``"soft"`` (the teacher network's soft labels)
  or ``"true"`` (one-hot true labels).
- ``exam_every=10``: lessons between exams, an integer >= 1.
- ``exam_size=None``: exam samples, an integer >= 1, or ``None`` for the validation split.
- ``max_lessons=300``: lessons per episode (then truncated), an integer >= 1.
- ``target_accuracy=0.9``: exam accuracy that terminates the episode, in (0, 1], or ``None``.
- ``overflow="sample"``: a selection of more than ``B`` samples, ``"sample"`` or ``"error"``.
- ``overflow_penalty=0.01``: reward subtracted per excess sample / ``B``, a number >= 0.
- ``teacher_model=None``: the teacher network; ``None`` is the cached reference teacher of
  ``dataset`` (trained on first use).
- ``data_root=None``: directory of a file dataset; ``None`` searches the default locations, a
  directory that does not exist raises.
- ``render_mode=None``: ``None`` or ``"ansi"``.

**Reproducibility.** A seed gives the same episode on the same kind of machine. Unlike the
multi-agent games' episodes (the same bits on any CPU, ``tests/test_cpu_isa.py``), this view
trains a network inside every step (the built-in student), so its observations and rewards
round their last bits by the CPU's vector extensions and threads, as any training run does.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
import torch

from commenv.core import check_choice, check_float, check_seed, describe, validate_action
from commenv.quiz import QuizGame

FEATURES = 5
OVERFLOW: tuple[str, ...] = ("sample", "error")


class QuizTeacherEnv(gymnasium.Env):
    """The teacher's single-agent view of ``quiz_v0`` with the reference student built in."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        dataset: str = "digits",
        stack_size: int = 2,
        batch_size: int = 32,
        targets: str = "soft",
        exam_every: int = 10,
        exam_size: int | None = None,
        max_lessons: int = 300,
        target_accuracy: float | None = 0.9,
        overflow: str = "sample",
        overflow_penalty: float = 0.01,
        teacher_model: torch.nn.Module | None = None,
        data_root: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        from commenv_agents.teacher import TARGETS, predict_probs, teacher_for

        check_choice("targets", targets, TARGETS)
        check_choice("overflow", overflow, OVERFLOW)
        check_choice("render_mode", render_mode, (None, *self.metadata["render_modes"]))
        self.game = QuizGame(
            dataset=dataset,
            stack_size=stack_size,
            batch_size=batch_size,
            exam_every=exam_every,
            exam_size=exam_size,
            max_lessons=max_lessons,
            target_accuracy=target_accuracy,
            data_root=data_root,
        )
        self.targets, self.overflow = targets, overflow
        self.overflow_penalty = check_float("overflow_penalty", overflow_penalty, 0.0)
        self.render_mode = render_mode
        if teacher_model is not None and not isinstance(teacher_model, torch.nn.Module):
            raise ValueError(
                f"teacher_model must be a torch.nn.Module or None, got {describe(teacher_model)}"
            )
        model = teacher_model or teacher_for(dataset, data_root=data_root, show_progress=False)
        self.teacher_probs = predict_probs(model, self.game.train_x)
        M = self.game.stack_size * self.game.batch_size
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (M * FEATURES + 2,), np.float32)
        self.action_space = gymnasium.spaces.MultiBinary(M)
        self._student = None

    # -- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from commenv_agents.teacher import Student

        if seed is not None:  # the game's wording, before Gymnasium reseeds anything
            check_seed("seed", seed)
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31))
        game = self.game
        self._student = Student(game.num_features, game.num_classes, seed=episode_seed)
        self._uniform = torch.full((1, game.batch_size, game.num_classes), 1 / game.num_classes)
        self._obs, self._infos = game.reset(seed=episode_seed)
        self._done = False
        self._play_student()  # the first S quizzes, up to the teacher's first turn
        return self._observation(), self._info(0)

    def step(self, action: Any):
        if self._student is None or self._done:
            raise ValueError("step() called before reset() or after the episode ended")
        game, B = self.game, self.game.batch_size
        select = validate_action("teacher", self.action_space, action).astype(bool)
        excess = max(0, int(select.sum()) - B)
        if excess and self.overflow == "error":
            raise ValueError(
                f"invalid action for the teacher: {int(select.sum())} samples selected, more "
                f"than batch_size={B}; expected at most {B} ones in {self.action_space}"
            )
        if excess:
            chosen = self.np_random.choice(np.flatnonzero(select), size=B, replace=False)
            select = np.zeros_like(select)
            select[chosen] = True
        stack = self._infos["teacher"]["stack_indices"]
        if self.targets == "soft":
            targets = self.teacher_probs[stack]
        else:
            targets = torch.nn.functional.one_hot(game.train_y[stack], game.num_classes).float()
        lesson = {"select": torch.from_numpy(select)[None], "targets": targets}
        self._obs, _, _, _, self._infos = game.step({"teacher": lesson})
        reward, (terminated, truncated) = self._play_student()
        self._done = terminated or truncated
        reward -= self.overflow_penalty * excess / B
        return self._observation(), float(reward), terminated, truncated, self._info(excess)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        info = self._info(0)
        return (
            f"QuizTeacher-v0: {info['backward_passes']} backward passes, "
            f"{info['forward_passes']} forward passes, exam accuracy "
            f"{info['exam_accuracy']:.3f}"
        )

    # -- the built-in student --------------------------------------------------------------
    def _play_student(self) -> tuple[float, tuple[bool, bool]]:
        """Student turns until the teacher's next turn or the episode's end."""
        game, reward = self.game, 0.0
        while True:
            if game.phase == "study":
                parts = game.unpack_student(self._obs["student"])
                self._student.study(parts["images"], parts["targets"], parts["mask"])
                action = self._uniform
            else:
                parts = game.unpack_student(self._obs["student"])
                action = self._student.answer(parts["images"])
            self._obs, rew, term, trunc, self._infos = game.step({"student": action})
            reward += float(rew["teacher"][0])
            ended = (bool(term["teacher"][0]), bool(trunc["teacher"][0]))
            if any(ended) or game.agent_selection == "teacher":
                return reward, ended

    def _observation(self) -> np.ndarray:
        game = self.game
        parts = game.unpack_teacher(self._obs["teacher"])
        p_s = parts["answers"][0]
        p_t = self.teacher_probs[self._infos["teacher"]["stack_indices"][0]]
        ce = -(p_t * torch.log(p_s.clamp(min=1e-8))).sum(-1)
        feats = torch.stack(
            [
                p_s.max(-1).values,
                p_t.max(-1).values,
                1 - torch.exp(-ce),
                (p_t - p_s).norm(dim=-1) / math.sqrt(2),
                (p_s.argmax(-1) == p_t.argmax(-1)).float(),
            ],
            -1,
        )
        acc = max(0.0, float(self._infos["teacher"]["exam_accuracy"][0]))
        budget = game.lessons / game.max_lessons
        extra = torch.tensor([acc, min(1.0, budget)])
        return torch.cat([feats.reshape(-1), extra]).clamp(0, 1).numpy().astype(np.float32)

    def _info(self, overflow: int) -> dict[str, Any]:
        info = self._infos["teacher"]
        return {
            "backward_passes": int(info["backward_passes"][0]),
            "forward_passes": int(info["forward_passes"][0]),
            "lessons": int(info["lessons"][0]),
            "exam_accuracy": float(info["exam_accuracy"][0]),
            "overflow": overflow,
        }
