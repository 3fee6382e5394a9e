"""Classification: rank classification for language models, argmax of the head for encoders.

Rank classification (causal LMs and seq2seq models). Each label ``y`` has a verbalisation ``v(y)``
(its name, after ``label_prefix``); the prompt ``x`` is the template filled with the record. The
score of a label is the log-likelihood of its tokens after the prompt,

    s(y) = Σ_j log p(v(y)_j | x, v(y)_<j)          (divided by |v(y)| with length_normalize)

and the prediction is ``argmax_y s(y)``; the log loss is the cross-entropy of the gold label under
``softmax_y s(y)`` (see :mod:`.metrics`). Every label is scored exactly, token by token: for a
causal LM the rows ``prompt + label`` are run left-padded (so all label tokens end the row) and
only the ``max |v(y)|`` positions that predict label tokens are projected onto the vocabulary;
when every label is a single token, one forward pass per prompt scores all labels from the
next-token distribution. Labels are tokenized as they appear after text (see
:func:`label_token_ids`). For a seq2seq model the prompt goes to the encoder and the label is the
decoder target (with the tokenizer's end token).

Encoder classifiers (``*ForSequenceClassification``, e.g. a LoRA with ``modules_to_save`` on the
head): the prediction is ``argmax`` of the head's logits, and the scores are those logits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..errors import DataError
from .batching import (
    chunks,
    encode,
    forward_parameters,
    inference,
    keep_logits,
    pad,
    position_ids,
    special_wrapping,
)
from .examples import ExampleSet, example_id, unique_ids
from .data import Record, gold_labels, load_records, parse_labels, render_prompts
from .metrics import ClassificationMetrics, classification_metrics
from .models import input_device, model_kind, pad_id, unwrap

Method = Literal["auto", "rank", "head"]
Progress = Callable[[int], None]


@dataclass
class ClassificationResult:
    """Metrics, and per example the prediction, the gold label and every label's score."""

    method: str
    labels: list[str]
    metrics: ClassificationMetrics
    predictions: list[str]
    gold: list[str]
    scores: list[list[float]]
    options: dict[str, Any] = field(default_factory=dict)
    example_ids: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy

    @property
    def macro_f1(self) -> float:
        return self.metrics.macro_f1

    @property
    def log_loss(self) -> float | None:
        """(1/n) Σ_i [logsumexp_y scores_i(y) − scores_i(gold_i)]; None only for metrics built without scores."""
        return self.metrics.log_loss

    def to_dict(self) -> dict[str, Any]:
        metrics = self.metrics.to_dict()
        return {
            "task": "classification",
            "method": self.method,
            "labels": self.labels,
            "num_examples": metrics.pop("num_examples"),
            "accuracy": metrics.pop("accuracy"),
            "macro_f1": metrics.pop("macro_f1"),
            "log_loss": metrics.pop("log_loss"),
            "per_class": metrics.pop("per_class"),
            "confusion_matrix": metrics.pop("confusion_matrix"),
            "options": self.options,
            "predictions": self.predictions,
            "gold": self.gold,
            "scores": self.scores,
        }

    def example_set(self) -> ExampleSet:
        """One record per example: id, gold label, prediction, whether it is right, every label's score."""
        ids = self.example_ids or unique_ids(example_id(str(index)) for index in range(len(self.gold)))
        records = [
            {"id": ids[index], "index": index, "gold": gold, "prediction": predicted, "correct": gold == predicted,
             "scores": scores}
            for index, (gold, predicted, scores) in enumerate(zip(self.gold, self.predictions, self.scores))
        ]
        return ExampleSet("classification", records, {"labels": list(self.labels), "method": self.method})


@dataclass
class RankBatch:
    """One forward pass of rank classification with a causal LM.

    ``rows[r] = (example, first_label)``: row r scores labels ``first_label ..`` of that example --
    one label per row, or all labels at once (``single_token``: the row is the prompt alone and
    ``targets`` holds every label's single token).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: list[tuple[int, int]]
    targets: list[list[int]]
    single_token: bool


_CONTEXT_PROBE = "."


def label_token_ids(tokenizer: Any, labels: Sequence[str], prefix: str) -> list[list[int]]:
    """The token ids of each ``prefix + label`` as they appear *after* some text.

    Encoding ``" positive"`` alone is wrong for tokenizers that add a word-start marker to every
    text (SentencePiece's dummy prefix gives ``["▁", "▁positive"]``); so each label is encoded
    after a short context (``"."``) and the context's tokens are dropped. When the context does not
    tokenize as a prefix (the label merged into it), the label is encoded alone.
    """
    context = encode(tokenizer, [_CONTEXT_PROBE])[0]
    result = []
    for label, alone, after in zip(
        labels,
        encode(tokenizer, [prefix + label for label in labels]),
        encode(tokenizer, [_CONTEXT_PROBE + prefix + label for label in labels]),
    ):
        tokens = after[len(context) :] if after[: len(context)] == context and len(after) > len(context) else alone
        if not tokens:
            raise DataError(f"label {label!r} encodes to no tokens")
        result.append(tokens)
    return result


def build_rank_batches(
    tokenizer: Any,
    prompts: Sequence[str],
    label_tokens: Sequence[Sequence[int]],
    *,
    batch_size: int,
    max_length: int | None = None,
) -> list[RankBatch]:
    """The left-padded batches rank classification runs (rows sorted by length to limit padding).

    ``label_tokens[k]`` are the ids of label k's verbalisation. A prompt longer than
    ``max_length`` minus the longest label is cut from the left (its start is dropped).
    """
    prefix, _ = special_wrapping(tokenizer)
    longest_label = max(len(tokens) for tokens in label_tokens)
    prompt_ids = [prefix + ids for ids in encode(tokenizer, prompts)]
    for example, ids in enumerate(prompt_ids):
        if not ids:
            raise DataError(f"the prompt of record {example} encodes to no tokens; a label needs a context to follow")
    if max_length is not None:
        keep = max_length - longest_label
        if keep <= len(prefix):
            raise DataError(f"max length {max_length} leaves no room for a prompt before a {longest_label}-token label")
        prompt_ids = [ids if len(ids) <= keep else prefix + ids[len(ids) - keep + len(prefix) :] for ids in prompt_ids]
    single_token = longest_label == 1
    rows: list[tuple[list[int], tuple[int, int], list[int]]] = []
    for example, ids in enumerate(prompt_ids):
        if single_token:
            rows.append((ids, (example, 0), [tokens[0] for tokens in label_tokens]))
        else:
            for label, tokens in enumerate(label_tokens):
                rows.append((ids + list(tokens), (example, label), list(tokens)))
    rows.sort(key=lambda row: len(row[0]))
    filler = pad_id(tokenizer)
    batches = []
    for chunk in chunks(rows, batch_size):
        input_ids, attention_mask = pad([row[0] for row in chunk], filler, "left")
        batches.append(
            RankBatch(
                input_ids=input_ids,
                attention_mask=attention_mask,
                rows=[row[1] for row in chunk],
                targets=[row[2] for row in chunk],
                single_token=single_token,
            )
        )
    return batches


def label_positions(batch: RankBatch, longest_label: int) -> torch.Tensor:
    """Positions whose logits rank classification needs: the last one when every label is a single
    token, else the ``longest_label`` positions before the last (rows end with their label)."""
    width = batch.input_ids.shape[1]
    if batch.single_token:
        return torch.tensor([width - 1])
    return torch.arange(width - 1 - longest_label, width - 1)


def rank_forward_kwargs(
    model: Any, batch: RankBatch, longest_label: int
) -> tuple[dict[str, Any], Callable[[torch.Tensor], torch.Tensor]]:
    """Forward kwargs for one rank batch (on the model's device), and the function that maps the
    returned logits to those at :func:`label_positions`."""
    device = input_device(model)
    accepted = forward_parameters(model)
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": batch.attention_mask.to(device),
    }
    if "position_ids" in accepted:
        kwargs["position_ids"] = position_ids(batch.attention_mask).to(device)
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    keep_kwargs, pick = keep_logits(accepted, label_positions(batch, longest_label), batch.input_ids.shape[1], device)
    return {**kwargs, **keep_kwargs}, pick


def _score_causal(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    label_tokens: Sequence[Sequence[int]],
    *,
    batch_size: int,
    length_normalize: bool,
    max_length: int | None,
    progress: Progress | None,
) -> list[list[float]]:
    scores = [[0.0] * len(label_tokens) for _ in prompts]
    longest = max(len(tokens) for tokens in label_tokens)
    for batch in build_rank_batches(tokenizer, prompts, label_tokens, batch_size=batch_size, max_length=max_length):
        kwargs, pick = rank_forward_kwargs(model, batch, longest)
        log_probs = torch.log_softmax(pick(model(**kwargs).logits).float(), dim=-1)
        for row, ((example, label), targets) in enumerate(zip(batch.rows, batch.targets)):
            if batch.single_token:
                values = log_probs[row, -1, targets].tolist()
                for position, value in enumerate(values):
                    scores[example][position] = value
                continue
            length = len(targets)
            # The row ends with its label; the last `length` kept positions predict its tokens.
            window = log_probs[row, longest - length :, :]
            target = torch.tensor(targets, device=window.device).unsqueeze(-1)
            total = window.gather(-1, target).sum().item()
            scores[example][label] = total / length if length_normalize else total
        if progress is not None:
            done = len(batch.rows) if batch.single_token else len(batch.rows) / len(label_tokens)
            progress(done)
    return scores


def _score_seq2seq(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    label_texts: Sequence[str],
    *,
    batch_size: int,
    length_normalize: bool,
    max_length: int | None,
    progress: Progress | None,
) -> list[list[float]]:
    encoder_ids = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    if max_length is not None:
        encoder_ids = [ids[:max_length] for ids in encoder_ids]
    label_ids = [list(ids) for ids in tokenizer(list(label_texts), add_special_tokens=True)["input_ids"]]
    rows = [(example, label) for example in range(len(prompts)) for label in range(len(label_texts))]
    rows.sort(key=lambda row: len(encoder_ids[row[0]]))
    device = input_device(model)
    filler = pad_id(tokenizer)
    scores = [[0.0] * len(label_texts) for _ in prompts]
    for chunk in chunks(rows, batch_size):
        input_ids, attention_mask = pad([encoder_ids[example] for example, _ in chunk], filler, "right")
        labels, label_mask = pad([label_ids[label] for _, label in chunk], filler, "right", fill=-100)
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device)
        ).logits
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_scores = log_probs.gather(-1, labels.clamp(min=0).to(device).unsqueeze(-1)).squeeze(-1)
        token_scores = token_scores * label_mask.to(device)
        totals = token_scores.sum(dim=-1).tolist()
        for (example, label), total in zip(chunk, totals):
            length = len(label_ids[label])
            scores[example][label] = total / length if length_normalize else total
        if progress is not None:
            progress(len(chunk) / len(label_texts))
    return scores


def _score_head(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    progress: Progress | None,
) -> list[list[float]]:
    encoded = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    if max_length is not None:
        encoded = [ids[:max_length] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda example: len(encoded[example]))
    device = input_device(model)
    filler = pad_id(tokenizer)
    scores: list[list[float]] = [[] for _ in prompts]
    for chunk in chunks(order, batch_size):
        input_ids, attention_mask = pad([encoded[example] for example in chunk], filler, "right")
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        for example, row in zip(chunk, logits.float().tolist()):
            scores[example] = row
        if progress is not None:
            progress(len(chunk))
    return scores


def head_labels(model: Any) -> list[str]:
    """The label names of a classification head, in output order (from ``config.id2label``)."""
    config = unwrap(model).config
    id2label = {int(index): str(name) for index, name in (getattr(config, "id2label", None) or {}).items()}
    return [id2label.get(index, f"LABEL_{index}") for index in range(config.num_labels)]


def evaluate_classification(
    model: Any,
    tokenizer: Any,
    data: str | Path | Sequence[Mapping[str, Any]],
    *,
    labels: str | Sequence[str] | None = None,
    template: str | None = None,
    text_field: str = "text",
    label_field: str = "label",
    label_prefix: str | None = None,
    length_normalize: bool = False,
    method: Method = "auto",
    batch_size: int = 16,
    max_length: int | None = None,
    progress: Progress | None = None,
) -> ClassificationResult:
    """Score a live model (transformers or PEFT) on labelled data; see the module doc for the method.

    ``labels`` are the label names (``"negative,positive"``), which are also their verbalisations;
    ``template`` (default ``"{text_field}"``) builds the prompt from a record. ``label_prefix`` is
    put before each label (default ``" "`` for causal LMs, ``""`` otherwise). ``method`` is
    ``rank``, ``head`` or ``auto`` (``head`` for ``*ForSequenceClassification`` models, where
    ``labels`` defaults to ``config.id2label``). ``batch_size`` counts sequences per forward pass.
    ``progress`` is called with the number of examples finished after each batch.
    """
    kind = model_kind(model)
    chosen = ("head" if kind == "seq-cls" else "rank") if method == "auto" else method
    if chosen not in ("rank", "head"):
        raise DataError(f"unknown classification method {method!r}; use auto, rank or head")
    if chosen == "head" and kind != "seq-cls":
        raise DataError("method 'head' needs a model with a classification head (AutoModelForSequenceClassification)")
    if chosen == "rank" and kind == "seq-cls":
        raise DataError("rank classification needs a causal LM or a seq2seq model, not a classification head")
    if labels is None:
        if chosen != "head":
            raise DataError("rank classification needs the label verbalisations, e.g. --labels negative,positive")
        names = head_labels(model)
    else:
        names = parse_labels(labels)
    if chosen == "head" and len(names) != unwrap(model).config.num_labels:
        raise DataError(f"{len(names)} labels given but the head has {unwrap(model).config.num_labels} outputs")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")

    records: list[Record] = load_records(data) if isinstance(data, (str, Path)) else load_records(list(data))
    prompts = render_prompts(records, template if template is not None else "{" + text_field + "}")
    gold = gold_labels(records, label_field, names)
    prefix = label_prefix if label_prefix is not None else (" " if kind == "causal-lm" else "")

    with inference(model):
        if chosen == "head":
            scores = _score_head(model, tokenizer, prompts, batch_size=batch_size, max_length=max_length, progress=progress)
        elif kind == "seq2seq":
            scores = _score_seq2seq(
                model,
                tokenizer,
                prompts,
                [prefix + name for name in names],
                batch_size=batch_size,
                length_normalize=length_normalize,
                max_length=max_length,
                progress=progress,
            )
        else:
            label_tokens = label_token_ids(tokenizer, names, prefix)
            scores = _score_causal(
                model,
                tokenizer,
                prompts,
                label_tokens,
                batch_size=batch_size,
                length_normalize=length_normalize,
                max_length=max_length,
                progress=progress,
            )
    predictions = [names[max(range(len(names)), key=row.__getitem__)] for row in scores]
    return ClassificationResult(
        method=f"{chosen}-{kind}" if chosen == "rank" else "head",
        labels=names,
        metrics=classification_metrics(predictions, gold, names, scores),
        predictions=predictions,
        gold=gold,
        scores=scores,
        options={
            "template": template if template is not None else "{" + text_field + "}",
            "label_prefix": prefix,
            "length_normalize": length_normalize,
            "max_length": max_length,
        },
        example_ids=unique_ids(
            example_id({key: value for key, value in record.items() if key != label_field}) for record in records
        ),
    )
