"""Reading PEFT adapters: a config plus lazily read, per-module tensors.

:func:`load_adapter` opens an adapter folder (``adapter_config.json`` and
``adapter_model.safetensors``; ``adapter_model.bin`` only with ``allow_pickle=True``) or an
``hf://owner/repo[@revision][/subfolder]`` reference. Nothing but the safetensors header is read
up front: :meth:`Adapter.module` reads one target module's tensors when asked, so the algebra can
stream a model module by module and its peak memory does not grow with depth.

Supported: LoRA (``rank_pattern``/``alpha_pattern``, rsLoRA, ``fan_in_fan_out``, linear,
embedding and convolution layers, ``modules_to_save``) and (IA)^3. Variants whose weights are not
plain LoRA factors (DoRA, LoRA biases, trainable tokens, ...) are refused with an error naming
the variant.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import torch

from .errors import AdapterLoadError, UnsupportedAdapterError
from .modules import AdapterModule, Ia3Module, LoraModule

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
KEY_PREFIX = "base_model.model."

# Suffixes of the tensors that make up one LoRA module, by layer kind: (A suffix, B suffix).
LORA_SUFFIXES: dict[str, tuple[str, str]] = {
    "linear": ("lora_A.weight", "lora_B.weight"),
    "embedding": ("lora_embedding_A", "lora_embedding_B"),
}
IA3_SUFFIX = "ia3_l"

# Tensor-name fragments of PEFT variants whose weights are not plain factors.
_UNSUPPORTED_KEYS = {
    "lora_magnitude_vector": "DoRA (use_dora=True)",
    "lora_A.bias": "LoRA biases (lora_bias=True)",
    "lora_B.bias": "LoRA biases (lora_bias=True)",
    "trainable_tokens": "trainable tokens (trainable_token_indices)",
    "hada_w": "LoHa",
    "lokr_w": "LoKr",
}
# LyCORIS types read through adaptermath.formats (re-emitted exactly as LoRA; delta space only).
LYCORIS_TYPES = ("LOHA", "LOKR")
_UNSUPPORTED_TYPES = {
    "OFT": "OFT",
    "BOFT": "BOFT",
    "ADALORA": "AdaLoRA",
    "VERA": "VeRA",
    "PROMPT_TUNING": "prompt tuning",
    "PREFIX_TUNING": "prefix tuning",
    "P_TUNING": "p-tuning",
}


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


class _TensorSource(Protocol):
    def keys(self) -> list[str]: ...
    def shape(self, key: str) -> tuple[int, ...]: ...
    def dtype(self, key: str) -> torch.dtype: ...
    def get(self, key: str) -> torch.Tensor: ...


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _SafetensorsSource:
    """Lazy access to a safetensors file: the header through ``safe_open`` (which validates the
    file), each tensor by a positioned read (:mod:`adaptermath.io.safetensors_read`), so pages
    already used do not stay resident while a large model is streamed."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        from .io.safetensors_read import SafetensorsTensorReader

        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            self._keys = list(self._file.keys())
            self._meta = {k: self._file.get_slice(k) for k in self._keys}
            self._reader = SafetensorsTensorReader(path)
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AdapterLoadError(f"{path}: not a readable safetensors file ({reason})") from None

    def keys(self) -> list[str]:
        return self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._meta[key].get_shape())

    def dtype(self, key: str) -> torch.dtype:
        name = self._meta[key].get_dtype()
        if name not in _ST_DTYPES:
            raise UnsupportedAdapterError(f"{self.path}: tensor {key} has unsupported dtype {name}")
        return _ST_DTYPES[name]

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._reader.read_bytes(key).view(self.dtype(key)).reshape(self.shape(key))
        except Exception as exc:
            raise AdapterLoadError(f"{self.path}: cannot read tensor {key} ({exc})") from None

    def metadata(self) -> dict[str, str]:
        return dict(self._file.metadata() or {})


class _PickleSource:
    """A ``adapter_model.bin`` state dict, loaded with ``torch.load(weights_only=True)``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AdapterLoadError(f"{path}: cannot read pickled state dict ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise AdapterLoadError(f"{path}: does not hold a state dict of tensors")
        self._state: dict[str, torch.Tensor] = state

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def dtype(self, key: str) -> torch.dtype:
        return self._state[key].dtype

    def get(self, key: str) -> torch.Tensor:
        return self._state[key]

    def metadata(self) -> dict[str, str]:
        return {}


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


@dataclass
class Adapter:
    """A PEFT adapter on disk: its config, module layout and lazily read tensors.

    ``kind`` is ``"lora"`` or ``"ia3"``; ``modules`` maps each target module's name (its path in
    the base model, e.g. ``model.layers.0.self_attn.q_proj``) to its shapes; ``extra_keys`` are
    the other tensors (``modules_to_save`` copies such as a classification head), by key without
    the ``base_model.model.`` prefix.
    """

    path: Path
    config: dict[str, Any]
    kind: str
    modules: dict[str, ModuleInfo]
    extra_keys: list[str]
    weights_file: Path
    source: str = ""
    revision: str | None = None
    commit_sha: str | None = None
    _tensors: _TensorSource | None = field(default=None, repr=False)
    _key_map: dict[str, str] = field(default_factory=dict, repr=False)
    _hashes: dict[str, str] | None = field(default=None, repr=False)
    # What is on disk (adaptermath.formats): "peft-lora" | "peft-ia3" | "peft-loha" | "peft-lokr" |
    # "kohya" | "diffusers". LoHa/LoKr and Stable-Diffusion LoRA files present themselves to the
    # algebra as LoRA (``kind`` "lora", ``config`` a LoRA config); ``source_config`` is the
    # file's own config when it differs (LoHa/LoKr).
    format: str = "peft-lora"
    source_config: dict[str, Any] | None = None

    # ----------------------------------------------------------------- properties
    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def peft_type(self) -> str:
        return str(self.config.get("peft_type", "")).upper()

    @property
    def module_names(self) -> list[str]:
        return list(self.modules)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the module tensors (the most common one)."""
        counts: dict[torch.dtype, int] = {}
        for info in self.modules.values():
            for key in _info_keys(info):
                dt = self._source.dtype(self._key_map[key])
                counts[dt] = counts.get(dt, 0) + 1
        return max(counts, key=lambda d: counts[d]) if counts else torch.float32

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(self._source.shape(k)) for k in self._source.keys())

    @property
    def _source(self) -> _TensorSource:
        assert self._tensors is not None
        return self._tensors

    def _full_key(self, key: str) -> str:
        if key not in self._key_map:
            raise AdapterLoadError(f"{self.source or self.path}: no tensor named {key}")
        return self._key_map[key]

    # ----------------------------------------------------------------- tensors
    def tensor(self, key: str) -> torch.Tensor:
        """Read one tensor by key (without the ``base_model.model.`` prefix); checks it is finite."""
        full = self._full_key(key)
        tensor = self._source.get(full)
        if tensor.is_floating_point() and not _all_finite(tensor):
            raise AdapterLoadError(f"{self.source or self.path}: tensor {full} contains NaN or Inf values")
        return tensor

    def module(self, name: str) -> AdapterModule:
        """Read one target module's tensors."""
        info = self.modules.get(name)
        if info is None:
            raise AdapterLoadError(f"{self.source or self.path}: no target module named {name!r}")
        if isinstance(info, LoraModuleInfo) and info.source_format:
            from .formats.reemit import reemit_module

            return reemit_module(info, self.tensor)
        if isinstance(info, LoraModuleInfo):
            a = self.tensor(info.a_key)
            b = self.tensor(info.b_key)
            if info.layer == "embedding":
                a2, b2 = a, b  # lora_embedding_A: (r, num_embeddings), lora_embedding_B: (dim, r)
            else:
                a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
            return LoraModule(name, a2, b2, info.scaling, tuple(a.shape), tuple(b.shape))
        tensor = self.tensor(info.key)
        return Ia3Module(name, tensor.reshape(-1), info.is_feedforward, tuple(tensor.shape))

    def iter_modules(self) -> Iterator[AdapterModule]:
        for name in self.modules:
            yield self.module(name)

    def extra_tensor(self, key: str) -> torch.Tensor:
        return self.tensor(key)

    def norms(self) -> dict[str, float]:
        """Frobenius norm of each module's update: ‖s·B·A‖ for LoRA (from r×r Grams), ‖l−1‖ for (IA)^3."""
        from .algebra.lowrank import lowrank_frobenius_norm

        out: dict[str, float] = {}
        for module in self.iter_modules():
            if isinstance(module, LoraModule):
                out[module.name] = lowrank_frobenius_norm(module.scaling * module.B.float(), module.A.float())
            else:
                out[module.name] = float(module.deviation().norm())
        return out

    # ----------------------------------------------------------------- files
    def files(self) -> dict[str, Path]:
        if self.path == self.weights_file:  # a single-file format (kohya / diffusers LoRA file)
            return {self.weights_file.name: self.weights_file}
        return {CONFIG_NAME: self.path / CONFIG_NAME, self.weights_file.name: self.weights_file}

    def file_hashes(self) -> dict[str, str]:
        """sha256 of the config and weights files (computed once; large files remembered by identity
        across runs, see :mod:`adaptermath.io.hash_cache`)."""
        if self._hashes is None:
            from .io.hash_cache import cached_sha256

            self._hashes = {name: cached_sha256(path) for name, path in self.files().items()}
        return self._hashes

    @property
    def license(self) -> str | None:
        """The ``license`` declared in the adapter's README.md front matter (Hub model cards), if any."""
        from .modelcard import read_card_license

        return read_card_license(self.path / "README.md")

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files().values())

    def metadata(self) -> dict[str, str]:
        return self._source.metadata()  # type: ignore[attr-defined]


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf entry. One reduction: the sum is finite unless an entry is not (or the sum
    overflows — then each entry is checked)."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _info_keys(info: ModuleInfo) -> list[str]:
    if isinstance(info, LoraModuleInfo):
        return [key for _, key in info.source_keys] if info.source_keys else [info.a_key, info.b_key]
    return [info.key]


# --------------------------------------------------------------------------- loading


def load_adapter(ref: str | Path, *, allow_pickle: bool = False) -> Adapter:
    """Open a PEFT adapter folder or an ``hf://owner/repo[@rev][/subfolder]`` reference.

    Reads the config and the safetensors header only; tensors are read per module on demand.
    ``adapter_model.bin`` (pickle) is read only when ``allow_pickle`` is true, and then with
    ``torch.load(weights_only=True)``.
    """
    source = str(ref)
    revision = commit_sha = None
    if source.startswith("hf://"):
        from .hub import resolve_adapter_ref

        resolved = resolve_adapter_ref(source, allow_pickle=allow_pickle)
        path = Path(resolved.local_dir)
        revision, commit_sha = resolved.revision, resolved.commit_sha
    else:
        path = Path(ref).expanduser()
        if path.is_file() and path.name in (CONFIG_NAME, SAFETENSORS_NAME, PICKLE_NAME):
            path = path.parent
        elif path.is_file() and path.suffix == ".safetensors":
            from .formats.lora_file import load_lora_file

            return load_lora_file(path, source=source)
    if not path.exists():
        raise AdapterLoadError(f"{source}: no such adapter folder")
    if not path.is_dir():
        raise AdapterLoadError(f"{source}: not a folder (an adapter is a folder with {CONFIG_NAME})")
    config = _read_config(path, source)
    weights, tensors = _open_weights(path, source, allow_pickle)
    key_map = {(k[len(KEY_PREFIX):] if k.startswith(KEY_PREFIX) else k): k for k in tensors.keys()}
    kind, modules, extra = _layout(config, key_map, tensors, source)
    peft_type = str(config["peft_type"]).upper()
    source_config = None
    if peft_type in LYCORIS_TYPES:
        from .formats.reemit import reemitted_lora_config

        source_config, config = config, reemitted_lora_config(config, modules)
    return Adapter(
        path=path, config=config, kind=kind, modules=modules, extra_keys=extra, weights_file=weights,
        source=source, revision=revision, commit_sha=commit_sha, _tensors=tensors, _key_map=key_map,
        format=f"peft-{peft_type.lower()}", source_config=source_config,
    )


def _read_config(path: Path, source: str) -> dict[str, Any]:
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise AdapterLoadError(f"{source}: {CONFIG_NAME} is missing (not a PEFT adapter folder)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterLoadError(f"{source}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    except RecursionError:
        raise AdapterLoadError(f"{source}: {CONFIG_NAME} nests too deeply to be an adapter config") from None
    if not isinstance(config, dict):
        raise AdapterLoadError(f"{source}: {CONFIG_NAME} must hold a JSON object")
    _check_config_types(config, source)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type in _UNSUPPORTED_TYPES:
        raise UnsupportedAdapterError(f"{source}: {_UNSUPPORTED_TYPES[peft_type]} adapters are not supported (peft_type {peft_type}); supported: LORA, IA3, LOHA, LOKR")
    if peft_type not in ("LORA", "IA3", *LYCORIS_TYPES):
        raise UnsupportedAdapterError(f"{source}: unsupported peft_type {config.get('peft_type')!r}; supported: LORA, IA3, LOHA, LOKR")
    if peft_type == "LORA":
        if config.get("use_dora"):
            raise UnsupportedAdapterError(f"{source}: DoRA adapters (use_dora=true) are not supported: their update is not a plain low-rank product")
        if config.get("lora_bias"):
            raise UnsupportedAdapterError(f"{source}: LoRA with biases (lora_bias=true) is not supported")
        if config.get("target_parameters"):
            raise UnsupportedAdapterError(f"{source}: LoRA on target_parameters is not supported")
        if config.get("trainable_token_indices"):
            raise UnsupportedAdapterError(f"{source}: trainable tokens (trainable_token_indices) are not supported")
        init = base_changing_init(config)
        if init:
            raise UnsupportedAdapterError(
                f"{source}: a {init} adapter changes the base model's weights when PEFT loads it, so its factors are "
                "not a ΔW on the original base and arithmetic on them is wrong; convert it to a plain LoRA first "
                "(PEFT: save_pretrained(..., path_initial_model_for_weight_conversion=...))")
    return config


# init_lora_weights values (lower case, prefix) that make PEFT rewrite the base weights on load.
_BASE_CHANGING_INITS = {"pissa": "PiSSA", "olora": "OLoRA", "corda": "CorDA", "loftq": "LoftQ"}


def base_changing_init(config: Mapping[str, Any]) -> str | None:
    """The name of the initialisation (PiSSA, OLoRA, CorDA, LoftQ, QALoRA) when the adapter's config
    says it subtracts its initial factors from, or quantises, the base weights; else None."""
    init = config.get("init_lora_weights")
    if isinstance(init, str):
        for prefix, name in _BASE_CHANGING_INITS.items():
            if init.lower().startswith(prefix):
                return f"{name} (init_lora_weights={init!r})"
    if config.get("loftq_config"):
        return "LoftQ (loftq_config)"
    if config.get("use_qalora"):
        return "QALoRA (use_qalora=true)"
    return None


def _check_config_types(config: Mapping[str, Any], source: str) -> None:
    """The types of the config fields adaptermath reads; a wrong one is a one-line error naming it."""
    def fail(name: str, expected: str) -> AdapterLoadError:
        return AdapterLoadError(f"{source}: {CONFIG_NAME}: field {name!r} must be {expected}, got {config[name]!r}"[:300])

    def regex(name: str, pattern: str) -> None:
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError):
            raise AdapterLoadError(f"{source}: {CONFIG_NAME}: field {name!r} holds an invalid pattern {pattern!r}"[:300]) from None

    if not isinstance(config.get("peft_type", ""), str):
        raise fail("peft_type", "text such as LORA or IA3")
    for name in ("target_modules", "feedforward_modules"):
        value = config.get(name)
        if isinstance(value, str):
            regex(name, value)
        elif value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise fail(name, "a list of module names or a pattern")
    for name in ("modules_to_save",):
        value = config.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise fail(name, "a list of module names or null")
    for name in ("rank_pattern", "alpha_pattern"):
        value = config.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise fail(name, "a mapping of module patterns to numbers")
        for key in value:
            regex(name, rf"(.*\.)?({key})$")
    for name in ("use_rslora", "fan_in_fan_out", "use_dora"):
        if config.get(name) is not None and not isinstance(config.get(name), bool):
            raise fail(name, "true or false")
    if config.get("base_model_name_or_path") is not None and not isinstance(config.get("base_model_name_or_path"), str):
        raise fail("base_model_name_or_path", "text or null")


def _open_weights(path: Path, source: str, allow_pickle: bool) -> tuple[Path, _TensorSource]:
    safetensors_path = path / SAFETENSORS_NAME
    pickle_path = path / PICKLE_NAME
    if safetensors_path.is_file():
        return safetensors_path, _SafetensorsSource(safetensors_path)
    if pickle_path.is_file():
        if not allow_pickle:
            raise AdapterLoadError(
                f"{source}: only {PICKLE_NAME} (pickle) is present; pickles can run code when loaded — "
                "pass --allow-pickle (allow_pickle=True) to read it with weights_only=True"
            )
        return pickle_path, _PickleSource(pickle_path)
    raise AdapterLoadError(f"{source}: {SAFETENSORS_NAME} is missing")


def _layout(
    config: Mapping[str, Any], prefixed: Mapping[str, str], tensors: _TensorSource, source: str
) -> tuple[str, dict[str, ModuleInfo], list[str]]:
    peft_type = str(config["peft_type"]).upper()
    keys = sorted(prefixed, key=natural_key)
    if peft_type in LYCORIS_TYPES:
        from .formats.reemit import lycoris_layout

        return "lora", *lycoris_layout(config, keys, prefixed, tensors, source)
    for key in keys:
        for fragment, variant in _UNSUPPORTED_KEYS.items():
            if fragment in key:
                raise UnsupportedAdapterError(f"{source}: {variant} is not supported (tensor {key})")
    if peft_type == "LORA":
        return "lora", *_lora_layout(config, keys, prefixed, tensors, source)
    return "ia3", *_ia3_layout(config, keys, prefixed, tensors, source)


def _lora_layout(config, keys, prefixed, tensors, source) -> tuple[dict[str, ModuleInfo], list[str]]:
    use_rslora = bool(config.get("use_rslora", False))
    found: dict[str, dict[str, str]] = {}
    layers: dict[str, str] = {}
    extra: list[str] = []
    for key in keys:
        for layer, (a_suffix, b_suffix) in LORA_SUFFIXES.items():
            matched = False
            for role, suffix in (("A", a_suffix), ("B", b_suffix)):
                if key.endswith("." + suffix):
                    name = key[: -len(suffix) - 1]
                    found.setdefault(name, {})[role] = key
                    layers[name] = layer
                    matched = True
            if matched:
                break
        else:
            if "lora_" in key:
                raise UnsupportedAdapterError(f"{source}: unrecognised LoRA tensor {key}")
            extra.append(key)
    modules: dict[str, ModuleInfo] = {}
    for name in sorted(found, key=natural_key):
        roles = found[name]
        if "A" not in roles or "B" not in roles:
            missing = "lora_A" if "A" not in roles else "lora_B"
            raise AdapterLoadError(f"{source}: module {name} has no {missing} tensor")
        for role in ("A", "B"):
            _check_float(tensors, prefixed[roles[role]], source)
        a_shape = tensors.shape(prefixed[roles["A"]])
        b_shape = tensors.shape(prefixed[roles["B"]])
        _check_lora_shapes(name, layers[name], a_shape, b_shape, source)
        rank = a_shape[0]
        if b_shape[1] != rank:
            raise AdapterLoadError(f"{source}: module {name} has factors of shapes {list(a_shape)} and {list(b_shape)} that do not chain")
        if layers[name] == "linear" and len(b_shape) > 2 and math.prod(b_shape[2:]) != 1:
            raise UnsupportedAdapterError(f"{source}: module {name}: convolutional lora_B with a {list(b_shape[2:])} kernel is not supported")
        try:
            r_cfg, alpha = lora_rank_and_alpha(config, name)
        except AdapterLoadError as exc:
            raise AdapterLoadError(f"{source}: {exc}") from None
        if r_cfg != rank:
            raise AdapterLoadError(f"{source}: module {name}: config gives rank {r_cfg} but its factors have rank {rank}")
        modules[name] = LoraModuleInfo(
            name=name, layer=layers[name], a_key=roles["A"], b_key=roles["B"], a_shape=a_shape, b_shape=b_shape,
            rank=rank, alpha=alpha, scaling=lora_scaling(rank, alpha, use_rslora),
        )
    if not modules:
        raise AdapterLoadError(f"{source}: no LoRA tensors found")
    return modules, extra


def _ia3_layout(config, keys, prefixed, tensors, source) -> tuple[dict[str, ModuleInfo], list[str]]:
    feedforward = config.get("feedforward_modules") or []
    modules: dict[str, ModuleInfo] = {}
    extra: list[str] = []
    for key in sorted(keys, key=natural_key):
        if key.endswith("." + IA3_SUFFIX):
            name = key[: -len(IA3_SUFFIX) - 1]
            _check_float(tensors, prefixed[key], source)
            shape = tensors.shape(prefixed[key])
            if not shape or sum(1 for size in shape if size != 1) > 1 or 0 in shape:
                raise AdapterLoadError(f"{source}: (IA)^3 tensor {key} has shape {list(shape)}; a scaling vector has "
                                       "one dimension above 1")
            modules[name] = Ia3ModuleInfo(name=name, key=key, shape=shape, is_feedforward=_matches_modules(feedforward, name))
        elif "ia3_" in key:
            raise UnsupportedAdapterError(f"{source}: unrecognised (IA)^3 tensor {key}")
        else:
            extra.append(key)
    if not modules:
        raise AdapterLoadError(f"{source}: no (IA)^3 tensors found")
    return modules, extra


_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _check_float(tensors: _TensorSource, key: str, source: str) -> None:
    """Adapter factors are floating point; integer or boolean data would be read as its bits."""
    dtype = tensors.dtype(key)
    if dtype not in _FLOAT_DTYPES:
        raise UnsupportedAdapterError(f"{source}: tensor {key} has dtype {str(dtype).removeprefix('torch.')}; "
                                      "adapter weights must be floating point (float32, float16, bfloat16, float64)")


def _check_lora_shapes(name: str, layer: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...], source: str) -> None:
    """The shapes PEFT gives each layer type: linear A [r, in], B [out, r]; embedding A [r, vocab],
    B [dim, r]; convolution A [r, in, k…], B [out, r, 1…] (as many dimensions as A)."""
    shapes = f"lora_A {list(a_shape)} and lora_B {list(b_shape)}"
    if len(a_shape) < 2 or len(b_shape) < 2:
        raise AdapterLoadError(f"{source}: module {name} has {shapes}; LoRA factors are matrices (at least 2 dimensions)")
    if 0 in a_shape or 0 in b_shape:
        raise AdapterLoadError(f"{source}: module {name} has an empty factor ({shapes})")
    if layer == "embedding" and (len(a_shape) != 2 or len(b_shape) != 2):
        raise AdapterLoadError(f"{source}: embedding module {name} has {shapes}; both must have 2 dimensions")
    if layer == "linear" and len(a_shape) != len(b_shape):
        raise AdapterLoadError(f"{source}: module {name} has {shapes}; a linear layer's factors have 2 dimensions "
                               "and a convolution's have the same number (3 to 5)")
    if len(a_shape) > 5:
        raise AdapterLoadError(f"{source}: module {name} has {shapes}; at most 5 dimensions (3-D convolution)")


def _matches_modules(targets: str | list[str], name: str) -> bool:
    """PEFT's target matching: a regex string must fully match, a list entry matches a suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)
