"""``adaptermath compare``: per-module similarity of two adapters and the shared-init diagnostic."""

from __future__ import annotations

import click
from rich.table import Table

from adaptermath.cli.main import main

from ..common import console, json_option, print_json, print_table


@main.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin with weights_only loading.")
@json_option
def compare_command(a: str, b: str, allow_pickle: bool, as_json: bool) -> None:
    """Compare the updates of adapters A and B, module by module.

    cos(ΔW) is the cosine similarity of the two updates; cos(A) that of the raw A factors (near 1
    when both started from the same initialisation); param-vs-delta is how far the parameter-space
    average 0.5·A + 0.5·B is from the exact average of updates — large values mean parameter-space
    arithmetic is unfaithful for this pair and --space delta should be used.

    \b
    Example:
      adaptermath compare ./amazon_lm ./yelp_lm
    """
    from adaptermath.comparison import compare

    result = compare(a, b, allow_pickle=allow_pickle)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"{result['type']}: {a} vs {b}", title_justify="left")
    for col in ("module", "cos(ΔW)", "‖ΔW_a‖", "‖ΔW_b‖", "cos(A)", "param vs delta"):
        if col == "module":  # never truncated, even when piped at 80 columns: long names wrap
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True)
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for row in result["modules"]:
        table.add_row(row["name"], fmt(row["cosine"]), f"{row['norm_a']:.4g}", f"{row['norm_b']:.4g}",
                      fmt(row["a_cosine"]), fmt(row["param_vs_delta"]))
    print_table(table)
    console.print(f"mean cos(ΔW) = {result['mean_cosine']:.3f}; shared modules {result['shared_modules']}")
    worst = result["max_param_vs_delta"]
    if worst is not None:
        verdict = "parameter-space arithmetic is faithful" if worst <= 0.25 else "use --space delta for exact arithmetic"
        console.print(f"max param-vs-delta deviation = {worst:.3f}: {verdict}")
    for side in ("only_in_a", "only_in_b"):
        if result[side]:
            console.print(f"{len(result[side])} modules only in {side[-1].upper()}: {', '.join(result[side][:5])}{' …' if len(result[side]) > 5 else ''}")
