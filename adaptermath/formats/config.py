"""PEFT LoRA configs for adapters that are LoRA in substance but not stored as a PEFT LoRA folder.

A LoRA module's scaling is s = α/r. Given each module's (r, α), :func:`lora_config` writes the
most common rank as ``r``, the most common α at that rank as ``lora_alpha``, and names every
other module in ``rank_pattern``/``alpha_pattern`` (full module paths, which PEFT matches as
``(.*\\.)?(name)$``), so PEFT recomputes every module's scaling exactly.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

LORA_DEFAULTS: dict[str, Any] = {
    "peft_type": "LORA",
    "use_rslora": False,
    "use_dora": False,
    "lora_dropout": 0.0,
    "bias": "none",
    "fan_in_fan_out": False,
    "init_lora_weights": True,
    "inference_mode": True,
}


def clean_number(value: float) -> int | float:
    """An integer-valued float as int (so JSON shows 8, not 8.0)."""
    return int(value) if float(value).is_integer() else float(value)


def lora_config(ranks: Mapping[str, tuple[int, float]], carry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A PEFT LoRA config for modules ``name -> (r, α)``; ``carry`` adds fields (targets, base model…).

    ``target_modules`` defaults to the explicit list of module names.
    """
    if not ranks:
        raise ValueError("no modules")
    default_r = Counter(r for r, _ in ranks.values()).most_common(1)[0][0]
    default_alpha = Counter(a for r, a in ranks.values() if r == default_r).most_common(1)[0][0]
    out: dict[str, Any] = {"base_model_name_or_path": None, "task_type": None, "target_modules": list(ranks)}
    out.update(carry or {})
    out.update(LORA_DEFAULTS)
    out.update({
        "r": int(default_r),
        "lora_alpha": clean_number(default_alpha),
        "rank_pattern": {n: int(r) for n, (r, _) in ranks.items() if r != default_r},
        "alpha_pattern": {n: clean_number(a) for n, (_, a) in ranks.items() if a != default_alpha},
    })
    return out
