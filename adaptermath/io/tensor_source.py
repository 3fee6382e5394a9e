"""Lazy tensor sources: a safetensors file (header through ``safe_open``, each tensor by a positioned
read) or a pickled state dict, behind one small protocol (keys, shape, dtype, get, metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from ..errors import AdapterLoadError, UnsupportedAdapterError


class TensorSource(Protocol):
    def keys(self) -> list[str]: ...
    def shape(self, key: str) -> tuple[int, ...]: ...
    def dtype(self, key: str) -> torch.dtype: ...
    def get(self, key: str) -> torch.Tensor: ...


ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class SafetensorsSource:
    """Lazy access to a safetensors file: the header through ``safe_open`` (which validates the
    file), each tensor by a positioned read (:mod:`adaptermath.io.safetensors_read`), so pages
    already used do not stay resident while a large model is streamed."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        from .safetensors_read import SafetensorsTensorReader

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
        if name not in ST_DTYPES:
            raise UnsupportedAdapterError(f"{self.path}: tensor {key} has unsupported dtype {name}")
        return ST_DTYPES[name]

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._reader.read_bytes(key).view(self.dtype(key)).reshape(self.shape(key))
        except Exception as exc:
            raise AdapterLoadError(f"{self.path}: cannot read tensor {key} ({exc})") from None

    def metadata(self) -> dict[str, str]:
        return dict(self._file.metadata() or {})


class PickleSource:
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
