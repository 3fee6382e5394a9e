"""Every results page rebuilt from its committed data alone: ``python -m adaptermath.experiments.pages``.

Each experiment module listed in :data:`EXPERIMENTS` has ``PAGE_NAME``, ``DATA_FOLDER`` (relative to
``docs/results``) and ``render_page(data_folder)``, a pure function of the data folder; those with
a plot also have ``PLOT_NAME`` and ``plot(data_folder, path)``. ``--check`` rebuilds nothing and
exits 1 when a committed page differs from what its data gives (the default test suite checks the
same thing page by page).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from adaptermath.experiments import common

EXPERIMENTS = ("detox", "domain_transfer", "search_vs_grid")


def experiment(name: str) -> ModuleType:
    return importlib.import_module(f"adaptermath.experiments.{name}")


def render(name: str, docs: Path = common.RESULTS_DOCS_DIR) -> str:
    """The page of experiment ``name`` as its committed data gives it."""
    module = experiment(name)
    return module.render_page(docs / module.DATA_FOLDER)


def stale_pages(docs: Path = common.RESULTS_DOCS_DIR) -> list[str]:
    """The pages whose committed text differs from what their data gives."""
    stale = []
    for name in EXPERIMENTS:
        page = docs / experiment(name).PAGE_NAME
        if not page.is_file() or page.read_text(encoding="utf-8") != render(name, docs):
            stale.append(page.name)
    return stale


def rebuild(docs: Path = common.RESULTS_DOCS_DIR) -> list[Path]:
    """Write every page (and plot) from its data folder; return the pages written."""
    written = []
    for name in EXPERIMENTS:
        module = experiment(name)
        data = docs / module.DATA_FOLDER
        if hasattr(module, "plot"):
            module.plot(data, docs / module.PLOT_NAME)
        written.append(common.write_text_atomic(docs / module.PAGE_NAME, module.render_page(data)))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adaptermath.experiments.pages",
                                     description="Rebuild every results page (and plot) from its committed data.")
    parser.add_argument("--docs", type=Path, default=common.RESULTS_DOCS_DIR, help="the results folder (default docs/results)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs from its data")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs)
        if stale:
            raise SystemExit(f"error: these pages differ from what their data gives: {', '.join(stale)}")
        common.log(f"all {len(EXPERIMENTS)} pages match their data")
        return
    for page in rebuild(args.docs):
        common.log(f"page: {page}")


if __name__ == "__main__":
    main()
