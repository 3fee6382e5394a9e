"""Reading PEFT LoHa and LoKr adapters as exact LoRA adapters.

A LoHa or LoKr module is a fixed function of its stored factors, and that function is a low-rank
product (see :mod:`.loha` and :mod:`.lokr`), so each module is re-emitted as LoRA factors
(A, B) with ΔW = s·B·A, s = α/r as PEFT computes it (α and r from ``alpha``/``r`` and
``alpha_pattern``/``rank_pattern``). The adapter then *is* a LoRA adapter of rank R per module
(R = r₁·r₂ for LoHa, p·q for LoKr): its ``config`` is a LoRA config whose α_LoRA = s·R keeps the
scaling, and ``source_config`` keeps the file's own config.

Parameter-space arithmetic (adding raw factors) would mix LoHa/LoKr factors as if they were LoRA
factors, which means nothing; composition is refused there (see :mod:`.compat`). In delta space
the re-emission is exact.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..errors import AdapterLoadError, UnsupportedAdapterError
from ..module_info import LoraModuleInfo, ModuleInfo, lora_rank_and_alpha, natural_key
from ..modules import LoraModule
from .config import lora_config
from .loha import LOHA_FACTORS, LOHA_TUCKER, check_loha_shapes, loha_to_lora
from .lokr import LOKR_TENSORS, LOKR_TUCKER, lokr_layout, lokr_to_lora

# Config keys a LoRA re-emission keeps from the LoHa/LoKr config (they mean the same for LoRA).
_SHARED_CONFIG_KEYS = (
    "base_model_name_or_path", "revision", "task_type", "target_modules", "exclude_modules",
    "layers_to_transform", "layers_pattern", "modules_to_save", "inference_mode", "auto_mapping",
)


def lycoris_rank_and_alpha(config: Mapping[str, Any], module_name: str) -> tuple[int, float]:
    """(r, α) of a LoHa/LoKr module: ``r``/``alpha`` overridden by ``rank_pattern``/``alpha_pattern`` (PEFT's matching)."""
    return lora_rank_and_alpha(config, module_name, alpha_key="alpha")


def lycoris_layout(config: Mapping[str, Any], keys: list[str], prefixed: Mapping[str, str], tensors: Any,
                   source: str) -> tuple[dict[str, ModuleInfo], list[str]]:
    """Module infos (re-emitted LoRA shapes) and extra keys of a PEFT LoHa or LoKr adapter."""
    peft_type = str(config["peft_type"]).upper()
    variant = "LoHa" if peft_type == "LOHA" else "LoKr"
    names = LOHA_FACTORS if peft_type == "LOHA" else LOKR_TENSORS
    tucker = LOHA_TUCKER if peft_type == "LOHA" else LOKR_TUCKER
    marker = "hada_" if peft_type == "LOHA" else "lokr_"
    found: dict[str, dict[str, str]] = {}
    extra: list[str] = []
    for key in keys:
        head, _, last = key.rpartition(".")
        if last in tucker:
            raise UnsupportedAdapterError(
                f"{source}: {variant} module {head} uses the Tucker form ({last}, use_effective_conv2d=true), which is not supported"
            )
        if last in names:
            found.setdefault(head, {})[last] = key
        elif marker in key or "hada_" in key or "lokr_" in key:
            raise UnsupportedAdapterError(f"{source}: unrecognised {variant} tensor {key}")
        else:
            extra.append(key)
    modules: dict[str, ModuleInfo] = {}
    for name in sorted(found, key=natural_key):
        roles = found[name]
        shapes = {role: tensors.shape(prefixed[key]) for role, key in roles.items()}
        r_cfg, alpha = lycoris_rank_and_alpha(config, name)
        if r_cfg <= 0:
            raise AdapterLoadError(f"{source}: module {name}: rank {r_cfg} must be positive")
        scaling = alpha / r_cfg
        kernel: tuple[int, ...] = ()
        if peft_type == "LOHA":
            out, in_flat, r1, r2 = check_loha_shapes(name, shapes, source)
            if r1 != r_cfg or r2 != r_cfg:
                raise AdapterLoadError(f"{source}: module {name}: config gives rank {r_cfg} but its LoHa factors have ranks {r1} and {r2}")
            rank = r1 * r2
        else:
            out, in_flat, rank, kernel = lokr_layout(name, shapes, source)
        a_shape: tuple[int, ...] = (rank, in_flat)
        b_shape: tuple[int, ...] = (out, rank)
        if kernel:
            a_shape = (rank, in_flat // (kernel[0] * kernel[1]), *kernel)
            b_shape = (out, rank, 1, 1)
        modules[name] = LoraModuleInfo(
            name=name, layer="linear", a_key=f"{name}.lora_A.weight", b_key=f"{name}.lora_B.weight",
            a_shape=a_shape, b_shape=b_shape, rank=rank, alpha=alpha * rank / r_cfg, scaling=scaling,
            source_format=peft_type.lower(), source_keys=tuple((role, roles[role]) for role in names if role in roles),
        )
    if not modules:
        raise AdapterLoadError(f"{source}: no {variant} tensors found")
    return modules, extra


def reemit_module(info: LoraModuleInfo, read: Callable[[str], torch.Tensor]) -> LoraModule:
    """Read a LoHa/LoKr module's stored factors with ``read(key)`` and return its exact LoRA form."""
    factors = {role: read(key) for role, key in info.source_keys}
    if info.source_format == "loha":
        A, B = loha_to_lora(*(factors[name] for name in LOHA_FACTORS))
    elif info.source_format == "lokr":
        A, B = lokr_to_lora(factors)
    else:
        raise UnsupportedAdapterError(f"module {info.name}: unknown stored format {info.source_format!r}")
    if A.shape[0] != info.rank or A.shape[1] != info.in_features or B.shape[0] != info.out_features:
        raise AdapterLoadError(f"module {info.name}: re-emitted factors {list(B.shape)}·{list(A.shape)} do not match its layout")
    return LoraModule(info.name, A, B, info.scaling, (info.rank, *info.a_shape[1:]), info.b_shape)


def reemitted_lora_config(config: Mapping[str, Any], modules: Mapping[str, ModuleInfo]) -> dict[str, Any]:
    """The PEFT LoRA config of a LoHa/LoKr adapter re-emitted as LoRA.

    Targets, base model and task carry over; each module's rank is its re-emitted R and its
    α_LoRA = s·R, so PEFT's scaling α_LoRA/R equals the original s = α/r (see :func:`.config.lora_config`).
    """
    ranks = {i.name: (i.rank, i.alpha) for i in modules.values() if isinstance(i, LoraModuleInfo)}
    carry = {key: config[key] for key in _SHARED_CONFIG_KEYS if key in config}
    return lora_config(ranks, carry)
