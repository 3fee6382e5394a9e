"""Classification metrics against hand computation (and scikit-learn when it is installed)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptermath.errors import DataError
from adaptermath.evaluation.metrics import classification_metrics, confusion_matrix, example_log_loss, log_loss

LABELS = ["neg", "neu", "pos"]


def test_metrics_match_hand_computation() -> None:
    gold = ["neg", "neg", "neg", "neu", "neu", "pos", "pos", "pos", "pos", "pos"]
    pred = ["neg", "neg", "pos", "neu", "neg", "pos", "pos", "neu", "pos", "pos"]
    metrics = classification_metrics(pred, gold, LABELS)
    # Confusion (rows gold neg/neu/pos, columns predicted neg/neu/pos), counted by hand.
    assert metrics.confusion_matrix == [[2, 0, 1], [1, 1, 0], [0, 1, 4]]
    assert metrics.accuracy == pytest.approx(7 / 10)
    # neg: TP 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    # neu: TP 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    # pos: TP 4, predicted 5, support 5 -> P 4/5, R 4/5, F1 4/5
    assert metrics.per_class["neg"].precision == pytest.approx(2 / 3)
    assert metrics.per_class["neu"].recall == pytest.approx(1 / 2)
    assert metrics.per_class["pos"].f1 == pytest.approx(4 / 5)
    assert metrics.per_class["pos"].support == 5
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)


def test_label_never_predicted_scores_zero_not_nan() -> None:
    metrics = classification_metrics(["a", "a", "a"], ["a", "b", "a"], ["a", "b"])
    assert metrics.per_class["b"].precision == 0.0
    assert metrics.per_class["b"].f1 == 0.0
    # a: P 2/3, R 1 -> F1 0.8; macro = 0.4
    assert metrics.macro_f1 == pytest.approx(0.4)


def test_bad_inputs_are_one_line_data_errors() -> None:
    with pytest.raises(DataError, match="2 predictions for 1 gold"):
        confusion_matrix(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(DataError, match="'c' is not one of a, b"):
        classification_metrics(["c"], ["a"], ["a", "b"])
    with pytest.raises(DataError):
        classification_metrics([], [], ["a", "b"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.sampled_from(LABELS)), min_size=1, max_size=30))
def test_metrics_agree_with_scikit_learn(pairs: list[tuple[str, str]]) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="pip install scikit-learn (or: pip install 'adaptermath[toxicity]')")
    gold = [g for g, _ in pairs]
    pred = [p for _, p in pairs]
    ours = classification_metrics(pred, gold, LABELS)
    assert ours.accuracy == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
    assert ours.macro_f1 == pytest.approx(
        sklearn_metrics.f1_score(gold, pred, labels=LABELS, average="macro", zero_division=0)
    )
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        gold, pred, labels=LABELS, zero_division=0
    )
    for index, label in enumerate(LABELS):
        assert ours.per_class[label].precision == pytest.approx(precision[index])
        assert ours.per_class[label].recall == pytest.approx(recall[index])
        assert ours.per_class[label].f1 == pytest.approx(f1[index])
        assert ours.per_class[label].support == support[index]
    assert ours.confusion_matrix == sklearn_metrics.confusion_matrix(gold, pred, labels=LABELS).tolist()


def test_log_loss_matches_a_hand_calculation() -> None:
    # Example 1: scores [-1, -3], gold a: log(e^-1 + e^-3) + 1 = log(1 + e^-2).
    # Example 2: scores [0, 0], gold b: log(2).
    metrics = classification_metrics(["a", "a"], ["a", "b"], ["a", "b"], scores=[[-1.0, -3.0], [0.0, 0.0]])
    assert metrics.log_loss == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2)
    assert metrics.log_loss == pytest.approx(0.410037596)
    assert metrics.to_dict()["log_loss"] == metrics.log_loss
    assert classification_metrics(["a"], ["a"], ["a", "b"]).log_loss is None  # no scores given
    assert example_log_loss([2.0, 2.0, 2.0], 1) == pytest.approx(math.log(3))


def test_log_loss_is_stable_for_large_scores() -> None:
    # exp(1000) overflows and exp(-1000) underflows to 0 in float64: subtracting the max avoids both.
    assert log_loss([[1000.0, -1000.0]], ["b"], ["a", "b"]) == pytest.approx(2000.0)
    assert log_loss([[-1000.0, -1000.0]], ["a"], ["a", "b"]) == pytest.approx(math.log(2))
    assert log_loss([[-1000.0, -1001.0]], ["a"], ["a", "b"]) == pytest.approx(math.log(1 + math.exp(-1)))
    assert math.isinf(log_loss([[0.0, -math.inf]], ["b"], ["a", "b"]))


def test_log_loss_bad_inputs_are_one_line_data_errors() -> None:
    with pytest.raises(DataError, match="1 label scores for 2 labels"):
        log_loss([[0.0]], ["a"], ["a", "b"])
    with pytest.raises(DataError, match="2 score rows for 1 gold"):
        log_loss([[0.0, 1.0], [0.0, 1.0]], ["a"], ["a", "b"])
    with pytest.raises(DataError, match="'c' is not one of a, b"):
        log_loss([[0.0, 1.0]], ["c"], ["a", "b"])
    with pytest.raises(DataError, match="NaN"):
        log_loss([[0.0, math.nan]], ["a"], ["a", "b"])
    with pytest.raises(DataError, match="softmax is undefined"):
        log_loss([[-math.inf, -math.inf]], ["a"], ["a", "b"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.lists(st.floats(-50, 50), min_size=3, max_size=3)),
                min_size=1, max_size=20))
def test_log_loss_agrees_with_scikit_learn(rows: list[tuple[str, list[float]]]) -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="pip install scikit-learn (or: pip install 'adaptermath[toxicity]')")
    gold = [label for label, _ in rows]
    scores = [row for _, row in rows]
    probabilities = []
    for row in scores:
        weights = [math.exp(value - max(row)) for value in row]
        probabilities.append([weight / sum(weights) for weight in weights])
    expected = sklearn_metrics.log_loss(gold, probabilities, labels=LABELS)
    # scikit-learn clips probabilities at float64 eps, so very wrong examples are capped there.
    if all(min(p) > 1e-12 for p in probabilities):
        assert log_loss(scores, gold, LABELS) == pytest.approx(expected, rel=1e-6, abs=1e-9)
