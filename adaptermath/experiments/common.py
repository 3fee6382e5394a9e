"""Shared scaffolding for the paper's experiments: config, work folder, caches, tables, plots.

Every experiment (``python -m adaptermath.experiments.<name>``) reads a commented YAML recipe
(``recipes/experiments/<name>.yaml``) whose ``quick:`` section overrides the full settings for a
smoke run, keeps everything under a work folder (default ``<cache root>/experiments/<name>``,
``quick`` runs under ``<name>-quick``), and is resumable:

* initial adapters: :func:`ensure_init` (written once per options, by :func:`adaptermath.init_adapter.init_adapter`);
* trained PEMs: :func:`adaptermath.experiments.train.train_pem` (cached by its ``training.json``);
* every evaluation: a :class:`ResultStore` (one JSON file, rewritten atomically after each entry),
  keyed by a string that names the adapter, λ, space and split, so an interrupted run skips what it
  already scored.

λ is chosen on validation scores only (:func:`choose_best`); the test split is scored afterwards.
The command line of every experiment is :func:`experiment_command`: ``collect`` writes its data folder
with :func:`write_data_folder`, and the page and plot (:func:`save_figure`) are rebuilt from that
folder alone (``--render``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptermath.errors import DataError
from adaptermath.experiments.assets import cache_root

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes" / "experiments"
RESULTS_DOCS_DIR = Path(__file__).resolve().parents[2] / "docs" / "results"


def console() -> Any:
    """The rich console experiments print progress and tables to."""
    from rich.console import Console

    global _CONSOLE
    if _CONSOLE is None:
        _CONSOLE = Console(highlight=False)
    return _CONSOLE


_CONSOLE: Any = None


def log(message: str) -> None:
    """One timestamped progress line."""
    console().print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def train_logged(label: str, **options: Any) -> Any:
    """:func:`adaptermath.experiments.train.train_pem` with a progress line every quarter of the steps."""
    from adaptermath.experiments.train import train_pem

    steps = int(options.get("steps", 100))
    every = max(1, steps // 4)

    def progress(step: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            log(f"  {label}: step {step}/{steps} loss {loss:.3f}")

    result = train_pem(progress=progress, **options)
    if result.skipped:
        log(f"  {label}: cached ({options['output_dir']})")
    else:
        log(f"  {label}: trained in {result.record['seconds']:.0f} s, loss {result.record['loss_first']:.3f} → "
            f"{result.record['loss_last']:.3f}")
    return result


# --- configuration -------------------------------------------------------------------------------


def merge_settings(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied recursively (nested mappings merge, anything else replaces)."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(name: str, path: str | os.PathLike[str] | None = None, *, quick: bool = False) -> dict[str, Any]:
    """The experiment's settings: the YAML recipe, with its ``quick:`` section applied when ``quick``."""
    import yaml

    source = Path(path) if path is not None else RECIPES_DIR / f"{name}.yaml"
    if not source.exists():
        raise DataError(f"experiment config {source} does not exist")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"cannot read {source}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(raw, Mapping):
        raise DataError(f"{source} must hold a mapping of settings")
    quick_settings = raw.get("quick") or {}
    settings = {k: v for k, v in raw.items() if k != "quick"}
    if quick:
        settings = merge_settings(settings, quick_settings)
    settings["quick"] = quick
    settings["config_path"] = str(source)
    return settings


def default_workdir(name: str, *, quick: bool = False) -> Path:
    """``<cache root>/experiments/<name>`` (``<name>-quick`` for quick runs)."""
    return cache_root() / "experiments" / (f"{name}-quick" if quick else name)


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short SHA-256 of the settings that change results (paths and the quick flag left out)."""
    relevant = {k: v for k, v in settings.items() if k not in ("config_path",)}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


# --- caches --------------------------------------------------------------------------------------


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary sibling and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(staging, path)


class ResultStore:
    """Evaluation results by key in one JSON file; ``get_or_compute`` makes every stage resumable.

    The file holds ``{"fingerprint": ..., "results": {key: value}}``. A file written with other
    settings (a different fingerprint) is set aside as ``<name>.stale.json`` and a fresh one begun.
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.results: dict[str, Any] = {}
        if self.path.exists():
            try:
                stored = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                stored = {}
            if stored.get("fingerprint") == fingerprint:
                self.results = dict(stored.get("results", {}))
            else:
                os.replace(self.path, self.path.with_suffix(".stale.json"))

    def __contains__(self, key: str) -> bool:
        return key in self.results

    def get(self, key: str) -> Any:
        return self.results.get(key)

    def put(self, key: str, value: Any) -> None:
        self.results[key] = value
        write_json_atomic(self.path, {"fingerprint": self.fingerprint, "results": self.results})

    def get_or_compute(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.results:
            self.put(key, compute())
        return self.results[key]


def ensure_init(base_model: str | os.PathLike[str], output: str | os.PathLike[str], **options: Any) -> Path:
    """The initial adapter at ``output``: written by ``init_adapter`` unless already there with these options."""
    from adaptermath.init_adapter import init_adapter

    output = Path(output)
    marker = output / "experiment-init-options.json"
    wanted = json.loads(json.dumps({"base_model": str(base_model), **options}, default=str))
    if marker.exists() and json.loads(marker.read_text()) == wanted and (output / "adapter_model.safetensors").exists():
        return output
    init_adapter(base_model, output, force=output.exists(), **options)
    marker.write_text(json.dumps(wanted, indent=2, sort_keys=True) + "\n")
    return output


# --- selection -----------------------------------------------------------------------------------


def choose_best(scores: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The ``(λ, validation score)`` with the highest score; ties go to the first in grid order."""
    if not scores:
        raise DataError("no validation scores to choose from")
    best = scores[0]
    for candidate in scores[1:]:
        if candidate[1] > best[1]:
            best = candidate
    return best


def lambda_grid(start: float, stop: float, step: float) -> list[float]:
    """``start, start+step, …, stop`` (stop included), rounded to 10 decimals."""
    if step <= 0 or stop < start:
        raise DataError(f"a λ grid needs step > 0 and stop ≥ start, got {start}:{stop}:{step}")
    count = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 10) for i in range(count)]


# --- reporting -----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Python, the key packages and the machine, for the results pages."""
    import peft
    import torch
    import transformers

    from adaptermath.version import __version__

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "adaptermath": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores visible, torch threads {torch.get_num_threads()}",
        "platform": platform.platform(),
        "load_average": f"{os.getloadavg()[0]:.1f}",
    }


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall-clock seconds of the block to ``timings[stage]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - started, 1)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` decimals, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells formatted by :func:`fmt`)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell) for cell in row) + " |")
    return "\n".join(lines)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, target)
    return target


def write_gzip_text(path: str | os.PathLike[str], text: str) -> Path:
    """``text`` gzip-compressed at ``path`` with no timestamp or file name inside, so the bytes depend on the text alone."""
    import gzip

    target = Path(path)
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
        handle.write(text.encode("utf-8"))
    return target



# --- MiniLM classifiers (a LoRA / (IA)^3 body plus a head in modules_to_save) ---------------------


def minilm_init(workdir: Path, kind: str, adapter: Mapping[str, Any], *, seed: int, num_labels: int, tag: str = "") -> Path:
    """The seeded initial adapter of all-MiniLM-L6-v2 for sequence classification (head in ``modules_to_save``)."""
    from adaptermath.experiments.assets import minilm_model_dir

    folder = workdir / "init" / f"{kind}-labels{num_labels}-seed{seed}{tag}"
    return ensure_init(
        minilm_model_dir(), folder, kind=kind, task_type="SEQ_CLS", seed=seed, num_labels=num_labels,
        modules_to_save=["classifier"], target_modules=adapter.get("target_modules"),
        feedforward_modules=adapter.get("feedforward_modules"), r=int(adapter.get("r", 8)),
        lora_alpha=adapter.get("alpha"),
    )  # fmt: skip


def train_head_pem(label: str, init: Path, rows: Sequence[Mapping[str, Any]], output: Path, *,
                   adapter: Mapping[str, Any], train: Mapping[str, Any], seed: int, threads: int,
                   steps: int | None = None) -> Path:
    """Train a MiniLM classifier PEM from ``init`` on ``rows`` (cached by ``training.json``)."""
    from adaptermath.experiments.assets import minilm_model_dir

    result = train_logged(
        label, base_model_dir=minilm_model_dir(), init_adapter_dir=init, data=list(rows), output_dir=output,
        objective="classification", steps=int(steps or train["steps"]), lr=float(adapter["lr"]),
        batch_size=int(train["batch_size"]), max_length=int(train["max_length"]), seed=seed,
        warmup_steps=int(train.get("warmup_steps", 0)), num_threads=threads, force=True,
    )  # fmt: skip
    return result.output


class HeadEvaluator:
    """Scores adapters (folders or composed) on MiniLM with a ``num_labels`` head; one live model per label count."""

    def __init__(self, *, batch_size: int = 64, max_length: int = 64):
        self.batch_size = batch_size
        self.max_length = max_length
        self.models: dict[int, Any] = {}
        self.tokenizer: Any = None

    def attach(self, adapter: Any, num_labels: int) -> Any:
        from adaptermath.evaluation import attach_adapter, load_base_model
        from adaptermath.experiments.assets import minilm_model_dir

        if num_labels not in self.models:
            loaded = load_base_model(minilm_model_dir(), task="seq-cls", num_labels=num_labels)
            self.models[num_labels] = loaded.model
            self.tokenizer = loaded.tokenizer
        self.models[num_labels] = attach_adapter(self.models[num_labels], adapter)
        return self.models[num_labels]

    def score(self, model: Any, rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
        from adaptermath.evaluation import evaluate_classification

        result = evaluate_classification(model, self.tokenizer, list(rows), labels=list(labels), method="head",
                                         batch_size=self.batch_size, max_length=self.max_length)
        return {"accuracy": result.accuracy, "macro_f1": result.macro_f1, "log_loss": result.log_loss,
                "num_examples": len(rows)}

    def evaluate(self, adapter: Any, rows: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
        return self.score(self.attach(adapter, len(labels)), rows, labels)


def sized_splits(rows: Sequence[Mapping[str, Any]], seed: int, sizes: Mapping[str, int]) -> dict[str, list[Any]]:
    """A seeded 80/10/10 split of ``rows``, each part capped at ``sizes[train|val|test]``."""
    from adaptermath.experiments.datasets import train_val_test_split

    train, val, test = train_val_test_split(list(rows), seed)
    return {"train": train[: sizes["train"]], "val": val[: sizes["val"]], "test": test[: sizes["test"]]}


def keep_work_timings(previous: Path, document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with ``timings[stage] = max(previous run's, this run's)`` when ``previous`` has the same settings."""
    merged = dict(document)
    if previous.exists():
        try:
            old = json.loads(previous.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = {}
        if settings_fingerprint(old.get("settings") or {}) == settings_fingerprint(document.get("settings") or {}):
            timings = dict(old.get("timings") or {})
            for stage, seconds in (document.get("timings") or {}).items():
                timings[stage] = max(float(seconds), float(timings.get(stage, 0.0)))
            merged["timings"] = timings
            if old.get("timing_note") and "timing_note" not in merged:
                merged["timing_note"] = old["timing_note"]
    return merged


def environment_lines(versions: Mapping[str, str]) -> list[str]:
    """The page lines naming the package versions and the machine a run used."""
    machine_keys = ("machine", "platform", "load_average")
    load = (f"1-minute load average {versions['load_average']} when it finished" if "load_average" in versions
            else "a shared VM: other jobs may have run beside it")
    return [
        f"- Versions: {', '.join(f'{k} {v}' for k, v in versions.items() if k not in machine_keys)}.",
        f"- Machine: {versions['machine']} ({versions['platform']}), {load}.",
    ]


def write_data_folder(data: Path, record: Mapping[str, Any], files: Mapping[str, str]) -> Path:
    """Replace ``data`` with ``run.json`` (``record``) and ``files`` (name → text; a ``.gz`` name is written
    with :func:`write_gzip_text`), built in a staging sibling and renamed into place."""
    staging = data.with_name(f".{data.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, text in files.items():
        if name.endswith(".gz"):
            write_gzip_text(staging / name, text)
        else:
            (staging / name).write_text(text, encoding="utf-8")
    (staging / "run.json").write_text(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.rmtree(data, ignore_errors=True)
    staging.rename(data)
    return data


def save_figure(figure: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG without a date or software stamp (the same bytes every time), and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(figure)
    return path


PROFILES = ("full", "smoke")


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """``--profile full|smoke`` and its short form ``--quick`` (= ``--profile smoke``): the smoke profile
    applies the recipe's ``quick:`` section, a few-minute end-to-end run whose numbers mean nothing."""
    parser.add_argument("--profile", choices=PROFILES, default="full",
                        help="full: the recipe as pre-registered; smoke: its quick: section (minutes, numbers mean nothing)")
    parser.add_argument("--quick", action="store_true", help="the same as --profile smoke")


def experiment_command(module: Any, description: str, argv: Sequence[str] | None = None, *,
                       default_threads: int = 2) -> None:
    """The command line of an experiment ``module`` (its ``NAME``, ``run``, ``collect``, ``render_page``,
    ``PAGE_NAME``, ``DATA_FOLDER``, and ``plot``/``PLOT_NAME`` when it has a plot): run it (resumable) and
    collect its data folder, or with ``--render`` only rebuild the page (and plot) from that folder."""
    name = module.NAME
    parser = argparse.ArgumentParser(prog=f"python -m adaptermath.experiments.{name}", description=description)
    add_profile_options(parser)
    parser.add_argument("--workdir", type=Path, default=None,
                        help=f"work folder, resumable (default {default_workdir(name)}; -quick suffix with the smoke profile)")
    parser.add_argument("--config", type=Path, default=None, help=f"settings file (default recipes/experiments/{name}.yaml)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="where the page, plot and data folder go (default docs/results; <workdir>/page with --quick)")
    parser.add_argument("--threads", type=int, default=default_threads, help=f"torch threads (default {default_threads})")
    parser.add_argument("--render", action="store_true", help="only regenerate the page and plot from the data folder")
    args = parser.parse_args(argv)
    args.quick = args.quick or args.profile == "smoke"
    workdir = args.workdir or default_workdir(name, quick=args.quick)
    docs = args.docs or (workdir / "page" if args.quick else RESULTS_DOCS_DIR)
    data = docs / module.DATA_FOLDER
    if not args.render:
        settings = load_config(name, args.config, quick=args.quick)
        started = time.perf_counter()
        record = module.run(settings, workdir, threads=args.threads)
        record["timings"]["total"] = round(time.perf_counter() - started, 1)
        record = keep_work_timings(workdir / "run.json", record)
        write_json_atomic(workdir / "run.json", {k: v for k, v in record.items() if k != "evaluations"})
        module.collect(workdir, data, record)
    if not (data / "run.json").is_file():
        raise SystemExit(f"error: {data} holds no run.json; run the experiment first (without --render)")
    if hasattr(module, "plot"):
        plotted = module.plot(data, docs / module.PLOT_NAME)
        page = write_text_atomic(docs / module.PAGE_NAME, module.render_page(data, plotted.name if plotted else None))
    else:
        page = write_text_atomic(docs / module.PAGE_NAME, module.render_page(data))
    log(f"page: {page}")


class EvaluationStore:
    """One JSON file per evaluation in ``folder`` (a re-run skips what is there); each new record carries
    ``slug`` and the ``seconds`` it took, and is logged with ``describe(record)``."""

    def __init__(self, folder: Path, describe: Callable[[Mapping[str, Any]], str]):
        self.folder = folder
        self.describe = describe
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, compute: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        path = self.folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        started = time.perf_counter()
        record = {"slug": name, **compute()}
        record["seconds"] = round(time.perf_counter() - started, 1)
        log(f"  {name}: {record['seconds']:.0f} s, {self.describe(record)}")
        write_json_atomic(path, record)
        return record


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a gzip file (a data folder's per-evaluation records)."""
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
