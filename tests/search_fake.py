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


@dataclass
class FakeScorer:
    """``start()`` returns attach/evaluate; each evaluation appends ``{"pid", "split", "point"}`` to
    ``log`` (before it scores), sleeps ``delay`` s, and the ``kill_at``-th evaluation in a process
    kills that process (SIGKILL: no clean-up, the trial stays RUNNING in the study)."""

    log: str | None = None
    delay: float = 0.0
    kill_at: int | None = None

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
            return fake_metrics(point, split)

        return attach, evaluate


def run_in_child(plan, scorer, settings, fingerprint) -> None:
    """Target of a spawned process that runs (and, with ``kill_at``, dies inside) a search."""
    from adaptermath.search import run_search

    run_search(plan, scorer, settings, fingerprint=fingerprint)
