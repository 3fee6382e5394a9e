"""``adaptermath sweep``: choose λ (and friends) on a validation split, report the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from adaptermath.errors import AdapterMathError
from adaptermath.methods import available_methods
from adaptermath.evaluation.run import write_json_atomic
from adaptermath.sweep import DEFAULT_METRICS, SweepRecord, plot_sweep, sweep
from adaptermath.cli.main import main

from ..common import console, err_console, json_option, parse_assignments, print_json
from .compose import method_options
from ..task_options import quiet_transformers, task_options, unescape


def _table(records: list[SweepRecord], variables: list[str], metric: str) -> Table:
    table = Table(title="sweep", title_justify="left")
    table.add_column("split")
    table.add_column("what")
    for name in variables:
        table.add_column(name, justify="right")
    table.add_column(metric, justify="right")
    for record in records:
        value = record.metrics.get(metric)
        table.add_row(record.split, record.label, *[f"{record.point[v]:g}" if v in record.point else "" for v in variables],
                      f"{value:.4f}" if isinstance(value, (int, float)) else "—")
    return table


@main.command("sweep")
@click.argument("expression")
@click.option("-a", "--adapter", "adapters", multiple=True, required=True, metavar="NAME=PATH", help="An operand (repeat).")
@click.option("--base", required=True, metavar="MODEL", help="Base model: a local folder or a Hub name.")
@click.option("--gguf-file", default=None, metavar="FILE", help="Load the base from this GGUF file inside MODEL.")
@click.option("--model-type", type=click.Choice(["auto", "causal-lm", "seq2seq", "seq-cls"]), default="auto", show_default=True)
@click.option("--task", required=True, type=click.Choice(list(DEFAULT_METRICS)), help="What to measure.")
@click.option("--grid", "grids", multiple=True, required=True, metavar="NAME=START:STOP:STEP|V1,V2",
              help="Values of a free variable (STOP included); several --grid span their product.")
@click.option("--val", required=True, metavar="FILE", help="Validation data: the grid point is chosen on it.")
@click.option("--test", default=None, metavar="FILE", help="Test data: scored for the chosen point and the baselines.")
@click.option("--metric", default=None, help="Metric to choose by.  [default: accuracy | perplexity | mean_score]")
@click.option("--direction", type=click.Choice(["max", "min"]), default=None, help="Higher or lower is better.  [default: the metric's]")
@click.option("--no-baselines", is_flag=True, help="Skip the λ=0 and operand-alone test baselines.")
@click.option("--space", type=click.Choice(["param", "delta"]), default="param", show_default=True)
@click.option("--negate-factor", type=click.Choice(["A", "B"]), default="B", show_default=True)
@click.option("--normalize", is_flag=True, help="Scale coefficients so that Σ|cᵢ| = 1 at every point.")
@click.option("--rank", type=int, default=None, help="Delta space: compress each module to this rank.")
@click.option("--heads", default=None, metavar="NAME", help="Take modules_to_save tensors from this operand.")
@click.option("--method", type=click.Choice(available_methods()), default="linear", show_default=True,
              help="Merge method (docs/methods.md); sweep its options with --grid density=... or --grid p=...")
@click.option("--method-option", "method_option_values", multiple=True, metavar="NAME=VALUE",
              help="A fixed option of the method, e.g. density=0.2, seed=1, combine=ties, direction=expert.")
@click.option("--energy", type=float, default=None, help="Keep per module the singular values holding this share of ‖ΔW‖².")
@click.option("--max-rank", type=int, default=None, help="Cap every output rank.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N records of each split.")
@click.option("--text-field", default="text", show_default=True)
@click.option("--label-field", default=None, help="Field holding the gold label.  [default: label]")
@click.option("--labels", default=None, metavar="A,B,...", help="Classification: the label verbalisations.")
@click.option("--template", default=None, help="Prompt template with {text}.")
@click.option("--max-length", type=click.IntRange(min=2), default=None, help="Perplexity window / classification truncation.")
@click.option("--stride", type=click.IntRange(min=1), default=None, help="Perplexity: sliding-window stride.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Toxicity: continuations per prompt.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Toxicity: tokens to generate.")
@click.option("--seed", type=int, default=None, help="Toxicity: sampling seed.")
@click.option("--scorer", default=None, help="Toxicity scorer.")
@click.option("--threshold", type=click.FloatRange(min=0, max=1), default=None, help="Toxicity threshold.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default=None)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder for results.jsonl (resumable), sweep.json, sweep.csv and sweep.png.")
@click.option("--force", is_flag=True, help="Start over even if DIR holds results of this sweep.")
@click.option("--allow-pickle", is_flag=True)
@click.option("--max-points", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Refuse a grid with more points than this (checked before any list is built).")
@json_option
def sweep_command(expression: str, adapters: tuple[str, ...], base: str, gguf_file: str | None, model_type: str, task: str,
                  grids: tuple[str, ...], val: str, test: str | None, metric: str | None, direction: str | None,
                  no_baselines: bool, space: str, negate_factor: str, normalize: bool, rank: int | None, heads: str | None,
                  method: str, method_option_values: tuple[str, ...], energy: float | None, max_rank: int | None,
                  limit: int | None, text_field: str, label_field: str | None, labels: str | None, template: str | None,
                  max_length: int | None, stride: int | None, num_samples: int | None, max_new_tokens: int | None,
                  seed: int | None, scorer: str | None, threshold: float | None, batch_size: int, device: str,
                  dtype: str | None, output: Path, force: bool, allow_pickle: bool, max_points: int, as_json: bool) -> None:
    """Sweep the free variables of EXPRESSION; pick the best point on --val, score it on --test.

    The base model is loaded once. For each grid point the adapter is composed in memory and its
    tensors are swapped into the live PEFT model. Every result is appended to DIR/results.jsonl
    as it is computed: run the same command again to resume an interrupted sweep. At the end the
    chosen point and the baselines (λ=0 and each operand alone) are scored on --test, and
    DIR/sweep.json, DIR/sweep.csv and (with matplotlib) DIR/sweep.png are written.

    \b
    Examples:
      adaptermath sweep "cls + λ*(yelp - amazon)" -a cls=./amazon_clf -a yelp=./yelp_lm \\
          -a amazon=./amazon_lm --base ./smollm2 --task classification --grid "λ=0:0.5:0.1" \\
          --val yelp_val.jsonl --test yelp_test.jsonl --labels negative,positive \\
          --template "Review: {text}\\nSentiment:" -o sweeps/yelp
      adaptermath sweep "-λ*toxic" -a toxic=./toxic --space delta --base ./smollm2 --task perplexity \\
          --grid "λ=0,0.5,1" --val news_val.txt -o sweeps/ppl
      adaptermath sweep "a + b" -a a=./a -a b=./b --method ties --rank 16 --grid density=0.1,0.2,0.5 \\
          --base ./smollm2 --task perplexity --val news_val.txt -o sweeps/ties
    """
    evaluator_options: dict[str, Any] = task_options(task, {
        "labels": labels, "template": unescape(template), "label_field": label_field, "max_length": max_length,
        "stride": stride, "num_samples": num_samples, "max_new_tokens": max_new_tokens, "seed": seed,
        "scorer": scorer, "threshold": threshold,
    })
    operands = parse_assignments(adapters, "--adapter")
    if output.exists() and not output.is_dir():
        raise AdapterMathError(f"{output} exists and is not a folder")
    quiet_transformers()
    records: list[SweepRecord] = []
    variables = [spec.partition("=")[0].strip() for spec in grids]
    chosen_metric = metric or {"classification": "accuracy", "perplexity": "perplexity", "toxicity": "mean_score"}[task]

    with Live(_table(records, variables, chosen_metric), console=err_console, transient=False,
              auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
        def on_record(record: SweepRecord, cached: bool) -> None:
            records.append(record)
            if not as_json:
                live.update(_table(records, variables, chosen_metric), refresh=True)

        result = sweep(
            expression, operands, base=base, task=task, grid=list(grids), val=val, test=test, metric=metric,
            direction=direction, space=space, negate_factor=negate_factor, normalize=normalize, rank=rank, heads=heads,
            method=method, method_options=method_options(None, None, None, method_option_values), energy=energy,
            max_rank=max_rank, baselines=not no_baselines, results=output / "results.jsonl", force=force, gguf_file=gguf_file,
            model_type=model_type, device=device, dtype=dtype, text_field=text_field, limit=limit,
            allow_pickle=allow_pickle, on_record=on_record, batch_size=batch_size, max_points=max_points,
            **evaluator_options,
        )
    summary = result.to_dict()
    write_json_atomic(output / "sweep.json", summary, force=True)
    (output / "sweep.csv").write_text(result.to_csv(), encoding="utf-8")
    plot_note = None
    try:
        plot_sweep(result, output / "sweep.png")
    except AdapterMathError as exc:
        plot_note = str(exc)
    if as_json:
        print_json({**summary, "output": str(output), "plot": None if plot_note else str(output / "sweep.png")})
        return
    best = ", ".join(f"{k}={v:g}" for k, v in (result.best_point or {}).items())
    console.print(f"chosen on validation: [bold]{best}[/] ({result.metric} {summary['best_validation']:.4f})")
    for record in result.test:
        console.print(f"  test {record.label:<14} {result.metric} = {record.metrics.get(result.metric):.4f}")
    console.print(f"results: {output}/sweep.json, sweep.csv" + ("" if plot_note else ", sweep.png"))
    if plot_note:
        err_console.print(f"[yellow]note:[/] no plot: {escape(plot_note)}")
