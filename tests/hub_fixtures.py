"""Pytest fixtures for Hub tests: a running :class:`FakeHub`, an environment pointing at it, and
tiny PEFT adapter folders. Import the fixtures you need into a test module::

    from hub_fixtures import fake_hub, hub_env, tiny_adapters  # noqa: F401

``hub_env`` sets HF_ENDPOINT to the fake Hub, HF_HUB_CACHE to a fresh temporary folder and
removes HF_TOKEN / HF_HUB_OFFLINE, so code that reads the Hub settings when it runs (as
:mod:`adaptermath.hub` does) talks to the fake Hub only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from hub_server import FakeHub

ALICE_TOKEN = "hf_aliceTOKENdoNotLeak0123456789"
BOB_TOKEN = "hf_bobTOKENdoNotLeak9876543210"
TINY_BASE_MODEL = "tiny-org/tiny-llama"


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A fake Hub on a random loopback port, with users alice and bob; stopped after the test."""
    hub = FakeHub(tokens={ALICE_TOKEN: "alice", BOB_TOKEN: "bob"}).start()
    try:
        yield hub
    finally:
        hub.stop()
    assert not hub.server_errors, hub.server_errors
    assert not hub.unhandled, f"the client called endpoints the fake Hub does not serve: {hub.unhandled}"


@pytest.fixture
def hub_env(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """Point the Hub settings at ``fake_hub`` with an empty cache and no token in the environment.

    A token saved on this machine by ``hf auth login`` is still sent by huggingface_hub; the fake
    Hub then knows it as a user with access to nothing, so "anonymous" requests fail the same way.
    """
    from huggingface_hub import get_token

    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    stored = get_token()
    if stored is not None:
        fake_hub.tokens[stored] = "someone-else"
    return fake_hub


def _save_tiny_adapter(kind: str, folder: Path, seed: int) -> Path:
    """Save a PEFT adapter of ``kind`` ('lora' or 'ia3') for a tiny random Llama; no README."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
    )
    model = LlamaForCausalLM(config)
    if kind == "lora":
        peft_config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    else:
        peft_config = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    get_peft_model(model, peft_config).save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)  # PEFT's template card; adaptermath outputs have none
    # Name a Hub base model afterwards: with it set, save_pretrained would try to reach the real Hub.
    config_path = folder / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = TINY_BASE_MODEL
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
    return folder


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny PEFT adapter folders: two LoRAs ('lora', 'lora2') and one (IA)^3 ('ia3')."""
    root = tmp_path_factory.mktemp("tiny-adapters")
    return {
        "lora": _save_tiny_adapter("lora", root / "lora", seed=0),
        "lora2": _save_tiny_adapter("lora", root / "lora2", seed=1),
        "ia3": _save_tiny_adapter("ia3", root / "ia3", seed=2),
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_provenance(folder: Path, inputs: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """Write an ``adaptermath.json`` (the documented schema) into ``folder``; returns it."""
    record: dict[str, Any] = {
        "format": "adaptermath.provenance/1",
        "adaptermath_version": "0.1.0",
        "expression": "cls + 0.3*(tgt - src)",
        "normal_form": "1*cls + 0.3*tgt - 0.3*src",
        "coefficients": {"cls": 1.0, "tgt": 0.3, "src": -0.3},
        "variables": {"λ": 0.3},
        "space": "param",
        "method": "linear",
        "options": {"negate_factor": "B", "normalize": False, "rank": None, "heads": None, "dtype": None},
        "adapter_type": "lora",
        "base_model": TINY_BASE_MODEL,
        "inputs": inputs,
        "recipe": None,
        "evaluation": [],
    }
    record.update(overrides)
    (folder / "adaptermath.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return record


def input_record(name: str, folder: Path, *, ref: str | None = None, revision: str | None = None,
                 commit_sha: str | None = None, license: str | None = None) -> dict[str, Any]:
    """One provenance input entry for the adapter in ``folder``, file hashes computed here."""
    entry: dict[str, Any] = {
        "name": name,
        "ref": ref or str(folder),
        "path": str(folder),
        "revision": revision,
        "commit_sha": commit_sha,
        "files": {f: sha256_of(folder / f) for f in ("adapter_model.safetensors", "adapter_config.json")},
    }
    if license is not None:
        entry["license"] = license
    return entry
