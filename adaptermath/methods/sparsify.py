"""The elementwise pieces that TIES, DARE and magnitude pruning share (pure functions, float32).

* ``trim_by_magnitude(x, k)``: keep the ⌈k·n⌉ entries of largest |x| (n = x.numel()), zero the rest.
* ``drop_and_rescale(x, p, g)``: mᵢⱼ ~ Bernoulli(1 − p) drawn from ``g``; x ⊙ m / (1 − p).
* ``elect_sign(τ₁…τₙ)``: γ = sign(Σᵢ τᵢ) — the sign with the larger total mass, per entry.
* ``disjoint_mean(τ₁…τₙ, γ)``: per entry, the mean of the τᵢ that are non-zero and have sign γ
  (0 where none does).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def trim_by_magnitude(x: torch.Tensor, density: float) -> torch.Tensor:
    """x with all but its ⌈density·n⌉ largest-magnitude entries set to zero (ties at the threshold kept)."""
    n = x.numel()
    keep = min(n, math.ceil(density * n))
    if keep >= n:
        return x.clone()
    if keep <= 0:
        return torch.zeros_like(x)
    magnitude = x.abs()
    threshold = kth_smallest(magnitude.reshape(-1), n - keep + 1)
    return x * (magnitude >= threshold)


SAMPLE_STRIDE = 64  # one entry in 64 brackets the order statistic (see kth_smallest)


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest entry of a 1-D tensor (1-based), exactly as ``values.kthvalue(k).values``.

    A full selection over millions of entries is slow; instead a strided sample (every 64th entry)
    gives a bracket [lo, hi] that holds the k-th value with overwhelming probability, checked by
    counting: with c = #{v < lo}, if c < k ≤ #{v ≤ hi} the answer is the (k − c)-th smallest entry
    in [lo, hi], a small set. A bracket that misses (never seen in practice) falls back to the
    full selection, so the result is always exact.
    """
    n = values.numel()
    if n < 64 * SAMPLE_STRIDE:
        return values.kthvalue(k).values
    sample = values[::SAMPLE_STRIDE]
    m = sample.numel()
    position = k / n * m  # where the k-th value falls in the sorted sample, roughly
    margin = 6.0 * math.sqrt(m) + 2.0  # ~6 standard deviations of a sample order statistic, and then some
    lo_index, hi_index = math.floor(position - margin), math.ceil(position + margin)
    lo = sample.kthvalue(lo_index).values if lo_index >= 1 else None
    hi = sample.kthvalue(hi_index).values if hi_index <= m else None
    in_band = torch.ones_like(values, dtype=torch.bool)
    below = 0
    if lo is not None:
        torch.ge(values, lo, out=in_band)
        below = n - int(torch.count_nonzero(in_band))
    if hi is not None:
        in_band &= values <= hi
    if not below < k <= below + int(torch.count_nonzero(in_band)):
        return values.kthvalue(k).values
    return values[in_band].kthvalue(k - below).values


def drop_and_rescale(x: torch.Tensor, drop: float, generator: torch.Generator | None) -> torch.Tensor:
    """x ⊙ m / (1 − p) with m ~ Bernoulli(1 − p) per entry (m = 1 where the uniform draw u ≥ p)."""
    if drop == 0.0:
        return x.clone()
    keep = torch.rand(x.shape, generator=generator, dtype=torch.float32) >= drop
    return x * keep * (1.0 / (1.0 - drop))


def elect_sign(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """γ = sign(Σᵢ τᵢ): +1, −1, or 0 where the total is exactly zero."""
    total = torch.zeros_like(tensors[0])
    for tensor in tensors:
        total.add_(tensor)
    return torch.sign(total)


def disjoint_mean(tensors: Sequence[torch.Tensor], sign: torch.Tensor) -> torch.Tensor:
    """Σᵢ τᵢ·[sign(τᵢ) = γ ≠ 0] / max(1, #{i : sign(τᵢ) = γ ≠ 0}), per entry."""
    total = torch.zeros_like(tensors[0])
    count = torch.zeros_like(tensors[0])
    for tensor in tensors:
        agree = (tensor * sign) > 0  # sign(τᵢ) = γ ≠ 0 (γ is ±1 or 0)
        total.add_(torch.where(agree, tensor, 0.0))
        count.add_(agree)
    return total / count.clamp(min=1.0)
