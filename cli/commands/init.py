"""``adaptermath init``: write a seeded initial LoRA / (IA)^3 adapter for a base model."""

from __future__ import annotations

from pathlib import Path

import click

from adaptermath.cli.main import main
from adaptermath.choices import PEFT_TASK_TYPES

from ..common import console, err_console, json_option, print_json


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


@main.command("init")
@click.argument("base_model")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Folder to write the initial adapter to.")
@click.option("--type", "kind", type=click.Choice(["lora", "ia3"]), default="lora", show_default=True, help="Adapter type.")
@click.option("--target-modules", help="Comma-separated module names (default: PEFT's choice for the architecture).")
@click.option("--r", "rank", type=int, default=8, show_default=True, help="LoRA rank.")
@click.option("--alpha", "lora_alpha", type=float, default=None, help="LoRA alpha (scaling alpha/r); default: r.")
@click.option("--dropout", "lora_dropout", type=float, default=0.0, show_default=True, help="LoRA dropout used in training.")
@click.option("--feedforward-modules", help="(IA)^3: comma-separated targets scaled at their input (FFN layers).")
@click.option("--modules-to-save", help="Comma-separated modules trained in full and saved with the adapter, e.g. classifier.")
@click.option("--task-type", type=click.Choice(PEFT_TASK_TYPES), default=None, help="PEFT task type; picks the transformers Auto class.")
@click.option("--num-labels", type=int, default=2, show_default=True, help="Classes of a new SEQ_CLS head.")
@click.option("--seed", type=int, default=0, show_default=True, help="torch seed for the adapter (and a new head).")
@click.option("--gguf-file", default=None, help="Load BASE_MODEL from this GGUF file inside it (dequantised to float32).")
@click.option("--base-model-name", default=None, help="Record this name (e.g. a Hub id) as the adapter's base model instead of the path.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@json_option
def init_command(
    base_model: str,
    output: Path,
    kind: str,
    target_modules: str | None,
    rank: int,
    lora_alpha: float | None,
    lora_dropout: float,
    feedforward_modules: str | None,
    modules_to_save: str | None,
    task_type: str | None,
    num_labels: int,
    seed: int,
    gguf_file: str | None,
    base_model_name: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a seeded initial adapter of BASE_MODEL (a local folder or Hub id) to OUTPUT.

    Every PEM that is later composed should start from this one folder: LoRA addition combines A
    and B separately, which matches adding the updates only when all modules share A's init.
    LoRA starts with B = 0 and A drawn by PEFT (kaiming uniform) after torch.manual_seed(SEED);
    (IA)^3 starts at l = 1. The same base, options and seed give byte-identical files.

    \b
    Examples:
      adaptermath init ./smollm2 -o init-lora --type lora --target-modules q_proj,v_proj \\
          --r 8 --alpha 16 --seed 0 --task-type CAUSAL_LM
      adaptermath init ./smollm2 -o init-ia3 --type ia3 --target-modules k_proj,v_proj,down_proj \\
          --feedforward-modules down_proj --task-type CAUSAL_LM
      adaptermath init ./minilm -o init-cls --target-modules query,value --r 8 --alpha 8 \\
          --task-type SEQ_CLS --num-labels 2 --modules-to-save classifier --json
    """
    from adaptermath.init_adapter import init_adapter, init_summary

    with err_console.status("loading the base model and writing the adapter", spinner="dots") if not as_json else _null():
        folder = init_adapter(
            base_model,
            output,
            kind=kind,  # type: ignore[arg-type]
            target_modules=_names(target_modules),
            r=rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            modules_to_save=_names(modules_to_save),
            task_type=task_type,
            feedforward_modules=_names(feedforward_modules),
            num_labels=num_labels,
            seed=seed,
            force=force,
            gguf_file=gguf_file,
            base_model_name=base_model_name,
        )
    summary = init_summary(folder)
    if as_json:
        print_json(summary)
        return
    shape = f"r={summary['r']}, alpha={summary['lora_alpha']}" if kind == "lora" else "l = 1"
    console.print(
        f"wrote initial {kind} adapter ({shape}, seed {seed}) on {', '.join(summary['target_modules'])}: "
        f"{summary['tensors']} tensors, {summary['parameters']:,} parameters -> {folder}",
        highlight=False,
        soft_wrap=True,
    )


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
