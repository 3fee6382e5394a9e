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
    threshold = magnitude.reshape(-1).kthvalue(n - keep + 1).values
    return x * (magnitude >= threshold)


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
