"""Sampling continuations of prompts from a live model, reproducibly.

Each prompt is repeated ``num_samples`` times (prompt-major order) and the rows are generated
``batch_size`` at a time, left-padded for causal LMs. Sampling runs inside ``torch.random.fork_rng``
seeded with ``seed``, so the same seed, batch size, model and device give the same texts and the
caller's random state is left as it was. Decoding is Hugging Face ``generate`` with explicit
settings (defaults: temperature 1, top-k 50, top-p 1 -- the paper's "HF default sampling"), so a
model's own ``generation_config`` cannot change them silently. With top-k on, the token is drawn
by :class:`~adaptermath.evaluation.sampler.TopKSampler`, which has HF's sampling distribution but
draws from the k kept tokens only (HF draws over the whole vocabulary); with top-k off HF samples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import AdapterMathError, DataError
from .batching import chunks, encode, inference, pad, special_wrapping
from .data import load_records, render_prompts
from .examples import ExampleSet, sample_records
from .engine import ServedModel
from .models import input_device, model_kind, pad_id
from .sampler import TopKSampler


@dataclass(frozen=True)
class SamplingOptions:
    """How continuations are drawn; ``do_sample=False`` is greedy decoding."""

    max_new_tokens: int = 64
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise DataError(f"max new tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise DataError(f"temperature must be positive, got {self.temperature}")
        if self.top_k < 0:
            raise DataError(f"top-k must be 0 (off) or positive, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise DataError(f"top-p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Sample:
    """One continuation: ``text`` follows ``prompt`` (the ``sample``-th draw for that prompt)."""

    prompt_index: int
    sample: int
    prompt: str
    text: str


@dataclass
class GenerationResult:
    """Every sample, in prompt-major order, and the options that drew them."""

    samples: list[Sample]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"task": "generate", "options": self.options, "samples": [asdict(sample) for sample in self.samples]}

    def example_set(self) -> ExampleSet:
        """One record per sample (prompt and text); a prompt's samples share a ``cluster``."""
        return ExampleSet("generate", sample_records(self.samples), {})


def _generate_kwargs(options: SamplingOptions, tokenizer: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens,
        "do_sample": options.do_sample,
        "pad_token_id": pad_id(tokenizer),
    }
    if options.do_sample and options.top_k > 0:
        from transformers import LogitsProcessorList

        # the sampler draws the token and hands generate a one-hot score that greedy mode picks
        sampler = TopKSampler(top_k=options.top_k, temperature=options.temperature, top_p=options.top_p)
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        kwargs["logits_processor"] = LogitsProcessorList([sampler])
    elif options.do_sample:
        kwargs.update(temperature=options.temperature, top_k=0, top_p=options.top_p)
    else:
        kwargs.update(temperature=None, top_k=None, top_p=None)
    return kwargs


def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    num_samples: int = 1,
    options: SamplingOptions | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """``num_samples`` continuations of every prompt (only the new text, special tokens removed).

    For a causal LM the continuation is what follows the prompt; for a seq2seq model it is the
    decoder's output for the prompt. ``progress`` is called with the number of samples done.
    """
    options = options or SamplingOptions()
    options.check()
    if num_samples < 1:
        raise DataError(f"number of samples must be at least 1, got {num_samples}")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    kind = model_kind(model)
    if kind == "seq-cls":
        raise AdapterMathError("generation needs a causal LM or a seq2seq model, not a classification head")
    if kind == "causal-lm":
        prefix, _ = special_wrapping(tokenizer)
        prompt_ids = [prefix + ids for ids in encode(tokenizer, prompts)]
        side = "left"
    else:
        prompt_ids = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        side = "right"
    for index, ids in enumerate(prompt_ids):
        if not ids:
            raise DataError(f"prompt {index} encodes to no tokens; generation needs at least one")
    rows = [(index, sample) for index in range(len(prompts)) for sample in range(num_samples)]
    if isinstance(model, ServedModel):  # an inference engine draws the rows (see engine.py)
        texts = model.sample(prompt_ids, rows, options, progress=progress)
        return [Sample(prompt_index=index, sample=sample, prompt=prompts[index], text=text)
                for (index, sample), text in zip(rows, texts)]
    device = input_device(model)
    generate_kwargs = _generate_kwargs(options, tokenizer)
    filler = pad_id(tokenizer)
    samples: list[Sample] = []
    cuda_devices = [device] if device.type == "cuda" else []
    with inference(model), torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(options.seed)
        for chunk in chunks(rows, batch_size):
            input_ids, attention_mask = pad([prompt_ids[index] for index, _ in chunk], filler, side)
            output = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **generate_kwargs
            )
            new_tokens = output[:, input_ids.shape[1] :] if kind == "causal-lm" else output
            texts = tokenizer.batch_decode(new_tokens.tolist(), skip_special_tokens=True)
            for (index, sample), text in zip(chunk, texts):
                samples.append(Sample(prompt_index=index, sample=sample, prompt=prompts[index], text=text))
            if progress is not None:
                progress(len(chunk))
    return samples


def generate_samples(
    model: Any,
    tokenizer: Any,
    data: str | Path | Sequence[Mapping[str, Any]] | Sequence[str],
    *,
    text_field: str = "text",
    template: str | None = None,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 1.0,
    batch_size: int = 8,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Samples for a list of prompts, for eyeballing what an adapter does.

    ``data`` is a file (one prompt per TXT line, or records whose ``text_field`` -- or the filled
    ``template`` -- is the prompt), a list of records, or a list of prompt strings.
    """
    prompts = load_prompts(data, text_field=text_field, template=template, limit=limit)
    options = SamplingOptions(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    samples = generate_continuations(
        model, tokenizer, prompts, num_samples=num_samples, options=options, batch_size=batch_size, progress=progress
    )
    return GenerationResult(samples=samples, options={**asdict(options), "num_samples": num_samples})


def load_prompts(
    data: str | Path | Sequence[Mapping[str, Any]] | Sequence[str],
    *,
    text_field: str = "text",
    template: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """Prompts from a file, records or plain strings (``template`` filled per record if given)."""
    if isinstance(data, (str, Path)):
        records = load_records(data, limit=limit)
    else:
        items = list(data)
        records = load_records([{"text": item} if isinstance(item, str) else item for item in items], limit=limit)
        if items and isinstance(items[0], str):
            text_field = "text"
    return render_prompts(records, template if template is not None else "{" + text_field + "}")
