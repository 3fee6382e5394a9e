"""Intervals for every metric of an evaluation, and paired comparisons of two evaluations.

Works on per-example records (:class:`~adaptermath.evaluation.examples.ExampleSet`) alone, so a
results folder can be re-analysed without a model. Each task's metrics are written as functions
of per-unit feature totals (:mod:`adaptermath.evaluation.statistics`); the unit is the example
(classification), the window (perplexity) or the prompt with all its samples (toxicity).

* :func:`metric_intervals` -- per metric, the estimate with its percentile-bootstrap interval
  (accuracy also gets a Wilson interval, ``accuracy_wilson``).
* :func:`compare_examples` -- per metric, Δ = A − B with its paired-bootstrap interval and a
  p-value: McNemar's exact test for accuracy, the paired permutation (sign-flip) test otherwise.
  Different example sets or tasks raise :class:`ComparisonError`.

Classification's ``log_loss`` is the mean of the per-example cross-entropy
``logsumexp_y s_i(y) − s_i(gold_i)`` of the records' label ``scores`` (see
:mod:`adaptermath.evaluation.metrics`); records that lack ``scores`` get no log loss, and a
comparison has it only when both runs have it.

Both take ``confidence``, ``resamples`` and ``seed`` and are deterministic for a given seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AdapterMathError, DataError
from .examples import ExampleSet, load_examples
from .metrics import example_log_loss
from .statistics import (
    DEFAULT_CONFIDENCE,
    DEFAULT_PERMUTATIONS,
    DEFAULT_RESAMPLES,
    Interval,
    Statistic,
    bootstrap_interval,
    check_confidence,
    mcnemar_test,
    paired_bootstrap_interval,
    paired_permutation_test,
    ratio,
    wilson_interval,
)


class ComparisonError(AdapterMathError):
    """Two runs cannot be compared example by example (different tasks, examples or settings)."""


@dataclass(frozen=True)
class MetricDefinition:
    """A metric as g(Σ_i f_i): ``features`` maps the records to unit rows, ``statistic`` the totals
    (R, m) to values (R,); ``test`` names the paired test (``mcnemar`` or ``permutation``)."""

    name: str
    features: Callable[[ExampleSet], np.ndarray]
    statistic: Statistic
    test: str = "permutation"


def _units(examples: ExampleSet) -> tuple[list[str], np.ndarray]:
    """Unit ids (first-seen order) and each record's unit index: the prompt for samples, else the record."""
    order: dict[str, int] = {}
    index = [order.setdefault(str(record.get("cluster", record["id"])), len(order)) for record in examples.records]
    return list(order), np.asarray(index, dtype=np.int64)


def _per_unit(examples: ExampleSet, columns: np.ndarray) -> np.ndarray:
    """Sum the per-record feature columns (records × m) within each unit."""
    _, index = _units(examples)
    out = np.zeros((int(index.max()) + 1 if index.size else 0, columns.shape[1]))
    np.add.at(out, index, columns)
    return out


def _column(examples: ExampleSet, key: str) -> np.ndarray:
    return np.asarray([float(record[key]) for record in examples.records], dtype=np.float64)


def _mean_of(key: str | Callable[[dict[str, Any]], float]) -> Callable[[ExampleSet], np.ndarray]:
    def features(examples: ExampleSet) -> np.ndarray:
        values = (_column(examples, key) if isinstance(key, str)
                  else np.asarray([key(record) for record in examples.records], dtype=np.float64))
        return _per_unit(examples, np.stack([values, np.ones_like(values)], axis=1))

    return features


def _macro_f1_features(examples: ExampleSet) -> np.ndarray:
    labels = _classification_labels(examples)
    gold = np.asarray([labels.index(r["gold"]) if r["gold"] in labels else -1 for r in examples.records])
    predicted = np.asarray([labels.index(r["prediction"]) if r["prediction"] in labels else -1 for r in examples.records])
    k = np.arange(len(labels))[None, :]
    columns = np.concatenate([(gold[:, None] == k) & (predicted[:, None] == k), predicted[:, None] == k,
                              gold[:, None] == k], axis=1).astype(np.float64)
    return _per_unit(examples, columns)


def macro_f1(totals: np.ndarray) -> np.ndarray:
    """mean_c 2·TP_c / (predicted_c + gold_c), with 0 where a label is neither predicted nor gold."""
    k = totals.shape[1] // 3
    tp, predicted, gold = totals[:, :k], totals[:, k : 2 * k], totals[:, 2 * k :]
    denominator = predicted + gold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)
    return f1.mean(axis=1)


def _classification_labels(examples: ExampleSet) -> list[str]:
    return list(examples.meta.get("labels") or sorted({r["gold"] for r in examples.records}))


def _has_scores(examples: ExampleSet) -> bool:
    """Whether every record carries one score per label (what the log loss needs)."""
    count = len(_classification_labels(examples))
    return bool(examples.records) and all(
        isinstance(record.get("scores"), list) and len(record["scores"]) == count for record in examples.records)


def _log_loss_of(labels: Sequence[str]) -> Callable[[dict[str, Any]], float]:
    """A record's cross-entropy ``logsumexp_y scores(y) − scores(gold)`` (labels in ``labels`` order)."""
    def loss(record: dict[str, Any]) -> float:
        if record["gold"] not in labels:
            raise DataError(f"gold label {record['gold']!r} is not one of {', '.join(labels)}")
        return example_log_loss(record["scores"], labels.index(record["gold"]))

    return loss


def _perplexity(totals: np.ndarray) -> np.ndarray:
    return np.exp(ratio(totals))


def metric_definitions(examples: ExampleSet) -> dict[str, MetricDefinition]:
    """The metrics of the records' task, each as a function of unit totals (none for ``generate``;
    classification's ``log_loss`` only when every record has one score per label)."""
    task = examples.task
    if task == "classification":
        definitions = {
            "accuracy": MetricDefinition("accuracy", _mean_of(lambda r: float(bool(r["correct"]))), ratio, "mcnemar"),
            "macro_f1": MetricDefinition("macro_f1", _macro_f1_features, macro_f1),
        }
        if _has_scores(examples):
            definitions["log_loss"] = MetricDefinition(
                "log_loss", _mean_of(_log_loss_of(_classification_labels(examples))), ratio)
        return definitions
    if task == "perplexity":
        def nll_and_tokens(records: ExampleSet) -> np.ndarray:
            return _per_unit(records, np.stack([_column(records, "nll"), _column(records, "tokens")], axis=1))

        return {
            "perplexity": MetricDefinition("perplexity", nll_and_tokens, _perplexity),
            "mean_nll": MetricDefinition("mean_nll", nll_and_tokens, ratio),
        }
    if task == "toxicity":
        threshold = float(examples.meta.get("threshold", 0.8))
        return {
            "mean_score": MetricDefinition("mean_score", _mean_of("score"), ratio),
            "share_above_threshold": MetricDefinition(
                "share_above_threshold", _mean_of(lambda r: float(float(r["score"]) > threshold)), ratio),
            "share_above_0.5": MetricDefinition("share_above_0.5", _mean_of(lambda r: float(float(r["score"]) > 0.5)), ratio),
        }
    return {}


def metric_intervals(examples: ExampleSet, *, confidence: float = DEFAULT_CONFIDENCE,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     metrics: Sequence[str] | None = None) -> dict[str, Interval]:
    """Estimate and percentile-bootstrap interval of each metric (``metrics``: a subset by name);
    for classification also ``accuracy_wilson``, the Wilson interval of the accuracy."""
    check_confidence(confidence)
    if not examples.records:
        return {}
    out: dict[str, Interval] = {}
    for name, definition in metric_definitions(examples).items():
        if metrics is not None and name not in metrics:
            continue
        out[name] = bootstrap_interval(definition.features(examples), definition.statistic, confidence=confidence,
                                       resamples=resamples, seed=seed)
    if examples.task == "classification" and (metrics is None or "accuracy" in metrics):
        correct = sum(bool(record["correct"]) for record in examples.records)
        out["accuracy_wilson"] = wilson_interval(correct, len(examples.records), confidence=confidence)
    return out


def intervals_to_dict(intervals: Mapping[str, Interval]) -> dict[str, dict[str, Any]]:
    return {name: interval.to_dict() for name, interval in intervals.items()}


@dataclass(frozen=True)
class MetricDifference:
    """Δ = metric(A) − metric(B) on the same units, its paired interval and a two-sided p-value."""

    metric: str
    a: float
    b: float
    difference: Interval
    p_value: float
    test: str  # "mcnemar-exact" | "paired-permutation"
    details: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a, "b": self.b, "delta": self.difference.estimate,
                "low": self.difference.low, "high": self.difference.high, "confidence": self.difference.confidence,
                "p_value": self.p_value, "test": self.test, **dict(self.details)}


@dataclass(frozen=True)
class Comparison:
    """Every metric of two runs compared on the same ``num_units`` units."""

    task: str
    num_units: int
    num_examples: int
    differences: list[MetricDifference]
    seed: int
    resamples: int
    permutations: int

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "num_units": self.num_units, "num_examples": self.num_examples,
                "seed": self.seed, "resamples": self.resamples, "permutations": self.permutations,
                "metrics": [difference.to_dict() for difference in self.differences]}

    def by_metric(self) -> dict[str, MetricDifference]:
        return {difference.metric: difference for difference in self.differences}


def _aligned(a: ExampleSet, b: ExampleSet) -> ExampleSet:
    """``b``'s records in ``a``'s unit order; a one-line error unless both cover the same examples."""
    if a.task != b.task:
        raise ComparisonError(f"cannot compare a {a.task} run with a {b.task} run")
    ids_a, ids_b = a.ids, b.ids
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise ComparisonError("example ids repeat within a run; the records cannot be paired")
    if set(ids_a) != set(ids_b):
        only_a, only_b = len(set(ids_a) - set(ids_b)), len(set(ids_b) - set(ids_a))
        raise ComparisonError(f"the runs were evaluated on different examples ({only_a} only in A, {only_b} only in B)")
    if a.task == "toxicity" and a.meta.get("threshold") != b.meta.get("threshold"):
        raise ComparisonError(f"the runs use different toxicity thresholds ({a.meta.get('threshold')} and "
                              f"{b.meta.get('threshold')})")
    if a.task == "classification" and list(a.meta.get("labels") or []) != list(b.meta.get("labels") or []):
        raise ComparisonError("the runs use different label sets")
    position = {record["id"]: record for record in b.records}
    return ExampleSet(b.task, [position[identifier] for identifier in ids_a], dict(b.meta))


def compare_examples(a: ExampleSet, b: ExampleSet, *, confidence: float = DEFAULT_CONFIDENCE,
                     resamples: int = DEFAULT_RESAMPLES, permutations: int = DEFAULT_PERMUTATIONS,
                     seed: int = 0, metrics: Sequence[str] | None = None) -> Comparison:
    """Compare run A with run B on the same examples, metric by metric (see the module doc)."""
    check_confidence(confidence)
    b = _aligned(a, b)
    defined_for_b = metric_definitions(b)  # log_loss only when both runs kept their label scores
    definitions = {name: definition for name, definition in metric_definitions(a).items() if name in defined_for_b}
    if not definitions:
        raise ComparisonError(f"{a.task} runs have no metric to compare")
    differences = []
    for name, definition in definitions.items():
        if metrics is not None and name not in metrics:
            continue
        features_a, features_b = definition.features(a), definition.features(b)
        interval = paired_bootstrap_interval(features_a, features_b, definition.statistic, confidence=confidence,
                                             resamples=resamples, seed=seed)
        details: dict[str, Any] = {}
        if definition.test == "mcnemar":
            only_a, only_b, p_value = mcnemar_test([r["correct"] for r in a.records], [r["correct"] for r in b.records])
            details = {"a_only_correct": only_a, "b_only_correct": only_b}
            test = "mcnemar-exact"
        else:
            p_value = paired_permutation_test(features_a, features_b, definition.statistic, permutations=permutations,
                                              seed=seed)
            test = "paired-permutation"
        value_a = float(definition.statistic(features_a.sum(axis=0, keepdims=True))[0])
        value_b = float(definition.statistic(features_b.sum(axis=0, keepdims=True))[0])
        differences.append(MetricDifference(name, value_a, value_b, interval, p_value, test, details))
    units, _ = _units(a)
    return Comparison(a.task, len(units), len(a.records), differences, seed, resamples, permutations)


def format_interval(interval: Mapping[str, Any] | Interval, digits: int = 4) -> str:
    """``0.8300 [0.7436, 0.8935]``."""
    values = interval.to_dict() if isinstance(interval, Interval) else interval
    return f"{values['estimate']:.{digits}f} [{_number(values['low'], digits)}, {_number(values['high'], digits)}]"


def _number(value: float | None, digits: int) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def diff(run_a: str | Path, run_b: str | Path, *, confidence: float = DEFAULT_CONFIDENCE,
         resamples: int = DEFAULT_RESAMPLES, permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> Comparison:
    """``adaptermath diff RUN_A RUN_B``: load both runs' per-example records (a folder with
    ``examples.jsonl.gz``, an eval summary ``NAME.json`` or the records file) and compare them with
    :func:`compare_examples`. A missing records file or different examples: one-line error."""
    return compare_examples(load_examples(run_a), load_examples(run_b), confidence=confidence, resamples=resamples,
                            permutations=permutations, seed=seed)
