"""Merge methods beyond the plain sum, as a small registry (one module per method).

=================  =====================================================================
``linear``         Σ cᵢ·ΔWᵢ — the core algebra (param or delta space); the default
``ties``           trim to top-k% by magnitude, elect a sign per entry, disjoint mean
``dare``           drop with probability p, rescale by 1/(1−p), then add (or TIES)
``dare_ties``      ``dare`` with the TIES combination
``magnitude_prune``  trim each update to top-k% by magnitude, then add
``ext_sub``        expert − λ·(the anti-expert's part orthogonal to what it shares)
=================  =====================================================================

Every method works on dense per-module updates (LoRA: ΔW = s·B·A; (IA)^3: l − 1) and states its
formula in its docstring; ``compose(..., method=NAME)`` streams it module by module and re-emits
LoRA factors by truncated SVD. See docs/methods.md.
"""

from . import dare, ext_sub, linear, magnitude_prune, ties  # noqa: F401  (registers the methods)
from .registry import (
    DenseTerm,
    MergeMethod,
    MethodOption,
    available_methods,
    get_method,
    module_generator,
    module_seed,
    register_method,
)

__all__ = [
    "DenseTerm",
    "MergeMethod",
    "MethodOption",
    "available_methods",
    "get_method",
    "module_generator",
    "module_seed",
    "register_method",
]
