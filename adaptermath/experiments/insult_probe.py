"""A second, independent toxicity scorer built offline: all-MiniLM-L6-v2 embeddings + logistic regression.

For a text x, the embedding is the mean of MiniLM's last hidden states over x's tokens, scaled to
unit length (the sentence-transformers recipe of the model)::

    e(x) = h̄(x) / ‖h̄(x)‖,   h̄(x) = Σ_t m_t h_t(x) / Σ_t m_t

and the score is a logistic regression fitted on the labelled Kaggle insults training split
(scikit-learn, L2 penalty with strength ``1/C``)::

    score(x) = σ(w·e(x) + b)  ∈ (0, 1)

The fitted ``w`` and ``b`` are stored as JSON (no pickle) and the scorer is registered with
:func:`adaptermath.evaluation.toxicity.register_scorer` under :data:`SCORER_NAME`, so every
toxicity evaluator can use it. It shares no features with profanity-check (a linear SVM over
words): one reads word counts, the other a contextual embedding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCORER_NAME = "minilm-insults"
FORMAT = "adaptermath.insult_probe/1"


@dataclass(frozen=True)
class InsultProbe:
    """The fitted logistic regression on unit-length MiniLM embeddings."""

    weights: np.ndarray
    bias: float
    max_length: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "weights": [float(w) for w in self.weights], "bias": self.bias,
                "max_length": self.max_length, "batch_size": self.batch_size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InsultProbe":
        return cls(np.asarray(data["weights"], dtype=np.float64), float(data["bias"]), int(data["max_length"]),
                   int(data["batch_size"]))

    def score(self, texts: Sequence[str]) -> list[float]:
        """σ(w·e(x) + b) for each text."""
        if not texts:
            return []
        logits = embed(texts, max_length=self.max_length, batch_size=self.batch_size) @ self.weights + self.bias
        return [float(v) for v in 1.0 / (1.0 + np.exp(-logits))]


_ENCODER: dict[str, Any] = {}


def _encoder() -> tuple[Any, Any]:
    if "model" not in _ENCODER:
        from transformers import AutoModel, AutoTokenizer

        from adaptermath.experiments.assets import minilm_model_dir

        folder = minilm_model_dir()
        _ENCODER["tokenizer"] = AutoTokenizer.from_pretrained(folder)
        _ENCODER["model"] = AutoModel.from_pretrained(folder).eval()
    return _ENCODER["model"], _ENCODER["tokenizer"]


def embed(texts: Sequence[str], *, max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """Unit-length mean-pooled MiniLM embeddings, one row per text (an empty text embeds as a space)."""
    import torch

    model, tokenizer = _encoder()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [text if text.strip() else " " for text in texts[start : start + batch_size]]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).double().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 384))


def fit_probe(rows: Sequence[Mapping[str, Any]], *, c: float = 1.0, max_length: int = 128,
              batch_size: int = 64) -> InsultProbe:
    """Fit the logistic regression on rows with ``text`` and a 0/1 ``label``."""
    from sklearn.linear_model import LogisticRegression

    features = embed([row["text"] for row in rows], max_length=max_length, batch_size=batch_size)
    labels = np.asarray([int(row["label"]) for row in rows])
    model = LogisticRegression(C=c, max_iter=2000).fit(features, labels)
    return InsultProbe(model.coef_[0].astype(np.float64), float(model.intercept_[0]), max_length, batch_size)


def load_or_fit(path: Path, rows: Sequence[Mapping[str, Any]], **options: Any) -> InsultProbe:
    """The probe stored at ``path`` (JSON), or one fitted on ``rows`` and stored there."""
    if path.is_file():
        return InsultProbe.from_dict(json.loads(path.read_text(encoding="utf-8")))
    probe = fit_probe(rows, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(probe.to_dict()) + "\n", encoding="utf-8")
    staging.replace(path)
    return probe


def register(probe: InsultProbe) -> str:
    """Register ``probe`` as the toxicity scorer :data:`SCORER_NAME` (replacing an earlier one)."""
    from adaptermath.evaluation.toxicity import register_scorer

    register_scorer(SCORER_NAME, replace=True)(lambda: probe.score)
    return SCORER_NAME
