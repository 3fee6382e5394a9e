"""Is evaluation as fast as a plain transformers forward loop on the same batches?

Run by hand; the tables go to docs/benchmarks-eval.md::

    python benchmarks/eval_throughput.py [--model DIR | --random] [--device cpu] [--threads 1]
        [--examples 32] [--batch-size 8] [--repeats 3] [--output docs/benchmarks-eval.md]

The model is SmolLM2-135M-Instruct (``adaptermath.experiments.assets.smollm2_model_dir``) unless
``--model`` names another causal LM folder or ``--random`` builds a small random Llama. Each
comparison runs the adaptermath evaluator and plain ``model(**batch)`` loops over exactly the
batches the evaluator builds:

* classification (rank, single-token and multi-token labels): ``evaluate_classification`` vs a
  loop over :func:`build_rank_batches`'s tensors -- once returning every position's logits (what
  a hand-written loop does), once with the same ``logits_to_keep`` the evaluator passes (the model
  time alone, so the ratio is the evaluator's own overhead: tokenising, padding, log-softmax and
  gathering the label tokens);
* perplexity: ``corpus_perplexity`` vs a loop over the same stacked windows, again with full
  logits and with the evaluator's ``logits_to_keep`` (the evaluator also computes the
  cross-entropy over the vocabulary, which the plain loop skips).

Runs alternate, in an order that rotates every round, so background load and allocator state hit
all three alike; the median of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adaptermath.evaluation import corpus_perplexity, evaluate_classification, load_base_model
from adaptermath.evaluation.batching import encode, special_wrapping
from adaptermath.evaluation.classification import build_rank_batches, rank_forward_kwargs
from adaptermath.evaluation.perplexity import sliding_windows

WORDS = (
    "the film was a great good bad awful boring wonderful story acting plot music scene actor director "
    "and but so very not really quite too long short funny sad moving dull fresh clever lazy beautiful "
    "script ending start middle characters dialogue camera score visual effects i we they loved hated liked"
).split()
TEMPLATE = "Review: {text}\nSentiment:"


def reviews(count: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))), "label": rng.choice(["negative", "positive"])}
        for _ in range(count)
    ]


def corpus(words: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run alternately (in a rotating order) after one warm-up each."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        # Rotate the order each round so no method always follows the same one.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            run = runs[name]
            started = time.perf_counter()
            run()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def classification_runs(model, tokenizer, records, labels: list[str], batch_size: int) -> dict[str, Callable[[], object]]:
    records = [{"text": record["text"], "label": str(["negative", "positive"].index(record["label"]))} for record in records]
    prompts = [TEMPLATE.format(**record) for record in records]
    label_tokens = encode(tokenizer, [" " + label for label in labels])
    longest = max(len(tokens) for tokens in label_tokens)
    batches = build_rank_batches(tokenizer, prompts, label_tokens, batch_size=batch_size)
    full_kwargs = []
    keep_kwargs = []
    for batch in batches:
        kwargs, _ = rank_forward_kwargs(model, batch, longest)
        keep_kwargs.append(kwargs)
        full_kwargs.append({name: value for name, value in kwargs.items() if name != "logits_to_keep"})

    def evaluator() -> object:
        return evaluate_classification(model, tokenizer, records, labels=labels, template=TEMPLATE, batch_size=batch_size)

    def plain(batches_kwargs: list[dict]) -> Callable[[], object]:
        def loop() -> object:
            with torch.inference_mode():
                return [model(**kwargs).logits for kwargs in batches_kwargs]

        return loop

    return {"adaptermath": evaluator, "plain, all logits": plain(full_kwargs), "plain, same logits_to_keep": plain(keep_kwargs)}


def perplexity_runs(model, tokenizer, text: str, max_length: int, stride: int, batch_size: int):
    prefix, _ = special_wrapping(tokenizer)
    tokens = prefix + list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    stream = torch.tensor(tokens)
    windows = sliding_windows(len(tokens), max_length, stride)
    groups: dict[tuple[int, int], list] = {}
    for window in windows:
        groups.setdefault((window.end - window.begin, window.num_targets), []).append(window)
    device = model.device
    batches = []
    for (length, targets), group in groups.items():
        positions = torch.arange(length - 1 - targets, length - 1, device=device)
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            batches.append((torch.stack([stream[w.begin : w.end] for w in chunk]).to(device), positions))

    def evaluator() -> object:
        return corpus_perplexity(model, tokenizer, text, max_length=max_length, stride=stride, batch_size=batch_size)

    def plain(use_keep: bool) -> Callable[[], object]:
        def loop() -> object:
            with torch.inference_mode():
                return [
                    model(input_ids=ids, use_cache=False, **({"logits_to_keep": keep} if use_keep else {})).logits
                    for ids, keep in batches
                ]

        return loop

    runs = {"adaptermath": evaluator, "plain, all logits": plain(False), "plain, same logits_to_keep": plain(True)}
    return runs, len(tokens), len(windows)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch thread(s)"


def row(name: str, units: float, unit: str, seconds: dict[str, float]) -> str:
    ours = seconds["adaptermath"]
    cells = [name]
    for key in ("adaptermath", "plain, all logits", "plain, same logits_to_keep"):
        cells.append(f"{units / seconds[key]:.1f} {unit}/s ({seconds[key]:.2f} s)")
    cells.append(f"{seconds['plain, all logits'] / ours:.2f}")
    cells.append(f"{seconds['plain, same logits_to_keep'] / ours:.2f}")
    return "| " + " | ".join(cells) + " |"


def write_section(output: Path, title: str, body: str) -> None:
    """Replace the ``## title`` section of ``output`` (or append it), keeping the rest of the file."""
    header = "# Evaluation throughput\n\nWritten by `benchmarks/eval_throughput.py`; see its docstring for the method.\n"
    text = output.read_text(encoding="utf-8") if output.exists() else header
    parts = text.split("\n## ")
    head, sections = parts[0], parts[1:]
    sections = [section for section in sections if section.split("\n", 1)[0].strip() != title]
    sections.append(f"{title}\n\n{body.strip()}\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_suffix(".tmp")
    temporary.write_text(head.rstrip("\n") + "\n\n## " + "\n## ".join(sections), encoding="utf-8")
    temporary.replace(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="causal LM folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--random", action="store_true", help="a random Llama (hidden 256, 4 layers) instead")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--corpus-words", type=int, default=1200)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write the section into")
    parser.add_argument("--title", default=None, help="section title (default: model and machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.random:
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from adaptermath.experiments.assets import smollm2_model_dir

        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(smollm2_model_dir())
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
        model = LlamaForCausalLM(config).to(args.device).eval()
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        model_name = "random Llama (hidden 256, 4 layers, SmolLM2 tokenizer)"
    else:
        if args.model is None:
            from adaptermath.experiments.assets import smollm2_model_dir

            args.model = str(smollm2_model_dir())
            model_name = "SmolLM2-135M-Instruct"
        else:
            model_name = args.model
        loaded = load_base_model(args.model, device=args.device, dtype=args.dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
    device = model.device

    records = reviews(args.examples)
    lines = [
        f"Command: `python benchmarks/eval_throughput.py {' '.join(__import__('sys').argv[1:])}`  ",
        f"Model: {model_name}; device: {device} ({machine(device)}); dtype: {model.dtype}; "
        f"torch {torch.__version__}.  ",
        f"Median of {args.repeats} interleaved runs after a warm-up. Speed ratio = plain time / adaptermath time "
        "(≥ 0.90 means within 10%).",
        "",
        "| workload | adaptermath | plain loop, all logits | plain loop, same logits_to_keep | ratio vs all logits "
        "| ratio vs same logits_to_keep |",
        "|---|---|---|---|---|---|",
    ]
    for labels, what in ((["negative", "positive"], "single-token labels"),
                         (["very negative", "somewhat positive", "not sure at all"], "multi-token labels")):
        runs = classification_runs(model, tokenizer, records, labels, args.batch_size)
        seconds = interleaved(runs, args.repeats)
        name = f"classification, {args.examples} examples × {len(labels)} {what}, batch {args.batch_size}"
        lines.append(row(name, args.examples, "examples", seconds))
        print(lines[-1], flush=True)
    runs, num_tokens, num_windows = perplexity_runs(
        model, tokenizer, corpus(args.corpus_words), args.max_length, args.stride, args.batch_size
    )
    seconds = interleaved(runs, args.repeats)
    name = (f"perplexity, {num_tokens} tokens, {num_windows} windows of {args.max_length} "
            f"(stride {args.stride}), batch {args.batch_size}")
    lines.append(row(name, num_tokens, "tokens", seconds))
    print(lines[-1], flush=True)
    body = "\n".join(lines)
    print(body)
    if args.output is not None:
        title = args.title or f"{model_name} on {device.type}"
        write_section(args.output, title, body)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
