"""The positioned-read tensor reader gives exactly what safetensors reads, for every dtype."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from adaptermath import load_adapter
from adaptermath.io.safetensors_read import SafetensorsTensorReader


def test_reader_matches_safetensors_for_all_dtypes(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=g), "bf16": torch.randn(7, generator=g).bfloat16(),
        "f16": torch.randn(2, 2, 2, generator=g).half(), "f64": torch.randn(4, generator=g).double(),
        "i64": torch.arange(6).reshape(2, 3), "u8": torch.arange(5, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    expected = load_file(str(path))
    reader = SafetensorsTensorReader(path)
    for key, tensor in expected.items():
        got = reader.read_bytes(key).view(tensor.dtype).reshape(tensor.shape)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), key
    reader.close()


def test_mapped_views_match_safetensors_and_release_their_pages(tmp_path):
    """map_bytes views the mapped file (no copy) and gives what safetensors reads, for every dtype;
    release drops a large tensor's pages from the process's resident memory; prefetch is only a hint."""
    g = torch.Generator().manual_seed(1)
    tensors = {"bf16": torch.randn(3, 5, generator=g).bfloat16(), "i64": torch.arange(6).reshape(2, 3),
               "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 4),
               "big": torch.randn(4 << 20, generator=g)}  # 16 MiB
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path))
    expected = load_file(str(path))
    reader = SafetensorsTensorReader(path)
    for key, tensor in expected.items():
        reader.prefetch(key)
        got = reader.map_bytes(key).view(tensor.dtype).reshape(tensor.shape)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor), key

    def resident_kib() -> int:
        line = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:"))
        return int(line.split()[1])

    view = reader.map_bytes("big")
    float(view.view(torch.float32).sum())  # touch every page
    before = resident_kib()
    reader.release("big")
    assert before - resident_kib() > 12 * 1024  # most of the 16 MiB left the process
    assert torch.equal(view.view(torch.float32), expected["big"])  # and read in again when touched
    del view, got
    reader.close()


def test_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"x": torch.randn(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="outside the file"):
        SafetensorsTensorReader(path)


def test_adapter_tensors_come_from_positioned_reads(tmp_path):
    import json

    folder = tmp_path / "adapter"
    folder.mkdir()
    a, b = torch.randn(2, 6), torch.randn(4, 2)
    save_file({"base_model.model.layer.q.lora_A.weight": a, "base_model.model.layer.q.lora_B.weight": b},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}))
    module = load_adapter(folder).module("layer.q")
    assert torch.equal(module.A, a) and torch.equal(module.B, b)
