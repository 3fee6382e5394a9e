"""``adaptermath inspect``: what an adapter is."""

from __future__ import annotations

import click
from rich.table import Table

from adaptermath.cli.main import main

from ..common import console, json_option, print_json, print_table


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@main.command("inspect")
@click.argument("path")
@click.option("--no-norms", is_flag=True, help="Skip per-module update norms (reads no tensor data).")
@click.option("--modules/--no-modules", "show_modules", default=True, show_default=True, help="List every module.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin with weights_only loading.")
@json_option
def inspect_command(path: str, no_norms: bool, show_modules: bool, allow_pickle: bool, as_json: bool) -> None:
    """Describe the adapter at PATH (a folder, a LoRA .safetensors file, an embedding, or hf://owner/repo).

    Type, base model, ranks, target modules, parameter count, dtype, size on disk and, per
    module, the Frobenius norm of its update (‖s·B·A‖ for LoRA, ‖l − 1‖ for (IA)^3).

    \b
    Examples:
      adaptermath inspect ./my-lora
      adaptermath inspect ./my-lora --json | jq .ranks
    """
    if _show_embedding(path, allow_pickle, as_json):
        return
    from adaptermath.inspection import inspect_adapter

    info = inspect_adapter(path, norms=not no_norms, allow_pickle=allow_pickle)
    if as_json:
        print_json(info)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]type[/]", info["type"])
    table.add_row("[bold]format[/]", f"{info['format']} — {info['format_description']}")
    table.add_row("[bold]base model[/]", str(info["base_model"]))
    if info["type"] == "LoRA":
        ranks = ", ".join(f"r={r} ×{n}" for r, n in info["ranks"].items())
        table.add_row("[bold]ranks[/]", ranks)
        table.add_row("[bold]lora_alpha[/]", f"{info['lora_alpha']} (scaling {', '.join(f'{s:g}' for s in info['scalings'])}"
                      + (", rsLoRA)" if info["use_rslora"] else ")"))
    table.add_row("[bold]target modules[/]", str(info["target_modules"]))
    table.add_row("[bold]modules[/]", str(info["modules"]))
    if info["modules_to_save"]:
        table.add_row("[bold]modules_to_save[/]", ", ".join(info["modules_to_save"]))
    table.add_row("[bold]parameters[/]", f"{info['parameters']:,}")
    table.add_row("[bold]dtype[/]", info["dtype"])
    table.add_row("[bold]size[/]", _size(info["size_bytes"]) + f" ({info['weights_file']})")
    if "provenance" in info:
        table.add_row("[bold]made by[/]", f"adaptermath: {info['provenance'].get('normal_form')} ({info['provenance'].get('space')} space)")
    print_table(table)
    if show_modules:
        modules = Table(title="modules", title_justify="left")
        modules.add_column("module", overflow="fold")  # never truncated, even when piped
        if info["type"] == "LoRA":
            modules.add_column("rank", justify="right", no_wrap=True)
            modules.add_column("shape", justify="right", no_wrap=True)
        else:
            modules.add_column("size", justify="right", no_wrap=True)
            modules.add_column("scales", justify="right", no_wrap=True)
        if not no_norms:
            modules.add_column("‖ΔW‖" if info["type"] == "LoRA" else "‖l−1‖", justify="right", no_wrap=True)
        for row in info["per_module"]:
            cells = [row["name"]]
            if info["type"] == "LoRA":
                cells += [str(row["rank"]), "×".join(map(str, row["shape"]))]
            else:
                cells += [str(row["size"]), "input" if row["feedforward"] else "output"]
            if not no_norms:
                cells.append(f"{row['norm']:.4g}")
            modules.add_row(*cells)
        print_table(modules)


def _show_embedding(path: str, allow_pickle: bool, as_json: bool) -> bool:
    """Textual-inversion embeddings are not adapters: describe them here (adaptermath.formats.textual_inversion)."""
    from adaptermath.errors import AdapterMathError
    from adaptermath.formats import detect_format, load_embedding

    if path.startswith("hf://"):
        return False
    fmt = detect_format(path, allow_pickle=allow_pickle)
    if fmt.name in ("lycoris", "peft-weights", "pickle"):  # recognised, not read: say what it is
        raise AdapterMathError(f"{path}: {fmt.name} — {fmt.description}")
    if fmt.kind != "embedding":
        return False
    info = {**load_embedding(path, allow_pickle=allow_pickle).describe(), "format_description": fmt.description}
    if as_json:
        print_json(info)
        return True
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]type[/]", info["type"])
    table.add_row("[bold]format[/]", f"{fmt.name} — {fmt.description}")
    table.add_row("[bold]token[/]", info["token"])
    for slot, shape in info["slots"].items():
        table.add_row(f"[bold]{slot}[/]", f"{'×'.join(map(str, shape))} ({info['dtype']}), ‖V‖ = {info['norms'][slot]:.4g}")
    console.print(table)
    return True
