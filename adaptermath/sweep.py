"""sweep(): choose the free variables of an expression on a validation split, report the test split.

The protocol of the PEM-composition paper (and of Ilharco et al.'s task arithmetic): for every
point of a grid over the expression's free variables (λ, μ, ...), compose the adapter in memory,
swap its tensors into the live PEFT model (no disk round trip, no model rebuild: the base model is
loaded once), and score it on the validation data. The best point by the chosen metric is then
scored on the test data, together with the baselines: the all-zero point (e.g. λ = 0, vanilla
transfer) and each operand alone.

Every evaluation is appended to a JSON-lines results file as soon as it finishes; a sweep started
again with the same settings skips what the file already holds, so an interrupted sweep resumes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapter import Adapter, load_adapter
from .compose import compose
from .errors import AdapterMathError, OutputExistsError
from .io.hash_cache import sha256_file
from .io.output_safety import check_output_location
from .expression import parse_expression

# The metric a task is judged by when none is named, and which way is better.
DEFAULT_METRICS: dict[str, tuple[str, str]] = {
    "classification": ("accuracy", "max"),
    "perplexity": ("perplexity", "min"),
    "toxicity": ("mean_score", "min"),
}
LOWER_IS_BETTER = {"perplexity", "mean_nll", "mean_score", "share_above_threshold", "share_above_0.5"}
RESULTS_FORMAT = "adaptermath.sweep/1"

Point = dict[str, float]


MAX_GRID_POINTS = 10_000  # default cap on a grid's points (--max-points raises it)


def _grid_number(name: str, text: str, body: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AdapterMathError(f"--grid {name}: cannot read {body!r} as START:STOP:STEP or a list of numbers") from None
    if not math.isfinite(value):
        raise AdapterMathError(f"--grid {name}: {text.strip()!r} is not a finite number")
    return value


def _too_many(what: str, count: float, max_points: int) -> AdapterMathError:
    shown = f"{count:.3g}" if count >= 1e6 else f"{int(count)}"
    return AdapterMathError(f"{what} has {shown} points, more than the limit of {max_points}; "
                            "use a coarser step or raise the limit with --max-points (max_points=)")


def parse_grid(specs: Sequence[str], *, max_points: int = MAX_GRID_POINTS) -> dict[str, list[float]]:
    """Parse ``NAME=START:STOP:STEP`` (STOP included) or ``NAME=V1,V2,...`` specs into value lists.

    ``λ=0:0.2:0.05`` → λ ∈ {0, 0.05, 0.1, 0.15, 0.2}. Several specs span their product, which
    may hold at most ``max_points`` points: the count ⌊(STOP − START)/STEP⌋ + 1 is checked before
    any list is built. Every number must be finite.
    """
    grid: dict[str, list[float]] = {}
    total = 1.0
    for spec in specs:
        name, sep, body = spec.partition("=")
        name = name.strip()
        if not sep or not name or not body.strip():
            raise AdapterMathError(f"--grid must look like NAME=START:STOP:STEP or NAME=V1,V2,..., got {spec!r}")
        if name in grid:
            raise AdapterMathError(f"--grid gives {name!r} twice")
        if ":" in body:
            parts = body.split(":")
            if len(parts) != 3:
                raise AdapterMathError(f"--grid {name}: cannot read {body!r} as START:STOP:STEP or a list of numbers")
            start, stop, step = (_grid_number(name, p, body) for p in parts)
            if step <= 0 or stop < start:
                raise AdapterMathError(f"--grid {name}: need STEP > 0 and STOP ≥ START, got {body!r}")
            ratio = (stop - start) / step
            count = math.floor(ratio + 1e-9) + 1 if math.isfinite(ratio) and ratio < 1e15 else math.inf
            if count * total > max_points:
                raise _too_many(f"--grid {name}", count * total, max_points)
            values = [round(start + i * step, 12) for i in range(int(count))]
        else:
            items = body.split(",")
            if len(items) * total > max_points:
                raise _too_many(f"--grid {name}", len(items) * total, max_points)
            values = [_grid_number(name, v, body) for v in items if v.strip()]
        if not values:
            raise AdapterMathError(f"--grid {name}: no values")
        total *= len(values)
        grid[name] = values
    return grid


def check_grid_size(grid: Mapping[str, Sequence[float]], max_points: int = MAX_GRID_POINTS) -> int:
    """The number of points of ``grid`` (the product of its lengths); one-line error above ``max_points``."""
    total = 1
    for name, values in grid.items():
        total *= len(values)
        if total > max_points:
            raise _too_many("the grid", total, max_points)
        bad = [v for v in values if not math.isfinite(float(v))]
        if bad:
            raise AdapterMathError(f"grid {name}: {bad[0]!r} is not a finite number")
    return total


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[Point]:
    """The product of the grid's value lists, in order (the first variable varies slowest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def point_key(point: Mapping[str, float]) -> str:
    return json.dumps({k: float(v) for k, v in sorted(point.items())}, sort_keys=True)


def metric_value(result: Mapping[str, Any], metric: str) -> float:
    if metric not in result or not isinstance(result[metric], (int, float)):
        numeric = sorted(k for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise AdapterMathError(f"metric {metric!r} is not in this task's results; choose one of: {', '.join(numeric)}")
    return float(result[metric])


def _summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metrics of an evaluator's result (generations and per-example lists dropped)."""
    keep = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
    if "per_class" in result:
        keep["per_class"] = result["per_class"]
    return keep


@dataclass
class SweepRecord:
    """One evaluation: a grid point (or a baseline) on one split."""

    split: str  # "val" | "test"
    label: str  # "grid", "best", "λ=0", "operand:NAME"
    point: Point
    expression: str
    metrics: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"split": self.split, "label": self.label, "point": self.point,
                           "expression": self.expression, "metrics": self.metrics}, ensure_ascii=False, sort_keys=True)


@dataclass
class SweepResult:
    """Every validation point, the chosen point, and the test scores of it and the baselines."""

    expression: str
    grid: dict[str, list[float]]
    metric: str
    direction: str
    records: list[SweepRecord] = field(default_factory=list)
    best_point: Point | None = None

    @property
    def validation(self) -> list[SweepRecord]:
        return [r for r in self.records if r.split == "val"]

    @property
    def test(self) -> list[SweepRecord]:
        return [r for r in self.records if r.split == "test"]

    def best_validation(self) -> SweepRecord:
        records = self.validation
        if not records:
            raise AdapterMathError("the sweep has no validation results")
        sign = 1.0 if self.direction == "max" else -1.0
        # The first point in grid order wins ties (max keeps the first maximum).
        return max(records, key=lambda r: sign * metric_value(r.metrics, self.metric))

    def to_dict(self) -> dict[str, Any]:
        best = self.best_validation() if self.validation else None
        return {
            "expression": self.expression,
            "grid": self.grid,
            "metric": self.metric,
            "direction": self.direction,
            "best_point": self.best_point,
            "best_validation": None if best is None else best.metrics.get(self.metric),
            "validation": [{"point": r.point, **{self.metric: r.metrics.get(self.metric)}, "metrics": r.metrics}
                           for r in self.validation],
            "test": [{"label": r.label, "point": r.point, "expression": r.expression, "metrics": r.metrics}
                     for r in self.test],
        }

    def to_csv(self) -> str:
        buffer = io.StringIO()
        variables = list(self.grid)
        scalar = sorted({k for r in self.records for k, v in r.metrics.items() if isinstance(v, (int, float))})
        writer = csv.writer(buffer)
        writer.writerow(["split", "label", *variables, "expression", *scalar])
        for r in self.records:
            writer.writerow([r.split, r.label, *[r.point.get(v, "") for v in variables], r.expression,
                             *[r.metrics.get(k, "") for k in scalar]])
        return buffer.getvalue()


class ResultsLog:
    """The append-only JSON-lines file that makes a sweep resumable.

    Line 1 is a header with the sweep's fingerprint (expression, operands' sha256, grid, options,
    data); every further line is one :class:`SweepRecord`. A torn last line (an interrupted write)
    is ignored. A file whose fingerprint differs from the current sweep is refused.
    """

    def __init__(self, path: Path | None, fingerprint: Mapping[str, Any], *, force: bool = False):
        self.path = path
        self.records: list[SweepRecord] = []
        if path is None:
            return
        header = {"format": RESULTS_FORMAT, "fingerprint": dict(fingerprint)}
        if path.exists() and force:
            path.unlink()
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
            try:
                first = json.loads(lines[0]) if lines else None
            except json.JSONDecodeError:
                first = None
            if not first or first.get("format") != RESULTS_FORMAT:
                raise AdapterMathError(f"{path} is not an adaptermath sweep results file; choose another output or pass --force")
            if first.get("fingerprint") != json.loads(json.dumps(header["fingerprint"])):
                raise OutputExistsError(
                    f"{path} holds results of a different sweep (expression, operands, grid, task or data changed); "
                    "pass --force to start over or choose another output"
                )
            for line in lines[1:]:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn write from an interrupted run
                self.records.append(SweepRecord(item["split"], item["label"], item["point"], item["expression"], item["metrics"]))
            valid = [lines[0]] + [r.to_json() for r in self.records]
            path.write_text("\n".join(valid) + "\n", encoding="utf-8")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(header, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")

    def find(self, split: str, label: str, point: Mapping[str, float]) -> SweepRecord | None:
        key = point_key(point)
        for record in self.records:
            if record.split == split and record.label == label and point_key(record.point) == key:
                return record
        return None

    def append(self, record: SweepRecord) -> None:
        self.records.append(record)
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(record.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _file_digest(path: str | Path) -> str | None:
    candidate = Path(path)
    return sha256_file(candidate) if candidate.is_file() else None


Evaluator = Callable[[Any, str], dict[str, Any]]  # (live model, split) -> result dict


@dataclass
class SweepPlan:
    """What a sweep evaluates, independent of how the model is scored.

    ``grid`` spans the expression's free variables and, for a merge method, the variables its
    numeric options read (``density``, ``drop``/``p``, or a name given in ``method_options``).
    """

    expression: str
    operands: dict[str, Adapter]
    grid: dict[str, list[float]]
    compose_options: dict[str, Any]

    def points(self) -> list[Point]:
        return grid_points(self.grid)

    def composed(self, point: Mapping[str, float]):
        return compose(self.expression, self.operands, variables=dict(point), **self.compose_options)

    @property
    def expression_variables(self) -> list[str]:
        return parse_expression(self.expression, list(self.operands)).free_variables

    def baselines(self, best: Mapping[str, float] | None = None) -> list[tuple[str, str, dict[str, Adapter], Point]]:
        """(label, expression, operands, point) of the baselines scored on test.

        The zero point sets the expression's variables to 0 (e.g. λ = 0) and keeps the method's
        variables at ``best`` (there is none when the expression has no variables); each operand
        alone is the operand as it was trained (see :meth:`options_for`).
        """
        out: list[tuple[str, str, dict[str, Adapter], Point]] = []
        free = [n for n in self.grid if n in self.expression_variables]
        if free:
            zero = {name: (0.0 if name in free else float((best or {}).get(name, self.grid[name][0]))) for name in self.grid}
            out.append((", ".join(f"{n}=0" for n in free), self.expression, self.operands, zero))
        for name, adapter in self.operands.items():
            out.append((f"operand:{name}", name, {name: adapter}, {}))
        return out

    def options_for(self, label: str) -> dict[str, Any]:
        """Compose options of an evaluation: an operand-alone baseline is the operand as trained
        (linear method, no rank compression)."""
        if not label.startswith("operand:"):
            return self.compose_options
        as_trained = dict(self.compose_options)
        for key in ("method", "method_options", "energy", "max_rank", "rank"):
            as_trained.pop(key, None)
        return as_trained


def grid_variable_problem(name: str, free: Sequence[str], method: str = "linear",
                          method_options: Mapping[str, Any] | None = None) -> str | None:
    """Why ``name`` cannot be a grid variable, or None: it must be a free variable of the expression
    or a variable that sets a numeric option of the merge method (``density``, ``drop``/``p``, ...)
    which ``method_options`` leaves open."""
    from .methods import get_method

    if name in free:
        return None
    merge_method = get_method(method)
    method_variables = merge_method.variable_names(method_options)
    if name in method_variables:
        return None
    given = dict(method_options or {})
    fixed = [o.name for o in merge_method.options if name in (o.name, *o.aliases) and given.get(o.name) is not None]
    if fixed:
        return (f"{name!r} sets option {fixed[0]} of method {method}, which the method options fix at "
                f"{given[fixed[0]]!r}; remove it there to sweep it")
    reads = f"; method {method} reads {', '.join(method_variables)}" if method_variables else ""
    return f"{name!r} is not a free variable of the expression (its variables: {', '.join(free) or 'none'}){reads}"


def check_grid(grid: Mapping[str, Sequence[float]], free: Sequence[str], method: str = "linear",
               method_options: Mapping[str, Any] | None = None) -> None:
    """One-line error unless the grid covers every free variable of the expression and each of its
    other names sets a numeric option of the merge method (:func:`grid_variable_problem`)."""
    missing = [name for name in free if name not in grid]
    if missing:
        raise AdapterMathError(f"the grid must cover the expression's free variables ({', '.join(free)}): no grid for {', '.join(missing)}")
    for name in grid:
        problem = grid_variable_problem(name, free, method, method_options)
        if problem:
            raise AdapterMathError(f"grid variable {problem}")


def run_sweep(
    plan: SweepPlan,
    *,
    attach: Callable[[Any], Any],
    evaluate: Evaluator,
    metric: str,
    direction: str,
    test: bool = True,
    baselines: bool = True,
    results: Path | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    force: bool = False,
    on_record: Callable[[SweepRecord, bool], None] | None = None,
) -> SweepResult:
    """The sweep loop, independent of models: ``attach(composed)`` puts a composed adapter on the
    live model and returns it; ``evaluate(model, split)`` scores it and returns the result dict."""
    if direction not in ("max", "min"):
        raise AdapterMathError(f"direction must be max or min, got {direction!r}")
    log = ResultsLog(results, fingerprint or {}, force=force)
    outcome = SweepResult(plan.expression, plan.grid, metric, direction)

    def score(split: str, label: str, expression: str, operands: Mapping[str, Adapter], point: Point) -> SweepRecord:
        cached = log.find(split, label, point)
        if cached is not None:
            if on_record:
                on_record(cached, True)
            return cached
        composed = compose(expression, operands, variables=dict(point), **plan.options_for(label))
        model = attach(composed)
        metrics = _summary(evaluate(model, split))
        metric_value(metrics, metric)  # fail fast on an unknown metric
        record = SweepRecord(split, label, dict(point), expression, metrics)
        log.append(record)
        if on_record:
            on_record(record, False)
        return record

    for point in plan.points():
        outcome.records.append(score("val", "grid", plan.expression, plan.operands, point))
    best = outcome.best_validation()
    outcome.best_point = dict(best.point)
    if test:
        outcome.records.append(score("test", "best", plan.expression, plan.operands, best.point))
        if baselines:
            for label, expression, operands, point in plan.baselines(best.point):
                outcome.records.append(score("test", label, expression, operands, point))
    return outcome


def sweep(
    expression: str,
    operands: Mapping[str, str | Path | Adapter],
    *,
    base: str | Path,
    task: str,
    grid: Mapping[str, Sequence[float]] | Sequence[str],
    val: str | Path,
    test: str | Path | None = None,
    metric: str | None = None,
    direction: str | None = None,
    space: str = "param",
    negate_factor: str = "B",
    normalize: bool = False,
    rank: int | None = None,
    heads: str | None = None,
    method: str = "linear",
    method_options: Mapping[str, Any] | None = None,
    energy: float | None = None,
    max_rank: int | None = None,
    baselines: bool = True,
    results: str | Path | None = None,
    force: bool = False,
    gguf_file: str | None = None,
    model_type: str = "auto",
    device: str = "auto",
    dtype: str | None = None,
    text_field: str = "text",
    limit: int | None = None,
    allow_pickle: bool = False,
    on_record: Callable[[SweepRecord, bool], None] | None = None,
    max_points: int = MAX_GRID_POINTS,
    **task_options: Any,
) -> SweepResult:
    """Sweep the free variables of ``expression`` over ``grid`` on ``val``; score the best on ``test``.

    ``grid`` maps each free variable to its values (or is a list of ``NAME=START:STOP:STEP``
    specs). ``task`` is ``classification``, ``perplexity`` or ``toxicity`` with the evaluator's
    options in ``task_options`` (``labels``, ``template``, ``stride``, ``num_samples`` ...).
    ``metric`` defaults to accuracy / perplexity / mean toxicity, ``direction`` to the metric's
    natural one. ``results`` (a ``.jsonl`` file) makes the sweep resumable. The grid may hold at
most ``max_points`` points (default 10,000), and ``results`` must not lie in an input or the base.

    ``method`` / ``method_options`` / ``energy`` / ``max_rank`` are those of
    :func:`adaptermath.compose`; the grid may also span the method's numeric options (e.g.
    ``{"λ": [...], "density": [0.1, 0.2, 0.5]}`` for TIES, ``drop`` or ``p`` for DARE).
    """
    from .evaluation import attach_adapter, load_base_model, load_corpus, load_records
    from .evaluation.models import kind_of_adapter_config
    from .evaluation.run import TASKS, _check_options

    if task not in DEFAULT_METRICS:
        raise AdapterMathError(f"sweep task must be one of {', '.join(DEFAULT_METRICS)}, got {task!r}")
    _check_options(task, task_options)
    metric = metric or DEFAULT_METRICS[task][0]
    direction = direction or ("min" if metric in LOWER_IS_BETTER else "max")
    if isinstance(grid, Mapping):
        check_grid_size(grid, max_points)
        values = {k: [float(v) for v in vs] for k, vs in grid.items()}
    else:
        values = parse_grid(list(grid), max_points=max_points)
    if results is not None:
        check_output_location(Path(results).expanduser().parent,
                              [*(a.path if isinstance(a, Adapter) else a for a in operands.values()), base],
                              replaces=False)
    combination = parse_expression(expression, list(operands))
    check_grid(values, combination.free_variables, method, method_options)
    adapters = {n: a if isinstance(a, Adapter) else load_adapter(a, allow_pickle=allow_pickle) for n, a in operands.items()}
    compose_options: dict[str, Any] = dict(space=space, negate_factor=negate_factor, normalize=normalize, rank=rank, heads=heads)
    if method != "linear" or method_options or energy is not None or max_rank is not None:
        compose_options.update(method=method, method_options=dict(method_options or {}), energy=energy, max_rank=max_rank)
    plan = SweepPlan(expression, adapters, values, compose_options)
    first = plan.composed(plan.points()[0])  # validates the expression against the operands early
    kind = model_type
    if kind == "auto":
        kind = kind_of_adapter_config(first.config) or "auto"
    num_labels = None
    if kind == "seq-cls" and task_options.get("labels") is not None:
        labels = task_options["labels"]
        num_labels = len(labels.split(",") if isinstance(labels, str) else list(labels))
    loaded = load_base_model(base, device=device, dtype=dtype, task=kind, gguf_file=gguf_file, num_labels=num_labels)
    splits: dict[str, Any] = {}

    def data_for(split: str) -> Any:
        if split not in splits:
            source = val if split == "val" else test
            if task == "perplexity":
                splits[split] = load_corpus(source, text_field=text_field, limit=limit)
            else:
                splits[split] = load_records(source, limit=limit)
        return splits[split]

    options = dict(task_options)
    if task != "perplexity":
        options["text_field"] = text_field
    state = {"model": loaded.model}

    def attach(composed: Any) -> Any:
        state["model"] = attach_adapter(state["model"], composed)
        return state["model"]

    def evaluate(model: Any, split: str) -> dict[str, Any]:
        return TASKS[task](model, loaded.tokenizer, data_for(split), **options).to_dict()

    fingerprint = {
        "expression": expression,
        "operands": {n: a.file_hashes().get("adapter_model.safetensors") or a.file_hashes() for n, a in adapters.items()},
        "grid": values,
        "compose": compose_options,
        "task": task,
        "task_options": {k: v for k, v in sorted(options.items())},
        "metric": metric,
        "base": str(base),
        "val": {"path": str(val), "sha256": _file_digest(val)},
        "test": None if test is None else {"path": str(test), "sha256": _file_digest(test)},
        "limit": limit,
    }
    return run_sweep(plan, attach=attach, evaluate=evaluate, metric=metric, direction=direction,
                     test=test is not None, baselines=baselines, results=Path(results) if results else None,
                     fingerprint=fingerprint, force=force, on_record=on_record)


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """Plot the validation metric against the (first) variable; one line per value of a second one.

    Needs matplotlib (``pip install 'adaptermath[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AdapterMathError("plotting needs matplotlib: pip install 'adaptermath[plot]'") from None
    variables = list(result.grid)
    figure, axis = plt.subplots(figsize=(6, 4))
    first = variables[0]
    groups: dict[str, list[SweepRecord]] = {}
    for record in result.validation:
        rest = ", ".join(f"{v}={record.point[v]:g}" for v in variables[1:])
        groups.setdefault(rest, []).append(record)
    for label, records in groups.items():
        xs = [r.point[first] for r in records]
        ys = [metric_value(r.metrics, result.metric) for r in records]
        axis.plot(xs, ys, marker="o", label=label or "validation")
    if result.best_point is not None:
        best = result.best_validation()
        axis.scatter([best.point[first]], [metric_value(best.metrics, result.metric)], s=120, facecolors="none",
                     edgecolors="red", label="chosen", zorder=3)
    axis.set_xlabel(first)
    axis.set_ylabel(f"{result.metric} (validation)")
    axis.set_title(result.expression)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target
