"""``adaptermath negate``: sugar for ``compose "-λ*x"``."""

from __future__ import annotations

from pathlib import Path

import click

from adaptermath.cli.main import main

from ..common import dtype_option, dtype_or_none, json_option


@main.command("negate")
@click.argument("path")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output adapter folder.")
@click.option("--scale", type=float, default=1.0, show_default=True, help="λ: the update becomes −λ·ΔW.")
@click.option("--space", type=click.Choice(["param", "delta"]), default="delta", show_default=True,
              help="delta: ΔW ↦ −λ·ΔW exactly ({A, −λB}); param: both factors scaled ({λA, −λB}, ΔW ↦ −λ²·ΔW).")
@click.option("--negate-factor", type=click.Choice(["A", "B"]), default="B", show_default=True,
              help="LoRA: flip B ({A, −λB}) or A ({−λA, B}); same ΔW.")
@dtype_option("Output dtype; auto keeps the input's.  [default: auto]")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin with weights_only loading.")
@json_option
def negate_command(path: str, output: Path, scale: float, space: str, negate_factor: str, dtype: str | None,
                   force: bool, allow_pickle: bool, as_json: bool) -> None:
    """Write the negation of the adapter at PATH: ΔW ↦ −λ·ΔW.

    The same as compose "-λ*x" -a x=PATH, but in delta space by default, where it is the paper's
    λ-scaled negation. LoRA: {A, B} ↦ {A, −λ·B} with the same rank and α. (IA)^3: l ↦ (1 + λ) − λ·l
    (the deviation from the all-ones init is negated, never l itself). At λ = 1 both spaces give
    ⊖{A, B} = {A, −B}. "Detoxify by subtraction": negate a PEM trained on toxic text.

    \b
    Examples:
      adaptermath negate ./toxic-lora -o ./detox
      adaptermath negate ./toxic-ia3 -o ./detox-ia3 --scale 0.6
    """
    from adaptermath.negation import negate

    from ..output import save_composed

    result = negate(path, scale=scale, space=space, negate_factor=negate_factor, dtype=dtype_or_none(dtype),
                    allow_pickle=allow_pickle)
    save_composed(result, output, force=force, as_json=as_json)
