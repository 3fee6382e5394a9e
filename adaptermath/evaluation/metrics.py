"""Classification metrics from predicted and gold labels (pure functions, no model involved).

For label c, with TP/FP/FN counted over all examples:

    precision_c = TP / (TP + FP)      recall_c = TP / (TP + FN)
    F1_c = 2 · precision_c · recall_c / (precision_c + recall_c)

A ratio whose denominator is 0 is 0 (scikit-learn's ``zero_division=0``).

    accuracy = Σ_i [pred_i = gold_i] / n          macro-F1 = mean over the labels of F1_c

The log loss (cross-entropy of the gold label under the softmax of the label scores s_i(y): the
label log-likelihoods of rank classification, the logits of a head; scikit-learn's ``log_loss``;
lower is better) is

    log_loss = (1/n) Σ_i [ logsumexp_y s_i(y) − s_i(gold_i) ]
    logsumexp_y s(y) = m + log Σ_y exp(s(y) − m),   m = max_y s(y)   (no overflow, no underflow to 0)

The confusion matrix has one row per gold label and one column per predicted label, in the order
of ``labels``: ``confusion[g][p]`` counts examples of gold label g predicted as p.

The ROC AUC of scores s against 0/1 labels is the Mann-Whitney probability that a random
positive outscores a random negative, ties counting one half:

    AUC = (Σ_{i positive} rank_i − n₊(n₊ + 1)/2) / (n₊ · n₋)      (ranks 1..n, ties get mid-ranks)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..errors import DataError


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one label, and its support (number of gold examples)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationMetrics:
    """Accuracy, macro-F1, per-label scores, the confusion matrix (rows gold, columns predicted) and,
    when the label scores were given, the log loss (None otherwise)."""

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    num_examples: int
    log_loss: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def confusion_matrix(predictions: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """``matrix[g][p]``: how many examples with gold label ``labels[g]`` were predicted ``labels[p]``."""
    if len(predictions) != len(gold):
        raise DataError(f"{len(predictions)} predictions for {len(gold)} gold labels")
    index = {label: position for position, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for predicted, true in zip(predictions, gold):
        for value in (predicted, true):
            if value not in index:
                raise DataError(f"label {value!r} is not one of {', '.join(labels)}")
        matrix[index[true]][index[predicted]] += 1
    return matrix


def example_log_loss(scores: Sequence[float], gold_index: int) -> float:
    """One example's cross-entropy, ``logsumexp_y s(y) − s(gold)`` (max subtracted first; ≥ 0).

    Infinite when the gold label's score is −inf and another label's is finite."""
    if not scores:
        raise DataError("an example has no label scores")
    if not 0 <= gold_index < len(scores):
        raise DataError(f"gold label index {gold_index} is outside the {len(scores)} label scores")
    values = [float(value) for value in scores]
    if any(math.isnan(value) for value in values):
        raise DataError("a label score is NaN")
    top = max(values)
    if math.isinf(top):
        raise DataError("every label score is -inf, or one is +inf: the softmax is undefined")
    log_sum = top + math.log(math.fsum(math.exp(value - top) for value in values))
    return log_sum - values[gold_index]


def log_loss(scores: Sequence[Sequence[float]], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Mean cross-entropy of the gold labels under the softmax of each example's label scores
    (``scores[i][k]`` is label ``labels[k]``'s score on example i; see the module doc)."""
    if len(scores) != len(gold):
        raise DataError(f"{len(scores)} score rows for {len(gold)} gold labels")
    if not gold:
        raise DataError("no examples to score")
    index = {label: position for position, label in enumerate(labels)}
    losses = []
    for row, true in zip(scores, gold):
        if true not in index:
            raise DataError(f"label {true!r} is not one of {', '.join(labels)}")
        if len(row) != len(labels):
            raise DataError(f"an example has {len(row)} label scores for {len(labels)} labels")
        losses.append(example_log_loss(row, index[true]))
    return math.fsum(losses) / len(losses)


def classification_metrics(
    predictions: Sequence[str],
    gold: Sequence[str],
    labels: Sequence[str],
    scores: Sequence[Sequence[float]] | None = None,
) -> ClassificationMetrics:
    """Accuracy, macro-F1, per-label precision/recall/F1, the confusion matrix and, with ``scores``
    (one row per example, one score per label in the order of ``labels``), the log loss (see module doc)."""
    if not gold:
        raise DataError("no examples to score")
    matrix = confusion_matrix(predictions, gold, labels)
    total = len(gold)
    per_class: dict[str, ClassScores] = {}
    for position, label in enumerate(labels):
        true_positive = matrix[position][position]
        predicted_as = sum(row[position] for row in matrix)
        support = sum(matrix[position])
        precision = _ratio(true_positive, predicted_as)
        recall = _ratio(true_positive, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassScores(precision=precision, recall=recall, f1=f1, support=support)
    correct = sum(matrix[position][position] for position in range(len(labels)))
    return ClassificationMetrics(
        labels=list(labels),
        accuracy=correct / total,
        macro_f1=sum(scores.f1 for scores in per_class.values()) / len(labels),
        per_class=per_class,
        confusion_matrix=matrix,
        num_examples=total,
        log_loss=None if scores is None else log_loss(scores, gold, labels),
    )


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels`` (Mann-Whitney, mid-ranks for ties)."""
    if len(scores) != len(labels):
        raise DataError(f"{len(scores)} scores for {len(labels)} labels")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise DataError("the ROC AUC needs both positive and negative examples")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = sum(rank for rank, label in zip(ranks, labels) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
