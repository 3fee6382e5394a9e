"""Bad input: each case gives its one-line error and leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import adaptermath as am
from adaptermath.errors import AdapterLoadError, AdapterMathError, CompositionError, OutputExistsError, UnsafeOutputError, UnsupportedAdapterError


def copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc) and str(exc)


def assert_nothing_left(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}.")], list(parent.iterdir())


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(AdapterLoadError, match="no such adapter folder") as info:
        am.load_adapter(tmp_path / "nope")
    assert_one_line(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match="adapter_config.json is missing"):
        am.load_adapter(tmp_path / "empty")


def test_corrupt_config(tiny, tmp_path):
    bad = copy_adapter(tiny["lora_a"], tmp_path / "bad")
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterLoadError, match="not valid JSON") as info:
        am.load_adapter(bad)
    assert_one_line(info.value)


def test_truncated_safetensors(tiny, tmp_path):
    bad = copy_adapter(tiny["lora_a"], tmp_path / "trunc")
    data = (bad / "adapter_model.safetensors").read_bytes()
    (bad / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterLoadError, match="not a readable safetensors file") as info:
        am.load_adapter(bad)
    assert_one_line(info.value)
    (bad / "adapter_model.safetensors").write_bytes(b"\x05")
    with pytest.raises(AdapterLoadError, match="not a readable safetensors file"):
        am.load_adapter(bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_weights_leave_nothing_behind(tiny, tmp_path, value):
    bad = copy_adapter(tiny["lora_a"], tmp_path / "nan")
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    last = sorted(tensors)[-1]  # the last module: the error comes mid-stream
    tensors[last][0, 0] = value
    save_file(tensors, str(bad / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(AdapterLoadError, match="NaN or Inf") as info:
        am.compose("a + x", {"a": tiny["lora_b"], "x": bad}, space="param").save(tmp_path / "out")
    assert_one_line(info.value)
    assert_nothing_left(tmp_path, "out")


def test_rank_mismatch_in_param_space_suggests_delta(tiny):
    with pytest.raises(CompositionError, match="--space delta") as info:
        am.compose("a + b", {"a": tiny["lora_a"], "b": tiny["lora_r8_kq"]})
    assert_one_line(info.value)


def test_shape_mismatch_between_models(tiny, tmp_path):
    bad = copy_adapter(tiny["lora_a"], tmp_path / "wide")
    tensors = load_file(str(bad / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    tensors[key] = torch.randn(4, 24)
    save_file(tensors, str(bad / "adapter_model.safetensors"))
    with pytest.raises(CompositionError, match="same base model") as info:
        am.compose("a + b", {"a": tiny["lora_a"], "b": bad}, space="delta")
    assert_one_line(info.value)


def test_factor_rank_disagrees_with_config(tiny, tmp_path):
    bad = copy_adapter(tiny["lora_a"], tmp_path / "r")
    config = json.loads((bad / "adapter_config.json").read_text())
    config["r"] = 6
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match="config gives rank 6"):
        am.load_adapter(bad)


def test_unknown_names_and_unused_operands(tiny):
    with pytest.raises(AdapterMathError, match="unknown name 'c'") as info:
        am.compose("a + c", {"a": tiny["lora_a"]})
    assert "-a c=PATH" in str(info.value)
    with pytest.raises(AdapterMathError, match="given but not used"):
        am.compose("a", {"a": tiny["lora_a"], "b": tiny["lora_b"]})


def test_pickle_needs_opt_in(tiny, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny["lora_a"] / "adapter_config.json", folder)
    torch.save(load_file(str(tiny["lora_a"] / "adapter_model.safetensors")), folder / "adapter_model.bin")
    with pytest.raises(AdapterLoadError, match="--allow-pickle") as info:
        am.load_adapter(folder)
    assert_one_line(info.value)
    adapter = am.load_adapter(folder, allow_pickle=True)
    assert adapter.weights_file.name == "adapter_model.bin"
    out = am.compose("-x", {"x": folder}, allow_pickle=True).state_dict()
    reference = am.compose("-x", {"x": tiny["lora_a"]}).state_dict()
    for key in reference:
        assert torch.equal(out[key], reference[key])


def test_mixing_lora_and_ia3(tiny):
    with pytest.raises(CompositionError, match="cannot combine LoRA with \\(IA\\)\\^3"):
        am.compose("a + b", {"a": tiny["lora_a"], "b": tiny["ia3_a"]})


def test_different_base_models(tiny, tmp_path):
    other = copy_adapter(tiny["lora_b"], tmp_path / "other")
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/else"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CompositionError, match="different base models"):
        am.compose("a + b", {"a": tiny["lora_a"], "b": other})


def test_unsupported_variants_are_named(tiny, tmp_path):
    dora = copy_adapter(tiny["lora_a"], tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    config["use_dora"] = True
    (dora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedAdapterError, match="DoRA"):
        am.load_adapter(dora)
    prompt = copy_adapter(tiny["lora_a"], tmp_path / "prompt")
    (prompt / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING"}))
    with pytest.raises(UnsupportedAdapterError, match="prompt tuning"):
        am.load_adapter(prompt)


def test_existing_output_needs_force_and_is_replaced_atomically(tiny, tmp_path):
    out = tmp_path / "out"
    am.negate(tiny["lora_a"]).save(out)
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        am.negate(tiny["lora_b"]).save(out)
    assert (out / "adapter_model.safetensors").read_bytes() == before
    am.negate(tiny["lora_b"]).save(out, force=True)
    assert (out / "adapter_model.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_output_cannot_be_an_input(tiny, tmp_path):
    folder = copy_adapter(tiny["lora_a"], tmp_path / "in")
    with pytest.raises(UnsafeOutputError, match="is the input"):
        am.negate(folder).save(folder, force=True)


def test_option_errors(tiny):
    with pytest.raises(CompositionError, match="add --space delta"):
        am.compose("a", {"a": tiny["lora_a"]}, rank=2)
    with pytest.raises(CompositionError, match="LoRA only"):
        am.compose("a", {"a": tiny["ia3_a"]}, space="delta", rank=2)
    with pytest.raises(CompositionError, match="--heads 'z' is not an operand"):
        am.compose("a", {"a": tiny["bert_a"]}, heads="z")
    with pytest.raises(CompositionError, match="every coefficient is zero"):
        am.compose("a - a", {"a": tiny["lora_a"]}, normalize=True)
