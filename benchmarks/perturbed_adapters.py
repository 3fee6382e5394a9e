"""Three small LoRA adapters on SmolLM2 for the cost benchmarks (``sweep_cost.py``, ``search_cost.py``).

Each is a shared zero-B initialisation with Gaussian noise added, seeded per name:
``A += 0.002·N(0, 1)``, ``B += 0.02·N(0, 1)``, so the compositions differ and their scores are not ties.
"""

from __future__ import annotations

from pathlib import Path

import torch

NAMES = ("cls", "tgt", "src")


def perturbed_adapters(base: str | Path, work: Path, names: tuple[str, ...] = NAMES) -> dict[str, Path]:
    """Write one perturbed LoRA (r=8 on q_proj, v_proj) per name under ``work``; return name → folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import adaptermath as am

    init = am.init_adapter(base, work / "init", kind="lora", target_modules=["q_proj", "v_proj"], r=8, lora_alpha=16,
                           seed=0)
    for seed, name in enumerate(names, start=1):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(init), is_trainable=True)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if param.requires_grad:
                    param.add_((0.002 if "lora_A" in pname else 0.02) * torch.randn(param.shape, generator=generator))
        model.save_pretrained(work / name)
    return {name: work / name for name in names}
