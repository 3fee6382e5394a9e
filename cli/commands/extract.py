"""``adaptermath extract``: a LoRA adapter from a fully fine-tuned model (ΔW = W_ft − W_base, compressed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from adaptermath.cli.main import main

from ..common import json_option


@main.command("extract")
@click.argument("base")
@click.argument("finetuned")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output adapter folder.")
@click.option("--rank", type=int, default=None, help="Keep K singular values per module.")
@click.option("--energy", type=float, default=None,
              help="Keep per module the singular values holding this share of ‖ΔW‖² (e.g. 0.9).")
@click.option("--max-rank", type=int, default=None, help="Cap every output rank (with --energy, or to bound --rank).")
@click.option("--modules", "modules", metavar="PATTERN", default=None,
              help="Only modules whose name matches this regular expression (searched), e.g. 'self_attn|mlp'.")
@click.option("--skip-embeddings", is_flag=True, help="Leave changed embeddings and LM heads out (default: modules_to_save).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the randomized range finder's sketches.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading pytorch_model.bin (pickle) with weights_only loading.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@json_option
def extract_command(base: str, finetuned: str, output: Path, rank: int | None, energy: float | None,
                    max_rank: int | None, modules: str | None, skip_embeddings: bool, seed: int, allow_pickle: bool,
                    force: bool, as_json: bool) -> None:
    """Write a PEFT LoRA adapter holding FINETUNED − BASE, compressed per module.

    BASE and FINETUNED are model folders in safetensors (sharded or not) or hf://owner/repo.
    Each changed linear weight's ΔW is factored by a randomized range finder and a small SVD
    (exact SVD for large ranks); the report gives each module's ‖ΔW − BA‖/‖ΔW‖ and the energy
    kept. Changed embeddings and LM heads go to modules_to_save. See docs/bake-extract.md.

    \b
    Examples:
      adaptermath extract ./Llama-3.2-1B ./Llama-3.2-1B-Instruct -o ./instruct-lora --rank 64
      adaptermath extract ./base ./finetuned -o ./ft-lora --energy 0.9 --max-rank 128 --modules 'self_attn|mlp'
    """
    from adaptermath.extract import extract

    from ..common import print_json, progress

    with progress(disable=as_json) as bar:
        task = bar.add_task("extracting", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        result = extract(base, finetuned, output, rank=rank, energy=energy, max_rank=max_rank, modules=modules,
                         skip_embeddings=skip_embeddings, allow_pickle=allow_pickle, seed=seed, force=force,
                         progress=advance)
    payload: dict[str, Any] = result.to_dict()
    if as_json:
        print_json(payload)
        return
    _show(payload)


def _show(payload: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..common import console, err_console

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]modules[/]", str(payload["modules"]))
    if "ranks" in payload:
        ranks = payload["ranks"]
        table.add_row("[bold]rank[/]", str(ranks["min"]) if ranks["min"] == ranks["max"] else f"{ranks['min']}–{ranks['max']}")
        err, kept = payload["relative_error"], payload["energy_kept"]
        table.add_row("[bold]relative error[/]", f"max {err['max']:.3g} ({escape(err['worst_module'])}), mean {err['mean']:.3g}"
                                                 "  (‖ΔW − BA‖/‖ΔW‖)")
        table.add_row("[bold]energy kept[/]", f"min {kept['min']:.4f}, mean {kept['mean']:.4f}")
    if payload["modules_to_save"]:
        table.add_row("[bold]modules_to_save[/]", escape(", ".join(payload["modules_to_save"])))
    table.add_row("[bold]unchanged[/]", f"{payload['unchanged_tensors']} tensors")
    table.add_row("[bold]written[/]", escape(payload["output"]))
    console.print(table)
    if payload["skipped"]:
        shown = ", ".join(list(payload["skipped"])[:5]) + (" …" if len(payload["skipped"]) > 5 else "")
        err_console.print(f"[yellow]warning:[/] {len(payload['skipped'])} changed tensors are not in the adapter: {escape(shown)}",
                          highlight=False)
