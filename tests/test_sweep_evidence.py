"""Sweeps with evidence: records and intervals per point, --select one-se, paired test comparisons,
--seeds (resumable per seed, mean ± std) and ``adaptermath report`` re-rendering byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_sweep import plan_for, word_model  # noqa: F401  (fixture)

from adaptermath.cli.main import main
from adaptermath.errors import AdapterMathError
from adaptermath.evaluation.examples import ExampleSet, load_examples
from adaptermath.evaluation.statistics import mcnemar_test
from adaptermath.report import report
from adaptermath.sweep import Evaluated, SweepRecord, run_sweep, select_point, sweep_markdown

N = 200


def synthetic_scoring():
    """Accuracy on N examples rises with λ's coefficient c on t up to c = 0.3, flat after it
    within noise; each example is right when a fixed uniform draw is below the accuracy."""
    draws = np.random.default_rng(0).uniform(size=N)

    def attach(composed):
        return composed

    def evaluate(composed, split):
        c = composed.coefficients.get("t", 0.0)
        accuracy = 0.6 + 0.25 * min(c, 0.3) / 0.3 + (0.01 if c > 0.45 else 0.0)
        correct = draws < accuracy
        records = [{"id": f"e{i}", "gold": "a", "prediction": "a" if right else "b", "correct": bool(right)}
                   for i, right in enumerate(correct)]
        return Evaluated({"accuracy": float(correct.mean())}, ExampleSet("classification", records, {"labels": ["a", "b"]}))

    return attach, evaluate


def test_one_se_prefers_the_smallest_change_within_noise_and_baselines_get_paired_tests(tiny, tmp_path):
    attach, evaluate = synthetic_scoring()
    results = tmp_path / "sweep" / "results.jsonl"
    best = run_sweep(plan_for(tiny), attach=attach, evaluate=evaluate, metric="accuracy", direction="max",
                     select="best", results=results)
    assert best.best_point == {"λ": 0.5}  # the noise bump
    one_se = run_sweep(plan_for(tiny), attach=attach, evaluate=evaluate, metric="accuracy", direction="max",
                       select="one-se", results=results)
    assert one_se.best_point == {"λ": 0.3}
    assert one_se.selection["rule"] == "one-se" and one_se.selection["best_point"] == {"λ": 0.5}
    se = one_se.validation[0].interval("accuracy")["se"]
    assert se == pytest.approx(np.sqrt(0.6 * 0.4 / N), rel=0.15)
    # records are on disk, the comparisons are McNemar on the same examples
    chosen = next(r for r in one_se.test if r.label == "best")
    zero = next(r for r in one_se.test if r.label == "λ=0")
    folder = results.parent
    ours, theirs = load_examples(folder / chosen.examples), load_examples(folder / zero.examples)
    b, c, p = mcnemar_test([r["correct"] for r in ours.records], [r["correct"] for r in theirs.records])
    row = next(x for x in one_se.comparisons if x["baseline"] == "λ=0" and x["metric"] == "accuracy")
    assert row["p_value"] == pytest.approx(p) and row["a_only_correct"] == b and row["delta"] > 0 and row["low"] > 0
    assert {x["baseline"] for x in one_se.comparisons} == {"λ=0", "operand:cls", "operand:t", "operand:s"}
    page = sweep_markdown(one_se.to_dict())
    assert "one-se" in page and "| λ=0 |" in page and "mcnemar-exact" in page


def test_one_se_needs_a_standard_error():
    records = [SweepRecord("val", "grid", {"λ": 0.0}, "x", {"accuracy": 0.5})]
    with pytest.raises(AdapterMathError, match="one-se needs a standard error"):
        select_point(records, "accuracy", "max", "one-se", lambda point: 0.0)
    with pytest.raises(AdapterMathError, match="selection rule"):
        select_point(records, "accuracy", "max", "median", lambda point: 0.0)


def _cli(*args: object):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_sweep_cli_seeds_records_report_and_diff(word_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import importlib.util

    sweep_module = importlib.import_module("adaptermath.sweep")  # the module (adaptermath.sweep is also a function)

    plots = importlib.util.find_spec("matplotlib") is not None  # the plot extra: pip install 'adaptermath[plot]'

    def no_plot(*args: object, **kwargs: object) -> None:  # plotting is slow; report draws them below
        raise AdapterMathError("plots are drawn by report in this test")

    monkeypatch.setattr(sweep_module, "plot_sweep", no_plot)
    a = word_model["adapters"]
    output = tmp_path / "seeds"
    args = ["sweep", "cls - λ*random(t)", "-a", f"cls={a['cls']}", "-a", f"t={a['t']}", "--base", word_model["base"],
            "--task", "classification", "--grid", "λ=0,0.5", "--val", word_model["val"], "--test", word_model["test"],
            "--labels", "negative,positive", "--template", "{text} sentiment :", "--select", "one-se",
            "--seeds", "0,1", "-o", output, "--json"]
    done = _cli(*args)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["seeds"] == [0, 1] and len(summary["runs"]) == 2
    row = summary["across_seeds"]["test:best"]
    assert row["mean"] == pytest.approx(np.mean(row["values"])) and len(row["values"]) == 2
    for seed in (0, 1):
        folder = output / f"seed-{seed}"
        run = json.loads((folder / "sweep.json").read_text())
        assert run["seed"] == seed and run["select"] == "one-se"
        assert all("accuracy" in item["metrics"]["intervals"] for item in run["validation"])
        assert (folder / "report.md").is_file() and not (folder / "sweep.png").exists()
        assert any(c["baseline"] == "λ=0" for c in run["comparisons"])
    # random(t) differs between seeds: the control seed is the protocol seed
    header = [json.loads((output / f"seed-{s}" / "results.jsonl").read_text().splitlines()[0]) for s in (0, 1)]
    assert header[0]["fingerprint"]["compose"]["control_seed"] == 0 and header[1]["fingerprint"]["compose"]["control_seed"] == 1

    # resumed per seed: everything is served from the results files
    again = _cli(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["across_seeds"] == summary["across_seeds"]

    # report re-renders byte for byte (the plots too), and --check catches an edited page
    monkeypatch.undo()
    before = {p: p.read_bytes() for p in output.rglob("*.md")}
    rendered = report(output)
    assert rendered.kind == "sweep-seeds" and (output / "seed-0" / "sweep.png").is_file() == plots
    assert {p: p.read_bytes() for p in output.rglob("*.md")} == before
    assert _cli("report", output, "--check").exit_code == 0
    (output / "seed-0" / "report.md").write_text("edited\n", encoding="utf-8")
    checked = _cli("report", output, "--check")
    assert checked.exit_code == 2 and "differs" in checked.stderr
    assert (output / "seed-0" / "report.md").read_text() == "edited\n"  # --check writes nothing

    # two points of a sweep are runs that diff can pair
    run0 = json.loads((output / "seed-0" / "sweep.json").read_text())
    files = {item["label"]: output / "seed-0" / item["examples"] for item in run0["test"]}
    compared = _cli("diff", files["best"], files["λ=0"], "--json")
    assert compared.exit_code == 0, compared.output
    assert json.loads(compared.stdout)["metrics"][0]["metric"] == "accuracy"
    # a sweep folder stands for its chosen point on test: seed 0's control against seed 1's
    across = _cli("diff", output / "seed-0", output / "seed-1", "--json")
    assert across.exit_code == 0, across.output
    assert json.loads(across.stdout)["num_units"] == 12


def test_report_refuses_a_folder_without_results(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterMathError, match="no sweep.json"):
        report(tmp_path / "empty")


def _hand_log_loss(records: ExampleSet) -> float:
    """Mean of −log softmax(scores)[gold] over the records, by numpy (max subtracted by hand)."""
    labels = list(records.meta["labels"])
    losses = []
    for record in records.records:
        scores = np.asarray(record["scores"], dtype=np.float64)
        top = scores.max()
        losses.append(top + np.log(np.exp(scores - top).sum()) - scores[labels.index(record["gold"])])
    return float(np.mean(losses))


def test_sweep_by_log_loss_minimises_it_through_python_and_the_cli(word_model, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from adaptermath.sweep import metric_direction, sweep

    assert metric_direction("log_loss") == "min" and metric_direction("accuracy") == "max"
    sweep_module = importlib.import_module("adaptermath.sweep")

    def no_plot(*args: object, **kwargs: object) -> None:  # plotting is slow and not what this test checks
        raise AdapterMathError("no plot in this test")

    monkeypatch.setattr(sweep_module, "plot_sweep", no_plot)
    a = word_model["adapters"]
    options = dict(labels="negative,positive", template="{text} sentiment :")
    api = sweep("cls + λ*(t - s)", a, base=word_model["base"], task="classification", grid=["λ=0:1:0.25"],
                val=word_model["val"], results=tmp_path / "api" / "results.jsonl", metric="log_loss", **options)
    assert api.direction == "min"  # inferred from the metric
    output = tmp_path / "cli"
    done = _cli("sweep", "cls + λ*(t - s)", "-a", f"cls={a['cls']}", "-a", f"t={a['t']}", "-a", f"s={a['s']}",
                "--base", word_model["base"], "--task", "classification", "--grid", "λ=0:1:0.25",
                "--val", word_model["val"], "--test", word_model["test"], "--labels", "negative,positive",
                "--template", "{text} sentiment :", "--metric", "log_loss", "-o", output, "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["metric"] == "log_loss" and summary["direction"] == "min"
    losses = []
    for row in summary["validation"]:
        hand = _hand_log_loss(load_examples(output / row["examples"]))
        assert row["log_loss"] == pytest.approx(hand)
        interval = row["metrics"]["intervals"]["log_loss"]
        assert interval["low"] <= hand <= interval["high"]
        losses.append(hand)
    assert len(set(losses)) > 1  # the choice is not a tie
    assert summary["best_point"] == summary["validation"][losses.index(min(losses))]["point"]
    assert summary["best_point"] == api.best_point
    log_loss_rows = [c for c in summary["comparisons"] if c["metric"] == "log_loss"]
    assert log_loss_rows and all(c["test"] == "paired-permutation" for c in log_loss_rows)
    best = next(t for t in summary["test"] if t["label"] == "best")
    assert best["metrics"]["log_loss"] == pytest.approx(_hand_log_loss(load_examples(output / best["examples"])))
