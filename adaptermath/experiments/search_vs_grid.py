"""Search against a grid on a real model: does ``adaptermath search`` find the grid's best with a third of its evaluations?

SmolLM2-135M-Instruct, the domain-transfer analogy (see :mod:`adaptermath.experiments.domain_transfer`)
with its three coefficients free, composed exactly in delta space::

    target_clf(c, t, s) = c·cls_source + t·lm_target − s·lm_source

* **grid**: ``grid_points`` values per axis over the settings' box, ``n = grid_points³`` validation
  evaluations (:func:`adaptermath.sweep`);
* **search**: ``⌊n / 3⌋`` trials over the same box for each of the settings' ``samplers`` and each sampler
  seed, one study per (sampler, seed) (:func:`adaptermath.search`; :func:`search_runs` lists them).

Both optimise the settings' ``objective`` on validation: ``accuracy`` (maximised; the default, and what
data written before the setting existed used) or ``log_loss`` (the mean cross-entropy of the gold label,
minimised). The grid selects its point by it and each search uses it as its ``--objective``. A search
*reaches the grid* when its best validation objective is at least as good as the grid's best (≥ for
accuracy, ≤ for log loss); the page reports, per sampler and seed, the best value and the first trial
that reached the grid's best. Each choice is scored on the target's test split (with intervals) and the
search's choice is compared with the grid's on the same test examples (paired bootstrap interval of the
accuracy difference with the exact McNemar test; with ``log_loss`` also the paired interval of the log
loss difference).

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
# The settings' ``objective``: what the grid selects on and the searches optimise (validation), as the page
# names it in its text and in its table header. Each one's direction is its metric's (max / min).
OBJECTIVE_WORDS = {"accuracy": "accuracy", "log_loss": "log loss"}
OBJECTIVE_HEADERS = {"accuracy": "best val acc", "log_loss": "best val log loss"}
DEFAULT_OBJECTIVE = "accuracy"  # data written before ``objective`` existed optimised validation accuracy
TIE = 1e-12  # values this close to the grid's best count as reaching it


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


def objective(settings: Mapping[str, Any]) -> str:
    """The settings' ``objective`` (``accuracy`` when absent); a one-line error for any other metric."""
    name = str(settings.get("objective", DEFAULT_OBJECTIVE))
    if name not in OBJECTIVE_WORDS:
        raise common.DataError(f"objective must be one of {', '.join(OBJECTIVE_WORDS)}, got {name!r}")
    return name


def objective_direction(settings: Mapping[str, Any]) -> str:
    """``max`` for accuracy, ``min`` for log_loss: the objective metric's own direction."""
    from adaptermath.choices import metric_direction

    return metric_direction(objective(settings))


def as_good(value: float, best: float, direction: str) -> bool:
    """Whether ``value`` is at least as good as ``best``: value ≥ best − 1e-12 (max), value ≤ best + 1e-12 (min)."""
    return value >= best - TIE if direction == "max" else value <= best + TIE


def best_of(values: Sequence[float], direction: str) -> float:
    """The best of ``values``: their maximum (max) or minimum (min)."""
    return max(values) if direction == "max" else min(values)


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
    metric, direction = objective(settings), objective_direction(settings)
    evaluator = {"labels": ",".join(LABELS), "template": settings["template"],
                 "max_length": int(settings["eval"]["max_length"])}
    common.log(f"grid: {points} values per axis over {box} ({points ** len(box)} evaluations), "
               f"selecting by validation {metric} ({direction})")
    with common.timed(timings, "grid"):
        grid = sweep(settings["expression"], operands, base=base, task="classification",
                     grid={n: grid_values(lo, hi, points) for n, (lo, hi) in box.items()}, val=val, test=test,
                     metric=metric, direction=direction, space=settings["space"],
                     results=workdir / GRID_FOLDER / "results.jsonl", **evaluator)
        write_sweep_outputs(grid, workdir / GRID_FOLDER)
    trials = search_trials(points, len(box))
    for search_run in search_runs(settings):
        common.log(f"search {search_run.sampler} seed {search_run.seed}: {trials} trials")
        with common.timed(timings, timing_key(settings, search_run)):
            search(settings["expression"], operands, base=base, task="classification",
                   variables=[f"{n}={lo}:{hi}" for n, (lo, hi) in box.items()], val=val, test=test, trials=trials,
                   objectives=[f"{metric}:{direction}"], sampler=search_run.sampler, seed=search_run.seed,
                   output=workdir / search_run.folder, write_adapter=False, space=settings["space"], **evaluator)
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


def _trial_values(folder: Path, metric: str = DEFAULT_OBJECTIVE) -> list[float]:
    """Validation ``metric`` (the objective) of each complete trial, in trial order (``trials.csv``)."""
    rows = list(csv.DictReader(io.StringIO((folder / "trials.csv").read_text(encoding="utf-8"))))
    rows.sort(key=lambda row: int(row["trial"]))
    return [float(row[metric]) for row in rows]


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


def _grid_chosen_validation(grid: Mapping[str, Any]) -> Mapping[str, Any]:
    """The validation row of the grid's chosen point (``best_point``)."""
    return next(row for row in grid["validation"] if row["point"] == grid["best_point"])


def analyse(data: Path) -> dict[str, Any]:
    """Every number on the page, computed from the data folder alone.

    ``grid_best`` and each search's ``best_validation`` are the best validation objective (max
    accuracy / min log loss); ``reached_at`` is the first trial whose value is at least as good as
    ``grid_best``; ``chosen_accuracy`` is the validation accuracy of the chosen point; ``difference`` is
    the paired test Δ accuracy (search − grid) and ``log_loss_difference`` Δ log loss (with log_loss)."""
    from adaptermath.evaluation.evidence import compare_examples, load_examples

    record = _read(data / "run.json")
    metric, direction = objective(record["settings"]), objective_direction(record["settings"])
    grid = _read(data / GRID_FOLDER / "sweep.json")
    grid_values_seen = [float(row["metrics"][metric]) for row in grid["validation"]]
    grid_best = best_of(grid_values_seen, direction)
    grid_choice = _test_row(grid, "best")
    searches = []
    for search_run in search_runs(record["settings"]):
        folder = data / search_run.folder
        summary = _read(folder / "search.json")
        values = _trial_values(folder, metric)
        reached = next((i + 1 for i, value in enumerate(values) if as_good(value, grid_best, direction)), None)
        chosen = _test_row(summary, "best")
        comparison = compare_examples(load_examples(folder / chosen["examples"]),
                                      load_examples(data / GRID_FOLDER / grid_choice["examples"])).by_metric()
        difference = comparison["accuracy"]
        found = {
            "sampler": search_run.sampler, "seed": search_run.seed, "trials": len(values),
            "best_validation": best_of(values, direction), "reached_at": reached, "point": summary["chosen"]["point"],
            "chosen_accuracy": float(summary["chosen"]["metrics"]["accuracy"]),
            "test": chosen["metrics"], "difference": difference.difference.to_dict(), "p_value": difference.p_value,
            "baseline": _test_row(summary, "operand:cls")["metrics"],
        }
        if metric == "log_loss":
            if "log_loss" not in comparison:
                raise common.DataError(f"{folder.name}: the test records have no label scores, so no log loss")
            found["log_loss_difference"] = comparison["log_loss"].difference.to_dict()
            found["log_loss_p_value"] = comparison["log_loss"].p_value
        searches.append(found)
    return {"record": record, "objective": metric, "direction": direction, "grid": grid, "grid_best": grid_best,
            "grid_chosen_accuracy": float(_grid_chosen_validation(grid)["metrics"]["accuracy"]),
            "grid_choice": grid_choice,
            "grid_ties": sum(1 for v in grid_values_seen if as_good(v, grid_best, direction)), "searches": searches}


def _by_sampler(searches: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The searches grouped by sampler, samplers in the order they ran."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for found in searches:
        groups.setdefault(found["sampler"], []).append(found)
    return groups


def _reached(searches: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``searches`` reached the grid's best validation objective (accuracy or log loss)."""
    return sum(1 for found in searches if found["reached_at"] is not None)


def _log_loss_on_test(searches: Sequence[Mapping[str, Any]]) -> str:
    """With log loss as the objective: for how many searches the paired test interval of Δ log loss
    (search − grid) lies above 0 (the search's choice worse on test) and below 0 (better); else ''."""
    if not searches or "log_loss_difference" not in searches[0]:
        return ""
    worse = sum(1 for found in searches if found["log_loss_difference"]["low"] > 0.0)
    better = sum(1 for found in searches if found["log_loss_difference"]["high"] < 0.0)
    return (f"; the paired interval of Δ log loss lies above 0 (the search's choice worse on test) for {worse} and "
            f"below 0 (better) for {better} of {len(searches)} seeds")


def _within(searches: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``searches`` have a paired test interval of Δ accuracy (search − grid) that contains 0."""
    return sum(1 for found in searches if found["difference"]["low"] <= 0.0 <= found["difference"]["high"])


def _verdict(searches: Sequence[Mapping[str, Any]]) -> str:
    """The page's verdict on the target for ``searches`` (one sampler's seeds)."""
    reached, total = _reached(searches), len(searches)
    if reached == total:
        return "met for every seed"
    return f"not met for every seed ({total - reached} of {total} fell short)"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _results_table(facts: Mapping[str, Any], several: bool, order: Sequence[str]) -> str:
    """One row for the grid and one per search. With accuracy as the objective: the best validation
    accuracy, the trial that first reached the grid's best, the chosen point, test accuracy and the paired
    Δ accuracy with McNemar's p. With log loss also the validation accuracy of the chosen point and the
    paired Δ log loss with its permutation p."""
    from adaptermath.evaluation.evidence import format_interval

    grid, searches = facts["grid"], facts["searches"]
    accuracy = facts["objective"] == "accuracy"
    extra_validation = [] if accuracy else ["val acc of chosen"]
    extra_test = [] if accuracy else ["test Δ log loss vs grid [95% CI]", "permutation p"]
    delta = "test Δ vs grid [95% CI]" if accuracy else "test Δ acc vs grid [95% CI]"
    header = ["run", "evaluations", OBJECTIVE_HEADERS[facts["objective"]], *extra_validation, "reached grid best at",
              "chosen point", "test acc [95% CI]", delta, "McNemar p", *extra_test]
    rows = [["grid", f"{facts['record']['grid_evaluations']}", f"{facts['grid_best']:.3f}",
             *([] if accuracy else [f"{facts['grid_chosen_accuracy']:.3f}"]), "–", _point(grid["best_point"], order),
             _interval(facts["grid_choice"]["metrics"]), "–", "–", *(["–", "–"] if extra_test else [])]]
    for s in searches:
        rows.append([
            f"search {s['sampler']}, seed {s['seed']}" if several else f"search, seed {s['seed']}", f"{s['trials']}",
            f"{s['best_validation']:.3f}", *([] if accuracy else [f"{s['chosen_accuracy']:.3f}"]),
            "not reached" if s["reached_at"] is None else f"trial {s['reached_at']}",
            _point(s["point"], order), _interval(s["test"]), format_interval(s["difference"], 3), f"{s['p_value']:.3g}",
            *([] if accuracy else [format_interval(s["log_loss_difference"], 3), f"{s['log_loss_p_value']:.3g}"]),
        ])
    return common.markdown_table(header, rows)


def render_page(data: Path) -> str:
    """The results page (markdown), a pure function of the files in ``data``."""
    facts = analyse(data)
    record, searches = facts["record"], facts["searches"]
    settings = record["settings"]
    several = several_samplers(settings)
    groups = _by_sampler(searches)
    n_grid, n_search = record["grid_evaluations"], record["search_trials"]
    quick = " (REDUCED --quick run)" if settings.get("quick") else ""
    order = list(settings["box"])
    metric, direction = facts["objective"], facts["direction"]
    words = OBJECTIVE_WORDS[metric]
    accuracy = metric == "accuracy"
    at_least = "at least" if direction == "max" else "at most"
    table = _results_table(facts, several, order)
    baseline = searches[0]["baseline"] if searches else None
    studies = (f"samplers {_and(list(settings['samplers']))}, one study per sampler and sampler seed" if several
               else f"{settings['sampler']}, one study per sampler seed")
    reach = (f"A search reaches the grid when its best validation {words} is {at_least} the grid's best." if accuracy
             else f"Both optimise validation {words} (lower is better): the grid selects its point by it and each "
                  f"search minimises it. A search reaches the grid when its best validation {words} is {at_least} "
                  "the grid's best.")
    lines = [
        f"# Search against a grid on SmolLM2{quick}",
        "",
        f"`{settings['expression']}` in {settings['space']} space: the domain-transfer analogy "
        f"({settings['source']} → {settings['target']}) with its three coefficients free, SmolLM2-135M-Instruct with "
        f"rank classification of ` negative` / ` positive` after `{settings['template']!r}` on VADER ground-truth "
        f"snippets. Box: {json.dumps(settings['box'])}. The grid takes {settings['grid_points']} values per axis "
        f"({n_grid} validation evaluations); each search ({studies}) gets "
        f"⌊{n_grid}/3⌋ = {n_search} trials over the same box. {reach}",
        "",
        "## Results",
        "",
        table,
        "",
    ]
    extreme = "largest" if direction == "max" else "smallest"
    bar = (f"The grid's best is the {extreme} of {n_grid} noisy validation scores, so matching it exactly is a "
           "demanding bar; the test column is the fairer comparison of what each method chose.")
    delta = "Δ (search − grid)" if accuracy else "Δ accuracy (search − grid)"
    if several:
        lines += [
            f"The grid's best validation {words} is {facts['grid_best']:.3f}, held by {facts['grid_ties']} of "
            f"{n_grid} grid points. Per sampler, with {n_search} trials per search, against the target (the grid's "
            f"best validation {words} with a third of its evaluations):",
            "",
            *(f"- {sampler}: reached the grid's best for {_reached(found)} of {len(found)} sampler seeds. "
              f"Verdict: {_verdict(found)}. On test, the paired interval of {delta} contains 0 for "
              f"{_within(found)} of {len(found)} seeds{_log_loss_on_test(found)}." for sampler, found in groups.items()),
            "",
            f"Where the paired interval contains 0, no difference was detected on test. {bar}",
        ]
    else:
        lines += [
            f"The search reached the grid's best validation {words} ({facts['grid_best']:.3f}, held by "
            f"{facts['grid_ties']} of {n_grid} grid points) within {n_search} trials for {_reached(searches)} of "
            f"{len(searches)} sampler seeds.",
            "",
            f"Verdict on the target (the grid's best validation {words} with a third of its evaluations): "
            f"{_verdict(searches)}. On test, the paired interval of {delta} contains 0 for "
            f"{_within(searches)} of {len(searches)} seeds: no difference detected there. {bar}",
        ]
    if baseline is not None:
        lines += ["", f"For scale: `cls` alone (vanilla transfer, c=1, t=s=0) scores {_interval(baseline)} on test."]
    per_search = ("per search (`search-{sampler}-seed-{seed}/`)" if several else "per seed")
    validation_rows = record["sizes"][settings["target"]]["val"]
    if accuracy:
        note = (f"Test accuracy intervals: {_method(facts['grid_choice']['metrics'])}; the Δ column is the paired "
                "bootstrap interval of the search's test accuracy minus the grid's, on the same examples, with the "
                "exact McNemar test. Validation accuracy is the quantity both methods optimise; on "
                f"{validation_rows} validation rows one example moves it by {1 / validation_rows:.3f}.")
    else:
        note = (f"Test accuracy intervals: {_method(facts['grid_choice']['metrics'])}; the Δ acc column is the paired "
                "bootstrap interval of the search's test accuracy minus the grid's, on the same examples, with the "
                "exact McNemar test; the Δ log loss column is the same for the test log loss (negative: the search's "
                "choice gives the gold labels more probability), with the paired permutation test. Validation log "
                "loss — the mean cross-entropy of the gold label under the softmax of the label scores — is the "
                "quantity both methods optimise; unlike accuracy it is a continuous score (every example's "
                "probability of its gold label counts, not only whether its prediction flips), which is why it suits "
                "a sampler that models a smooth surface. The val acc column is the validation accuracy of the chosen "
                f"point, on {validation_rows} validation rows.")
    lines += [
        "",
        note,
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
        f"{words if accuracy else words + ' and accuracy'}) and per-example test records, and {per_search} "
        "`search.json`, `trials.csv` and per-example test records. `adaptermath diff` compares any two of the "
        "records files.",
        "",
    ]
    return "\n".join(lines)


def headline(data: Path) -> dict[str, str]:
    """The row of docs/results/README.md: the target and the objective (the grid's best validation accuracy or
    log loss), what the searches reached (per sampler), the test accuracy Δ, and the verdict."""
    facts = analyse(data)
    searches, n_search = facts["searches"], facts["record"]["search_trials"]
    words = OBJECTIVE_WORDS[facts["objective"]]
    best = (f"({facts['grid_best']:.3f})" if facts["objective"] == "accuracy"
            else f"({facts['grid_best']:.3f}; the objective, minimised)")
    row = {"experiment": "Search against a grid (SmolLM2, the analogy's 3 coefficients; not one of the paper's six)",
           "paper": "target of the search issue: reach the best of a 5-per-axis grid on validation with ≤ ⅓ of its "
                    "evaluations"}
    settings = facts["record"]["settings"]
    if not several_samplers(settings):
        reached, total = _reached(searches), len(searches)
        deltas = ", ".join(_signed_interval(s["difference"]) for s in searches)
        return {**row,
                "ours": f"{n_search} {SAMPLER_NAMES.get(settings['sampler'], settings['sampler'])} trials reached the "
                        f"grid's best validation {words} {best} for {reached} of {total} sampler "
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
        best_samplers = [name for name, found in groups.items() if _reached(found) == most]
        verdict = f"met for {most} of {len(groups[best_samplers[0]])} seeds ({_and(best_samplers)})"
    return {**row,
            "ours": f"{n_search} trials per search reached the grid's best validation {words} "
                    f"{best} — {counts}. Test accuracy Δ (search − grid) per seed — "
                    f"{deltas}",
            "verdict": verdict}


def _signed_interval(interval: Mapping[str, Any]) -> str:
    return f"{interval['estimate']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    common.experiment_command(sys.modules[__name__], "Search against a grid on SmolLM2: c·cls + t·tgt − s·src.", argv,
                              default_threads=1)


if __name__ == "__main__":
    main()
