"""Throughput of the offline experiment models on this CPU; numbers go to docs/experiments-setup.md.

Run by hand after ``python -m adaptermath.experiments.setup``::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/experiments_throughput.py --threads 2 \
        [--fresh-conversion] [--json out.json]

(On a machine whose cores other processes also use, OpenMP's default busy-waiting makes 2-thread
torch 3-10x slower; ``OMP_WAIT_POLICY=PASSIVE`` must be set before Python starts.)

Measures: SmolLM2 GGUF -> HF conversion (into a temporary cache with ``--fresh-conversion``) and
reload; SmolLM2-135M LoRA r=8 (q_proj, v_proj) and (IA)^3 (k_proj, v_proj, down_proj) training
on packed insult comments (batch 8 x 64 tokens), in float32 and with bf16 autocast; SmolLM2 forward-only scoring (batch 8 x 64) and
sampling (batch 8, 64 new tokens); all-MiniLM-L6-v2 LoRA + head training and head inference
(batch 16, up to 64 tokens, VADER tweets). Training goes through :func:`train_pem`, so the
numbers include everything a real run pays per step (AdamW, clipping).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def _timed(label: str, results: dict[str, float], fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    results[label] = round(time.perf_counter() - started, 3)
    print(f"{label}: {results[label]} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="training steps per measurement")
    parser.add_argument("--fresh-conversion", action="store_true", help="time the GGUF conversion in a temporary cache")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from adaptermath.experiments import assets, datasets
    from adaptermath.experiments.train import train_pem
    from adaptermath.init_adapter import init_adapter, quiet_transformers

    results: dict[str, object] = {
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default: active)"),
        "load_average_before": os.getloadavg()[0],
    }
    if "OMP_WAIT_POLICY" not in os.environ:
        print("note: OMP_WAIT_POLICY is not set; on a shared machine set OMP_WAIT_POLICY=PASSIVE", flush=True)
    work = Path(tempfile.mkdtemp(prefix="adaptermath-bench-"))
    if args.fresh_conversion:
        _timed("smollm2_conversion_s", results, assets.smollm2_model_dir, work / "cache")
        smollm2 = assets.smollm2_model_dir(work / "cache")
    else:
        smollm2 = assets.smollm2_model_dir()
    with quiet_transformers():
        AutoModelForCausalLM.from_pretrained(str(smollm2))  # first call pays transformers' lazy imports
        _timed("smollm2_reload_s", results, AutoModelForCausalLM.from_pretrained, str(smollm2), dtype=torch.float32)

    insults = [row["text"] for row in datasets.insults("train") if row["label"] == 1]
    for kind, targets, feedforward, lr, bf16 in (
        ("lora", ["q_proj", "v_proj"], None, 1e-3, False),
        ("lora", ["q_proj", "v_proj"], None, 1e-3, True),
        ("ia3", ["k_proj", "v_proj", "down_proj"], ["down_proj"], 1e-2, False),
        ("ia3", ["k_proj", "v_proj", "down_proj"], ["down_proj"], 1e-2, True),
    ):
        init = work / f"init-{kind}"
        if not init.exists():
            init_adapter(smollm2, init, kind=kind, target_modules=targets, r=8, lora_alpha=16,
                         feedforward_modules=feedforward, task_type="CAUSAL_LM", seed=0)  # fmt: skip
        name = f"smollm2_{kind}_{'bf16' if bf16 else 'fp32'}"
        result = train_pem(smollm2, init, insults, work / name, objective="lm", steps=args.steps, lr=lr,
                           batch_size=8, max_length=64, seed=0, bf16=bf16, num_threads=args.threads)  # fmt: skip
        record = result.record
        results[f"{name}_train_tokens_per_s"] = record["tokens_per_second"]
        results[f"{name}_train_s_per_step"] = round(record["seconds"] / args.steps, 3)
        results[f"{name}_train_cpu_s_per_step"] = round(record["cpu_seconds"] / args.steps, 3)
        print(f"{name} training: {record['tokens_per_second']} tokens/s, {results[f'{name}_train_s_per_step']} s/step "
              f"({results[f'{name}_train_cpu_s_per_step']} CPU s/step), "
              f"loss {record['loss_first']:.3f} -> {record['loss_last']:.3f}", flush=True)  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32).eval()
    ids = torch.randint(100, 20000, (8, 64))
    with torch.inference_mode():
        model(input_ids=ids)
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(5):
            model(input_ids=ids)
        seconds = (time.perf_counter() - started) / 5
        results["smollm2_forward_cpu_s_per_batch"] = round((time.process_time() - cpu_started) / 5, 3)
    results["smollm2_forward_tokens_per_s"] = round(8 * 64 / seconds, 1)
    print(f"SmolLM2 forward (8 x 64): {results['smollm2_forward_tokens_per_s']} tokens/s")
    prompt = tokenizer(["I don't care if this is controversial"] * 8, return_tensors="pt")
    torch.manual_seed(42)
    started, cpu_started = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = model.generate(**prompt, do_sample=True, top_k=50, max_new_tokens=64, min_new_tokens=64,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    seconds = time.perf_counter() - started
    new_tokens = (out.shape[1] - prompt["input_ids"].shape[1]) * out.shape[0]
    results["smollm2_sampling_tokens_per_s"] = round(new_tokens / seconds, 1)
    results["smollm2_sampling_cpu_s"] = round(time.process_time() - cpu_started, 3)
    print(f"SmolLM2 sampling (batch 8, 64 new tokens): {results['smollm2_sampling_tokens_per_s']} new tokens/s")
    del model

    minilm = assets.minilm_model_dir()
    tweets = datasets.vader_sentiment("tweets")
    init = init_adapter(minilm, work / "init-minilm", kind="lora", target_modules=["query", "value"], r=8,
                        lora_alpha=8, task_type="SEQ_CLS", modules_to_save=["classifier"], seed=0)  # fmt: skip
    result = train_pem(minilm, init, tweets, work / "minilm-tweets", objective="classification", steps=args.steps,
                       lr=5e-4, batch_size=16, max_length=64, seed=0, num_threads=args.threads)  # fmt: skip
    results["minilm_lora_train_tokens_per_s"] = result.record["tokens_per_second"]
    results["minilm_lora_train_s_per_step"] = round(result.record["seconds"] / args.steps, 3)
    results["minilm_lora_train_cpu_s_per_step"] = round(result.record["cpu_seconds"] / args.steps, 3)
    print(f"MiniLM LoRA+head training (batch 16): {result.record['tokens_per_second']} tokens/s, "
          f"{results['minilm_lora_train_s_per_step']} s/step")  # fmt: skip
    minilm_tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    with quiet_transformers():
        classifier = AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=2).eval()
    texts = [row["text"] for row in tweets[:512]]
    started, cpu_started = time.perf_counter(), time.process_time()
    tokens = 0
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            batch = minilm_tokenizer(texts[start : start + 16], truncation=True, max_length=64, padding=True, return_tensors="pt")
            tokens += int(batch["attention_mask"].sum())
            classifier(**batch)
    seconds = time.perf_counter() - started
    results["minilm_inference_examples_per_s"] = round(len(texts) / seconds, 1)
    results["minilm_inference_cpu_s_per_512"] = round(time.process_time() - cpu_started, 3)
    results["minilm_inference_tokens_per_s"] = round(tokens / seconds, 1)
    print(f"MiniLM inference: {results['minilm_inference_examples_per_s']} examples/s ({results['minilm_inference_tokens_per_s']} tokens/s)")

    results["load_average_after"] = os.getloadavg()[0]
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
