"""The recipe's schema: its fields, the validated :class:`Recipe` (and its sections), and the recipe as plain data and YAML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..choices import TASK_METRICS

RECIPE_VERSION = 1
PROVENANCE_FORMAT_PREFIX = "adaptermath.provenance"

TOP_FIELDS = ("version", "inputs", "expression", "variables", "space", "method", "method_options", "options", "output",
              "force", "evaluation", "sweep", "search", "push", "control", "bake")
OPTION_FIELDS = ("negate_factor", "normalize", "rank", "energy", "max_rank", "heads", "dtype", "diagnostic_threshold",
                 "allow_pickle", "control_seed", "base_mismatch")
CONTROLS = ("random",)
EVALUATION_FOLDER = "evaluation"  # inside the output: each evaluation's summary and per-example records
EVALUATION_FIELDS = ("name", "task", "base", "data", "split", "data_config", "limit", "text_field", "model_type",
                     "gguf_file", "device", "dtype", "options")
SWEEP_FIELDS = ("grid", "task", "base", "val", "test", "metric", "direction", "baselines", "results", "restart", "limit",
                "text_field", "model_type", "gguf_file", "device", "dtype", "options", "select", "confidence", "seeds")
SEARCH_FIELDS = ("variables", "task", "base", "val", "test", "objectives", "constraints", "l1", "sampler", "seed",
                 "trials", "timeout", "storage", "study", "workers", "results", "restart", "baselines", "limit",
                 "text_field", "model_type", "gguf_file", "device", "dtype", "options", "confidence")
PUSH_FIELDS = ("repo", "private", "revision", "create_pr", "commit_message")
BAKE_FIELDS = ("base", "base_mismatch")

SPACES = ("param", "delta")
EVALUATION_TASKS = ("classification", "perplexity", "toxicity", "generate")
SWEEP_TASKS = ("classification", "perplexity", "toxicity")
MODEL_TYPES = ("auto", "causal-lm", "seq2seq", "seq-cls")
MODEL_DTYPES = ("auto", "float32", "float16", "bfloat16")
# The metrics of each task recorded in the provenance (and so on the model card); the rest of an
# evaluator's result (settings, counts, per-example outputs) stays out.
EVALUATION_METRICS: dict[str, tuple[str, ...]] = {**TASK_METRICS, "generate": ()}
# Evaluator arguments that are fields of their own (or filled in by adaptermath), not ``options``.
_RESERVED_EVALUATOR_ARGUMENTS = {"model", "tokenizer", "data", "text", "progress", "text_field", "limit"}

FieldPath = tuple[Any, ...]  # a field's path in the recipe: ("options", "rank"), ("evaluation", 0, "task")
ProgressCallback = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- the validated recipe


@dataclass(frozen=True)
class RecipeOptions:
    """How the expression is evaluated (the keyword arguments of :func:`adaptermath.compose`)."""

    negate_factor: str = "B"
    normalize: bool = False
    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None
    heads: str | None = None
    dtype: str | None = None
    diagnostic_threshold: float = 0.25
    allow_pickle: bool = False
    control_seed: int = 0  # seed of random(x) controls
    base_mismatch: str = "error"  # "ok": operands of different base models allowed (recorded only then)


@dataclass(frozen=True)
class EvaluationSpec:
    """One evaluation of the built adapter (the arguments of :func:`adaptermath.evaluation.run.evaluate`)."""

    name: str
    task: str
    base: str
    data: str
    split: str = "test"
    data_config: str | None = None
    limit: int | None = None
    text_field: str = "text"
    model_type: str = "auto"
    gguf_file: str | None = None
    device: str = "auto"
    dtype: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["options"] = dict(self.options)
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A grid over the free variables, chosen on ``val`` (the arguments of :func:`adaptermath.sweep.sweep`)."""

    grid: Mapping[str, tuple[float, ...]]
    task: str
    base: str
    val: str
    results: str
    test: str | None = None
    metric: str | None = None
    direction: str | None = None
    baselines: bool = True
    restart: bool = False
    limit: int | None = None
    text_field: str = "text"
    model_type: str = "auto"
    gguf_file: str | None = None
    device: str = "auto"
    dtype: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    select: str = "best"
    confidence: float = 0.95
    seeds: tuple[int, ...] = ()

    @property
    def points(self) -> int:
        count = 1
        for values in self.grid.values():
            count *= len(values)
        return count

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = {name: list(values) for name, values in self.grid.items()}
        out["options"] = dict(self.options)
        out["seeds"] = list(self.seeds)
        return out


@dataclass(frozen=True)
class SearchSpec:
    """An Optuna search over the variables, chosen on ``val`` (the arguments of :func:`adaptermath.search.search`).

    ``variables`` maps each searched name to ``"LOW:HIGH"`` or ``"LOW:HIGH,log"``; ``results`` is
    the search's folder (its SQLite study unless ``storage`` is a URL, search.json, trials.csv, plots).
    """

    variables: Mapping[str, str]
    task: str
    base: str
    val: str
    results: str
    test: str | None = None
    objectives: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    l1: float = 0.0
    sampler: str = "tpe"
    seed: int | None = None
    trials: int = 20
    timeout: float | None = None
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    restart: bool = False
    baselines: bool = True
    limit: int | None = None
    text_field: str = "text"
    model_type: str = "auto"
    gguf_file: str | None = None
    device: str = "auto"
    dtype: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(variables=dict(self.variables), objectives=list(self.objectives), constraints=list(self.constraints),
                   options=dict(self.options))
        return out


@dataclass(frozen=True)
class PushSpec:
    """Where to push the built adapter (the arguments of :func:`adaptermath.hub.push_folder`)."""

    repo: str
    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    commit_message: str | None = None


@dataclass(frozen=True)
class BakeSpec:
    """Fold the composed update into this base model (the arguments of :func:`adaptermath.bake.bake`)."""

    base: str
    base_mismatch: str = "error"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Paths are as written; :attr:`folder` is what relative ones are relative to."""

    inputs: Mapping[str, str]
    expression: str
    output: str
    variables: Mapping[str, float] = field(default_factory=dict)
    space: str = "param"
    method: str = "linear"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    options: RecipeOptions = field(default_factory=RecipeOptions)
    force: bool = False
    evaluation: tuple[EvaluationSpec, ...] = ()
    sweep: SweepSpec | None = None
    push: PushSpec | None = None
    search: SearchSpec | None = None
    bake: BakeSpec | None = None  # set: the output is a full model with the update folded in
    version: int = RECIPE_VERSION
    folder: Path = field(default=Path("."), compare=False)
    source: str = field(default="<recipe>", compare=False)
    # Read from an output's adaptermath.json: its output, force and allow_pickle were not taken from the file.
    recorded: bool = field(default=False, compare=False)
    # The fields given on the command line (--set FIELD=..., -o), dotted: {"output", "sweep.results"}.
    overridden: frozenset[str] = field(default=frozenset(), compare=False)


def _options_dict(options: RecipeOptions) -> dict[str, Any]:
    """The options as plain data; ``base_mismatch`` only when it allows a mismatch, so that the
    records of every other output keep their bytes."""
    data = asdict(options)
    if data["base_mismatch"] == "error":
        del data["base_mismatch"]
    return data


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as plain data, every field present (defaults filled in; ``search`` and ``bake``
    only when given, so that recipes without them read as before), in schema order."""
    data = {
        "version": recipe.version,
        "inputs": dict(recipe.inputs),
        "expression": recipe.expression,
        "variables": dict(recipe.variables),
        "space": recipe.space,
        "method": recipe.method,
        "method_options": dict(recipe.method_options),
        "options": _options_dict(recipe.options),
        "output": recipe.output,
        "force": recipe.force,
        "evaluation": [spec.to_dict() for spec in recipe.evaluation],
        "sweep": recipe.sweep.to_dict() if recipe.sweep is not None else None,
        "push": asdict(recipe.push) if recipe.push is not None else None,
    }
    if recipe.search is not None:
        data["search"] = recipe.search.to_dict()
    if recipe.bake is not None:
        data["bake"] = asdict(recipe.bake)
    return data


def recipe_to_yaml(recipe: Recipe | Mapping[str, Any]) -> str:
    """A recipe (or its :func:`recipe_to_dict`) as YAML text that :func:`load_recipe` reads back."""
    data = recipe_to_dict(recipe) if isinstance(recipe, Recipe) else dict(recipe)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)


