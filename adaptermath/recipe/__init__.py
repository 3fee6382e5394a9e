"""Recipes: a versioned YAML file that says how to build an adapter, and running it (docs/recipes.md).

A recipe names the inputs (folders or ``hf://`` refs), the expression, the variables, the space,
the merge method and options, the output, and optionally a sweep (a grid) or a search (Optuna)
that chooses the variables, an evaluation of the result, and a push to the Hub::

    version: 1
    inputs: {sst2: ../demo/sst2, mnli: ../demo/mnli}
    expression: "0.5*sst2 + 0.5*mnli"
    output: ../demo/merged

:func:`load_recipe` reads and validates one (``--set`` overrides applied first); every schema
error is one line naming the file, the line and the field. :func:`run_recipe` executes it.
Relative paths are relative to the recipe's folder. Every output records the recipe that rebuilds
it (:func:`adaptermath.provenance.recorded_recipe`).

The modules, one concern each: :mod:`.schema` (the fields and the :class:`Recipe` dataclasses),
:mod:`.yaml_source` (YAML with line numbers, ``--set``), :mod:`.checker` (one-line field errors),
:mod:`.validate` (:func:`load_recipe`, :func:`recipe_from_dict`), :mod:`.sections` (evaluation,
sweep, search, push, bake), :mod:`.paths`, :mod:`.run` (:func:`run_recipe`) and :mod:`.plan`
(:func:`plan_recipe`). This package's names are imported on first use, so that the schema, which
the provenance record uses, loads without the runner.
"""

from ..facade import make_lazy

# Public names -> the module (in this package) that defines them.
_LAZY = {
    "RECIPE_VERSION": "schema",
    "PROVENANCE_FORMAT_PREFIX": "schema",
    "TOP_FIELDS": "schema",
    "OPTION_FIELDS": "schema",
    "CONTROLS": "schema",
    "EVALUATION_FOLDER": "schema",
    "EVALUATION_FIELDS": "schema",
    "SWEEP_FIELDS": "schema",
    "SEARCH_FIELDS": "schema",
    "PUSH_FIELDS": "schema",
    "BAKE_FIELDS": "schema",
    "SPACES": "schema",
    "EVALUATION_TASKS": "schema",
    "SWEEP_TASKS": "schema",
    "MODEL_TYPES": "schema",
    "MODEL_DTYPES": "schema",
    "EVALUATION_METRICS": "schema",
    "FieldPath": "schema",
    "ProgressCallback": "schema",
    "RecipeOptions": "schema",
    "EvaluationSpec": "schema",
    "SweepSpec": "schema",
    "SearchSpec": "schema",
    "PushSpec": "schema",
    "BakeSpec": "schema",
    "Recipe": "schema",
    "recipe_to_dict": "schema",
    "recipe_to_yaml": "schema",
    "MAX_YAML_VALUES": "yaml_source",
    "apply_overrides": "yaml_source",
    "recipe_from_dict": "validate",
    "controlled": "validate",
    "load_recipe": "validate",
    "resolve_path": "paths",
    "resolve_input": "paths",
    "resolve_resource": "paths",
    "RunResult": "run",
    "with_output": "run",
    "output_path": "run",
    "resolved_inputs": "run",
    "check_recipe_writes": "run",
    "run_recipe": "run",
    "plan_recipe": "plan",
}

make_lazy(__name__)
