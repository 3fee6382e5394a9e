"""How much an N-trial search costs compared with N plain evaluations plus one model load.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/search_cost.py [--trials 8] [--examples 24] [--threads 1]

Builds three LoRA adapters on SmolLM2-135M-Instruct from one seeded init (adaptermath init + a
seeded perturbation: no training needed to measure cost), writes a small synthetic sentiment
validation set (templated movie reviews: only the cost is measured), then measures in one process:

* load: ``load_base_model`` of the converted SmolLM2 folder (first load in the process);
* eval: compose + swap + ``evaluate_classification`` of an adapter on the live model, the mean of
  ``--repeats`` runs;
* search: ``adaptermath.search`` with N TPE trials over two coefficients (validation only, no
  test split), its SQLite study, search.json, trials.csv and plots in a fresh folder; and the
  time spent inside the trials (from the study's start/complete stamps).

Prints ratio = search / (load + N·eval), in wall-clock time and in this process's CPU time (the
machine may be shared: CPU time is what other jobs do not inflate); the target is ≤ 1.1. Run by
hand; results go to docs/benchmarks-search.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from perturbed_adapters import perturbed_adapters


ADJECTIVES = {"positive": ["moving", "funny", "gripping", "beautiful", "clever", "warm"],
              "negative": ["dull", "clumsy", "tedious", "shallow", "noisy", "bland"]}
SUBJECTS = ["the plot", "the acting", "the soundtrack", "the camera work", "the dialogue", "the ending"]


def review(index: int) -> dict[str, str]:
    """A deterministic templated review with its label (alternating)."""
    label = "positive" if index % 2 else "negative"
    words = ADJECTIVES[label]
    text = (f"{SUBJECTS[index % 6].capitalize()} was {words[index % 6]} and {SUBJECTS[(index + 2) % 6]} "
            f"felt {words[(index + 3) % 6]}; overall a {words[(index + 1) % 6]} film.")
    return {"text": text, "label": label}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="plain evaluations averaged for eval")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)


    import adaptermath as am
    from adaptermath.evaluation import attach_adapter, clear_model_cache, evaluate_classification, load_base_model
    from adaptermath.experiments.assets import smollm2_model_dir

    base = smollm2_model_dir()
    work = Path(tempfile.mkdtemp(prefix="search-cost-"))
    operands = perturbed_adapters(base, work)
    rows = [review(i) for i in range(args.examples)]
    data = work / "val.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(labels="negative,positive", template="Review: {text}\nSentiment:")
    clear_model_cache()

    def clocks() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def since(start: tuple[float, float]) -> tuple[float, float]:
        now = clocks()
        return now[0] - start[0], now[1] - start[1]

    started = clocks()
    loaded = load_base_model(base)
    load = since(started)

    model = attach_adapter(loaded.model, am.compose("cls + 0.3*tgt - 0.1*src", operands, space="delta"))
    evaluate_classification(model, loaded.tokenizer, str(data), **options)  # warm-up
    started = clocks()
    for index in range(args.repeats):
        model = attach_adapter(model, am.compose(f"cls + {0.1 + 0.1 * index}*tgt - 0.2*src", operands, space="delta"))
        evaluate_classification(model, loaded.tokenizer, str(data), **options)
    evaluation = tuple(t / args.repeats for t in since(started))

    clear_model_cache()
    started = clocks()
    result = am.search("cls + λ*tgt - μ*src", operands, base=base, task="classification",
                       variables=["λ=0:0.5", "μ=0:0.5"], val=str(data), trials=args.trials, seed=0,
                       output=work / "search", space="delta", **options)
    searched = since(started)

    import optuna

    study = optuna.load_study(study_name=result.settings.study, storage=result.settings.storage)
    in_trials = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
    out = {"trials": args.trials, "examples": args.examples, "threads": args.threads, "repeats": args.repeats}
    for name, index in (("wall", 0), ("cpu", 1)):
        expected = load[index] + args.trials * evaluation[index]
        out[name] = {"load_s": round(load[index], 2), "eval_s": round(evaluation[index], 2),
                     "search_s": round(searched[index], 2), "load_plus_n_evals_s": round(expected, 2),
                     "ratio": round(searched[index] / expected, 3)}
    out["wall"]["inside_trials_s"] = round(in_trials, 2)
    out["wall"]["outside_trials_s"] = round(searched[0] - in_trials, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
