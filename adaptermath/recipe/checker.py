"""Type checks of recipe fields that raise a one-line :class:`RecipeError` naming the file, the line and the field."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import RecipeError
from .schema import FieldPath
from .yaml_source import _dotted


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


