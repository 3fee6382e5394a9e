"""``ties``: TIES-merging (Yadav et al. 2023, "Resolving Interference When Merging Models")."""

from __future__ import annotations

from typing import Sequence

import torch

from .options import DENSITY
from .registry import DenseTerm, register_method
from .sparsify import disjoint_mean, elect_sign, trim_by_magnitude


@register_method("ties", options=(DENSITY,), summary="trim to top-k% by magnitude, elect a sign per entry by total mass, disjoint mean")
def ties(terms: Sequence[DenseTerm], *, density: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """TIES on the weighted updates τᵢ = cᵢ·ΔWᵢ:

    1. trim:  τ̂ᵢ = trim_k(τᵢ) — keep the ⌈k·n⌉ entries of largest |τᵢ| per module, k = ``density``;
    2. elect: γ = sign(Σᵢ τ̂ᵢ) per entry (the sign with the larger total mass);
    3. disjoint mean: ΔW = Σᵢ τ̂ᵢ·[sign(τ̂ᵢ) = γ] / #{i : sign(τ̂ᵢ) = γ}  (0 where no τ̂ᵢ agrees).

    A negative coefficient flips its update before the vote; the expression's overall scale is
    the paper's λ (``λ*(a + b)`` merges a and b with scaling λ).
    """
    trimmed = [trim_by_magnitude(c * x.float(), density) for c, x in terms]
    return disjoint_mean(trimmed, elect_sign(trimmed))
