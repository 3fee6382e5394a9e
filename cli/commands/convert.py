"""``adaptermath convert``: rewrite a LoRA adapter as a PEFT folder, a kohya file or a diffusers file."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from adaptermath.cli.main import main

from ..common import console, json_option, print_json


@main.command("convert")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Output: a folder for --to peft, a .safetensors file for kohya/diffusers.")
@click.option("--to", "to", type=click.Choice(["peft", "kohya", "diffusers"]), required=True, help="Output format.")
@click.option("--module-names", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Text file of the model's module paths (one per line) for exact kohya -> dotted naming.")
@click.option("--component", type=click.Choice(["unet", "text_encoder", "text_encoder_2"]), default=None,
              help="Which pipeline model a PEFT adapter's bare module paths belong to.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin (pickle) with weights_only loading.")
@json_option
def convert_command(input_path: str, output: Path, to: str, module_names: Path | None, component: str | None,
                    force: bool, allow_pickle: bool, as_json: bool) -> None:
    """Write the LoRA adapter INPUT in another format, exactly.

    INPUT is a PEFT adapter folder (LoRA, LoHa, LoKr), or a Stable-Diffusion LoRA .safetensors
    in kohya keys (lora_unet_…: lora_down/lora_up/alpha) or diffusers keys (unet.…: lora_A/lora_B).
    Tensors are copied bit for bit and α moves with them, so every module's ΔW is unchanged;
    LoHa/LoKr modules become their exact LoRA factors. The file's metadata is kept, and a
    kohya -> peft/diffusers -> kohya round trip gives back the original tensors and metadata.

    kohya names flatten the module path (down_blocks_0 for down_blocks.0); the dotted path is
    derived from the diffusers/CLIP naming rules, or exactly from --module-names.

    \b
    Examples:
      adaptermath convert style.safetensors --to peft -o style-peft
      adaptermath convert style-peft --to kohya -o style.safetensors
      adaptermath convert pytorch_lora_weights.safetensors --to kohya -o style-kohya.safetensors
      adaptermath convert ./my-loha --to peft -o my-loha-as-lora
      adaptermath convert ./unet-lora --component unet --to kohya -o unet.safetensors
    """
    from adaptermath.formats import convert, read_module_names

    names = read_module_names(module_names) if module_names is not None else None
    result = convert(input_path, output, to=to, force=force, module_names=names, component=component,
                     allow_pickle=allow_pickle)
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]from[/]", f"{result.from_format} ({result.input})")
    table.add_row("[bold]to[/]", f"{result.to_format} ({result.output})")
    table.add_row("[bold]modules[/]", f"{result.modules} ({len(result.renamed)} renamed)")
    if result.metadata_added:
        table.add_row("[bold]metadata added[/]", ", ".join(result.metadata_added))
    for note in result.notes:
        table.add_row("[bold]note[/]", note)
    console.print(table)
