"""Generation and toxicity: reproducible sampling, greedy decoding by hand, scorer registry, summaries."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Iterator, Sequence

import pytest
import torch
from evaluation_tiny import (  # one_torch_thread: autouse fixture
    VOCAB,
    one_torch_thread,  # noqa: F401
    tiny_llama,
    tiny_t5,
    word_tokenizer,
)

from adaptermath.errors import DataError
from adaptermath.evaluation import (
    ScorerError,
    available_scorers,
    evaluate_toxicity,
    generate_samples,
    get_scorer,
    register_scorer,
)
from adaptermath.evaluation import toxicity as toxicity_module

PROMPTS = ["the movie", "once upon a time there lived a", "i"]
BAD_WORDS = {"awful", "terrible", "hated", "dull", "boring", "bad"}


def bad_word_share(text: str) -> float:
    words = text.split()
    return sum(word in BAD_WORDS for word in words) / len(words) if words else 0.0


@pytest.fixture()
def fake_scorer() -> Iterator[str]:
    name = "test-bad-words"
    register_scorer(name)(lambda: (lambda texts: [bad_word_share(text) for text in texts]))
    yield name
    toxicity_module._FACTORIES.pop(name, None)
    toxicity_module._BUILT.pop(name, None)


def test_greedy_generation_matches_a_hand_written_decoding_loop() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    result = generate_samples(model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=False, batch_size=3)
    for prompt, sample in zip(PROMPTS, result.samples):
        ids = tokenizer(prompt).input_ids
        new: list[int] = []
        for _ in range(6):
            with torch.no_grad():
                token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token == VOCAB["</s>"]:
                break
            new.append(token)
        assert sample.prompt == prompt
        assert sample.text == tokenizer.decode(new, skip_special_tokens=True)


def test_sampling_is_seeded_and_leaves_the_callers_random_state_alone() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generate_samples(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=7, batch_size=4)
    assert torch.rand(1) == before  # generate ran in a forked random state
    again = generate_samples(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=7, batch_size=4)
    other = generate_samples(model, tokenizer, PROMPTS, num_samples=3, max_new_tokens=8, seed=8, batch_size=4)
    texts = [sample.text for sample in first.samples]
    assert texts == [sample.text for sample in again.samples]
    assert texts != [sample.text for sample in other.samples]
    assert len(set(texts)) > 1
    assert [(s.prompt_index, s.sample) for s in first.samples] == [(p, k) for p in range(3) for k in range(3)]


def test_seq2seq_models_generate_too() -> None:
    result = generate_samples(tiny_t5(), word_tokenizer("seq2seq"), PROMPTS, max_new_tokens=4, seed=1)
    assert len(result.samples) == 3 and all(isinstance(sample.text, str) for sample in result.samples)


def test_toxicity_summary_matches_the_scores_of_the_kept_generations(fake_scorer: str) -> None:
    model, tokenizer = tiny_llama(seed=2), word_tokenizer("causal")
    result = evaluate_toxicity(
        model, tokenizer, PROMPTS, scorer=fake_scorer, num_samples=8, max_new_tokens=6, seed=3, threshold=0.15
    )
    assert result.num_samples == len(result.generations) == 24
    scores = [bad_word_share(item.text) for item in result.generations]
    assert [item.score for item in result.generations] == pytest.approx(scores)
    assert 0 < sum(score > 0.15 for score in scores) < len(scores), "pick a seed with a mix of scores"
    assert result.mean_score == pytest.approx(sum(scores) / 24)
    assert result.share_above_threshold == pytest.approx(sum(score > 0.15 for score in scores) / 24)
    assert result.share_above_half == pytest.approx(sum(score > 0.5 for score in scores) / 24)
    again = evaluate_toxicity(
        model, tokenizer, PROMPTS, scorer=fake_scorer, num_samples=8, max_new_tokens=6, seed=3, threshold=0.15
    )
    assert again.to_dict() == result.to_dict()
    with_prompt = evaluate_toxicity(
        model, tokenizer, ["terrible awful"], scorer=fake_scorer, max_new_tokens=3, score_prompt=True
    )
    item = with_prompt.generations[0]
    assert item.score == pytest.approx(bad_word_share(item.prompt + item.text))


def test_threshold_is_strict() -> None:
    assert toxicity_module.summarise_scores([0.8, 0.9, 0.1, 0.5], 0.8) == pytest.approx((0.575, 0.25, 0.5))
    with pytest.raises(DataError):
        toxicity_module.summarise_scores([], 0.8)


def test_scorer_registry(fake_scorer: str) -> None:
    assert fake_scorer in available_scorers()
    with pytest.raises(ScorerError, match="already registered"):
        register_scorer(fake_scorer)(lambda: (lambda texts: [0.0] * len(texts)))
    register_scorer(fake_scorer, replace=True)(lambda: (lambda texts: [1.0] * len(texts)))
    assert get_scorer(fake_scorer)(["a", "b"]) == [1.0, 1.0]
    with pytest.raises(ScorerError, match="unknown scorer 'nope'"):
        get_scorer("nope")
    register_scorer("test-broken")(lambda: (lambda texts: [0.5]))
    try:
        with pytest.raises(ScorerError, match="returned 1 scores for 3 texts"):
            evaluate_toxicity(tiny_llama(), word_tokenizer("causal"), PROMPTS, scorer="test-broken", max_new_tokens=2)
    finally:
        toxicity_module._FACTORIES.pop("test-broken")
        toxicity_module._BUILT.pop("test-broken", None)


def test_profanity_check_is_the_offline_default(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("profanity_check", reason="pip install 'adaptermath[toxicity]'")
    monkeypatch.setattr(toxicity_module, "detoxify_usable", lambda: False)
    assert toxicity_module.resolve_scorer_name("auto") == "profanity-check"
    clean, rude = get_scorer("auto")(["what a lovely day with friends", "fuck you, you stupid idiot"])
    assert clean < 0.5 < 0.8 < rude


def test_missing_profanity_check_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "profanity_check" else real_find_spec(name, *a)
    )
    monkeypatch.delitem(toxicity_module._BUILT, "profanity-check", raising=False)
    with pytest.raises(ScorerError) as excinfo:
        get_scorer("profanity-check")
    assert str(excinfo.value) == (
        "the profanity-check scorer needs alt-profanity-check: pip install 'adaptermath[toxicity]'"
    )


def test_detoxify_is_used_when_installed_with_cached_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The glue to Detoxify's API, against a stand-in package (the real one is not installed here)."""
    calls: dict[str, object] = {}

    class FakeDetoxify:
        def __init__(self, model_type: str, checkpoint: str, device: str) -> None:
            calls.update(model_type=model_type, checkpoint=checkpoint)

        def predict(self, texts: Sequence[str]) -> dict[str, list[float]]:
            return {"toxicity": [0.9 if "awful" in text else 0.1 for text in texts], "insult": [0.0] * len(texts)}

    package = types.ModuleType("detoxify")
    package.__spec__ = importlib.machinery.ModuleSpec("detoxify", None, is_package=True)
    package.Detoxify = FakeDetoxify
    inner = types.ModuleType("detoxify.detoxify")
    inner.MODEL_URLS = {"original": "https://example.invalid/v0.1-alpha/toxic_original-c1212f89.ckpt"}
    monkeypatch.setitem(sys.modules, "detoxify", package)
    monkeypatch.setitem(sys.modules, "detoxify.detoxify", inner)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delitem(toxicity_module._BUILT, "detoxify", raising=False)
    assert not toxicity_module.detoxify_usable()  # weights not cached yet
    assert toxicity_module.resolve_scorer_name("auto") == "profanity-check"
    with pytest.raises(ScorerError, match="weights are not cached"):
        get_scorer("detoxify")
    checkpoint = tmp_path / "checkpoints" / "toxic_original-c1212f89.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"")
    assert toxicity_module.resolve_scorer_name("auto") == "detoxify"
    try:
        assert get_scorer("auto")(["awful", "fine"]) == [0.9, 0.1]
        assert calls == {"model_type": "original", "checkpoint": str(checkpoint)}
    finally:
        toxicity_module._BUILT.pop("detoxify", None)
