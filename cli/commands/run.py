"""``adaptermath run``: execute a recipe (or rebuild an output from its recorded recipe)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from adaptermath.cli.main import main
if TYPE_CHECKING:
    from adaptermath.recipe import RunResult

from ..common import console, err_console, json_option, print_json, progress


def _show_plan(plan: dict[str, Any], recipe_yaml: str) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]recipe[/]", escape(plan["recipe"]))
    for name, ref in plan["inputs"].items():
        table.add_row(f"[bold]input {escape(name)}[/]", escape(ref))
    table.add_row("[bold]normal form[/]", escape(plan["normal_form"]))
    if "coefficients" in plan:
        table.add_row("[bold]coefficients[/]", ", ".join(f"{k}: {c:g}" for k, c in plan["coefficients"].items()))
    table.add_row("[bold]space[/]", plan["space"])
    table.add_row("[bold]method[/]", plan["method"])
    if plan["type"]:
        table.add_row("[bold]type[/]", f"{plan['type']} (inputs read and checked)")
    if plan["missing_inputs"]:
        missing = ", ".join(f"{name} ({ref})" for name, ref in plan["missing_inputs"].items())
        table.add_row("[bold]not found[/]", escape(f"{missing}: the recipe is valid; these inputs were not read"))
    sweep = plan["sweep"]
    if sweep:
        grid = ", ".join(f"{name} ∈ {{{', '.join(f'{v:g}' for v in values)}}}" for name, values in sweep["grid"].items())
        table.add_row("[bold]sweep[/]", escape(f"{grid}: {sweep['points']} points, {sweep['task']} on {sweep['val']}, "
                                              f"results in {sweep['results']}"))
    search = plan.get("search")
    if search:
        ranges = ", ".join(f"{name} ∈ [{span}]" for name, span in search["variables"].items())
        table.add_row("[bold]search[/]", escape(f"{ranges}: {search['trials']} {search['sampler']} trials, {search['task']} "
                                               f"on {search['val']}, results in {search['results']}"))
    for entry in plan["evaluation"]:
        table.add_row("[bold]evaluate[/]", escape(f"{entry['name']}: {entry['task']} of {entry['data']} on {entry['base']}"))
    exists = " (exists: needs --force)" if plan["output_exists"] and not plan["force"] else ""
    table.add_row("[bold]output[/]", escape(plan["output"]) + exists)
    if plan["push"]:
        table.add_row("[bold]push to[/]", escape(plan["push"]["repo"]))
    console.print(table)
    console.print("\n[bold]recipe, with every default filled in:[/]")
    console.print(escape(recipe_yaml), highlight=False)


def _show_result(result: "RunResult") -> None:
    payload = result.to_dict()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]recipe[/]", escape(payload["recipe"]))
    if payload["sweep"]:
        sweep = payload["sweep"]
        point = ", ".join(f"{k}={v:g}" for k, v in (sweep["best_point"] or {}).items())
        table.add_row("[bold]sweep[/]", escape(f"chose {point} ({sweep['metric']} {sweep['best_validation']:.4g} on val)"))
        for row in sweep["test"]:
            value = row.get(sweep["metric"])
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "—"
            table.add_row("", escape(f"test {row['label']}: {sweep['metric']} {shown}"))
    if payload.get("search"):
        search = payload["search"]
        point = ", ".join(f"{k}={v:.4g}" for k, v in (search["best_point"] or {}).items())
        values = ", ".join(f"{goal} {value:.4g}" for goal, value in zip(search["objectives"], search["chosen"]["values"]))
        table.add_row("[bold]search[/]", escape(f"chose trial {search['chosen']['number']} of {search['trials']}: {point} "
                                               f"({values} on val)"))
        metric = search["objectives"][0].split(":")[0]
        for row in search["test"]:
            value = row["metrics"].get(metric)
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "—"
            table.add_row("", escape(f"test {row['label']}: {metric} {shown}"))
    table.add_row("[bold]normal form[/]", escape(payload["normal_form"]))
    table.add_row("[bold]coefficients[/]", ", ".join(f"{k}: {c:g}" for k, c in payload["coefficients"].items()))
    table.add_row("[bold]space[/]", payload["space"])
    table.add_row("[bold]method[/]", payload["method"])
    table.add_row("[bold]type[/]", payload["type"])
    report = payload["report"]
    table.add_row("[bold]modules[/]", str(report["modules"]))
    if "relative_error" in report:
        table.add_row("[bold]rank error[/]", f"max {report['relative_error']['max']:.3g}, mean {report['relative_error']['mean']:.3g}")
    if "param_vs_delta" in report:
        table.add_row("[bold]param vs delta[/]", f"max {report['param_vs_delta']['max']:.3g}, mean {report['param_vs_delta']['mean']:.3g}")
    for entry in payload["evaluation"]:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in entry["metrics"].items())
        table.add_row(f"[bold]eval {escape(entry['name'])}[/]", escape(metrics))
    table.add_row("[bold]written[/]", escape(payload["output"]))
    if payload["push"]:
        push = payload["push"]
        table.add_row("[bold]pushed[/]", escape(str(push.get("commit_url") or push.get("pr_url") or push["repo_id"])))
    console.print(table)
    for warning in report["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


@main.command("run")
@click.argument("recipe", metavar="RECIPE")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a recipe field before validation (dotted: options.rank=8, variables.λ=0.2). Repeat.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write the adapter here (relative to the working directory) instead of the recipe's output.")
@click.option("--force", is_flag=True, default=None, help="Replace the output if it exists (overrides the recipe's force).")
@click.option("--allow-outside", is_flag=True,
              help="Let a recipe write its output (and sweep results) outside the recipe's own folder.")
@click.option("--allow-pickle", is_flag=True,
              help="Allow pickled inputs (adapter_model.bin, read with weights_only); a recipe's own allow_pickle is not enough.")
@click.option("--dry-run", is_flag=True, help="Validate, check the inputs and print the plan; write nothing.")
@json_option
def run_command(recipe: str, overrides: tuple[str, ...], output: Path | None, force: bool | None, allow_outside: bool,
                allow_pickle: bool, dry_run: bool, as_json: bool) -> None:
    """Build the adapter a recipe describes (see docs/recipes.md).

    RECIPE is a YAML recipe, an output's adaptermath.json, or an output folder: every adapter
    adaptermath writes records the recipe that rebuilds it byte for byte, with paths relative to
    the output folder. Relative paths in a recipe are relative to the recipe's folder. A recorded
    recipe rebuilds into its own folder (or -o); its file never decides force or allow_pickle. A
    recipe writes outside its own folder only with --allow-outside, -o or --set output=. A recipe
    can sweep variables on validation data first, evaluate the result (metrics go into its
    adaptermath.json) and push it to the Hub.

    \b
    Examples:
      adaptermath run recipes/merge.yaml --allow-outside
      adaptermath run recipes/analogy.yaml --set variables.λ=0.2 --set output=../demo/recipes/analogy-0.2
      adaptermath run recipes/negate.yaml --dry-run --allow-outside
      adaptermath run demo/merged --force                 # rebuild an output in place
      adaptermath run demo/merged/adaptermath.json --set output=../merged-again
    """
    from adaptermath.recipe import load_recipe, plan_recipe, recipe_to_dict, recipe_to_yaml, run_recipe, with_output

    loaded = load_recipe(recipe, overrides)
    if output is not None:
        loaded = with_output(loaded, output)
    if loaded.sweep is not None or loaded.evaluation:
        from ..task_options import quiet_transformers

        quiet_transformers()
    if dry_run:
        plan = plan_recipe(loaded, allow_pickle=allow_pickle, allow_outside=allow_outside)
        if as_json:
            print_json({"plan": plan, "recipe": recipe_to_dict(loaded)})
        else:
            _show_plan(plan, recipe_to_yaml(loaded))
        return
    with progress(disable=as_json) as bar:
        task = bar.add_task("composing", total=None)

        def advance(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total or None,
                       description=what.rsplit(".", 2)[-2] if what.count(".") >= 2 else what)

        def log(message: str) -> None:
            if not as_json:
                err_console.print(f"[dim]{escape(message)}[/]", highlight=False)

        result = run_recipe(loaded, force=force, progress=advance, log=log, allow_pickle=allow_pickle,
                            allow_outside=allow_outside)
    if as_json:
        print_json(result.to_dict())
    else:
        _show_result(result)
