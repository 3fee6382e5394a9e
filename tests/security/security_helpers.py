"""Helpers for the security tests (tests/security/): hand-written tiny adapter folders (no model
needed) and the CLI. Imported by the test modules; the ``pair`` fixture is re-exported by conftest.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

MODULES = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")
PREFIX = "base_model.model."


def lora_config(**overrides: Any) -> dict[str, Any]:
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
              "base_model_name_or_path": "tiny-base", "task_type": "CAUSAL_LM"}
    config.update(overrides)
    return config


def write_lora(folder: Path, *, seed: int = 0, config: dict[str, Any] | None = None,
               tensors: dict[str, torch.Tensor] | None = None, pickle: bool = False) -> Path:
    """A LoRA folder: two 8x8 linear modules of rank 2 (or the given tensors and config)."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    if tensors is None:
        tensors = {}
        for name in MODULES:
            tensors[f"{PREFIX}{name}.lora_A.weight"] = torch.randn(2, 8, generator=generator)
            tensors[f"{PREFIX}{name}.lora_B.weight"] = torch.randn(8, 2, generator=generator)
    (folder / "adapter_config.json").write_text(json.dumps(config or lora_config()), encoding="utf-8")
    if pickle:
        torch.save(tensors, folder / "adapter_model.bin")
    else:
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def write_ia3(folder: Path, feedforward: list[str], *, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"{PREFIX}model.layers.0.mlp.down_proj.ia3_l": 1 + 0.1 * torch.randn(1, 8, generator=generator)}
    config = {"peft_type": "IA3", "target_modules": ["down_proj"], "feedforward_modules": feedforward,
              "base_model_name_or_path": "tiny-base"}
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def cli(*args: object):
    """Run the adaptermath CLI in-process; the result has exit_code, stdout and stderr."""
    from adaptermath.cli.main import main

    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result) -> str:
    """The CLI's one-line error (exit 2, ``error: ...``, no traceback); returns the message."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    """Two compatible LoRA folders under tmp_path/d2/."""
    return {"a": write_lora(tmp_path / "d2" / "sst2", seed=1), "b": write_lora(tmp_path / "d2" / "mnli", seed=2)}
