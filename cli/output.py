"""Saving a composed adapter from the CLI: progress bar, summary table, warnings, --json, --push."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from adaptermath.errors import AdapterMathError

if TYPE_CHECKING:
    from adaptermath.compose import ComposedAdapter

from .common import console, err_console, print_json, progress


def save_composed(result: ComposedAdapter, output: Path, *, force: bool, as_json: bool, push: str | None = None,
                  private: bool = False, output_format: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Save ``result`` to ``output`` (with a progress bar), print a summary, optionally push it.

    ``quiet``: print nothing (the caller reports), return the summary."""
    if push and output_format not in (None, "peft"):
        raise AdapterMathError("--push uploads a PEFT adapter folder; drop --format or push a converted folder")
    if push:
        from adaptermath.formats.compat import uses_format_writer

        if uses_format_writer(result.adapters, output_format):  # known before any tensor is computed
            raise AdapterMathError(f"{output} would be a single LoRA file; --push uploads PEFT adapter folders — "
                                   "write one with --format peft (or adaptermath convert) and push that")
    with progress(disable=as_json) as bar:
        task = bar.add_task("composing", total=len(result.module_names) + len(result.extra_keys))

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, description=name.rsplit(".", 2)[-2] if "." in name else name)

        written = result.save(output, force=force, progress=advance, format=output_format)
    summary = result.report.summary()
    payload: dict[str, Any] = {
        "output": str(written),
        "expression": result.combination.source,
        "normal_form": str(result.combination),
        "coefficients": result.coefficients,  # the cᵢ applied: after --normalize, with --var bound
        "normalized": result.options.normalize,
        "variables": result.variables,
        "method": result.options.method,
        "method_options": dict(result.options.method_options),
        "options": _options(result),
        "space": result.options.space,
        "space_note": _space_note(result),
        "type": "LoRA" if result.kind == "lora" else "(IA)^3",
        "base_model": result.base_model,
        "report": summary,
    }
    if push:
        from adaptermath.hub import push_folder

        pushed = push_folder(output, push, private=private)
        payload["push"] = {k: v for k, v in vars(pushed).items() if k != "files"}
    if quiet:
        return payload
    if as_json:
        print_json(payload)
        return payload
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("[bold]normal form[/]", escape(payload["normal_form"]))
    notes = [f"{k}={v:g}" for k, v in result.variables.items()] + (["normalised: Σ|cᵢ| = 1"] if payload["normalized"] else [])
    table.add_row("[bold]coefficients[/]", ", ".join(f"{k}: {c:g}" for k, c in result.coefficients.items())
                  + (f"  ({', '.join(notes)})" if notes else ""))
    method = payload["method"] + "".join(f", {k}={v}" for k, v in payload["method_options"].items())
    table.add_row("[bold]method[/]", escape(method))
    if payload["options"]:
        table.add_row("[bold]options[/]", escape(", ".join(f"{k}={v}" for k, v in payload["options"].items())))
    table.add_row("[bold]space[/]", payload["space"] + (f" ({payload['space_note']})" if payload["space_note"] else ""))
    table.add_row("[bold]type[/]", payload["type"])
    table.add_row("[bold]modules[/]", str(summary["modules"]))
    if "relative_error" in summary:
        err = summary["relative_error"]
        table.add_row("[bold]rank error[/]", f"max {err['max']:.3g}, mean {err['mean']:.3g} (‖ΔW − ΔW_k‖/‖ΔW‖)")
    if "param_vs_delta" in summary:
        dev = summary["param_vs_delta"]
        table.add_row("[bold]param vs delta[/]", f"max {dev['max']:.3g}, mean {dev['mean']:.3g}")
    table.add_row("[bold]written[/]", str(written))
    if push:
        table.add_row("[bold]pushed[/]", str(payload["push"].get("commit_url") or payload["push"].get("pr_url") or push))
    console.print(table)
    for warning in summary["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return payload


def _options(result: ComposedAdapter) -> dict[str, Any]:
    """The compose options that were set (defaults left out), as the flags name them."""
    options = result.options
    chosen = {"negate_factor": options.negate_factor if options.space == "param" and options.negate_factor != "B" else None,
              "rank": options.rank, "energy": options.energy, "max_rank": options.max_rank, "heads": options.heads,
              "dtype": options.dtype}
    return {name: value for name, value in chosen.items() if value is not None}


def _space_note(result: ComposedAdapter) -> str | None:
    """Why the space is what it is, when the user did not pick it."""
    if result.options.method != "linear":
        return f"method {result.options.method} works on each module's ΔW: always delta space"
    if result.options.guard_param:
        return "default; refused if ≥25% off the exact ΔW"
    return None
