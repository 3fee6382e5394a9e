"""Token-level perplexity of a corpus with a sliding window (the Hugging Face strided method).

The corpus is one token stream x_0 .. x_{N-1}. Windows of at most ``max_length`` tokens start
every ``stride`` tokens; each window scores only the tokens no earlier window scored, using all
the tokens before them in the window as context:

    window w = [b_w, e_w),  b_w = w · stride,  e_w = min(b_w + max_length, N)
    scored in w: t ∈ [max(e_{w-1}, b_w + 1), e_w)        (e_{-1} = 0)
    NLL = −(1/T) Σ_t log p(x_t | x_{b_w} .. x_{t-1}),   perplexity = exp(NLL)

T is the number of scored tokens. With ``stride == max_length`` the windows do not overlap and
the first token of each window has no context, so it is not scored (T = N − number of windows);
with a smaller stride every token after the first is scored (T = N − 1) with at least
``max_length − stride`` tokens of context (except near the start).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterMathError, DataError
from .batching import chunks, forward_parameters, inference, keep_logits, special_wrapping
from .data import load_corpus
from .examples import ExampleSet, example_id, unique_ids
from .engine import ServedModel
from .models import input_device, model_kind, unwrap

DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` go in; tokens ``[first_target, end)`` are scored."""

    begin: int
    end: int
    first_target: int

    @property
    def num_targets(self) -> int:
        return self.end - self.first_target


@dataclass
class PerplexityResult:
    """exp(mean NLL) over ``num_tokens`` scored tokens of a ``corpus_tokens``-token corpus."""

    perplexity: float
    mean_nll: float
    num_tokens: int
    corpus_tokens: int
    num_windows: int
    max_length: int
    stride: int
    windows: list[WindowScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary.pop("windows")
        return {"task": "perplexity", **summary}

    def example_set(self) -> ExampleSet:
        """One record per window: id (hash of its tokens), the window, its summed NLL and scored tokens."""
        ids = unique_ids(window.id for window in self.windows)
        records = [{"id": ids[index], "index": index, "begin": window.begin, "end": window.end, "nll": window.nll,
                    "tokens": window.tokens} for index, window in enumerate(self.windows)]
        return ExampleSet("perplexity", records, {"max_length": self.max_length, "stride": self.stride,
                                                  "corpus_tokens": self.corpus_tokens})


@dataclass(frozen=True)
class WindowScore:
    """One window's summed NLL over its ``tokens`` scored tokens; ``id`` hashes its token ids."""

    id: str
    begin: int
    end: int
    nll: float
    tokens: int


def sliding_windows(num_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The windows of the strided method (see the module doc)."""
    if max_length < 2:
        raise DataError(f"max length must be at least 2, got {max_length}")
    if not 1 <= stride <= max_length:
        raise DataError(f"stride must be between 1 and the max length {max_length}, got {stride}")
    windows = []
    previous_end = 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + max_length, num_tokens)
        first_target = max(previous_end, begin + 1)
        if first_target < end:
            windows.append(Window(begin, end, first_target))
        previous_end = end
        if end == num_tokens:
            break
    return windows


def model_max_length(model: Any) -> int | None:
    """The longest input the model's position embeddings allow (None when it does not say)."""
    config = unwrap(model).config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def corpus_perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    progress: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of ``text`` under a causal LM (see the module doc for the windows).

    ``max_length`` defaults to min(1024, the model's position limit) and ``stride`` to half of it
    (the paper's WikiText setting: window 1024, stride 512). The text is tokenized once, with the
    tokenizer's leading special tokens (e.g. BOS) and without trailing ones. Windows of equal shape
    are run ``batch_size`` at a time. ``progress`` is called with the number of windows done.
    """
    kind = model_kind(model)
    if kind != "causal-lm":
        raise AdapterMathError(f"perplexity needs a causal LM, got a {kind} model")
    limit = model.max_model_len if isinstance(model, ServedModel) else model_max_length(model)
    window = max_length if max_length is not None else min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    if limit is not None and window > limit:
        raise DataError(f"max length {window} is longer than the model's limit of {limit} positions")
    step = stride if stride is not None else max(1, window // 2)
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")

    prefix, _ = special_wrapping(tokenizer)
    tokens = prefix + list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    if len(tokens) < 2:
        raise DataError(f"the corpus has {len(tokens)} token(s); perplexity needs at least 2")
    windows = sliding_windows(len(tokens), window, step)
    if isinstance(model, ServedModel):  # the engine returns each window's summed NLL (see engine.py)
        per_window = model.window_nll(tokens, windows, progress=progress)
        return _result(tokens, windows, [
            WindowScore(example_id(tokens[item.begin : item.end]), item.begin, item.end, nll, count)
            for item, (nll, count) in zip(windows, per_window)
        ], window, step)
    stream = torch.tensor(tokens, dtype=torch.long)

    groups: dict[tuple[int, int], list[Window]] = {}
    for item in windows:
        groups.setdefault((item.end - item.begin, item.num_targets), []).append(item)
    accepted = forward_parameters(model)
    device = input_device(model)
    scored_windows: list[WindowScore] = []
    with inference(model):
        for (length, num_targets), group in groups.items():
            # Positions length-1-n .. length-2 predict the window's last n tokens (its targets).
            positions = torch.arange(length - 1 - num_targets, length - 1)
            keep_kwargs, pick = keep_logits(accepted, positions, length, device)
            for batch in chunks(group, batch_size):
                input_ids = torch.stack([stream[item.begin : item.end] for item in batch]).to(device)
                kwargs: dict[str, Any] = {"input_ids": input_ids, **keep_kwargs}
                if "use_cache" in accepted:
                    kwargs["use_cache"] = False
                logits = pick(model(**kwargs).logits)
                targets = input_ids[:, -num_targets:]
                losses = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none"
                ).reshape(targets.shape)
                for item, window_nll in zip(batch, losses.sum(dim=-1).tolist()):
                    scored_windows.append(WindowScore(
                        example_id(tokens[item.begin : item.end]), item.begin, item.end, window_nll, item.num_targets
                    ))
                if progress is not None:
                    progress(len(batch))
    return _result(tokens, windows, scored_windows, window, step)


def _result(tokens: Sequence[int], windows: Sequence[Window], scored_windows: list[WindowScore], window: int,
            step: int) -> PerplexityResult:
    scored_windows.sort(key=lambda item: item.begin)
    scored = sum(item.tokens for item in scored_windows)
    mean_nll = math.fsum(item.nll for item in scored_windows) / scored
    return PerplexityResult(
        perplexity=math.exp(mean_nll),
        mean_nll=mean_nll,
        num_tokens=scored,
        corpus_tokens=len(tokens),
        num_windows=len(windows),
        max_length=window,
        stride=step,
        windows=scored_windows,
    )


def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    data: str | Path | Sequence[Mapping[str, Any]],
    *,
    text_field: str = "text",
    joiner: str = "\n\n",
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of a corpus file or records under a live causal LM (transformers or PEFT).

    A ``.txt`` file is read verbatim; JSONL/CSV/JSON records (or a list of mappings) contribute
    their ``text_field``, joined with ``joiner`` (a blank line, as the Hugging Face guide does
    for WikiText). See :func:`corpus_perplexity` for ``max_length``, ``stride`` and batching.
    """
    text = load_corpus(data, text_field=text_field, joiner=joiner, limit=limit)
    return corpus_perplexity(
        model, tokenizer, text, max_length=max_length, stride=stride, batch_size=batch_size, progress=progress
    )
