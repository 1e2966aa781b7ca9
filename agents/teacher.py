"""Reference agents for ``quiz_v0`` (thesis, chapter 3): the hardness-selecting teacher and the
small student.

- :class:`TeacherMLP`: 2 x 1200 ReLU with dropout, trained to convergence with early stopping on
  validation accuracy (:func:`train_teacher`), saved and loaded with ``weights_only=True``
  (:func:`save_teacher`, :func:`load_teacher`, :func:`teacher_for` caches it on disk).
- :class:`TeacherCNN` (ours, ``arch="cnn"``): a small batch-normed CNN, a stronger teacher for
  datasets where the MLP is barely better than the student, such as Fashion-MNIST.
- :class:`Student`: 2 x 32 ReLU, no dropout, Adam; one model per env of a batched game, held as
  one batched network (:class:`BatchedMLP`), so ``num_envs`` students train without a Python loop.
- :class:`HardnessTeacher`: scores the stack with :func:`difficulty` (cross-entropy or Euclidean
  distance between teacher and student distributions, random, or RHO-LOSS' reducible loss),
  selects the hardest ``batch_size`` with the batched :func:`select_topk`, and sends its soft
  labels or the true labels as targets.

A teacher agent is anything with ``act(obs, infos) -> {"select", "targets"}`` built as
``Cls(game=game, model=teacher_model, seed=seed)``; ``commenv bench quiz --teacher
module:Class`` puts one into table 3.1.
"""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from commenv.core import check_device, check_float, check_int, check_seed, generator_seed
from commenv_agents.layers import BatchedMLP

MEASURES: tuple[str, ...] = ("ce", "euclid", "random", "rho")
TARGETS: tuple[str, ...] = ("soft", "true")
EPS = 1e-8


# -- models ------------------------------------------------------------------------------------
class TeacherMLP(nn.Module):
    """The thesis' teacher: ``D -> hidden -> hidden -> C`` with ReLU and dropout (logits out)."""

    def __init__(
        self, num_features: int, num_classes: int, hidden: int = 1200, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.config = {
            "num_features": int(num_features),
            "num_classes": int(num_classes),
            "hidden": int(hidden),
            "dropout": float(dropout),
        }
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TeacherCNN(nn.Module):
    """A stronger teacher than the thesis' (ours): three 3x3 convolutions with batch norm (the
    last two with stride 2), dropout and a 256-unit layer. Reads flat images ``(n, C*H*W)``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int] | list[int],
        num_classes: int,
        width: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        self.image_shape = (c, h, w)
        self.config = {
            "arch": "cnn",
            "image_shape": [c, h, w],
            "num_classes": int(num_classes),
            "width": int(width),
            "dropout": float(dropout),
        }

        def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU()]

        flat = 4 * width * math.ceil(h / 4) * math.ceil(w / 4)
        self.net = nn.Sequential(
            *block(c, width, 1),
            *block(width, 2 * width, 2),
            *block(2 * width, 4 * width, 2),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(flat, 256),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(-1, *self.image_shape))


TEACHER_ARCHS: tuple[str, ...] = ("mlp", "cnn")


def build_teacher_model(config: dict[str, Any]) -> nn.Module:
    """A teacher network from its ``config`` (files written before ``arch`` existed are MLPs)."""
    config = dict(config)
    arch = config.pop("arch", "mlp")
    if arch not in TEACHER_ARCHS:
        raise ValueError(f"unknown teacher arch {arch!r}; valid choices: {list(TEACHER_ARCHS)}")
    return TeacherMLP(**config) if arch == "mlp" else TeacherCNN(**config)


_MOMENTS = ("exp_avg", "exp_avg_sq")


class Student:
    """The thesis' student (2 x 32 ReLU, no dropout, Adam), one per env of a batched game.

    Args:
        num_features: pixels per image ``D``.
        num_classes: classes ``C``.
        num_envs: students trained side by side (one per env).
        hidden: hidden units per layer (32 in the thesis).
        lr: Adam learning rate (Adam's default, as the thesis).
        seed: initialisation seed.
        device: where the model lives.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        num_envs: int = 1,
        hidden: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, value, low in (
            ("num_features", num_features, 1), ("num_classes", num_classes, 2),
            ("num_envs", num_envs, 1), ("hidden", hidden, 1),
        ):  # fmt: skip
            check_int(name, value, low)
        check_float("lr", lr, 0.0)
        gen = torch.Generator().manual_seed(generator_seed(check_seed("seed", seed)))
        sizes = [num_features, hidden, hidden, num_classes]
        self.model = BatchedMLP(num_envs, sizes, gen).to(check_device(device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)

    @torch.no_grad()
    def answer(self, images: torch.Tensor) -> torch.Tensor:
        """Predictive distributions ``(N, B, C)`` for images ``(N, B, D)``."""
        return torch.softmax(self.model(images), -1)

    def study(
        self, images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """One Adam step on the masked rows with cross-entropy to (soft) ``targets``.

        Returns the per-env loss ``(N,)``. An env whose mask is empty (a skipped lesson, no
        backward pass) keeps its parameters and Adam moments bit for bit: a zero gradient
        would still move them through Adam's momentum. Adam's step count is the batch's, so
        the next real step of such an env has the bias correction of one step later.
        """
        active = mask.any(1)
        if not bool(active.any()):
            return torch.zeros(mask.shape[0], device=mask.device)
        frozen = None if bool(active.all()) else self._snapshot(~active)
        logp = torch.log_softmax(self.model(images), -1)
        per_row = -(targets * logp).sum(-1) * mask
        loss = per_row.sum(1) / mask.sum(1).clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        if frozen is not None:
            self._restore(~active, frozen)
        return loss.detach()

    @torch.no_grad()
    def _snapshot(self, envs: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The parameters and Adam moments of the envs ``envs`` ``(N,)`` bool."""
        out = []
        for p in self.model.parameters():
            state = self.optimizer.state.get(p, {})
            kept = {k: state[k][envs].clone() for k in _MOMENTS if k in state}
            out.append({"param": p[envs].clone(), **kept})
        return out

    @torch.no_grad()
    def _restore(self, envs: torch.Tensor, saved: list[dict[str, torch.Tensor]]) -> None:
        for p, kept in zip(self.model.parameters(), saved, strict=True):
            p[envs] = kept["param"]
            state = self.optimizer.state[p]
            for k in _MOMENTS:  # moments Adam created at this step start at zero
                state[k][envs] = kept[k] if k in kept else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A detached copy of the model parameters (for best-validation checkpoints)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    @property
    def num_envs(self) -> int:
        """Students side by side (the batched model's groups)."""
        return self.model.layers[0].weight.shape[0]

    @torch.no_grad()
    def accuracy(
        self, images: torch.Tensor, labels: torch.Tensor, chunk: int = 4096
    ) -> torch.Tensor:
        """Accuracy ``(N,)`` of every student on flat ``images`` ``(n, D)``."""
        if len(labels) == 0:
            raise ValueError("accuracy of an empty test set: pass at least one sample")
        correct = 0
        for start in range(0, len(labels), chunk):  # bounded memory on big test sets
            x = images[start : start + chunk]
            pred = self.model(x.expand(self.num_envs, -1, -1)).argmax(-1)
            correct = correct + (pred == labels[start : start + chunk]).sum(1)
        return correct.float() / len(labels)


# -- the teacher model: training, saving, loading ----------------------------------------------
def train_teacher(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    num_classes: int,
    hidden: int = 1200,
    dropout: float = 0.5,
    batch_size: int = 128,
    lr: float = 1e-3,
    max_epochs: int = 30,
    patience: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    arch: str = "mlp",
    image_shape: tuple[int, int, int] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a teacher with Adam until validation accuracy stops improving.

    ``arch="mlp"`` is the thesis' :class:`TeacherMLP`; ``arch="cnn"`` our :class:`TeacherCNN`
    (needs ``image_shape``; its batches are shifted by up to 1/14 of the image side, 2 pixels on
    28x28, a cheap augmentation).
    Images are flat ``(n, D)``. Returns the best-validation model (eval mode) and a log
    ``{"best_val_accuracy", "best_epoch", "epochs", "history"}``. The run is seeded by
    ``seed`` alone (initialisation and dropout masks); the caller's RNG states are left as
    they were.
    """
    from commenv.bench.tools import progress, seed_scope

    with seed_scope(int(seed), device):
        gen = torch.Generator().manual_seed(int(seed))
        if arch not in TEACHER_ARCHS:
            raise ValueError(f"unknown teacher arch {arch!r}; valid choices: {list(TEACHER_ARCHS)}")
        if arch == "cnn":
            if image_shape is None:
                raise ValueError("arch='cnn' needs image_shape=(C, H, W)")
            model: nn.Module = TeacherCNN(image_shape, num_classes).to(device)
            shift = min(image_shape[1:]) // 14  # 2 pixels on 28x28 images, none on 8x8 digits
        else:
            model, shift = TeacherMLP(train_x.shape[1], num_classes, hidden, dropout).to(device), 0
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, best_state, best_epoch, history = -1.0, None, 0, []
        quiet = {} if show_progress else {"disable": True}
        bar = progress(range(max_epochs), desc="teacher", **quiet)
        for epoch in bar:
            model.train()
            perm = torch.randperm(len(train_y), generator=gen)
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                x = train_x[idx].to(device)
                if shift:
                    dy, dx = torch.randint(-shift, shift + 1, (2,), generator=gen).tolist()
                    x = x.reshape(-1, *image_shape).roll((dy, dx), (2, 3)).reshape(len(idx), -1)
                loss = F.cross_entropy(model(x), train_y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            acc = float(
                (predict_probs(model, val_x, device).argmax(-1).cpu() == val_y).float().mean()
            )
            history.append(acc)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(val=f"{acc:.4f}")
            if acc > best:
                best, best_epoch, best_state = acc, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= patience:
                break
        model.load_state_dict(best_state)
        model.eval()
        log = {
            "best_val_accuracy": best,
            "best_epoch": best_epoch,
            "epochs": len(history),
            "history": history,
        }
        return model, log


@torch.no_grad()
def predict_probs(
    model: nn.Module, images: torch.Tensor, device: str | torch.device = "cpu", chunk: int = 4096
) -> torch.Tensor:
    """The model's softmax ``(n, C)`` on flat images ``(n, D)``, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    out = torch.cat(
        [
            torch.softmax(model(images[i : i + chunk].to(device)), -1)
            for i in range(0, len(images), chunk)
        ]
    )
    model.train(was_training)
    return out


def _atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` through :func:`commenv.bench.tools.atomic_path`: a run killed mid-save
    leaves no half-written file for the next run to trust."""
    from commenv.bench.tools import atomic_path

    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)
    return path


def _cached(path: Path, load: Any) -> Any:
    """``load(path)``, or ``None`` (with a warning) when there is no file or it cannot be read
    (cut short by a kill before saves were atomic, or not a cache file): then it is rebuilt."""
    if not path.exists():
        return None
    try:
        return load(path)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        warnings.warn(f"cached {path} cannot be read ({err}); computing it again", stacklevel=3)
        return None


def save_teacher(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save weights and config as plain tensors/numbers (loadable with ``weights_only=True``),
    atomically."""
    blob = {"config": model.config, "state_dict": model.state_dict(), "extra": extra or {}}
    return _atomic_save(blob, Path(path))


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a :func:`save_teacher` file safely (``torch.load(..., weights_only=True)``); the
    caller's RNG is left alone (the weights are loaded, not drawn)."""
    blob = torch.load(Path(path), map_location=device, weights_only=True)
    if not isinstance(blob, dict) or not {"config", "state_dict"} <= set(blob):
        raise ValueError(f"{path} is not a teacher file written by save_teacher()")
    with torch.random.fork_rng(devices=[]):  # the layers' initialisation, overwritten below
        model = build_teacher_model(blob["config"])
    model = model.to(device)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model


def _cache_path(
    cache_dir: str | Path | None,
    dataset: str,
    data_seed: int,
    seed: int,
    kind: str,
    train_kwargs: dict[str, Any],
) -> Path:
    """Where a trained teacher (``kind=""``) or its out-of-fold predictions are cached."""
    cache = Path(cache_dir or Path.home() / ".cache" / "commenv" / "teachers")
    tag = "".join(f"_{k}{v}" for k, v in sorted(train_kwargs.items()))
    return cache / f"{dataset}_split{data_seed}_seed{seed}{kind}{tag}.pt"


def _training_data(
    dataset: str, data_root: str | None, data_seed: int, train_kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The dataset splits, and ``train_kwargs`` completed with the image shape a CNN needs."""
    from commenv.datasets import load_dataset

    data = load_dataset(dataset, root=data_root, seed=data_seed)
    if train_kwargs.get("arch") == "cnn":
        train_kwargs = {**train_kwargs, "image_shape": data.image_shape}
    return data, train_kwargs


def out_of_fold_probs(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    num_classes: int,
    folds: int = 2,
    seed: int = 0,
    train_fn: Any = None,
    device: str | torch.device = "cpu",
    **train_kwargs: Any,
) -> torch.Tensor:
    """Teacher distributions ``(n, C)`` on the training set, each from a model that never saw
    that sample.

    The training set is split into ``folds`` random parts; a teacher is trained on all but one
    and predicts the one left out (cross-fitting). RHO-LOSS' irreducible-loss model is trained
    on held-out data for this reason: a teacher trained on a sample has memorised its label, so
    its loss there says nothing about how learnable the sample is (Mindermann et al., 2022).
    ``train_fn`` defaults to :func:`train_teacher` and is called as ``train_fn(x, y, val_x,
    val_y, num_classes=, seed=, device=, **train_kwargs) -> (model, log)``.
    """
    from commenv.core import check_int

    folds = check_int("folds", folds, 2)
    if len(train_y) < folds:
        raise ValueError(
            f"need at least {folds} training samples for {folds} folds, got {len(train_y)}"
        )
    train_fn = train_fn or train_teacher
    gen = torch.Generator().manual_seed(int(seed))
    fold = torch.randperm(len(train_y), generator=gen) % folds
    probs = torch.empty(len(train_y), num_classes)
    for k in range(folds):
        held_out = fold == k
        model, _ = train_fn(
            train_x[~held_out],
            train_y[~held_out],
            val_x,
            val_y,
            num_classes=num_classes,
            seed=int(seed) + k,
            device=device,
            **train_kwargs,
        )
        probs[held_out] = predict_probs(model, train_x[held_out], device).cpu()
    return probs


def out_of_fold_probs_for(
    dataset: str,
    *,
    data_root: str | None = None,
    data_seed: int = 0,
    seed: int = 0,
    folds: int = 2,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    **train_kwargs: Any,
) -> torch.Tensor:
    """:func:`out_of_fold_probs` of ``dataset``, cached on disk beside :func:`teacher_for`'s
    teachers (``weights_only`` tensor file)."""
    path = _cache_path(cache_dir, dataset, data_seed, seed, f"_oof{folds}", train_kwargs)
    probs = _cached(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if isinstance(probs, torch.Tensor):
        return probs
    data, train_kwargs = _training_data(dataset, data_root, data_seed, train_kwargs)
    probs = out_of_fold_probs(
        data.train.flat(),
        data.train.y,
        data.val.flat(),
        data.val.y,
        num_classes=data.num_classes,
        folds=folds,
        seed=seed,
        device=device,
        show_progress=show_progress,
        **train_kwargs,
    )
    _atomic_save(probs, path)
    return probs


def cache_record(
    dataset: str,
    *,
    out_of_fold: bool = False,
    data_seed: int = 0,
    seed: int = 0,
    folds: int = 2,
    cache_dir: str | Path | None = None,
    **train_kwargs: Any,
) -> dict[str, Any] | None:
    """What a result file records of the cached teacher (or, with ``out_of_fold``, the
    out-of-fold predictions) that :func:`teacher_for` (:func:`out_of_fold_probs_for`) uses
    for these arguments: file name, SHA-256 and, for a teacher, the log saved with it
    (accuracies, epochs). ``None`` when there is no such file. Two runs whose tables differ
    because their caches held different teachers can then be told apart."""
    import hashlib

    kind = f"_oof{folds}" if out_of_fold else ""
    path = _cache_path(cache_dir, dataset, data_seed, seed, kind, train_kwargs)
    if not path.exists():
        return None
    data = path.read_bytes()  # hashed and, for a teacher, read: one read of the file
    record: dict[str, Any] = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}
    if not out_of_fold:
        blob = _cached(
            path, lambda p: torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        )
        record["log"] = blob.get("extra", {}) if isinstance(blob, dict) else None
    return record


def teacher_for(
    dataset: str,
    *,
    data_root: str | None = None,
    data_seed: int = 0,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    **train_kwargs: Any,
) -> nn.Module:
    """The trained teacher of ``dataset``: loaded from ``cache_dir`` or trained and saved there.

    ``cache_dir`` defaults to ``~/.cache/commenv/teachers``; the file name holds the dataset,
    split seed, training seed and any non-default training arguments.
    """
    path = _cache_path(cache_dir, dataset, data_seed, seed, "", train_kwargs)
    model = _cached(path, lambda p: load_teacher(p, device))
    if model is not None:
        return model
    data, train_kwargs = _training_data(dataset, data_root, data_seed, train_kwargs)
    model, log = train_teacher(
        data.train.flat(),
        data.train.y,
        data.val.flat(),
        data.val.y,
        num_classes=data.num_classes,
        seed=seed,
        device=device,
        show_progress=show_progress,
        **train_kwargs,
    )
    test_acc = float(
        (predict_probs(model, data.test.flat(), device).argmax(-1).cpu() == data.test.y)
        .float()
        .mean()
    )
    save_teacher(model, path, {**log, "test_accuracy": test_acc})
    return model


# -- difficulty and selection ------------------------------------------------------------------
def difficulty(
    teacher_probs: torch.Tensor,
    student_probs: torch.Tensor,
    measure: str = "ce",
    *,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample difficulty ``(...)`` from distributions ``(..., C)``; higher is harder.

    - ``ce``: cross-entropy of the student's distribution to the teacher's,
      ``-sum_c p_t(c) log p_s(c)``;
    - ``euclid``: Euclidean distance ``||p_t - p_s||_2``;
    - ``random``: uniform noise (random selection);
    - ``rho``: RHO-LOSS' reducible loss, the student's loss minus the teacher's on the true
      ``labels``: ``-log p_s(y) + log p_t(y)`` (the teacher stands in for the irreducible-loss
      model).
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; valid choices: {list(MEASURES)}")
    if teacher_probs.shape != student_probs.shape:
        raise ValueError(
            f"teacher and student distributions must have the same shape, got "
            f"{tuple(teacher_probs.shape)} and {tuple(student_probs.shape)}"
        )
    if measure == "ce":
        return -(teacher_probs * torch.log(student_probs.clamp(min=EPS))).sum(-1)
    if measure == "euclid":
        return (teacher_probs - student_probs).norm(dim=-1)
    if measure == "random":
        return torch.rand(
            student_probs.shape[:-1], generator=generator, device=student_probs.device
        )
    if labels is None:
        raise ValueError("measure='rho' needs the true labels (labels=...)")
    y = labels.unsqueeze(-1)
    return (
        torch.log(teacher_probs.gather(-1, y).clamp(min=EPS))
        - torch.log(student_probs.gather(-1, y).clamp(min=EPS))
    ).squeeze(-1)


def gumbel_scores(
    scores: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``scores / temperature`` plus Gumbel noise: their top-k is a sample of k items without
    replacement with probabilities ``softmax(scores / temperature)`` (Gumbel top-k)."""
    u = torch.rand(scores.shape, generator=generator, device=scores.device)
    return scores / temperature - torch.log(-torch.log(u.clamp(EPS, 1 - EPS)))


def select_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask ``(N, M)`` of the ``k`` highest scores of every row (batched top-k)."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, M), got shape {tuple(scores.shape)}")
    if not 0 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [0, {scores.shape[1]}], got {k}")
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)


# -- agents ------------------------------------------------------------------------------------
class HardnessTeacher:
    """The thesis' teacher agent for ``quiz_v0``: select the hardest samples of the stack.

    Args:
        game: the :class:`commenv.quiz.QuizGame` it plays (batch size, classes, training set).
        model: the trained teacher network; its predictions on the training set are computed
            once (eval mode, deterministic) and looked up by ``infos["stack_indices"]``.
        measure: one of :data:`MEASURES`.
        targets: ``"soft"`` (the teacher's distributions) or ``"true"`` (one-hot labels).
        seed: seed of the ``random`` measure and of sampled selections.
        selection_temperature: ``0`` selects the top-k (the thesis); ``T > 0`` samples the
            lesson without replacement with probabilities ``softmax(difficulty / T)``, which
            keeps some easy samples in every lesson (large ``T`` tends to random selection).
        train_probs: the teacher's distributions on the training set ``(n_train, C)``, used
            instead of ``model``'s own predictions; e.g. :func:`out_of_fold_probs`, so that
            ``rho`` uses a held-out irreducible-loss model as RHO-LOSS prescribes.
    """

    def __init__(
        self,
        game: Any,
        model: nn.Module | None,
        measure: str = "ce",
        targets: str = "soft",
        seed: int = 0,
        selection_temperature: float = 0.0,
        train_probs: torch.Tensor | None = None,
    ) -> None:
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; valid choices: {list(MEASURES)}")
        if targets not in TARGETS:
            raise ValueError(f"unknown targets {targets!r}; valid choices: {list(TARGETS)}")
        if not selection_temperature >= 0:  # also refuses NaN
            raise ValueError(f"selection_temperature must be >= 0, got {selection_temperature!r}")
        self.game, self.measure, self.targets = game, measure, targets
        self.selection_temperature = float(selection_temperature)
        self.batch_size = game.batch_size
        self.model = model
        if train_probs is None:
            if model is None:
                raise ValueError("HardnessTeacher needs a teacher model or train_probs")
            train_probs = predict_probs(model, game.train_x, game.device)
        elif tuple(train_probs.shape) != (len(game.train_x), game.num_classes):
            raise ValueError(
                f"train_probs must be (n_train, C) = ({len(game.train_x)}, {game.num_classes}), "
                f"got {tuple(train_probs.shape)}"
            )
        self.train_probs = train_probs.to(game.device)
        self.generator = torch.Generator(device=game.device).manual_seed(generator_seed(int(seed)))

    def act(self, obs: torch.Tensor, infos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The lesson for the stack in ``obs`` ``(N, obs_dim)``."""
        parts = self.game.unpack_teacher(obs)
        if "stack_indices" in infos:
            teacher_probs = self.train_probs[infos["stack_indices"]]
        elif self.model is None:
            raise ValueError("without infos['stack_indices'] the teacher needs its model")
        else:
            n, m, d = parts["images"].shape
            teacher_probs = predict_probs(
                self.model, parts["images"].reshape(n * m, d), self.game.device
            ).reshape(n, m, -1)
        labels = parts["labels"].argmax(-1)
        scores = difficulty(
            teacher_probs, parts["answers"], self.measure, labels=labels, generator=self.generator
        )
        if self.selection_temperature > 0:
            scores = gumbel_scores(scores, self.selection_temperature, self.generator)
        select = select_topk(scores, self.batch_size)
        targets = teacher_probs if self.targets == "soft" else parts["labels"]
        return {"select": select, "targets": targets}


class PassThroughTeacher:
    """The no-communication baseline's teacher: the whole quiz back, with the true labels.

    With ``stack_size=1`` this is plain minibatch SGD on true labels.
    """

    def __init__(self, game: Any, model: nn.Module | None = None, seed: int = 0) -> None:
        if game.stack_size != 1:
            raise ValueError(f"PassThroughTeacher needs stack_size=1, got {game.stack_size}")
        self.game = game

    def act(self, obs: torch.Tensor, infos: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = self.game.unpack_teacher(obs)
        select = torch.ones(parts["labels"].shape[:2], dtype=torch.bool, device=obs.device)
        return {"select": select, "targets": parts["labels"]}
