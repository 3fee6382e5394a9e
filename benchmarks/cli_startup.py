"""CLI start-up time against the bare interpreter, measured in one run (results: docs/benchmarks.md).

Run by hand (never in tests)::

    python benchmarks/cli_startup.py                 # 15 rounds, prints a markdown table
    python benchmarks/cli_startup.py --repeats 9 --json docs/benchmarks-cli-startup.json
    python benchmarks/cli_startup.py --render docs/benchmarks-cli-startup.json   # the docs table

Every variant is a fresh process (``sys.executable``), timed wall-clock from spawn to exit; the
rounds interleave the variants so that load from other processes spreads evenly over them, and
the median is reported. The adapter that ``inspect`` reads is the quick start's ``demo/sst2``
(rank 8 on q/v of a 2-layer model), written once to a temporary folder by
recipes/quickstart/make_adapters.py.

Targets (issue 14): ``adaptermath --help`` at most 0.4 s over ``python -c pass``;
``adaptermath inspect`` at most 1.5× ``python -c "import torch"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "adaptermath"]


def variants(demo: Path) -> dict[str, list[str]]:
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "adaptermath --help": [*CLI, "--help"],
        "adaptermath --version": [*CLI, "--version"],
        "adaptermath compose --help": [*CLI, "compose", "--help"],
        "adaptermath eval --help": [*CLI, "eval", "--help"],
        "adaptermath inspect demo/sst2": [*CLI, "inspect", str(demo / "sst2")],
        "adaptermath inspect demo/sst2 --no-norms": [*CLI, "inspect", str(demo / "sst2"), "--no-norms"],
        "python -c \"import adaptermath\"": [sys.executable, "-c", "import adaptermath"],
    }


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="Rounds (each runs every variant once).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results as JSON here.")
    parser.add_argument("--render", type=Path, default=None, help="Print the markdown of a results JSON; run nothing.")
    args = parser.parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text(encoding="utf-8"))
        print(render(results), end="")
        return results
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        subprocess.run([sys.executable, str(ROOT / "recipes" / "quickstart" / "make_adapters.py"), str(demo)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs = variants(demo)
        for command in runs.values():  # warm the page cache and .pyc files
            time_once(command)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, command in runs.items():
                times[name].append(time_once(command))
    median = {name: statistics.median(values) for name, values in times.items()}
    interpreter, torch_import = median["python -c pass"], median['python -c "import torch"']
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "repeats": args.repeats,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-min, at start and end
        "median_s": median,
        "targets": {
            "help_over_interpreter_s": median["adaptermath --help"] - interpreter,
            "inspect_over_import_torch": median["adaptermath inspect demo/sst2"] / torch_import,
        },
    }
    print(render(results), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def render(results: dict) -> str:
    """The markdown table and target lines for docs/benchmarks.md (``--render FILE.json`` prints them)."""
    median = results["median_s"]
    interpreter = median["python -c pass"]
    lines = ["| command | median (s) | over `python -c pass` (s) |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {value:.3f} | {value - interpreter:+.3f} |" for name, value in median.items()]
    help_over = results["targets"]["help_over_interpreter_s"]
    inspect_ratio = results["targets"]["inspect_over_import_torch"]
    lines += ["", f"`--help` over the interpreter: {help_over:.3f} s (target ≤ 0.4 s: {'met' if help_over <= 0.4 else 'missed'}); "
              f"`inspect` / `import torch`: {inspect_ratio:.2f}× (target ≤ 1.5×: {'met' if inspect_ratio <= 1.5 else 'missed'}).",
              f"Median of {results['repeats']} rounds; {results['machine']}; Python {results['python']}; "
              f"1-minute load average {results['load_average'][0]:g} at the start, {results['load_average'][1]:g} at the end "
              "(a shared machine: other jobs ran)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
