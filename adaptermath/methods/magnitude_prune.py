"""``magnitude_prune``: trim each update to its largest entries, then add (PEFT's ``magnitude_prune``)."""

from __future__ import annotations

from typing import Sequence

import torch

from .options import DENSITY
from .registry import DenseTerm, register_method
from .sparsify import trim_by_magnitude


@register_method("magnitude_prune", options=(DENSITY,), summary="Σ cᵢ·trim_k(ΔWᵢ): keep each update's top-k% entries by magnitude, then add")
def magnitude_prune(terms: Sequence[DenseTerm], *, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """ΔW = Σᵢ cᵢ·trim_k(ΔWᵢ), where trim_k keeps the ⌈k·n⌉ entries of largest |ΔWᵢ| (n entries per
    module) and zeroes the rest; k = ``density``.
    """
    out = torch.zeros_like(terms[0][1], dtype=torch.float32)
    for c, x in terms:
        out.add_(trim_by_magnitude(x.float(), density), alpha=c)
    return out
