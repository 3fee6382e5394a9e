"""Search reports on test exactly as a sweep does: per-example records of every test evaluation in
DIR/examples/, an interval on every metric, and the chosen trial compared with each baseline on the
same examples -- checked against ``adaptermath.diff`` / McNemar computed again from the records
files; then the CLI (text, --json, --confidence), ``adaptermath diff`` on a search folder and
``adaptermath report`` re-rendering its page. Fast: the fake evaluator of tests/search_fake.py."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

pytest.importorskip("optuna", reason="pip install 'adaptermath[search]'")

from click.testing import CliRunner  # noqa: E402
from search_fake import FakeScorer  # noqa: E402
from test_search import FINGERPRINT, make_plan, settings  # noqa: E402

import adaptermath as am  # noqa: E402
from adaptermath.cli.main import main  # noqa: E402
from adaptermath.errors import AdapterMathError  # noqa: E402
from adaptermath.evaluation.examples import load_examples  # noqa: E402
from adaptermath.evaluation.statistics import mcnemar_test  # noqa: E402
from adaptermath.report import report  # noqa: E402
from adaptermath.search import run_search, search_markdown, write_search_outputs  # noqa: E402
from adaptermath.sweep import examples_file_name  # noqa: E402

LABELS = ["best", "λ=0, μ=0", "operand:a", "operand:b", "operand:c"]


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plotting is slow and not what these tests check; search writes no PNG then."""
    plots = importlib.import_module("adaptermath.search_plots")

    def no_plot(*args: object, **kwargs: object) -> None:
        raise AdapterMathError("no plots in this test")

    for name in ("plot_history", "plot_importances", "plot_pareto"):
        monkeypatch.setattr(plots, name, no_plot)


def test_test_records_intervals_and_paired_comparisons_equal_diff_of_the_records(tiny, tmp_path, no_plots):
    result = run_search(make_plan(tiny), FakeScorer(records=200), settings(trials=6, seed=0, sampler="random"),
                        fingerprint=FINGERPRINT, test=True, output=tmp_path, confidence=0.9)
    assert [r.label for r in result.test] == LABELS
    files = {}
    for record in result.test:
        # the records file, named as a sweep names it, is on disk and holds every test example
        assert record.examples == examples_file_name("test", record.label, record.point)
        files[record.label] = tmp_path / record.examples
        examples = load_examples(files[record.label])
        assert len(examples) == 200 and examples.task == "classification"
        # an interval on every metric the records define, at the asked level, around the estimate
        intervals = record.metrics["intervals"]
        assert set(intervals) == {"accuracy", "accuracy_wilson", "macro_f1"}
        band = intervals["accuracy"]
        assert band["confidence"] == 0.9 and band["low"] <= record.metrics["accuracy"] <= band["high"]
        assert band["estimate"] == pytest.approx(sum(r["correct"] for r in examples.records) / 200)
    # chosen vs each baseline: the same numbers as adaptermath.diff of the two records files
    assert {c["baseline"] for c in result.comparisons} == set(LABELS[1:])
    for label in LABELS[1:]:
        independent = am.diff(files["best"], files[label], confidence=0.9)
        rows = [c for c in result.comparisons if c["baseline"] == label]
        assert rows == [{"baseline": label, **d.to_dict()} for d in independent.differences]
        accuracy = next(row for row in rows if row["metric"] == "accuracy")
        ours, theirs = load_examples(files["best"]).records, load_examples(files[label]).records
        b, c, p = mcnemar_test([r["correct"] for r in ours], [r["correct"] for r in theirs])
        assert (accuracy["a_only_correct"], accuracy["b_only_correct"]) == (b, c)
        assert accuracy["p_value"] == pytest.approx(p) and accuracy["test"] == "mcnemar-exact"
        assert accuracy["delta"] == pytest.approx(result.test[0].metrics["accuracy"] - result.test[LABELS.index(label)].metrics["accuracy"])
    # search.json and report.md carry them; report re-renders the page from search.json alone
    written = write_search_outputs(result, tmp_path)
    summary = json.loads((tmp_path / "search.json").read_text())
    assert summary["confidence"] == 0.9 and summary["comparisons"] == json.loads(json.dumps(result.comparisons))
    assert [t["examples"] for t in summary["test"]] == [r.examples for r in result.test]
    page = (tmp_path / "report.md").read_text()
    assert written["report.md"] and page == search_markdown(summary)
    assert "| split | what | λ | μ | accuracy | 90% interval |" in page and "| test | operand:b |" in page
    assert "the chosen trial (A) against each baseline" in page and "mcnemar-exact" in page
    rendered = report(tmp_path)
    assert rendered.kind == "search" and rendered.files == ["report.md"]
    assert (tmp_path / "report.md").read_text() == page
    report(tmp_path, check=True)


def test_an_evaluator_without_records_gives_no_intervals_and_no_comparisons(tiny, tmp_path):
    result = run_search(make_plan(tiny), FakeScorer(), settings(trials=3, seed=0, sampler="random"),
                        fingerprint=FINGERPRINT, test=True, output=tmp_path)
    assert [r.label for r in result.test] == LABELS
    assert all(r.examples is None and "intervals" not in r.metrics for r in result.test)
    assert result.comparisons == [] and not (tmp_path / "examples").exists()
    page = search_markdown(json.loads(json.dumps(result.to_dict())))
    assert "| test | best |" in page and "—" in page and "paired-bootstrap" not in page


class FakeModelScorer:
    """Stands in for ModelScorer in adaptermath.search: the CLI runs on the fake evaluator."""

    @staticmethod
    def for_adapter(first: object, **options: object) -> FakeScorer:
        return FakeScorer(records=120)


def test_search_cli_prints_intervals_and_comparisons_and_diff_and_report_read_the_folder(
        tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_plots) -> None:
    monkeypatch.setattr(importlib.import_module("adaptermath.search"), "ModelScorer", FakeModelScorer)
    out = tmp_path / "out"
    args = ["search", "a + λ*b + μ*c", "-a", f"a={tiny['lora_a']}", "-a", f"b={tiny['lora_b']}",
            "-a", f"c={tiny['lora_c']}", "--var", "λ=-1:1", "--var", "μ=-1:1", "--base", "unused",
            "--task", "classification", "--labels", "a,b", "--val", "val.jsonl", "--test", "test.jsonl",
            "--trials", "5", "--sampler", "random", "--seed", "0", "-o", str(out)]
    shown = CliRunner().invoke(main, args)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())  # the console wraps long lines at its width
    assert "test best accuracy = " in text and "test operand:c accuracy = " in text
    assert "chosen − λ=0, μ=0 Δ = " in text and "(mcnemar-exact)" in text
    assert "report.md" in text and "examples/" in text
    # --json, at another level: the study is complete, only the test protocol runs again
    done = CliRunner().invoke(main, [*args, "--confidence", "0.8", "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["trials"] == 5 and summary["confidence"] == 0.8
    assert all(t["metrics"]["intervals"]["accuracy"]["confidence"] == 0.8 for t in summary["test"])
    assert {c["baseline"] for c in summary["comparisons"]} == set(LABELS[1:])
    assert json.loads((out / "search.json").read_text())["comparisons"] == summary["comparisons"]
    # a search folder stands for its chosen trial's test records in adaptermath diff
    zero = out / next(t["examples"] for t in summary["test"] if t["label"] == "λ=0, μ=0")
    compared = CliRunner().invoke(main, ["diff", str(out), str(zero), "--confidence", "0.8", "--json"])
    assert compared.exit_code == 0, compared.output
    expected = [{k: v for k, v in c.items() if k != "baseline"} for c in summary["comparisons"]
                if c["baseline"] == "λ=0, μ=0"]
    assert json.loads(compared.stdout)["metrics"] == expected
    # report prints the page search wrote and --check finds it identical
    page = (out / "report.md").read_text()
    rendered = CliRunner().invoke(main, ["report", str(out)])
    assert rendered.exit_code == 0 and rendered.stdout == page and "80% interval" in page
    assert CliRunner().invoke(main, ["report", str(out), "--check"]).exit_code == 0
    bad = CliRunner().invoke(main, [*args, "--confidence", "1.5"])
    assert bad.exit_code == 2 and "--confidence" in bad.stderr
