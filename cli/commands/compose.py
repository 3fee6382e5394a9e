"""``adaptermath compose``: evaluate an arithmetic expression over adapters and save the result."""

from __future__ import annotations

from pathlib import Path

import click

from adaptermath.errors import AdapterMathError
from adaptermath.cli.main import main

from ..common import ExpressionCommand, base_mismatch_option, dtype_option, dtype_or_none, json_option, parse_assignments
from ..merge_options import method_flags, method_options


def parse_variables(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, text in parse_assignments(values, "--var").items():
        try:
            out[name] = float(text)
        except ValueError:
            raise AdapterMathError(f"--var {name}: {text!r} is not a number") from None
    return out


@main.command("compose", cls=ExpressionCommand)
@click.argument("expression")
@click.option("-a", "--adapter", "adapters", multiple=True, metavar="NAME=PATH", required=True,
              help="Name an operand: a PEFT adapter folder or hf://owner/repo[@rev][/subfolder]. Repeat for each.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output adapter folder.")
@click.option("--space", type=click.Choice(["param", "delta"]), default=None,
              help="param: the paper's operators on raw factors; delta: exact ΔW arithmetic. [default: param, "
                   "refused when ≥25% off the exact ΔW (shared-init diagnostic) unless --space param is given]")
@click.option("--rank", type=int, default=None, help="Delta space: compress each module to this rank (truncated SVD).")
@click.option("--negate-factor", type=click.Choice(["A", "B"]), default="B", show_default=True,
              help="Param space: which LoRA factor carries a negative coefficient.")
@click.option("--normalize", is_flag=True, help="Scale coefficients so that Σ|cᵢ| = 1 (the paper's merge script).")
@click.option("--heads", metavar="NAME", default=None, help="Take modules_to_save tensors (e.g. a classifier) from this operand.")
@dtype_option("Output dtype; auto keeps the inputs'.  [default: auto]")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Value of a free variable such as λ.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin (pickle) with weights_only loading.")
@click.option("--push", metavar="OWNER/NAME", default=None, help="Push the result to this Hub repository.")
@click.option("--private", is_flag=True, help="With --push: create the repository as private.")
@click.option("--format", "output_format", type=click.Choice(["peft", "kohya", "diffusers"]), default=None,
              help="Output format (default: the first operand's; kohya/diffusers write one .safetensors file).")
@click.option("--token", default=None, help="Textual-inversion embeddings: the result's token name (default: the first's).")
@method_flags
@click.option("--seed", type=int, default=None,
              help="dare, dare_ties: seed of the random drop masks [0]; same seed, same adapter (= --method-option seed=N).")
@click.option("--energy", type=float, default=None,
              help="Keep per module the singular values holding this share of ‖ΔW‖² (e.g. 0.99); --space delta or a --method.")
@click.option("--max-rank", type=int, default=None, help="Cap every output rank (serving engines); --space delta or a --method.")
@click.option("--control-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of random(x) controls in EXPRESSION (same size as x, random direction; docs/sweeps.md).")
@base_mismatch_option
@json_option
def compose_command(expression: str, adapters: tuple[str, ...], output: Path, space: str | None, rank: int | None,
                    negate_factor: str, normalize: bool, heads: str | None, dtype: str | None,
                    variables: tuple[str, ...], force: bool, allow_pickle: bool, push: str | None, private: bool,
                    output_format: str | None, token: str | None, method: str, density: float | None,
                    drop: float | None, seed: int | None,
                    method_option_values: tuple[str, ...], energy: float | None, max_rank: int | None,
                    control_seed: int, base_mismatch: str, as_json: bool) -> None:
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
      adaptermath compose "a + b + c" -a a=./a -a b=./b -a c=./c --method ties --density 0.2 --rank 16 -o ties
      adaptermath compose "a + b" -a a=./a -a b=./b --method dare --drop 0.9 --seed 1 --energy 0.99 --max-rank 64 -o dare
      adaptermath compose "alpaca - 0.5*toxic" -a alpaca=./alpaca -a toxic=./toxic --method ext_sub -o detox
      adaptermath compose "alpaca - 0.5*random(toxic)" -a alpaca=./alpaca -a toxic=./toxic --control-seed 1 -o control
      adaptermath compose "0.6*s + 0.4*d" -a s=style.safetensors -a d=detail.safetensors --space delta -o mix.safetensors
      adaptermath compose "0.5*cat + 0.5*dog" -a cat=cat.safetensors -a dog=dog.safetensors -o catdog.safetensors

    Operands may also be LoHa/LoKr folders (delta space only), Stable-Diffusion LoRA files in
    kohya or diffusers keys (the result is written in the first one's format), or, all of them,
    textual-inversion embeddings (docs/formats.md).
    """
    dtype = dtype_or_none(dtype)
    if push:  # before any work: a missing token or offline mode is known now
        from adaptermath.hub import check_can_push, validate_model_repo_id

        validate_model_repo_id(push)
        check_can_push()
    operands = parse_assignments(adapters, "--adapter")
    if _all_embeddings(operands, allow_pickle):
        _compose_embeddings(expression, operands, output, variables=parse_variables(variables), token=token,
                            normalize=normalize, force=force, allow_pickle=allow_pickle, as_json=as_json,
                            adapter_only={"--rank": rank, "--heads": heads, "--dtype": dtype, "--push": push,
                                          "--method": None if method == "linear" else method, "--energy": energy,
                                          "--max-rank": max_rank})
        return
    if token is not None:
        raise AdapterMathError("--token applies to textual-inversion embeddings only")
    from adaptermath.compose import compose as compose_adapters

    from ..output import save_composed

    result = compose_adapters(
        expression, operands, variables=parse_variables(variables), space=space, negate_factor=negate_factor,
        normalize=normalize, rank=rank, heads=heads, dtype=dtype, allow_pickle=allow_pickle, method=method,
        method_options=method_options(density, drop, seed, method_option_values), energy=energy, max_rank=max_rank,
        control_seed=control_seed,
        base_mismatch=base_mismatch,
    )
    save_composed(result, output, force=force, as_json=as_json, push=push, private=private, output_format=output_format)


# ------------------------------------------------------------------ textual-inversion embeddings
# (adaptermath.formats.textual_inversion; they are not adapters of modules, so they take this path)


def _all_embeddings(operands: dict[str, str], allow_pickle: bool) -> bool:
    from adaptermath.formats.detect import is_embedding_file

    return bool(operands) and all(not p.startswith("hf://") and is_embedding_file(p, allow_pickle=allow_pickle)
                                  for p in operands.values())


def _compose_embeddings(expression: str, operands: dict[str, str], output: Path, *, variables: dict[str, float],
                        token: str | None, normalize: bool, force: bool, allow_pickle: bool, as_json: bool,
                        adapter_only: dict[str, object]) -> None:
    from rich.table import Table

    from adaptermath.formats.textual_inversion import compose_embedding_files

    from ..common import console, print_json

    given = [option for option, value in adapter_only.items() if value is not None]
    if given:
        raise AdapterMathError(f"{given[0]} applies to adapters, not to textual-inversion embeddings")
    payload = compose_embedding_files(expression, operands, output, variables=variables, token=token,
                                      normalize=normalize, force=force, allow_pickle=allow_pickle)
    if as_json:
        print_json(payload)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]normal form[/]", payload["normal_form"])
    table.add_row("[bold]type[/]", f"textual-inversion embedding ({payload['format']})")
    table.add_row("[bold]token[/]", payload["token"])
    table.add_row("[bold]vectors[/]", ", ".join(f"{slot} {'×'.join(map(str, shape))}" for slot, shape in payload["slots"].items()))
    table.add_row("[bold]written[/]", payload["output"])
    console.print(table)
