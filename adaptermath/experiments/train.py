"""Train a PEM from a saved initial adapter, with a plain torch loop (AdamW, no Trainer).

:func:`train_pem` loads the base model, puts the initial adapter of
:func:`adaptermath.init_adapter.init_adapter` on it with
``PeftModel.from_pretrained(base, init, is_trainable=True)`` and minimises one of three losses:

* ``objective="lm"`` (causal LM): next-token cross-entropy on the texts. With ``packing`` (the
  default) every text is tokenised as ``prefix + text + eos`` (``prefix`` is what the tokenizer
  puts first, e.g. BOS), the streams are concatenated and cut into blocks of ``max_length``
  tokens (the tail shorter than a block is dropped); without packing each text is one row,
  truncated to ``max_length`` and right-padded, with padding ignored by the loss.
* ``objective="classification"`` with a causal LM: the row ``prefix + template(text) +
  label_prefix + label_words[label]`` is scored only on the label tokens,
  L = −Σ_j log p(v(y)_j | x, v(y)_<j). This is the format of
  :func:`adaptermath.evaluation.classification.evaluate_classification` (rank classification with
  ``label_prefix=" "``); prompts longer than ``max_length`` lose their start.
* ``objective="classification"`` with a sequence-classification model (init made with
  ``task_type="SEQ_CLS"``): the head's cross-entropy; the head is in ``modules_to_save``.

Examples are visited in epochs shuffled by ``random.Random(seed)``; ``torch.manual_seed(seed)``
fixes dropout. The learning rate warms up linearly over ``warmup_steps`` then stays
(``schedule="constant"``) or decays linearly to 0 at ``steps`` (``"linear"``); gradients are clipped
to norm ``max_grad_norm``.

The trained adapter is written atomically with ``training.json`` beside it: the options, the
SHA-256 of the data, of the initial adapter and of the base config, and the loss of every step.
Calling again with the same inputs returns the existing folder without training (``skipped``);
a folder trained differently is replaced only with ``force=True``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adaptermath.io.hash_cache import sha256_file
from adaptermath.errors import AdapterLoadError, DataError, OutputExistsError
from adaptermath.init_adapter import load_base_for_task, normalise_adapter_config, quiet_transformers
from adaptermath.io.atomic import atomic_output_dir

Objective = Literal["lm", "classification"]
Schedule = Literal["constant", "linear"]
TRAINING_RECORD = "training.json"
RECORD_FORMAT = "adaptermath.training/1"
IGNORE_INDEX = -100


@dataclass
class TrainingResult:
    """Where the adapter is, whether training was skipped (cached), and the training record."""

    output: Path
    skipped: bool
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> list[float]:
        return list(self.record.get("losses", []))


@dataclass
class Batch:
    """One training batch: model inputs, and how many real (non-padding) tokens it holds."""

    inputs: dict[str, Any]
    tokens: int


def data_fingerprint(data: Sequence[str] | Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the data as canonical JSON (texts, or rows with every field)."""
    canonical = json.dumps(list(data), ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _texts(data: Sequence[str] | Sequence[Mapping[str, Any]]) -> list[str]:
    texts = []
    for index, item in enumerate(data):
        text = item if isinstance(item, str) else item.get("text") if isinstance(item, Mapping) else None
        if not isinstance(text, str):
            raise DataError(f"example {index} has no text; give strings or rows with a 'text' field")
        texts.append(text)
    return texts


def _rows(data: Sequence[str] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for index, item in enumerate(data):
        if not isinstance(item, Mapping) or "text" not in item or "label" not in item:
            raise DataError(f"example {index} needs 'text' and 'label' fields for classification")
    return list(data)  # type: ignore[arg-type]


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def _right_pad(rows: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, label) in enumerate(zip(rows, labels)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, : len(row)] = 1
        targets[i, : len(label)] = torch.tensor(label, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": targets}


def _causal_batch(chosen: list[tuple[list[int], list[int]]], *, pad_id: int) -> Batch:
    """Right-padded ``(input_ids, labels)`` pairs; padding is masked out and ignored by the loss."""
    inputs = _right_pad([ids for ids, _ in chosen], [labels for _, labels in chosen], pad_id)
    return Batch(inputs, int(inputs["attention_mask"].sum()))


def _head_batch(chosen: list[Mapping[str, Any]], *, tokenizer: Any, max_length: int) -> Batch:
    """Tokenised texts (with the tokenizer's special tokens) and integer labels for a classification head."""
    import torch

    encoded = tokenizer(
        [str(row["text"]) for row in chosen], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    inputs = dict(encoded)
    inputs["labels"] = torch.tensor([int(row["label"]) for row in chosen], dtype=torch.long)
    return Batch(inputs, int(encoded["attention_mask"].sum()))


def _head_rows(data: Sequence[str] | Sequence[Mapping[str, Any]], num_labels: int) -> list[Mapping[str, Any]]:
    rows = _rows(data)
    for row in rows:
        if not isinstance(row["label"], int) or not 0 <= row["label"] < num_labels:
            raise DataError(f"label {row['label']!r} is outside the head's {num_labels} classes")
    return rows


def lm_examples(tokenizer: Any, texts: Sequence[str], *, max_length: int, packing: bool = True) -> list[list[int]]:
    """Token rows for the LM objective: packed blocks of ``max_length`` tokens, or one row per text."""
    from adaptermath.evaluation.batching import encode, special_wrapping

    prefix, _ = special_wrapping(tokenizer)
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    encoded = [prefix + ids + eos for ids in encode(tokenizer, texts) if ids]
    if not packing:
        return [ids[:max_length] for ids in encoded if len(ids) >= 2]
    stream = [token for ids in encoded for token in ids]
    blocks = [stream[start : start + max_length] for start in range(0, len(stream) - max_length + 1, max_length)]
    if not blocks:
        raise DataError(f"the texts hold {len(stream)} tokens, fewer than one block of {max_length}; lower max_length")
    return blocks


def classification_examples(
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    template: str,
    label_words: Sequence[str],
    label_prefix: str = " ",
    max_length: int,
) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` for verbalised classification with a causal LM (loss on label tokens only).

    The label tokens are those :func:`adaptermath.evaluation.classification.label_token_ids` gives
    (a label tokenised as it follows text), so training and rank-classification evaluation agree.
    """
    from adaptermath.evaluation.batching import encode, special_wrapping
    from adaptermath.evaluation.classification import label_token_ids

    prefix, _ = special_wrapping(tokenizer)
    label_ids = label_token_ids(tokenizer, list(label_words), label_prefix)  # exactly as the evaluator scores them
    try:
        prompts = [template.format_map(dict(row)) for row in rows]
    except (KeyError, IndexError, ValueError) as exc:
        raise DataError(f"template {template!r} does not fit the rows: {exc}") from None
    examples = []
    for row, ids in zip(rows, encode(tokenizer, prompts)):
        label = row["label"]
        if not isinstance(label, int) or not 0 <= label < len(label_words):
            raise DataError(f"label {label!r} has no word; label_words has {len(label_words)} entries")
        target = label_ids[label]
        keep = max_length - len(target) - len(prefix)
        if keep < 1:
            raise DataError(f"max length {max_length} leaves no room for a prompt before a {len(target)}-token label")
        prompt = prefix + ids[-keep:]
        examples.append((prompt + target, [IGNORE_INDEX] * len(prompt) + target))
    return examples


def _epochs(count: int, rng: random.Random) -> Iterator[int]:
    while True:
        order = list(range(count))
        rng.shuffle(order)
        yield from order


def _batches(
    examples: Sequence[Any], make: Callable[[list[Any]], Batch], batch_size: int, seed: int
) -> Iterator[Batch]:
    indices = _epochs(len(examples), random.Random(seed))
    while True:
        yield make([examples[next(indices)] for _ in range(batch_size)])


def _learning_rate_factor(step: int, *, steps: int, warmup_steps: int, schedule: Schedule) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "linear":
        return max(0.0, (steps - step) / max(1, steps - warmup_steps))
    return 1.0


def _read_init(init_adapter_dir: Path) -> tuple[dict[str, Any], Path]:
    config_path = init_adapter_dir / "adapter_config.json"
    weights = init_adapter_dir / "adapter_model.safetensors"
    if not config_path.exists() or not weights.exists():
        raise AdapterLoadError(f"{init_adapter_dir} is not a PEFT adapter folder (adapter_config.json, adapter_model.safetensors)")
    return json.loads(config_path.read_text()), weights


def _head_labels(weights: Path) -> int | None:
    """Classes of a saved classification head (``modules_to_save``), from its weight's first dimension."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():
            if name.endswith((".classifier.weight", ".score.weight", ".classifier.out_proj.weight")):
                return int(handle.get_slice(name).get_shape()[0])
    return None


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def train_pem(
    base_model_dir: str | os.PathLike[str],
    init_adapter_dir: str | os.PathLike[str],
    data: Sequence[str] | Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike[str],
    *,
    objective: Objective = "lm",
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 8,
    max_length: int = 64,
    seed: int = 0,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    schedule: Schedule = "constant",
    max_grad_norm: float | None = 1.0,
    packing: bool = True,
    template: str = "{text}",
    label_words: Sequence[str] = ("negative", "positive"),
    label_prefix: str = " ",
    bf16: bool = False,
    device: str = "cpu",
    num_threads: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    force: bool = False,
) -> TrainingResult:
    """Train the adapter in ``init_adapter_dir`` on ``data`` and write it to ``output_dir``.

    ``data`` is a list of texts (or rows with ``text``) for ``objective="lm"``, rows with ``text``
    and an integer ``label`` for ``"classification"``. ``steps`` optimiser steps of ``batch_size``
    examples of at most ``max_length`` tokens each. ``bf16`` runs forward and backward under
    ``torch.autocast(dtype=bfloat16)`` (the adapter stays float32; about 1.6x faster for SmolLM2 on
    a CPU with AVX512-BF16). ``device`` is where the model trains (``cpu``, ``cuda``, ...).
    ``num_threads`` sets ``torch.set_num_threads`` for the run. ``progress(step, loss)`` is called after every step. See the module doc for the
    losses, the schedule and the cache rule; returns a :class:`TrainingResult`.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    base_model_dir, init_dir, output = Path(base_model_dir), Path(init_adapter_dir), Path(output_dir)
    if objective not in ("lm", "classification"):
        raise DataError(f"objective must be 'lm' or 'classification', got {objective!r}")
    if schedule not in ("constant", "linear"):
        raise DataError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if steps < 1 or batch_size < 1 or max_length < 2:
        raise DataError("steps and batch_size must be at least 1 and max_length at least 2")
    if not data:
        raise DataError("no training data")
    adapter_config, init_weights = _read_init(init_dir)
    task_type = adapter_config.get("task_type")
    head = task_type == "SEQ_CLS"
    if objective == "lm" and task_type not in ("CAUSAL_LM", None):
        raise DataError(f"the LM objective needs a causal-LM adapter, but the init has task type {task_type}")
    if head and objective != "classification":
        raise DataError("a SEQ_CLS adapter trains with objective='classification'")

    base_config = base_model_dir / "config.json"
    key = {
        "objective": objective,
        "base_model": str(base_model_dir),
        "base_config_sha256": sha256_file(base_config) if base_config.exists() else None,
        "init_adapter_sha256": sha256_file(init_weights),
        "data_sha256": data_fingerprint(data),
        "examples": len(data),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "weight_decay": weight_decay,
        "warmup_steps": warmup_steps,
        "schedule": schedule,
        "max_grad_norm": max_grad_norm,
        "bf16": bf16,
        "packing": packing if objective == "lm" else None,
        "template": template if objective == "classification" and not head else None,
        "label_words": list(label_words) if objective == "classification" and not head else None,
        "label_prefix": label_prefix if objective == "classification" and not head else None,
    }
    record_path = output / TRAINING_RECORD
    if output.exists():
        if record_path.exists() and (output / "adapter_model.safetensors").exists():
            previous = json.loads(record_path.read_text())
            if previous.get("format") == RECORD_FORMAT and previous.get("key") == key:
                return TrainingResult(output=output, skipped=True, record=previous)
        if not force:
            raise OutputExistsError(f"{output} exists and was not trained with these inputs; pass force=True to retrain")

    threads_before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
        num_labels = (_head_labels(init_weights) or 2) if head else 2
        make: Callable[[list[Any]], Batch]
        examples: list[Any]
        if head:
            examples = _head_rows(data, num_labels)
            make = functools.partial(_head_batch, tokenizer=tokenizer, max_length=max_length)
        else:
            if objective == "lm":
                blocks = lm_examples(tokenizer, _texts(data), max_length=max_length, packing=packing)
                examples = [(block, block) for block in blocks]
            else:
                examples = classification_examples(
                    tokenizer, _rows(data), template=template, label_words=label_words,
                    label_prefix=label_prefix, max_length=max_length,
                )  # fmt: skip
            make = functools.partial(_causal_batch, pad_id=_pad_id(tokenizer))

        torch.manual_seed(seed)
        model = load_base_for_task(base_model_dir, task_type or "CAUSAL_LM", num_labels=num_labels)
        with quiet_transformers():
            model = PeftModel.from_pretrained(model, str(init_dir), is_trainable=True)
        try:
            target = torch.device(device)
            model.to(target)
        except (RuntimeError, AssertionError) as exc:
            raise DataError(f"cannot train on device {device!r}: {str(exc).splitlines()[0]}") from None

        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: _learning_rate_factor(step, steps=steps, warmup_steps=warmup_steps, schedule=schedule)
        )
        batches = _batches(examples, make, batch_size, seed)
        model.train()
        losses: list[float] = []
        tokens = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        for step in range(steps):
            batch = next(batches)
            inputs = {name: value.to(target) for name, value in batch.inputs.items()}
            with torch.autocast(device_type=target.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(**inputs).loss
            if not torch.isfinite(loss):
                raise DataError(f"the loss became {loss.item()} at step {step + 1}; lower the learning rate")
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.item()))
            tokens += batch.tokens
            if progress is not None:
                progress(step + 1, losses[-1])
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        model.eval()

        window = max(1, min(10, steps // 4))
        record = {
            "format": RECORD_FORMAT,
            "key": key,
            "init_adapter": str(init_dir),
            "examples_used": len(examples),
            "trainable_parameters": sum(parameter.numel() for parameter in trainable),
            "loss_first": sum(losses[:window]) / window,
            "loss_last": sum(losses[-window:]) / window,
            "losses": losses,
            "tokens": tokens,
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu_seconds, 3),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else math.inf,
            "threads": torch.get_num_threads(),
            "device": str(target),
            "versions": _versions(),
        }
        with atomic_output_dir(output, force=True) as staging:
            with quiet_transformers():
                model.save_pretrained(str(staging))
            normalise_adapter_config(staging)
            (staging / TRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    finally:
        torch.set_num_threads(threads_before)
    return TrainingResult(output=output, skipped=False, record=record)
