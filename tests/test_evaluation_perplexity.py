"""Perplexity against independent computations: HF's own loss, and token-by-token by hand."""

from __future__ import annotations

import math

import pytest
import torch
from evaluation_tiny import (  # one_torch_thread: autouse fixture
    WORDS,
    one_torch_thread,  # noqa: F401
    tiny_gpt2,
    tiny_llama,
    tiny_t5,
    word_tokenizer,
)

from adaptermath.errors import AdapterMathError, DataError
from adaptermath.evaluation import corpus_perplexity, evaluate_perplexity
from adaptermath.evaluation.perplexity import sliding_windows

CORPUS = " ".join(WORDS[(7 * index) % len(WORDS)] for index in range(45))  # 45 words -> BOS + 45 tokens


def token_ids() -> list[int]:
    return word_tokenizer("causal")(CORPUS).input_ids


def test_non_overlapping_windows_equal_exp_of_mean_hf_loss() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    ids = token_ids()
    assert len(ids) == 46
    # stride = window = 10: chunks [0,10) .. [40,46); HF's loss is the mean over len-1 targets each.
    total_loss, total_tokens = 0.0, 0
    for begin in range(0, len(ids), 10):
        chunk = torch.tensor([ids[begin : begin + 10]])
        with torch.no_grad():
            loss = model(chunk, labels=chunk).loss.item()
        total_loss += loss * (chunk.shape[1] - 1)
        total_tokens += chunk.shape[1] - 1
    result = corpus_perplexity(model, tokenizer, CORPUS, max_length=10, stride=10, batch_size=2)
    assert result.num_tokens == total_tokens == 46 - 5
    assert result.num_windows == 5
    assert result.mean_nll == pytest.approx(total_loss / total_tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(total_loss / total_tokens), rel=1e-5)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_strided_windows_equal_a_token_by_token_computation(build) -> None:
    model, tokenizer = build(), word_tokenizer("causal")
    ids = token_ids()
    # max_length 12, stride 5, N = 46, worked out by hand:
    #   window 0 = [0, 12) scores tokens 1..11 with context from 0;
    #   window k >= 1 = [5k, 5k + 12) scores tokens 5k + 7 .. 5k + 11, context from 5k.
    # So token t >= 12 has context start 5 * ((t - 12) // 5 + 1).
    nll = 0.0
    for t in range(1, len(ids)):
        start = 0 if t < 12 else 5 * ((t - 12) // 5 + 1)
        context = torch.tensor([ids[start : t + 1]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(context).logits[0, -2], dim=-1)
        nll -= log_probs[ids[t]].item()
    expected = nll / (len(ids) - 1)
    result = corpus_perplexity(model, tokenizer, CORPUS, max_length=12, stride=5, batch_size=3)
    assert result.num_tokens == len(ids) - 1
    assert result.num_windows == 8  # windows start at 0, 5, ..., 35 (the one at 35 reaches the end)
    assert result.mean_nll == pytest.approx(expected, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)


def test_window_layout() -> None:
    windows = sliding_windows(46, 12, 5)
    assert [(w.begin, w.end, w.first_target) for w in windows[:3]] == [(0, 12, 1), (5, 17, 12), (10, 22, 17)]
    assert windows[-1].end == 46
    assert sum(w.num_targets for w in windows) == 45
    assert sum(w.num_targets for w in sliding_windows(46, 10, 10)) == 41
    with pytest.raises(DataError):
        sliding_windows(46, 10, 11)
    with pytest.raises(DataError):
        sliding_windows(46, 1, 1)


def test_records_are_joined_and_defaults_follow_the_paper(tmp_path) -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"text": "the movie was great"}\n{"text": "i hated it"}\n', encoding="utf-8")
    result = evaluate_perplexity(model, tokenizer, path, joiner=" ")
    direct = corpus_perplexity(model, tokenizer, "the movie was great i hated it")
    assert result.perplexity == pytest.approx(direct.perplexity)
    assert (direct.max_length, direct.stride) == (128, 64)  # min(1024, model limit 128), half of it


def test_errors() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    with pytest.raises(DataError, match="longer than the model's limit of 128"):
        corpus_perplexity(model, tokenizer, CORPUS, max_length=4096)
    with pytest.raises(DataError, match="at least 2"):
        corpus_perplexity(model, tokenizer, "")
    with pytest.raises(AdapterMathError, match="needs a causal LM"):
        corpus_perplexity(tiny_t5(), word_tokenizer("seq2seq"), CORPUS)
