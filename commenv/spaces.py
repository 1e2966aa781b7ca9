"""The action spaces commenv adds to Gymnasium's: :class:`Simplex` and :class:`Selection`.

Both check *one* world's action with ``contains`` (numpy, the PettingZoo faces) and, through
:func:`check_distributions` / :meth:`Selection.check_batch`, a whole batch of worlds as torch
tensors (the batched faces), so that the two faces accept and refuse exactly the same values.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch

SUM_ATOL = 1e-3
"""Tolerance on a distribution's row sum (float32 softmax rows sum to 1 within ~1e-6)."""


class Simplex(gymnasium.spaces.Space):
    """``rows`` probability distributions over ``classes``: values in [0, 1], rows summing to 1.

    A space of its own rather than a ``Box``: generic tools assume any ``Box`` contains zeros,
    and an all-zero answer is exactly what this space rejects. Only floating-point arrays
    belong to it (an integer or bool one-hot is refused on every face alike: cast it with
    ``.astype(np.float32)``).
    """

    def __init__(self, rows: int, classes: int, seed: int | None = None) -> None:
        super().__init__((int(rows), int(classes)), np.float32, seed=seed)
        self.rows, self.classes = int(rows), int(classes)
        self.low = np.zeros(self.shape, np.float32)
        self.high = np.ones(self.shape, np.float32)

    @property
    def is_np_flattenable(self) -> bool:
        return True

    def sample(self, mask: None = None, probability: None = None) -> np.ndarray:
        """Rows drawn from a flat Dirichlet."""
        x = self.np_random.dirichlet(np.ones(self.classes), size=self.rows)
        return x.astype(np.float32)

    def contains(self, x: Any) -> bool:
        x = np.asarray(x)
        if x.shape != self.shape or not np.issubdtype(x.dtype, np.floating):
            return False
        if not (np.all(np.isfinite(x)) and np.all(x >= 0) and np.all(x <= 1)):
            return False
        return bool(np.all(np.abs(x.astype(np.float64).sum(-1) - 1.0) <= SUM_ATOL))

    def __repr__(self) -> str:
        return f"Simplex({self.rows} rows x {self.classes} classes, each row sums to 1)"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Simplex) and (self.rows, self.classes) == (
            other.rows,
            other.classes,
        )


class Selection(gymnasium.spaces.MultiBinary):
    """A bit per stacked sample with at most ``max_selected`` ones."""

    def __init__(self, n: int, max_selected: int, seed: int | None = None) -> None:
        super().__init__(int(n), seed=seed)
        self.max_selected = int(max_selected)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        """Exactly ``max_selected`` bits, uniformly at random."""
        x = np.zeros(self.n, dtype=self.dtype)
        x[self.np_random.choice(self.n, size=self.max_selected, replace=False)] = 1
        return x

    def contains(self, x: Any) -> bool:
        return super().contains(x) and int(np.asarray(x).sum()) <= self.max_selected

    def __repr__(self) -> str:
        return f"Selection({self.n} bits, at most {self.max_selected} ones)"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Selection) and (self.n, self.max_selected) == (
            other.n,
            other.max_selected,
        )


def check_distributions(head: str, x: torch.Tensor, space: gymnasium.Space) -> None:
    """Raise ``ValueError`` (starting with ``head``) unless every row of ``x`` ``(..., C)`` is a
    probability distribution: finite, in [0, 1], summing to 1 within :data:`SUM_ATOL`."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    worst = float((x.sum(-1) - 1.0).abs().max())  # float32 suffices at SUM_ATOL = 1e-3
    if lo >= 0 and hi <= 1 and worst <= SUM_ATOL:  # NaN fails every comparison
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        raise ValueError(
            f"{head}: contains NaN or inf; expected {space}, got {int((~finite).sum())} "
            "non-finite values"
        )
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{head}: values outside [0, 1]; expected {space} (probabilities, e.g. a softmax), "
            f"got min {lo:.3g}, max {hi:.3g}"
        )
    sums = x.double().sum(-1)
    where = ((sums - 1.0).abs() > SUM_ATOL).nonzero()[0].tolist()
    raise ValueError(
        f"{head}: not a distribution; expected {space} (apply softmax to logits), got row "
        f"{where[1:]} of env {where[0]} summing to {float(sums[tuple(where)]):.4g}"
    )
