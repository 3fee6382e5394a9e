"""Recipes: a versioned YAML file that says how to build an adapter, and running it.

A recipe names the inputs (folders or ``hf://`` refs), the expression, the variables, the space,
the merge method and options, the output, and optionally a sweep (a grid) or a search (Optuna)
that chooses the variables, an evaluation of the result, and a push to the Hub::

    version: 1
    inputs: {sst2: ../demo/sst2, mnli: ../demo/mnli}
    expression: "0.5*sst2 + 0.5*mnli"
    output: ../demo/merged

:func:`load_recipe` reads and validates one (``--set`` overrides applied first); every schema
error is one line naming the file, the line and the field. :func:`run_recipe` executes it.
Relative paths are relative to the recipe's folder.

Every output records the recipe that rebuilds it (``"recipe"`` in ``adaptermath.json``, made by
:func:`recorded_recipe`, also for outputs of ``compose``/``negate``): its paths are relative to
the output folder, ``hf://`` inputs are pinned to the commit they resolved to, its variables are
the values used (a sweep's chosen point), so ``adaptermath run OUTPUT`` rebuilds the adapter byte
for byte. See docs/recipes.md.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import AdapterMathError, OutputExistsError, RecipeError

if TYPE_CHECKING:
    from .compose import ComposedAdapter

RECIPE_VERSION = 1
PROVENANCE_FILE = "adaptermath.json"
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
EVALUATION_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "perplexity": ("perplexity", "mean_nll"),
    "toxicity": ("mean_score", "share_above_threshold", "share_above_0.5"),
    "generate": (),
}
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


# --------------------------------------------------------------------------- reading YAML with line numbers


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers like ``1e-3`` as floats (YAML 1.2) instead of strings."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _dotted(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


MAX_YAML_VALUES = 200_000  # values of a recipe once YAML aliases are expanded (a "billion laughs" bomb is refused)


def _check_expanded_size(node: yaml.Node, source: str) -> None:
    """Count the values of ``node`` with every alias expanded, stopping at :data:`MAX_YAML_VALUES`.

    PyYAML shares an aliased node, so nested anchors (``b: [*a, *a, ...]``) stay small in the
    parser but grow exponentially in anything that walks or copies the data; this bounded walk
    refuses them before that happens.
    """
    count = 0
    stack = [node]
    while stack:
        current = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise RecipeError(f"{source}: the recipe expands to more than {MAX_YAML_VALUES:,} values through YAML "
                              "anchors and aliases; write it out without them")
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                stack.append(key_node)
                stack.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _load_bounded(text: str, source: str) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    loader = _RecipeLoader(text)
    node = loader.get_single_node()
    if node is not None:
        _check_expanded_size(node, source)
    return loader, node


def _parse_yaml(text: str, source: str) -> tuple[Any, dict[FieldPath, str]]:
    """The document and, for every field path, where it was written (``"recipe.yaml line 7"``)."""
    loader = _RecipeLoader("")
    origins: dict[FieldPath, str] = {}
    try:
        loader, node = _load_bounded(text, source)
        if node is None:
            return None, origins
        _record_lines(loader, node, (), origins, source)
        return loader.construct_document(node), origins
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source} line {mark.line + 1}" if mark is not None else source
        raise RecipeError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{source}: the recipe nests too deeply") from None
    finally:
        loader.dispose()


def _record_lines(loader: yaml.SafeLoader, node: yaml.Node, path: FieldPath, origins: dict[FieldPath, str], source: str) -> None:
    origins.setdefault(path, f"{source} line {node.start_mark.line + 1}")
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (list, dict)):
                raise RecipeError(f"{source} line {line}: field names must be plain words")
            if key in seen:
                raise RecipeError(f"{source} line {line}: field '{_dotted(path + (key,))}' is given twice (first on line {seen[key]})")
            seen[key] = line
            origins[path + (key,)] = f"{source} line {line}"
            _record_lines(loader, value_node, path + (key,), origins, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(loader, item, path + (index,), origins, source)


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a YAML scalar (``8``, ``true``, ``null``, ``0.3``, ``text``) or flow list/mapping."""
    try:
        loader, node = _load_bounded(text, f"--set value {text!r}")
        try:
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError:
        raise RecipeError(f"--set value {text!r} is not valid YAML (quote it)") from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], origins: dict[FieldPath, str] | None = None) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (``options.rank=8``, ``variables.λ=0.2``, ``evaluation.0.limit=10``) in place."""
    origins = origins if origins is not None else {}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = [part.strip() for part in key.strip().split(".")]
        if not sep or not all(parts):
            raise RecipeError(f"--set must look like FIELD=VALUE (e.g. options.rank=8 or variables.λ=0.2), got {item!r}")
        where = f"--set {item}"
        value = _parse_value(text)
        container: Any = data
        path: FieldPath = ()
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            step: Any = part
            if isinstance(container, list):
                if not part.isdigit() or int(part) >= len(container):
                    raise RecipeError(f"{where}: field '{_dotted(path)}' has {len(container)} entries; "
                                      f"use {key.rsplit('.', len(parts) - index)[0]}.N with N below {len(container)}")
                step = int(part)
            elif not isinstance(container, dict):
                raise RecipeError(f"{where}: field '{_dotted(path)}' is not a mapping, so it has no field {part!r}")
            path = path + (step,)
            if last:
                container[step] = value
                for known in [p for p in origins if p[: len(path)] == path]:
                    del origins[known]
                origins[path] = where
            else:
                if isinstance(container, dict) and container.get(step) is None:
                    container[step] = {}
                    origins[path] = where
                container = container[step]
    return data


# --------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


class _Checker:
    """Type checks that raise one-line :class:`RecipeError` naming where and which field."""

    def __init__(self, origins: Mapping[FieldPath, str], source: str):
        self.origins = origins
        self.source = source

    def where(self, path: FieldPath) -> str:
        for end in range(len(path), -1, -1):
            if path[:end] in self.origins:
                return self.origins[path[:end]]
        return self.source

    def fail(self, path: FieldPath, message: str) -> RecipeError:
        return RecipeError(f"{self.where(path)}: field '{_dotted(path)}': {message}")

    def mapping(self, path: FieldPath, value: Any, allowed: Sequence[str], required: Sequence[str] = ()) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping with fields {', '.join(allowed)} (got {_describe(value)})")
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (fields: {', '.join(allowed)})"
                raise RecipeError(f"{self.where(path + (key,))}: unknown field '{_dotted(path + (key,))}'{hint}")
        for name in required:
            if value.get(name) is None:
                raise RecipeError(f"{self.where(path + (name,))}: missing field '{_dotted(path + (name,))}'")
        return value

    def names(self, path: FieldPath, value: Any, what: str) -> dict[str, Any]:
        """A mapping whose keys are names (inputs, variables, grid)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping of {what} (got {_describe(value)})")
        for key in value:
            if not isinstance(key, str) or not key.isidentifier():
                raise RecipeError(f"{self.where(path + (key,))}: field '{_dotted(path)}': {key!r} is not a name "
                                  "(letters, digits and _, not starting with a digit)")
        return value

    def text(self, path: FieldPath, value: Any, *, optional: bool = False, choices: Sequence[str] = ()) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be {'text or null' if optional else 'text'} (got {_describe(value)})")
        if choices and value not in choices:
            raise self.fail(path, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def flag(self, path: FieldPath, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false (got {_describe(value)})")
        return value

    def integer(self, path: FieldPath, value: Any, *, minimum: int | None = None, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be an integer{' or null' if optional else ''} (got {_describe(value)})")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be at least {minimum} (got {value})")
        return value

    def number(self, path: FieldPath, value: Any, *, minimum: float | None = None, maximum: float | None = None,
               above: float | None = None, optional: bool = False) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise self.fail(path, f"must be a number{' or null' if optional else ''} (got {_describe(value)})")
        if not math.isfinite(value):
            raise self.fail(path, f"must be a finite number (got {value})")
        if minimum is not None and value < minimum:
            raise self.fail(path, f"must be at least {minimum:g} (got {value:g})")
        if above is not None and value <= above:
            raise self.fail(path, f"must be greater than {above:g} (got {value:g})")
        if maximum is not None and value > maximum:
            raise self.fail(path, f"must be at most {maximum:g} (got {value:g})")
        return float(value)


def recipe_from_dict(data: Any, *, folder: str | Path = ".", source: str = "<recipe>",
                     overrides: Sequence[str] = (), origins: Mapping[FieldPath, str] | None = None) -> Recipe:
    """Validate recipe data (as :func:`recipe_to_dict` gives it, or parsed YAML) into a :class:`Recipe`.

    ``folder`` is what relative paths are relative to; ``origins`` maps field paths to where they
    were written (for error messages); ``overrides`` are ``--set`` items applied first.
    """
    lines = dict(origins or {})
    if data is None:
        raise RecipeError(f"{source}: the recipe is empty; it needs at least version, inputs, expression and output")
    if not isinstance(data, dict):
        raise RecipeError(f"{lines.get((), source)}: a recipe is a mapping of fields ({', '.join(TOP_FIELDS[:4])}, ...), "
                          f"got {_describe(data)}")
    data = _copy(data)
    apply_overrides(data, overrides, lines)
    return _validate(data, _Checker(lines, source), Path(folder), source)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _validate(data: dict[str, Any], check: _Checker, folder: Path, source: str) -> Recipe:
    from .compose import DTYPES
    from .errors import ExpressionError
    from .expression import control_name, parse_expression
    from .methods import available_methods, get_method

    check.mapping((), data, TOP_FIELDS, required=("version", "inputs", "expression", "output"))
    # Every independent field is checked, and all the problems are reported at once (one line).
    errors: list[RecipeError] = []

    def attempt(check_field: Callable[[], Any], fallback: Any = None) -> Any:
        try:
            return check_field()
        except RecipeError as exc:
            errors.append(exc)
            return fallback

    def check_version() -> None:
        version = data["version"]
        if isinstance(version, bool) or version != RECIPE_VERSION:
            raise check.fail(("version",), f"must be {RECIPE_VERSION} (this adaptermath reads recipe version {RECIPE_VERSION}; "
                                           f"got {_describe(version)})")

    attempt(check_version)

    def check_inputs() -> dict[str, Any]:
        inputs = check.names(("inputs",), data["inputs"], "input names to folders or hf:// refs")
        if not inputs:
            raise check.fail(("inputs",), "must name at least one adapter")
        for name, ref in inputs.items():
            check.text(("inputs", name), ref)
        return inputs

    inputs = attempt(check_inputs, {})

    def check_expression() -> tuple[str, Any]:
        expression = check.text(("expression",), data["expression"])
        try:
            combination = parse_expression(expression, list(inputs))
        except ExpressionError as exc:
            raise check.fail(("expression",), str(exc)) from None
        control = check.text(("control",), data.get("control"), optional=True, choices=CONTROLS)
        if control == "random":  # every input x becomes its matched random control random(x)
            combination = controlled(combination)
            expression = str(combination)
        for name in inputs:
            if name not in combination.terms and control_name(name) not in combination.terms:
                raise check.fail(("inputs", name), f"input {name!r} is not used in the expression")
        return expression, combination

    expression, combination = attempt(check_expression, (None, None))

    variables: dict[str, float] = {}

    def check_variables() -> None:
        for name, value in check.names(("variables",), data.get("variables"), "variable names to numbers").items():
            if name in inputs:
                raise check.fail(("variables", name), f"{name!r} is both an input and a variable")
            variables[name] = check.number(("variables", name), value)

    attempt(check_variables)
    space = attempt(lambda: check.text(("space",), data.get("space", "param"), choices=SPACES), "param")
    methods = available_methods()
    method = attempt(lambda: check.text(("method",), data.get("method", "linear"), choices=methods), "linear")

    options_data = data.get("options") or {}
    attempt(lambda: check.mapping(("options",), options_data, OPTION_FIELDS))
    if not isinstance(options_data, dict):
        options_data = {}
    defaults = RecipeOptions()

    def option(name: str, checker: Callable[[Any], Any]) -> Any:
        return attempt(lambda: checker(options_data.get(name, getattr(defaults, name))), getattr(defaults, name))

    options = RecipeOptions(
        negate_factor=option("negate_factor", lambda v: check.text(("options", "negate_factor"), v, choices=("A", "B"))),
        normalize=option("normalize", lambda v: check.flag(("options", "normalize"), v)),
        rank=option("rank", lambda v: check.integer(("options", "rank"), v, minimum=1, optional=True)),
        energy=option("energy", lambda v: check.number(("options", "energy"), v, above=0.0, maximum=1.0, optional=True)),
        max_rank=option("max_rank", lambda v: check.integer(("options", "max_rank"), v, minimum=1, optional=True)),
        heads=option("heads", lambda v: check.text(("options", "heads"), v, optional=True, choices=list(inputs))),
        dtype=option("dtype", lambda v: check.text(("options", "dtype"), v, optional=True, choices=sorted(DTYPES))),
        diagnostic_threshold=option("diagnostic_threshold",
                                    lambda v: check.number(("options", "diagnostic_threshold"), v, minimum=0.0)),
        allow_pickle=option("allow_pickle", lambda v: check.flag(("options", "allow_pickle"), v)),
        control_seed=option("control_seed", lambda v: check.integer(("options", "control_seed"), v, minimum=0)),
        base_mismatch=option("base_mismatch",
                             lambda v: check.text(("options", "base_mismatch"), v, choices=("error", "ok"))),
    )

    output = attempt(lambda: check.text(("output",), data["output"]))
    force = attempt(lambda: check.flag(("force",), data.get("force", False)), False)

    evaluation = attempt(lambda: _validate_evaluation(check, data.get("evaluation")), ())
    raw_method_options = data.get("method_options") if isinstance(data.get("method_options"), Mapping) else None
    free = combination.free_variables if combination is not None else ()
    sweep = attempt(lambda: _validate_sweep(check, data.get("sweep"), free, variables, method, options,
                                            raw_method_options))
    search = attempt(lambda: _validate_search(check, data.get("search"), free, method, raw_method_options))

    def check_sweep_or_search() -> None:
        if sweep is not None and search is not None:
            raise check.fail(("search",), "a recipe chooses its variables by a sweep or by a search, not both")
        if search is not None and variables:
            raise check.fail(("variables",), "a search recipe searches every variable: give each a range under "
                                             "'search.variables' (or write fixed values into the expression)")

    attempt(check_sweep_or_search)
    swept = set(sweep.grid) if sweep is not None else set(search.variables) if search is not None else set()
    for block, field_name in (("sweep", "grid"), ("search", "variables")):  # an invalid block still names its variables
        if isinstance(data.get(block), dict) and isinstance(data[block].get(field_name), dict):
            swept |= set(data[block][field_name])

    declared = set(data["variables"]) if isinstance(data.get("variables"), dict) else set()  # even if invalid

    def check_free_variables() -> None:
        for name in free:
            if name not in declared and name not in swept:
                raise check.fail(("expression",), f"unknown name {name!r}: give it a value under 'variables' "
                                                  f"(or name an input {name!r})")

    attempt(check_free_variables)

    method_options: dict[str, Any] = {}

    def check_method_options() -> None:
        method_options.update(check.names(("method_options",), data.get("method_options"), "option names to values"))
        bound = {**variables, **{name: values[0] for name, values in (sweep.grid.items() if sweep else ())},
                 **(_search_start(search) if search else {})}
        for name, value in method_options.items():
            try:
                get_method(method).resolve_options({name: value}, bound)
            except AdapterMathError as exc:
                raise check.fail(("method_options", name), str(exc)) from None

    attempt(check_method_options)
    push = attempt(lambda: _validate_push(check, data.get("push")))
    bake = attempt(lambda: _validate_bake(check, data.get("bake"), evaluation, sweep, search, push))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise RecipeError(f"{len(errors)} problems: " + "; ".join(str(error) for error in errors))
    return Recipe(inputs=dict(inputs), expression=expression, output=output, variables=variables, space=space,
                  method=method, method_options=dict(method_options), options=options, force=force,
                  evaluation=evaluation, sweep=sweep, push=push, search=search, bake=bake, version=RECIPE_VERSION, folder=folder,
                  source=source,
                  overridden=frozenset(_dotted(path) for path, where in check.origins.items() if where.startswith("--set ")))


def controlled(combination: Any) -> Any:
    """The normal form with every operand x replaced by its random control ``random(x)``."""
    from .expression import LinearCombination, control_name, is_control

    terms = {(name if is_control(name) else control_name(name)): poly for name, poly in combination.terms.items()}
    renamed = LinearCombination(terms)
    return LinearCombination(terms, str(renamed))


def _validate_bake(check: _Checker, value: Any, evaluation: Sequence[EvaluationSpec], sweep: SweepSpec | None,
                   search: SearchSpec | None, push: PushSpec | None) -> BakeSpec | None:
    if value is None:
        return None
    path: FieldPath = ("bake",)
    check.mapping(path, value, BAKE_FIELDS, required=("base",))
    if evaluation or sweep is not None or search is not None or push is not None:
        raise check.fail(path, "a baked model cannot be swept, searched, evaluated or pushed by a recipe (yet); drop those sections")
    return BakeSpec(base=check.text(path + ("base",), value["base"]),
                    base_mismatch=check.text(path + ("base_mismatch",), value.get("base_mismatch", "error"),
                                             choices=("error", "ok")))


def _evaluator_parameters(task: str) -> list[str]:
    from .evaluation.run import TASKS

    parameters = inspect.signature(TASKS[task]).parameters
    return [name for name in parameters if name not in _RESERVED_EVALUATOR_ARGUMENTS]


def _check_evaluator_options(check: _Checker, path: FieldPath, task: str, options: Any) -> dict[str, Any]:
    options = check.names(path, options, "evaluator options to values")
    accepted = _evaluator_parameters(task)
    for name in options:
        if name not in accepted:
            close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; its options: {', '.join(accepted)}"
            raise check.fail(path + (name,), f"task {task} has no option {name!r}{hint}")
    return dict(options)


def _validate_evaluation(check: _Checker, value: Any) -> tuple[EvaluationSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise check.fail(("evaluation",), f"must be a list of evaluations (got {_describe(value)})")
    specs: list[EvaluationSpec] = []
    names: dict[str, int] = {}
    for index, item in enumerate(value):
        path: FieldPath = ("evaluation", index)
        check.mapping(path, item, EVALUATION_FIELDS, required=("task", "base", "data"))
        task = check.text(path + ("task",), item["task"], choices=EVALUATION_TASKS)
        name = check.text(path + ("name",), item.get("name") or task)
        if name in names:
            raise check.fail(path + ("name",), f"{name!r} is already the name of evaluation[{names[name]}]; give each a distinct name")
        names[name] = index
        specs.append(EvaluationSpec(
            name=name,
            task=task,
            base=check.text(path + ("base",), item["base"]),
            data=check.text(path + ("data",), item["data"]),
            split=check.text(path + ("split",), item.get("split", "test")),
            data_config=check.text(path + ("data_config",), item.get("data_config"), optional=True),
            limit=check.integer(path + ("limit",), item.get("limit"), minimum=1, optional=True),
            text_field=check.text(path + ("text_field",), item.get("text_field", "text")),
            model_type=check.text(path + ("model_type",), item.get("model_type", "auto"), choices=MODEL_TYPES),
            gguf_file=check.text(path + ("gguf_file",), item.get("gguf_file"), optional=True),
            device=check.text(path + ("device",), item.get("device", "auto")),
            dtype=check.text(path + ("dtype",), item.get("dtype"), optional=True, choices=MODEL_DTYPES),
            options=_check_evaluator_options(check, path + ("options",), task, item.get("options")),
        ))
    return tuple(specs)


def _validate_grid(check: _Checker, value: Any) -> dict[str, tuple[float, ...]]:
    from .sweep import check_grid_size, parse_grid

    grid = check.names(("sweep", "grid"), value, "variable names to lists of values")
    if not grid:
        raise check.fail(("sweep", "grid"), "must give values for at least one variable")
    out: dict[str, tuple[float, ...]] = {}
    for name, values in grid.items():
        path: FieldPath = ("sweep", "grid", name)
        if isinstance(values, str):
            try:
                out[name] = tuple(parse_grid([f"{name}={values}"])[name])
            except AdapterMathError as exc:
                raise check.fail(path, str(exc).replace("--grid ", "")) from None
            continue
        if not isinstance(values, list) or not values:
            raise check.fail(path, f"must be a list of numbers or 'START:STOP:STEP' (got {_describe(values)})")
        out[name] = tuple(check.number(path + (i,), v) for i, v in enumerate(values))
    try:
        check_grid_size(out)
    except AdapterMathError as exc:
        raise check.fail(("sweep", "grid"), str(exc)) from None
    return out


def _validate_sweep(check: _Checker, value: Any, free: Sequence[str], variables: Mapping[str, float], method: str,
                    options: RecipeOptions, method_options: Mapping[str, Any] | None) -> SweepSpec | None:
    from .sweep import grid_variable_problem

    if value is None:
        return None
    path: FieldPath = ("sweep",)
    check.mapping(path, value, SWEEP_FIELDS, required=("grid", "task", "base", "val", "results"))
    grid = _validate_grid(check, value["grid"])
    for name in grid:
        problem = grid_variable_problem(name, free, method, method_options)
        if problem:
            raise check.fail(("sweep", "grid", name), problem)
    task = check.text(path + ("task",), value["task"], choices=SWEEP_TASKS)
    return SweepSpec(
        grid=grid,
        task=task,
        base=check.text(path + ("base",), value["base"]),
        val=check.text(path + ("val",), value["val"]),
        results=check.text(path + ("results",), value["results"]),
        test=check.text(path + ("test",), value.get("test"), optional=True),
        metric=check.text(path + ("metric",), value.get("metric"), optional=True),
        direction=check.text(path + ("direction",), value.get("direction"), optional=True, choices=("max", "min")),
        baselines=check.flag(path + ("baselines",), value.get("baselines", True)),
        restart=check.flag(path + ("restart",), value.get("restart", False)),
        limit=check.integer(path + ("limit",), value.get("limit"), minimum=1, optional=True),
        text_field=check.text(path + ("text_field",), value.get("text_field", "text")),
        model_type=check.text(path + ("model_type",), value.get("model_type", "auto"), choices=MODEL_TYPES),
        gguf_file=check.text(path + ("gguf_file",), value.get("gguf_file"), optional=True),
        device=check.text(path + ("device",), value.get("device", "auto")),
        dtype=check.text(path + ("dtype",), value.get("dtype"), optional=True, choices=MODEL_DTYPES),
        options=_check_evaluator_options(check, path + ("options",), task, value.get("options")),
        select=check.text(path + ("select",), value.get("select", "best"), choices=("best", "one-se")),
        confidence=check.number(path + ("confidence",), value.get("confidence", 0.95), above=0.0, maximum=0.999999),
        seeds=_validate_seeds(check, path + ("seeds",), value.get("seeds")),
    )


def _search_start(spec: SearchSpec) -> dict[str, float]:
    """Each searched variable at the middle of its range (what checks of the method's options bind)."""
    from .search import parse_search_variables

    return {name: (v.low + v.high) / 2 for name, v in parse_search_variables(dict(spec.variables)).items()}


def _validate_search(check: _Checker, value: Any, free: Sequence[str], method: str,
                     method_options: Mapping[str, Any] | None) -> SearchSpec | None:
    from .search import SAMPLERS, parse_constraint, parse_objective, parse_search_variable
    from .sweep import grid_variable_problem

    if value is None:
        return None
    path: FieldPath = ("search",)
    check.mapping(path, value, SEARCH_FIELDS, required=("variables", "task", "base", "val", "results"))
    variables = check.names(path + ("variables",), value["variables"], "variable names to 'LOW:HIGH' ranges")
    if not variables:
        raise check.fail(path + ("variables",), "must give a range for at least one variable")
    ranges: dict[str, str] = {}
    for name, given in variables.items():
        where = path + ("variables", name)
        text = f"{given[0]}:{given[1]}" if isinstance(given, list) and len(given) == 2 else given
        if not isinstance(text, str):
            raise check.fail(where, f"must be 'LOW:HIGH', 'LOW:HIGH,log' or [LOW, HIGH] (got {_describe(given)})")
        try:
            parse_search_variable(f"{name}={text}")
        except AdapterMathError as exc:
            raise check.fail(where, str(exc).replace(f"--var {name}: ", "")) from None
        problem = grid_variable_problem(name, free, method, method_options)
        if problem:
            raise check.fail(where, problem)
        ranges[name] = text
    task = check.text(path + ("task",), value["task"], choices=SWEEP_TASKS)

    def specs(field_name: str, parse: Callable[[str], Any]) -> tuple[str, ...]:
        items = value.get(field_name) or []
        items = [items] if isinstance(items, str) else items
        if not isinstance(items, list):
            raise check.fail(path + (field_name,), f"must be a list (got {_describe(items)})")
        for index, item in enumerate(items):
            check.text(path + (field_name, index), item)
            try:
                parse(item)
            except AdapterMathError as exc:
                raise check.fail(path + (field_name, index), str(exc)) from None
        return tuple(items)

    timeout = check.number(path + ("timeout",), value.get("timeout"), above=0.0, optional=True)
    return SearchSpec(
        variables=ranges,
        task=task,
        base=check.text(path + ("base",), value["base"]),
        val=check.text(path + ("val",), value["val"]),
        results=check.text(path + ("results",), value["results"]),
        test=check.text(path + ("test",), value.get("test"), optional=True),
        objectives=specs("objectives", parse_objective),
        constraints=specs("constraints", parse_constraint),
        l1=check.number(path + ("l1",), value.get("l1", 0.0), minimum=0.0),
        sampler=check.text(path + ("sampler",), value.get("sampler", "tpe"), choices=SAMPLERS),
        seed=check.integer(path + ("seed",), value.get("seed"), optional=True),
        trials=check.integer(path + ("trials",), value.get("trials", 20), minimum=1),
        timeout=timeout,
        storage=check.text(path + ("storage",), value.get("storage"), optional=True),
        study=check.text(path + ("study",), value.get("study"), optional=True),
        workers=check.integer(path + ("workers",), value.get("workers", 1), minimum=1),
        restart=check.flag(path + ("restart",), value.get("restart", False)),
        baselines=check.flag(path + ("baselines",), value.get("baselines", True)),
        limit=check.integer(path + ("limit",), value.get("limit"), minimum=1, optional=True),
        text_field=check.text(path + ("text_field",), value.get("text_field", "text")),
        model_type=check.text(path + ("model_type",), value.get("model_type", "auto"), choices=MODEL_TYPES),
        gguf_file=check.text(path + ("gguf_file",), value.get("gguf_file"), optional=True),
        device=check.text(path + ("device",), value.get("device", "auto")),
        dtype=check.text(path + ("dtype",), value.get("dtype"), optional=True, choices=MODEL_DTYPES),
        options=_check_evaluator_options(check, path + ("options",), task, value.get("options")),
        confidence=check.number(path + ("confidence",), value.get("confidence", 0.95), above=0.0, maximum=0.999999),
    )


def _validate_seeds(check: _Checker, path: FieldPath, value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise check.fail(path, f"must be a list of integer seeds such as [0, 1, 2] (got {_describe(value)})")
    seeds = tuple(check.integer(path + (index,), item, minimum=0) for index, item in enumerate(value))
    if len(set(seeds)) != len(seeds):
        raise check.fail(path, "gives a seed twice")
    return seeds


def _validate_push(check: _Checker, value: Any) -> PushSpec | None:
    from .hub import validate_model_repo_id

    if value is None:
        return None
    path: FieldPath = ("push",)
    check.mapping(path, value, PUSH_FIELDS, required=("repo",))
    repo = check.text(path + ("repo",), value["repo"])
    try:
        validate_model_repo_id(repo)
    except AdapterMathError as exc:
        raise check.fail(path + ("repo",), str(exc)) from None
    revision = check.text(path + ("revision",), value.get("revision"), optional=True)
    create_pr = check.flag(path + ("create_pr",), value.get("create_pr", False))
    if create_pr and revision not in (None, "main"):
        raise check.fail(path + ("create_pr",), "a pull request is opened against main; drop push.revision or push.create_pr")
    return PushSpec(repo=repo, private=check.flag(path + ("private",), value.get("private", False)), revision=revision,
                    create_pr=create_pr,
                    commit_message=check.text(path + ("commit_message",), value.get("commit_message"), optional=True))


# --------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read and validate a recipe: a YAML file, a provenance record (``adaptermath.json``, its
    ``recipe`` field), or an adapter folder holding one. ``overrides`` are ``FIELD=VALUE`` items."""
    source = str(path)
    target = Path(path).expanduser()
    if target.is_dir():
        if not (target / PROVENANCE_FILE).is_file():
            raise RecipeError(f"{source} is a folder without {PROVENANCE_FILE}; give a recipe file or an adaptermath output folder")
        target = target / PROVENANCE_FILE
        source = str(Path(source) / PROVENANCE_FILE)
    if not target.is_file():
        raise RecipeError(f"{source}: no such recipe file")
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{source}: cannot read the recipe ({exc})") from None
    data, origins = _parse_yaml(text, source)
    if isinstance(data, dict) and str(data.get("format", "")).startswith(PROVENANCE_FORMAT_PREFIX):
        if not isinstance(data.get("recipe"), dict):
            raise RecipeError(f"{source}: this provenance record holds no recipe (written by an adaptermath "
                              "that did not record recipes); rebuild it with adaptermath compose")
        data = data["recipe"]
        origins = {key[1:]: where for key, where in origins.items() if key[:1] == ("recipe",)}
        recorded = _from_record(data, origins, source)
        return replace(recipe_from_dict(recorded, folder=target.parent, source=source, overrides=overrides, origins=origins),
                       recorded=True)
    return recipe_from_dict(data, folder=target.parent, source=source, overrides=overrides, origins=origins)


def _from_record(data: dict[str, Any], origins: dict[FieldPath, str], source: str) -> dict[str, Any]:
    """A recorded recipe (an output's ``adaptermath.json``, which travels with pushed adapters)
    made safe to run: it rebuilds into its own folder (``output: "."``), never carries ``force``
    or ``allow_pickle`` (only the command line gives them), and never sweeps or pushes."""
    for name in ("sweep", "search", "push"):
        if data.get(name) is not None:
            raise RecipeError(f"{origins.get((name,), source)}: a recorded recipe cannot {name} (adaptermath never "
                              f"records one); copy it into a recipe file of your own to {name}")
    data = {key: value for key, value in data.items() if key != "force"}
    data["output"] = "."
    origins.pop(("output",), None)
    if isinstance(data.get("options"), dict):
        data["options"] = {key: value for key, value in data["options"].items() if key != "allow_pickle"}
    return data


# --------------------------------------------------------------------------- paths


def _is_explicit_path(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..") or os.path.isabs(value)


def _cwd_relative(path: str) -> str:
    """``path`` made relative to the working directory (absolute when that is impossible)."""
    absolute = os.path.abspath(path)
    try:
        return os.path.relpath(absolute)
    except ValueError:  # another drive (Windows)
        return absolute


def resolve_path(value: str, folder: str | Path) -> str:
    """A path written in a recipe, as the running process opens it: absolute ones as written
    (with ``~`` expanded), relative ones joined to ``folder`` and made relative to the working directory."""
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    return _cwd_relative(os.path.join(folder, expanded))


def resolve_input(ref: str, folder: str | Path) -> str:
    """An input ref: ``hf://`` refs and absolute paths as written, relative paths via :func:`resolve_path`."""
    if ref.startswith("hf://") or os.path.isabs(os.path.expanduser(ref)):
        return ref
    return resolve_path(ref, folder)


def resolve_resource(value: str, folder: str | Path) -> tuple[str, bool]:
    """A base model or data set: ``(value, is_local)``. A local path when it starts with ``./``,
    ``../``, ``/`` or ``~`` or exists relative to ``folder``; else a Hugging Face Hub name as written."""
    candidate = resolve_path(value, folder)
    if _is_explicit_path(value) or os.path.exists(candidate):
        return candidate, True
    return value, False


def _relative_to(path_text: str, target: Path | None) -> str:
    """``path_text`` (as the process opens it) relative to ``target``; absolute ones stay as written."""
    if target is None or os.path.isabs(os.path.expanduser(path_text)):
        return path_text
    try:
        return Path(os.path.relpath(os.path.abspath(os.path.expanduser(path_text)), os.path.abspath(target))).as_posix()
    except ValueError:
        return os.path.abspath(path_text)


# --------------------------------------------------------------------------- the recipe every output records


def recorded_recipe(composed: "ComposedAdapter", output: str | Path | None = None, *,
                    evaluation: Sequence[EvaluationSpec] = (), folder: str | Path = ".") -> dict[str, Any]:
    """The recipe that rebuilds ``composed`` into ``output``, as stored in its ``adaptermath.json``.

    Paths are relative to the output folder (``output: "."``), absolute ones stay as given;
    ``hf://`` inputs are pinned to the commit they resolved to; variables, options and the
    method's options are the values used. ``evaluation`` entries (relative to ``folder``) are
    carried over with their paths made relative to the output folder too.
    """
    target = Path(output) if output is not None else None
    options = composed.options
    from .expression import control_target, is_control

    inputs = {(control_target(name) if is_control(name) else name): _recorded_ref(adapter, target)
              for name, adapter in composed.adapters.items()}
    recipe = Recipe(
        inputs=inputs,
        expression=composed.combination.source or str(composed.combination),
        output=".",
        variables={name: float(value) for name, value in composed.variables.items()},
        space=options.space,
        method=options.method,
        method_options=dict(options.method_options),
        options=RecipeOptions(
            negate_factor=options.negate_factor,
            normalize=options.normalize,
            rank=options.rank,
            energy=options.energy,
            max_rank=options.max_rank,
            heads=options.heads,
            dtype=options.dtype,
            diagnostic_threshold=float(options.diagnostic_threshold),
            allow_pickle=any(adapter.weights_file.suffix == ".bin" for adapter in composed.adapters.values()),
            control_seed=int(options.control_seed),
            base_mismatch=options.base_mismatch,
        ),
        evaluation=tuple(_recorded_evaluation(spec, Path(folder), target) for spec in evaluation),
    )
    recorded = recipe_to_dict(recipe)
    del recorded["force"]  # a recorded recipe never says what may be replaced
    return recorded


def _recorded_ref(adapter: Any, target: Path | None) -> str:
    source = adapter.source or str(adapter.path)
    if source.startswith("hf://"):
        if not adapter.commit_sha:
            return source
        from .hub import HubRef, parse_hub_ref

        ref = parse_hub_ref(source)
        return str(HubRef(ref.repo_id, adapter.commit_sha, ref.subfolder))
    return _relative_to(source, target)


def _recorded_evaluation(spec: EvaluationSpec, folder: Path, target: Path | None) -> EvaluationSpec:
    def rebase(value: str) -> str:
        resolved, local = resolve_resource(value, folder)
        return _relative_to(resolved, target) if local else value

    return EvaluationSpec(**{**asdict(spec), "base": rebase(spec.base), "data": rebase(spec.data),
                             "options": dict(spec.options)})


# --------------------------------------------------------------------------- running


@dataclass
class RunResult:
    """What :func:`run_recipe` did: the output folder, the composed adapter, the recorded recipe,
    the evaluation entries written to the provenance, the sweep's result and the push."""

    recipe: Recipe
    output: Path
    composed: "ComposedAdapter"
    recorded: dict[str, Any]
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    sweep: Any = None  # adaptermath.sweep.SweepResult
    push: Any = None  # adaptermath.hub.PushResult
    search: Any = None  # adaptermath.search.SearchResult

    def to_dict(self) -> dict[str, Any]:
        composed = self.composed
        return {
            "recipe": self.recipe.source,
            "output": str(self.output),
            "expression": composed.combination.source,
            "normal_form": str(composed.combination),
            "variables": dict(composed.variables),
            "coefficients": dict(composed.coefficients),
            "space": composed.options.space,
            "method": composed.options.method,
            "type": "LoRA" if composed.kind == "lora" else "(IA)^3",
            "base_model": composed.base_model,
            "report": composed.report.summary(),
            "sweep": None if self.sweep is None else {
                "best_point": self.sweep.best_point, "metric": self.sweep.metric, "direction": self.sweep.direction,
                "best_validation": self.sweep.to_dict()["best_validation"],
                "test": [{"label": r.label, "point": r.point, self.sweep.metric: r.metrics.get(self.sweep.metric)}
                         for r in self.sweep.test],
            },
            "search": None if self.search is None else {
                key: value for key, value in self.search.to_dict().items()
                if key in ("study", "storage", "trials", "objectives", "best_point", "chosen", "test")},
            "evaluation": self.evaluation,
            "push": None if self.push is None else {k: v for k, v in self.push.to_dict().items() if k not in ("files", "card")},
        }


def with_output(recipe: Recipe, output: str | Path) -> Recipe:
    """``recipe`` writing to ``output`` (relative to the working directory, as ``-o`` gives it)."""
    return replace(recipe, output=os.path.abspath(os.path.expanduser(str(output))),
                   overridden=recipe.overridden | {"output"})


def output_path(recipe: Recipe) -> Path:
    """Where the recipe writes its adapter (its ``output``, relative to the recipe's folder)."""
    return Path(resolve_path(recipe.output, recipe.folder))


def resolved_inputs(recipe: Recipe) -> dict[str, str]:
    """Each input as the running process opens it (see :func:`resolve_input`)."""
    return {name: resolve_input(ref, recipe.folder) for name, ref in recipe.inputs.items()}


def _options_dict(options: RecipeOptions) -> dict[str, Any]:
    """The options as plain data; ``base_mismatch`` only when it allows a mismatch, so that the
    records of every other output keep their bytes."""
    data = asdict(options)
    if data["base_mismatch"] == "error":
        del data["base_mismatch"]
    return data


def _compose(recipe: Recipe, variables: Mapping[str, float]) -> "ComposedAdapter":
    from .compose import compose

    options = recipe.options
    return compose(
        recipe.expression, resolved_inputs(recipe), variables=dict(variables), space=recipe.space,
        negate_factor=options.negate_factor, normalize=options.normalize, rank=options.rank, heads=options.heads,
        dtype=options.dtype, diagnostic_threshold=options.diagnostic_threshold, allow_pickle=options.allow_pickle,
        method=recipe.method, method_options=dict(recipe.method_options), energy=options.energy,
        max_rank=options.max_rank, control_seed=options.control_seed, base_mismatch=options.base_mismatch,
    )


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _with_pickle(recipe: Recipe, allow_pickle: bool) -> Recipe:
    """The recipe reading pickles only when the caller (the command line) allows it: a recipe's own
    ``allow_pickle`` is a note, never a permission."""
    return replace(recipe, options=replace(recipe.options, allow_pickle=allow_pickle))


def check_recipe_writes(recipe: Recipe, *, allow_outside: bool = False) -> Path:
    """Where the recipe writes, checked: its output (and a sweep's results folder) must lie inside
    the recipe's folder unless the command line gave it (``--set``/``-o``) or ``allow_outside``
    consents; the output must not be, contain or lie inside an input or the recipe file itself
    (:func:`adaptermath.io.check_output_location`). Returns the output path."""
    from .io.output_safety import check_output_location

    output = output_path(recipe)
    folder = Path(recipe.folder)
    places = [("output", output)]
    if recipe.sweep is not None:
        places.append(("sweep.results", Path(resolve_path(recipe.sweep.results, folder))))
    if recipe.search is not None:
        places.append(("search.results", Path(resolve_path(recipe.search.results, folder))))
    for name, place in places:
        if not (allow_outside or recipe.recorded or name in recipe.overridden or _inside(place, folder)):
            raise RecipeError(f"{recipe.source}: field '{name}' ({place}) lies outside the recipe's folder {folder}; "
                              "pass --allow-outside (allow_outside=True) to write there, or give the path with -o/--set")
    protected: list[str | Path] = list(resolved_inputs(recipe).values())
    if not recipe.recorded and Path(recipe.source).is_file():
        protected.append(Path(recipe.source))
    check_output_location(output, protected)
    return output


def run_recipe(recipe: Recipe, *, force: bool | None = None, progress: ProgressCallback | None = None,
               log: Callable[[str], None] | None = None, allow_pickle: bool = False,
               allow_outside: bool = False) -> RunResult:
    """Execute ``recipe``: sweep (when asked) to choose the variables, compose, write the adapter
    with the recipe that rebuilds it, evaluate it (recording the metrics in its provenance), push it.

    ``force`` (default: the recipe's ``force``; a recorded recipe has none) replaces an existing
    output. ``allow_pickle`` lets inputs be pickles (a recipe's own ``allow_pickle`` does not);
    ``allow_outside`` lets a recipe write outside its folder (:func:`check_recipe_writes`).
    ``progress(done, total, what)`` follows the composition and the evaluations; ``log(message)``
    receives one line per step.
    """
    say = log or (lambda message: None)
    recipe = _with_pickle(recipe, allow_pickle)
    force = recipe.force if force is None else force
    output = check_recipe_writes(recipe, allow_outside=allow_outside)
    if (output.exists() or output.is_symlink()) and not force:
        raise OutputExistsError(f"{output} already exists; pass --force (force=True) to replace it, "
                                "or write elsewhere with --set output=PATH")
    variables = dict(recipe.variables)
    sweep_result = search_result = None
    if recipe.sweep is not None:
        sweep_result = _run_sweep(recipe, output, say)
        variables.update(sweep_result.best_point or {})
    if recipe.bake is not None:
        return _run_bake(recipe, output, force, progress, say)
    if recipe.search is not None:
        search_result = _run_search(recipe, output, say)
        variables.update(search_result.best_point or {})
    composed = _compose(recipe, variables)
    recorded = recorded_recipe(composed, output, evaluation=recipe.evaluation, folder=recipe.folder)
    say(f"composing {composed.combination} into {output}")
    composed.save(output, force=force, progress=progress, recipe=recorded)
    entries = [_evaluate(recipe, spec, output, progress, say) for spec in recipe.evaluation]
    if entries:
        _record_evaluation(output, entries)
    pushed = None
    if recipe.push is not None:
        from .hub import push_folder

        spec = recipe.push
        say(f"pushing {output} to {spec.repo}")
        pushed = push_folder(output, spec.repo, private=spec.private, revision=spec.revision, create_pr=spec.create_pr,
                             commit_message=spec.commit_message)
    return RunResult(recipe=recipe, output=output, composed=composed, recorded=recorded, evaluation=entries,
                     sweep=sweep_result, push=pushed, search=search_result)


def _run_bake(recipe: Recipe, output: Path, force: bool, progress: ProgressCallback | None,
              say: Callable[[str], None]) -> RunResult:
    """A recipe with ``bake``: the composition folded into the base model, written to ``output``."""
    from .bake import bake, bake_recipe

    assert recipe.bake is not None
    options = recipe.options
    base = resolve_input(recipe.bake.base, recipe.folder)
    say(f"baking {recipe.expression} into {base} -> {output}")
    composed_for_recipe = _compose(recipe, recipe.variables)
    recorded = bake_recipe(composed_for_recipe, base, output, recipe.bake.base_mismatch)
    result = bake(base, recipe.expression, resolved_inputs(recipe), output, variables=dict(recipe.variables),
                  space=recipe.space, negate_factor=options.negate_factor, normalize=options.normalize,
                  heads=options.heads, method=recipe.method, method_options=dict(recipe.method_options),
                  rank=options.rank, energy=options.energy, max_rank=options.max_rank,
                  allow_pickle=options.allow_pickle, base_mismatch=recipe.bake.base_mismatch, force=force,
                  progress=progress, recipe=recorded)
    return RunResult(recipe=recipe, output=output, composed=result.composed, recorded=recorded)


def _metrics(task: str, result: Mapping[str, Any]) -> dict[str, float]:
    """The task's metrics (:data:`EVALUATION_METRICS`) from an evaluator's result."""
    return {key: float(result[key]) for key in EVALUATION_METRICS[task]
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)}


def _public_name(value: str, local: bool) -> str:
    return Path(value).name if local else value


def _evaluate(recipe: Recipe, spec: EvaluationSpec, output: Path, progress: ProgressCallback | None,
              say: Callable[[str], None]) -> dict[str, Any]:
    from .evaluation.run import evaluate

    base, _ = resolve_resource(spec.base, recipe.folder)
    data, local = resolve_resource(spec.data, recipe.folder)
    say(f"evaluating {spec.name}: {spec.task} on {data}")
    state = {"done": 0, "total": 0}

    def on_start(total: int | None) -> None:
        state["total"] = total or 0
        if progress:
            progress(0, state["total"], spec.name)

    def advance(amount: float) -> None:
        state["done"] += int(amount)
        if progress:
            progress(state["done"], max(state["total"], state["done"]), spec.name)

    run = evaluate(base, str(output), task=spec.task, data=data, split=spec.split, dataset_config=spec.data_config,
                   limit=spec.limit, text_field=spec.text_field, model_type=spec.model_type, gguf_file=spec.gguf_file,
                   device=spec.device, dtype=spec.dtype, progress=advance, on_start=on_start, **dict(spec.options))
    entry = {"name": spec.name, "task": spec.task, "dataset": _public_name(spec.data, local)}
    if not local:  # a Hub dataset: its split and configuration say what was scored
        entry.update({"split": spec.split, "config": spec.data_config} if spec.data_config else {"split": spec.split})
    entry["metrics"] = _metrics(spec.task, run.result.to_dict())
    entry["intervals"] = {name: run.intervals[name] for name in entry["metrics"] if name in (run.intervals or {})}
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-.") else "_" for ch in spec.name).lstrip(".") or "evaluation"
    run.save(output / EVALUATION_FOLDER / f"{safe}.json", force=True)  # with NAME.examples.jsonl.gz
    return entry


def _record_evaluation(output: Path, entries: list[dict[str, Any]]) -> None:
    """Write the evaluation entries into ``output/adaptermath.json`` (atomically)."""
    from .compose import PROVENANCE_NAME, write_json
    from .io.atomic import atomic_output_file

    target = output / PROVENANCE_NAME
    record = json.loads(target.read_text(encoding="utf-8"))
    record["evaluation"] = entries
    with atomic_output_file(target, force=True) as tmp:
        write_json(tmp, record)


def _results_folder(recipe: Recipe, section: str, path: str, output: Path) -> Path:
    """The results folder of a recipe's ``sweep`` or ``search``: outside ``output`` (which is replaced)."""
    results = Path(resolve_path(path, recipe.folder))
    if _inside(results, output):
        raise RecipeError(f"{recipe.source}: field '{section}.results' ({results}) must lie outside the output folder "
                          f"{output}, which is replaced when the adapter is written")
    if results.exists() and not results.is_dir():
        raise RecipeError(f"{recipe.source}: field '{section}.results': {results} exists and is not a folder")
    return results


def _evaluation_data(recipe: Recipe, spec: Any) -> tuple[str, str, str | None]:
    """A sweep's or search's base model, validation and (optional) test data, resolved beside the recipe."""
    base, _ = resolve_resource(spec.base, recipe.folder)
    val, _ = resolve_resource(spec.val, recipe.folder)
    test = resolve_resource(spec.test, recipe.folder)[0] if spec.test else None
    return base, val, test


def _run_sweep(recipe: Recipe, output: Path, say: Callable[[str], None]) -> Any:
    """Run the recipe's sweep (:func:`adaptermath.sweep.sweep`) and write its results folder."""
    from .methods import get_method
    from .sweep import DEFAULT_METRICS, sweep, sweep_seeds, write_sweep_outputs

    spec = recipe.sweep
    assert spec is not None
    results = _results_folder(recipe, "sweep", spec.results, output)
    grid = {name: list(values) for name, values in spec.grid.items()}
    method_variables = get_method(recipe.method).variable_names(recipe.method_options)
    for name in [*_free_variables(recipe), *method_variables]:  # a variable fixed under `variables`: a one-value grid
        if name not in grid and name in recipe.variables:
            grid[name] = [recipe.variables[name]]
    base, val, test = _evaluation_data(recipe, spec)
    options = recipe.options
    say(f"sweeping {', '.join(f'{n} over {len(v)} values' for n, v in spec.grid.items())} ({spec.task} on {val})")

    metric = spec.metric or DEFAULT_METRICS[spec.task][0]

    def on_record(record: Any, cached: bool) -> None:
        point = ", ".join(f"{k}={v:g}" for k, v in record.point.items())
        value = record.metrics.get(metric)
        shown = f" {metric}={value:.6g}" if isinstance(value, (int, float)) else ""
        say(f"sweep {record.split} {record.label} {point}{shown}{' (cached)' if cached else ''}")

    common = dict(
        base=base, task=spec.task, grid=grid, val=val, test=test,
        metric=spec.metric, direction=spec.direction, space=recipe.space, negate_factor=options.negate_factor,
        normalize=options.normalize, rank=options.rank, heads=options.heads, method=recipe.method,
        method_options=dict(recipe.method_options), energy=options.energy, max_rank=options.max_rank, baselines=spec.baselines,
        gguf_file=spec.gguf_file, model_type=spec.model_type,
        device=spec.device, dtype=spec.dtype, text_field=spec.text_field, limit=spec.limit,
        allow_pickle=options.allow_pickle, on_record=on_record, select=spec.select, confidence=spec.confidence,
        **dict(spec.options),
    )
    if spec.seeds:
        # One run per seed (results/seed-N/, each resumable); the adapter takes the first seed's choice.
        results_per_seed, _ = sweep_seeds(recipe.expression, resolved_inputs(recipe), seeds=list(spec.seeds),
                                          output=results, force=spec.restart,
                                          on_seed=lambda seed: say(f"sweep seed {seed}"), **common)
        return results_per_seed[0]
    result = sweep(recipe.expression, resolved_inputs(recipe), results=results / "results.jsonl", force=spec.restart,
                   **common)
    note = write_sweep_outputs(result, results)
    if note:  # matplotlib is an optional extra
        say(f"no sweep plot: {note}")
    return result


def _run_search(recipe: Recipe, output: Path, say: Callable[[str], None]) -> Any:
    """Run the recipe's search (:func:`adaptermath.search.search`): its study and results in ``search.results``."""
    from .search import search

    spec = recipe.search
    assert spec is not None
    results = _results_folder(recipe, "search", spec.results, output)
    base, val, test = _evaluation_data(recipe, spec)
    options = recipe.options
    say(f"searching {', '.join(f'{n} in {r}' for n, r in spec.variables.items())} with {spec.sampler} "
        f"({spec.trials} trials, {spec.task} on {val})")

    def on_trial(trial: Any) -> None:
        values = ", ".join(f"{v:.6g}" for v in trial.values) if trial.values else trial.state.name.lower()
        say(f"search trial {trial.number}: {values}")

    result = search(
        recipe.expression, resolved_inputs(recipe), base=base, task=spec.task, variables=dict(spec.variables), val=val,
        test=test, trials=spec.trials, sampler=spec.sampler, objectives=list(spec.objectives),
        constraints=list(spec.constraints), l1=spec.l1, storage=spec.storage, study=spec.study, timeout=spec.timeout,
        seed=spec.seed, workers=spec.workers, output=results, write_adapter=False, force=spec.restart,
        baselines=spec.baselines, confidence=spec.confidence, space=recipe.space, negate_factor=options.negate_factor,
        normalize=options.normalize,
        rank=options.rank, heads=options.heads, method=recipe.method, method_options=dict(recipe.method_options),
        energy=options.energy, max_rank=options.max_rank, gguf_file=spec.gguf_file, model_type=spec.model_type,
        device=spec.device, dtype=spec.dtype, text_field=spec.text_field, limit=spec.limit,
        allow_pickle=options.allow_pickle, on_trial=on_trial, **dict(spec.options),
    )
    if result.chosen is None:
        raise RecipeError(f"{recipe.source}: no trial of the search meets its constraints; nothing to build")
    return result


def _free_variables(recipe: Recipe) -> list[str]:
    from .expression import parse_expression

    return parse_expression(recipe.expression, list(recipe.inputs)).free_variables


# --------------------------------------------------------------------------- the plan (--dry-run)


def plan_recipe(recipe: Recipe, *, check_inputs: bool = True, allow_pickle: bool = False,
                allow_outside: bool = False) -> dict[str, Any]:
    """What :func:`run_recipe` would do, without writing anything.

    With ``check_inputs`` and only local inputs, the inputs' headers are read and the composition
    is planned (shapes, ranks, options checked; no tensor is computed). Local inputs that do not
    exist are listed under ``missing_inputs`` and nothing is read. The output's place is checked as
    :func:`run_recipe` checks it.
    """
    from .expression import parse_expression

    recipe = _with_pickle(recipe, allow_pickle)
    check_recipe_writes(recipe, allow_outside=allow_outside)

    combination = parse_expression(recipe.expression, list(recipe.inputs))
    bound = dict(recipe.variables)
    if recipe.sweep is not None:
        bound.update({name: values[0] for name, values in recipe.sweep.grid.items()})
    if recipe.search is not None:
        bound.update(_search_start(recipe.search))
    output = output_path(recipe)
    inputs = resolved_inputs(recipe)
    checked = False
    # A recipe whose inputs do not exist yet (placeholders, as in recipes/sweep.yaml) still validates:
    # the plan names them under missing_inputs and the inputs are not read.
    missing = {name: ref for name, ref in inputs.items() if not ref.startswith("hf://") and not Path(ref).exists()}
    if check_inputs and not missing and not any(ref.startswith("hf://") for ref in inputs.values()):
        composed = _compose(recipe, bound)
        checked = True
        kind = "LoRA" if composed.kind == "lora" else "(IA)^3"
    else:
        kind = None
    plan: dict[str, Any] = {
        "recipe": recipe.source,
        "inputs": inputs,
        "expression": recipe.expression,
        "normal_form": str(combination),
        "variables": dict(recipe.variables),
        "space": recipe.space,
        "method": recipe.method,
        "method_options": dict(recipe.method_options),
        "options": asdict(recipe.options),
        "output": str(output),
        "output_exists": output.exists(),
        "force": recipe.force,
        "inputs_checked": checked,
        "missing_inputs": missing,
        "type": kind,
        "sweep": None,
        "evaluation": [],
        "push": asdict(recipe.push) if recipe.push is not None else None,
    }
    if recipe.search is not None:
        spec = recipe.search
        plan["search"] = {
            "variables": dict(spec.variables), "trials": spec.trials, "sampler": spec.sampler, "task": spec.task,
            "objectives": list(spec.objectives), "constraints": list(spec.constraints), "l1": spec.l1,
            "base": resolve_resource(spec.base, recipe.folder)[0], "val": resolve_resource(spec.val, recipe.folder)[0],
            "test": resolve_resource(spec.test, recipe.folder)[0] if spec.test else None,
            "results": resolve_path(spec.results, recipe.folder),
        }
    elif recipe.sweep is None:
        plan["coefficients"] = combination.coefficients(bound)
    else:
        spec = recipe.sweep
        plan["sweep"] = {
            "grid": {name: list(values) for name, values in spec.grid.items()},
            "points": spec.points,
            "task": spec.task,
            "base": resolve_resource(spec.base, recipe.folder)[0],
            "val": resolve_resource(spec.val, recipe.folder)[0],
            "test": resolve_resource(spec.test, recipe.folder)[0] if spec.test else None,
            "results": resolve_path(spec.results, recipe.folder),
        }
    for spec in recipe.evaluation:
        plan["evaluation"].append({"name": spec.name, "task": spec.task,
                                   "base": resolve_resource(spec.base, recipe.folder)[0],
                                   "data": resolve_resource(spec.data, recipe.folder)[0]})
    return plan
