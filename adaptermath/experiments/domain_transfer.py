"""Domain transfer by analogy (the paper's §4.4), with SmolLM2-135M-Instruct and VADER sentiment.

Three PEMs per adapter kind, all trained from one seeded initial adapter:

* ``cls_D`` — a sentiment classifier on domain D's labelled training snippets (rank classification:
  the prompt ``Review: {text}\\nSentiment:`` is followed by `` negative`` or `` positive``);
* ``lm_D`` — a language-modelling PEM on D's training snippets with the labels thrown away.

Transfer from source S to target T is the analogy

    target_clf = cls_S + λ·(lm_T − lm_S)            (the λ form)
    target_clf = c0·cls_S + (1 − c0)·(lm_T − lm_S)   (the paper's c0/c1 form, c0 + c1 = 1)

In parameter space the λ form is A = A_cls + λA_T + λA_S, B = B_cls + λB_T − λB_S (the paper's
operator: LoRA negation flips B); in delta space it is the exact ΔW_cls + λ(ΔW_T − ΔW_S).
λ (or c0) is chosen on T's validation split; accuracy is reported on T's test split beside vanilla
transfer (λ = 0: cls_S alone), the in-domain classifier cls_T (the upper bound) and the base model.

Run: ``python -m adaptermath.experiments.domain_transfer [--quick] [--workdir DIR]``; settings in
``recipes/experiments/domain_transfer.yaml``; the page goes to ``docs/results/domain_transfer.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptermath.experiments import common
from adaptermath.experiments.assets import smollm2_model_dir
from adaptermath.experiments.datasets import train_val_test_split, vader_sentiment

NAME = "domain_transfer"
LABELS = ("negative", "positive")
FORMS = {
    "lambda": ("cls + λ*(tgt - src)", "λ"),
    "c0": ("c0*cls + (1 - c0)*(tgt - src)", "c0"),
}


def domain_splits(domain: str, settings: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Train / val / test rows of one VADER domain (seeded split, then capped at the configured sizes)."""
    data = settings["data"]
    train, val, test = train_val_test_split(vader_sentiment(domain), int(settings["seed"]), tuple(data["fractions"]))
    return {"train": train[: data["train"]], "val": val[: data["val"]], "test": test[: data["test"]]}


def _evaluate(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    from adaptermath.evaluation import evaluate_classification

    evaluation = settings["eval"]
    result = evaluate_classification(
        model, tokenizer, list(rows), labels=list(LABELS), template=settings["template"],
        batch_size=int(evaluation["batch_size"]), max_length=int(evaluation["max_length"]),
    )  # fmt: skip
    return {"accuracy": result.accuracy, "macro_f1": result.macro_f1, "num_examples": len(rows)}


def train_pems(base: Path, workdir: Path, kind: str, settings: Mapping[str, Any],
               splits: Mapping[str, Mapping[str, list[dict[str, Any]]]], threads: int) -> dict[str, Path]:
    """Train ``cls_D`` and ``lm_D`` for every domain from one shared init; return name → folder."""
    adapter = settings["adapters"][kind]
    init = common.ensure_init(
        base, workdir / "init" / kind, kind=kind, task_type="CAUSAL_LM", seed=int(settings["seed"]),
        target_modules=adapter.get("target_modules"), feedforward_modules=adapter.get("feedforward_modules"),
        r=int(adapter.get("r", 8)), lora_alpha=adapter.get("alpha"),
    )  # fmt: skip
    folders: dict[str, Path] = {}
    for domain, parts in splits.items():
        for objective, prefix in (("classification", "cls"), ("lm", "lm")):
            options = settings["train"][objective]
            name = f"{prefix}_{domain}"
            data: Any = parts["train"] if objective == "classification" else [row["text"] for row in parts["train"]]
            result = common.train_logged(
                f"{kind} {name}", base_model_dir=base, init_adapter_dir=init, data=data,
                output_dir=workdir / "pems" / kind / name, objective=objective, steps=int(options["steps"]),
                lr=float(adapter["lr"][objective]), batch_size=int(options["batch_size"]),
                max_length=int(options["max_length"]), seed=int(settings["seed"]), template=settings["template"],
                label_words=LABELS, num_threads=threads, force=True,
            )  # fmt: skip
            folders[name] = result.output
    return folders


def run(settings: Mapping[str, Any], workdir: Path, *, threads: int = 2,
        checkpoint: Callable[[Mapping[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, sweep on validation, score on test; ``checkpoint(partial document)`` after every result row."""
    import torch

    from adaptermath.adapter import load_adapter
    from adaptermath.evaluation import attach_adapter, detach_adapter, load_base_model
    from adaptermath.sweep import SweepPlan, run_sweep

    torch.set_num_threads(threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    # Which kinds run does not change any result of a kind: a kind can be added to a finished run.
    fingerprint = common.settings_fingerprint({k: v for k, v in settings.items() if k != "kinds"})
    store = common.ResultStore(workdir / "results-store.json", fingerprint)
    base = smollm2_model_dir()
    domains = sorted({domain for pair in settings["directions"] for domain in pair})
    splits = {domain: domain_splits(domain, settings) for domain in domains}
    for domain, parts in splits.items():
        common.log(f"{domain}: {', '.join(f'{k} {len(v)}' for k, v in parts.items())}")

    loaded = load_base_model(base, task="causal-lm")
    state = {"model": loaded.model}

    def attach(adapter: Any) -> Any:
        state["model"] = attach_adapter(state["model"], adapter)
        return state["model"]

    def score_fixed(key: str, adapter: Any, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        def compute() -> dict[str, Any]:
            model = detach_adapter(state["model"]) if adapter is None else attach(adapter)
            state["model"] = model
            return _evaluate(model, loaded.tokenizer, rows, settings)

        return store.get_or_compute(key, compute)

    pems: dict[str, dict[str, Path]] = {}
    results: list[dict[str, Any]] = []

    def document() -> dict[str, Any]:
        training = {kind: {name: json.loads((folder / "training.json").read_text())["seconds"] for name, folder in f.items()}
                    for kind, f in pems.items()}
        return {**common.run_header(NAME, settings, workdir), "rows": list(results), "timings": dict(timings),
                "training_seconds": training, "sizes": {d: {k: len(v) for k, v in p.items()} for d, p in splits.items()}}

    for kind in settings["kinds"]:
        with common.timed(timings, f"training {kind}"):
            pems[kind] = train_pems(base, workdir, kind, settings, splits, threads)
        folders = pems[kind]
        for source, target in settings["directions"]:
            direction = f"{source}→{target}"
            test_rows = splits[target]["test"]
            with common.timed(timings, f"evaluation {kind}"):
                base_score = (score_fixed(f"base|{target}|test", None, test_rows) if settings.get("score_base_model", True)
                              else {"accuracy": None})
                vanilla = score_fixed(f"{kind}|cls_{source}|{target}|test", folders[f"cls_{source}"], test_rows)
                upper = score_fixed(f"{kind}|cls_{target}|{target}|test", folders[f"cls_{target}"], test_rows)
            operands = {"cls": folders[f"cls_{source}"], "tgt": folders[f"lm_{target}"], "src": folders[f"lm_{source}"]}
            for form in settings["forms"]:
                expression, variable = FORMS[form]
                spaces = settings["spaces"][form] if isinstance(settings["spaces"], Mapping) else settings["spaces"]
                for space in spaces if kind == "lora" else ["param"]:
                    grid = settings["grids"][form]
                    values = (common.lambda_grid(grid["start"], grid["stop"], grid["step"]) if isinstance(grid, Mapping)
                              else [float(v) for v in grid])
                    plan = SweepPlan(expression, {n: load_adapter(p) for n, p in operands.items()},
                                     {variable: values}, {"space": space})

                    def evaluate(model: Any, split: str, rows_by_split: Mapping[str, Any] = splits[target]) -> dict[str, Any]:
                        return _evaluate(model, loaded.tokenizer, rows_by_split[split], settings)

                    label = f"{source}-{target}-{kind}-{form}-{space}"
                    common.log(f"sweep {direction} {kind} {form} {space}: {expression} over {variable} ∈ {values}")
                    with common.timed(timings, f"evaluation {kind}"):
                        outcome = run_sweep(
                            plan, attach=attach, evaluate=evaluate, metric="accuracy", direction="max",
                            baselines=False, results=workdir / "sweeps" / fingerprint / f"{label}.jsonl",
                            fingerprint={"settings": fingerprint, "label": label,
                                         "operands": {n: a.file_hashes() for n, a in plan.operands.items()}},
                        )  # fmt: skip
                    best = outcome.best_validation()
                    test = [r for r in outcome.test if r.label == "best"][0]
                    row = {
                        "direction": direction, "source": source, "target": target, "kind": kind,
                        "form": form, "space": space, "expression": expression, "variable": variable,
                        "validation": [[r.point[variable], r.metrics["accuracy"]] for r in outcome.validation],
                        "chosen": best.point[variable], "chosen_validation": best.metrics["accuracy"],
                        "test_accuracy": test.metrics["accuracy"], "vanilla_test": vanilla["accuracy"],
                        "in_domain_test": upper["accuracy"], "base_test": base_score["accuracy"],
                    }
                    results.append(row)
                    common.log(f"  chosen {variable}={row['chosen']:g} (val {row['chosen_validation']:.3f}); "
                               f"test {row['test_accuracy']:.3f} vs vanilla {row['vanilla_test']:.3f}, "
                               f"in-domain {row['in_domain_test']:.3f}")
                    if checkpoint is not None:
                        checkpoint(document())
    timings["total"] = round(time.perf_counter() - started, 1)
    return {**document(), "complete": True}


PAPER_DIRECTION = (
    "Paper (T5-base, Amazon ↔ Yelp, Table 5): the analogy improves over vanilla transfer in both directions "
    "and for both LoRA and (IA)³, by about 0.1–0.7 accuracy points, staying below the in-domain classifier."
)


# How to read the full run (written after it; no numbers here: the tables above are generated).
NOTES = (
    "The paper's effect does not appear reliably at this scale. Over the ten settings the analogy beat vanilla "
    "transfer in a few, tied in most (validation chose no transfer, λ = 0 or c0 = 1, in half of them) and lost "
    "once; no setting lost much, and the gains that did appear (movies→Amazon with LoRA in delta space and with the "
    "c0 form, Amazon→movies with (IA)³ in the c0 form) amount to a handful of test snippets. "
    "Reasons, in likely order: (1) the splits are tiny (40 validation rows: one row moves accuracy by 0.025), so "
    "λ is chosen on noise — movies→Amazon LoRA in parameter space scores far lower on validation than on test at "
    "the same λ; (2) the PEMs saw very little data (30 steps of 4 examples), so the classifiers are weak and noisy — "
    "for LoRA the in-domain movies classifier even scores below the Amazon classifier on movies, so the \"upper "
    "bound\" column is no bound here; (3) the language-modelling PEMs trained for only 30 steps; their loss fell "
    "(see training.json in the work folder), but much of that is adaptation shared by both domains (short English "
    "review text), which cancels in lm_tgt − lm_src, leaving little domain signal; "
    "(4) Amazon and movie snippets are short English review sentences that SmolLM2 already models well, a smaller "
    "domain gap than the paper's Amazon ↔ Yelp with T5. For movies→Amazon, parameter space and delta space (LoRA) chose "
    "different λ on validation and differ on test. "
    "Runtimes: the run was resumed — an interrupted first start trained cls_amazon and lm_amazon "
    "(their training seconds are listed per PEM but not in the LoRA training stage), the second did the rest of "
    "LoRA, a third added (IA)³ and re-used every LoRA result."
)


def render_page(document: Mapping[str, Any], plot_name: str | None) -> str:
    """The results page (markdown) generated from a results document."""
    rows = document["rows"]
    settings = document["settings"]
    table_rows = []
    for row in rows:
        gain = row["test_accuracy"] - row["vanilla_test"]
        table_rows.append([
            row["direction"], row["kind"], row["form"], row["space"], f"{row['variable']}={row['chosen']:g}",
            row["chosen_validation"], row["base_test"], row["vanilla_test"], row["test_accuracy"], f"{gain:+.3f}",
            row["in_domain_test"], "analogy > vanilla",
        ])  # fmt: skip
    table = common.markdown_table(
        ["direction", "PEM", "form", "space", "chosen (val)", "val acc", "base model", "vanilla (λ=0)",
         "analogy", "Δ vs vanilla", "in-domain (upper)", "paper's direction"], table_rows)  # fmt: skip
    wins = sum(1 for row in rows if row["test_accuracy"] > row["vanilla_test"])
    ties = sum(1 for row in rows if row["test_accuracy"] == row["vanilla_test"])
    zero = sum(1 for row in rows if (row["chosen"] == 0.0 and row["form"] == "lambda") or (row["chosen"] == 1.0 and row["form"] == "c0"))
    versions = document["versions"]
    quick = " (REDUCED --quick run)" if settings.get("quick") else ""
    if not document.get("complete"):
        quick += " — PARTIAL: the run had not finished when this page was written"
    lines = [
        f"# Domain transfer by analogy{quick}",
        "",
        "`target_clf = cls_src + λ·(lm_tgt − lm_src)` (and the paper's `c0·cls_src + (1−c0)·(lm_tgt − lm_src)`), "
        "SmolLM2-135M-Instruct with rank classification of ` negative` / ` positive` after "
        f"`{settings['template']!r}`; VADER ground-truth snippets (Amazon reviews, movie reviews), binarised at ±0.5. "
        "All PEMs of one kind start from one seeded initial adapter. λ is chosen on the target's validation split; "
        "the test split is scored only for the chosen λ and the baselines.",
        "",
        "## Results (accuracy on the target test split)",
        "",
        table,
        "",
        f"The analogy beat vanilla transfer in {wins} of {len(rows)} settings ({ties} ties); validation chose "
        f"no transfer (λ = 0 / c0 = 1) in {zero}.",
        "",
        PAPER_DIRECTION,
        "",
    ]
    if plot_name:
        lines += [f"![validation accuracy against λ and c0]({plot_name})", ""]
    if NOTES and not settings.get("quick"):
        lines += ["## Reading the results", "", NOTES, ""]
    lines += [
        "## Setup",
        "",
        f"- Data sizes per domain: {json.dumps(document['sizes'])} (seeded split, seed {settings['seed']}).",
        f"- PEMs: {json.dumps(settings['adapters'])}.",
        f"- Training: {json.dumps(settings['train'])}.",
        f"- Grids: {json.dumps(settings['grids'])}; spaces {json.dumps(settings['spaces'])} (LoRA), param for (IA)³.",
        f"- Runtimes (s): {json.dumps(document['timings'])}; training per PEM: {json.dumps(document['training_seconds'])}.",
        *common.environment_lines(versions),
        "",
        *common.command_lines(NAME, bool(settings.get('quick'))),
        f"Settings: `recipes/experiments/{NAME}.yaml`. Everything is cached under the work folder "
        "(`~/.cache/adaptermath/experiments/domain_transfer`): a second run re-uses the PEMs and every evaluation. "
        "This page is generated from `results.json` there (`render_page`).",
        "",
    ]
    return "\n".join(lines)


def plot(document: Mapping[str, Any], path: Path) -> Path | None:
    curves: dict[str, list[tuple[float, float]]] = {}
    chosen: dict[str, tuple[float, float]] = {}
    panels: dict[str, list[str]] = {}
    for row in document["rows"]:
        label = f"{row['kind']} {row['space']}"
        panel = f"{row['direction']} ({row['variable']})"
        key = f"{panel}: {label}"
        curves[key] = [(x, y) for x, y in row["validation"]]
        chosen[key] = (row["chosen"], row["chosen_validation"])
        panels.setdefault(panel, []).append(key)
    return common.plot_curves(path, curves, xlabel="λ or c0", ylabel="validation accuracy", title="domain transfer",
                              chosen=chosen, panels=panels)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return common.experiment_main(NAME, "Domain transfer by analogy: cls_src + λ·(lm_tgt − lm_src).", run, render_page, plot, argv)


if __name__ == "__main__":
    main()
