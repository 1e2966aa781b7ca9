"""commenv.evaluation against hand-computed cases."""

import math

import pytest
import torch

from commenv.evaluation import (
    average_accuracy,
    collective_accuracy,
    collective_decision,
    entropy_weights,
    evaluate,
    per_node_accuracy,
)

# Node A is certain (H = 0), node B is uniform (H = log 2).
CONFIDENT_VS_UNSURE = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])


def test_softmax_weighting_by_hand():
    # w ∝ exp(-H): exp(0) = 1 and exp(-log 2) = 1/2  ->  w = [2/3, 1/3]
    w = entropy_weights(CONFIDENT_VS_UNSURE)
    assert torch.allclose(w[:, 0], torch.tensor([2 / 3, 1 / 3], dtype=w.dtype))
    p = collective_decision(CONFIDENT_VS_UNSURE)
    # 2/3 * [1, 0] + 1/3 * [1/2, 1/2] = [5/6, 1/6]
    assert torch.allclose(p[0], torch.tensor([5 / 6, 1 / 6], dtype=p.dtype))


def test_shifted_and_mean_weighting_by_hand():
    # log C - H: log 2 - 0 and log 2 - log 2 = 0  ->  all weight on A.
    p = collective_decision(CONFIDENT_VS_UNSURE, "shifted")
    assert torch.allclose(p[0], torch.tensor([1.0, 0.0], dtype=p.dtype))
    p = collective_decision(CONFIDENT_VS_UNSURE, "mean")
    assert torch.allclose(p[0], torch.tensor([0.75, 0.25], dtype=p.dtype))
    uniform = torch.full((3, 1, 4), 0.25)
    assert torch.allclose(entropy_weights(uniform, "shifted"), torch.full((3, 1), 1 / 3).double())
    # the literal reading, w = -H / sum(-H): all weight on the unsure member B
    p = collective_decision(CONFIDENT_VS_UNSURE, "literal")
    assert torch.allclose(p[0], torch.tensor([0.5, 0.5], dtype=p.dtype))
    certain = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert torch.allclose(entropy_weights(certain, "literal"), torch.full((2, 1), 0.5).double())


def test_confident_minority_outvotes_unsure_majority():
    # Two unsure members lean to class 1, one confident member says class 0 (the truth).
    probs = torch.tensor([[[0.99, 0.01]], [[0.2, 0.8]], [[0.2, 0.8]]])
    labels = torch.tensor([0])
    assert average_accuracy(probs, labels) == pytest.approx(100 / 3)
    # The plain mean says class 1: (0.99 + 0.2 + 0.2) / 3 = 0.463 < 0.5.
    assert collective_accuracy(probs, labels, "mean") == 0.0
    h_a = -(0.99 * math.log(0.99) + 0.01 * math.log(0.01))
    h_b = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    e_a, e_b = math.exp(-h_a), math.exp(-h_b)
    expected0 = (e_a * 0.99 + 2 * e_b * 0.2) / (e_a + 2 * e_b)  # = 0.546
    assert collective_decision(probs)[0, 0].item() == pytest.approx(expected0)
    assert expected0 > 0.5
    assert collective_accuracy(probs, labels) == 100.0
    # Read literally (w = H / sum H) the unsure majority gets ~95 % of the weight: class 1.
    w = entropy_weights(probs, "literal")[:, 0]
    assert w.tolist() == pytest.approx(
        [h_a / (h_a + 2 * h_b), h_b / (h_a + 2 * h_b)] + [h_b / (h_a + 2 * h_b)]
    )
    assert evaluate(probs, labels)["collective_by_weighting"]["literal"] == 0.0


def test_per_node_average_and_evaluate():
    probs = torch.tensor(
        [
            [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]],  # A: right, right, wrong
            [[0.3, 0.7], [0.4, 0.6], [0.1, 0.9]],  # B: wrong, right, right
        ]
    )
    labels = torch.tensor([0, 1, 1])
    assert per_node_accuracy(probs, labels).tolist() == pytest.approx([200 / 3, 200 / 3])
    out = evaluate(probs, labels)
    assert out["average"] == pytest.approx(200 / 3)
    # Sample 0: H_A(0.9,0.1) < H_B(0.3,0.7) so A wins -> class 0 (right); sample 2: B is more
    # confident (0.9) -> class 1 (right); sample 1 both say 1.
    assert out["collective"] == pytest.approx(100.0)
    assert out["collective_by_weighting"]["softmax"] == out["collective"]
    assert set(out["collective_by_weighting"]) == {"softmax", "shifted", "mean", "literal"}
    logits = probs.log()
    assert evaluate(logits, labels, from_logits=True)["collective"] == pytest.approx(100.0)


def test_bad_input():
    with pytest.raises(ValueError, match="valid choices"):
        entropy_weights(CONFIDENT_VS_UNSURE, "vote")
    with pytest.raises(ValueError, match="n_members, n_samples, n_classes"):
        collective_decision(torch.ones(2, 2))
    with pytest.raises(ValueError, match="from_logits"):
        collective_decision(torch.ones(2, 1, 3))
    with pytest.raises(ValueError, match="labels must be"):
        per_node_accuracy(CONFIDENT_VS_UNSURE, torch.tensor([0, 1]))
