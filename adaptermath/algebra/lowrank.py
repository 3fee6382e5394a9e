"""Linear algebra on updates kept in factored form ΔW = P·Q (P: out×R, Q: R×in).

Nothing here materialises an out×in matrix: norms come from the R×R Gram matrices and the
truncated SVD from a QR of each factor followed by an SVD of the small R×R core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


@dataclass(frozen=True)
class LowRankSVD:
    """ΔW = U·diag(S)·Vᵀ for a factored ΔW = P·Q; U: out×R, S: R, Vh: R×in (descending S)."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @property
    def energy(self) -> float:
        """‖ΔW‖_F² = Σ sⱼ²."""
        return float((self.S.double() ** 2).sum())

    def rank_for_energy(self, share: float) -> int:
        """Smallest k whose leading singular values hold ``share`` of Σ sⱼ²."""
        s2 = self.S.double() ** 2
        total = float(s2.sum())
        if total == 0.0:
            return 0
        cumulative = torch.cumsum(s2, dim=0) / total
        return int(torch.searchsorted(cumulative, torch.tensor(share, dtype=cumulative.dtype) - 1e-12).item()) + 1

    def relative_error(self, k: int) -> float:
        """‖ΔW − ΔW_k‖_F / ‖ΔW‖_F = sqrt(Σ_{j>k} sⱼ² / Σ sⱼ²) (Eckart–Young)."""
        s2 = self.S.double() ** 2
        total = float(s2.sum())
        return 0.0 if total == 0.0 else float(torch.sqrt(s2[k:].sum() / total))

    def factors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank-k factors (B, A) with B·A = U_k·S_k·V_kᵀ, the singular values split as √S on each side."""
        root = torch.sqrt(self.S[:k])
        return self.U[:, :k] * root[None, :], root[:, None] * self.Vh[:k]


def lowrank_svd(P: torch.Tensor, Q: torch.Tensor) -> LowRankSVD:
    """SVD of ΔW = P·Q without forming it.

    P = Q_p·R_p and Qᵀ = Q_q·R_q (reduced QR), so ΔW = Q_p·(R_p·R_qᵀ)·Q_qᵀ; the SVD of the R×R
    core M = U_m·S·V_mᵀ gives ΔW = (Q_p·U_m)·S·(Q_q·V_m)ᵀ. Cost O((out+in)·R² + R³).
    """
    P = P.float()
    Q = Q.float()
    qp, rp = torch.linalg.qr(P, mode="reduced")
    qq, rq = torch.linalg.qr(Q.T, mode="reduced")
    core = rp.double() @ rq.double().T
    um, s, vmh = torch.linalg.svd(core, full_matrices=False)
    U = qp @ um.float()
    Vh = vmh.float() @ qq.T
    return LowRankSVD(U=U, S=s.float(), Vh=Vh)


def lowrank_inner(P1: torch.Tensor, Q1: torch.Tensor, P2: torch.Tensor, Q2: torch.Tensor) -> float:
    """⟨P1·Q1, P2·Q2⟩_F = tr(Q1ᵀP1ᵀP2Q2) = Σ (P1ᵀP2) ⊙ (Q1Q2ᵀ), from r₁×r₂ matrices."""
    return float(((P1.double().T @ P2.double()) * (Q1.double() @ Q2.double().T)).sum())
