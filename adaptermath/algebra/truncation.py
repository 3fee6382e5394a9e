"""Choosing an output rank, and re-emitting a dense update as LoRA factors by truncated SVD.

Rank policy (the same for the exact factored path and the dense path):

* ``rank=K``      keep K singular values;
* ``energy=e``    keep the smallest k whose leading singular values hold a share e of
                  ‖ΔW‖_F² = Σⱼ sⱼ² (so ‖ΔW − ΔW_k‖_F/‖ΔW‖_F ≤ √(1 − e));
* otherwise       a default (compose uses Σᵢ rᵢ, the rank exact concatenation would need);
* ``max_rank=M``  caps the result (for serving engines with a rank limit); always k ≥ 1.

Dense updates (what TIES, DARE, ... return) are factored by a seeded randomized SVD (Halko,
Martinsson & Tropp 2011): Y = (D·Dᵀ)^q·D·Ω with Ω a Gaussian n×(k+p) matrix, Q = orth(Y),
then the SVD of the small (k+p)×n matrix Qᵀ·D. Its rank-k truncation is U_k·S_k·V_kᵀ = U_k·U_kᵀ·D,
a projection of D, so the emitted factors hold exactly Σ_{j≤k} s̃ⱼ² of the energy; the reported
relative error is measured directly, ‖D − B·A‖_F/‖D‖_F. When k+p approaches min(out, in) a full
``torch.linalg.svd`` is cheaper and is used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import CompositionError
from .lowrank import lowrank_svd

OVERSAMPLE = 10
POWER_ITERATIONS = 2
FULL_SVD_SHARE = 1 / 3  # use a full SVD once the sketch would hold this share of min(out, in) columns


@dataclass(frozen=True)
class RankPolicy:
    """How many singular values to keep: a fixed ``rank``, an ``energy`` share, a ``max_rank`` cap."""

    rank: int | None = None
    energy: float | None = None
    max_rank: int | None = None

    def validate(self) -> None:
        if self.rank is not None and self.rank < 1:
            raise CompositionError(f"--rank must be a positive integer, got {self.rank}")
        if self.max_rank is not None and self.max_rank < 1:
            raise CompositionError(f"--max-rank must be a positive integer, got {self.max_rank}")
        if self.energy is not None:
            if not 0.0 < self.energy <= 1.0:
                raise CompositionError(f"--energy must lie in (0, 1], got {self.energy:g}")
            if self.rank is not None:
                raise CompositionError("give --rank or --energy, not both")

    @property
    def data_dependent(self) -> bool:
        """True when the kept rank is known only after the singular values are computed."""
        return self.energy is not None

    def cap(self, k: int, limit: int) -> int:
        """min(k, limit, max_rank), at least 1."""
        k = min(k, limit)
        if self.max_rank is not None:
            k = min(k, self.max_rank)
        return max(1, k)

    def planned(self, default: int, limit: int) -> int:
        """The rank when it does not depend on the data (``rank`` or ``default``, capped)."""
        return self.cap(self.rank if self.rank is not None else default, limit)

    def for_spectrum(self, singular_values: torch.Tensor, total_energy: float, default: int, limit: int) -> int | None:
        """The rank for these leading singular values of a matrix with ‖·‖_F² = ``total_energy``.

        With ``energy``, None when the given values hold less than the asked share (more are needed)
        and the ``max_rank`` cap is not reached either.
        """
        if self.energy is None:
            return self.planned(default, limit)
        if total_energy <= 0.0:
            return 1
        cumulative = torch.cumsum(singular_values.double() ** 2, dim=0)
        reached = torch.nonzero(cumulative >= self.energy * total_energy * (1 - 1e-9))
        if len(reached):
            return self.cap(int(reached[0].item()) + 1, limit)
        if self.max_rank is not None and len(singular_values) >= self.max_rank:
            return self.cap(self.max_rank, limit)
        if len(singular_values) >= limit:
            return self.cap(limit, limit)
        return None


@dataclass(frozen=True)
class DenseFactors:
    """LoRA factors of a dense update: D ≈ B·A with B (out×k), A (k×in), and the exact relative error."""

    B: torch.Tensor
    A: torch.Tensor
    relative_error: float

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


def factored_to_lora(B: torch.Tensor, A: torch.Tensor, policy: RankPolicy, *, default_rank: int, limit: int) -> DenseFactors:
    """Compress an update held as factors, ΔW = B·A (out×R, R×in), to the rank ``policy`` chooses.

    Exact (Eckart–Young), never dense, by :func:`~adaptermath.algebra.lowrank.lowrank_svd`: in float64,
    BᵀB = R_bᵀR_b and AAᵀ = R_aᵀR_a (Cholesky, or an eigendecomposition when rank-deficient), the SVD
    of the R×R core R_b·R_aᵀ = U·S·Vᵀ holds the singular values of ΔW, and only the k kept columns
    are formed: B_k = B·(R_aᵀ·V_k·S_k^{-1/2}), A_k = (S_k^{-1/2}·U_kᵀ·R_b)·A, so B_k·A_k = U_k·S_k·V_kᵀ
    of ΔW. The relative error is √(Σ_{j>k} sⱼ² / Σⱼ sⱼ²).
    """
    svd = lowrank_svd(B, A)
    s = svd.S
    total = svd.energy
    k = min(policy.for_spectrum(s, total, default_rank, limit) or limit, len(s))
    B_k, A_k = svd.factors(k)
    return DenseFactors(B=B_k.contiguous(), A=A_k.contiguous(), relative_error=svd.relative_error(k))


def _randomized_svd(D: torch.Tensor, columns: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading ``columns`` singular triplets of D from a seeded Gaussian sketch with power iterations."""
    omega = torch.randn(D.shape[1], columns, generator=generator, dtype=D.dtype)
    Y = D @ omega
    for _ in range(POWER_ITERATIONS):
        Q, _ = torch.linalg.qr(Y)
        Z, _ = torch.linalg.qr(D.T @ Q)
        Y = D @ Z
    Q, _ = torch.linalg.qr(Y)
    small = Q.T @ D
    U_small, S, Vh = torch.linalg.svd(small, full_matrices=False)
    return Q @ U_small, S, Vh


def dense_to_lora(D: torch.Tensor, policy: RankPolicy, *, default_rank: int, generator: torch.Generator | None = None,
                  full_svd_share: float = FULL_SVD_SHARE) -> DenseFactors:
    """Factor a dense update D (out×in, float32) as B·A with the rank ``policy`` chooses.

    B = U_k·diag(√S_k), A = diag(√S_k)·V_kᵀ. ``default_rank`` applies when the policy gives
    neither ``rank`` nor ``energy``. The SVD is randomized (seeded by ``generator``) while the
    sketch stays under ``full_svd_share`` of min(out, in) columns, else full; the relative error
    ‖D − B·A‖_F/‖D‖_F is measured, not estimated.
    """
    D = D.float()
    out_features, in_features = D.shape
    limit = min(out_features, in_features)
    total = float(torch.linalg.vector_norm(D, dtype=torch.float64) ** 2)
    if total == 0.0:
        return DenseFactors(B=torch.zeros(out_features, 1), A=torch.zeros(1, in_features), relative_error=0.0)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if policy.energy is None:
        wanted = policy.planned(default_rank, limit)
    else:
        wanted = policy.cap(max(2 * default_rank, 32), limit)
    U = S = Vh = None
    k: int | None = None
    while k is None:
        columns = min(wanted + OVERSAMPLE, limit)
        if columns >= full_svd_share * limit:
            U, S, Vh = torch.linalg.svd(D, full_matrices=False)
            k = policy.for_spectrum(S, total, default_rank, limit)
            assert k is not None  # the full spectrum always reaches the share
        else:
            U, S, Vh = _randomized_svd(D, columns, generator)
            k = policy.for_spectrum(S[:wanted], total, default_rank, limit)
            wanted *= 2
    root = torch.sqrt(S[:k])
    B = U[:, :k] * root[None, :]
    A = root[:, None] * Vh[:k]
    residual = torch.linalg.vector_norm(D - B @ A, dtype=torch.float64)
    return DenseFactors(B=B.contiguous(), A=A.contiguous(), relative_error=float(residual) / total ** 0.5)
