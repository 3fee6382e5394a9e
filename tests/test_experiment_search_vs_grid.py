"""The search-against-grid experiment: its budget arithmetic, and its results page regenerating
byte for byte from the data committed beside it (docs/results/search/)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from adaptermath.experiments import search_vs_grid

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_the_search_gets_a_third_of_the_grid() -> None:
    assert search_vs_grid.search_trials(5, 3) == 41
    assert search_vs_grid.search_trials(2, 3) == 2
    assert search_vs_grid.search_trials(1, 1) == 1
    assert search_vs_grid.grid_values(0.0, 2.0, 5) == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert search_vs_grid.grid_values(-1.0, 1.0, 1) == [-1.0]


def test_the_page_regenerates_byte_for_byte_from_its_data() -> None:
    page = RESULTS / search_vs_grid.PAGE_NAME
    data = RESULTS / search_vs_grid.DATA_FOLDER
    assert search_vs_grid.render_page(data) == page.read_text(encoding="utf-8")


def test_the_page_reads_its_numbers_from_the_data(tmp_path: Path) -> None:
    """Change one trial's validation accuracy in the data: the page changes with it."""
    data = tmp_path / "search"
    shutil.copytree(RESULTS / search_vs_grid.DATA_FOLDER, data)
    before = search_vs_grid.analyse(data)
    first_folder = search_vs_grid.search_runs(before["record"]["settings"])[0][2]
    trials = data / first_folder / "trials.csv"
    rows = list(csv.DictReader(io.StringIO(trials.read_text(encoding="utf-8"))))
    last = max(rows, key=lambda row: int(row["trial"]))
    last["accuracy"] = "1.0"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    trials.write_text(buffer.getvalue(), encoding="utf-8")
    after = search_vs_grid.analyse(data)
    assert after["searches"][0]["best_validation"] == 1.0
    assert after["searches"][0]["reached_at"] is not None and after["searches"][0]["reached_at"] <= len(rows)
    assert search_vs_grid.render_page(data) != search_vs_grid.render_page(RESULTS / search_vs_grid.DATA_FOLDER)
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    assert record["search_trials"] == search_vs_grid.search_trials(record["settings"]["grid_points"],
                                                                   len(record["settings"]["box"]))


def test_search_runs_name_new_folders_for_samplers_and_old_ones_for_one_sampler() -> None:
    new = {"samplers": ["tpe", "gp"], "search_seeds": [0, 1]}
    assert search_vs_grid.search_runs(new) == [
        ("tpe", 0, "search-tpe-seed-0"), ("tpe", 1, "search-tpe-seed-1"),
        ("gp", 0, "search-gp-seed-0"), ("gp", 1, "search-gp-seed-1"),
    ]
    assert search_vs_grid.timing_key(new, search_vs_grid.search_runs(new)[2]) == "search gp seed 0"
    old = {"sampler": "tpe", "search_seeds": [0, 1]}
    assert search_vs_grid.search_runs(old) == [("tpe", 0, "search-seed-0"), ("tpe", 1, "search-seed-1")]
    assert search_vs_grid.timing_key(old, search_vs_grid.search_runs(old)[1]) == "search seed 1"
    with pytest.raises(search_vs_grid.common.DataError, match="samplers"):
        search_vs_grid.search_runs({"sampler": "tpe", "samplers": ["gp"], "search_seeds": [0]})


def _set_accuracies(folder: Path, accuracy: str, *, last_only: bool) -> None:
    """Rewrite the validation accuracy in ``folder/trials.csv``: of its last trial, or of every trial."""
    trials = folder / "trials.csv"
    rows = list(csv.DictReader(io.StringIO(trials.read_text(encoding="utf-8"))))
    last = max(int(row["trial"]) for row in rows)
    for row in rows:
        if not last_only or int(row["trial"]) == last:
            row["accuracy"] = accuracy
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    trials.write_text(buffer.getvalue(), encoding="utf-8")


def _two_sampler_data(tmp_path: Path) -> Path:
    """A copy of the committed run (``samplers: [tpe, gp]``; TPE reaches the grid's best for seeds 1 and 2, GP for
    seed 2) in which the last trial of gp seeds 0 and 1 reaches validation accuracy 1.0: GP then reaches it for all."""
    data = tmp_path / "search"
    shutil.copytree(RESULTS / search_vs_grid.DATA_FOLDER, data)
    assert json.loads((data / "run.json").read_text(encoding="utf-8"))["settings"]["samplers"] == ["tpe", "gp"]
    for seed in (0, 1):
        _set_accuracies(data / search_vs_grid.search_folder("gp", seed), "1.0", last_only=True)
    return data


def _one_sampler_data(tmp_path: Path) -> Path:
    """The committed run's grid and TPE searches in the layout of a run with one ``sampler: tpe`` (before
    ``samplers`` existed): folders ``search-seed-{seed}``."""
    committed = RESULTS / search_vs_grid.DATA_FOLDER
    data = tmp_path / "one-sampler"
    data.mkdir()
    shutil.copytree(committed / search_vs_grid.GRID_FOLDER, data / search_vs_grid.GRID_FOLDER)
    record = json.loads((committed / "run.json").read_text(encoding="utf-8"))
    settings = record["settings"]
    del settings["samplers"]
    settings["sampler"] = "tpe"
    for seed in settings["search_seeds"]:
        shutil.copytree(committed / search_vs_grid.search_folder("tpe", seed), data / search_vs_grid.seed_folder(seed))
    (data / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return data


def test_a_run_with_two_samplers_renders_rows_and_verdicts_per_sampler(tmp_path: Path) -> None:
    data = _two_sampler_data(tmp_path)
    facts = search_vs_grid.analyse(data)
    assert [(s["sampler"], s["seed"]) for s in facts["searches"]] == [
        ("tpe", 0), ("tpe", 1), ("tpe", 2), ("gp", 0), ("gp", 1), ("gp", 2)]
    page = search_vs_grid.render_page(data)
    for sampler in ("tpe", "gp"):
        for seed in (0, 1, 2):
            assert f"| search {sampler}, seed {seed} | 41 |" in page
    assert "| search, seed" not in page
    assert "each search (samplers tpe and gp, one study per sampler and sampler seed)" in page
    assert ("- tpe: reached the grid's best for 2 of 3 sampler seeds. Verdict: not met for every seed "
            "(1 of 3 fell short).") in page
    assert "- gp: reached the grid's best for 3 of 3 sampler seeds. Verdict: met for every seed." in page
    assert "per search (`search-{sampler}-seed-{seed}/`)" in page
    row = search_vs_grid.headline(data)
    assert "TPE: 2 of 3 seeds; GP: 3 of 3 seeds" in row["ours"]
    assert "TPE: -0.050 [-0.100, +0.005]" in row["ours"] and "; GP: " in row["ours"]
    assert row["verdict"] == "met for every seed with GP"


def test_with_no_sampler_reaching_the_grid_for_every_seed_the_verdict_names_the_best(tmp_path: Path) -> None:
    data = _two_sampler_data(tmp_path)
    _set_accuracies(data / search_vs_grid.search_folder("gp", 1), "0.5", last_only=False)
    assert search_vs_grid.headline(data)["verdict"] == "met for 2 of 3 seeds (TPE and GP)"
    _set_accuracies(data / search_vs_grid.search_folder("gp", 2), "0.5", last_only=False)
    row = search_vs_grid.headline(data)
    assert row["verdict"] == "met for 2 of 3 seeds (TPE)" and "TPE: 2 of 3 seeds; GP: 1 of 3 seeds" in row["ours"]
    assert ("- gp: reached the grid's best for 1 of 3 sampler seeds. Verdict: not met for every seed "
            "(2 of 3 fell short).") in search_vs_grid.render_page(data)


def test_the_committed_run_counts_each_sampler() -> None:
    row = search_vs_grid.headline(RESULTS / search_vs_grid.DATA_FOLDER)
    assert "TPE: 2 of 3 seeds; GP: 1 of 3 seeds" in row["ours"]
    assert row["verdict"] == "met for 2 of 3 seeds (TPE)"


def test_one_sampler_data_keeps_its_page_and_headline(tmp_path: Path) -> None:
    data = _one_sampler_data(tmp_path)
    row = search_vs_grid.headline(data)
    assert row["ours"].startswith("41 TPE trials reached the grid's best validation accuracy (0.860) for 2 of 3 ")
    assert row["verdict"] == "met for 2 of 3 seeds"
    page = search_vs_grid.render_page(data)
    assert "| search, seed 0 | 41 |" in page and "| search tpe," not in page


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        search_vs_grid.main(["--render", "--docs", str(tmp_path)])
    assert str(raised.value).startswith("error: ") and "run.json" in str(raised.value)
    assert "\n" not in str(raised.value) and not (tmp_path / search_vs_grid.PAGE_NAME).exists()


@pytest.mark.slow
def test_the_quick_run_goes_end_to_end_and_its_page_regenerates(tmp_path: Path) -> None:
    from adaptermath.experiments import assets

    try:
        assets.smollm2_model_dir()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    docs = tmp_path / "docs"
    search_vs_grid.main(["--quick", "--workdir", str(tmp_path / "work"), "--docs", str(docs)])
    page = (docs / search_vs_grid.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and "| search tpe, seed 0 |" in page and "| search gp, seed 0 |" in page
    data = docs / search_vs_grid.DATA_FOLDER
    assert not list(data.rglob("*.db")) and list(data.rglob("*.jsonl.gz"))
    search_vs_grid.main(["--quick", "--render", "--workdir", str(tmp_path / "work"), "--docs", str(docs)])
    assert (docs / search_vs_grid.PAGE_NAME).read_text(encoding="utf-8") == page
