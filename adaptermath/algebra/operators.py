"""The linear operators on one target module, as pure functions of (coefficient, module) terms.

Parameter space (the paper's operators on raw factors, Zhang et al. 2023):

* LoRA, negating B (default):  A = Σ |cᵢ|·Aᵢ,   B = Σ cᵢ·(sᵢ/s)·Bᵢ
* LoRA, negating A:            A = Σ cᵢ·Aᵢ,     B = Σ |cᵢ|·(sᵢ/s)·Bᵢ

  with s the output scaling (the first operand's); sᵢ/s = 1 when the operands share α and r.
  So ⊖{A, B} = {A, −B} (or {−A, B}), the analogy c0·cls + c1·(tgt − src) gives
  A = c0·A_cls + c1·A_tgt + c1·A_src, B = c0·B_cls + c1·B_tgt − c1·B_src, and the Alpaca detox
  (1+λ)·a − λ·t with A negated gives A = (1+λ)A_a − λA_t, B = (1+λ)B_a + λB_t.

* (IA)^3:  l = 1 + Σ cᵢ·(lᵢ − 1)  (so ⊖l = 2 − l and λ-scaled negation is (1+λ) − λ·l).

Delta space (exact arithmetic on the updates): ΔW = Σ cᵢ·sᵢ·Bᵢ·Aᵢ, held without loss as the
rank-concatenated factors B = [c₁s₁B₁ | c₂s₂B₂ | …], A = [A₁; A₂; …] with scaling 1. For (IA)^3
the parameter-space operator is already exact in ΔW (ΔW is linear in l − 1), so both spaces agree.

Heads (``modules_to_save`` tensors): W = Σ cᵢ·Wᵢ / Σ|cⱼ| over the operands that have the tensor.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import CompositionError
from ..modules import Ia3Module, LoraModule

LoraTerm = tuple[float, LoraModule]
Ia3Term = tuple[float, Ia3Module]


def param_space_lora(terms: Sequence[LoraTerm], *, scaling: float, negate_factor: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
    """Combine LoRA factors in parameter space; returns (A, B) in float32 for output scaling ``scaling``.

    A = Σ |cᵢ|·Aᵢ and B = Σ cᵢ·(sᵢ/s)·Bᵢ (``negate_factor="B"``), or
    A = Σ cᵢ·Aᵢ and B = Σ |cᵢ|·(sᵢ/s)·Bᵢ (``negate_factor="A"``). All ranks must be equal.
    """
    if negate_factor not in ("A", "B"):
        raise CompositionError(f"negate_factor must be 'A' or 'B', got {negate_factor!r}")
    ranks = {m.rank for _, m in terms}
    if len(ranks) > 1:
        names = ", ".join(f"rank {m.rank}" for _, m in terms)
        raise CompositionError(
            f"module {terms[0][1].name}: parameter-space LoRA arithmetic needs equal ranks, got {names}; use --space delta"
        )
    first = terms[0][1]
    A = torch.zeros(first.A.shape, dtype=torch.float32)
    B = torch.zeros(first.B.shape, dtype=torch.float32)
    for c, module in terms:
        a_coef = abs(c) if negate_factor == "B" else c
        b_coef = c if negate_factor == "B" else abs(c)
        A.add_(module.A.float(), alpha=a_coef)
        B.add_(module.B.float(), alpha=b_coef * module.scaling / scaling)
    return A, B


def delta_space_lora(terms: Sequence[LoraTerm]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ΔW = Σ cᵢ·sᵢ·Bᵢ·Aᵢ as rank-concatenated factors (A, B) with scaling 1 (float32).

    B = [c₁s₁B₁ | … | cₙsₙBₙ] (out × Σrᵢ), A = [A₁; …; Aₙ] (Σrᵢ × in); B·A = Σ cᵢsᵢBᵢAᵢ.
    """
    A = torch.cat([m.A.float() for _, m in terms], dim=0)
    B = torch.empty(terms[0][1].B.shape[0], A.shape[0], dtype=torch.float32)
    start = 0
    for c, m in terms:  # each block scaled straight into place (one pass, no temporary)
        torch.mul(m.B.float(), c * m.scaling, out=B[:, start:start + m.rank])
        start += m.rank
    return A, B


def ia3_combine(terms: Sequence[Ia3Term]) -> torch.Tensor:
    """l = 1 + Σ cᵢ·(lᵢ − 1), in float32."""
    out = torch.ones(terms[0][1].l.shape, dtype=torch.float32)
    for c, module in terms:
        out.add_(module.deviation(), alpha=c)
    return out


def combine_heads(terms: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """W = Σ cᵢ·Wᵢ / Σ|cⱼ| (float32); with all cᵢ = 0 the plain mean."""
    total = sum(abs(c) for c, _ in terms)
    weights = [c / total for c, _ in terms] if total > 0 else [1.0 / len(terms)] * len(terms)
    out = torch.zeros(terms[0][1].shape, dtype=torch.float32)
    for w, tensor in zip(weights, (t for _, t in terms)):
        out.add_(tensor.float(), alpha=w)
    return out
