"""The provenance record: ``adaptermath.json`` beside every output, and the recipe it carries.

Every writer (the PEFT folder, kohya/diffusers files, bake, extract, sweeps and searches) records
how its output was made in :data:`PROVENANCE_NAME`, written by :func:`write_json`. Its ``"recipe"``
is :func:`recorded_recipe`: paths relative to the output folder, ``hf://`` inputs pinned to the
commit they resolved to, the variables and options used, so ``adaptermath run OUTPUT`` rebuilds
the output byte for byte (docs/recipes.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from .errors import CompositionError
from .expression import LinearCombination, control_target, is_control
from .hub import HubRef, parse_hub_ref
from .recipe.paths import _relative_to, resolve_resource
from .recipe.schema import EvaluationSpec, Recipe, RecipeOptions, recipe_to_dict

PROVENANCE_NAME = "adaptermath.json"


class Composition(Protocol):
    """What :func:`recorded_recipe` reads of a composed adapter (:class:`adaptermath.compose.ComposedAdapter`)."""

    combination: LinearCombination
    adapters: Mapping[str, Any]
    variables: Mapping[str, float]
    options: Any  # adaptermath.compose.ComposeOptions


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as strict JSON (a NaN or Infinity, which JSON cannot hold, is an error)."""
    try:
        text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise CompositionError(f"{path.name}: a value is NaN or infinite, which JSON cannot hold; nothing was written") from None
    path.write_text(text + "\n", encoding="utf-8")


def recorded_recipe(composed: Composition, output: str | Path | None = None, *,
                    evaluation: Sequence[EvaluationSpec] = (), folder: str | Path = ".") -> dict[str, Any]:
    """The recipe that rebuilds ``composed`` into ``output``, as stored in its ``adaptermath.json``.

    Paths are relative to the output folder (``output: "."``), absolute ones stay as given;
    ``hf://`` inputs are pinned to the commit they resolved to; variables, options and the
    method's options are the values used. ``evaluation`` entries (relative to ``folder``) are
    carried over with their paths made relative to the output folder too.
    """
    target = Path(output) if output is not None else None
    options = composed.options
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
        ref = parse_hub_ref(source)
        return str(HubRef(ref.repo_id, adapter.commit_sha, ref.subfolder))
    return _relative_to(source, target)


def _recorded_evaluation(spec: EvaluationSpec, folder: Path, target: Path | None) -> EvaluationSpec:
    def rebase(value: str) -> str:
        resolved, local = resolve_resource(value, folder)
        return _relative_to(resolved, target) if local else value

    return EvaluationSpec(**{**asdict(spec), "base": rebase(spec.base), "data": rebase(spec.data),
                             "options": dict(spec.options)})
