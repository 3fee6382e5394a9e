"""Linear algebra on updates kept in factored form ΔW = P·Q (P: out×R, Q: R×in).

Nothing here materialises an out×in matrix: norms come from Gram matrices of the factors (R×R,
or r×r blocks per operand for the parameter-space diagnostic), and the truncated SVD from square
roots of the two R×R Gram matrices followed by an SVD of the small R×R core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import CompositionError
from ..modules import LoraModule


def lowrank_frobenius_norm(P: torch.Tensor, Q: torch.Tensor) -> float:
    """‖P·Q‖_F = sqrt(tr((PᵀP)(QQᵀ))), computed from the two R×R Gram matrices."""
    gp = P.double().T @ P.double()
    gq = Q.double() @ Q.double().T
    return float(torch.sqrt(torch.clamp((gp * gq).sum(), min=0.0)))


def lowrank_relative_difference(P1: torch.Tensor, Q1: torch.Tensor, P2: torch.Tensor, Q2: torch.Tensor) -> float:
    """‖P1·Q1 − P2·Q2‖_F / ‖P2·Q2‖_F, from Gram matrices of [P1 | −P2] and [Q1; Q2].

    Returns 0 when both products are zero and ``inf`` when only the reference is zero.
    """
    # One pair of Gram matrices serves both norms: ‖P2·Q2‖² is the sum over their lower-right block.
    P = torch.cat([P1, -P2], dim=1).double()
    Q = torch.cat([Q1, Q2], dim=0).double()
    products = (P.T @ P) * (Q @ Q.T)
    r1 = P1.shape[1]
    diff = float(torch.sqrt(torch.clamp(products.sum(), min=0.0)))
    ref = float(torch.sqrt(torch.clamp(products[r1:, r1:].sum(), min=0.0)))
    if ref == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / ref


def _block_grams(blocks: Sequence[torch.Tensor], *, columns: bool) -> torch.Tensor:
    """G[i, k] = Xᵢᵀ·Xₖ (``columns``) or Xᵢ·Xₖᵀ, float32 products on the given blocks, returned as an
    (N, N, r, r) float64 tensor; only i ≤ k is multiplied, G[k, i] = G[i, k]ᵀ."""
    n = len(blocks)
    r = blocks[0].shape[1] if columns else blocks[0].shape[0]
    G = torch.empty(n, n, r, r, dtype=torch.float64)
    for i in range(n):
        for k in range(i, n):
            product = blocks[i].T @ blocks[k] if columns else blocks[i] @ blocks[k].T
            G[i, k] = product
            if k != i:
                G[k, i] = G[i, k].T
    return G


def _weighted_norm2(weights: torch.Tensor, gram_left: torch.Tensor, gram_right: torch.Tensor) -> float:
    """‖Σᵢ wᵢ·Uᵢ·Vᵢ‖²_F = Σᵢₖ wᵢwₖ·⟨UᵢᵀUₖ, VᵢVₖᵀ⟩_F from the block Grams of the Uᵢ and the Vᵢ."""
    inner = (gram_left * gram_right).sum(dim=(2, 3))
    return float(weights @ inner @ weights)


def param_vs_delta_deviation(terms: Sequence[tuple[float, LoraModule]], negate_factor: str = "B") -> float:
    """‖ΔW_param − ΔW_delta‖_F / ‖ΔW_delta‖_F of one LoRA module, from r×r block Gram matrices.

    With Xᵢ = sᵢ·Bᵢ, the parameter-space update is ΔW_param = (Σᵢ βᵢ·Xᵢ)(Σⱼ αⱼ·Aⱼ), with
    (α, β) = (|c|, c) when B carries the sign (``negate_factor="B"``) and (c, |c|) when A does, and
    the exact one is ΔW_delta = Σᵢ cᵢ·Xᵢ·Aᵢ. Their difference is D = Σᵢⱼ wᵢⱼ·Xᵢ·Aⱼ with
    wᵢⱼ = βᵢαⱼ − cᵢδᵢⱼ; the weights sum on the factor that carries |c| before any product is taken:

    * negate B: D = Σᵢ cᵢ·Xᵢ·Eᵢ with Eᵢ = Ā − Aᵢ, Ā = Σⱼ |cⱼ|·Aⱼ;
    * negate A: D = Σⱼ cⱼ·Fⱼ·Aⱼ with Fⱼ = X̄ − Xⱼ, X̄ = Σᵢ |cᵢ|·Xᵢ.

    Any Y = Σᵢ wᵢ·Uᵢ·Vᵢ has ‖Y‖²_F = Σᵢₖ wᵢwₖ·⟨UᵢᵀUₖ, VᵢVₖᵀ⟩_F, so ‖D‖² and ‖ΔW_delta‖² (wᵢ = cᵢsᵢ,
    Uᵢ = Bᵢ, Vᵢ = Aᵢ) are sums over the r×r blocks BᵢᵀBₖ, AᵢAₖᵀ and EᵢEₖᵀ (or FᵢᵀFₖ), multiplied
    in float32 for i ≤ k and combined in float64. Ā and Eᵢ (or X̄ and Fⱼ, factor-sized) are formed in
    float64 and rounded once to float32, so a small deviation keeps its accuracy: D is never the
    difference of two large norms. ‖ΔW_delta‖ is accurate to float32 rounding of the operands' own
    updates, which matters only when ΔW_delta nearly cancels.
    One term is the closed form ||c| − 1|. Returns 0 when both updates are zero and ``inf`` when only
    ΔW_delta is.
    """
    if negate_factor not in ("A", "B"):
        raise CompositionError(f"negate_factor must be 'A' or 'B', got {negate_factor!r}")
    if len({module.rank for _, module in terms}) > 1:
        raise CompositionError(f"module {terms[0][1].name}: the parameter-space diagnostic needs equal ranks")
    c = torch.tensor([coefficient for coefficient, _ in terms], dtype=torch.float64)
    s = torch.tensor([module.scaling for _, module in terms], dtype=torch.float64)
    Bs = [module.B.float() for _, module in terms]
    As = [module.A.float() for _, module in terms]
    gram_B = _block_grams(Bs, columns=True)
    gram_A = _block_grams(As, columns=False)
    reference = _weighted_norm2(c * s, gram_B, gram_A)
    if len(terms) == 1:  # D = c·(|c| − 1)·X·A against ΔW_delta = c·X·A, whichever factor carries the sign
        return abs(abs(float(c[0])) - 1.0) if reference > 0.0 else 0.0
    if negate_factor == "B":
        A_bar = torch.zeros(As[0].shape, dtype=torch.float64)
        for coefficient, A in zip(c.tolist(), As):
            A_bar.add_(A, alpha=abs(coefficient))
        E = [torch.sub(A_bar, A).float() for A in As]
        deviation = _weighted_norm2(c * s, gram_B, _block_grams(E, columns=False))
    else:
        X_bar = torch.zeros(Bs[0].shape, dtype=torch.float64)
        for coefficient, scaling, B in zip(c.tolist(), s.tolist(), Bs):
            X_bar.add_(B, alpha=abs(coefficient) * scaling)
        F = [torch.sub(X_bar, B, alpha=scaling).float() for scaling, B in zip(s.tolist(), Bs)]
        deviation = _weighted_norm2(c, _block_grams(F, columns=True), gram_A)
    diff = max(deviation, 0.0) ** 0.5
    ref = max(reference, 0.0) ** 0.5
    if ref == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / ref


def gram_root(G: torch.Tensor) -> torch.Tensor:
    """A factor R with RᵀR = G for a symmetric positive semi-definite G (float64, R×R).

    G is first scaled to unit diagonal, G = D·Ĝ·D with D = diag(√Gⱼⱼ) (zero columns keep Dⱼⱼ = 1), so
    the rounding errors stay relative to each column's own size. Then Cholesky Ĝ = L·Lᵀ gives R = Lᵀ·D;
    where it breaks down (Ĝ singular to working precision: duplicated or zero factors) the
    eigendecomposition Ĝ = V·Λ·Vᵀ gives R = Λ₊^{1/2}·Vᵀ·D, rounding-level negative eigenvalues set to 0.
    """
    d = torch.sqrt(torch.diagonal(G).clamp(min=0.0))
    d = torch.where(d > 0, d, torch.ones_like(d))
    unit = G / (d[:, None] * d[None, :])
    lower, info = torch.linalg.cholesky_ex(unit)
    if int(info) == 0:
        return lower.T * d[None, :]
    eigenvalues, vectors = torch.linalg.eigh(unit)
    return (torch.sqrt(eigenvalues.clamp(min=0.0))[:, None] * vectors.T) * d[None, :]


def _gram(X: torch.Tensor, *, block: int = 128) -> torch.Tensor:
    """XᵀX in X's dtype, computing only the block rows on and above the diagonal."""
    n = X.shape[1]
    G = torch.empty(n, n, dtype=X.dtype)
    for start in range(0, n, block):
        stop = min(start + block, n)
        G[start:stop, start:] = X[:, start:stop].T @ X[:, start:]
        G[stop:, start:stop] = G[start:stop, stop:].T
    return G


@dataclass(frozen=True)
class LowRankSVD:
    """The SVD of a factored ΔW = P·Q (P: out×R, Q: R×in), its singular vectors kept implicit.

    S (R, float64, descending) are the singular values; ``left`` and ``right`` (R×R, float64) map the
    factors to the singular vectors: U·diag(S) = P·left and diag(S)·Vᵀ = right·Q. Singular values at
    or below ``resolution`` are below the float32 rounding level of the factors and count as zero.
    """

    P: torch.Tensor
    Q: torch.Tensor
    S: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    resolution: float

    @property
    def energy(self) -> float:
        """‖ΔW‖_F² = Σ sⱼ²."""
        return float((self.S ** 2).sum())

    def rank_for_energy(self, share: float) -> int:
        """Smallest k whose leading singular values hold ``share`` of Σ sⱼ²."""
        s2 = self.S ** 2
        total = float(s2.sum())
        if total == 0.0:
            return 0
        cumulative = torch.cumsum(s2, dim=0) / total
        return int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype) - 1e-12).item()) + 1

    def relative_error(self, k: int) -> float:
        """‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = sqrt(Σ_{j>k} sⱼ² / Σ sⱼ²) (Eckart–Young)."""
        s2 = self.S ** 2
        total = float(s2.sum())
        return 0.0 if total == 0.0 else float(torch.sqrt(s2[k:].sum() / total))

    def factors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank-k factors (B, A), float32, with B·A = U_k·S_k·V_kᵀ, the singular values split as √S on each side.

        B = P·(left_k·S_k^{-1/2}) and A = (S_k^{-1/2}·right_k)·Q: only the k kept columns are formed.
        Singular values at or below ``resolution`` give zero columns of B and rows of A.
        """
        s = self.S[:k]
        resolved = s > self.resolution
        inverse_root = torch.where(resolved, torch.rsqrt(torch.where(resolved, s, torch.ones_like(s))), torch.zeros_like(s))
        B = self.P.float() @ (self.left[:, :k] * inverse_root[None, :]).float()
        A = (inverse_root[:, None] * self.right[:k]).float() @ self.Q.float()
        return B, A


def lowrank_svd(P: torch.Tensor, Q: torch.Tensor) -> LowRankSVD:
    """SVD of ΔW = P·Q (P: out×R, Q: R×in) from the two R×R Gram matrices, without forming ΔW.

    In float64: PᵀP = R_pᵀ·R_p and Q·Qᵀ = R_qᵀ·R_q (:func:`gram_root`), and the SVD of the R×R core
    M = R_p·R_qᵀ = U_m·S·V_mᵀ. S holds the singular values of ΔW: the nonzero eigenvalues of
    ΔW·ΔWᵀ = P·(QQᵀ)·Pᵀ are those of (PᵀP)(QQᵀ) = R_pᵀR_p·R_qᵀR_q, hence of R_pR_qᵀ·R_qR_pᵀ = M·Mᵀ.
    The singular vectors are U = P·R_qᵀ·V_m·S⁻¹ and Vᵀ = S⁻¹·U_mᵀ·R_p·Q (UᵀU = S⁻¹V_mᵀ·MᵀM·V_mS⁻¹ = I
    and ΔW·V = P·R_qᵀ·R_q·R_pᵀ·U_m·S⁻¹ = P·R_qᵀ·Mᵀ·U_m·S⁻¹ = U·S), so no root is ever inverted and
    rank-deficient factors need no eigenvalue cut-off; only singular values at or below the float32
    rounding level of the factors, ε₃₂·Σⱼ‖pⱼ‖·‖qⱼ‖ (columns pⱼ of P, rows qⱼ of Q), count as zero.
    Cost: two Gram GEMMs, (out + in)·R² multiply-adds (only the upper block rows), and O(R³).
    """
    P64 = P.double()
    Q64 = Q.double()
    gram_p = _gram(P64)
    gram_q = _gram(Q64.T)
    root_p = gram_root(gram_p)
    root_q = gram_root(gram_q)
    u, s, vh = torch.linalg.svd(root_p @ root_q.T, full_matrices=False)
    column_products = torch.sqrt(torch.diagonal(gram_p).clamp(min=0.0) * torch.diagonal(gram_q).clamp(min=0.0))
    resolution = torch.finfo(torch.float32).eps * float(column_products.sum())
    return LowRankSVD(P=P, Q=Q, S=s, left=root_q.T @ vh.T, right=u.T @ root_p, resolution=resolution)


def lowrank_inner(P1: torch.Tensor, Q1: torch.Tensor, P2: torch.Tensor, Q2: torch.Tensor) -> float:
    """⟨P1·Q1, P2·Q2⟩_F = tr(Q1ᵀP1ᵀP2Q2) = Σ (P1ᵀP2) ⊙ (Q1Q2ᵀ), from r₁×r₂ matrices."""
    return float(((P1.double().T @ P2.double()) * (Q1.double() @ Q2.double().T)).sum())
