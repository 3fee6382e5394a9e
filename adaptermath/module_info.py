"""What an adapter's files say about each module before any tensor is read: file names, the key
prefix, module-name sorting, rank/α from the config (with ``rank_pattern``/``alpha_pattern``), and
:class:`LoraModuleInfo` / :class:`Ia3ModuleInfo` (shapes and scaling). Shared by every reader
(:mod:`adaptermath.adapter`, :mod:`adaptermath.formats`) and the writers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import AdapterLoadError

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
KEY_PREFIX = "base_model.model."


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def pattern_key(patterns: Mapping[str, Any], module_name: str) -> str | None:
    """The first key of ``rank_pattern``/``alpha_pattern`` that matches ``module_name``.

    Same rule as PEFT: a key matches when ``re.match(rf"(.*\\.)?({key})$", module_name)``.
    """
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module_name):
            return key
    return None


def lora_rank_and_alpha(config: Mapping[str, Any], module_name: str, alpha_key: str = "lora_alpha") -> tuple[int, float]:
    """(r, α) of a module from ``r``/``lora_alpha`` (``alpha`` for LoHa/LoKr) and the rank/alpha patterns."""
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    key = pattern_key(rank_pattern, module_name)
    r = _config_rank(rank_pattern[key], f"rank_pattern[{key!r}]") if key is not None else _config_rank(config.get("r", 8), "r")
    key = pattern_key(alpha_pattern, module_name)
    if key is not None:
        alpha = _config_alpha(alpha_pattern[key], f"alpha_pattern[{key!r}]")
    else:
        alpha = _config_alpha(config.get(alpha_key, 8), alpha_key)
    return r, alpha


def _config_rank(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise AdapterLoadError(f"{CONFIG_NAME}: {field_name} must be a positive whole number, got {value!r}")
    return int(value)


def _config_alpha(value: Any, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value == 0:
        raise AdapterLoadError(f"{CONFIG_NAME}: {field_name} must be a finite, non-zero number, got {value!r}")
    return float(value)


def lora_scaling(r: int, alpha: float, use_rslora: bool) -> float:
    """s = α/r, or α/√r with rsLoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


@dataclass(frozen=True)
class LoraModuleInfo:
    """Shapes and scaling of one LoRA module, known without reading its tensors."""

    name: str
    layer: str  # "linear" | "embedding"
    a_key: str
    b_key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    rank: int
    alpha: float
    scaling: float
    # Set when the module is stored in another parametrisation (LoHa, LoKr) and re-emitted
    # exactly as LoRA factors on read (adaptermath.formats.reemit): a_key/b_key then name the
    # output's LoRA tensors and source_keys the stored ones, as (PEFT tensor name, key) pairs.
    source_format: str = ""
    source_keys: tuple[tuple[str, str], ...] = ()

    @property
    def in_features(self) -> int:
        return math.prod(self.a_shape[1:])

    @property
    def out_features(self) -> int:
        return self.b_shape[0]


@dataclass(frozen=True)
class Ia3ModuleInfo:
    """Shape and role of one (IA)^3 module, known without reading its tensor."""

    name: str
    key: str
    shape: tuple[int, ...]
    is_feedforward: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


ModuleInfo = LoraModuleInfo | Ia3ModuleInfo
