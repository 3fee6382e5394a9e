"""Stable-Diffusion LoRA files: one ``.safetensors`` in kohya or diffusers keys, read as an Adapter.

Two key styles are recognised (see docs/formats.md):

* **kohya** (kohya-ss, A1111, ComfyUI): ``lora_unet_…``/``lora_te…_`` module names with
  ``.lora_down.weight`` (A), ``.lora_up.weight`` (B) and an optional scalar ``.alpha``
  (absent: α = r). Module names stay the kohya names.
* **diffusers**: dotted module paths rooted at a pipeline component (``unet.…``,
  ``text_encoder.…``) with ``.lora_A.weight``/``.lora_B.weight`` (PEFT style), or the older
  ``.lora.down.weight``/``.lora.up.weight`` and ``.lora_linear_layer.down/up.weight``. α comes
  from a ``.alpha`` tensor, else from the ``lora_adapter_metadata`` header entry diffusers
  writes (``unet.lora_alpha``, ``unet.alpha_pattern``…), else α = r.

Either way ΔW = (α/r)·B·A per module, so the file becomes a LoRA :class:`~adaptermath.Adapter`
(``kind`` "lora", ``format`` "kohya" or "diffusers") whose ``config`` is a synthesised PEFT LoRA
config; tensors stay on disk and are read module by module. The file's ``__metadata__`` is
available as ``adapter.metadata()`` and is written back by :mod:`.writers`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..adapter_data import Adapter
from ..errors import AdapterLoadError, UnsupportedAdapterError
from ..io.tensor_source import SafetensorsSource
from ..module_info import KEY_PREFIX, LoraModuleInfo, natural_key, pattern_key
from .config import lora_config
from .kohya import ALPHA_SUFFIX, DOWN_SUFFIX, UNSUPPORTED_SUFFIXES, UP_SUFFIX, is_kohya_key

DIFFUSERS_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("lora_A.weight", "lora_B.weight"),
    ("lora.down.weight", "lora.up.weight"),
    ("lora_linear_layer.down.weight", "lora_linear_layer.up.weight"),
)
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"
_DIFFUSERS_UNSUPPORTED = {
    "lora_magnitude_vector": "DoRA (lora_magnitude_vector)",
    "lora_B.bias": "LoRA biases", "lora.up.bias": "LoRA biases",
    "_lora.down.weight": "old diffusers attention-processor LoRA keys (to_q_lora.down…)",
    "lora_embedding_A": "embedding LoRA",
}
EMBEDDING_KEYS = ("emb_params", "clip_l", "clip_g", "string_to_param")


def key_style(keys: list[str], source: str) -> str:
    """"kohya" or "diffusers" for a file's tensor keys; one-line error for anything else."""
    if not keys:
        raise AdapterLoadError(f"{source}: the file holds no tensors")
    if any(k.startswith(KEY_PREFIX) for k in keys):
        raise AdapterLoadError(f"{source}: this is a PEFT adapter_model file; load the folder that holds it with its adapter_config.json")
    kohya = [k for k in keys if is_kohya_key(k)]
    if kohya and len(kohya) == len(keys):
        return "kohya"
    if kohya:
        other = next(k for k in keys if not is_kohya_key(k))
        raise AdapterLoadError(f"{source}: mixes kohya keys ({kohya[0]}) with other keys ({other})")
    if any(k.endswith(a) or k.endswith(b) for k in keys for a, b in DIFFUSERS_SUFFIXES):
        return "diffusers"
    if any(k in EMBEDDING_KEYS for k in keys) or len(keys) == 1:
        raise AdapterLoadError(f"{source}: looks like a textual-inversion embedding, not a LoRA (see adaptermath.formats.textual_inversion)")
    raise AdapterLoadError(f"{source}: not a LoRA file (no kohya lora_down/lora_up or diffusers lora_A/lora_B keys; e.g. {keys[0]})")


def load_lora_file(path: str | Path, *, source: str | None = None) -> Adapter:
    """Open a kohya or diffusers Stable-Diffusion LoRA ``.safetensors`` file as a LoRA Adapter."""
    path = Path(path)
    source = source or str(path)
    tensors = SafetensorsSource(path)
    keys = sorted(tensors.keys(), key=natural_key)
    style = key_style(keys, source)
    if style == "kohya":
        ranks, modules = _kohya_layout(keys, tensors, source)
    else:
        ranks, modules = _diffusers_layout(keys, tensors, tensors.metadata(), source)
    config = lora_config(ranks)
    return Adapter(
        path=path, config=config, kind="lora", modules=modules, extra_keys=[], weights_file=path, source=source,
        _tensors=tensors, _key_map={k: k for k in keys}, format=style,
    )


def _check_factors(name: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], source: str) -> int:
    """The rank of a module whose A/B shapes chain; one-line errors otherwise."""
    if len(a_shape) not in (2, 4) or len(b_shape) != len(a_shape) or b_shape[1] != a_shape[0]:
        raise AdapterLoadError(f"{source}: module {name} has factors of shapes {list(a_shape)} and {list(b_shape)} that do not chain")
    if len(b_shape) == 4 and b_shape[2:] != (1, 1):
        raise UnsupportedAdapterError(f"{source}: module {name}: an up/B factor with a {list(b_shape[2:])} kernel is not supported")
    return a_shape[0]


def _scalar(tensors: Any, key: str, source: str) -> float:
    value = tensors.get(key)
    if value.numel() != 1:
        raise AdapterLoadError(f"{source}: {key} should be a scalar, has shape {list(value.shape)}")
    alpha = float(value.double().reshape(()).item())
    if not math.isfinite(alpha):
        raise AdapterLoadError(f"{source}: {key} is not finite")
    return alpha


def _kohya_layout(keys: list[str], tensors: Any, source: str) -> tuple[dict[str, tuple[int, float]], dict[str, LoraModuleInfo]]:
    found: dict[str, dict[str, str]] = {}
    for key in keys:
        for suffix, what in UNSUPPORTED_SUFFIXES.items():
            if key.endswith("." + suffix):
                raise UnsupportedAdapterError(f"{source}: {what} is not supported (tensor {key})")
        for role, suffix in (("A", DOWN_SUFFIX), ("B", UP_SUFFIX), ("alpha", ALPHA_SUFFIX)):
            if key.endswith("." + suffix):
                found.setdefault(key[: -len(suffix) - 1], {})[role] = key
                break
        else:
            raise UnsupportedAdapterError(f"{source}: unrecognised kohya tensor {key}")
    ranks: dict[str, tuple[int, float]] = {}
    modules: dict[str, LoraModuleInfo] = {}
    for name in sorted(found, key=natural_key):
        roles = found[name]
        if "A" not in roles or "B" not in roles:
            raise AdapterLoadError(f"{source}: kohya module {name} has no {'lora_down' if 'A' not in roles else 'lora_up'} tensor")
        a_shape, b_shape = tensors.shape(roles["A"]), tensors.shape(roles["B"])
        rank = _check_factors(name, a_shape, b_shape, source)
        alpha = _scalar(tensors, roles["alpha"], source) if "alpha" in roles else float(rank)
        ranks[name] = (rank, alpha)
        modules[name] = LoraModuleInfo(name=name, layer="linear", a_key=roles["A"], b_key=roles["B"], a_shape=a_shape,
                                       b_shape=b_shape, rank=rank, alpha=alpha, scaling=alpha / rank)
    return ranks, modules


def diffusers_component_configs(metadata: dict[str, str], source: str) -> dict[str, dict[str, Any]]:
    """The per-component LoRA configs in a diffusers file's ``lora_adapter_metadata`` ({} if none)."""
    text = metadata.get(DIFFUSERS_METADATA_KEY)
    if not text:
        return {}
    try:
        packed = json.loads(text)
    except json.JSONDecodeError:
        raise AdapterLoadError(f"{source}: {DIFFUSERS_METADATA_KEY} in the file header is not valid JSON") from None
    if not isinstance(packed, dict):
        raise AdapterLoadError(f"{source}: {DIFFUSERS_METADATA_KEY} must be a JSON object")
    out: dict[str, dict[str, Any]] = {}
    for key, value in packed.items():
        component, _, field = key.partition(".")
        if field:
            out.setdefault(component, {})[field] = value
    return out


def _diffusers_alpha(configs: dict[str, dict[str, Any]], name: str, rank: int, source: str) -> float:
    """α of module ``component.path`` from the component's metadata config (α = r when absent)."""
    component, _, path = name.partition(".")
    cfg = configs.get(component)
    if not cfg:
        return float(rank)
    if cfg.get("use_dora"):
        raise UnsupportedAdapterError(f"{source}: DoRA (use_dora in {DIFFUSERS_METADATA_KEY}) is not supported")
    patterns = cfg.get("alpha_pattern") or {}
    key = pattern_key(patterns, path)
    alpha = float(patterns[key]) if key is not None else float(cfg.get("lora_alpha", rank))
    if cfg.get("use_rslora"):
        return alpha / math.sqrt(rank) * rank  # the equivalent plain α, so that s = α/r
    return alpha


def _diffusers_layout(keys: list[str], tensors: Any, metadata: dict[str, str],
                      source: str) -> tuple[dict[str, tuple[int, float]], dict[str, LoraModuleInfo]]:
    configs = diffusers_component_configs(metadata, source)
    found: dict[str, dict[str, str]] = {}
    for key in keys:
        for fragment, what in _DIFFUSERS_UNSUPPORTED.items():
            if fragment in key:
                raise UnsupportedAdapterError(f"{source}: {what} is not supported (tensor {key})")
        for a_suffix, b_suffix in DIFFUSERS_SUFFIXES:
            role = "A" if key.endswith("." + a_suffix) else "B" if key.endswith("." + b_suffix) else None
            if role:
                found.setdefault(key[: -len(a_suffix if role == "A" else b_suffix) - 1], {})[role] = key
                break
        else:
            if key.endswith("." + ALPHA_SUFFIX):
                found.setdefault(key[: -len(ALPHA_SUFFIX) - 1], {})["alpha"] = key
            else:
                raise UnsupportedAdapterError(f"{source}: unrecognised diffusers LoRA tensor {key}")
    ranks: dict[str, tuple[int, float]] = {}
    modules: dict[str, LoraModuleInfo] = {}
    for name in sorted(found, key=natural_key):
        roles = found[name]
        if "A" not in roles or "B" not in roles:
            raise AdapterLoadError(f"{source}: module {name} has no {'lora_A' if 'A' not in roles else 'lora_B'} tensor")
        a_shape, b_shape = tensors.shape(roles["A"]), tensors.shape(roles["B"])
        rank = _check_factors(name, a_shape, b_shape, source)
        if "alpha" in roles:
            alpha = _scalar(tensors, roles["alpha"], source)
        else:
            alpha = _diffusers_alpha(configs, name, rank, source)
        ranks[name] = (rank, alpha)
        modules[name] = LoraModuleInfo(name=name, layer="linear", a_key=roles["A"], b_key=roles["B"], a_shape=a_shape,
                                       b_shape=b_shape, rank=rank, alpha=alpha, scaling=alpha / rank)
    return ranks, modules
