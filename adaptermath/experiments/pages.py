"""Every results page rebuilt from its committed data alone: ``python -m adaptermath.experiments.pages``.

Each experiment module listed in :data:`EXPERIMENTS` has ``PAGE_NAME``, ``DATA_FOLDER`` (relative to
``docs/results``) and ``render_page(data_folder)``, a pure function of the data folder; those with
a plot also have ``PLOT_NAME`` and ``plot(data_folder, path)``, and every one has
``headline(data_folder)``: its row of the table in ``docs/results/README.md`` (the paper's claim,
our effect with its interval, the verdict), which is generated between :data:`BEGIN` and
:data:`END` like the pages. ``--check`` rebuilds nothing and exits 1 when a committed page differs
from what its data gives (the default test suite checks the same thing page by page).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from adaptermath.experiments import common

EXPERIMENTS = ("detox", "distribution", "multitask", "domain_transfer", "init_ablation", "search_vs_grid")
# The paper's experiments not yet re-run under the pre-registered protocol (old pages with no data behind them).
LEGACY: dict[str, str] = {}
INDEX = "README.md"
BEGIN = "<!-- BEGIN GENERATED: python -m adaptermath.experiments.pages -->"
END = "<!-- END GENERATED -->"


def experiment(name: str) -> ModuleType:
    return importlib.import_module(f"adaptermath.experiments.{name}")


def render(name: str, docs: Path = common.RESULTS_DOCS_DIR) -> str:
    """The page of experiment ``name`` as its committed data gives it."""
    module = experiment(name)
    return module.render_page(docs / module.DATA_FOLDER)


def index_table(docs: Path = common.RESULTS_DOCS_DIR) -> str:
    """The README's table: one row per experiment, from each experiment's ``headline`` (legacy rows say so)."""
    rows = []
    for name in EXPERIMENTS:
        module = experiment(name)
        row = module.headline(docs / module.DATA_FOLDER)
        rows.append([row["experiment"], f"[{module.PAGE_NAME}]({module.PAGE_NAME})", row["paper"], row["ours"],
                     f"**{row['verdict']}**"])
    for name, title in LEGACY.items():
        rows.append([title, f"[{name}.md]({name}.md)", "see the page", "old run, no committed data (see below)",
                     "not re-run under the pre-registered protocol"])
    return common.markdown_table(["experiment", "page", "the paper's claim", "ours (effect, 95% interval)", "verdict"], rows)


def render_index(current: str, docs: Path = common.RESULTS_DOCS_DIR) -> str:
    """``current`` (README.md's text) with the part between BEGIN and END replaced by :func:`index_table`."""
    if BEGIN not in current or END not in current:
        raise common.DataError(f"{INDEX} has no {BEGIN!r} ... {END!r} section")
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{index_table(docs)}\n{END}{tail}"


def stale_pages(docs: Path = common.RESULTS_DOCS_DIR) -> list[str]:
    """The pages (and README.md) whose committed text differs from what their data gives."""
    stale = []
    for name in EXPERIMENTS:
        page = docs / experiment(name).PAGE_NAME
        if not page.is_file() or page.read_text(encoding="utf-8") != render(name, docs):
            stale.append(page.name)
    index = (docs / INDEX).read_text(encoding="utf-8")
    if render_index(index, docs) != index:
        stale.append(INDEX)
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
    index = docs / INDEX
    written.append(common.write_text_atomic(index, render_index(index.read_text(encoding="utf-8"), docs)))
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
