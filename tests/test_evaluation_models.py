"""Base-model cache and adapters on live models: attach, swap in place, detach -- checked against PEFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from evaluation_tiny import (  # one_torch_thread: autouse fixture
    one_torch_thread,  # noqa: F401
    tiny_bert,
    tiny_llama,
    word_tokenizer,
)
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from adaptermath.errors import AdapterLoadError
from adaptermath.evaluation import (
    attach_adapter,
    clear_model_cache,
    detach_adapter,
    evaluate_classification,
    load_base_model,
)
from adaptermath.evaluation.models import kind_of_config

IDS = torch.tensor([[1, 6, 8, 11, 13, 20, 21]])


def save_lora(folder: Path, seed: int, r: int = 4, targets=("q_proj", "v_proj")) -> Path:
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=8, target_modules=list(targets), init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(tiny_llama(), config).save_pretrained(folder)
    return folder


def peft_logits(folder: Path) -> torch.Tensor:
    """Logits of PEFT's own loader on a fresh copy of the base model (the independent reference)."""
    with torch.no_grad():
        return PeftModel.from_pretrained(tiny_llama(), folder).eval()(IDS).logits


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": save_lora(root / "a", seed=1),
        "b": save_lora(root / "b", seed=2),
        "rank2": save_lora(root / "rank2", seed=3, r=2),
        "mlp": save_lora(root / "mlp", seed=4, targets=("up_proj",)),
    }


def test_attach_swap_and_detach_agree_with_peft(adapters: dict[str, Path]) -> None:
    base = tiny_llama()
    original = logits(base)
    model = attach_adapter(base, adapters["a"])
    torch.testing.assert_close(logits(model), peft_logits(adapters["a"]))
    assert not torch.allclose(logits(model), original)

    swapped = attach_adapter(model, adapters["b"])  # same config: tensors copied in place
    assert swapped is model
    torch.testing.assert_close(logits(swapped), peft_logits(adapters["b"]))

    rebuilt = attach_adapter(swapped, adapters["rank2"])  # different rank: rebuilt on the same base
    assert rebuilt is not swapped and rebuilt.get_base_model() is base
    torch.testing.assert_close(logits(rebuilt), peft_logits(adapters["rank2"]))
    rebuilt = attach_adapter(rebuilt, adapters["mlp"])  # different targets
    torch.testing.assert_close(logits(rebuilt), peft_logits(adapters["mlp"]))

    plain = detach_adapter(rebuilt)
    assert plain is base and not hasattr(plain, "peft_config")
    torch.testing.assert_close(logits(plain), original, rtol=0, atol=0)


def test_in_memory_adapters(adapters: dict[str, Path]) -> None:
    import json

    config = json.loads((adapters["b"] / "adapter_config.json").read_text())
    state = load_file(adapters["b"] / "adapter_model.safetensors")

    class Composed:  # what adaptermath.compose returns: .config and .state_dict()
        def __init__(self) -> None:
            self.config = config

        def state_dict(self) -> dict[str, torch.Tensor]:
            return state

    for source in ((config, state), Composed()):
        model = attach_adapter(tiny_llama(), source)
        torch.testing.assert_close(logits(model), peft_logits(adapters["b"]))


def test_modules_to_save_head_is_used_and_restored(tmp_path: Path) -> None:
    torch.manual_seed(5)
    config = LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"],
                        init_lora_weights=False, task_type="SEQ_CLS")
    trained = get_peft_model(tiny_bert(seed=1), config)
    with torch.no_grad():
        trained.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 2.0)
    trained.save_pretrained(tmp_path / "cls")
    tokenizer = word_tokenizer("encoder")
    records = [{"text": t, "label": "a"} for t in ("the movie was great", "i hated it", "ok", "boring")]

    base = tiny_bert(seed=1)
    before = evaluate_classification(base, tokenizer, records, labels="a,b,c").scores
    model = attach_adapter(base, tmp_path / "cls")
    reference = PeftModel.from_pretrained(tiny_bert(seed=1), tmp_path / "cls")
    ours = evaluate_classification(model, tokenizer, records, labels="a,b,c")
    theirs = evaluate_classification(reference, tokenizer, records, labels="a,b,c")
    torch.testing.assert_close(torch.tensor(ours.scores), torch.tensor(theirs.scores))
    after = evaluate_classification(detach_adapter(model), tokenizer, records, labels="a,b,c").scores
    assert after == before


def test_adapter_errors_are_one_line(adapters: dict[str, Path], tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_bytes((adapters["a"] / "adapter_config.json").read_bytes())
    torch.save(load_file(adapters["a"] / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    with pytest.raises(AdapterLoadError, match="holds only the pickle adapter_model.bin; pass --allow-pickle"):
        attach_adapter(tiny_llama(), pickled)
    model = attach_adapter(tiny_llama(), pickled, allow_pickle=True)
    torch.testing.assert_close(logits(model), peft_logits(adapters["a"]))

    base = tiny_llama()
    original = logits(base)
    state = load_file(adapters["a"] / "adapter_model.safetensors")
    import json

    config = json.loads((adapters["a"] / "adapter_config.json").read_text())
    wrong = {key.replace("q_proj", "k_proj"): value for key, value in state.items()}
    with pytest.raises(AdapterLoadError) as excinfo:
        attach_adapter(base, (config, wrong))
    assert "\n" not in str(excinfo.value)
    torch.testing.assert_close(logits(base), original, rtol=0, atol=0)  # nothing left behind
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(AdapterLoadError):
            attach_adapter(base, bad)


def test_base_model_is_loaded_once_and_handed_back_plain(adapters: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "base"
    tiny_llama().save_pretrained(folder)
    word_tokenizer("causal").save_pretrained(folder)
    clear_model_cache()
    first = load_base_model(folder, device="cpu")
    assert first.kind == "causal-lm" and first.model.dtype == torch.float32
    original = logits(first.model)
    attach_adapter(first.model, adapters["a"])
    second = load_base_model(folder, device="cpu")
    assert second is first
    assert not any("lora" in name for name, _ in second.model.named_modules())
    torch.testing.assert_close(logits(second.model), original, rtol=0, atol=0)
    half = load_base_model(folder, device="cpu", dtype="bfloat16")
    assert half is not first and half.model.dtype == torch.bfloat16
    clear_model_cache()


def test_kind_from_config() -> None:
    assert kind_of_config(tiny_llama().config) == "causal-lm"
    assert kind_of_config(tiny_bert().config) == "causal-lm"  # no architectures recorded yet
    config = tiny_bert().config
    config.architectures = ["BertForSequenceClassification"]
    assert kind_of_config(config) == "seq-cls"
