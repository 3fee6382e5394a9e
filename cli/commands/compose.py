"""``adaptermath compose``: evaluate an arithmetic expression over adapters and save the result."""

from __future__ import annotations

from pathlib import Path

import click

from adaptermath.compose import DTYPES, compose as compose_adapters
from adaptermath.errors import AdapterMathError
from adaptermath.cli.main import main

from ..common import json_option, parse_assignments
from ..output import save_composed


def parse_variables(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, text in parse_assignments(values, "--var").items():
        try:
            out[name] = float(text)
        except ValueError:
            raise AdapterMathError(f"--var {name}: {text!r} is not a number") from None
    return out


@main.command("compose")
@click.argument("expression")
@click.option("-a", "--adapter", "adapters", multiple=True, metavar="NAME=PATH", required=True,
              help="Name an operand: a PEFT adapter folder or hf://owner/repo[@rev][/subfolder]. Repeat for each.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output adapter folder.")
@click.option("--space", type=click.Choice(["param", "delta"]), default="param", show_default=True,
              help="param: the paper's operators on raw factors; delta: exact ΔW arithmetic.")
@click.option("--rank", type=int, default=None, help="Delta space: compress each module to this rank (truncated SVD).")
@click.option("--negate-factor", type=click.Choice(["A", "B"]), default="B", show_default=True,
              help="Param space: which LoRA factor carries a negative coefficient.")
@click.option("--normalize", is_flag=True, help="Scale coefficients so that Σ|cᵢ| = 1 (the paper's merge script).")
@click.option("--heads", metavar="NAME", default=None, help="Take modules_to_save tensors (e.g. a classifier) from this operand.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default=None, help="Output dtype (default: the inputs').")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Value of a free variable such as λ.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin (pickle) with weights_only loading.")
@click.option("--push", metavar="OWNER/NAME", default=None, help="Push the result to this Hub repository.")
@click.option("--private", is_flag=True, help="With --push: create the repository as private.")
@json_option
def compose_command(expression: str, adapters: tuple[str, ...], output: Path, space: str, rank: int | None,
                    negate_factor: str, normalize: bool, heads: str | None, dtype: str | None,
                    variables: tuple[str, ...], force: bool, allow_pickle: bool, push: str | None, private: bool,
                    as_json: bool) -> None:
    """Evaluate EXPRESSION over adapters and write the result as a PEFT adapter.

    EXPRESSION is linear in the adapters: numbers, + - * / and parentheses, with free variables
    bound by --var. It is reduced to Σ cᵢ·Xᵢ and evaluated module by module, without the base
    model. The output folder loads with peft.PeftModel.from_pretrained and records how it was
    made in adaptermath.json.

    \b
    Examples:
      adaptermath compose "0.5*sst2 + 0.5*mnli" -a sst2=./sst2 -a mnli=./mnli -o merged
      adaptermath compose "cls + λ*(yelp - amazon)" --var λ=0.3 \\
          -a cls=./amazon_clf -a yelp=./yelp_lm -a amazon=./amazon_lm -o yelp_clf
      adaptermath compose "(1+0.4)*alpaca - 0.4*toxic" --negate-factor A \\
          -a alpaca=./alpaca -a toxic=./toxic -o detox
      adaptermath compose "a + b" -a a=./a -a b=./b --space delta --rank 16 -o merged16
    """
    operands = parse_assignments(adapters, "--adapter")
    result = compose_adapters(
        expression, operands, variables=parse_variables(variables), space=space, negate_factor=negate_factor,
        normalize=normalize, rank=rank, heads=heads, dtype=dtype, allow_pickle=allow_pickle,
    )
    save_composed(result, output, force=force, as_json=as_json, push=push, private=private)
