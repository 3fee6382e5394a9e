"""Shared fixtures: tiny base models and adapters built once per test session."""

from __future__ import annotations

import os

# OpenMP's busy-waiting makes multi-threaded torch several times slower on a shared 2-core
# machine; it is read when torch loads, so it must be set before the first import of torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest
import torch

from tiny_adapters import build_base, ia3, lora, make_adapter


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (and don't fight other processes for the 2 cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Base models and adapters; names say what each is (see tests/tiny_adapters.py)."""
    root = tmp_path_factory.mktemp("tiny")
    paths: dict[str, Path] = {}
    for kind in ("llama", "gpt2", "bert"):
        paths[f"{kind}_base"] = build_base(kind, root / f"{kind}_base")
    llama = paths["llama_base"]
    targets = ["q_proj", "v_proj", "down_proj"]
    # Same initialisation (init_seed=0), different "training" seeds.
    paths["lora_a"] = make_adapter("llama", llama, root / "lora_a", lora(targets), seed=1)
    paths["lora_b"] = make_adapter("llama", llama, root / "lora_b", lora(targets), seed=2)
    paths["lora_c"] = make_adapter("llama", llama, root / "lora_c", lora(targets), seed=3)
    # Different initialisation.
    paths["lora_other_init"] = make_adapter("llama", llama, root / "lora_other_init", lora(targets), seed=4, init_seed=7)
    # Different rank, rank/alpha patterns, different targets, rsLoRA.
    paths["lora_r8_kq"] = make_adapter("llama", llama, root / "lora_r8_kq", lora(["q_proj", "k_proj"], r=8, alpha=4), seed=5)
    paths["lora_patterns"] = make_adapter(
        "llama", llama, root / "lora_patterns",
        lora(targets, r=4, alpha=8, rank_pattern={"down_proj": 2}, alpha_pattern={"v_proj": 2}), seed=6,
    )
    paths["lora_rslora"] = make_adapter("llama", llama, root / "lora_rslora", lora(targets, use_rslora=True), seed=8)
    paths["ia3_a"] = make_adapter("llama", llama, root / "ia3_a", ia3(["k_proj", "v_proj", "down_proj"], ["down_proj"]), seed=1)
    paths["ia3_b"] = make_adapter("llama", llama, root / "ia3_b", ia3(["k_proj", "v_proj", "down_proj"], ["down_proj"]), seed=2)
    gpt2 = paths["gpt2_base"]
    paths["gpt2_a"] = make_adapter("gpt2", gpt2, root / "gpt2_a", lora(["c_attn", "c_fc"], fan_in_fan_out=True), seed=1)
    paths["gpt2_b"] = make_adapter("gpt2", gpt2, root / "gpt2_b", lora(["c_attn", "c_fc"], fan_in_fan_out=True), seed=2)
    bert = paths["bert_base"]
    cls_config = dict(modules_to_save=["classifier"], task_type="SEQ_CLS")
    paths["bert_a"] = make_adapter("bert", bert, root / "bert_a", lora(["query", "value"], **cls_config), seed=1)
    paths["bert_b"] = make_adapter("bert", bert, root / "bert_b", lora(["query", "value"], **cls_config), seed=2)
    return paths
