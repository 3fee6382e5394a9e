"""LoKr (LyCORIS Kronecker product) modules, re-emitted exactly as LoRA factors.

PEFT's LoKr stores, per target module, two Kronecker factors, each either full or low-rank:

    W₁ = ``lokr_w1``  (a × c)   or  ``lokr_w1_a``·``lokr_w1_b``  ((a × r)·(r × c))
    W₂ = ``lokr_w2``  (b × d)   or  ``lokr_w2_a``·``lokr_w2_b``  ((b × r)·(r × d))

and applies ΔW = s · W₁ ⊗ W₂ with s = α / r (out = a·b, in = c·d). For a convolution, a full
W₂ is (b × d × kh × kw) and a factored one has ``lokr_w2_b`` (r × d·kh·kw); in both cases the
flattened update (out × in·kh·kw) is s · W₁ ⊗ W₂' with W₂' = W₂ flattened to (b × d·kh·kw).

Re-emission uses the mixed-product property (U₁V₁) ⊗ (U₂V₂) = (U₁ ⊗ U₂)(V₁ ⊗ V₂): with
W₁ = U₁V₁ of inner size p and W₂ = U₂V₂ of inner size q,

    B = U₁ ⊗ U₂   (out × p·q),     A = V₁ ⊗ V₂   (p·q × in),     ΔW = s·B·A exactly.

A low-rank factor brings its own U, V; a full factor W (m × n) is factorised exactly as
I·W (p = m) or W·I (p = n), whichever is smaller — no SVD, so nothing is rounded away.
The Tucker form (``lokr_t2``) and Conv1d factors are not handled.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import UnsupportedAdapterError

LOKR_TENSORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
LOKR_TUCKER = ("lokr_t2",)


def exact_factors(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) with U·V = W exactly: (I, W) when W has fewer rows than columns, else (W, I)."""
    W = W.float()
    rows, cols = W.shape
    if rows <= cols:
        return torch.eye(rows, dtype=torch.float32), W
    return W, torch.eye(cols, dtype=torch.float32)


def kronecker_factor(full: torch.Tensor | None, left: torch.Tensor | None, right: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) for one Kronecker factor, given either its full matrix or its two low-rank factors."""
    if full is not None:
        return exact_factors(full.reshape(full.shape[0], -1))
    assert left is not None and right is not None
    return left.float(), right.float()


def lokr_to_lora(factors: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors (A, B), float32, with B·A = W₁ ⊗ W₂ (flattened) exactly.

    ``factors`` maps PEFT tensor names (``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``, ``lokr_w2`` or
    ``lokr_w2_a``/``lokr_w2_b``) to tensors. B = U₁ ⊗ U₂, A = V₁ ⊗ V₂; the scaling is unchanged.
    """
    U1, V1 = kronecker_factor(factors.get("lokr_w1"), factors.get("lokr_w1_a"), factors.get("lokr_w1_b"))
    U2, V2 = kronecker_factor(factors.get("lokr_w2"), factors.get("lokr_w2_a"), factors.get("lokr_w2_b"))
    return torch.kron(V1, V2).contiguous(), torch.kron(U1, U2).contiguous()


def lokr_delta(factors: Mapping[str, torch.Tensor], scaling: float) -> torch.Tensor:
    """The dense flattened update s·W₁ ⊗ W₂', float32 (for checks; the algebra never forms it)."""
    w1 = factors["lokr_w1"].float() if "lokr_w1" in factors else factors["lokr_w1_a"].float() @ factors["lokr_w1_b"].float()
    w2 = factors["lokr_w2"].float() if "lokr_w2" in factors else factors["lokr_w2_a"].float() @ factors["lokr_w2_b"].float()
    return scaling * torch.kron(w1, w2.reshape(w2.shape[0], -1))


def lokr_layout(name: str, shapes: Mapping[str, tuple[int, ...]], source: str) -> tuple[int, int, int, tuple[int, ...]]:
    """(out, in·kh·kw, output rank p·q, kernel) of a LoKr module from its tensor shapes.

    ``kernel`` is (kh, kw) when a full 4-D ``lokr_w2`` reveals it, else (). One-line errors for
    missing, unchained or unsupported factors.
    """
    def pick(full: str, left: str, right: str) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None, tuple[int, ...] | None]:
        if full in shapes:
            if left in shapes or right in shapes:
                raise UnsupportedAdapterError(f"{source}: LoKr module {name} has both {full} and {left}/{right}")
            return shapes[full], None, None
        if left not in shapes or right not in shapes:
            missing = left if left not in shapes else right
            raise UnsupportedAdapterError(f"{source}: LoKr module {name} has neither {full} nor {missing}")
        return None, shapes[left], shapes[right]

    w1, w1a, w1b = pick("lokr_w1", "lokr_w1_a", "lokr_w1_b")
    w2, w2a, w2b = pick("lokr_w2", "lokr_w2_a", "lokr_w2_b")
    for shape in (w1, w1a, w1b, w2a, w2b):
        if shape is not None and len(shape) != 2:
            raise UnsupportedAdapterError(f"{source}: LoKr module {name} has a factor of shape {list(shape)}; expected a matrix")
    kernel: tuple[int, ...] = ()
    if w2 is not None:
        if len(w2) == 3:
            raise UnsupportedAdapterError(f"{source}: LoKr module {name} is on a Conv1d layer (lokr_w2 {list(w2)}), which is not supported")
        if len(w2) not in (2, 4):
            raise UnsupportedAdapterError(f"{source}: LoKr module {name} has lokr_w2 of shape {list(w2)}")
        kernel = tuple(w2[2:])
    if w1 is not None:
        a, c = w1
        p = min(a, c)
    else:
        assert w1a is not None and w1b is not None
        if w1a[1] != w1b[0]:
            raise UnsupportedAdapterError(f"{source}: LoKr module {name}: lokr_w1_a {list(w1a)} and lokr_w1_b {list(w1b)} do not chain")
        a, c, p = w1a[0], w1b[1], w1a[1]
    if w2 is not None:
        b, d_flat = w2[0], int(torch.tensor(w2[1:]).prod())
        q = min(b, d_flat)
    else:
        assert w2a is not None and w2b is not None
        if w2a[1] != w2b[0]:
            raise UnsupportedAdapterError(f"{source}: LoKr module {name}: lokr_w2_a {list(w2a)} and lokr_w2_b {list(w2b)} do not chain")
        b, d_flat, q = w2a[0], w2b[1], w2a[1]
    return a * b, c * d_flat, p * q, kernel
