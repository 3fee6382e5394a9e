"""LoHa (LyCORIS low-rank Hadamard product) modules, re-emitted exactly as LoRA factors.

PEFT's LoHa stores, per target module, four factors and applies

    ΔW = s · (W1a·W1b) ⊙ (W2a·W2b),     s = α / r,

with ``hada_w1_a`` W1a (out × r₁), ``hada_w1_b`` W1b (r₁ × in), ``hada_w2_a`` W2a (out × r₂) and
``hada_w2_b`` W2b (r₂ × in) (convolutions without the Tucker core are flattened to in·kh·kw).

The Hadamard product of two low-rank matrices is low-rank: writing both products as sums of
outer products, (W1a·W1b) ⊙ (W2a·W2b) = Σⱼ Σₖ (W1a[:,j] ⊙ W2a[:,k]) (W1b[j,:] ⊙ W2b[k,:]),
so ΔW = s·B·A with

    B = W1a •ᵣ W2a        (out × r₁r₂)   — the row-wise Khatri–Rao (face-splitting) product
    A = (W1bᵀ •ᵣ W2bᵀ)ᵀ  (r₁r₂ × in)

where (X •ᵣ Y)[i, :] = X[i, :] ⊗ Y[i, :]. This is exact (no approximation), at rank r₁·r₂.
The Tucker form (``hada_t1``/``hada_t2``, PEFT's ``use_effective_conv2d``) is not handled.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedAdapterError

LOHA_FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LOHA_TUCKER = ("hada_t1", "hada_t2")


def face_splitting_product(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Row-wise Khatri–Rao product: (m × p) •ᵣ (m × q) → (m × p·q), row i = X[i] ⊗ Y[i]."""
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"face-splitting product needs two matrices with equal row counts, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return (X[:, :, None] * Y[:, None, :]).reshape(X.shape[0], X.shape[1] * Y.shape[1])


def loha_to_lora(w1_a: torch.Tensor, w1_b: torch.Tensor, w2_a: torch.Tensor, w2_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors (A, B), float32, with B·A = (w1_a·w1_b) ⊙ (w2_a·w2_b) exactly (rank r₁·r₂).

    B = w1_a •ᵣ w2_a and A = (w1_bᵀ •ᵣ w2_bᵀ)ᵀ; the scaling s is unchanged.
    """
    w1_a, w1_b, w2_a, w2_b = (t.float() for t in (w1_a, w1_b, w2_a, w2_b))
    if w1_a.shape[1] != w1_b.shape[0] or w2_a.shape[1] != w2_b.shape[0]:
        raise ValueError("LoHa factors do not chain")
    B = face_splitting_product(w1_a, w2_a)
    A = face_splitting_product(w1_b.T, w2_b.T).T.contiguous()
    return A, B


def loha_delta(w1_a: torch.Tensor, w1_b: torch.Tensor, w2_a: torch.Tensor, w2_b: torch.Tensor, scaling: float) -> torch.Tensor:
    """The dense update s·(w1_a·w1_b) ⊙ (w2_a·w2_b), float32 (for checks; the algebra never forms it)."""
    return scaling * ((w1_a.float() @ w1_b.float()) * (w2_a.float() @ w2_b.float()))


def check_loha_shapes(name: str, shapes: dict[str, tuple[int, ...]], source: str) -> tuple[int, int, int, int]:
    """(out, in, r₁, r₂) of a LoHa module from its factor shapes; one-line error if they do not chain."""
    missing = [f for f in LOHA_FACTORS if f not in shapes]
    if missing:
        raise UnsupportedAdapterError(f"{source}: LoHa module {name} has no {missing[0]} tensor")
    w1a, w1b, w2a, w2b = (shapes[f] for f in LOHA_FACTORS)
    if any(len(s) != 2 for s in (w1a, w1b, w2a, w2b)):
        raise UnsupportedAdapterError(f"{source}: LoHa module {name} has factors that are not matrices (shapes {[list(s) for s in (w1a, w1b, w2a, w2b)]})")
    out, r1 = w1a
    r1b, in_features = w1b
    out2, r2 = w2a
    r2b, in2 = w2b
    if r1 != r1b or r2 != r2b or out != out2 or in_features != in2:
        raise UnsupportedAdapterError(
            f"{source}: LoHa module {name} has factors of shapes {list(w1a)}, {list(w1b)}, {list(w2a)}, {list(w2b)} that do not chain"
        )
    return out, in_features, r1, r2
