"""The streaming safetensors writer: files it writes read back exactly with the safetensors library,
whatever the tensors' sizes (several write() calls for one tensor), dtypes and order."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from adaptermath.io.safetensors_stream import WRITE_CHUNK, SafetensorsStreamWriter


def test_written_tensors_read_back_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(3 * WRITE_CHUNK // 4 + 1000, 2, generator=generator),  # > 1 MiB: written in pieces
        "small.bf16": torch.randn(7, 3, generator=generator).to(torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "strided": torch.randn(64, 32, generator=generator).T,  # not contiguous
        "ints": torch.arange(10, dtype=torch.int64),
    }
    path = tmp_path / "out.safetensors"
    order = ["small.bf16", "big", "empty", "strided", "ints"]
    with SafetensorsStreamWriter(path, order, metadata={"format": "pt"}) as writer:
        for key in order:
            writer.add(key, tensors[key])
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_missing_or_repeated_tensors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="never written"):
        with SafetensorsStreamWriter(tmp_path / "a.safetensors", ["x", "y"]) as writer:
            writer.add("x", torch.ones(2))
    with pytest.raises(ValueError, match="written twice"):
        with SafetensorsStreamWriter(tmp_path / "b.safetensors", ["x"]) as writer:
            writer.add("x", torch.ones(2))
            writer.add("x", torch.ones(2))
