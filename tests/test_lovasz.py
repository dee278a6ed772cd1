"""The Lovász-softmax loss (Berman et al. 2018) against its definition: the Lovász extension of the
Jaccard loss, evaluated here independently as a Choquet integral in exact rational arithmetic."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score

from fp_bounds import U64, gamma
from relviz.errors import RelvizError
from relviz.losses import lovasz_softmax


def jaccard_loss(mistakes: set, foreground: set) -> Fraction:
    """Δ(M) = |M| / |F ∪ M|, the Jaccard loss of the mispredicted set M (0 for M empty)."""
    return Fraction(len(mistakes), len(foreground | mistakes)) if mistakes else Fraction(0)


def lovasz_reference(probs: np.ndarray, labels: np.ndarray, ignore: int | None) -> Fraction:
    """Mean over the classes present in the kept labels of the Lovász extension of Δ_c at the errors
    m = |1[y = c] - p_c|, as the Choquet integral ∫_0^1 Δ_c({i : m_i >= t}) dt: a sum over the
    distinct error levels, exact (every float64 is a rational). Shares nothing with the sort-and-
    increments form of the implementation, and is blind to the order of ties."""
    rows = [i for i in range(len(labels)) if ignore is None or labels[i] != ignore]
    per_class = []
    for c in sorted({int(labels[i]) for i in rows}):
        fg = {i for i in rows if labels[i] == c}
        m = {i: abs(Fraction(int(i in fg)) - Fraction(float(probs[i, c]))) for i in rows}
        levels = sorted(set(m.values()) | {Fraction(0)}, reverse=True)
        per_class.append(sum((high - low) * jaccard_loss({i for i in rows if m[i] >= high}, fg)
                             for high, low in zip(levels, levels[1:])))
    return sum(per_class) / len(per_class)


def implementation_bound(n: int, k: int) -> float:
    """Float64 error of lovasz_softmax against the exact value, n kept rows and k present classes.
    Per class: each error |fg - p| is one rounding; each prefix Jaccard loss 1 - a/b two (a, b exact
    counts), so each increment is within 5u, each product with an error (<= 1) within 7u; the n
    products' sum adds gamma(n) times their total, itself <= 1 + 7nu because the increments are
    >= 0 (Δ grows with M) and sum to Δ(all) <= 1. The mean over k classes adds gamma(k) + u."""
    per_class = 7 * n * U64 + gamma(n) * (1 + 7 * n * U64)
    return per_class + gamma(k) * (1 + per_class) + U64


def as_float(x: torch.Tensor) -> Fraction:
    return Fraction(float(x))


@pytest.mark.parametrize("n, seed", [(1, 0), (2, 1), (3, 2), (5, 3), (8, 4), (13, 5)])
def test_equals_the_lovasz_extension_of_the_jaccard_loss(n, seed):
    rng = np.random.default_rng(seed)
    n_classes = 4
    # probabilities on a grid of quarters and eighths: ties among the errors are common
    probs = rng.integers(0, 8, size=(n, n_classes)).astype(np.float64) + 1.0
    probs /= probs.sum(1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n)
    labels[0] = 1  # at least one kept row
    got = lovasz_softmax(torch.from_numpy(probs), torch.from_numpy(labels), ignore=0)
    expected = lovasz_reference(probs, labels, ignore=0)
    kept = labels != 0
    k = len(set(labels[kept].tolist()))
    assert abs(as_float(got) - expected) <= implementation_bound(int(kept.sum()), k)
    # without ignore, label 0 is a class like the others
    got_all = lovasz_softmax(torch.from_numpy(probs), torch.from_numpy(labels), ignore=None)
    assert abs(as_float(got_all) - lovasz_reference(probs, labels, None)) <= implementation_bound(
        n, len(set(labels.tolist())))


def test_a_hand_computed_case():
    # dyadic probabilities, so every step below is exact in binary floating point.
    # Row 3 is ignored (label 0); classes 1 and 2 are present, class 0's column is not averaged.
    probs = torch.tensor([[0.0, 0.75, 0.25], [0.0, 0.375, 0.625], [0.5, 0.25, 0.25]], dtype=torch.float64)
    labels = torch.tensor([1, 2, 0])
    # class 1: errors 0.25 (row 1, foreground) and 0.375 (row 2, background); sorted: row 2, row 1;
    #   Δ({2}) = 1 / |{1, 2}| = 1/2, Δ({2, 1}) = 2/2 = 1: 0.375 * 1/2 + 0.25 * (1 - 1/2) = 5/16
    # class 2: errors 0.25 (row 1, background) and 0.375 (row 2, foreground); sorted: row 2, row 1;
    #   Δ({2}) = 1 / |{2}| = 1, Δ({2, 1}) = 2/2 = 1: 0.375 * 1 + 0.25 * 0 = 3/8
    expected = (Fraction(5, 16) + Fraction(3, 8)) / 2
    assert lovasz_reference(probs.numpy(), labels.numpy(), 0) == expected
    assert as_float(lovasz_softmax(probs, labels, ignore=0)) == expected  # exact: dyadic throughout


def test_hard_predictions_give_one_minus_the_mean_jaccard_index():
    # one-hot probabilities make every error 0 or 1: the extension is Δ of the mistake set, 1 - IoU_c
    rng = np.random.default_rng(7)
    labels = rng.integers(1, 5, size=40)
    predicted = np.where(rng.random(40) < 0.6, labels, rng.integers(1, 5, size=40))
    probs = np.eye(5)[predicted]
    present = sorted(set(labels.tolist()))
    iou = jaccard_score(labels, predicted, labels=present, average="macro")
    got = float(lovasz_softmax(torch.from_numpy(probs), torch.from_numpy(labels), ignore=0))
    # both sides: k <= 4 quotients of exact counts, summed and divided by k
    assert abs(got - (1 - iou)) <= implementation_bound(40, len(present)) + 2 * (gamma(4) + U64)


def test_perfect_predictions_cost_nothing_and_ignored_rows_do_not_count():
    labels = torch.tensor([1, 2, 2, 3, 0, 0])
    probs = torch.nn.functional.one_hot(labels, 4).double()
    probs[4:] = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)  # wrong, but ignored
    assert float(lovasz_softmax(probs, labels, ignore=0)) == 0.0
    assert float(lovasz_softmax(probs, labels, ignore=None)) > 0.0


def test_every_row_ignored_gives_zero_with_a_zero_gradient():
    probs = torch.full((3, 4), 0.25, dtype=torch.float64, requires_grad=True)
    loss = lovasz_softmax(probs, torch.zeros(3, dtype=torch.long), ignore=0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(probs.grad, torch.zeros_like(probs))


@pytest.mark.parametrize("probs, labels, match", [
    (torch.ones(3), torch.zeros(3, dtype=torch.long), "probs"),
    (torch.ones(3, 2), torch.zeros(2, dtype=torch.long), "labels"),
    (torch.ones(3, 2), torch.zeros(3), "integers"),
    (torch.ones(3, 2), torch.tensor([1, 2, 1]), "labels must lie in"),
])
def test_bad_input_is_refused(probs, labels, match):
    with pytest.raises(RelvizError, match=match):
        lovasz_softmax(probs, labels, ignore=0)
