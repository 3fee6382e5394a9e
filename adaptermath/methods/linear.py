"""``linear``: the plain weighted sum — the algebra of the core (task arithmetic, Ilharco et al. 2023)."""

from __future__ import annotations

from typing import Sequence

import torch

from .registry import DenseTerm, register_method


@register_method("linear", summary="Σ cᵢ·ΔWᵢ, exact (LoRA kept exact by rank concatenation); the default", exact_linear=True)
def linear(terms: Sequence[DenseTerm], *, generator: torch.Generator | None = None) -> torch.Tensor:
    """ΔW = Σᵢ cᵢ·ΔWᵢ.

    ``compose`` never calls this on LoRA: it evaluates ``linear`` in the existing algebra (the
    paper's parameter-space operators, or exact delta-space rank concatenation). The dense form is
    here for (IA)^3-style vectors, for tests and for callers of the registry.
    """
    out = torch.zeros_like(terms[0][1], dtype=torch.float32)
    for c, x in terms:
        out.add_(x.float(), alpha=c)
    return out
