"""Per-example records, intervals and ``adaptermath diff`` on tiny models and synthetic records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from evaluation_tiny import one_torch_thread  # noqa: F401  (autouse fixture)
from test_evaluation_cli import constant_scorer, files, run  # noqa: F401  (fixtures)

import adaptermath
from adaptermath.cli.main import main
from adaptermath.evaluation.evidence import ComparisonError, compare_examples, metric_intervals
from adaptermath.evaluation.examples import ExampleSet, ExamplesError, load_examples, write_examples
from adaptermath.evaluation.statistics import mcnemar_exact

CLASSIFY = ["--text-field", "review", "--label-field", "y", "--labels", "negative,positive", "--template",
            "review : {review} sentiment :", "--device", "cpu"]


def diff(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["diff", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_eval_writes_records_and_intervals_and_diff_pairs_two_runs(files, tmp_path: Path) -> None:
    first, second = tmp_path / "x.json", tmp_path / "y.json"
    for adapter, output in ((files["x"], first), (files["y"], second)):
        code, stdout, stderr = run("--base", files["base"], adapter, "--task", "classification",
                                   "--data", files["data"], *CLASSIFY, "--json", "-o", output, "--confidence", "0.9")
        assert code == 0, stderr
    payload = json.loads(first.read_text())
    records = load_examples(first)
    assert records.task == "classification" and len(records) == 6
    assert [r["prediction"] for r in records.records] == payload["result"]["predictions"]
    assert len(set(records.ids)) == 6
    accuracy = payload["intervals"]["accuracy"]
    assert accuracy["estimate"] == pytest.approx(payload["result"]["accuracy"])
    assert accuracy["low"] <= accuracy["estimate"] <= accuracy["high"] and accuracy["confidence"] == 0.9
    assert payload["intervals"]["accuracy_wilson"]["method"] == "wilson"
    assert payload["intervals"]["macro_f1"]["estimate"] == pytest.approx(payload["result"]["macro_f1"])
    assert (tmp_path / "x.examples.jsonl.gz").read_bytes() == (tmp_path / "x.examples.jsonl.gz").read_bytes()
    assert load_examples(second).ids == records.ids  # the id hashes the input, not the adapter

    code, stdout, stderr = diff(first, second, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    accuracy_row = next(m for m in result["metrics"] if m["metric"] == "accuracy")
    b_correct = [r["correct"] for r in load_examples(second).records]
    only_a = sum(a["correct"] and not b for a, b in zip(records.records, b_correct))
    only_b = sum(b and not a["correct"] for a, b in zip(records.records, b_correct))
    assert accuracy_row["p_value"] == pytest.approx(mcnemar_exact(only_a, only_b))
    assert accuracy_row["delta"] == pytest.approx(payload["result"]["accuracy"] - json.loads(second.read_text())["result"]["accuracy"])
    assert adaptermath.diff(first, second).to_dict()["metrics"] == result["metrics"]
    code, stdout, _ = diff(first, second)
    assert code == 0 and "mcnemar-exact" in stdout and "macro_f1" in stdout

    # -o DIR (a name without suffix): DIR/eval.json and DIR/examples.jsonl.gz
    folder = tmp_path / "runs" / "x"
    code, _, stderr = run("--base", files["base"], files["x"], "--task", "classification",
                          "--data", files["data"], *CLASSIFY, "-o", folder)
    assert code == 0, stderr
    assert (folder / "eval.json").is_file() and load_examples(folder).records == records.records
    assert diff(folder, first, "--json")[0] == 0

    # A perplexity run: different task -> one-line error, exit 2.
    ppl = tmp_path / "ppl.json"
    run("--base", files["base"], "--task", "perplexity", "--data", files["corpus"], "--max-length", "8", "--stride", "4",
        "--json", "-o", ppl)
    ppl_records = load_examples(ppl)
    assert sum(r["tokens"] for r in ppl_records.records) == json.loads(ppl.read_text())["result"]["num_tokens"]
    code, _, stderr = diff(first, ppl)
    assert code == 2 and stderr.startswith("error: cannot compare a classification run with a perplexity run")
    code, _, stderr = diff(first, tmp_path / "missing.json")
    assert code == 2 and "no per-example records" in stderr and len(stderr.strip().splitlines()) == 1

    # a folder of eval summaries renders to one table, the same bytes every time
    from adaptermath.report import report

    page = report(tmp_path)
    assert page.kind == "eval" and "| x | classification | accuracy |" in page.markdown
    assert "| ppl | perplexity | perplexity |" in page.markdown
    report(tmp_path, check=True)


def test_toxicity_records_keep_a_prompts_samples_together(files, constant_scorer, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the movie\ni liked\nthe book\n", encoding="utf-8")
    output = tmp_path / "tox.json"
    code, _, stderr = run("--base", files["base"], files["y"], "--data", prompts, "--num-samples", "2",
                          "--max-new-tokens", "4", "--task", "toxicity", "--scorer", constant_scorer, "--json", "-o", output)
    assert code == 0, stderr
    records = load_examples(output)
    assert len(records) == 6 and len({r["cluster"] for r in records.records}) == 3
    assert records.records[0]["scores"] == {constant_scorer: records.records[0]["score"]}
    intervals = json.loads(output.read_text())["intervals"]
    assert set(intervals) == {"mean_score", "share_above_threshold", "share_above_0.5"}
    generated = tmp_path / "gen.json"
    run("--base", files["base"], files["y"], "--data", prompts, "--task", "generate", "--json", "-o", generated)
    assert [r["prompt"] for r in load_examples(generated).records] == ["the movie", "i liked", "the book"]


def _classification(correct: list[bool], ids: list[str] | None = None) -> ExampleSet:
    ids = ids or [f"e{i}" for i in range(len(correct))]
    return ExampleSet("classification", [
        {"id": identifier, "gold": "a", "prediction": "a" if right else "b", "correct": right}
        for identifier, right in zip(ids, correct)], {"labels": ["a", "b"]})


def test_compare_examples_pairs_by_id_and_refuses_different_examples(tmp_path: Path) -> None:
    a = _classification([True] * 30 + [False] * 10)
    b = _classification([True] * 20 + [False] * 20)
    comparison = compare_examples(a, b).by_metric()
    assert comparison["accuracy"].p_value == pytest.approx(mcnemar_exact(10, 0))
    assert comparison["accuracy"].difference.estimate == pytest.approx(0.25)
    assert comparison["accuracy"].difference.low > 0
    shuffled = ExampleSet(b.task, list(reversed(b.records)), b.meta)
    assert compare_examples(a, shuffled).by_metric()["accuracy"].p_value == comparison["accuracy"].p_value
    with pytest.raises(ComparisonError, match="different examples"):
        compare_examples(a, _classification([True] * 40, [f"x{i}" for i in range(40)]))
    write_examples(tmp_path / "a.jsonl.gz", a)
    assert load_examples(tmp_path / "a.jsonl.gz").records == a.records
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"format": "other"}\n'))
    with pytest.raises(ExamplesError):
        load_examples(tmp_path / "bad.jsonl.gz")


def test_perplexity_interval_is_the_exponential_of_the_nll_interval() -> None:
    windows = ExampleSet("perplexity", [{"id": f"w{i}", "nll": 2.0 + (i % 3), "tokens": 1 + i % 2} for i in range(20)])
    intervals = metric_intervals(windows, seed=1)
    import math

    assert intervals["perplexity"].low == pytest.approx(math.exp(intervals["mean_nll"].low))
    assert intervals["perplexity"].high == pytest.approx(math.exp(intervals["mean_nll"].high))
    total = sum(r["nll"] for r in windows.records) / sum(r["tokens"] for r in windows.records)
    assert intervals["mean_nll"].estimate == pytest.approx(total)


def _scored(rows: list[tuple[str, list[float]]], labels: tuple[str, ...] = ("a", "b")) -> ExampleSet:
    """Classification records with label scores: (gold, scores) per example; the prediction is the argmax."""
    records = []
    for index, (gold, scores) in enumerate(rows):
        prediction = labels[max(range(len(labels)), key=scores.__getitem__)]
        records.append({"id": f"e{index}", "index": index, "gold": gold, "prediction": prediction,
                        "correct": prediction == gold, "scores": scores})
    return ExampleSet("classification", records, {"labels": list(labels)})


def test_log_loss_gets_an_interval_and_a_paired_permutation_test() -> None:
    import math

    # By hand: [-1, -3] gold a → log(1 + e^-2); [0, 0] gold b → log 2.
    two = _scored([("a", [-1.0, -3.0]), ("b", [0.0, 0.0])])
    intervals = metric_intervals(two)
    assert intervals["log_loss"].estimate == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2)
    assert intervals["log_loss"].method == "bootstrap-percentile"
    # Two runs on 40 examples: A gives the gold label probability 0.9 (loss -log 0.9), B 0.6 (loss -log 0.6).
    a = _scored([("a" if i % 2 else "b", [math.log(0.9), math.log(0.1)] if i % 2 else [math.log(0.1), math.log(0.9)])
                 for i in range(40)])
    b = _scored([("a" if i % 2 else "b", [math.log(0.6), math.log(0.4)] if i % 2 else [math.log(0.4), math.log(0.6)])
                 for i in range(40)])
    interval = metric_intervals(a)["log_loss"]
    assert interval.estimate == pytest.approx(-math.log(0.9))
    assert interval.low == pytest.approx(-math.log(0.9)) and interval.high == pytest.approx(-math.log(0.9))
    difference = compare_examples(a, b).by_metric()["log_loss"]
    assert difference.test == "paired-permutation"
    assert difference.a == pytest.approx(-math.log(0.9)) and difference.b == pytest.approx(-math.log(0.6))
    assert difference.difference.estimate == pytest.approx(math.log(0.6) - math.log(0.9))
    assert difference.difference.high < 0 and difference.p_value < 0.001  # every pair favours A: 1/(1 + R)
    assert compare_examples(a, b).by_metric()["accuracy"].test == "mcnemar-exact"


def test_records_without_scores_have_no_log_loss() -> None:
    plain = _classification([True, False, True])
    assert "log_loss" not in metric_intervals(plain)
    scored = _scored([("a", [0.0, -1.0]), ("b", [0.0, -1.0]), ("a", [0.0, -1.0])])
    assert "log_loss" in metric_intervals(scored)
    assert "log_loss" not in compare_examples(scored, plain).by_metric()  # only when both runs kept scores
    assert "log_loss" not in compare_examples(plain, scored).by_metric()
