"""Search against a grid on a real model: does ``adaptermath search`` find the grid's best with a third of its evaluations?

SmolLM2-135M-Instruct, the domain-transfer analogy (see :mod:`adaptermath.experiments.domain_transfer`)
with its three coefficients free, composed exactly in delta space::

    target_clf(c, t, s) = c·cls_source + t·lm_target − s·lm_source

* **grid**: ``grid_points`` values per axis over the settings' box, ``n = grid_points³`` validation
  evaluations (:func:`adaptermath.sweep`);
* **search**: ``⌊n / 3⌋`` trials over the same box for each of the settings' ``samplers`` and each sampler
  seed, one study per (sampler, seed) (:func:`adaptermath.search`; :func:`search_runs` lists them).

A search *reaches the grid* when its best validation accuracy is ≥ the grid's best; the page reports,
per sampler and seed, the best value and the first trial that reached the grid's best. Each choice is
scored on the target's test split (with intervals) and the search's choice is compared with the grid's on
the same test examples (paired bootstrap interval of the accuracy difference, exact McNemar test).

Everything the page says is read from the data folder (``docs/results/data/search/``): each run's
``sweep.json`` / ``search.json``, ``trials.csv`` and per-example records (``examples/*.jsonl.gz``), and
``run.json`` (settings, sizes, versions, runtimes). :func:`render_page` is a pure function of that
folder, so ``python -m adaptermath.experiments.search_vs_grid --render`` regenerates
``docs/results/search.md`` byte for byte, and a test checks that it does. Data written before
``samplers`` existed has one ``sampler`` in its settings and folders ``search-seed-{seed}``; it still
renders to the page it gave then.

Run: ``python -m adaptermath.experiments.search_vs_grid [--quick] [--workdir DIR]``; settings in
``recipes/experiments/search_vs_grid.yaml``.
"""

from __future__ import annotations

import sys
import csv
import io
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from adaptermath.experiments import common

NAME = "search_vs_grid"
PAGE_NAME = "search.md"
DATA_FOLDER = "data/search"
LABELS = ("negative", "positive")
GRID_FOLDER = "grid"
KEPT_SUFFIXES = (".json", ".csv", ".jsonl.gz")
# Each sampler's name as headline() writes it.
SAMPLER_NAMES = {"tpe": "TPE", "gp": "GP", "cmaes": "CMA-ES", "random": "random", "nsga2": "NSGA-II"}


def search_trials(grid_points: int, variables: int) -> int:
    """The search's budget: a third of the grid's evaluations, ⌊grid_points^variables / 3⌋ (at least 1)."""
    return max(1, grid_points**variables // 3)


def grid_values(low: float, high: float, points: int) -> list[float]:
    """``points`` evenly spaced values from ``low`` to ``high`` inclusive (rounded to 12 digits)."""
    if points == 1:
        return [float(low)]
    return [round(low + (high - low) * i / (points - 1), 12) for i in range(points)]


def seed_folder(seed: int) -> str:
    """The folder of the search with sampler seed ``seed`` in data with one ``sampler`` (the old layout)."""
    return f"search-seed-{seed}"


def search_folder(sampler: str, seed: int) -> str:
    """The folder of the search by ``sampler`` with sampler seed ``seed`` in data with ``samplers``."""
    return f"search-{sampler}-seed-{seed}"


class SearchRun(NamedTuple):
    """One search of the experiment: its Optuna sampler, its sampler seed, its folder (work and data folders)."""

    sampler: str
    seed: int
    folder: str


def several_samplers(settings: Mapping[str, Any]) -> bool:
    """Whether ``settings`` name their samplers as a list (``samplers``) rather than one ``sampler`` (the old form)."""
    if ("samplers" in settings) == ("sampler" in settings):
        raise common.DataError("the settings must have either 'samplers' (a list) or 'sampler', not both or neither")
    return "samplers" in settings


def search_runs(settings: Mapping[str, Any]) -> list[SearchRun]:
    """The searches the settings ask for: every sampler with every sampler seed, sampler by sampler."""
    seeds = [int(seed) for seed in settings["search_seeds"]]
    if several_samplers(settings):
        return [SearchRun(str(sampler), seed, search_folder(str(sampler), seed))
                for sampler in settings["samplers"] for seed in seeds]
    return [SearchRun(str(settings["sampler"]), seed, seed_folder(seed)) for seed in seeds]


def timing_key(settings: Mapping[str, Any], search: SearchRun) -> str:
    """The search's entry in run.json's timings (``search seed {seed}`` with one ``sampler``)."""
    if several_samplers(settings):
        return f"search {search.sampler} seed {search.seed}"
    return f"search seed {search.seed}"


def _write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows), encoding="utf-8")
    return path


def train_pems(base: Path, workdir: Path, settings: Mapping[str, Any],
               splits: Mapping[str, Mapping[str, list[dict[str, Any]]]], threads: int) -> dict[str, Path]:
    """``cls`` (source classifier), ``tgt`` and ``src`` (language-modelling PEMs), from one seeded init."""
    adapter = settings["adapter"]
    init = common.ensure_init(
        base, workdir / "init", kind="lora", task_type="CAUSAL_LM", seed=int(settings["seed"]),
        target_modules=adapter["target_modules"], r=int(adapter["r"]), lora_alpha=adapter["alpha"],
    )  # fmt: skip
    source, target = settings["source"], settings["target"]
    jobs = {
        "cls": ("classification", splits[source]["train"]),
        "tgt": ("lm", [row["text"] for row in splits[target]["train"]]),
        "src": ("lm", [row["text"] for row in splits[source]["train"]]),
    }
    folders: dict[str, Path] = {}
    for name, (objective, data) in jobs.items():
        options = settings["train"][objective]
        result = common.train_logged(
            name, base_model_dir=base, init_adapter_dir=init, data=data, output_dir=workdir / "pems" / name,
            objective=objective, steps=int(options["steps"]), lr=float(adapter["lr"][objective]),
            batch_size=int(options["batch_size"]), max_length=int(options["max_length"]), seed=int(settings["seed"]),
            template=settings["template"], label_words=LABELS, num_threads=threads, force=True,
        )  # fmt: skip
        folders[name] = result.output
    return folders


def run(settings: Mapping[str, Any], workdir: Path, *, threads: int = 1) -> dict[str, Any]:
    """Train the PEMs, run the grid and the searches (each resumable in ``workdir``); return run.json's content."""
    import torch

    from adaptermath.search import search
    from adaptermath.sweep import sweep, write_sweep_outputs
    from adaptermath.experiments.assets import smollm2_model_dir
    from adaptermath.experiments.domain_transfer import domain_splits

    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    base = smollm2_model_dir()
    source, target = settings["source"], settings["target"]
    splits = {domain: domain_splits(domain, settings) for domain in (source, target)}
    val = _write_rows(workdir / "data" / "val.jsonl", splits[target]["val"])
    test = _write_rows(workdir / "data" / "test.jsonl", splits[target]["test"])
    with common.timed(timings, "training"):
        operands = train_pems(base, workdir, settings, splits, threads)

    box = {name: (float(low), float(high)) for name, (low, high) in settings["box"].items()}
    points = int(settings["grid_points"])
    evaluator = {"labels": ",".join(LABELS), "template": settings["template"],
                 "max_length": int(settings["eval"]["max_length"])}
    common.log(f"grid: {points} values per axis over {box} ({points ** len(box)} evaluations)")
    with common.timed(timings, "grid"):
        grid = sweep(settings["expression"], operands, base=base, task="classification",
                     grid={n: grid_values(lo, hi, points) for n, (lo, hi) in box.items()}, val=val, test=test,
                     space=settings["space"], results=workdir / GRID_FOLDER / "results.jsonl", **evaluator)
        write_sweep_outputs(grid, workdir / GRID_FOLDER)
    trials = search_trials(points, len(box))
    for search_run in search_runs(settings):
        common.log(f"search {search_run.sampler} seed {search_run.seed}: {trials} trials")
        with common.timed(timings, timing_key(settings, search_run)):
            search(settings["expression"], operands, base=base, task="classification",
                   variables=[f"{n}={lo}:{hi}" for n, (lo, hi) in box.items()], val=val, test=test, trials=trials,
                   sampler=search_run.sampler, seed=search_run.seed, output=workdir / search_run.folder,
                   write_adapter=False, space=settings["space"], **evaluator)
    return {
        "experiment": NAME,
        "settings": {k: v for k, v in settings.items() if k != "config_path"},
        "sizes": {domain: {part: len(rows) for part, rows in parts.items()} for domain, parts in splits.items()},
        "grid_evaluations": points ** len(box),
        "search_trials": trials,
        "timings": timings,
        "versions": common.versions(),
    }


def collect(workdir: Path, data: Path, run_record: Mapping[str, Any]) -> Path:
    """Copy what the page reads into ``data`` (replaced): each run's summaries, trials and per-example
    records, and ``run.json``. Nothing else (no study database, no adapters, no plots)."""
    staging = data.with_name(f".{data.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    folders = [GRID_FOLDER, *(search_run.folder for search_run in search_runs(run_record["settings"]))]
    for folder in folders:
        for path in sorted((workdir / folder).rglob("*")):
            relative = path.relative_to(workdir / folder)
            if path.is_file() and path.name.endswith(KEPT_SUFFIXES) and path.name != "results.jsonl":
                (staging / folder / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, staging / folder / relative)
    (staging / "run.json").write_text(json.dumps(run_record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(data, ignore_errors=True)
    staging.rename(data)
    return data


# --------------------------------------------------------------------------- the page (pure)


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _trial_values(folder: Path) -> list[float]:
    """Validation accuracy of each complete trial, in trial order (``trials.csv``)."""
    rows = list(csv.DictReader(io.StringIO((folder / "trials.csv").read_text(encoding="utf-8"))))
    rows.sort(key=lambda row: int(row["trial"]))
    return [float(row["accuracy"]) for row in rows]


def _test_row(summary: Mapping[str, Any], label: str) -> Mapping[str, Any]:
    return next(row for row in summary["test"] if row["label"] == label)


def _interval(metrics: Mapping[str, Any]) -> str:
    from adaptermath.evaluation.evidence import format_interval

    return format_interval(metrics["intervals"]["accuracy"], 3)


def _method(metrics: Mapping[str, Any]) -> str:
    interval = metrics["intervals"]["accuracy"]
    return f"{interval['method']}, {100 * interval['confidence']:g}%"


def _point(point: Mapping[str, Any], order: Sequence[str]) -> str:
    return ", ".join(f"{name}={float(point[name]):.3g}" for name in order)


def analyse(data: Path) -> dict[str, Any]:
    """Every number on the page, computed from the data folder alone."""
    from adaptermath.evaluation.evidence import compare_examples, load_examples

    record = _read(data / "run.json")
    grid = _read(data / GRID_FOLDER / "sweep.json")
    grid_values_seen = [float(row["accuracy"]) for row in grid["validation"]]
    grid_best = max(grid_values_seen)
    grid_choice = _test_row(grid, "best")
    searches = []
    for search_run in search_runs(record["settings"]):
        folder = data / search_run.folder
        summary = _read(folder / "search.json")
        values = _trial_values(folder)
        reached = next((i + 1 for i, value in enumerate(values) if value >= grid_best - 1e-12), None)
        chosen = _test_row(summary, "best")
        comparison = compare_examples(load_examples(folder / chosen["examples"]),
                                      load_examples(data / GRID_FOLDER / grid_choice["examples"]))
        difference = comparison.by_metric()["accuracy"]
        searches.append({
            "sampler": search_run.sampler, "seed": search_run.seed, "trials": len(values),
            "best_validation": max(values), "reached_at": reached, "point": summary["chosen"]["point"],
            "test": chosen["metrics"], "difference": difference.difference.to_dict(), "p_value": difference.p_value,
            "baseline": _test_row(summary, "operand:cls")["metrics"],
        })
    return {"record": record, "grid": grid, "grid_best": grid_best, "grid_choice": grid_choice,
            "grid_ties": sum(1 for v in grid_values_seen if v >= grid_best - 1e-12), "searches": searches}


def _by_sampler(searches: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The searches grouped by sampler, samplers in the order they ran."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for found in searches:
        groups.setdefault(found["sampler"], []).append(found)
    return groups


def _reached(searches: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``searches`` reached the grid's best validation accuracy."""
    return sum(1 for found in searches if found["reached_at"] is not None)


def _within(searches: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``searches`` have a paired test interval of Δ (search − grid) that contains 0."""
    return sum(1 for found in searches if found["difference"]["low"] <= 0.0 <= found["difference"]["high"])


def _verdict(searches: Sequence[Mapping[str, Any]]) -> str:
    """The page's verdict on the target for ``searches`` (one sampler's seeds)."""
    reached, total = _reached(searches), len(searches)
    if reached == total:
        return "met for every seed"
    return f"not met for every seed ({total - reached} of {total} fell short)"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def render_page(data: Path) -> str:
    """The results page (markdown), a pure function of the files in ``data``."""
    from adaptermath.evaluation.evidence import format_interval

    facts = analyse(data)
    record, grid, searches = facts["record"], facts["grid"], facts["searches"]
    settings = record["settings"]
    several = several_samplers(settings)
    groups = _by_sampler(searches)
    n_grid, n_search = record["grid_evaluations"], record["search_trials"]
    quick = " (REDUCED --quick run)" if settings.get("quick") else ""
    order = list(settings["box"])
    rows = [["grid", f"{n_grid}", f"{facts['grid_best']:.3f}", "–", _point(grid["best_point"], order),
             _interval(facts["grid_choice"]["metrics"]), "–", "–"]]
    for s in searches:
        rows.append([
            f"search {s['sampler']}, seed {s['seed']}" if several else f"search, seed {s['seed']}", f"{s['trials']}",
            f"{s['best_validation']:.3f}", "not reached" if s["reached_at"] is None else f"trial {s['reached_at']}",
            _point(s["point"], order), _interval(s["test"]), format_interval(s["difference"], 3), f"{s['p_value']:.3g}",
        ])
    table = common.markdown_table(
        ["run", "evaluations", "best val acc", "reached grid best at", "chosen point", "test acc [95% CI]",
         "test Δ vs grid [95% CI]", "McNemar p"], rows)
    baseline = searches[0]["baseline"] if searches else None
    studies = (f"samplers {_and(list(settings['samplers']))}, one study per sampler and sampler seed" if several
               else f"{settings['sampler']}, one study per sampler seed")
    lines = [
        f"# Search against a grid on SmolLM2{quick}",
        "",
        f"`{settings['expression']}` in {settings['space']} space: the domain-transfer analogy "
        f"({settings['source']} → {settings['target']}) with its three coefficients free, SmolLM2-135M-Instruct with "
        f"rank classification of ` negative` / ` positive` after `{settings['template']!r}` on VADER ground-truth "
        f"snippets. Box: {json.dumps(settings['box'])}. The grid takes {settings['grid_points']} values per axis "
        f"({n_grid} validation evaluations); each search ({studies}) gets "
        f"⌊{n_grid}/3⌋ = {n_search} trials over the same box. A search reaches the grid when its best validation "
        "accuracy is at least the grid's best.",
        "",
        "## Results",
        "",
        table,
        "",
    ]
    bar = (f"The grid's best is the largest of {n_grid} noisy validation scores, so matching it exactly is a demanding "
           "bar; the test column is the fairer comparison of what each method chose.")
    if several:
        lines += [
            f"The grid's best validation accuracy is {facts['grid_best']:.3f}, held by {facts['grid_ties']} of "
            f"{n_grid} grid points. Per sampler, with {n_search} trials per search, against the target (the grid's "
            "best validation accuracy with a third of its evaluations):",
            "",
            *(f"- {sampler}: reached the grid's best for {_reached(found)} of {len(found)} sampler seeds. "
              f"Verdict: {_verdict(found)}. On test, the paired interval of Δ (search − grid) contains 0 for "
              f"{_within(found)} of {len(found)} seeds." for sampler, found in groups.items()),
            "",
            f"Where the paired interval contains 0, no difference was detected on test. {bar}",
        ]
    else:
        lines += [
            f"The search reached the grid's best validation accuracy ({facts['grid_best']:.3f}, held by "
            f"{facts['grid_ties']} of {n_grid} grid points) within {n_search} trials for {_reached(searches)} of "
            f"{len(searches)} sampler seeds.",
            "",
            "Verdict on the target (the grid's best validation accuracy with a third of its evaluations): "
            f"{_verdict(searches)}. On test, the paired interval of Δ (search − grid) contains 0 for "
            f"{_within(searches)} of {len(searches)} seeds: no difference detected there. {bar}",
        ]
    if baseline is not None:
        lines += ["", f"For scale: `cls` alone (vanilla transfer, c=1, t=s=0) scores {_interval(baseline)} on test."]
    per_search = ("per search (`search-{sampler}-seed-{seed}/`)" if several else "per seed")
    lines += [
        "",
        f"Test accuracy intervals: {_method(facts['grid_choice']['metrics'])}; the Δ column is the paired bootstrap "
        "interval of the search's test accuracy minus the grid's, on the same examples, with the exact McNemar test. "
        "Validation accuracy is the quantity both methods optimise; on "
        f"{record['sizes'][settings['target']]['val']} validation rows one example moves it by "
        f"{1 / record['sizes'][settings['target']]['val']:.3f}.",
        "",
        "## Setup",
        "",
        f"- Data sizes: {json.dumps(record['sizes'], sort_keys=True)} (seeded split, seed {settings['seed']}).",
        f"- PEM: LoRA {json.dumps(settings['adapter'], sort_keys=True)}; "
        f"training {json.dumps(settings['train'], sort_keys=True)}.",
        f"- Runtimes (s): {json.dumps(record['timings'], sort_keys=True)}.",
        *common.environment_lines(record["versions"]),
        "",
        "## Command",
        "",
        "```bash",
        "python -m adaptermath.experiments.setup            # once: models and data",
        f"python -m adaptermath.experiments.{NAME}{' --quick' if settings.get('quick') else ''}",
        f"python -m adaptermath.experiments.{NAME} --render   # this page, from docs/results/{DATA_FOLDER}/ alone",
        "```",
        "",
        f"Settings: `recipes/experiments/{NAME}.yaml`. The data behind every number is in "
        f"`docs/results/{DATA_FOLDER}/`: `run.json`, `{GRID_FOLDER}/sweep.json` (every grid point's validation "
        f"accuracy) and per-example test records, and {per_search} `search.json`, `trials.csv` and per-example test "
        "records. `adaptermath diff` compares any two of the records files.",
        "",
    ]
    return "\n".join(lines)


def headline(data: Path) -> dict[str, str]:
    """The row of docs/results/README.md: the target, what the searches reached (per sampler), and the verdict."""
    facts = analyse(data)
    searches, n_search = facts["searches"], facts["record"]["search_trials"]
    row = {"experiment": "Search against a grid (SmolLM2, the analogy's 3 coefficients; not one of the paper's six)",
           "paper": "target of the search issue: reach the best of a 5-per-axis grid on validation with ≤ ⅓ of its "
                    "evaluations"}
    settings = facts["record"]["settings"]
    if not several_samplers(settings):
        reached, total = _reached(searches), len(searches)
        deltas = ", ".join(_signed_interval(s["difference"]) for s in searches)
        return {**row,
                "ours": f"{n_search} {SAMPLER_NAMES.get(settings['sampler'], settings['sampler'])} trials reached the "
                        f"grid's best validation accuracy ({facts['grid_best']:.3f}) for {reached} of {total} sampler "
                        f"seeds; test accuracy Δ (search − grid) per seed: {deltas}",
                "verdict": "met for every seed" if reached == total else f"met for {reached} of {total} seeds"}
    groups = {SAMPLER_NAMES.get(sampler, sampler): found for sampler, found in _by_sampler(searches).items()}
    counts = "; ".join(f"{name}: {_reached(found)} of {len(found)} seeds" for name, found in groups.items())
    deltas = "; ".join(f"{name}: {', '.join(_signed_interval(s['difference']) for s in found)}"
                       for name, found in groups.items())
    every = [name for name, found in groups.items() if _reached(found) == len(found)]
    if every:
        verdict = f"met for every seed with {_and(every)}"
    else:
        most = max(_reached(found) for found in groups.values())
        best = [name for name, found in groups.items() if _reached(found) == most]
        verdict = f"met for {most} of {len(groups[best[0]])} seeds ({_and(best)})"
    return {**row,
            "ours": f"{n_search} trials per search reached the grid's best validation accuracy "
                    f"({facts['grid_best']:.3f}) — {counts}. Test accuracy Δ (search − grid) per seed — "
                    f"{deltas}",
            "verdict": verdict}


def _signed_interval(interval: Mapping[str, Any]) -> str:
    return f"{interval['estimate']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    common.experiment_command(sys.modules[__name__], "Search against a grid on SmolLM2: c·cls + t·tgt − s·src.", argv,
                              default_threads=1)


if __name__ == "__main__":
    main()
