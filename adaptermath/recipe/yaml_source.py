"""Reading a recipe's YAML with the line of every field (for one-line errors), and ``--set`` overrides."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from ..errors import RecipeError
from .schema import FieldPath


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


