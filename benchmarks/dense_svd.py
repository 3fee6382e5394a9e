"""Which SVD re-emits a dense merged update as LoRA: full ``torch.linalg.svd`` or the seeded sketch?

Run by hand; the table goes to docs/benchmarks.md::

    python benchmarks/dense_svd.py [--repeats 3]

For each Llama-shaped projection (1B: 2048×2048, 2048×8192; 7B: 4096×4096, 4096×11008) it builds a
TIES-merged update of two random rank-16 LoRA updates (density 0.2: nearly full rank, a flat
spectrum — the hard case) and a plain sum (exactly rank 32), then times, for rank k = 16 and 32:
``torch.linalg.svd(full_matrices=False)`` truncated to k, and
:func:`adaptermath.algebra.truncation.dense_to_lora` (randomized while k + 10 < min(out, in)/3).
The error is ‖D − B·A‖_F/‖D‖_F measured for both; the full SVD's is the Eckart–Young optimum.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from adaptermath.algebra.truncation import RankPolicy, dense_to_lora
from adaptermath.methods import get_method

SHAPES = {"1b q_proj": (2048, 2048), "1b up_proj": (8192, 2048), "7b q_proj": (4096, 4096), "7b up_proj": (11008, 4096)}


def timed(fn, repeats: int):
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    print("| update | shape (out×in) | k | full SVD s | full error | sketch s | sketch error | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for label in args.shapes.split(","):
        out_f, in_f = SHAPES[label]
        g = torch.Generator().manual_seed(0)
        deltas = [2.0 * torch.randn(out_f, 16, generator=g) * 0.01 @ (torch.randn(16, in_f, generator=g) / in_f ** 0.5)
                  for _ in range(2)]
        updates = {
            "ties": get_method("ties")([(1.0, d) for d in deltas], {"density": 0.2}),
            "sum": deltas[0] + deltas[1],
        }
        for kind, D in updates.items():
            norm = float(D.norm())
            full_s, (U, S, Vh) = timed(lambda: torch.linalg.svd(D, full_matrices=False), 1)
            for k in (16, 32):
                full_error = float((D - (U[:, :k] * S[:k]) @ Vh[:k]).norm()) / norm
                sketch_s, factors = timed(lambda: dense_to_lora(D, RankPolicy(rank=k), default_rank=k), args.repeats)
                print(f"| {kind} | {label} {out_f}×{in_f} | {k} | {full_s:.2f} | {full_error:.5f} | {sketch_s:.3f} | "
                      f"{factors.relative_error:.5f} | {full_s / sketch_s:.0f}× |", flush=True)


if __name__ == "__main__":
    main()
