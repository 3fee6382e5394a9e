"""Every results page regenerates byte for byte from the data committed beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptermath.experiments import pages

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# Pages written before results became data: no data folder behind them; docs/results/README.md says so.
LEGACY_PAGES: set[str] = set()


@pytest.mark.parametrize("name", pages.EXPERIMENTS)
def test_the_page_regenerates_from_its_data(name: str) -> None:
    module = pages.experiment(name)
    assert (RESULTS / module.PAGE_NAME).read_text(encoding="utf-8") == pages.render(name, RESULTS)


def test_every_page_is_generated_or_listed_as_legacy() -> None:
    generated = {pages.experiment(name).PAGE_NAME for name in pages.EXPERIMENTS}
    on_disk = {path.name for path in RESULTS.glob("*.md")} - {"README.md"}
    assert on_disk == generated | LEGACY_PAGES
    assert not generated & LEGACY_PAGES


def test_check_reports_a_stale_page(tmp_path: Path) -> None:
    import shutil

    docs = tmp_path / "results"
    shutil.copytree(RESULTS, docs)
    assert pages.stale_pages(docs) == []
    page = docs / pages.experiment("search_vs_grid").PAGE_NAME
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert pages.stale_pages(docs) == [page.name]
    with pytest.raises(SystemExit, match="search.md"):
        pages.main(["--check", "--docs", str(docs)])
    pages.main(["--docs", str(docs)])
    assert pages.stale_pages(docs) == []
