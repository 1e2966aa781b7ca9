"""quiz_v0 — the teacher–student quiz loop (thesis, chapter 3).

| | |
|---|---|
| Import | ``env = commenv.quiz_v0.env()`` (AEC, native) |
| Agents | ``student``, ``teacher`` |
| AEC API | native; Parallel by ``turn_based_aec_to_parallel`` (``commenv.quiz_v0()``) |
| Student action | ``Simplex(B, C)``: ``(B, C)`` float32 in [0, 1] whose rows sum to 1 |
| Teacher action | ``Dict(select=Selection(S * B, at most B ones), targets=Simplex(S * B, C))`` |
| Student observation | ``Box(0, 1, (3 + B * (D + C + 1),), float32)`` (``env.obs_layout``) |
| Teacher observation | ``Box(0, 1, (S * B * (2 * C + D),), float32)`` |
| Batched face | ``commenv.quiz_v0.batched(num_envs, device)`` |

``B`` is ``batch_size``, ``S`` ``stack_size``, ``C`` the number of classes, ``D`` the number of
pixels. Batches of the environment do not own any model: the student and the teacher are agents.

**Turns.** One round, repeated until the episode ends:

1. ``quiz`` (student, ``S`` turns): the student's observation shows a quiz minibatch of ``B``
   training images (epochs of shuffled training data, drop-last); its action is its predictive
   distribution for each of them. Each quiz answered counts **one forward pass**.
2. ``lesson`` (teacher, 1 turn): the stack is full; the teacher's observation shows the ``S * B``
   stacked images, the student's answers and the true labels (one-hot). Its action selects at
   most ``B`` of them (a bit per stacked sample) and gives a target distribution per stacked
   sample (its soft labels or one-hot true labels: the teacher's choice); the targets of the
   selected samples travel to the student.
3. ``study`` (student, 1 turn): the student's observation shows the lesson (images, targets and a
   row mask; fewer than ``B`` rows when the teacher selected fewer). The student trains on it and
   acknowledges by stepping (the action's content is not used). Each non-empty lesson counts
   **one backward pass** (the lesson's own forward pass belongs to it and is not counted
   separately). An empty selection is allowed and costs no backward pass.
4. ``exam`` (student, ``ceil(exam_size / B)`` turns, after every ``exam_every``-th lesson): the
   student answers batches of the fixed, deterministic validation split (rows past the end are
   masked out); the env scores the argmax of its answers. Exams are neither forward nor backward
   passes of training.

The student's observation starts with a one-hot phase ``[quiz, study, exam]``. Its action on every
turn must be a distribution per row (padding rows too, e.g. uniform) so that every action of the
space is valid on every turn. Acting out of turn (a lesson during a quiz, an answer during the
teacher's turn) raises ``ValueError`` in the batched face; the AEC face only ever asks the agent
whose turn it is (``env.agent_selection``), and the Parallel face ignores the idle agent's action.

**Rewards** (cooperative, both agents alike): when an exam ends, ``a_k - a_{k-1}``, the change of
exam accuracy since the previous exam (``a_0 = 1 / C``, chance); ``0`` on other turns. An episode's
return is therefore its last exam accuracy minus chance.

**Channel.** The two agents talk over a two-way :class:`commenv.channel.Channel`. Both hold the
training set, so samples travel as indices: an answered sample costs ``ceil(log2 n_train) + 32 C``
bits (tag ``"answers"``; the stack's answers are delivered to the teacher when it is full), a
lesson sample the same (tag ``"lesson"``). ``env.channel.counters`` keeps the totals.

**Infos** (tensors with a leading ``num_envs``): ``phase`` (0 quiz, 1 lesson, 2 study, 3 exam, of
the *next* turn), ``forward_passes``, ``backward_passes``, ``lessons``, ``epoch`` (quiz epochs
started), ``exam_accuracy`` (last, ``-1`` before the first exam), ``exam_done`` (an exam ended this
step); the student's ``indices``/``labels`` of the rows it is shown (ground truth for probes, never
for training) and the teacher's ``stack_indices``/``stack_labels``.

**Episode end.** Truncated after ``max_lessons`` lessons (and the exam that follows it, when one
is scheduled); terminated when an exam reaches ``target_accuracy`` (if given). In the batched face
each world keeps its own clocks (lessons, epochs, forward and backward passes, truncation); a
world that ended keeps its flag True and keeps playing until it is reset.

**Per-world reset** (batched face). ``reset(env_index=i)`` (an int, indices or a
``(num_envs,)`` bool mask) restarts only those worlds; the others' episodes are untouched, bit
for bit, and what a restarted world draws depends only on the seed, its index and its own
restarts.
The worlds share one turn order (``agent_selection`` and ``phase`` are the batch's, so one
action tensor serves every world), and a restarted world begins at its first turn, the first
quiz of its first round. A partial reset is therefore allowed only where a fresh episode's
turns *are* the batch's turns: at the start of a round (``phase == "quiz"``, no quiz of the round
answered) whose lesson count is a multiple of ``exam_every``, so that the restarted world sits
its exams with the others. That is each round start after an exam: right after an exam ends a
world by ``target_accuracy``, and right after a world's truncation when ``max_lessons`` is a
multiple of ``exam_every`` (otherwise the truncated world waits, flag set, for the next exam).
Elsewhere ``reset(env_index=...)`` raises ``ValueError`` saying when it will be allowed, and
nothing changes; ``game.can_reset_worlds`` says whether it is allowed now. A mask naming every
world is ``reset()`` (allowed at any time), an all-False mask resets nothing, and
``reset(seed=..., env_index=...)`` raises. Restarted worlds draw their shuffles from their own
streams of the seed (``commenv.core.WorldStreams``: world ``w``'s epoch ``e`` after its ``r``-th
restart since the last seeded reset draws at ``(w, r, e)``), so the other worlds' epochs are
exactly those they would have drawn without the reset; the same seed and the same resets give
the same episodes. The channel's counters are batch totals and keep counting. ``game.lessons``
is the batch's clock (rounds since the last full reset); each world's own count is
``infos[agent]["lessons"]``.

**Speed.** The PettingZoo faces play one world in numpy (:class:`QuizWorld`): the same episode
as ``batched(1)`` for the same seed, bit for bit, with each action checked once (a numpy fast
path for well-formed arrays, else :func:`commenv.core.validate_action` and its errors): a few
numpy operations per turn where the tensor game pays a graph of small tensor operations.

**Arguments** (``commenv.quiz_v0.env(**kwargs)``; ``.batched(num_envs, device, **kwargs)``
for the tensor face). Each is checked at construction: a wrong type or a value out of range
raises ``ValueError`` naming the argument (``docs/bad_input.md``). PettingZoo's
``max_cycles_test`` does not apply: the episode length is ``max_lessons`` lessons, not cycles.

- ``dataset="digits"``: image dataset, one of ``commenv.DATASETS``.
- ``stack_size=2``: quizzes ``S`` per lesson, an integer >= 1.
- ``batch_size=32``: rows ``B`` of a quiz, a lesson and an exam turn, an integer in
  [1, training samples].
- ``exam_every=10``: lessons between exams, an integer >= 1.
- ``exam_size=None``: exam samples, an integer in [1, validation samples]; ``None`` uses the
  whole validation split (1/6 of the official training set: 10,000 of 60,000 for
  (Fashion-)MNIST).
- ``max_lessons=100``: lessons per episode (then truncated), an integer in
  [1, 2**62].
- ``target_accuracy=None``: exam accuracy that terminates the episode, in (0, 1], or ``None``.
- ``data_seed=0``: seed of the dataset's train/val split, an integer in [0, 2**63 - 1].
- ``data_root=None``: directory of a file dataset; ``None`` searches the default locations, a
  directory that does not exist raises.
- ``render_mode=None``: ``None``, ``"human"``, ``"rgb_array"`` or ``"ansi"``.
- ``num_envs=1``: worlds of the batched face, an integer >= 1 (the PettingZoo faces use 1).
- ``device="cpu"``: torch device of the batched face; one this machine has (``"cuda"``
  without CUDA raises).
- ``validate=True``: check every batched action (``False`` skips the checks for speed), a bool.
- ``allow_large=False``: accept configurations whose observations need more than
  ``commenv.core.MEMORY_LIMIT_BYTES`` (256 MiB); otherwise they raise with the size.

Reference agents and the table 3.1 benchmark: ``agents/teacher.py``, ``agents/quiz_runner.py``,
``commenv/bench/quiz.py``; the teacher's single-agent Gymnasium view:
:mod:`commenv.quiz_teacher` (``commenv/QuizTeacher-v0``).

**Version history.** v0: first release; per-world reset on the batched face and a numpy engine
for the PettingZoo faces, with the same episodes for the same seed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium
import numpy as np
import torch
from pettingzoo import AECEnv
from pettingzoo.utils.conversions import turn_based_aec_to_parallel_wrapper

from commenv.channel import Channel, make_adjacency
from commenv.core import (
    MAX_CYCLES_LIMIT,
    BatchedEnv,
    EnvFamily,
    GameFace,
    OrderedAECEnv,
    StepResult,
    TensorDict,
    batched_actions,
    check_choice,
    check_data_root,
    check_env_index,
    check_float,
    check_int,
    check_memory,
    check_seed,
    describe,
    refuse_seeded_partial_reset,
    validate_action,
)
from commenv.datasets import DATASETS, load_dataset
from commenv.spaces import SUM_ATOL, Selection, Simplex  # noqa: F401  (re-exported)

AGENTS: tuple[str, str] = ("student", "teacher")
PHASES: tuple[str, ...] = ("quiz", "lesson", "study", "exam")
STUDENT_PHASES: tuple[str, ...] = ("quiz", "study", "exam")


# -- the batched game --------------------------------------------------------------------------
class QuizGame(BatchedEnv):
    """Batched quiz_v0 (see the module docstring for the rules).

    Turn-based: ``agent_selection`` names the agent to act and ``phase`` its kind of turn, the
    same in every world; :meth:`step` takes ``{agent_selection: action}`` only, and
    :meth:`reset` restarts every world or, at round starts the shared turn order allows
    (:attr:`can_reset_worlds`), only some. The student's action is a
    ``(num_envs, B, C)`` tensor; the teacher's a dict ``{"select": (num_envs, S * B) 0/1,
    "targets": (num_envs, S * B, C)}``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "name": "quiz_v0",
        "render_modes": ["human", "rgb_array", "ansi"],
        "is_parallelizable": False,
        "render_fps": 4,
    }

    def __init__(
        self,
        dataset: str = "digits",
        stack_size: int = 2,
        batch_size: int = 32,
        exam_every: int = 10,
        exam_size: int | None = None,
        max_lessons: int = 100,
        target_accuracy: float | None = None,
        data_seed: int = 0,
        data_root: str | None = None,
        render_mode: str | None = None,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        validate: bool = True,
        allow_large: bool = False,
    ) -> None:
        self._init_common(
            num_envs=num_envs, device=device, render_mode=render_mode, validate=validate
        )
        self.possible_agents = list(AGENTS)
        self._check_rules(stack_size, batch_size, exam_every, max_lessons, target_accuracy)
        self._build_data(dataset, exam_size, data_seed, data_root)
        self._build_spaces(allow_large)
        self.channel = Channel(make_adjacency("two_way", 2), device=self.device)
        # Both agents hold the dataset: a sample travels as its index plus a distribution.
        index_bits = math.ceil(math.log2(max(2, len(self.train_y))))
        self.bits_per_sample = index_bits + 32 * self.num_classes
        self._gen, self._restart_streams = self._seed_streams(None)
        self._restarts = np.zeros(self.num_envs, np.int64)
        self._started = False

    # -- construction ----------------------------------------------------------------------
    def _check_rules(
        self,
        stack_size: int,
        batch_size: int,
        exam_every: int,
        max_lessons: int,
        target_accuracy: float | None,
    ) -> None:
        """The schedule: stack and batch sizes, exam frequency, episode length and target."""
        self.stack_size = check_int("stack_size", stack_size)
        self.batch_size = check_int("batch_size", batch_size)
        self.exam_every = check_int("exam_every", exam_every)
        self.max_lessons = check_int("max_lessons", max_lessons, high=MAX_CYCLES_LIMIT)
        self.target_accuracy = check_float(
            "target_accuracy", target_accuracy, 0.0, 1.0, low_open=True, optional=True
        )

    def _build_data(
        self, dataset: str, exam_size: int | None, data_seed: int, data_root: str | None
    ) -> None:
        """Training images (the quizzes and lessons) and the fixed exam on the device."""
        check_choice("dataset", dataset, DATASETS)
        data = load_dataset(
            dataset, root=check_data_root(data_root), seed=check_seed("data_seed", data_seed)
        )
        self.dataset = dataset
        self.num_classes = data.num_classes
        self.num_features = data.num_features
        self.image_shape = data.image_shape
        self.train_x = data.train.flat().to(self.device)
        self.train_y = data.train.y.to(self.device)
        n_val = len(data.val)
        self.exam_size = check_int("exam_size", n_val if exam_size is None else exam_size)
        if self.exam_size > n_val:
            raise ValueError(
                f"exam_size must be <= the validation split ({n_val}), got {exam_size}"
            )
        self.val_x = data.val.flat()[: self.exam_size].to(self.device)
        self.val_y = data.val.y[: self.exam_size].to(self.device)
        if len(self.train_y) < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} exceeds the training split "
                f"({len(self.train_y)} samples)"
            )
        self.batches_per_epoch = len(self.train_y) // self.batch_size
        self.exam_turns = math.ceil(self.exam_size / self.batch_size)

    def _build_spaces(self, allow_large: bool) -> None:
        """Observation layouts of both agents and the four spaces, within the memory bound."""
        B, S, C, D = self.batch_size, self.stack_size, self.num_classes, self.num_features
        obs_floats = 3 + B * (D + C + 1) + S * B * (2 * C + D)
        check_memory(
            "observations",
            4 * self.num_envs * obs_floats,
            allow_large,
            num_envs=self.num_envs,
            stack_size=S,
            batch_size=B,
        )
        self.obs_layout = {
            "phase": slice(0, 3),
            "images": slice(3, 3 + B * D),
            "targets": slice(3 + B * D, 3 + B * (D + C)),
            "mask": slice(3 + B * (D + C), 3 + B * (D + C + 1)),
        }
        self.teacher_obs_layout = {
            "answers": slice(0, S * B * C),
            "labels": slice(S * B * C, 2 * S * B * C),
            "images": slice(2 * S * B * C, S * B * (2 * C + D)),
        }
        student_obs = gymnasium.spaces.Box(0.0, 1.0, (self.obs_layout["mask"].stop,), np.float32)
        teacher_act = {"select": Selection(S * B, B), "targets": Simplex(S * B, C)}
        self._spaces = {
            "obs": {
                "student": student_obs,
                "teacher": gymnasium.spaces.Box(0.0, 1.0, (S * B * (2 * C + D),), np.float32),
            },
            "act": {"student": Simplex(B, C), "teacher": gymnasium.spaces.Dict(teacher_act)},
        }

    # -- spaces ----------------------------------------------------------------------------
    def observation_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._spaces["obs"][agent]

    def action_space(self, agent: str) -> gymnasium.Space:
        self._check_agent(agent)
        return self._spaces["act"][agent]

    @property
    def agent_selection(self) -> str:
        """The agent whose turn it is (the same in every world: the worlds share the turns)."""
        if not self._started:
            raise ValueError("no agent's turn before reset(); call reset() first")
        return "teacher" if self.phase == "lesson" else "student"

    @property
    def lessons(self) -> int:
        """Lessons of the batch's clock: rounds played since the last full reset. A world that a
        partial reset restarted counts its own lessons (``infos[agent]["lessons"]``)."""
        return self._round_lessons if self._started else 0

    @property
    def can_reset_worlds(self) -> bool:
        """Whether ``reset(env_index=...)`` may restart some worlds now: at the start of a round
        whose exam schedule a fresh episode shares (see :meth:`reset`)."""
        return self._started and self._partial_reset_refusal() is None

    def close(self) -> None:
        """End the episode; ``reset`` starts a new one."""
        self._started = False

    def unpack_student(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split batched student observations ``(N, obs_dim)`` into named ``(N, B, ...)`` parts."""
        n, B, L = obs.shape[0], self.batch_size, self.obs_layout
        return {
            "phase": obs[:, L["phase"]],
            "images": obs[:, L["images"]].reshape(n, B, self.num_features),
            "targets": obs[:, L["targets"]].reshape(n, B, self.num_classes),
            "mask": obs[:, L["mask"]] > 0.5,
        }

    def unpack_teacher(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split batched teacher observations into ``answers``/``labels`` ``(N, S*B, C)`` and
        ``images`` ``(N, S*B, D)``."""
        n, L = obs.shape[0], self.teacher_obs_layout
        return {
            "answers": obs[:, L["answers"]].reshape(n, -1, self.num_classes),
            "labels": obs[:, L["labels"]].reshape(n, -1, self.num_classes),
            "images": obs[:, L["images"]].reshape(n, -1, self.num_features),
        }

    # -- reset -----------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, env_index: Any = None
    ) -> tuple[TensorDict, dict[str, dict]]:
        """Start a new episode in every world, or only in the worlds ``env_index`` names.

        ``reset(seed)`` reseeds (``None`` continues the stream) and restarts every world.
        ``reset(env_index=...)`` (an int, indices or a ``(num_envs,)`` bool mask,
        :func:`commenv.core.check_env_index`) restarts only those worlds at their first turn;
        the other worlds are untouched, bit for bit, and ``obs``/``infos`` cover the batch.

        The worlds share one turn order (``agent_selection`` and ``phase`` are the batch's), so
        a world can restart only where a fresh episode's turns are the batch's turns: at the
        start of a round (``phase == "quiz"``, no quiz of it answered) whose lesson count is a
        multiple of ``exam_every``, so that the restarted world sits its exams with the others.
        That is every round start after an exam, the moment an exam ends a world by
        ``target_accuracy``, and the truncation of a world when ``max_lessons`` is a multiple
        of ``exam_every``. Elsewhere a partial reset raises ``ValueError`` (nothing changes);
        :attr:`can_reset_worlds` says whether one is allowed now. Restarted worlds draw their
        epochs from their own streams of the seed, so the other worlds' epochs are exactly those
        they would have drawn without the reset. A mask naming every world is ``reset()``.
        """
        if env_index is None:
            return self._reset_all(seed)
        refuse_seeded_partial_reset(seed)
        mask = check_env_index(env_index, self.num_envs, "cpu").numpy()
        if bool(mask.all()):
            return self._reset_all(None)
        if not self._started:
            raise ValueError(
                "reset(env_index=...) before the first reset(): there is no episode to keep in "
                "the other worlds; call reset() first"
            )
        if mask.any():
            if (why := self._partial_reset_refusal()) is not None:
                raise ValueError(why)
            self._reset_worlds(mask)
        return self._observations(), self._infos()

    def _reset_all(self, seed: int | None) -> tuple[TensorDict, dict[str, dict]]:
        if seed is not None or not self._started:
            self._gen, self._restart_streams = self._seed_streams(seed)
            # restarts are counted for the streams' life: a later full reset goes on counting
            self._restarts = np.zeros(self.num_envs, np.int64)
        self._started = True
        N, B, S, C = self.num_envs, self.batch_size, self.stack_size, self.num_classes
        dev = self.device
        self.channel.reset_counters()
        self.phase = "quiz"
        self._turn_in_phase = 0
        self._round_lessons = 0
        self._cursor = np.zeros(N, np.int64)
        self._epoch = np.zeros(N, np.int64)
        self._lessons = np.zeros(N, np.int64)
        self._own_stream = np.zeros(N, bool)  # worlds a partial reset restarted
        self._synced = True  # every world at the same place of the same epochs' clock
        self._const = self._constants()
        self._counts = {
            "lessons": torch.zeros(N, dtype=torch.long, device=dev),
            "epoch": torch.zeros(N, dtype=torch.long, device=dev),
        }
        self._perm = self._new_permutation(self._gen, N)
        zeros_long = torch.zeros(N, dtype=torch.long, device=dev)
        self._forward = zeros_long.clone()
        self._backward = zeros_long.clone()
        self._stack_idx = torch.zeros(N, S * B, dtype=torch.long, device=dev)
        self._answers = torch.zeros(N, S * B, C, device=dev)
        self._shown_stack = self._stack_idx
        self._shown_labels = self.train_y[self._stack_idx]
        self._lesson_idx = torch.zeros(N, B, dtype=torch.long, device=dev)
        self._lesson_targets = torch.zeros(N, B, C, device=dev)
        self._lesson_mask = torch.zeros(N, B, dtype=torch.bool, device=dev)
        self._exam_correct = zeros_long.clone()
        self._exam_acc = torch.full((N,), -1.0, device=dev)
        self._prev_acc = torch.full((N,), 1.0 / C, device=dev)
        self._exam_done = torch.zeros(N, dtype=torch.bool, device=dev)
        self._terminated = torch.zeros(N, dtype=torch.bool, device=dev)
        self._truncated = torch.zeros(N, dtype=torch.bool, device=dev)
        self._teacher_obs = torch.zeros(N, self._spaces["obs"]["teacher"].shape[0], device=dev)
        self._show_quiz()
        return self._observations(), self._infos()

    def _partial_reset_refusal(self) -> str | None:
        """Why a partial reset would break the shared turn order now (``None``: it would not)."""
        e, lessons = self.exam_every, self._round_lessons
        if self.phase == "quiz" and self._turn_in_phase == 0 and lessons % e == 0:
            return None
        wait = (-lessons) % e or (e if self.phase != "quiz" or self._turn_in_phase else 0)
        return (
            "reset(env_index=...) restarts a world at its first turn, and the worlds share one "
            "turn order: a partial reset is allowed only at the start of a round whose lesson "
            f"count is a multiple of exam_every={e} (phase 'quiz', no quiz of the round "
            f"answered), where a fresh episode's turns and exams are the batch's; now: phase "
            f"{self.phase!r}, {self._turn_in_phase} turn(s) of it done, {lessons} lessons. "
            f"Reset these worlds at the round start after {lessons + wait} lessons (check "
            "can_reset_worlds), or restart every world with reset()"
        )

    def _reset_worlds(self, mask: np.ndarray) -> None:
        """Restart the worlds of ``mask`` at the first quiz of their first epoch (a round
        start: every world shows a quiz, so only the images and the clocks differ)."""
        dev, B, C = self.device, self.batch_size, self.num_classes
        idx = torch.from_numpy(np.flatnonzero(mask)).to(dev)
        keep = torch.from_numpy(~mask).to(dev)
        self._cursor[mask], self._epoch[mask], self._lessons[mask] = B, 1, 0
        self._own_stream[mask] = True
        self._restarts[mask] += 1
        self._counts = {"lessons": self._clock("lessons"), "epoch": self._clock("epoch")}
        self._synced = False
        perm = self._world_permutations(mask)
        self._perm = self._perm.index_copy(0, idx, perm)
        self._rows = self._rows.index_copy(0, idx, perm[:, :B])
        k, const = len(idx), self._const
        first = [const["phase_onehot"][0][:k], self.train_x[perm[:, :B]].reshape(k, -1)]
        rows = torch.cat([*first, const["no_targets"][:k], const["all_rows"][:k]], 1)
        self._student_obs = self._student_obs.index_copy(0, idx, rows)

        def restart(value: torch.Tensor, fresh: float | int | bool) -> torch.Tensor:
            shape = (-1,) + (1,) * (value.ndim - 1)
            return torch.where(keep.view(shape), value, torch.full_like(value, fresh))

        self._forward, self._backward = restart(self._forward, 0), restart(self._backward, 0)
        self._exam_correct = restart(self._exam_correct, 0)
        self._exam_acc, self._prev_acc = (
            restart(self._exam_acc, -1.0),
            restart(self._prev_acc, 1 / C),
        )
        self._exam_done = restart(self._exam_done, False)
        self._terminated, self._truncated = (
            restart(self._terminated, False),
            restart(self._truncated, False),
        )
        self._teacher_obs = restart(self._teacher_obs, 0.0)
        self._shown_stack = restart(self._shown_stack, 0)
        self._shown_labels = torch.where(keep[:, None], self._shown_labels, self.train_y[0])
        self._lesson_idx = restart(self._lesson_idx, 0)
        self._lesson_targets = restart(self._lesson_targets, 0.0)
        self._lesson_mask = restart(self._lesson_mask, False)

    def _clock(self, name: str) -> torch.Tensor:
        """A per-world count of the infos (``lessons`` or ``epoch``), from its host copy."""
        return torch.from_numpy(getattr(self, f"_{name}").copy()).to(self.device)

    def _new_permutation(self, gen: torch.Generator, rows: int) -> torch.Tensor:
        n = len(self.train_y)
        keys = torch.rand(rows, n, generator=gen, device=self.device)
        return keys.argsort(1)

    def _world_permutations(self, mask: np.ndarray, next_epoch: bool = False) -> torch.Tensor:
        """The shuffles of the restarted worlds of ``mask`` for their current epoch (or the
        next), from their own streams: world ``w`` at epoch ``e`` of its ``r``-th restart draws
        at ``(w, r, e)`` (:class:`commenv.core.WorldStreams`), whatever the other worlds do."""
        worlds = np.flatnonzero(mask)
        counters = (self._restarts[worlds], self._epoch[worlds] + next_epoch)
        return self._restart_streams.permutations(
            torch.from_numpy(worlds), *map(torch.from_numpy, counters), n=len(self.train_y)
        )

    # -- what the student is shown ---------------------------------------------------------
    def _show_quiz(self) -> None:
        B, n = self.batch_size, len(self.train_y)
        if self._synced:  # no partial reset since the last reset(): one cursor for all worlds
            c = int(self._cursor[0])
            if c + B > n:  # drop-last epochs
                self._perm, c = self._new_permutation(self._gen, self.num_envs), 0
            if c == 0:
                self._epoch += 1
                self._counts["epoch"] = self._clock("epoch")
            self._rows = self._perm[:, c : c + B]
            self._cursor[:] = c + B
        else:
            self._show_quiz_per_world()
        self._student_view(self.train_x[self._rows], None, None, 0)

    def _show_quiz_per_world(self) -> None:
        B, n = self.batch_size, len(self.train_y)
        roll = self._cursor + B > n  # drop-last epochs, world by world
        if roll.any():
            self._new_epochs(roll)
        fresh = self._cursor == 0
        if fresh.any():
            self._epoch += fresh
            self._counts["epoch"] = self._clock("epoch")
        start = torch.from_numpy(self._cursor).to(self.device)[:, None]
        self._rows = self._perm.gather(1, start + self._const["arange_b"])
        self._cursor = self._cursor + B

    def _new_epochs(self, roll: np.ndarray) -> None:
        """New permutations for the worlds of ``roll``: the batch's worlds from the episode
        stream (one draw for the whole batch, as at reset), restarted worlds from theirs."""
        main, own = roll & ~self._own_stream, roll & self._own_stream
        perm = self._perm
        if main.any():
            drawn = self._new_permutation(self._gen, self.num_envs)
            perm = drawn if main.all() else torch.where(self._world_mask(main), drawn, perm)
        if own.any():
            idx = torch.from_numpy(np.flatnonzero(own)).to(self.device)
            perm = perm.index_copy(0, idx, self._world_permutations(own, next_epoch=True))
        self._perm = perm
        self._cursor = np.where(roll, 0, self._cursor)

    def _world_mask(self, mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask).to(self.device)[:, None]

    def _show_exam(self) -> None:
        B, start = self.batch_size, self._turn_in_phase * self.batch_size
        idx = torch.arange(start, start + B, device=self.device)
        mask = idx < self.exam_size
        idx = idx.clamp(max=self.exam_size - 1)
        self._rows = idx.expand(self.num_envs, B)
        self._exam_mask = mask.expand(self.num_envs, B)
        images = self.val_x[idx] * mask[:, None]
        self._student_view(images.expand(self.num_envs, -1, -1), None, self._exam_mask, 2)

    def _student_view(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | None,
        mask: torch.Tensor | None,
        phase: int,
    ) -> None:
        N = self.num_envs
        targets = self._const["no_targets"] if targets is None else targets.reshape(N, -1)
        mask = self._const["all_rows"] if mask is None else mask.to(images.dtype)
        self._student_obs = torch.cat(
            [self._const["phase_onehot"][phase], images.reshape(N, -1), targets, mask], 1
        )

    def _constants(self) -> dict[str, Any]:
        """Tensors every turn needs, made once (per-op overhead dominates small turns)."""
        N, B, C, dev = self.num_envs, self.batch_size, self.num_classes, self.device
        eye = torch.eye(3, device=dev)
        return {
            "phase_onehot": [eye[p].expand(N, 3) for p in range(3)],
            "no_targets": torch.zeros(N, B * C, device=dev),
            "all_rows": torch.ones(N, B, device=dev),
            "arange_b": torch.arange(B, device=dev),
            "phase_code": {
                p: torch.full((N,), i, dtype=torch.long, device=dev) for i, p in enumerate(PHASES)
            },
        }

    # -- step ------------------------------------------------------------------------------
    def step(self, actions: dict[str, Any]) -> StepResult:
        """Play the turn of ``agent_selection`` in every world (``actions`` holds its action,
        the batch's first dimension) -> ``(obs, rewards, terminations, truncations, infos)``."""
        agent = self._turn_agent(actions)
        checked = self._check_action(agent, actions[agent])  # nothing changes before this
        self._exam_done = torch.zeros_like(self._exam_done)
        rewards = torch.zeros(self.num_envs, device=self.device)
        if self.phase == "quiz":
            self._quiz(checked)
        elif self.phase == "lesson":
            self._lesson(*checked)
        elif self.phase == "study":
            self._study()
        else:
            rewards = self._exam(checked)
        obs, infos = self._observations(), self._infos()
        return (
            obs,
            {a: rewards for a in self.possible_agents},
            dict.fromkeys(self.possible_agents, self._terminated.clone()),
            dict.fromkeys(self.possible_agents, self._truncated.clone()),
            infos,
        )

    def _turn_agent(self, actions: Any) -> str:
        """The agent whose turn it is, once ``actions`` holds exactly its action."""
        if not self._started:
            raise ValueError("step() called before reset(); call reset() first")
        agent = self.agent_selection
        if not isinstance(actions, dict):
            raise TypeError(
                f"step() expected a dict {{agent: action}} for [{agent!r}], got {describe(actions)}"
            )
        unknown = [a for a in actions if a not in self.possible_agents]
        if unknown:
            raise ValueError(f"unknown agent key(s) {unknown!r}; valid agents: {list(AGENTS)}")
        if set(actions) != {agent}:
            raise ValueError(self._turn_error(sorted(actions)))
        return agent

    def _turn_error(self, keys: list[str]) -> str:
        agent = self.agent_selection
        if "teacher" in keys and agent == "student":
            return (
                f"lesson out of turn: it is the student's {self.phase!r} turn "
                f"({self._turn_in_phase} of the phase done); the teacher's turn comes when the "
                f"stack of {self.stack_size} quizzes is full. Expected actions for "
                f"['student'], got {keys}"
            )
        return f"not this agent's turn: expected an action for [{agent!r}] only, got {keys}"

    def _quiz(self, answers: torch.Tensor) -> None:
        B, k = self.batch_size, self._turn_in_phase
        if k == 0:  # a fresh stack: what the teacher was shown stays as it was
            self._stack_idx = torch.empty_like(self._stack_idx)
            self._answers = torch.empty_like(self._answers)
        self._stack_idx[:, k * B : (k + 1) * B] = self._rows
        self._answers[:, k * B : (k + 1) * B] = answers
        self._forward = self._forward + 1
        self._turn_in_phase += 1
        if self._turn_in_phase == self.stack_size:
            self._deliver_answers()
            self.phase, self._turn_in_phase = "lesson", 0
        else:
            self._show_quiz()

    def _deliver_answers(self) -> None:
        N, M, C = self.num_envs, self.stack_size * self.batch_size, self.num_classes
        payload = torch.zeros(N * M, 2, C, device=self.device)
        payload[:, 0] = self._answers.reshape(N * M, C)
        delivery = self.channel.route(
            payload,
            send_mask=self._edge(N * M, 0, 1),
            binary=False,
            bits_per_message=self.bits_per_sample,
            tag="answers",
        )
        heard = delivery.inbox[:, 1, 0].reshape(N, M * C)
        labels = torch.nn.functional.one_hot(self.train_y[self._stack_idx], C).reshape(N, -1)
        images = self.train_x[self._stack_idx].reshape(N, -1)
        self._teacher_obs = torch.cat([heard, labels.to(heard.dtype), images], 1)
        self._shown_stack = self._stack_idx
        self._shown_labels = self.train_y[self._stack_idx]

    def _edge(self, rows: int, sender: int, receiver: int) -> torch.Tensor:
        mask = torch.zeros(2, 2, dtype=torch.bool, device=self.device)
        mask[sender, receiver] = True
        return mask.expand(rows, 2, 2)

    def _lesson(self, select: torch.Tensor, targets: torch.Tensor) -> None:
        N, B, C = self.num_envs, self.batch_size, self.num_classes
        # Stable sort puts the selected samples first, in stack order: a batched compaction.
        order = (~select).to(torch.int8).argsort(dim=1, stable=True)[:, :B]
        count = select.sum(1)
        self._lesson_mask = self._const["arange_b"] < count[:, None]
        self._lesson_idx = self._stack_idx.gather(1, order)
        payload = torch.zeros(N * B, 2, C, device=self.device)
        payload[:, 1] = targets.gather(1, order[..., None].expand(N, B, C)).reshape(N * B, C)
        send = self._edge(N * B, 1, 0) & self._lesson_mask.reshape(N * B, 1, 1)
        delivery = self.channel.route(
            payload,
            send_mask=send,
            binary=False,
            bits_per_message=self.bits_per_sample,
            tag="lesson",
        )
        self._lesson_targets = delivery.inbox[:, 0, 0].reshape(N, B, C)
        images = self.train_x[self._lesson_idx] * self._lesson_mask[..., None]
        self._rows = self._lesson_idx
        self._student_view(images, self._lesson_targets, self._lesson_mask, 1)
        self._lesson_has_rows = count > 0
        self._lessons += 1
        self._round_lessons += 1
        self._counts["lessons"] = self._clock("lessons")
        self.phase = "study"

    def _study(self) -> None:
        self._backward = self._backward + self._lesson_has_rows.long()
        if self._round_lessons % self.exam_every == 0:  # every world's count, modulo exam_every
            self.phase, self._turn_in_phase = "exam", 0
            self._exam_correct = torch.zeros_like(self._exam_correct)
            self._show_exam()
        else:
            self._next_round()

    def _next_round(self) -> None:
        over = self._lessons >= self.max_lessons  # each world after its own max_lessons
        if over.any():
            self._truncated = self._truncated | torch.from_numpy(over).to(self.device)
        self.phase, self._turn_in_phase = "quiz", 0
        self._show_quiz()

    def _exam(self, answers: torch.Tensor) -> torch.Tensor:
        correct = (answers.argmax(-1) == self.val_y[self._rows]) & self._exam_mask
        self._exam_correct = self._exam_correct + correct.sum(1)
        self._turn_in_phase += 1
        rewards = torch.zeros(self.num_envs, device=self.device)
        if self._turn_in_phase < self.exam_turns:
            self._show_exam()
            return rewards
        acc = self._exam_correct.float() / self.exam_size
        rewards = acc - self._prev_acc
        self._prev_acc = acc
        self._exam_acc = acc
        self._exam_done = torch.ones_like(self._exam_done)
        if self.target_accuracy is not None:
            self._terminated = self._terminated | (acc >= self.target_accuracy)
        self._next_round()
        return rewards

    # -- validation ------------------------------------------------------------------------
    def _check_action(self, agent: str, action: Any) -> Any:
        """The batched face's one action check (:func:`commenv.core.batched_actions`): the
        student's answers ``(num_envs, B, C)``, or the teacher's ``(select, targets)``."""
        space = self._spaces["act"][agent]
        if not self.validate:
            if agent == "student":
                return torch.as_tensor(action, device=self.device).float()
            select = torch.as_tensor(action["select"], device=self.device)
            return select.bool(), torch.as_tensor(action["targets"], device=self.device).float()
        act = batched_actions([agent], space, {agent: action}, self.num_envs, self.device)
        if agent == "student":
            return act[:, 0].float()
        return act["select"][:, 0].bool(), act["targets"][:, 0].float()

    # -- outputs ---------------------------------------------------------------------------
    def _observations(self) -> TensorDict:
        return {"student": self._student_obs, "teacher": self._teacher_obs}

    def _infos(self) -> dict[str, dict]:
        common = {
            "phase": self._const["phase_code"][self.phase],
            "forward_passes": self._forward,
            "backward_passes": self._backward,
            "lessons": self._counts["lessons"],
            "epoch": self._counts["epoch"],
            "exam_accuracy": self._exam_acc,
            "exam_done": self._exam_done,
        }
        labels = self.val_y if self.phase == "exam" else self.train_y
        student = {**common, "indices": self._rows, "labels": labels[self._rows]}
        teacher = {
            **common,
            "stack_indices": self._shown_stack,
            "stack_labels": self._shown_labels,
        }
        return {"student": student, "teacher": teacher}

    def render(self, env_index: int = 0) -> np.ndarray | str | None:
        """``rgb_array``: the images the student is shown and the lesson mask; ``ansi``: the
        counters as text; ``human``: prints the ``ansi`` text."""
        env_index = self._check_render_index(env_index)  # refused with or without a mode
        if self.render_mode is None or not self._started:
            return None
        if self.render_mode in ("ansi", "human"):
            counts = self._render_counts(env_index)
            acc = counts.pop("acc")
            text = (
                f"quiz_v0 {self.phase} turn ({self.agent_selection}): "
                + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
                + ", last exam accuracy "
                + ("–" if acc < 0 else f"{100 * acc:.1f}%")
            )
            if self.render_mode == "human":
                print(text)
                return None
            return text
        from commenv.render import bits_image, image_row

        shown = torch.as_tensor(self._observations()["student"]).reshape(
            -1, self.obs_layout["mask"].stop
        )
        parts = self.unpack_student(shown[env_index : env_index + 1])
        top = image_row(list(parts["images"][0, :8].cpu()), self.image_shape)
        bits = bits_image(parts["mask"][0, None].float().cpu(), width=top.shape[1])
        return np.concatenate([top, bits], 0)

    def _render_counts(self, env_index: int) -> dict[str, Any]:
        return {
            "forward_passes": int(self._forward[env_index]),
            "backward_passes": int(self._backward[env_index]),
            "lessons": int(self._lessons[env_index]),
            "epoch": int(self._epoch[env_index]),
            "acc": float(self._exam_acc[env_index]),
        }


# -- one world in numpy: the engine of the PettingZoo faces ----------------------------------
FAST_SUM_ATOL = SUM_ATOL / 2
"""Row-sum tolerance of the one-world fast check: an action inside it is inside
:func:`commenv.core.validate_action`'s :data:`commenv.spaces.SUM_ATOL` whatever the float
rounding; anything else is decided by ``validate_action`` itself (same errors, same verdict)."""

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class QuizWorld(QuizGame):
    """One world of quiz_v0 in numpy: the engine behind the PettingZoo faces.

    The same rules, random streams and episodes as ``QuizGame(num_envs=1)``, bit for bit, for
    the same seed (``tests/test_quiz_faces.py`` compares them over many configurations); a turn
    is a handful of numpy operations instead of about 140 tensor operations, and an action is
    checked once, in numpy (a fast check for well-formed arrays, else
    :func:`commenv.core.validate_action` with its errors). One world, no leading ``num_envs``:
    ``reset(seed)`` -> ``(obs, infos)`` and ``step({agent_selection: action})`` ->
    ``(obs, rewards, terminations, truncations, infos)`` with numpy arrays, Python floats and
    bools; the faces call :meth:`check_world_action` and :meth:`play` directly. Arrays handed
    out are never written to afterwards. The channel is noise-free here, so a delivery is a
    copy; :meth:`commenv.channel.Channel.account` counts its traffic as routing would.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__(num_envs=1, device="cpu", **config)
        B, C = self.batch_size, self.num_classes
        self._x, self._y = self.train_x.numpy(), self.train_y.numpy()
        self._vx, self._vy = self.val_x.numpy(), self.val_y.numpy()
        self._eye = np.eye(C, dtype=np.float32)
        self._phase_rows = np.eye(3, dtype=np.float32)
        self._no_targets = np.zeros(B * C, np.float32)
        self._all_rows = np.ones(B, np.float32)
        self._arange_b = np.arange(B)
        self._codes = {p: i for i, p in enumerate(PHASES)}

    # -- reset ------------------------------------------------------------------------------
    def _reset_all(self, seed: int | None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        if seed is not None or not self._started:
            self._gen, self._restart_streams = self._seed_streams(seed)
        self._started = True
        M, C = self.stack_size * self.batch_size, self.num_classes
        self.channel.reset_counters()
        self.phase, self._turn_in_phase = "quiz", 0
        self._round_lessons = self._lessons = self._cursor = self._epoch = 0
        self._perm = self._new_permutation(self._gen, 1)[0].numpy()
        self._forward = self._backward = self._exam_correct = 0
        self._stack_idx = np.zeros(M, np.int64)
        self._answers = np.zeros((M, C), np.float32)
        self._shown_stack, self._shown_labels = self._stack_idx, self._y[self._stack_idx]
        self._exam_acc, self._prev_acc = np.float32(-1.0), np.float32(1.0 / C)
        self._exam_done = self._terminated = self._truncated = False
        self._teacher_obs = np.zeros(self._spaces["obs"]["teacher"].shape, np.float32)
        self._show_quiz()
        return self._observations(), self._infos()

    # -- what the student is shown ----------------------------------------------------------
    def _show_quiz(self) -> None:
        B = self.batch_size
        if self._cursor + B > len(self._y):  # drop-last epochs
            self._perm, self._cursor = self._new_permutation(self._gen, 1)[0].numpy(), 0
        if self._cursor == 0:
            self._epoch += 1
        self._rows = self._perm[self._cursor : self._cursor + B]
        self._cursor += B
        self._view(0, self._x[self._rows], self._no_targets, self._all_rows)

    def _show_exam(self) -> None:
        B, start = self.batch_size, self._turn_in_phase * self.batch_size
        if start + B <= self.exam_size:  # a full turn: x * 1 is x, no mask to apply
            self._rows, self._exam_mask = np.arange(start, start + B), np.ones(B, bool)
            self._view(2, self._vx[start : start + B], self._no_targets, self._all_rows)
            return
        idx = np.arange(start, start + B)
        self._exam_mask = idx < self.exam_size
        self._rows = np.minimum(idx, self.exam_size - 1)
        mask = self._exam_mask.astype(np.float32)
        self._view(2, self._vx[self._rows] * mask[:, None], self._no_targets, mask)

    def _view(self, phase: int, images: np.ndarray, targets: np.ndarray, mask: np.ndarray):
        parts = (self._phase_rows[phase], images.ravel(), targets.ravel(), mask)
        self._student_obs = np.concatenate(parts)

    # -- step -------------------------------------------------------------------------------
    def step(self, actions: dict[str, Any]):
        agent = self._turn_agent(actions)
        reward, term, trunc = self.play(agent, self.check_world_action(agent, actions[agent]))
        agents = self.possible_agents
        return (
            self._observations(),
            dict.fromkeys(agents, reward),
            dict.fromkeys(agents, term),
            dict.fromkeys(agents, trunc),
            self._infos(),
        )

    def check_world_action(self, agent: str, action: Any) -> Any:
        """One world's action of ``agent`` as the engine takes it (float32 answers, or a bool
        selection and float32 targets), or ``ValueError`` exactly as ``validate_action``."""
        B, M = self.batch_size, self.stack_size * self.batch_size
        if agent == "student":
            fast = self._fast_simplex(action, B)
            if fast is not None:
                return fast
            return validate_action(agent, self._spaces["act"][agent], action).astype(np.float32)
        if type(action) is dict and len(action) == 2 and "select" in action:
            select, targets = action["select"], self._fast_simplex(action.get("targets"), M)
            fast = type(select) is np.ndarray and select.shape == (M,) and targets is not None
            if fast and select.dtype.kind in "biu":
                bits = select if select.dtype.kind == "b" else (select == 0) | (select == 1)
                if bits.all() and np.count_nonzero(select) <= B:
                    return select != 0, targets
        checked = validate_action(agent, self._spaces["act"][agent], action)
        return checked["select"] != 0, checked["targets"].astype(np.float32)

    def _fast_simplex(self, x: Any, rows: int) -> np.ndarray | None:
        """``x`` as float32 when it is plainly a ``(rows, C)`` array of distributions."""
        if type(x) is not np.ndarray or x.dtype not in _FLOATS:
            return None
        if x.shape != (rows, self.num_classes) or not (x.min() >= 0 and x.max() <= 1):
            return None  # NaN fails both comparisons
        if np.abs(x.sum(-1, dtype=np.float64) - 1.0).max() > FAST_SUM_ATOL:
            return None
        return x.astype(np.float32, copy=False)

    def play(self, agent: str, action: Any) -> tuple[float, bool, bool]:
        """Play the turn of ``agent`` (``agent_selection``) with a checked action (see
        :meth:`check_world_action`); returns ``(reward, terminated, truncated)``."""
        if not self._started:
            raise ValueError("step() called before reset(); call reset() first")
        if agent != self.agent_selection:
            raise ValueError(self._turn_error([agent]))
        self._exam_done = False
        reward = 0.0
        if self.phase == "quiz":
            self._quiz(action)
        elif self.phase == "lesson":
            self._lesson(*action)
        elif self.phase == "study":
            self._study()
        else:
            reward = self._exam(action)
        return reward, self._terminated, self._truncated

    def _quiz(self, answers: np.ndarray) -> None:
        B, M, k = self.batch_size, self.stack_size * self.batch_size, self._turn_in_phase
        if k == 0:  # a fresh stack: what the teacher was shown stays as it was
            self._stack_idx = np.empty(M, np.int64)
            self._answers = np.empty((M, self.num_classes), np.float32)
        self._stack_idx[k * B : (k + 1) * B] = self._rows
        self._answers[k * B : (k + 1) * B] = answers
        self._forward += 1
        self._turn_in_phase += 1
        if self._turn_in_phase < self.stack_size:
            self._show_quiz()
            return
        stack, labels = self._stack_idx, self._y[self._stack_idx]
        parts = (self._answers.ravel(), self._eye[labels].ravel(), self._x[stack].ravel())
        self._teacher_obs = np.concatenate(parts)
        self._shown_stack, self._shown_labels = stack, labels
        self._account("answers", 0, M)
        self.phase, self._turn_in_phase = "lesson", 0

    def _lesson(self, select: np.ndarray, targets: np.ndarray) -> None:
        order = np.argsort(~select, kind="stable")[: self.batch_size]  # selected first
        count = int(np.count_nonzero(select))
        mask = (self._arange_b < count).astype(np.float32)
        self._rows = self._stack_idx[order]
        # multiplied, as routing zeroes what was not sent: the same bits as the batched face
        lesson_targets = targets[order] * mask[:, None]
        self._view(1, self._x[self._rows] * mask[:, None], lesson_targets, mask)
        self._lesson_has_rows = count > 0
        self._lessons += 1
        self._round_lessons += 1
        self._account("lesson", 1, count)
        self.phase = "study"

    def _account(self, tag: str, sender: int, count: int) -> None:
        """``count`` samples from ``sender`` to the other agent, as ``Channel.route`` counts."""
        sent, received, messages = [0, 0], [0, 0], [0, 0]
        sent[sender] = received[1 - sender] = count * self.bits_per_sample
        messages[sender] = count
        self.channel.account(tag, sent, received, messages)

    def _study(self) -> None:
        self._backward += int(self._lesson_has_rows)
        if self._round_lessons % self.exam_every == 0:
            self.phase, self._turn_in_phase, self._exam_correct = "exam", 0, 0
            self._show_exam()
        else:
            self._next_round()

    def _next_round(self) -> None:
        if self._lessons >= self.max_lessons:
            self._truncated = True
        self.phase, self._turn_in_phase = "quiz", 0
        self._show_quiz()

    def _exam(self, answers: np.ndarray) -> float:
        correct = (answers.argmax(-1) == self._vy[self._rows]) & self._exam_mask
        self._exam_correct += int(np.count_nonzero(correct))
        self._turn_in_phase += 1
        if self._turn_in_phase < self.exam_turns:
            self._show_exam()
            return 0.0
        # the batched face's float32 arithmetic, on one value (once per exam)
        acc = torch.tensor([self._exam_correct]).float() / self.exam_size
        if self.target_accuracy is not None:
            self._terminated = self._terminated or bool(acc >= self.target_accuracy)
        acc = acc.numpy()[0]
        reward = acc - self._prev_acc
        self._prev_acc = self._exam_acc = acc
        self._exam_done = True
        self._next_round()
        return float(reward)

    # -- outputs ----------------------------------------------------------------------------
    def _observations(self) -> dict[str, np.ndarray]:
        return {"student": self._student_obs, "teacher": self._teacher_obs}

    def observation(self, agent: str) -> np.ndarray:
        """The current observation of ``agent`` (an array never written to again)."""
        return self._student_obs if agent == "student" else self._teacher_obs

    def _infos(self) -> dict[str, dict]:
        common = {
            "phase": self._codes[self.phase],
            "forward_passes": self._forward,
            "backward_passes": self._backward,
            "lessons": self._lessons,
            "epoch": self._epoch,
            "exam_accuracy": float(self._exam_acc),
            "exam_done": self._exam_done,
        }
        labels = self._vy if self.phase == "exam" else self._y
        student = {**common, "indices": self._rows, "labels": labels[self._rows]}
        teacher = {**common, "stack_indices": self._shown_stack, "stack_labels": self._shown_labels}
        return {"student": student, "teacher": teacher}

    def _render_counts(self, env_index: int) -> dict[str, Any]:
        return {
            "forward_passes": self._forward,
            "backward_passes": self._backward,
            "lessons": self._lessons,
            "epoch": self._epoch,
            "acc": float(self._exam_acc),
        }


# -- PettingZoo faces ------------------------------------------------------------------------
class QuizAECEnv(GameFace, AECEnv):
    """Native AEC face of one world (numpy in, numpy out), played by a :class:`QuizWorld`."""

    metadata = QuizGame.metadata

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.game = QuizWorld(**config)
        self.possible_agents = list(self.game.possible_agents)
        self.agents: list[str] = []
        self.render_mode = self.game.render_mode

    def observation_space(self, agent: str) -> gymnasium.Space:
        return self.game.observation_space(agent)

    def action_space(self, agent: str) -> gymnasium.Space:
        return self.game.action_space(agent)

    def observe(self, agent: str) -> np.ndarray:
        return self.game.observation(agent)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        _, self.infos = self.game.reset(seed=seed)
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.agent_selection = self.game.agent_selection

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        checked = self.game.check_world_action(agent, action)  # at its own turn
        reward, term, trunc = self.game.play(agent, checked)
        self._cumulative_rewards[agent] = 0.0
        self.infos = self.game._infos()
        for a in self.agents:
            self.rewards[a] = reward
            self.terminations[a] = term
            self.truncations[a] = trunc
        self._accumulate_rewards()
        if term or trunc:
            self.agent_selection = self.agents[0]  # each finished agent then steps None
        else:
            self.agent_selection = self.game.agent_selection


class QuizParallelEnv(turn_based_aec_to_parallel_wrapper):
    """PettingZoo's ``turn_based_aec_to_parallel`` of the quiz, with its ``step`` checked:
    a dict whose keys are agents, holding the action of ``agent_selection`` (the agent whose
    turn it is); the idle agent's action, when given, is ignored."""

    def __init__(self, aec_env: Any) -> None:
        super().__init__(aec_env)
        self.agents: list[str] = []

    @property
    def game(self) -> QuizWorld:
        """The one-world game this face plays (``env.game.obs_layout``, as on every game)."""
        return self.aec_env.unwrapped.game

    @property
    def obs_layout(self) -> dict[str, slice]:
        """The parts of the student's observation (``env.game.obs_layout``)."""
        return self.game.obs_layout

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ValueError(
                "step() called before reset() or on a finished episode; call reset() first"
            )
        active = self.aec_env.agent_selection
        if not isinstance(actions, dict):
            raise TypeError(
                f"step() expected a dict {{agent: action}} with the action of {active!r}, "
                f"got {describe(actions)}"
            )
        unknown = [a for a in actions if a not in self.possible_agents]
        if unknown:
            raise ValueError(f"unknown agent key(s) {unknown!r}; valid agents: {list(AGENTS)}")
        if active not in actions:
            raise ValueError(
                f"missing the action of {active!r}, whose turn it is "
                f"({self.aec_env.unwrapped.game.phase!r} turn); expected a key {active!r}, "
                f"got keys {sorted(actions)}"
            )
        return super().step(actions)


class QuizFamily(EnvFamily):
    """``quiz_v0``: AEC native (``.env()``), Parallel by ``turn_based_aec_to_parallel``."""

    def raw_env(self, **config: Any) -> QuizAECEnv:
        """AEC form without PettingZoo's order-enforcing wrapper."""
        return QuizAECEnv(**config)

    def env(self, **config: Any) -> OrderedAECEnv:
        """AEC form (order-enforced), the native turn-based face."""
        return OrderedAECEnv(QuizAECEnv(**config))

    def parallel_env(self, **config: Any) -> QuizParallelEnv:
        """Parallel form: only ``agent_selection``'s action is used; the idle agent's ignored."""
        return QuizParallelEnv(self.env(**config))


def _register_gymnasium() -> None:
    try:
        gymnasium.register(
            id="commenv/QuizTeacher-v0", entry_point="commenv.quiz_teacher:QuizTeacherEnv"
        )
    except gymnasium.error.Error:  # registered already (module reloaded)
        pass


_register_gymnasium()
