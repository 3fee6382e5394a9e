"""Make a tiny base model and a few PEFT adapters to try adaptermath on, offline, in seconds.

    python recipes/quickstart/make_adapters.py ./demo

writes ./demo/base (a 2-layer Llama-shaped model with random weights) and, from ONE shared LoRA
initialisation, three "trained" LoRA adapters (./demo/sst2, ./demo/mnli, ./demo/toxic) plus an
(IA)^3 adapter (./demo/ia3). "Training" moves B (and l) a lot and A a little, as real training does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def make(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    adapters = {
        "sst2": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "mnli": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "toxic": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "ia3": IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    }
    for seed, (name, peft_config) in enumerate(adapters.items(), start=1):
        model = LlamaForCausalLM.from_pretrained(root / "base")
        torch.manual_seed(0)  # the shared initialisation
        peft_model = get_peft_model(model, peft_config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if param.requires_grad:
                    drift = 0.02 if "lora_A" in param_name else 0.3
                    param.add_(drift * torch.randn(param.shape, generator=generator))
        peft_model.save_pretrained(root / name)
        print(f"wrote {root / name}")


if __name__ == "__main__":
    make(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"))
