"""The search-against-grid experiment: its budget arithmetic, and its results page regenerating
byte for byte from the data committed beside it (docs/results/search/)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from adaptermath.evaluation.evidence import format_interval
from adaptermath.experiments import search_vs_grid

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# The run before the recipe's objective became log loss (validation accuracy, samplers tpe and gp), kept
# beside the committed run as evidence and as data in the layout without an ``objective`` setting.
ACCURACY_RUN = RESULTS / "data" / "search-accuracy"


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
    shutil.copytree(ACCURACY_RUN, data)
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
    assert search_vs_grid.render_page(data) != search_vs_grid.render_page(ACCURACY_RUN)
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
    shutil.copytree(ACCURACY_RUN, data)
    assert json.loads((data / "run.json").read_text(encoding="utf-8"))["settings"]["samplers"] == ["tpe", "gp"]
    for seed in (0, 1):
        _set_accuracies(data / search_vs_grid.search_folder("gp", seed), "1.0", last_only=True)
    return data


def _one_sampler_data(tmp_path: Path) -> Path:
    """The committed run's grid and TPE searches in the layout of a run with one ``sampler: tpe`` (before
    ``samplers`` existed): folders ``search-seed-{seed}``."""
    committed = ACCURACY_RUN
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
    """The committed run minimises validation log loss: GP reaches the grid's best for every seed, TPE for one."""
    facts = search_vs_grid.analyse(RESULTS / search_vs_grid.DATA_FOLDER)
    assert facts["objective"] == "log_loss"
    reached = {(s["sampler"], s["seed"]): s["reached_at"] for s in facts["searches"]}
    assert [reached["gp", seed] is not None for seed in (0, 1, 2)] == [True, True, True]
    assert [reached["tpe", seed] is not None for seed in (0, 1, 2)] == [False, True, False]
    assert all(s["best_validation"] <= facts["grid_best"] for s in facts["searches"] if s["sampler"] == "gp")


def test_the_accuracy_run_counts_each_sampler() -> None:
    row = search_vs_grid.headline(ACCURACY_RUN)
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


def _hand_log_loss(path: Path) -> float:
    """Mean over a records file's examples of log Σ_y exp s(y) − s(gold), by hand (max subtracted)."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()
    labels = json.loads(lines[0])["meta"]["labels"]
    losses = []
    for line in lines[1:]:
        record = json.loads(line)
        scores = record["scores"]
        top = max(scores)
        losses.append(top + math.log(sum(math.exp(s - top) for s in scores)) - scores[labels.index(record["gold"])])
    return sum(losses) / len(losses)


def _set_trial_log_losses(folder: Path, value_of: Callable[[int], float]) -> None:
    """Add a ``log_loss`` column to ``folder/trials.csv``: trial n gets ``value_of(n)``."""
    trials = folder / "trials.csv"
    rows = list(csv.DictReader(io.StringIO(trials.read_text(encoding="utf-8"))))
    for row in rows:
        row["log_loss"] = repr(value_of(int(row["trial"])))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    trials.write_text(buffer.getvalue(), encoding="utf-8")


def _log_loss_data(tmp_path: Path) -> tuple[Path, float]:
    """The committed run as if run with ``objective: log_loss``: every grid point's validation log loss
    computed by hand from its records, the grid's choice their minimum g; the trials' log losses set so that
    tpe seed 0 stays at g + 0.05 (not reached), tpe seed 1 reaches g − 0.01 at its 6th trial, tpe seed 2
    equals g at its 3rd trial (and later g − 0.002), and every gp trial is g + 0.001 (not reached). The
    searches' choices and every test record stay the committed ones. Returns the folder and g."""
    data = tmp_path / "log-loss"
    shutil.copytree(ACCURACY_RUN, data)
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    record["settings"]["objective"] = "log_loss"
    (data / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    sweep_file = data / search_vs_grid.GRID_FOLDER / "sweep.json"
    grid = json.loads(sweep_file.read_text(encoding="utf-8"))
    for row in grid["validation"]:
        row["metrics"]["log_loss"] = row["log_loss"] = _hand_log_loss(data / search_vs_grid.GRID_FOLDER / row["examples"])
    chosen = min(grid["validation"], key=lambda row: row["log_loss"])
    grid.update(metric="log_loss", direction="min", best_point=chosen["point"], best_validation=chosen["log_loss"])
    sweep_file.write_text(json.dumps(grid), encoding="utf-8")
    best = chosen["log_loss"]
    _set_trial_log_losses(data / search_vs_grid.search_folder("tpe", 0), lambda n: best + 0.05)
    _set_trial_log_losses(data / search_vs_grid.search_folder("tpe", 1), lambda n: best - 0.01 if n == 5 else best + 0.1)
    _set_trial_log_losses(data / search_vs_grid.search_folder("tpe", 2),
                          lambda n: {2: best, 10: best - 0.002}.get(n, best + 0.2))
    for seed in (0, 1, 2):
        _set_trial_log_losses(data / search_vs_grid.search_folder("gp", seed), lambda n: best + 0.001)
    return data, best


def test_a_log_loss_objective_is_minimised_and_reported_with_accuracy_beside_it(tmp_path: Path) -> None:
    data, best = _log_loss_data(tmp_path)
    facts = search_vs_grid.analyse(data)
    assert facts["objective"] == "log_loss" and facts["direction"] == "min"
    assert facts["grid_best"] == pytest.approx(best) and facts["grid_ties"] == 1
    by_run = {(s["sampler"], s["seed"]): s for s in facts["searches"]}
    assert [by_run["tpe", seed]["reached_at"] for seed in (0, 1, 2)] == [None, 6, 3]  # ≤ the grid's best
    assert [by_run["gp", seed]["reached_at"] for seed in (0, 1, 2)] == [None, None, None]  # g + 0.001 is worse
    assert [by_run["tpe", seed]["best_validation"] for seed in (0, 1, 2)] == pytest.approx(
        [best + 0.05, best - 0.01, best - 0.002])
    # Δ log loss (search − grid) on test: the difference of the two test records' mean log losses, by hand
    committed = ACCURACY_RUN
    grid_test = json.loads((committed / "grid" / "sweep.json").read_text(encoding="utf-8"))
    grid_loss = _hand_log_loss(committed / "grid" / next(r for r in grid_test["test"] if r["label"] == "best")["examples"])
    folder = committed / search_vs_grid.search_folder("tpe", 0)
    summary = json.loads((folder / "search.json").read_text(encoding="utf-8"))
    search_loss = _hand_log_loss(folder / next(r for r in summary["test"] if r["label"] == "best")["examples"])
    tpe0 = by_run["tpe", 0]
    assert tpe0["log_loss_difference"]["estimate"] == pytest.approx(search_loss - grid_loss)
    assert tpe0["chosen_accuracy"] == summary["chosen"]["metrics"]["accuracy"]
    grid_row = next(r for r in json.loads((data / "grid" / "sweep.json").read_text())["validation"]
                    if r["point"] == facts["grid"]["best_point"])
    assert facts["grid_chosen_accuracy"] == grid_row["metrics"]["accuracy"]

    page = search_vs_grid.render_page(data)
    assert ("| run | evaluations | best val log loss | val acc of chosen | reached grid best at | chosen point | "
            "test acc [95% CI] | test Δ acc vs grid [95% CI] | McNemar p | test Δ log loss vs grid [95% CI] | "
            "permutation p |") in page
    assert f"| grid | 125 | {best:.3f} | {grid_row['metrics']['accuracy']:.3f} | – |" in page
    assert f"| search tpe, seed 0 | 41 | {best + 0.05:.3f} | {tpe0['chosen_accuracy']:.3f} | not reached |" in page
    assert f"| search tpe, seed 1 | 41 | {best - 0.01:.3f} | " in page and "| trial 6 |" in page
    assert f"| {format_interval(tpe0['log_loss_difference'], 3)} | {tpe0['log_loss_p_value']:.3g} |" in page
    assert "A search reaches the grid when its best validation log loss is at most the grid's best." in page
    assert f"The grid's best validation log loss is {best:.3f}, held by 1 of 125 grid points." in page
    assert "- tpe: reached the grid's best for 2 of 3 sampler seeds." in page
    assert "- gp: reached the grid's best for 0 of 3 sampler seeds." in page
    assert "The grid's best is the smallest of 125 noisy validation scores" in page
    assert "continuous score" in page and "smooth surface" in page
    assert "one example moves it by" not in page and "validation accuracy is the quantity" not in page.lower()
    row = search_vs_grid.headline(data)
    assert f"reached the grid's best validation log loss ({best:.3f}; the objective, minimised)" in row["ours"]
    assert "TPE: 2 of 3 seeds; GP: 0 of 3 seeds" in row["ours"] and row["verdict"] == "met for 2 of 3 seeds (TPE)"


def test_an_explicit_accuracy_objective_renders_the_committed_page_and_others_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "search"
    shutil.copytree(ACCURACY_RUN, data)
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    assert "objective" not in record["settings"]  # the committed run predates the setting: accuracy
    record["settings"]["objective"] = "accuracy"
    (data / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert search_vs_grid.render_page(data) == search_vs_grid.render_page(ACCURACY_RUN)
    assert search_vs_grid.objective_direction(record["settings"]) == "max"
    assert search_vs_grid.objective_direction({"objective": "log_loss"}) == "min"
    with pytest.raises(search_vs_grid.common.DataError, match="objective must be one of accuracy, log_loss"):
        search_vs_grid.objective({"objective": "macro_f1"})


def test_the_recipe_optimises_log_loss() -> None:
    settings = search_vs_grid.common.load_config(search_vs_grid.NAME)
    assert search_vs_grid.objective(settings) == "log_loss"
    assert search_vs_grid.objective(search_vs_grid.common.load_config(search_vs_grid.NAME, quick=True)) == "log_loss"
