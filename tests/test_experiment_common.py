"""Pure logic of the experiments' scaffolding: settings, caches, λ selection, tables, pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.errors import DataError
from adaptermath.experiments import common


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




def test_keep_work_timings_keeps_the_longest_run_with_the_same_settings(tmp_path: Path):
    previous = tmp_path / "results.json"
    document = {"settings": {"a": 1}, "timings": {"training": 2.0, "sweep": 50.0}}
    assert common.keep_work_timings(previous, document) == document  # nothing before
    previous.write_text(json.dumps({"settings": {"a": 1}, "timings": {"training": 300.0, "sweep": 10.0, "old": 1.0}}))
    merged = common.keep_work_timings(previous, document)
    assert merged["timings"] == {"training": 300.0, "sweep": 50.0, "old": 1.0}
    previous.write_text(json.dumps({"settings": {"a": 2}, "timings": {"training": 300.0}}))
    assert common.keep_work_timings(previous, document)["timings"] == document["timings"]


def test_profile_smoke_runs_the_quick_section_and_full_the_recipe(tmp_path: Path):
    import types

    config = tmp_path / "fake.yaml"
    config.write_text("steps: 100\nquick:\n  steps: 2\n")
    seen: list[dict] = []

    def run(settings, workdir, threads):
        seen.append(dict(settings))
        return {"timings": {}}

    def collect(workdir, data, record):
        data.mkdir(parents=True, exist_ok=True)
        (data / "run.json").write_text("{}")

    module = types.SimpleNamespace(
        NAME="fake", DATA_FOLDER="data/fake", PAGE_NAME="fake.md", PLOT_NAME="fake.png", run=run, collect=collect,
        plot=lambda data, path: None, render_page=lambda data, plot: f"steps {seen[-1]['steps']}\n")
    for flags, steps, quick in ((["--profile", "smoke"], 2, True), (["--quick"], 2, True), ([], 100, False)):
        docs = tmp_path / f"docs-{len(seen)}"
        common.experiment_command(module, "fake", [*flags, "--config", str(config), "--workdir", str(tmp_path / f"w{len(seen)}"),
                                                   "--docs", str(docs)])
        assert seen[-1]["steps"] == steps and seen[-1]["quick"] is quick
        assert (docs / "fake.md").read_text() == f"steps {steps}\n"
    with pytest.raises(SystemExit):
        common.experiment_command(module, "fake", ["--profile", "tiny"])
