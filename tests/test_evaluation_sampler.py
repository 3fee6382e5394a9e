"""TopKSampler: the same next-token distribution as Hugging Face's warpers, drawn from k tokens."""

from __future__ import annotations

import pytest
import torch
from evaluation_tiny import one_torch_thread, tiny_llama, word_tokenizer  # noqa: F401
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from adaptermath.evaluation import generate_samples
from adaptermath.evaluation.sampler import TopKSampler

SETTINGS = [(50, 1.0, 1.0), (20, 0.7, 0.9), (5, 1.5, 0.5), (1, 1.0, 1.0), (2000, 1.0, 0.95)]


def hf_distribution(logits: torch.Tensor, top_k: int, temperature: float, top_p: float) -> torch.Tensor:
    """Softmax after HF's temperature, top-k and top-p warpers, in the order ``generate`` applies them."""
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


def sampler_distribution(logits: torch.Tensor, sampler: TopKSampler) -> torch.Tensor:
    probs, token_ids = sampler.probabilities(logits)
    return torch.zeros_like(logits).scatter_(-1, token_ids, probs)


@pytest.mark.parametrize(("top_k", "temperature", "top_p"), SETTINGS)
def test_distribution_equals_hugging_faces_warpers(top_k: int, temperature: float, top_p: float) -> None:
    logits = torch.randn(6, 1000, generator=torch.Generator().manual_seed(top_k)) * 3
    sampler = TopKSampler(top_k=top_k, temperature=temperature, top_p=top_p)
    torch.testing.assert_close(
        sampler_distribution(logits, sampler), hf_distribution(logits, top_k, temperature, top_p), atol=1e-6, rtol=0
    )


def test_draws_follow_the_distribution_and_stay_in_its_support() -> None:
    logits = torch.randn(1, 30, generator=torch.Generator().manual_seed(3)) * 2
    sampler = TopKSampler(top_k=8, temperature=0.8, top_p=0.9)
    expected = hf_distribution(logits, 8, 0.8, 0.9)[0]
    torch.manual_seed(0)
    scores = sampler(None, logits.expand(40_000, 30).contiguous())
    assert torch.all((scores == 0).sum(dim=-1) == 1)
    assert torch.all(torch.isneginf(scores).sum(dim=-1) == 29)
    drawn = scores.argmax(dim=-1)
    frequencies = torch.bincount(drawn, minlength=30).float() / drawn.numel()
    assert torch.all(frequencies[expected == 0] == 0)
    # 40,000 draws: the standard error of a frequency is at most 0.0025
    assert (frequencies - expected).abs().max() < 0.01


def test_top_k_one_sampling_is_greedy_decoding_end_to_end() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    prompts = ["the movie", "once upon a time there lived a", "i"]
    greedy = generate_samples(model, tokenizer, prompts, max_new_tokens=6, do_sample=False, batch_size=2)
    sampled = generate_samples(model, tokenizer, prompts, max_new_tokens=6, top_k=1, seed=5, batch_size=2)
    assert [s.text for s in sampled.samples] == [s.text for s in greedy.samples]


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"top_k": 0}, {"top_k": 5, "temperature": 0.0}, {"top_k": 5, "top_p": 0.0}):
        with pytest.raises(ValueError):
            TopKSampler(**kwargs)
