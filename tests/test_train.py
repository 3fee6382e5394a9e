"""train_pem: a few steps on tiny models lower the loss, measured independently; results are cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from adaptermath.errors import DataError, OutputExistsError
from adaptermath.experiments.train import IGNORE_INDEX, classification_examples, lm_examples, train_pem
from adaptermath.init_adapter import init_adapter

from experiments_tiny import one_thread, save_tiny_bert, save_tiny_llama  # noqa: F401 (one_thread: autouse fixture)

TEXTS = ["the cat sat on the mat .", "the dog ran .", "i liked the film , it was great !", "a dog sat on a cat ."] * 6
REVIEWS = ["the film was great", "the film was awful", "i liked it", "i hated it", "very good plot", "boring acting"]
ROWS = [{"text": text, "label": int(any(word in text for word in ("great", "liked", "good")))} for text in REVIEWS] * 4
TEMPLATE = "review : {text} sentiment :"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    llama, bert = save_tiny_llama(root / "llama"), save_tiny_bert(root / "bert")
    return {
        "llama": llama,
        "bert": bert,
        "lora": init_adapter(llama, root / "init-lora", kind="lora", target_modules=["q_proj", "v_proj"], r=4,
                             task_type="CAUSAL_LM", seed=0),
        "ia3": init_adapter(llama, root / "init-ia3", kind="ia3", target_modules=["k_proj", "v_proj", "down_proj"],
                            feedforward_modules=["down_proj"], task_type="CAUSAL_LM", seed=0),
        "cls": init_adapter(bert, root / "init-cls", kind="lora", target_modules=["query", "value"], r=4,
                            task_type="SEQ_CLS", modules_to_save=["classifier"], seed=0),
    }  # fmt: skip


def _mean_loss(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        return sum(float(model(**batch).loss) for batch in batches) / len(batches)


def _lm_batches(tokenizer, texts):
    blocks = lm_examples(tokenizer, texts, max_length=8)
    return [{"input_ids": torch.tensor([block]), "labels": torch.tensor([block])} for block in blocks]


@pytest.mark.parametrize(("kind", "bf16"), [("lora", False), ("ia3", False), ("lora", True)])
def test_lm_training_lowers_the_loss(models: dict[str, Path], tmp_path: Path, kind: str, bf16: bool) -> None:
    result = train_pem(models["llama"], models[kind], TEXTS, tmp_path / "out", objective="lm", steps=30, lr=0.05,
                       batch_size=4, max_length=8, seed=0, bf16=bf16)  # fmt: skip
    assert not result.skipped and len(result.losses) == 30
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    batches = _lm_batches(tokenizer, TEXTS)
    losses = {}
    for name, folder in (("init", models[kind]), ("trained", result.output)):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["llama"]), folder)
        losses[name] = _mean_loss(model, batches)
    assert losses["trained"] < losses["init"] - 0.5
    record = json.loads((result.output / "training.json").read_text())
    assert record["key"]["objective"] == "lm" and record["key"]["bf16"] is bf16 and record["tokens"] == 30 * 4 * 8
    assert load_file(result.output / "adapter_model.safetensors").popitem()[1].dtype == torch.float32


def test_packed_blocks_follow_the_token_stream(models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    stream = []
    for text in TEXTS[:3]:
        stream += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]  # <s> text </s>
    blocks = lm_examples(tokenizer, TEXTS[:3], max_length=5)
    assert blocks == [stream[i : i + 5] for i in range(0, len(stream) - 4, 5)]
    with pytest.raises(DataError):
        lm_examples(tokenizer, ["the"], max_length=64)


def test_verbalised_labels_are_the_only_targets(models: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    examples = classification_examples(tokenizer, ROWS[:2], template=TEMPLATE, label_words=("negative", "positive"),
                                       max_length=32)  # fmt: skip
    for row, (ids, labels) in zip(ROWS[:2], examples):
        word = ("negative", "positive")[row["label"]]
        expected = tokenizer(TEMPLATE.format(text=row["text"]) + " " + word)["input_ids"]
        assert ids == expected
        assert labels == [IGNORE_INDEX] * (len(ids) - 1) + [tokenizer.convert_tokens_to_ids(word)]
    short = classification_examples(tokenizer, ROWS[:1], template=TEMPLATE, label_words=("negative", "positive"),
                                    max_length=4)  # fmt: skip
    assert len(short[0][0]) == 4 and short[0][0][0] == tokenizer.bos_token_id  # the prompt's start is cut


def test_verbalised_classification_training_lowers_the_label_loss(models: dict[str, Path], tmp_path: Path) -> None:
    result = train_pem(models["llama"], models["lora"], ROWS, tmp_path / "cls", objective="classification",
                       steps=25, lr=0.05, batch_size=4, max_length=16, template=TEMPLATE, seed=0)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(models["llama"])
    examples = classification_examples(tokenizer, ROWS[:6], template=TEMPLATE, label_words=("negative", "positive"),
                                       max_length=16)  # fmt: skip
    batches = [{"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels])} for ids, labels in examples]
    losses = {}
    for name, folder in (("init", models["lora"]), ("trained", result.output)):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["llama"]), folder)
        losses[name] = _mean_loss(model, batches)
    assert losses["trained"] < losses["init"] - 1.0


def test_head_classification_training_lowers_the_loss(models: dict[str, Path], tmp_path: Path) -> None:
    result = train_pem(models["bert"], models["cls"], ROWS, tmp_path / "head", objective="classification",
                       steps=30, lr=0.1, batch_size=6, max_length=16, seed=0)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(models["bert"])
    encoded = tokenizer([row["text"] for row in ROWS[:6]], padding=True, return_tensors="pt")
    batch = [{**encoded, "labels": torch.tensor([row["label"] for row in ROWS[:6]])}]
    losses = {}
    for name, folder in (("init", models["cls"]), ("trained", result.output)):
        base = AutoModelForSequenceClassification.from_pretrained(models["bert"], num_labels=2)
        losses[name] = _mean_loss(PeftModel.from_pretrained(base, folder), batch)
    assert losses["trained"] < losses["init"] - 0.1


def test_training_is_cached_and_never_silently_replaced(models: dict[str, Path], tmp_path: Path) -> None:
    options = {"objective": "lm", "steps": 2, "lr": 0.01, "batch_size": 2, "max_length": 8, "seed": 0}
    out = tmp_path / "cached"
    first = train_pem(models["llama"], models["lora"], TEXTS, out, **options)
    weights = (out / "adapter_model.safetensors").read_bytes()
    again = train_pem(models["llama"], models["lora"], TEXTS, out, **options)
    assert again.skipped and again.losses == first.losses
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    with pytest.raises(OutputExistsError):
        train_pem(models["llama"], models["lora"], TEXTS, out, **{**options, "lr": 0.02})
    with pytest.raises(OutputExistsError):
        train_pem(models["llama"], models["lora"], TEXTS[:-1], out, **options)  # other data
    retrained = train_pem(models["llama"], models["lora"], TEXTS, out, force=True, **{**options, "lr": 0.02})
    assert not retrained.skipped and retrained.record["key"]["lr"] == 0.02


def test_bad_training_input_raises_data_errors(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError):
        train_pem(models["llama"], models["lora"], [], tmp_path / "a", steps=1)
    with pytest.raises(DataError):
        train_pem(models["bert"], models["cls"], ROWS, tmp_path / "b", objective="lm", steps=1)
    with pytest.raises(DataError):
        train_pem(models["bert"], models["cls"], [{"text": "the film", "label": 5}], tmp_path / "c",
                  objective="classification", steps=1)  # fmt: skip
    with pytest.raises(DataError):
        train_pem(models["llama"], models["lora"], ["the film"], tmp_path / "d", objective="classification", steps=1)
    assert not any((tmp_path / name).exists() for name in "abcd")
