"""Linear-probe evaluation of learned features (thesis, sections 2.4 and 4.2.2).

A linear classifier is trained on frozen (detached) features and scored on the test split at
the checkpoint with the best validation accuracy, as the thesis does. Everything is batched
over a leading *probe* axis so that the features of several agents are probed at once, with
one classifier each:

- :class:`LinearProbe` — ``P`` independent linear classifiers trained online, one step per
  call to :meth:`LinearProbe.update`, alongside the model whose features they read;
- :class:`BestValidation` — keeps, per probe, the test accuracy at the best validation score;
- :func:`fit_linear_probe` — the offline form: fit on frozen train features, select the epoch
  by validation accuracy, return its test accuracy.

Feature tensors are ``(N, P, H)`` (``N`` samples, ``P`` probes) or ``(N, H)`` for one probe;
labels are ``(N,)`` int64 shared by every probe.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randn(300, 5, generator=g); y = (x[:, 0] > 0).long()
>>> res = fit_linear_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:],
...                        num_classes=2, epochs=10, batch_size=32, seed=0)
>>> float(res.test_acc[0]) > 0.9
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from commenv.core import torch_seeded


def _as_probe_batch(features: torch.Tensor, name: str = "features") -> torch.Tensor:
    if features.ndim == 2:
        features = features.unsqueeze(1)
    if features.ndim != 3:
        raise ValueError(f"{name} must be (N, H) or (N, P, H), got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got dtype {features.dtype}")
    return features.detach()


def _check_labels(labels: torch.Tensor, n: int, num_classes: int) -> None:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be (N,) with N={n}, got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


class LinearProbe(nn.Module):
    """``num_probes`` independent linear classifiers ``H -> num_classes`` trained with Adam.

    Args:
        num_probes: how many feature sets are probed at once (e.g. one per agent).
        in_features: feature width ``H``.
        num_classes: number of classes.
        lr: Adam learning rate.
    """

    def __init__(self, num_probes: int, in_features: int, num_classes: int, lr: float = 1e-3):
        super().__init__()
        for name, value in (("num_probes", num_probes), ("in_features", in_features)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        bound = in_features**-0.5
        self.weight = nn.Parameter(torch.empty(num_probes, in_features, num_classes))
        self.bias = nn.Parameter(torch.zeros(num_probes, num_classes))
        nn.init.uniform_(self.weight, -bound, bound)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, P, num_classes)`` of detached ``features`` ``(N, P, H)`` or ``(N, H)``."""
        x = _as_probe_batch(features)
        if x.shape[1:] != self.weight.shape[:2]:
            raise ValueError(
                f"features must be (N, {self.weight.shape[0]}, {self.weight.shape[1]}), "
                f"got {tuple(features.shape)}"
            )
        return torch.einsum("nph,phc->npc", x, self.weight) + self.bias

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy summed over probes (each probe owns its parameters)."""
        logits = self(features)
        _check_labels(labels, logits.shape[0], self.num_classes)
        target = labels[:, None].expand(logits.shape[:2])
        per_probe = nn.functional.cross_entropy(
            logits.reshape(-1, self.num_classes), target.reshape(-1), reduction="none"
        ).view(logits.shape[:2])
        return per_probe.mean(0).sum()

    def update(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """One Adam step on a batch; the features are detached, so the model is untouched."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(features, labels)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Accuracy ``(P,)`` in [0, 1] of every probe on ``features`` / ``labels``."""
        logits = self(features)
        _check_labels(labels, logits.shape[0], self.num_classes)
        return (logits.argmax(-1) == labels[:, None]).float().mean(0)


@dataclass
class BestValidation:
    """Per-probe test accuracy at the best validation accuracy seen so far.

    Also used across *stages* of a model's training (the unsupervised benchmark keeps, per
    node, the stage whose probe validates best); pass ``test_probs`` ``(P, S, C)`` to keep each
    probe's test distributions at its best checkpoint too (``probs_at_best``), e.g. for the
    collective decision of :mod:`commenv.evaluation`.
    """

    num_probes: int
    best_val: torch.Tensor = field(init=False)
    test_at_best: torch.Tensor = field(init=False)
    best_step: torch.Tensor = field(init=False)
    probs_at_best: torch.Tensor | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.best_val = torch.full((self.num_probes,), -1.0)
        self.test_at_best = torch.full((self.num_probes,), float("nan"))
        self.best_step = torch.full((self.num_probes,), -1, dtype=torch.long)

    def update(
        self,
        step: int,
        val_acc: torch.Tensor,
        test_acc: torch.Tensor,
        test_probs: torch.Tensor | None = None,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Record a checkpoint; a probe keeps the first checkpoint among ties, and a probe
        outside ``active`` ``(P,)`` bool (stopped early) keeps the one it has. Returns which
        probes improved ``(P,)`` bool."""
        val_acc, test_acc = val_acc.detach().cpu().float(), test_acc.detach().cpu().float()
        if val_acc.shape != (self.num_probes,) or test_acc.shape != (self.num_probes,):
            raise ValueError(
                f"val_acc and test_acc must be ({self.num_probes},), got "
                f"{tuple(val_acc.shape)} and {tuple(test_acc.shape)}"
            )
        better = val_acc > self.best_val
        if active is not None:
            better &= active.cpu()
        self.best_val = torch.where(better, val_acc, self.best_val)
        self.test_at_best = torch.where(better, test_acc, self.test_at_best)
        self.best_step = torch.where(better, torch.tensor(step), self.best_step)
        if test_probs is not None:
            test_probs = test_probs.detach().cpu().float()
            if self.probs_at_best is None:
                self.probs_at_best = test_probs.clone()
            else:
                self.probs_at_best = torch.where(
                    better[:, None, None], test_probs, self.probs_at_best
                )
        return better


@dataclass
class ProbeResult:
    """Result of :func:`fit_linear_probe` (accuracies in [0, 1], one entry per probe)."""

    val_acc: torch.Tensor
    test_acc: torch.Tensor
    best_epoch: torch.Tensor
    val_curve: torch.Tensor
    """``(epochs run, P)`` validation accuracy after each epoch."""
    test_probs: torch.Tensor | None = None
    """``(P, S_test, C)`` test distributions at each probe's best epoch (``keep_probs=True``)."""


def stage_steps(steps: int, stages: int) -> list[int]:
    """The training steps at which a model is probed at ``stages`` stages: evenly spaced, the
    last at ``steps``."""
    return [round(steps * (i + 1) / stages) for i in range(stages)]


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-2,
    seed: int = 0,
    patience: int | None = None,
    keep_probs: bool = False,
    standardize: bool = False,
) -> ProbeResult:
    """Fit linear probes on frozen features; report test accuracy at the best validation epoch.

    Features are ``(N, P, H)`` or ``(N, H)``; they are detached (the probed model is frozen).
    Same ``seed`` and inputs give the same result. ``patience=k``: early stopping, each probe
    on its own: a probe whose validation accuracy has not improved for ``k`` epochs keeps the
    checkpoint it has, and training ends when every probe has stopped (at most ``epochs``).
    So a probe is scored as it would be if it were trained alone, whatever the other probes
    do; each probe is scored at its own best validation epoch.
    ``keep_probs``: also return the test distributions at that epoch (``test_probs``).
    ``standardize``: z-score every feature with the train split's mean and std (per probe and
    unit; val and test with the train statistics) before fitting, as linear evaluation of
    learned representations commonly does (e.g. MAE's probe: a BatchNorm without affine before
    the classifier): a probe on raw features also measures how well their scale suits Adam at
    ``lr``, and trained features often sit at large offsets with small spread.
    """
    train_x = _as_probe_batch(train_x, "train_x")
    val_x, test_x = _as_probe_batch(val_x, "val_x"), _as_probe_batch(test_x, "test_x")
    if not val_x.shape[1:] == test_x.shape[1:] == train_x.shape[1:]:
        raise ValueError(
            "train/val/test features must share (P, H); got "
            f"{tuple(train_x.shape)}, {tuple(val_x.shape)}, {tuple(test_x.shape)}"
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience!r}")
    _check_labels(train_y, train_x.shape[0], num_classes)
    if standardize:
        mean = train_x.mean(0)
        std = train_x.std(0, unbiased=False).clamp_min(1e-6)  # a constant unit stays 0
        train_x, val_x, test_x = ((x - mean) / std for x in (train_x, val_x, test_x))
    device = train_x.device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch_seeded(int(seed)):  # built on the CPU, then moved
        probe = LinearProbe(train_x.shape[1], train_x.shape[2], num_classes, lr=lr).to(device)
    best = BestValidation(train_x.shape[1])
    curve = []
    since_better = torch.zeros(train_x.shape[1], dtype=torch.long)
    active = torch.ones(train_x.shape[1], dtype=torch.bool)  # probes still early-stopping
    for epoch in range(epochs):
        order = torch.randperm(train_x.shape[0], generator=gen).to(device)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            probe.update(train_x[idx], train_y[idx])
        val_acc = probe.accuracy(val_x, val_y)
        probs = None
        if keep_probs:
            with torch.no_grad():
                probs = probe(test_x).softmax(-1).transpose(0, 1)
        better = best.update(epoch, val_acc, probe.accuracy(test_x, test_y), probs, active)
        curve.append(val_acc.cpu())
        since_better = torch.where(better, 0, since_better + 1)
        if patience is not None:
            active &= since_better < patience
            if not bool(active.any()):
                break
    return ProbeResult(
        best.best_val, best.test_at_best, best.best_step, torch.stack(curve), best.probs_at_best
    )
