"""negate(): the sugar for ``compose("-λ*x")``.

LoRA (parameter space): ⊖_λ{A, B} = {A, −λ·B} (or {−λ·A, B} with ``negate_factor="A"``), so
ΔW ↦ −λ·ΔW. (IA)^3: l ↦ 1 − λ·(l − 1) = (1 + λ) − λ·l, never −l.
"""

from __future__ import annotations

from pathlib import Path

from .adapter import Adapter
from .compose import ComposedAdapter, compose
from .errors import AdapterMathError


def negate(adapter: str | Path | Adapter, *, scale: float = 1.0, space: str = "param", negate_factor: str = "B",
           dtype: str | None = None, allow_pickle: bool = False) -> ComposedAdapter:
    """The adapter whose update is −scale·ΔW: ``compose("-scale*x", {"x": adapter})``."""
    if not scale > 0:
        raise AdapterMathError(f"--scale must be positive, got {scale}")
    return compose(f"-{scale!r}*x", {"x": adapter}, space=space, negate_factor=negate_factor, dtype=dtype,
                   allow_pickle=allow_pickle)
