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
    first_seed = before["record"]["settings"]["search_seeds"][0]
    trials = data / search_vs_grid.seed_folder(first_seed) / "trials.csv"
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
    assert "REDUCED --quick run" in page and "| search, seed 0 |" in page
    data = docs / search_vs_grid.DATA_FOLDER
    assert not list(data.rglob("*.db")) and list(data.rglob("*.jsonl.gz"))
    search_vs_grid.main(["--quick", "--render", "--workdir", str(tmp_path / "work"), "--docs", str(docs)])
    assert (docs / search_vs_grid.PAGE_NAME).read_text(encoding="utf-8") == page
