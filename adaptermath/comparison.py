"""compare(): how alike two adapters' updates are, module by module.

For LoRA modules present in both adapters:

* ``cosine`` — cos(ΔW_a, ΔW_b) = ⟨ΔW_a, ΔW_b⟩_F / (‖ΔW_a‖_F·‖ΔW_b‖_F), computed from r×r
  products of the factors (no out×in matrix is formed);
* ``a_cosine`` — cos(A_a, A_b) of the raw A factors: close to 1 when both were trained from the
  same initialisation (PEFT initialises A randomly and B at zero, and A moves little);
* ``param_vs_delta`` — the shared-initialisation diagnostic for their average 0.5·a + 0.5·b:
  ‖ΔW_param − ΔW_delta‖_F / ‖ΔW_delta‖_F. Small means parameter-space arithmetic is faithful.

For (IA)^3 modules ``cosine`` compares the deviations l − 1 (ΔW = diag(l − 1)·W shares W).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .adapter import Adapter, load_adapter
from .algebra.lowrank import lowrank_frobenius_norm, lowrank_inner, lowrank_relative_difference
from .algebra.operators import delta_space_lora, param_space_lora
from .compose import _common_kind
from .errors import CompositionError
from .modules import Ia3Module, LoraModule


@dataclass
class ModuleComparison:
    name: str
    cosine: float
    norm_a: float
    norm_b: float
    a_cosine: float | None = None
    param_vs_delta: float | None = None


def _cos(inner: float, na: float, nb: float) -> float:
    return inner / (na * nb) if na > 0 and nb > 0 else 0.0


def compare(a: str | Path | Adapter, b: str | Path | Adapter, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Per-module cosine similarity of two adapters' updates and the shared-init diagnostic."""
    first = a if isinstance(a, Adapter) else load_adapter(a, allow_pickle=allow_pickle)
    second = b if isinstance(b, Adapter) else load_adapter(b, allow_pickle=allow_pickle)
    kind = _common_kind({"a": first, "b": second})
    shared = [n for n in first.modules if n in second.modules]
    if not shared:
        raise CompositionError("the two adapters share no target module")
    rows: list[ModuleComparison] = []
    for name in shared:
        ma, mb = first.module(name), second.module(name)
        if kind == "lora":
            assert isinstance(ma, LoraModule) and isinstance(mb, LoraModule)
            if ma.A.shape[1] != mb.A.shape[1] or ma.B.shape[0] != mb.B.shape[0]:
                raise CompositionError(f"module {name}: shapes differ ({ma.out_features}x{ma.in_features} vs {mb.out_features}x{mb.in_features})")
            pa, qa = ma.scaling * ma.B.float(), ma.A.float()
            pb, qb = mb.scaling * mb.B.float(), mb.A.float()
            na, nb = lowrank_frobenius_norm(pa, qa), lowrank_frobenius_norm(pb, qb)
            row = ModuleComparison(name, _cos(lowrank_inner(pa, qa, pb, qb), na, nb), na, nb)
            if ma.rank == mb.rank:
                flat_a, flat_b = ma.A.float().reshape(-1), mb.A.float().reshape(-1)
                row.a_cosine = _cos(float(flat_a @ flat_b), float(flat_a.norm()), float(flat_b.norm()))
                terms = [(0.5, ma), (0.5, mb)]
                A, B = param_space_lora(terms, scaling=ma.scaling)
                exact_A, exact_B = delta_space_lora(terms)
                row.param_vs_delta = lowrank_relative_difference(ma.scaling * B, A, exact_B, exact_A)
        else:
            assert isinstance(ma, Ia3Module) and isinstance(mb, Ia3Module)
            da, db = ma.deviation(), mb.deviation()
            na, nb = float(da.norm()), float(db.norm())
            row = ModuleComparison(name, _cos(float(da @ db), na, nb), na, nb)
        rows.append(row)
    cosines = [r.cosine for r in rows]
    devs = [r.param_vs_delta for r in rows if r.param_vs_delta is not None]
    return {
        "a": first.source,
        "b": second.source,
        "type": "LoRA" if kind == "lora" else "(IA)^3",
        "shared_modules": len(shared),
        "only_in_a": [n for n in first.modules if n not in second.modules],
        "only_in_b": [n for n in second.modules if n not in first.modules],
        "mean_cosine": sum(cosines) / len(cosines),
        "max_param_vs_delta": max(devs) if devs else None,
        "modules": [asdict(r) for r in rows],
    }
