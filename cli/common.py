"""What every adaptermath command shares: one-line errors, ``--json`` output, the console.

Conventions every command follows:

* Bad input raises :class:`adaptermath.errors.AdapterMathError`; the group turns it into one
  line on stderr (``error: ...``) and exit status 2. ``adaptermath --debug CMD`` keeps the
  traceback instead.
* ``--json`` (the :func:`json_option` decorator) prints one JSON document on stdout and nothing
  else there; human output goes through :data:`console` (stdout) and progress bars through
  :func:`progress` (stderr), which are silent under ``--json``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """Add ``--json``: print a machine-readable JSON document instead of tables."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (for scripts).")(func)


def print_json(payload: Any) -> None:
    """Write ``payload`` as JSON on stdout (tensors and paths are turned into plain values)."""
    click.echo(json.dumps(payload, indent=2, sort_keys=False, default=str))


def progress(disable: bool = False) -> Progress:
    """A rich progress bar on stderr; pass ``disable=True`` under ``--json`` or for tiny jobs."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=disable or not sys.stderr.isatty(),
    )


def parse_assignments(values: tuple[str, ...], what: str) -> dict[str, str]:
    """Parse repeated ``NAME=VALUE`` options into a dict, with one-line errors."""
    from adaptermath.errors import AdapterMathError

    result: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value:
            raise AdapterMathError(f"{what} must look like NAME=VALUE, got {item!r}")
        if name in result:
            raise AdapterMathError(f"{what} {name!r} is given twice")
        result[name] = value.strip()
    return result
