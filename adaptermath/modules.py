"""One target module's adapter tensors, as the algebra sees them.

A LoRA module holds the factors of its weight update ΔW = s·B·A, with A of shape (r, in),
B of shape (out, r) and the scaling s = α/r (or α/√r with rsLoRA). Convolution factors are
flattened to these 2-D shapes (A: (r, in·kh·kw), B: (out, r)) and embedding factors are read in
the same (out, in) orientation, so every LoRA module is the same algebraic object; the original
shapes are kept to write tensors back. ``fan_in_fan_out`` (GPT-2 ``Conv1D``) changes only how
PEFT adds ΔW to the stored base weight (transposed), never the factors themselves.

An (IA)^3 module holds a vector l that rescales activations: the module's output
(``is_feedforward=False``: y = l ⊙ (W·x), i.e. ΔW = diag(l − 1)·W) or its input
(``is_feedforward=True``: y = W·(l ⊙ x), i.e. ΔW = W·diag(l − 1)). The update is linear in the
deviation l − 1 from the all-ones initialisation, which is therefore what the algebra combines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch


@dataclass(frozen=True)
class LoraModule:
    """LoRA factors of one target module: ΔW = scaling · B @ A."""

    name: str
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scaling: float
    a_shape: tuple[int, ...] = ()
    b_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.A.dim() != 2 or self.B.dim() != 2 or self.A.shape[0] != self.B.shape[1]:
            raise ValueError(f"{self.name}: LoRA factors A{tuple(self.A.shape)} and B{tuple(self.B.shape)} do not chain")
        if not self.a_shape:
            object.__setattr__(self, "a_shape", tuple(self.A.shape))
        if not self.b_shape:
            object.__setattr__(self, "b_shape", tuple(self.B.shape))

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.A.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.B.shape[0])

    def delta(self) -> torch.Tensor:
        """The dense update ΔW = s·B·A, shape (out, in), in float32."""
        return self.scaling * (self.B.float() @ self.A.float())


@dataclass(frozen=True)
class Ia3Module:
    """(IA)^3 scaling vector of one target module; the algebra acts on l − 1."""

    name: str
    l: torch.Tensor  # flattened, shape (n,)
    is_feedforward: bool
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.shape:
            object.__setattr__(self, "shape", tuple(self.l.shape))
        if self.l.dim() != 1:
            object.__setattr__(self, "l", self.l.reshape(-1))

    def deviation(self) -> torch.Tensor:
        """l − 1, the part of the vector that the arithmetic combines (float32)."""
        return self.l.float() - 1.0

    def delta(self, base_weight: torch.Tensor) -> torch.Tensor:
        """ΔW for a base weight W (out, in): diag(l−1)·W, or W·diag(l−1) for feed-forward modules."""
        d = self.deviation()
        w = base_weight.float()
        return w * d[None, :] if self.is_feedforward else d[:, None] * w


AdapterModule = Union[LoraModule, Ia3Module]
