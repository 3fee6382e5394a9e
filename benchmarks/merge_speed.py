"""Merge speed and memory: adaptermath against the I/O floor and PEFT's ``add_weighted_adapter``.

Run by hand (never in tests); results go to docs/benchmarks.md::

    python benchmarks/merge_speed.py                    # the full run (~40 min on 2 cores)
    python benchmarks/merge_speed.py --quick            # a few-minute smoke run
    python benchmarks/merge_speed.py --json results.json --markdown table.md

It writes random Llama-shaped LoRA adapters to ``--workdir`` (shapes only: no model is built;
1B: Llama-3.2-1B, 7B: Llama-2-7B; rank 16 and 64 on q/k/v/o/gate/up/down of every layer, fp32
as PEFT saves them, lora_alpha = 2r), then times, on the same inputs, each variant as its own
process — whole-process wall time (interpreter start and imports included) and peak RSS (the
child's own VmHWM, read as it finishes), median of ``--repeats``:

* ``floor``          read every input tensor with safetensors, write an output of the size the
                     merge writes (Σ inputs for cat-style outputs, one input for param-space ones);
* ``am-linear``      ``compose("a0 + a1 + …")`` — the paper's parameter-space sum (rank r);
* ``am-cat``         ``compose(..., space="delta")`` — exact ΔW sum by rank concatenation (rank N·r);
* ``am-cat-cold``    the same with the sha256 cache off (adaptermath remembers its inputs' digests
                     by file identity; the other am variants run with it warm, as after any
                     earlier merge of the same files);
* ``am-svd``         ``compose(..., space="delta", rank=r)`` — exact truncated SVD to rank r;
* ``am-ties``        ``compose(..., method="ties", rank=r)`` — TIES on ΔW, randomized SVD to rank r;
* ``peft-linear``, ``peft-cat``, ``peft-svd``, ``peft-ties``  ``PeftModel.add_weighted_adapter``
                     with that ``combination_type`` (svd_rank = r, density 0.2), then
                     ``save_pretrained``. PEFT needs the base model: it is built on the meta device
                     and given uninitialised CPU storage (``to_empty``), which is never touched —
                     PEFT's best case (no weights read, no random init, base pages not resident).

Inputs are read from the page cache (warm) by every variant alike, and every run starts after an
``os.sync()`` so that no run pays for the writeback of another's output. Variants whose single run
exceeds ``--slow-after`` seconds are run once. PEFT's ``svd`` is run on the 1B shape only; for
the 7B shape the script estimates its time from the 1B run (ratio of Σ full-SVD flops) and skips
it when the estimate exceeds ``--max-seconds``. Relative errors of the SVD outputs against the
exact ΔW = Σ sᵢ·Bᵢ·Aᵢ are computed here, from factors (Gram matrices), independently of both tools.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # Llama-3.2-1B and Llama-2-7B: hidden, intermediate, layers, attention heads, key/value heads.
    "1b": dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256),
    "7b": dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DENSITY = 0.2


# --------------------------------------------------------------------------- inputs


def module_shapes(shape: str) -> list[tuple[str, int, int]]:
    """(module name, in_features, out_features) for every targeted projection."""
    s = SHAPES[shape]
    head_dim = s["hidden"] // s["heads"]
    kv = s["kv_heads"] * head_dim
    dims = {
        "q_proj": (s["hidden"], s["hidden"]), "k_proj": (s["hidden"], kv), "v_proj": (s["hidden"], kv),
        "o_proj": (s["hidden"], s["hidden"]), "gate_proj": (s["hidden"], s["intermediate"]),
        "up_proj": (s["hidden"], s["intermediate"]), "down_proj": (s["intermediate"], s["hidden"]),
    }
    out = []
    for layer in range(s["layers"]):
        for proj in PROJECTIONS:
            part = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            out.append((f"model.layers.{layer}.{part}.{proj}", *dims[proj]))
    return out


def build_adapter(folder: Path, shape: str, rank: int, seed: int) -> None:
    """A random PEFT LoRA adapter folder of the given shape (no model needed)."""
    import torch
    from safetensors.torch import save_file

    if (folder / "adapter_model.safetensors").is_file():
        return
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, fan_in, fan_out in module_shapes(shape):
        prefix = f"base_model.model.{name}"
        tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in)
        tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.01
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": f"bench/llama-{shape}-shaped",
        "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": list(PROJECTIONS), "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None,
    }
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    os.replace(tmp, folder)


def llama_config_dict(shape: str) -> dict[str, Any]:
    s = SHAPES[shape]
    return dict(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                tie_word_embeddings=False)


# --------------------------------------------------------------------------- workers (one process each)


def worker(spec: dict[str, Any]) -> None:
    """Run one variant in this process (called as ``merge_speed.py --worker JSON``)."""
    inputs = [Path(p) for p in spec["inputs"]]
    output = Path(spec["output"])
    kind = spec["variant"]
    info: dict[str, Any] = {}
    if kind == "floor":
        from safetensors import safe_open

        limit = spec["write_bytes"]
        written = 0
        output.mkdir(parents=True, exist_ok=True)
        with open(output / "floor.bin", "wb") as sink:
            for folder in inputs:
                with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
                    for key in handle.keys():
                        tensor = handle.get_tensor(key)
                        if written < limit:
                            sink.write(memoryview(tensor.contiguous().view(-1).view(__import__("torch").uint8).numpy()))
                            written += tensor.numel() * tensor.element_size()
    elif kind.startswith("am-"):
        import adaptermath as am

        kind = kind.removesuffix("-cold")  # the same merge, run with the sha256 cache off

        names = [f"a{i}" for i in range(len(inputs))]
        expression = " + ".join(names)
        operands = dict(zip(names, map(str, inputs)))
        kwargs: dict[str, Any] = {
            "am-linear": {"space": "param"}, "am-cat": {"space": "delta"}, "am-svd": {"space": "delta", "rank": spec["rank"]},
            "am-ties": {"method": "ties", "method_options": {"density": DENSITY}, "rank": spec["rank"]},
        }[kind]
        result = am.compose(expression, operands, **kwargs)
        result.save(output, force=True)
        info["report"] = result.report.summary()
    elif kind.startswith("peft-"):
        import torch
        from peft import PeftModel
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**llama_config_dict(spec["shape"])))
        model = model.to_empty(device="cpu")  # uninitialised storage, never touched by the merge
        names = [f"a{i}" for i in range(len(inputs))]
        peft_model = PeftModel.from_pretrained(model, str(inputs[0]), adapter_name=names[0])
        for name, folder in zip(names[1:], inputs[1:]):
            peft_model.load_adapter(str(folder), adapter_name=name)
        combination = kind[len("peft-"):]
        extra: dict[str, Any] = {}
        if combination in ("svd", "ties_svd"):
            extra["svd_rank"] = spec["rank"]
        if "ties" in combination:
            extra["density"] = DENSITY
        peft_model.add_weighted_adapter(names, [1.0] * len(names), "merged", combination_type=combination, **extra)
        peft_model.save_pretrained(str(output), selected_adapters=["merged"])
    else:
        raise SystemExit(f"unknown variant {kind}")
    info["peak_rss_mib"] = peak_rss_mib()
    Path(spec["info"]).write_text(json.dumps(info))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Unlike rusage's ru_maxrss, which keeps the RSS
    of the process that forked it across exec, VmHWM belongs to the address space exec created."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system time of the child (all its threads)
    peak_rss_mib: float
    returncode: int
    info: dict[str, Any]
    stderr_tail: str


def run_variant(spec: dict[str, Any], timeout: float, threads: int) -> Run:
    """One child process; the wall time around it and the peak RSS it reports."""
    info_path = Path(spec["info"])
    info_path.unlink(missing_ok=True)
    shutil.rmtree(spec["output"], ignore_errors=True)
    # Start every run with no dirty pages waiting for the disk: otherwise a run pays for the
    # writeback of the previous run's output (deleted, but already being written), not its own.
    os.sync()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore",
               ADAPTERMATH_CACHE=str(Path(spec["output"]).parent / "cache"),
               ADAPTERMATH_HASH_CACHE="0" if spec["variant"].endswith("-cold") else "1")
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    stderr_path = info_path.with_suffix(".stderr")
    with open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                status = -9
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    child.returncode = 0  # reaped here; keep Popen from waiting again
    code = os.waitstatus_to_exitcode(status) if status != -9 else -9
    info = json.loads(info_path.read_text()) if info_path.is_file() and code == 0 else {}
    tail = stderr_path.read_text(errors="replace")[-600:] if code != 0 else ""
    peak = info.get("peak_rss_mib", float("nan"))  # measured by the child itself (see peak_rss_mib)
    return Run(seconds=seconds, cpu_seconds=usage.ru_utime + usage.ru_stime, peak_rss_mib=peak, returncode=code,
               info=info, stderr_tail=tail)


def exact_error(output_dir: Path, inputs: list[Path]) -> float:
    """‖ΔW_out − Σ sᵢBᵢAᵢ‖_F / ‖Σ sᵢBᵢAᵢ‖_F over all modules, from Gram matrices of the factors (float64)."""
    import torch
    from safetensors import safe_open

    def lora_file(folder: Path) -> tuple[Path, dict[str, Any]]:
        for candidate in (folder, folder / "merged"):
            if (candidate / "adapter_model.safetensors").is_file():
                return candidate / "adapter_model.safetensors", json.loads((candidate / "adapter_config.json").read_text())
        raise FileNotFoundError(folder)

    def scaling(config: dict[str, Any], module: str) -> float:
        r = next((v for k, v in (config.get("rank_pattern") or {}).items() if module.endswith(k)), config["r"])
        a = next((v for k, v in (config.get("alpha_pattern") or {}).items() if module.endswith(k)), config["lora_alpha"])
        return a / math.sqrt(r) if config.get("use_rslora") else a / r

    out_path, out_config = lora_file(output_dir)
    in_files = [lora_file(p) for p in inputs]
    diff_sq = ref_sq = 0.0
    with safe_open(str(out_path), framework="pt") as out:
        handles = [safe_open(str(p), framework="pt") for p, _ in in_files]
        for key in out.keys():
            if not key.endswith("lora_A.weight"):
                continue
            module = key[len("base_model.model."):-len(".lora_A.weight")]
            key_b = key.replace("lora_A", "lora_B")
            # The output's key may carry no adapter name; the inputs' keys are PEFT's standard ones.
            Ps = [scaling(out_config, module) * out.get_tensor(key_b).double()]
            Qs = [out.get_tensor(key).double()]
            refP, refQ = [], []
            for handle, (_, config) in zip(handles, in_files):
                refP.append(scaling(config, module) * handle.get_tensor(key_b).double())
                refQ.append(handle.get_tensor(key).double())

            def norm_sq(P: list[torch.Tensor], Q: list[torch.Tensor]) -> float:
                Pm, Qm = torch.cat(P, dim=1), torch.cat(Q, dim=0)
                return float(((Pm.T @ Pm) * (Qm @ Qm.T)).sum())

            diff_sq += norm_sq(Ps + [-p for p in refP], Qs + refQ)
            ref_sq += norm_sq(refP, refQ)
    return math.sqrt(max(diff_sq, 0.0) / ref_sq)


def full_svd_flops(shape: str) -> float:
    """Σ over modules of the work of torch.linalg.svd(ΔW, full_matrices=True): ~ m·n·min(m,n) + max(m,n)³."""
    total = 0.0
    for _, fan_in, fan_out in module_shapes(shape):
        m, n = fan_out, fan_in
        total += m * n * min(m, n) + max(m, n) ** 3
    return total


def machine() -> dict[str, Any]:
    import peft
    import safetensors
    import torch
    import transformers

    import adaptermath

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1]) // 1024
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_mib": mem, "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "peft": peft.__version__,
        "transformers": transformers.__version__, "safetensors": safetensors.__version__,
        "adaptermath": adaptermath.__version__, "platform": platform.platform(),
    }


# --------------------------------------------------------------------------- the plan


def plan(quick: bool, shapes: list[str], ranks: list[int], counts: list[int], with_peft: bool) -> list[dict[str, Any]]:
    """Which variants run on which inputs. The full grid keeps the run within ~40 min on 2 cores."""
    rows: list[dict[str, Any]] = []

    def add(shape: str, rank: int, n: int, variant: str, **extra: Any) -> None:
        rows.append(dict(shape=shape, rank=rank, n=n, variant=variant, **extra))

    for shape in shapes:
        for rank in ranks:
            for n in counts:
                add(shape, rank, n, "floor", output="cat")
                add(shape, rank, n, "am-cat")
                if n == max(counts) or quick:
                    add(shape, rank, n, "am-cat-cold")
                add(shape, rank, n, "floor", output="one")
                add(shape, rank, n, "am-linear")
                add(shape, rank, n, "am-svd")
                if with_peft and (quick or (n in (min(counts), max(counts)) and rank == min(ranks))):
                    add(shape, rank, n, "peft-linear")
                    add(shape, rank, n, "peft-cat")
                    if not quick:
                        add(shape, rank, n, "peft-ties")
            if not quick and rank == min(ranks) and shape == "1b":
                add(shape, rank, 2, "am-ties")
                if with_peft:
                    add(shape, rank, 2, "peft-svd")
            if not quick and rank == min(ranks) and shape == "7b" and with_peft:
                add(shape, rank, 2, "peft-svd")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="1B shape, rank 16, N=2, one repeat, no PEFT svd/ties")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/adaptermath-bench"))
    parser.add_argument("--shapes", default="1b,7b")
    parser.add_argument("--ranks", default="16,64")
    parser.add_argument("--counts", default="2,4,8", help="numbers of adapters merged")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated variants to leave out, e.g. peft-svd,am-ties")
    parser.add_argument("--slow-after", type=float, default=90.0, help="run a variant once when one run takes longer")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="skip a variant expected to take longer")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return

    shapes = ["1b"] if args.quick else args.shapes.split(",")
    ranks = [16] if args.quick else [int(r) for r in args.ranks.split(",")]
    counts = [2] if args.quick else [int(n) for n in args.counts.split(",")]
    repeats = 1 if args.quick else args.repeats
    skipped = {v.strip() for v in args.skip.split(",") if v.strip()}
    rows = [row for row in plan(args.quick, shapes, ranks, counts, not args.no_peft) if row["variant"] not in skipped]
    load_before = os.getloadavg()
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"building inputs in {args.workdir} ...", flush=True)
    for shape in shapes:
        for rank in ranks:
            for i in range(max(counts)):
                build_adapter(args.workdir / f"{shape}-r{rank}" / f"a{i}", shape, rank, seed=1000 * rank + i)
    print(f"inputs ready after {time.perf_counter() - started:.0f} s", flush=True)

    results: list[dict[str, Any]] = []
    peft_svd_1b: float | None = None
    configs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        configs.setdefault((row["shape"], row["rank"], row["n"]), []).append(row)
    (args.workdir / "out").mkdir(exist_ok=True)
    for (shape, rank, n), config_rows in configs.items():
        inputs = [args.workdir / f"{shape}-r{rank}" / f"a{i}" for i in range(n)]
        one = (inputs[0] / "adapter_model.safetensors").stat().st_size
        for folder in inputs:  # warm the page cache so every variant reads the same way
            with open(folder / "adapter_model.safetensors", "rb") as handle:
                while handle.read(1 << 24):
                    pass
        # adaptermath remembers its inputs' sha256 (adaptermath.io.hash_cache): warm it here, as after
        # any earlier merge of these files; the -cold variants run with the cache off.
        os.environ["ADAPTERMATH_CACHE"] = str(args.workdir / "out" / "cache")
        from adaptermath.io.hash_cache import cached_sha256

        for folder in inputs:
            cached_sha256(folder / "adapter_model.safetensors")
        active: list[tuple[dict[str, Any], dict[str, Any], list[Run], str]] = []
        for index, row in enumerate(config_rows):
            variant = row["variant"]
            label = f"{shape} r{rank} N={n} {variant}" + (f"({row['output']})" if variant == "floor" else "")
            if variant == "peft-svd" and shape != "1b":
                if peft_svd_1b is None:
                    results.append(dict(row, skipped="no 1B peft-svd timing to extrapolate from"))
                    continue
                estimate = peft_svd_1b * full_svd_flops(shape) / full_svd_flops("1b")
                if estimate > args.max_seconds:
                    print(f"{label}: skipped (estimated {estimate / 60:.0f} min)", flush=True)
                    results.append(dict(row, skipped=f"estimated ≥ {estimate / 60:.0f} min from the 1B run (Σ full-SVD flops)"))
                    continue
            spec = dict(row, inputs=[str(p) for p in inputs], output=str(args.workdir / "out" / f"result{index}"),
                        info=str(args.workdir / "out" / f"info{index}.json"),
                        write_bytes=one * n if row.get("output") == "cat" else one)
            active.append((row, spec, [], label))
        # Rounds interleave the variants and rotate their order, so a change in the machine's state
        # (load; on VMs, memory freed to the host and faulted back in) spreads over all of them.
        for round_index in range(repeats):
            shift = round_index % max(1, len(active))
            for row, spec, runs, label in active[shift:] + active[:shift]:
                if runs and (runs[-1].returncode or runs[-1].seconds > args.slow_after):
                    continue
                run = run_variant(spec, timeout=args.max_seconds, threads=args.threads)
                runs.append(run)
                print(f"{label}: {run.seconds:.2f} s, {run.peak_rss_mib:.0f} MiB"
                      + (f" FAILED rc={run.returncode}" if run.returncode else ""), flush=True)
                if run.returncode == 0 and row["variant"] in ("am-svd", "peft-svd") and "error" not in spec:
                    spec["error"] = exact_error(Path(spec["output"]), inputs)
                shutil.rmtree(spec["output"], ignore_errors=True)
        for row, spec, runs, label in active:
            variant = row["variant"]
            ok = [r for r in runs if r.returncode == 0]
            entry: dict[str, Any] = dict(row, runs=len(runs), seconds=[round(r.seconds, 3) for r in runs],
                                         peak_rss_mib=[None if math.isnan(r.peak_rss_mib) else round(r.peak_rss_mib) for r in runs])
            if runs[-1].returncode == -9:
                entry["timed_out_after"] = args.max_seconds  # a lower bound on its time
                if variant == "peft-svd" and shape == "1b":
                    peft_svd_1b = args.max_seconds
            if ok:
                entry["median_seconds"] = statistics.median(r.seconds for r in ok)
                entry["median_cpu_seconds"] = statistics.median(r.cpu_seconds for r in ok)
                entry["median_peak_rss_mib"] = statistics.median(r.peak_rss_mib for r in ok)
                if "error" in spec:
                    entry["relative_error"] = spec["error"]
                if "report" in ok[-1].info:
                    report = dict(ok[-1].info["report"])
                    report.pop("per_module", None)
                    entry["report"] = report
                if variant == "peft-svd" and shape == "1b":
                    peft_svd_1b = entry["median_seconds"]
            elif "timed_out_after" not in entry:
                entry["failed"] = runs[-1].stderr_tail
            results.append(entry)
    elapsed = time.perf_counter() - started
    payload = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "total_seconds": round(elapsed), "repeats": repeats,
               "load_average_1_5_15min": {"start": [round(v, 2) for v in load_before],
                                          "end": [round(v, 2) for v in os.getloadavg()]},
               "results": results}
    table = markdown(payload)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))
    if args.markdown:
        args.markdown.write_text(table)


# --------------------------------------------------------------------------- report


def markdown(payload: dict[str, Any]) -> str:
    """The results as markdown tables: timings with ratios to the floor / to PEFT, and errors."""
    by_key: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for entry in payload["results"]:
        name = entry["variant"] + (f"({entry['output']})" if entry["variant"] == "floor" else "")
        by_key.setdefault((entry["shape"], entry["rank"], entry["n"]), {})[name] = entry
    lines = ["| shape | r | N | variant | wall s (median) | CPU s | runs | peak RSS MiB | vs floor | vs PEFT | rel. error vs exact ΔW |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    floor_of = {"am-cat": "floor(cat)", "am-cat-cold": "floor(cat)", "peft-cat": "floor(cat)", "am-linear": "floor(one)", "peft-linear": "floor(one)",
                "am-svd": "floor(one)", "peft-svd": "floor(one)", "am-ties": "floor(one)", "peft-ties": "floor(one)"}
    peft_of = {"am-cat": "peft-cat", "am-cat-cold": "peft-cat", "am-linear": "peft-linear", "am-svd": "peft-svd", "am-ties": "peft-ties"}
    for (shape, rank, n), variants in by_key.items():
        for name, entry in variants.items():
            if "skipped" in entry:
                lines.append(f"| {shape} | {rank} | {n} | {name} | skipped: {entry['skipped']} | | | | | | |")
                continue
            if "timed_out_after" in entry:
                lines.append(f"| {shape} | {rank} | {n} | {name} | > {entry['timed_out_after']:.0f} (stopped) | | 1 | "
                             f"n/a | | | |")
                continue
            if "median_seconds" not in entry:
                lines.append(f"| {shape} | {rank} | {n} | {name} | failed | | {entry['runs']} | | | | |")
                continue
            seconds = entry["median_seconds"]
            floor = variants.get(floor_of.get(name, ""), {}).get("median_seconds")
            peft_entry = variants.get(peft_of.get(name, ""), {})
            peft = peft_entry.get("median_seconds") or peft_entry.get("timed_out_after")
            vs_floor = f"{seconds / floor:.2f}×" if floor and not name.startswith("floor") else ""
            at_least = "≥ " if "timed_out_after" in peft_entry else ""
            vs_peft = ("" if not peft else f"{at_least}{peft / seconds:.0f}× faster" if peft >= seconds
                       else f"{seconds / peft:.0f}× slower")
            error = f"{entry['relative_error']:.4g}" if "relative_error" in entry else ""
            lines.append(f"| {shape} | {rank} | {n} | {name} | {seconds:.2f} | {entry['median_cpu_seconds']:.2f} | {entry['runs']} | "
                         f"{entry['median_peak_rss_mib']:.0f} | {vs_floor} | {vs_peft} | {error} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
