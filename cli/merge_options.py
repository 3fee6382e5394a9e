"""The merge-method options compose, sweep and eval share: ``--method``, ``--density``, ``--drop``,
``--method-option NAME=VALUE`` (the same names as a recipe's ``method_options``)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from adaptermath.choices import METHODS
from adaptermath.errors import AdapterMathError

from .common import parse_assignments

F = TypeVar("F", bound=Callable[..., Any])


def method_flags(func: F) -> F:
    """Add ``--method``, ``--density``, ``--drop`` and ``--method-option`` (parameters ``method``,
    ``density``, ``drop``, ``method_option_values``)."""
    decorators = [
        click.option("--method", type=click.Choice(METHODS), default="linear", show_default=True,
                     help="Merge method (docs/methods.md); all but linear combine each module's ΔW and re-emit LoRA by SVD."),
        click.option("--density", type=float, default=None,
                     help="ties, magnitude_prune: share of entries kept by magnitude [0.2]."),
        click.option("--drop", type=float, default=None,
                     help="dare, dare_ties: probability of dropping each entry [0.5]."),
        click.option("--method-option", "method_option_values", multiple=True, metavar="NAME=VALUE",
                     help="Another option of the method, e.g. seed=1 (dare), direction=expert (ext_sub), combine=ties (dare)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def method_options(density: float | None, drop: float | None, seed: int | None, others: tuple[str, ...]) -> dict[str, object]:
    """The --density/--drop/--seed flags and --method-option NAME=VALUE (a number, or a word such as
    ``expert`` or the name of a --var) as the method_options of compose."""
    options: dict[str, object] = {k: v for k, v in (("density", density), ("drop", drop), ("seed", seed)) if v is not None}
    for name, text in parse_assignments(others, "--method-option").items():
        if name in options:
            raise AdapterMathError(f"--method-option {name} repeats --{name}")
        try:
            options[name] = float(text)
        except ValueError:
            options[name] = text
    return options


def compose_flags(func: F) -> F:
    """The compose options of commands that compose at many points (sweep, search): ``--space``,
    ``--negate-factor``, ``--normalize``, ``--rank``, ``--heads``, the method flags, ``--energy``
    and ``--max-rank``."""
    decorators = [
        click.option("--space", type=click.Choice(["param", "delta"]), default="param", show_default=True,
            help="param: the paper's operators on raw factors; delta: exact ΔW arithmetic (see compose)."),
        click.option("--negate-factor", type=click.Choice(["A", "B"]), default="B", show_default=True,
            help="Param space: which LoRA factor carries a negative coefficient."),
        click.option("--normalize", is_flag=True, help="Scale coefficients so that Σ|cᵢ| = 1 at every point (trial)."),
        click.option("--rank", type=int, default=None, help="Delta space: compress each module to this rank."),
        click.option("--heads", default=None, metavar="NAME", help="Take modules_to_save tensors from this operand."),
        method_flags,
        click.option("--energy", type=float, default=None, help="Keep per module the singular values holding this share of ‖ΔW‖²."),
        click.option("--max-rank", type=int, default=None, help="Cap every output rank."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func
