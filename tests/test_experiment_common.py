"""Pure logic of the experiments' scaffolding: settings, caches, λ selection, tables, pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.errors import DataError
from adaptermath.experiments import common, distribution, init_ablation, multitask


def test_merge_settings_is_recursive_and_does_not_touch_inputs():
    base = {"a": 1, "train": {"steps": 100, "lr": 0.1}, "grid": [0, 1]}
    override = {"train": {"steps": 5}, "grid": {"start": 0, "stop": 1, "step": 0.5}}
    merged = common.merge_settings(base, override)
    assert merged == {"a": 1, "train": {"steps": 5, "lr": 0.1}, "grid": {"start": 0, "stop": 1, "step": 0.5}}
    assert base["train"]["steps"] == 100


def test_load_config_applies_quick_section(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text("seed: 3\ntrain: {steps: 100, lr: 0.1}\nquick:\n  train: {steps: 2}\n")
    full = common.load_config("x", path)
    quick = common.load_config("x", path, quick=True)
    assert full["train"] == {"steps": 100, "lr": 0.1} and full["quick"] is False
    assert quick["train"] == {"steps": 2, "lr": 0.1} and quick["quick"] is True and quick["seed"] == 3
    with pytest.raises(DataError):
        common.load_config("x", tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["distribution", "multitask", "domain_transfer", "init_ablation"])
def test_shipped_recipes_load(name: str):
    settings = common.load_config(name)
    quick = common.load_config(name, quick=True)
    assert settings["quick"] is False and quick["quick"] is True
    assert common.settings_fingerprint(settings) != common.settings_fingerprint(quick)


def test_choose_best_takes_the_first_maximum():
    assert common.choose_best([(0.0, 0.5), (0.1, 0.7), (0.2, 0.7), (0.3, 0.6)]) == (0.1, 0.7)
    assert common.choose_best([(1.0, 0.2)]) == (1.0, 0.2)
    with pytest.raises(DataError):
        common.choose_best([])


def test_lambda_grid_includes_stop():
    assert common.lambda_grid(0.0, 1.0, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert common.lambda_grid(0.0, 1.0, 0.1)[-1] == 1.0 and len(common.lambda_grid(0.0, 1.0, 0.1)) == 11
    with pytest.raises(DataError):
        common.lambda_grid(1.0, 0.0, 0.1)


def test_result_store_resumes_and_sets_aside_other_settings(tmp_path: Path):
    path = tmp_path / "store.json"
    calls = []
    store = common.ResultStore(path, "fp1")
    assert store.get_or_compute("k", lambda: calls.append(1) or {"accuracy": 0.5}) == {"accuracy": 0.5}
    again = common.ResultStore(path, "fp1")
    assert again.get_or_compute("k", lambda: calls.append(2) or {"accuracy": 0.9}) == {"accuracy": 0.5}
    assert calls == [1]
    other = common.ResultStore(path, "fp2")
    assert "k" not in other
    assert json.loads(path.with_suffix(".stale.json").read_text())["results"]["k"] == {"accuracy": 0.5}


def test_markdown_table_formats_cells():
    table = common.markdown_table(["a", "b"], [[0.12345, None], ["x", 3]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 0.123 | – |", "| x | 3 |"]


def test_mean_accuracy_and_diagnostic_summary():
    assert multitask.mean_accuracy({"a": {"accuracy": 0.5}, "b": {"accuracy": 1.0}}) == 0.75
    comparison = {"mean_cosine": 0.4, "modules": [
        {"a_cosine": 1.0, "param_vs_delta": 0.1}, {"a_cosine": 0.5, "param_vs_delta": 0.3}, {"a_cosine": None}]}
    summary = init_ablation.diagnostic_summary(comparison)
    assert summary == {"a_cosine_mean": 0.75, "update_cosine_mean": 0.4, "param_vs_delta_max": 0.3,
                       "param_vs_delta_mean": pytest.approx(0.2)}


def _header(settings: dict) -> dict:
    return {"settings": settings, "versions": common.versions(), "timings": {"total": 1.0}, "complete": True}


def test_distribution_page_from_synthetic_results():
    settings = common.load_config("distribution")
    row = {"kind": "lora", "space": "param", "chosen": 0.4, "chosen_validation": 0.8, "test_h0": 0.7,
           "test_h1": 0.72, "test_merged": 0.75, "test_union": 0.78, "param_vs_delta_at_half": {"max": 0.01},
           "validation": [[0.0, 0.7], [0.4, 0.8]]}
    sizes = {"train": {"rows": 10, "negative_share": 0.4}}
    page = distribution.render_page({**_header(settings), "rows": [row], "sizes": sizes}, "p.png")
    assert "| lora | param | 0.4 | 0.800 | 0.700 | 0.720 | 0.750 | +0.030 | 0.780 | 0.010 |" in page
    assert "beat the better single half in 1 of 1" in page and "![validation accuracy against λ](p.png)" in page
    assert "PARTIAL" not in page
    partial = distribution.render_page({**_header(settings), "rows": [row], "sizes": sizes, "complete": False}, None)
    assert "PARTIAL" in partial


def test_init_ablation_drops_pair_param_with_delta():
    rows = [
        {"pair": "same init", "space": "param", "a_cosine_mean": 0.99, "param_vs_delta_max": 0.02,
         "param_vs_delta_mean": 0.01, "test_merged": 0.80, "test_at_half": 0.79},
        {"pair": "same init", "space": "delta", "a_cosine_mean": 0.99, "param_vs_delta_max": 0.02,
         "param_vs_delta_mean": 0.01, "test_merged": 0.81, "test_at_half": 0.80},
        {"pair": "other", "space": "param", "a_cosine_mean": 0.0, "param_vs_delta_max": 0.9,
         "param_vs_delta_mean": 0.8, "test_merged": 0.60, "test_at_half": 0.55},
    ]
    result = init_ablation.drops(rows)
    assert len(result) == 1 and result[0]["pair"] == "same init"
    assert result[0]["drop_chosen"] == pytest.approx(0.01) and result[0]["drop_half"] == pytest.approx(0.01)


def test_multitask_page_from_synthetic_results():
    settings = common.load_config("multitask")
    row = {"kind": "ia3", "space": "param", "chosen": 0.6, "chosen_validation": 0.7,
           "validation": [[0.0, {"sent": 0.5, "task2": 0.9}], [0.6, {"sent": 0.7, "task2": 0.7}]],
           "test": {"merged": {"sent": 0.7, "task2": 0.6}, "sent alone": {"sent": 0.8, "task2": 0.2},
                    "task2 alone": {"sent": 0.5, "task2": 0.9}}}
    page = multitask.render_page({**_header(settings), "rows": [row], "sizes": {}, "labels": {"task2": list("abcdef")}}, None)
    assert "| ia3 | param | 0.6 | sentiment | 0.800 | 0.500 | 0.700 | -0.100 |" in page
    assert "| ia3 | param | 0.6 | trec | 0.900 | 0.200 | 0.600 | -0.300 |" in page


def test_keep_work_timings_keeps_the_longest_run_with_the_same_settings(tmp_path: Path):
    previous = tmp_path / "results.json"
    document = {"settings": {"a": 1}, "timings": {"training": 2.0, "sweep": 50.0}}
    assert common.keep_work_timings(previous, document) == document  # nothing before
    previous.write_text(json.dumps({"settings": {"a": 1}, "timings": {"training": 300.0, "sweep": 10.0, "old": 1.0}}))
    merged = common.keep_work_timings(previous, document)
    assert merged["timings"] == {"training": 300.0, "sweep": 50.0, "old": 1.0}
    previous.write_text(json.dumps({"settings": {"a": 2}, "timings": {"training": 300.0}}))
    assert common.keep_work_timings(previous, document)["timings"] == document["timings"]
