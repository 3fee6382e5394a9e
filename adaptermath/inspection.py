"""inspect_adapter(): what an adapter is, in numbers (the library side of ``adaptermath inspect``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .adapter import Adapter, Ia3ModuleInfo, LoraModuleInfo, load_adapter
from .provenance import PROVENANCE_NAME
from .formats.detect import describe_format


def inspect_adapter(ref: str | Path | Adapter, *, norms: bool = True, allow_pickle: bool = False) -> dict[str, Any]:
    """Summarise an adapter: type, base model, ranks, targets, parameters, dtype, size, norms.

    With ``norms=True`` each module's update norm is computed from its factors — ‖s·B·A‖_F via
    r×r Gram matrices for LoRA, ‖l − 1‖₂ for (IA)^3 — which reads every tensor once.
    """
    adapter = ref if isinstance(ref, Adapter) else load_adapter(ref, allow_pickle=allow_pickle)
    infos = list(adapter.modules.values())
    summary: dict[str, Any] = {
        "path": str(adapter.path),
        "source": adapter.source,
        "type": "LoRA" if adapter.kind == "lora" else "(IA)^3",
        "peft_type": adapter.peft_type,
        "base_model": adapter.base_model,
        "target_modules": adapter.config.get("target_modules"),
        "modules": len(infos),
        "parameters": adapter.num_parameters,
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "size_bytes": adapter.weights_file.stat().st_size,  # the weights file alone (not + config)
        "weights_file": adapter.weights_file.name,
        "modules_to_save": adapter.config.get("modules_to_save"),
        "extra_tensors": list(adapter.extra_keys),
        "format": adapter.format,  # peft-lora | peft-ia3 | peft-loha | peft-lokr | kohya | diffusers (docs/formats.md)
        "format_description": describe_format(adapter.format).description,
    }
    if adapter.kind == "lora":
        lora = [i for i in infos if isinstance(i, LoraModuleInfo)]
        summary["ranks"] = dict(sorted(Counter(i.rank for i in lora).items()))
        summary["lora_alpha"] = adapter.config.get("lora_alpha")
        summary["use_rslora"] = bool(adapter.config.get("use_rslora", False))
        summary["fan_in_fan_out"] = bool(adapter.config.get("fan_in_fan_out", False))
        summary["scalings"] = sorted({round(i.scaling, 6) for i in lora})
    else:
        ia3 = [i for i in infos if isinstance(i, Ia3ModuleInfo)]
        summary["feedforward_modules"] = [i.name for i in ia3 if i.is_feedforward]
    per_module: list[dict[str, Any]] = []
    module_norms = adapter.norms() if norms else {}
    for info in infos:
        row: dict[str, Any] = {"name": info.name}
        if isinstance(info, LoraModuleInfo):
            row.update(rank=info.rank, alpha=info.alpha, scaling=info.scaling, shape=[info.out_features, info.in_features], layer=info.layer)
        else:
            row.update(size=info.size, feedforward=info.is_feedforward)
        if norms:
            row["norm"] = module_norms[info.name]
        per_module.append(row)
    summary["per_module"] = per_module
    provenance = adapter.path / PROVENANCE_NAME
    if provenance.is_file():
        try:
            record = json.loads(provenance.read_text(encoding="utf-8"))
            summary["provenance"] = {k: record.get(k) for k in ("expression", "normal_form", "space", "method", "adaptermath_version")}
        except json.JSONDecodeError:
            summary["provenance"] = {"error": f"{PROVENANCE_NAME} is not valid JSON"}
    return summary
