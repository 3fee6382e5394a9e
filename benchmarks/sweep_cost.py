"""How much a K-point sweep costs compared with K plain evaluations plus one model load.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/sweep_cost.py [--points 5] [--examples 24] [--threads 1]

Builds three LoRA adapters on SmolLM2-135M-Instruct from one seeded init (adaptermath init + a
seeded perturbation: no training needed to measure cost), writes a small sentiment validation
set from the VADER movie snippets, then measures in one process:

* load: ``load_base_model`` of the converted SmolLM2 folder (first load in the process);
* eval: one ``evaluate_classification`` of a composed adapter attached to the live model;
* sweep: ``adaptermath.sweep`` over K grid points (validation only, no test split).

Prints ratio = sweep / (load + K·eval). Run by hand; results go to docs/benchmarks-sweep.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from perturbed_adapters import perturbed_adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)


    import adaptermath as am
    from adaptermath.evaluation import attach_adapter, clear_model_cache, evaluate_classification, load_base_model
    from adaptermath.experiments.assets import smollm2_model_dir
    from adaptermath.experiments.datasets import vader_sentiment

    base = smollm2_model_dir()
    work = Path(tempfile.mkdtemp(prefix="sweep-cost-"))
    operands = perturbed_adapters(base, work)
    rows = [r for r in vader_sentiment("movies")][: args.examples]
    data = work / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(labels="negative,positive", template="Review: {text}\nSentiment:")
    clear_model_cache()

    started = time.perf_counter()
    loaded = load_base_model(base)
    load_s = time.perf_counter() - started

    composed = am.compose("cls + 0.3*(tgt - src)", operands, space="delta")
    model = attach_adapter(loaded.model, composed)
    evaluate_classification(model, loaded.tokenizer, str(data), **options)  # warm-up
    started = time.perf_counter()
    model = attach_adapter(model, am.compose("cls + 0.2*(tgt - src)", operands, space="delta"))
    evaluate_classification(model, loaded.tokenizer, str(data), **options)
    eval_s = time.perf_counter() - started

    clear_model_cache()
    grid = [round(0.5 * i / max(args.points - 1, 1), 6) for i in range(args.points)]
    started = time.perf_counter()
    am.sweep("cls + λ*(tgt - src)", operands, base=base, task="classification", grid={"λ": grid}, val=str(data), space="delta",
             **options)
    sweep_s = time.perf_counter() - started

    expected = load_s + args.points * eval_s
    result = {"points": args.points, "examples": args.examples, "threads": args.threads, "load_s": round(load_s, 2),
              "eval_s": round(eval_s, 2), "sweep_s": round(sweep_s, 2), "load_plus_k_evals_s": round(expected, 2),
              "ratio": round(sweep_s / expected, 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
