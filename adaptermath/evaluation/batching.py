"""Token-level plumbing shared by the evaluators: special tokens, padding, batches, eval mode.

Evaluators tokenize without padding and pad each batch themselves, so the padding side is an
explicit choice (left for scoring and generating with causal LMs, right elsewhere) instead of a
tokenizer setting.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import torch

from .models import unwrap

T = TypeVar("T")
_PROBE = "hello world"


def special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (e.g. ``([bos], [])`` or ``([], [eos])``)."""
    plain = list(tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    wrapped = list(tokenizer(_PROBE, add_special_tokens=True)["input_ids"])
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return wrapped[:start], wrapped[start + len(plain) :]
    return [], []


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pad(
    sequences: Sequence[Sequence[int]], pad_id: int, side: Literal["left", "right"], fill: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence: ``(ids, attention_mask)``; ``fill`` overrides ``pad_id`` in ids."""
    width = max(len(sequence) for sequence in sequences)
    value = pad_id if fill is None else fill
    ids = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        ids[row, span] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... over the real tokens of each row (padding gets 0), for left-padded batches."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def keep_logits(
    accepted: set[str], positions: torch.Tensor, width: int, device: torch.device
) -> tuple[dict[str, Any], Callable[[torch.Tensor], torch.Tensor]]:
    """Forward kwargs that make a causal LM compute logits only at ``positions`` (contiguous,
    ascending indices into sequences of length ``width``), and a function that turns the returned
    logits into exactly those positions.

    ``logits_to_keep`` with a 1-D index tensor (transformers >= 4.50) projects only those
    positions onto the vocabulary; older ``num_logits_to_keep`` keeps a suffix; otherwise all
    logits are computed and the positions picked afterwards.
    """
    count = positions.numel()
    if "logits_to_keep" in accepted:
        return {"logits_to_keep": positions.to(device)}, lambda logits: logits
    if "num_logits_to_keep" in accepted:
        return {"num_logits_to_keep": width - int(positions[0])}, lambda logits: logits[:, :count]
    return {}, lambda logits: logits[:, positions.to(logits.device)]


def forward_parameters(model: Any) -> set[str]:
    """Names the forward of the transformers model under ``model`` accepts."""
    return set(inspect.signature(unwrap(model).forward).parameters)


@contextmanager
def inference(model: Any) -> Iterator[None]:
    """Eval mode and ``torch.inference_mode`` for the block; the training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
