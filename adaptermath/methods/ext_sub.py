"""``ext_sub``: Extraction-before-Subtraction (Hu et al. 2024, "Separate the Wheat from the Chaff:
Model Deficiency Unlearning via Parameter-Efficient Module Operation", AAAI 2024).

An anti-expert (a module trained on toxic or untruthful data) holds the deficiency *and* general
skills (fluency, reasoning) it shares with the expert. Plain negation, expert − λ·anti, removes
both. Ext-Sub first extracts the deficiency — the part of the anti-expert orthogonal to the
direction the two modules share — and subtracts only that.

Adapted to ΔW as the authors' code does for LoRA (which multiplies B·A out to ΔW first): per
output row j (a vector over the input features), with e = E_j/‖E_j‖ and a = N_j/‖N_j‖,

    u_j = (e + a)/‖e + a‖            the common direction ("common", default)
    u_j = e                          the expert's own direction ("expert", the variant that
                                     removes only what is orthogonal to the expert)
    Ext(N)_j = N_j − (N_j·u_j)·u_j   the deficiency: the anti-expert minus its shared part

For (IA)^3 the whole deviation vector l − 1 is one row.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import CompositionError
from .options import EXT_SUB_DIRECTION
from .registry import DenseTerm, register_method


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row (last dimension) divided by its norm; zero rows stay zero."""
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def extract_deficiency(anti: torch.Tensor, expert: torch.Tensor, direction: str = "common") -> torch.Tensor:
    """Ext(N) = N − (N·u)u per row, u the common (or the expert's) unit direction of the row."""
    e = _unit_rows(expert)
    u = _unit_rows(e + _unit_rows(anti)) if direction == "common" else e
    shared = (anti * u).sum(dim=-1, keepdim=True) * u
    return anti - shared


def check_expert_and_anti_expert(coefficients: Sequence[float]) -> None:
    """ext_sub needs at least one positive (expert) and one negative (anti-expert) coefficient."""
    if not any(c > 0 for c in coefficients) or not any(c < 0 for c in coefficients):
        raise CompositionError(
            "method ext_sub needs an expert (positive coefficient) and an anti-expert (negative coefficient), "
            "e.g. 'expert - 0.5*anti'"
        )


@register_method("ext_sub", options=(EXT_SUB_DIRECTION,), check=check_expert_and_anti_expert,
                 summary="expert − λ·(anti-expert minus the part it shares with the expert): detoxify, keep skills")
def ext_sub(terms: Sequence[DenseTerm], *, direction: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Expression ``expert - λ*anti``: operands with a positive coefficient are experts, those with a
    negative coefficient anti-experts. With E = Σ_{cᵢ>0} cᵢ·ΔWᵢ (the combined expert)

        ΔW = E + Σ_{cᵢ<0} cᵢ·Ext(ΔWᵢ; E),   Ext(N; E)_j = N_j − (N_j·u_j)·u_j per row j,

    u_j = normalise(E_j/‖E_j‖ + N_j/‖N_j‖) (``direction=common``, as in the authors' code) or
    u_j = E_j/‖E_j‖ (``direction=expert``). For one expert and one anti-expert with coefficients
    1 and −λ this is the paper's θ⁺ − λ·Ext(θ⁻). Operands with coefficient 0 are ignored.
    """
    check_expert_and_anti_expert([c for c, _ in terms])
    experts = [(c, x.float()) for c, x in terms if c > 0]
    antis = [(c, x.float()) for c, x in terms if c < 0]
    expert = torch.zeros_like(experts[0][1])
    for c, x in experts:
        expert.add_(x, alpha=c)
    out = expert.clone()
    for c, x in antis:
        out.add_(extract_deficiency(x, expert, direction), alpha=c)
    return out
