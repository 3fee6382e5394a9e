"""Classification evaluators against scores the tests compute themselves from raw logits.

The independent computation runs every (prompt, label) pair alone -- no padding, no batching,
full logits -- and sums the label tokens' log-probabilities by hand.
"""

from __future__ import annotations

import pytest
import torch
from evaluation_tiny import (  # one_torch_thread: autouse fixture
    WORDS,
    one_torch_thread,  # noqa: F401
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_t5,
    word_tokenizer,
)

from adaptermath.errors import AdapterMathError, DataError
from adaptermath.evaluation import evaluate_classification

TEXTS = [
    "the movie was great",
    "i hated it",
    "boring plot and dull acting",
    "fun story , i loved it",
    "ok",
    "the book was not really good",
    "wonderful film , great acting and a fun plot",
    "awful",
    "i liked the queen",
    "so so boring",
]
GOLD = ["positive", "negative", "negative", "positive", "neutral", "negative", "positive", "negative", "positive", "neutral"]
RECORDS = [{"text": text, "label": label} for text, label in zip(TEXTS, GOLD)]
TEMPLATE = "review : {text} sentiment :"


def causal_label_score(model, tokenizer, prompt: str, label: str) -> float:
    """Σ log p(label tokens | prompt), from one unpadded forward pass."""
    prompt_ids = tokenizer(prompt).input_ids  # with the tokenizer's own BOS
    label_ids = tokenizer(" " + label, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + label_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0], dim=-1)
    return sum(log_probs[len(prompt_ids) - 1 + j, token].item() for j, token in enumerate(label_ids))


def assert_close(actual: list[list[float]], expected: list[list[float]]) -> None:
    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), atol=1e-4, rtol=0)


def expected_predictions(scores: list[list[float]], labels: list[str]) -> list[str]:
    return [labels[max(range(len(labels)), key=row.__getitem__)] for row in scores]


def hand_accuracy(predictions: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predictions, gold)) / len(gold)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama-rope", "gpt2-absolute-positions"])
@pytest.mark.parametrize(
    "labels",
    [["negative", "positive", "neutral"], ["not good", "very good", "so so"]],
    ids=["single-token", "multi-token"],
)
def test_rank_classification_equals_scores_from_raw_logits(build, labels: list[str]) -> None:
    model = build(seed=3)  # a seed whose random model predicts more than one label
    tokenizer = word_tokenizer("causal")
    label_of = dict(zip(["negative", "positive", "neutral"], labels))
    records = [{"text": r["text"], "label": label_of[r["label"]]} for r in RECORDS]
    result = evaluate_classification(model, tokenizer, records, labels=labels, template=TEMPLATE, batch_size=4)

    prompts = [TEMPLATE.format(text=text) for text in TEXTS]
    expected = [[causal_label_score(model, tokenizer, prompt, label) for label in labels] for prompt in prompts]
    assert_close(result.scores, expected)
    predictions = expected_predictions(expected, labels)
    assert len(set(predictions)) > 1, "the random model should not predict one label for everything"
    assert result.predictions == predictions
    gold = [label_of[g] for g in GOLD]
    assert result.gold == gold
    assert result.accuracy == pytest.approx(hand_accuracy(predictions, gold))


def test_batch_size_and_length_normalisation() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    labels = ["bad", "very good", "not really ok"]  # 1, 2 and 3 tokens
    records = [{"text": r["text"], "label": "bad"} for r in RECORDS]
    one = evaluate_classification(model, tokenizer, records, labels=labels, template=TEMPLATE, batch_size=1)
    many = evaluate_classification(model, tokenizer, records, labels=labels, template=TEMPLATE, batch_size=7)
    assert_close(many.scores, one.scores)
    normalised = evaluate_classification(
        model, tokenizer, records, labels=labels, template=TEMPLATE, length_normalize=True
    )
    lengths = [1, 2, 3]
    assert_close(normalised.scores, [[score / length for score, length in zip(row, lengths)] for row in one.scores])


def test_seq2seq_rank_classification_scores_the_label_as_decoder_target() -> None:
    model, tokenizer = tiny_t5(seed=1), word_tokenizer("seq2seq")
    labels = ["negative", "positive", "very good"]
    records = [{"text": r["text"], "label": "negative"} for r in RECORDS]
    result = evaluate_classification(model, tokenizer, records, labels=labels, batch_size=5)
    expected = []
    for text in TEXTS:
        row = []
        encoder = torch.tensor([tokenizer(text).input_ids])  # text </s>
        for label in labels:
            target = torch.tensor([tokenizer(label).input_ids])  # label </s>
            with torch.no_grad():
                logits = model(input_ids=encoder, labels=target).logits[0]
            log_probs = torch.log_softmax(logits, dim=-1)
            row.append(sum(log_probs[j, token].item() for j, token in enumerate(target[0].tolist())))
        expected.append(row)
    assert result.method == "rank-seq2seq"
    assert_close(result.scores, expected)
    predictions = expected_predictions(expected, labels)
    assert len(set(predictions)) > 1
    assert result.predictions == predictions


def test_encoder_head_argmax() -> None:
    model, tokenizer = tiny_bert(num_labels=3, seed=1), word_tokenizer("encoder")
    labels = ["negative", "positive", "neutral"]
    result = evaluate_classification(model, tokenizer, RECORDS, labels=labels, batch_size=3)
    expected = []
    for text in TEXTS:
        with torch.no_grad():
            expected.append(model(torch.tensor([tokenizer(text).input_ids])).logits[0].tolist())
    assert result.method == "head"
    assert_close(result.scores, expected)
    predictions = expected_predictions(expected, labels)
    assert len(set(predictions)) > 1
    assert result.predictions == predictions
    assert result.accuracy == pytest.approx(hand_accuracy(predictions, GOLD))
    # Without --labels the head's own names are used (config.id2label).
    model.config.id2label = {0: "negative", 1: "positive", 2: "neutral"}
    assert evaluate_classification(model, tokenizer, RECORDS).predictions == predictions


def test_to_dict_holds_every_metric() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    result = evaluate_classification(model, tokenizer, RECORDS, labels="negative,positive,neutral", template=TEMPLATE)
    data = result.to_dict()
    assert set(data) >= {"accuracy", "macro_f1", "log_loss", "per_class", "confusion_matrix", "predictions", "gold",
                         "scores"}
    assert sum(map(sum, data["confusion_matrix"])) == len(RECORDS)
    assert data["num_examples"] == len(RECORDS)
    # log loss: the mean over examples of -log softmax(scores)[gold], here by torch's log_softmax
    labels = ["negative", "positive", "neutral"]
    scores = torch.tensor(data["scores"], dtype=torch.float64)
    gold = torch.tensor([labels.index(label) for label in data["gold"]])
    expected = -torch.log_softmax(scores, dim=-1).gather(1, gold[:, None]).mean().item()
    assert data["log_loss"] == pytest.approx(expected) and result.log_loss == data["log_loss"]


def test_misuse_is_a_one_line_error() -> None:
    model, tokenizer = tiny_llama(), word_tokenizer("causal")
    with pytest.raises(DataError, match="needs the label verbalisations"):
        evaluate_classification(model, tokenizer, RECORDS, template=TEMPLATE)
    with pytest.raises(DataError, match="unknown label 'neutral'"):
        evaluate_classification(model, tokenizer, RECORDS, labels="negative,positive", template=TEMPLATE)
    with pytest.raises(DataError, match="no label field 'gold'"):
        evaluate_classification(model, tokenizer, RECORDS, labels="negative,positive,neutral", label_field="gold")
    with pytest.raises(DataError, match="needs a model with a classification head"):
        evaluate_classification(model, tokenizer, RECORDS, labels="negative,positive,neutral", method="head")
    with pytest.raises(DataError, match="2 labels given but the head has 3"):
        evaluate_classification(tiny_bert(3), word_tokenizer("encoder"), RECORDS, labels="a,b")
    with pytest.raises(AdapterMathError):
        evaluate_classification(model, tokenizer, [], labels="a,b")


def test_logit_selection_paths_agree() -> None:
    """The three ways of asking for a few positions' logits give the same numbers."""
    from adaptermath.evaluation.batching import keep_logits

    model = tiny_llama()
    ids = torch.tensor([[1, 6, 8, 11, 13, 20, 21, 30]])
    positions = torch.arange(3, 7)
    with torch.no_grad():
        full = model(ids).logits
        for accepted in ({"logits_to_keep"}, {"num_logits_to_keep"}, set()):
            kwargs, pick = keep_logits(accepted, positions, ids.shape[1], torch.device("cpu"))
            if "num_logits_to_keep" in kwargs:  # older transformers' name for an int logits_to_keep
                kwargs = {"logits_to_keep": kwargs["num_logits_to_keep"]}
            torch.testing.assert_close(pick(model(ids, **kwargs).logits), full[:, 3:7])


def sentencepiece_like_tokenizer():
    """Like Llama's: '▁' is prepended to every text, so ' positive' alone is ['▁', '▁positive']."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = ["[PAD]", "<s>", "</s>", "[UNK]", "▁", "▁."] + ["▁" + word for word in WORDS]
    vocab = {token: index for index, token in enumerate(tokens)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="</s>", unk_token="[UNK]")


def test_labels_are_tokenized_as_they_follow_a_prompt() -> None:
    from adaptermath.evaluation.classification import label_token_ids

    tokenizer = sentencepiece_like_tokenizer()
    vocab = tokenizer.get_vocab()
    assert tokenizer(" positive", add_special_tokens=False).input_ids == [vocab["▁"], vocab["▁positive"]]
    assert label_token_ids(tokenizer, ["positive", "very good"], " ") == [
        [vocab["▁positive"]],
        [vocab["▁very"], vocab["▁good"]],
    ]
    model = tiny_llama(seed=3)  # same vocabulary size (64) as the tiny tokenizers
    labels = "negative,positive,neutral"
    result = evaluate_classification(model, tokenizer, RECORDS[:4], labels=labels, template=TEMPLATE)
    for row, record in zip(result.scores, RECORDS[:4]):
        prompt_ids = tokenizer(TEMPLATE.format(text=record["text"])).input_ids
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([prompt_ids])).logits[0, -1], dim=-1)
        expected = [log_probs[vocab["▁" + label]].item() for label in ("negative", "positive", "neutral")]
        assert row == pytest.approx(expected, abs=1e-4)
