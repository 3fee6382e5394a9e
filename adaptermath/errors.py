"""The errors adaptermath raises for bad input.

Every error a user can cause (a missing file, a malformed expression, a shape mismatch) is an
:class:`AdapterMathError`. Its message is one line that says what is wrong and, where it helps,
what to do; the CLI prints it on stderr and exits with status 2. Anything else that escapes is a
bug and keeps its traceback.
"""

from __future__ import annotations


class AdapterMathError(Exception):
    """A user-facing error: one line, no traceback needed."""

    exit_code: int = 2


class AdapterLoadError(AdapterMathError):
    """An adapter folder or file cannot be read (missing, corrupt, unsupported, pickle refused)."""


class UnsupportedAdapterError(AdapterLoadError):
    """The adapter is of a kind or variant adaptermath does not handle (yet)."""


class ExpressionError(AdapterMathError):
    """An arithmetic expression is malformed or not linear in its operands."""

    def __init__(self, message: str, expression: str | None = None, position: int | None = None):
        self.expression = expression
        self.position = position
        if expression is not None and position is not None:
            shown = _one_line(expression[:position]) + "»" + _one_line(expression[position:])
            if len(shown) > 200:  # a window around the position
                before = _one_line(expression[:position])[-100:]
                shown = ("…" if len(before) == 100 else "") + before + "»" + _one_line(expression[position:])[:100] + "…"
            message = f"{message} at position {position + 1}: {shown}"
        super().__init__(message)


def _one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``), so a message stays one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class CompositionError(AdapterMathError):
    """Operands cannot be combined (mixed types, different bases, rank or shape mismatch)."""


class OutputExistsError(AdapterMathError):
    """The output path exists and ``force`` was not given."""


class DataError(AdapterMathError):
    """Evaluation or training data is missing, empty or malformed."""


class HubError(AdapterMathError):
    """A Hugging Face Hub reference cannot be resolved, or a push failed."""


class RecipeError(AdapterMathError):
    """A recipe file does not match the schema."""


class UnsafeOutputError(AdapterMathError):
    """The output path would replace or sit inside something that must not be touched: an input,
    the base model, the working directory or the home folder."""


class OutputWriteError(AdapterMathError):
    """The output cannot be written (read-only file system, full disk, no permission)."""
