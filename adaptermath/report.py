"""report(): re-render a results folder's Markdown page and plots from its files alone (no model).

A results folder is

* a sweep (``sweep.json``; per-example records under ``examples/``): the page is
  :func:`adaptermath.sweep.sweep_markdown`, the plot ``sweep.png`` with its interval band;
* a sweep over seeds (``sweep.json`` of format ``adaptermath.sweep-seeds/1`` and ``seed-N/``
  folders): the across-seeds table then each seed's page; each ``seed-N/`` is re-rendered too;
* a search (``search.json``; records under ``examples/``): the page is
  :func:`adaptermath.search.search_markdown` -- the choice, the test table with intervals and the
  paired comparisons; its plots are drawn from the study (``adaptermath search``), not re-rendered;
* a folder of eval summaries (``NAME.json`` written by ``adaptermath eval -o``): one table of
  every metric with its interval;
* an experiment's work folder in the older ``results.json`` form (none of the shipped experiments
  writes one any more; ``EXPERIMENTS`` is empty);
* an experiment's data folder (``run.json`` of an experiment in ``DATA_EXPERIMENTS``, as committed
  under ``docs/results/data/NAME/``): its page and plot, rendered by the experiment's own
  ``render_page(folder, plot_name)`` and ``plot(folder, path)`` (plot file ``PLOT_NAME``).

The page is written to ``report.md``. Rendering is a pure function of the JSON files (numbers
formatted at fixed precision, plots without dates), so it gives the same bytes every time;
``check=True`` compares instead of writing and raises :class:`ReportMismatchError` on a difference.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AdapterMathError

REPORT_FILE = "report.md"
EXPERIMENTS: tuple[str, ...] = ()
DATA_EXPERIMENTS = ("detox", "distribution", "domain_transfer", "init_ablation", "multitask")


class ReportMismatchError(AdapterMathError):
    """A results folder's page or plot differs from what its data files render to."""


@dataclass
class Report:
    """The rendered page and the files (relative to the folder) that make up the report."""

    folder: Path
    kind: str  # "sweep" | "sweep-seeds" | "search" | "eval" | "experiment:NAME"
    markdown: str
    files: list[str] = field(default_factory=list)
    plot_note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "kind": self.kind, "files": self.files, "plot_note": self.plot_note}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterMathError(f"{path}: cannot read it as JSON ({type(exc).__name__})") from None


def eval_markdown(runs: dict[str, dict[str, Any]]) -> str:
    """One table: for each eval summary (by file name), each metric with its interval."""
    lines = ["## Evaluations", "", "| run | task | metric | estimate | interval | method |", "|---|---|---|---:|---:|---|"]
    for name, payload in runs.items():
        for metric, item in (payload.get("intervals") or {}).items():
            lines.append(f"| {name} | {payload.get('task')} | {metric} | {item['estimate']:.4f} | "
                         f"[{item['low']:.4f}, {item['high']:.4f}] | {item['method']} {item['confidence']:.0%} |")
    return "\n".join(lines) + "\n"


def _render(folder: Path, into: Path) -> Report:
    """Render ``folder``'s report into ``into`` (the folder itself, or a scratch folder for a check)."""
    from .sweep import SEEDS_FORMAT, plot_sweep, seeds_markdown, sweep_markdown

    summary_path = folder / "sweep.json"
    if summary_path.is_file():
        summary = _read_json(summary_path)
        if summary.get("format") == SEEDS_FORMAT:
            files, note = [REPORT_FILE], None
            markdown = seeds_markdown(summary)
            seeds = summary.get("seeds")
            if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                raise AdapterMathError(f"{summary_path}: 'seeds' must be a list of integers")  # they name sub-folders
            for seed in seeds:
                seed_summary = _read_json(folder / f"seed-{seed}" / "sweep.json")
                (into / f"seed-{seed}").mkdir(parents=True, exist_ok=True)
                (into / f"seed-{seed}" / REPORT_FILE).write_text(sweep_markdown(seed_summary), encoding="utf-8")
                files.append(f"seed-{seed}/{REPORT_FILE}")
                try:
                    plot_sweep(seed_summary, into / f"seed-{seed}" / "sweep.png")
                    files.append(f"seed-{seed}/sweep.png")
                except AdapterMathError as exc:
                    note = str(exc)
            (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
            return Report(folder, "sweep-seeds", markdown, files, note)
        markdown = sweep_markdown(summary)
        (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
        files, note = [REPORT_FILE], None
        try:
            plot_sweep(summary, into / "sweep.png")
            files.append("sweep.png")
        except AdapterMathError as exc:
            note = str(exc)
        return Report(folder, "sweep", markdown, files, note)
    search_path = folder / "search.json"
    if search_path.is_file():
        from .search import search_markdown

        markdown = search_markdown(_read_json(search_path))
        (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
        return Report(folder, "search", markdown, [REPORT_FILE])
    experiment_path = folder / "results.json"
    if experiment_path.is_file():
        document = _read_json(experiment_path)
        name = document.get("experiment") if isinstance(document, dict) else None
        if name in EXPERIMENTS:
            return _render_experiment(folder, into, str(name), document)
    run_path = folder / "run.json"
    if run_path.is_file():
        document = _read_json(run_path)
        name = document.get("experiment") if isinstance(document, dict) else None
        if name in DATA_EXPERIMENTS:
            return _render_experiment_data(folder, into, str(name))
    runs = {}
    for path in sorted(folder.glob("*.json")):
        payload = _read_json(path)
        if isinstance(payload, dict) and "task" in payload and "intervals" in payload and "result" in payload:
            runs[path.stem] = payload
    if not runs:
        raise AdapterMathError(f"{folder}: no sweep.json, no search.json and no eval summaries "
                               "(NAME.json from adaptermath eval -o)")
    markdown = eval_markdown(runs)
    (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Report(folder, "eval", markdown, [REPORT_FILE])


def _render_experiment(folder: Path, into: Path, name: str, document: dict[str, Any]) -> Report:
    """An experiment's page and λ plot from its ``results.json`` (the experiment's own renderers)."""
    import importlib

    module = importlib.import_module(f"adaptermath.experiments.{name}")
    files, note, plot_name = [REPORT_FILE], None, None
    if document.get("rows"):
        try:
            plotted = module.plot(document, into / f"{name}-lambda.png")
        except (AdapterMathError, ImportError) as exc:
            plotted, note = None, str(exc)
        if plotted is not None:
            plot_name = Path(plotted).name
            files.append(plot_name)
    markdown = module.render_page(document, plot_name)
    (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Report(folder, f"experiment:{name}", markdown, files, note)


def _render_experiment_data(folder: Path, into: Path, name: str) -> Report:
    """An experiment's page and plot from its data folder (the experiment's own pure renderers)."""
    import importlib

    module = importlib.import_module(f"adaptermath.experiments.{name}")
    files, note, plot_name = [REPORT_FILE], None, None
    try:
        plotted = module.plot(folder, into / module.PLOT_NAME)
    except (AdapterMathError, ImportError) as exc:
        plotted, note = None, str(exc)
    if plotted is not None:
        plot_name = Path(plotted).name
        files.append(plot_name)
    markdown = module.render_page(folder, plot_name)
    (into / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return Report(folder, f"experiment:{name}", markdown, files, note)


def report(folder: str | Path, *, check: bool = False) -> Report:
    """Re-render ``folder``'s ``report.md`` (and plots) from its data files; with ``check``, leave the
    folder untouched and raise :class:`ReportMismatchError` unless the files there are identical."""
    root = Path(folder)
    if not root.is_dir():
        raise AdapterMathError(f"{root}: not a results folder")
    if not check:
        return _render(root, root)
    with tempfile.TemporaryDirectory() as scratch:
        rendered = _render(root, Path(scratch))
        for name in rendered.files:
            existing = root / name
            if not existing.is_file():
                raise ReportMismatchError(f"{existing} is missing; run adaptermath report {root} to write it")
            if existing.read_bytes() != (Path(scratch) / name).read_bytes():
                raise ReportMismatchError(f"{existing} differs from what {root}'s data files render to")
    return rendered
