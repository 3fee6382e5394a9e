"""Real offline models (slow; run with ``pytest -m slow``): SmolLM2 conversion and MiniLM loading."""

from __future__ import annotations

import pytest
import torch

from adaptermath.experiments import assets

pytestmark = pytest.mark.slow


def _require(locate):
    try:
        return locate()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))


def test_smollm2_converts_loads_and_answers() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _require(assets.smollm2_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert getattr(model.config, "quantization_config", None) is None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**prompt).logits
        assert torch.isfinite(logits).all()
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_minilm_is_a_22m_bert() -> None:
    from transformers import AutoModel

    folder = _require(assets.minilm_model_dir)
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "BertModel"
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 22.7
