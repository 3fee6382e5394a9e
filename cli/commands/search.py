"""``adaptermath search``: find the free variables of an expression with Optuna (resumable, multi-worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from adaptermath.errors import AdapterMathError
from adaptermath.choices import LOWER_IS_BETTER, MODEL_TYPES, SAMPLERS, SWEEP_TASKS
from adaptermath.cli.main import main

from ..engine_options import engine_options
from ..common import ExpressionCommand, console, dtype_option, err_console, json_option, parse_assignments, print_json, progress
from ..merge_options import compose_flags, method_options
from .sweep import metrics_help, print_test_evidence
from ..task_options import evaluator_flags, quiet_transformers, task_options, unescape


@main.command("search", cls=ExpressionCommand)
@click.argument("expression")
@click.option("-a", "--adapter", "adapters", multiple=True, required=True, metavar="NAME=PATH", help="An operand (repeat).")
@click.option("--base", required=True, metavar="MODEL", help="Base model: a local folder or a Hub name.")
@click.option("--gguf-file", default=None, metavar="FILE", help="Load the base from this GGUF file inside MODEL.")
@click.option("--model-type", type=click.Choice(MODEL_TYPES), default="auto", show_default=True,
              help="Which head the base model is loaded with.")
@click.option("--task", required=True, type=click.Choice(SWEEP_TASKS), help="What to measure.")
@click.option("--val", required=True, metavar="FILE", help="Validation data: trials are scored on it.")
@click.option("--test", default=None, metavar="FILE", help="Test data: scored for the chosen trial and the baselines.")
@click.option("--var", "variables", multiple=True, required=True, metavar="NAME=LOW:HIGH[,log]",
              help="A searched variable and its range (repeat): an expression variable, or a method's (density, drop, p).")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Complete trials the study should hold (a resumed search runs the rest).")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="tpe", show_default=True, help="Optuna sampler.")
@click.option("--objective", "objectives", multiple=True, metavar="METRIC[:max|min]",
              help=f"What to optimise (repeat for a Pareto front): {metrics_help()}; METRIC_ratio is relative to "
                   f"the all-zero point; with no direction, min for {', '.join(sorted(LOWER_IS_BETTER))}, max "
                   "otherwise.  [default: accuracy | perplexity | mean_score]")
@click.option("--constraint", "constraints", multiple=True, metavar="METRIC<=X|METRIC>=X",
              help="Only trials meeting it are chosen, e.g. perplexity_ratio<=1.1 (repeat).")
@click.option("--l1", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="L1 penalty α·Σ|λᵢ| on the expression's variables (LoraHub's regulariser), recorded per trial.")
@click.option("--storage", default=None, metavar="URL",
              help="Study storage: a database URL (postgresql://…, mysql://…, sqlite:///…) workers elsewhere share.  "
                   "[default: sqlite in DIR]")
@click.option("--study", "study_name", default=None, metavar="NAME", help="Study name in the storage.  [default: adaptermath-search]")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Start no new trial after S seconds (per worker).")
@click.option("--seed", type=int, default=None, help="Sampler seed: the same seed gives the same trials.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes on the study (each loads the base model once).")
@click.option("--trial", "pick", type=click.IntRange(min=0), default=None, metavar="N",
              help="Write trial N (e.g. another point of the Pareto front) instead of the best.")
@click.option("--no-baselines", is_flag=True, help="Skip the zero-point and operand-alone test baselines.")
@click.option("--confidence", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Level of the intervals on every metric and on the test differences.")
@compose_flags
@evaluator_flags
@click.option("--eval-seed", type=int, default=None, help="Toxicity: sampling seed of the continuations.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Examples per forward pass.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, mps or auto.")
@dtype_option("Base model dtype; auto keeps the checkpoint's.  [default: float32]")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder for study.db (resumable), search.json, trials.csv, plots and the chosen adapter (DIR/adapter).")
@click.option("--force", is_flag=True, help="Delete the study and start over.")
@click.option("--allow-pickle", is_flag=True, help="Allow reading adapter_model.bin (pickle) with weights_only loading.")
@engine_options
@json_option
def search_command(expression: str, adapters: tuple[str, ...], base: str, gguf_file: str | None, model_type: str,
                   task: str, val: str, test: str | None, variables: tuple[str, ...], trials: int, sampler: str,
                   objectives: tuple[str, ...], constraints: tuple[str, ...], l1: float, storage: str | None,
                   study_name: str | None, timeout: float | None, seed: int | None, workers: int, pick: int | None,
                   no_baselines: bool, confidence: float, space: str, negate_factor: str, normalize: bool,
                   rank: int | None, heads: str | None, method: str, density: float | None, drop: float | None,
                   method_option_values: tuple[str, ...], energy: float | None, max_rank: int | None,
                   limit: int | None, text_field: str, label_field: str | None, labels: str | None,
                   template: str | None, max_length: int | None, stride: int | None, num_samples: int | None,
                   max_new_tokens: int | None, eval_seed: int | None, scorer: str | None, threshold: float | None,
                   batch_size: int, device: str, dtype: str | None, output: Path, force: bool, allow_pickle: bool,
                   engine: Any, as_json: bool) -> None:
    """Search the free variables of EXPRESSION with Optuna; choose on --val, score on --test.

    Each trial composes the adapter at a point the sampler proposes and swaps it into the live
    model (the base model is loaded once per worker). Trials are kept in an Optuna study —
    DIR/study.db unless --storage names a database — so the same command resumes an interrupted
    search, and workers started with the same command and --study on other machines share it.
    Two --objective give a Pareto front. DIR gets search.json, trials.csv, report.md, history.png,
    importances.png (pareto.png) and the chosen trial as an adapter whose recipe rebuilds it.
    On --test, as in a sweep, every evaluation keeps its per-example records in DIR/examples/ and an
    interval on each metric, and the chosen trial is compared with each baseline on the same
    examples (Δ, its paired interval, p).

    \b
    Examples:
      adaptermath search "cls + λ1*yelp + λ2*amazon" -a cls=./cls -a yelp=./yelp -a amazon=./amazon \\
          --var "λ1=-1:1" --var "λ2=-1:1" --base ./smollm2 --task classification \\
          --labels negative,positive --val val.jsonl --test test.jsonl --trials 30 --seed 0 -o searches/yelp
      adaptermath search "a + b" -a a=./a -a b=./b --method ties --rank 16 --var "density=0.05:0.9,log" \\
          --base ./smollm2 --task perplexity --val news.txt --trials 20 --workers 2 -o searches/ties
      adaptermath search "alpaca - λ*toxic" -a alpaca=./alpaca -a toxic=./toxic --var "λ=0:2" \\
          --base ./smollm2 --task perplexity --objective perplexity:min --l1 0.05 \\
          --storage postgresql://user@db/optuna --study detox --val news.txt -o searches/detox
    """
    from adaptermath.search import search, sqlite_url

    evaluator_options: dict[str, Any] = task_options(task, {
        "labels": labels, "template": unescape(template), "label_field": label_field, "max_length": max_length,
        "stride": stride, "num_samples": num_samples, "max_new_tokens": max_new_tokens, "seed": eval_seed,
        "scorer": scorer, "threshold": threshold,
    })
    operands = parse_assignments(adapters, "--adapter")
    if output.exists() and not output.is_dir():
        raise AdapterMathError(f"{output} exists and is not a folder")
    quiet_transformers()
    with progress(disable=as_json) as bar:
        job = bar.add_task("trials", total=trials)

        def on_progress(complete: int) -> None:
            bar.update(job, completed=min(complete, trials))

        result = search(
            expression, operands, base=base, task=task, variables=list(variables), val=val, test=test, trials=trials,
            sampler=sampler, objectives=list(objectives), constraints=list(constraints), l1=l1, storage=storage,
            study=study_name, timeout=timeout, seed=seed, workers=workers, output=output, pick=pick, force=force,
            baselines=not no_baselines, confidence=confidence, space=space, negate_factor=negate_factor,
            normalize=normalize, rank=rank, heads=heads, method=method, method_options=method_options(density, drop, None, method_option_values),
            energy=energy, max_rank=max_rank, gguf_file=gguf_file, model_type=model_type, device=device, dtype=dtype,
            text_field=text_field, limit=limit, allow_pickle=allow_pickle, on_progress=on_progress, batch_size=batch_size,
            engine=engine, **evaluator_options,
        )
    summary = result.to_dict()
    adapter = output / "adapter" if result.chosen is not None else None
    plots = [name for name in ("history.png", "importances.png", "pareto.png") if (output / name).is_file()]
    if as_json:
        print_json({**summary, "output": str(output), "adapter": None if adapter is None else str(adapter), "plots": plots})
        return
    where = storage or sqlite_url(output / "study.db")
    console.print(f"{len(result.trials)} complete trials ({result.failed} failed) in study "
                  f"[bold]{escape(result.settings.study)}[/] ({escape(summary['storage'] or where)})")
    if result.chosen is None:
        err_console.print("[yellow]note:[/] no trial meets the constraints; no adapter written")
    else:
        chosen = result.chosen
        point = ", ".join(f"{k}={v:.4g}" for k, v in chosen.point.items())
        values = ", ".join(f"{o.metric} {v:.4f}" for o, v in zip(result.objectives, chosen.values))
        console.print(f"chosen: trial {chosen.number}: [bold]{escape(point)}[/] ({escape(values)} on validation)")
        if len(result.objectives) > 1:
            console.print(f"Pareto front: trials {', '.join(str(n) for n in result.front)} (write another with --trial N)")
        if result.test:
            for metric in result.reported:
                print_test_evidence(result.test, result.comparisons, metric)
        console.print(f"adapter: {adapter}")
    console.print(f"results: {output}/search.json, trials.csv, report.md" + "".join(f", {p}" for p in plots)
                  + (", examples/" if any(r.examples for r in result.test) else ""))
    if not plots and result.trials:
        err_console.print("[yellow]note:[/] no plots: pip install 'adaptermath[search]' for matplotlib")
