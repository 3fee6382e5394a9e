"""A fast, picklable stand-in for ModelScorer: search tests run real Optuna studies (and real
worker processes) on composed tiny adapters without a model. Its metrics are known functions of
the point, so the right answer is known in advance."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any


def fake_metrics(variables: dict[str, float], split: str) -> dict[str, Any]:
    lam, mu = variables.get("λ", 0.0), variables.get("μ", 0.0)
    return {
        "accuracy": 1.0 - (lam - 0.3) ** 2 - (mu + 0.2) ** 2 - (0.01 if split == "test" else 0.0),
        "f1": lam ** 2,  # with f2, a two-objective toy: its Pareto set is λ ∈ [0, 1]
        "f2": (lam - 1.0) ** 2,
        "perplexity": 10.0 * (1.0 + lam ** 2),
        "name": "fake",
    }


def fake_examples(accuracy: float, split: str, count: int):
    """``count`` classification records whose share correct is about ``accuracy``: example i is
    right when a fixed uniform draw (the same for every evaluation of ``split``) is below it, so two
    points' records pair up example by example as a real evaluator's do."""
    import numpy as np

    from adaptermath.evaluation.examples import ExampleSet

    draws = np.random.default_rng(0 if split == "val" else 1).uniform(size=count)
    records = [{"id": f"{split}-{i}", "index": i, "gold": "a", "prediction": "a" if right else "b",
                "correct": bool(right)} for i, right in enumerate(draws < accuracy)]
    return ExampleSet("classification", records, {"labels": ["a", "b"]})


@dataclass
class FakeScorer:
    """``start()`` returns attach/evaluate; each evaluation appends ``{"pid", "split", "point"}`` to
    ``log`` (before it scores), sleeps ``delay`` s, and the ``kill_at``-th evaluation in a process
    kills that process (SIGKILL: no clean-up, the trial stays RUNNING in the study). With
    ``records`` > 0 it returns, as ModelScorer does, an ``Evaluated`` with that many per-example
    records (:func:`fake_examples`), and its accuracy is theirs."""

    log: str | None = None
    delay: float = 0.0
    kill_at: int | None = None
    records: int = 0

    def start(self):
        done = {"count": 0}

        def attach(composed):
            return composed

        def evaluate(composed, split):
            done["count"] += 1
            point = {k: float(v) for k, v in composed.variables.items()}
            if self.log:
                with open(self.log, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"pid": os.getpid(), "split": split, "point": point}) + "\n")
            if self.kill_at is not None and done["count"] >= self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if self.delay:
                time.sleep(self.delay)
            metrics = fake_metrics(point, split)
            if not self.records:
                return metrics
            from adaptermath.sweep import Evaluated

            examples = fake_examples(metrics["accuracy"], split, self.records)
            metrics["accuracy"] = sum(r["correct"] for r in examples.records) / len(examples)
            return Evaluated(metrics, examples)

        return attach, evaluate

    def close(self) -> None:
        """Nothing to stop: :meth:`start` launched no server (ModelScorer's protocol)."""

    def fingerprint(self) -> dict[str, Any]:
        """What :func:`adaptermath.search.search` records of a ModelScorer (tests that stand this in for it)."""
        return {"task": "classification", "fake": True, "records": self.records, "test": None}


def run_in_child(plan, scorer, settings, fingerprint) -> None:
    """Target of a spawned process that runs (and, with ``kill_at``, dies inside) a search."""
    from adaptermath.search import run_search

    run_search(plan, scorer, settings, fingerprint=fingerprint)
