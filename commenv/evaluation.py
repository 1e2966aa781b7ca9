"""Evaluating a population of classifiers: per-node, average and collective accuracy.

One place, reused by every benchmark. Inputs are the predictive distributions of the ``N``
members on the same ``S`` held-out samples, ``probs`` of shape ``(N, S, C)`` (rows sum to 1;
pass ``from_logits=True`` to give logits instead).

**Collective decision** (thesis, section 2.2.2, algorithm 3). Every member gives its
distribution ``p_i(x)``; the Shannon entropy ``H_i(x) = -sum_c p_i(c|x) log p_i(c|x)`` (nats) is
computed per member *and per sample*; the collective distribution is the weighted average
``p(x) = sum_i w_i(x) p_i(x)`` and the prediction is its arg-max. The thesis weights each member
"with its negative entropy", but a raw negative entropy is ``<= 0`` and dividing by its sum would
give the *least* confident member the largest weight, so it has to be normalised. We use, per
sample, ``weighting=``:

- ``"softmax"`` (default): ``w_i = exp(-H_i) / sum_j exp(-H_j)``, a softmax over the negative
  entropies. Weights are positive and sum to 1; a member's weight is proportional to
  ``exp(-H_i)``, the inverse of its perplexity, so a confident member (``H = 0``) counts up to
  ``C`` times as much as a uniform one (``H = log C``).
- ``"shifted"``: ``w_i = (log C - H_i) / sum_j (log C - H_j)``: the negative entropy shifted by
  its minimum ``-log C`` so it is ``>= 0`` (the information the member's answer carries); a
  uniform member gets weight 0. When every member is uniform, the weights are equal.
- ``"mean"``: ``w_i = 1 / N``, the plain average of bagging, for comparison.
- ``"literal"``: ``w_i = -H_i / sum_j -H_j = H_i / sum_j H_j``, the thesis' words taken
  literally, kept to test which reading its numbers came from: the *least* confident member
  gets the largest weight (equal weights when every member is certain).

Ties in the arg-max go to the lowest class index (``torch.argmax``).
"""

from __future__ import annotations

import math

import torch

from commenv.core import check_choice

WEIGHTINGS: tuple[str, ...] = ("softmax", "shifted", "mean", "literal")


def _as_probs(probs: torch.Tensor, from_logits: bool) -> torch.Tensor:
    probs = torch.as_tensor(probs)
    if probs.ndim != 3:
        raise ValueError(
            f"expected member distributions (n_members, n_samples, n_classes), "
            f"got shape {tuple(probs.shape)}"
        )
    probs = probs.detach().double()
    if from_logits:
        return probs.softmax(-1)
    if bool((probs < 0).any()) or not torch.allclose(
        probs.sum(-1), torch.ones((), dtype=probs.dtype), atol=1e-4
    ):
        raise ValueError(
            "probs must be distributions (non-negative, rows summing to 1); "
            "pass from_logits=True for logits"
        )
    return probs


def _check_labels(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels).long().to(probs.device)
    if labels.shape != probs.shape[1:2]:
        raise ValueError(
            f"labels must be ({probs.shape[1]},) to match probs {tuple(probs.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    return labels


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last axis (``0 log 0 = 0``)."""
    return -(probs * probs.clamp_min(1e-300).log()).sum(-1)


def entropy_weights(
    probs: torch.Tensor, weighting: str = "softmax", *, from_logits: bool = False
) -> torch.Tensor:
    """Per-sample member weights ``(N, S)`` summing to 1 over members (see module docstring)."""
    check_choice("weighting", weighting, WEIGHTINGS)
    p = _as_probs(probs, from_logits)
    n = p.shape[0]
    if weighting == "mean":
        return torch.full(p.shape[:2], 1.0 / n, dtype=p.dtype)
    h = entropy(p)
    if weighting == "softmax":
        return torch.softmax(-h, dim=0)
    if weighting == "literal":
        total = h.sum(0, keepdim=True)
        return torch.where(total > 0, h / total.clamp_min(1e-300), torch.full_like(h, 1.0 / n))
    info = (math.log(p.shape[-1]) - h).clamp_min(0.0)
    total = info.sum(0, keepdim=True)
    return torch.where(total > 0, info / total.clamp_min(1e-300), torch.full_like(info, 1.0 / n))


def collective_decision(
    probs: torch.Tensor, weighting: str = "softmax", *, from_logits: bool = False
) -> torch.Tensor:
    """The collective distribution ``(S, C)``: members weighted by negative entropy."""
    p = _as_probs(probs, from_logits)
    w = entropy_weights(p, weighting)
    return (w.unsqueeze(-1) * p).sum(0)


def per_node_accuracy(
    probs: torch.Tensor, labels: torch.Tensor, *, from_logits: bool = False
) -> torch.Tensor:
    """Accuracy (%) of each member, ``(N,)`` float64."""
    p = _as_probs(probs, from_logits)
    y = _check_labels(labels, p)
    return (p.argmax(-1) == y).double().mean(-1) * 100.0


def average_accuracy(
    probs: torch.Tensor, labels: torch.Tensor, *, from_logits: bool = False
) -> float:
    """Mean over members of their accuracy (%): the thesis' "Avg acc."."""
    return float(per_node_accuracy(probs, labels, from_logits=from_logits).mean())


def collective_accuracy(
    probs: torch.Tensor,
    labels: torch.Tensor,
    weighting: str = "softmax",
    *,
    from_logits: bool = False,
) -> float:
    """Accuracy (%) of the collective decision: the thesis' "Coll. decision"."""
    p = _as_probs(probs, from_logits)
    y = _check_labels(labels, p)
    return float((collective_decision(p, weighting).argmax(-1) == y).double().mean() * 100.0)


def evaluate(
    probs: torch.Tensor,
    labels: torch.Tensor,
    weighting: str = "softmax",
    *,
    from_logits: bool = False,
) -> dict[str, float | list[float]]:
    """``{"per_node": [...], "average": ..., "collective": ..., "collective_by_weighting":
    {weighting: ...}}`` accuracies in %; ``"collective"`` uses ``weighting``."""
    check_choice("weighting", weighting, WEIGHTINGS)
    p = _as_probs(probs, from_logits)
    per_node = per_node_accuracy(p, labels)
    by_weighting = {w: collective_accuracy(p, labels, w) for w in WEIGHTINGS}
    return {
        "per_node": per_node.tolist(),
        "average": float(per_node.mean()),
        "collective": by_weighting[weighting],
        "collective_by_weighting": by_weighting,
    }
