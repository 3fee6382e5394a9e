"""The plan of a recipe (``adaptermath run --dry-run``): what would be read and written, without running it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from .paths import resolve_path, resolve_resource
from .run import check_recipe_writes, _compose, output_path, resolved_inputs, _with_pickle
from .schema import Recipe
from .sections import _search_start


def plan_recipe(recipe: Recipe, *, check_inputs: bool = True, allow_pickle: bool = False,
                allow_outside: bool = False) -> dict[str, Any]:
    """What :func:`run_recipe` would do, without writing anything.

    With ``check_inputs`` and only local inputs, the inputs' headers are read and the composition
    is planned (shapes, ranks, options checked; no tensor is computed). Local inputs that do not
    exist are listed under ``missing_inputs`` and nothing is read. The output's place is checked as
    :func:`run_recipe` checks it.
    """
    from ..expression import parse_expression

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
