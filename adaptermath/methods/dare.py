"""``dare`` and ``dare_ties``: DARE — drop and rescale (Yu et al. 2024, "Language Models are Super Mario")."""

from __future__ import annotations

from typing import Sequence

import torch

from .options import DARE_COMBINE, DROP, SEED
from .registry import DenseTerm, register_method
from .sparsify import disjoint_mean, drop_and_rescale, elect_sign


def _dropped(terms: Sequence[DenseTerm], drop: float, generator: torch.Generator | None) -> list[torch.Tensor]:
    # Masks are drawn in term order from the module's generator, so a fixed seed fixes every mask.
    return [c * drop_and_rescale(x.float(), drop, generator) for c, x in terms]


@register_method("dare", options=(DROP, SEED, DARE_COMBINE), uses_generator=True,
                 summary="drop entries with probability p, rescale by 1/(1−p), then add (or TIES with combine=ties)")
def dare(terms: Sequence[DenseTerm], *, drop: float, seed: int, combine: str,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE on each update, then a linear or TIES combination:

    τ̃ᵢ = cᵢ·(ΔWᵢ ⊙ Mᵢ)/(1 − p), Mᵢ ~ Bernoulli(1 − p) entrywise, p = ``drop``;
    ``combine=linear``: ΔW = Σᵢ τ̃ᵢ;  ``combine=ties``: γ = sign(Σᵢ τ̃ᵢ), ΔW = disjoint mean of the
    τ̃ᵢ that agree with γ (as in ``ties``, without the magnitude trim — DARE already sparsified).

    E[τ̃ᵢ] = cᵢ·ΔWᵢ. The masks come from ``generator``; compose seeds it per module from
    sha256(``seed``, module name), so a seed gives the same result on every run, whatever the
    order the modules are visited in.
    """
    dropped = _dropped(terms, drop, generator)
    if combine == "ties":
        return disjoint_mean(dropped, elect_sign(dropped))
    out = dropped[0]
    for tensor in dropped[1:]:
        out.add_(tensor)
    return out


@register_method("dare_ties", options=(DROP, SEED), uses_generator=True,
                 summary="DARE, then TIES sign election and disjoint mean (dare with combine=ties)")
def dare_ties(terms: Sequence[DenseTerm], *, drop: float, seed: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``dare`` with ``combine=ties``: τ̃ᵢ = cᵢ·(ΔWᵢ ⊙ Mᵢ)/(1 − p), γ = sign(Σᵢ τ̃ᵢ),
    ΔW = Σᵢ τ̃ᵢ·[sign(τ̃ᵢ) = γ] / #{i : sign(τ̃ᵢ) = γ}.
    """
    dropped = _dropped(terms, drop, generator)
    return disjoint_mean(dropped, elect_sign(dropped))
