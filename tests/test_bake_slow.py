"""A real model (slow; ``pytest -m slow``): bake a LoRA into SmolLM2-135M and generate with transformers."""

from __future__ import annotations

import pytest
import torch

import adaptermath as am
from adaptermath.experiments import assets

pytestmark = pytest.mark.slow


def test_bake_a_lora_into_smollm2_and_generate(tmp_path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        base = assets.smollm2_model_dir()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.002)
    peft_model.save_pretrained(tmp_path / "lora")
    result = am.bake(base, str(tmp_path / "lora"), output=tmp_path / "baked", base_mismatch="ok")
    assert len(result.updated) == 3 * model.config.num_hidden_layers

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "baked")
    baked, info = AutoModelForCausalLM.from_pretrained(tmp_path / "baked", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                          str(tmp_path / "lora")).merge_and_unload().eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(baked.eval()(**prompt).logits, reference(**prompt).logits, rtol=1e-5, atol=1e-5)
        out = baked.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert answer.strip()
