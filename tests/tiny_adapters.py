"""Tiny random base models and PEFT adapters for the core tests (no downloads, milliseconds each).

"Training" is simulated: an adapter starts from PEFT's own initialisation under ``init_seed``
(LoRA: A random, B zero; (IA)^3: l = 1), then ``seed`` drives a drift — B (and l) move a lot, A
moves a little, as in real LoRA training. Same ``init_seed`` = shared initialisation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

LLAMA = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)


def build_base(kind: str, folder: Path) -> Path:
    """Save a tiny random base model of ``kind`` (llama | gpt2 | bert) to ``folder``."""
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**LLAMA))
    elif kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0))
    elif kind == "bert":
        model = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3))
    else:
        raise ValueError(kind)
    model.save_pretrained(folder)
    return folder


def load_base(kind: str, folder: Path):
    cls = {"llama": LlamaForCausalLM, "gpt2": GPT2LMHeadModel, "bert": BertForSequenceClassification}[kind]
    model = cls.from_pretrained(folder)
    model.eval()
    return model


def make_adapter(kind: str, base: Path, out: Path, config: Any, *, seed: int, init_seed: int = 0,
                 drift_a: float = 0.02, drift_b: float = 0.3, drift_l: float = 0.3) -> Path:
    """Create an adapter from ``config`` on the base model, perturb it under ``seed``, save it."""
    model = load_base(kind, base)
    torch.manual_seed(init_seed)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if not param.requires_grad:
                continue
            noise = torch.randn(param.shape, generator=generator)
            if "lora_A" in name or "lora_embedding_A" in name:
                param.add_(drift_a * noise)
            elif "lora_B" in name or "lora_embedding_B" in name:
                param.add_(drift_b * noise)
            elif "ia3_l" in name:
                param.add_(drift_l * noise)
            else:  # modules_to_save copies (e.g. a classifier head)
                param.add_(0.5 * noise)
    peft_model.save_pretrained(out)
    return out


def lora(targets: list[str], r: int = 4, alpha: float = 8, **kwargs: Any) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, **kwargs)


def ia3(targets: list[str], feedforward: list[str]) -> IA3Config:
    return IA3Config(target_modules=targets, feedforward_modules=feedforward)


def adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The saved tensors, read with safetensors directly (not through adaptermath)."""
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def peft_logits(kind: str, base: Path, adapter: Path, inputs: torch.Tensor) -> torch.Tensor:
    """Logits of the base model with ``adapter`` loaded by PEFT, checking no key is missing or unexpected."""
    model = PeftModel.from_pretrained(load_base(kind, base), str(adapter))
    result = model.load_adapter(str(adapter), adapter_name="keycheck")
    assert not result.unexpected_keys, result.unexpected_keys
    assert not [k for k in result.missing_keys if "keycheck" in k], result.missing_keys
    model.set_adapter("default")
    model.eval()
    with torch.no_grad():
        return model(inputs).logits


def logits_with_updates(kind: str, base: Path, updates: dict[str, torch.Tensor], inputs: torch.Tensor,
                        overrides: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Logits of the base model after adding ΔW (out×in orientation) to named modules' weights.

    Conv1D weights (GPT-2) are stored transposed (in×out), so their ΔW is added transposed.
    ``overrides`` replaces whole parameters (e.g. a classifier head).
    """
    model = load_base(kind, base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, delta in updates.items():
            module = modules[name]
            weight = module.weight
            if type(module).__name__ == "Conv1D":
                weight.add_(delta.T.to(weight.dtype))
            else:
                weight.add_(delta.to(weight.dtype))
        for name, value in (overrides or {}).items():
            dict(model.named_parameters())[name].copy_(value)
        return model(inputs).logits
