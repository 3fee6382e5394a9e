"""Stable-Diffusion LoRA files (kohya and diffusers keys): reading, round trips, compose, naming, bad input.

Files are synthesised here; ΔW is checked against (α/r)·up·down computed from the raw tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import adaptermath as am
from adaptermath.errors import AdapterLoadError, AdapterMathError, CompositionError, OutputExistsError, UnsupportedAdapterError
from adaptermath.formats import convert, detect_format
from adaptermath.formats.kohya import KohyaNameError, dotted_to_kohya, kohya_to_dotted

# kohya name -> (down shape, up shape, alpha or None); conv 3x3, conv 1x1 and linear modules.
MODULES = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": ((4, 8, 1, 1), (8, 4, 1, 1), 2.0),
    "lora_unet_down_blocks_0_resnets_0_conv1": ((4, 8, 3, 3), (8, 4, 1, 1), 0.1),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0": ((2, 8), (8, 2), None),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj": ((4, 8), (16, 4), 4.0),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((4, 6), (6, 4), 3.0),
}
METADATA = {"ss_network_dim": "4", "ss_network_alpha": "2.0", "ss_output_name": "style", "sshs_model_hash": "0123abcd"}


def make_kohya(path: Path, seed: int, dtype: torch.dtype = torch.float16) -> Path:
    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, (down, up, alpha) in MODULES.items():
        tensors[f"{name}.lora_down.weight"] = torch.randn(down, generator=g).to(dtype)
        tensors[f"{name}.lora_up.weight"] = torch.randn(up, generator=g).to(dtype)
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(alpha, dtype=dtype)
    save_file(tensors, str(path), metadata=METADATA)
    return path


def kohya_delta(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """(α/r)·up·down of one module, flattened to (out, in·kh·kw), from raw tensors (α = r when absent)."""
    down = tensors[f"{name}.lora_down.weight"].double()
    up = tensors[f"{name}.lora_up.weight"].double()
    rank = down.shape[0]
    alpha = float(tensors[f"{name}.alpha"]) if f"{name}.alpha" in tensors else rank
    return (alpha / rank) * up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


@pytest.fixture()
def kohya_a(tmp_path: Path) -> Path:
    return make_kohya(tmp_path / "style_a.safetensors", seed=1)


@pytest.fixture()
def kohya_b(tmp_path: Path) -> Path:
    return make_kohya(tmp_path / "style_b.safetensors", seed=2)


def test_kohya_file_loads_as_lora_with_alpha_over_rank_scaling(kohya_a):
    adapter = am.load_adapter(kohya_a)
    raw = load_file(str(kohya_a))
    assert adapter.kind == "lora" and adapter.format == "kohya" and set(adapter.modules) == set(MODULES)
    assert adapter.metadata() == METADATA and adapter.files() == {kohya_a.name: kohya_a}
    for module in adapter.iter_modules():
        assert torch.allclose(module.delta().double(), kohya_delta(raw, module.name), rtol=1e-6, atol=1e-6), module.name
    assert adapter.modules["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"].scaling == 1.0
    assert detect_format(kohya_a).name == "kohya"


@pytest.mark.parametrize("middle", ["peft", "diffusers"])
def test_kohya_round_trip_is_byte_exact_and_keeps_delta(kohya_a, tmp_path, middle):
    mid = tmp_path / ("mid" if middle == "peft" else "mid.safetensors")
    convert(kohya_a, mid, to=middle)
    converted = am.load_adapter(mid)
    raw = load_file(str(kohya_a))
    for name in MODULES:
        dotted = kohya_to_dotted(name)
        assert torch.allclose(converted.module(dotted).delta().double(), kohya_delta(raw, name), rtol=1e-6, atol=1e-6)
    back = tmp_path / "back.safetensors"
    convert(mid, back, to="kohya")
    again = load_file(str(back))
    assert set(again) == set(raw)
    for key, tensor in raw.items():
        assert again[key].dtype == tensor.dtype and again[key].shape == tensor.shape, key
        assert torch.equal(again[key], tensor), key
    assert metadata_of(back) == METADATA


def test_converted_peft_folder_means_the_same_update_to_peft(kohya_a, tmp_path):
    """PEFT itself loads the converted folder on a model with the diffusers module paths."""
    convert(kohya_a, tmp_path / "peft", to="peft")
    torch.manual_seed(0)
    model = PeftModel.from_pretrained(TinyPipeline(), str(tmp_path / "peft")).eval()
    raw = load_file(str(kohya_a))
    for name in MODULES:
        layer = model.base_model.model.get_submodule(kohya_to_dotted(name))
        with torch.no_grad():
            delta = layer.get_delta_weight("default").double()
        assert torch.allclose(delta.reshape(delta.shape[0], -1), kohya_delta(raw, name), rtol=1e-3, atol=1e-3), name


def test_diffusers_file_with_adapter_metadata_reads_alpha(kohya_a, tmp_path):
    out = tmp_path / "d.safetensors"
    convert(kohya_a, out, to="diffusers")
    meta = metadata_of(out)
    assert meta["format"] == "pt" and "lora_adapter_metadata" in meta
    packed = json.loads(meta["lora_adapter_metadata"])
    assert packed["unet.alpha_pattern"]["down_blocks.0.resnets.0.conv1"] == pytest.approx(0.1, abs=1e-4)
    adapter = am.load_adapter(out)
    assert adapter.format == "diffusers" and detect_format(out).name == "diffusers"
    info = adapter.modules["unet.down_blocks.0.resnets.0.conv1"]
    assert info.scaling == pytest.approx(float(torch.tensor(0.1, dtype=torch.float16)) / 4)


def test_compose_of_kohya_files_writes_kohya_keys_and_keeps_metadata(kohya_a, kohya_b, tmp_path):
    result = am.compose("0.6*a - 0.3*b", {"a": kohya_a, "b": kohya_b}, space="delta")
    out = result.save(tmp_path / "merged.safetensors")
    tensors = load_file(str(out))
    assert all(key.startswith("lora_") for key in tensors)
    assert {k.rsplit(".", 1)[0].removesuffix(".lora_down").removesuffix(".lora_up") for k in tensors} == set(MODULES)
    meta = metadata_of(out)
    assert {k: v for k, v in meta.items() if k != "adaptermath.provenance"} == {k: v for k, v in METADATA.items() if k != "sshs_model_hash"}
    assert json.loads(meta["adaptermath.provenance"])["normal_form"] == str(result.combination)
    merged = am.load_adapter(out)
    ra, rb = load_file(str(kohya_a)), load_file(str(kohya_b))
    for name in MODULES:
        expected = 0.6 * kohya_delta(ra, name) - 0.3 * kohya_delta(rb, name)
        got = merged.module(name).delta().double()
        assert float((got - expected).norm() / expected.norm()) < 2e-3, name  # fp16 output


def test_param_space_compose_of_kohya_files_keeps_rank_and_alpha(kohya_a, kohya_b, tmp_path):
    out = am.compose("0.5*a + 0.5*b", {"a": kohya_a, "b": kohya_b}, space="param").save(tmp_path / "p.safetensors")
    tensors, ra = load_file(str(out)), load_file(str(kohya_a))
    for name, (down, up, alpha) in MODULES.items():
        assert tensors[f"{name}.lora_down.weight"].shape == down
        if alpha is not None:
            assert torch.equal(tensors[f"{name}.alpha"], ra[f"{name}.alpha"])
        expected = 0.5 * (ra[f"{name}.lora_down.weight"].float() + load_file(str(kohya_b))[f"{name}.lora_down.weight"].float())
        assert torch.allclose(tensors[f"{name}.lora_down.weight"].float(), expected, atol=2e-3)


def test_compose_can_write_another_format(kohya_a, kohya_b, tmp_path):
    result = am.compose("a + b", {"a": kohya_a, "b": kohya_b}, space="delta")
    diffusers = am.load_adapter(result.save(tmp_path / "m.safetensors", format="diffusers"))
    peft = am.load_adapter(result.save(tmp_path / "m_peft", format="peft"))
    assert diffusers.format == "diffusers" and peft.format == "peft-lora"
    assert (tmp_path / "m_peft" / "adaptermath.json").is_file()
    for name in MODULES:
        dotted = kohya_to_dotted(name)
        assert torch.allclose(diffusers.module(dotted).delta(), peft.module(dotted).delta(), atol=1e-3)


def test_diffusers_old_suffix_style_is_kept_on_compose(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": torch.randn(2, 8, generator=g),
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight": torch.randn(8, 2, generator=g),
        "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.down.weight": torch.randn(2, 6, generator=g),
        "text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.up.weight": torch.randn(6, 2, generator=g),
    }
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"format": "pt"})
    adapter = am.load_adapter(tmp_path / "old.safetensors")
    assert adapter.format == "diffusers" and all(i.scaling == 1.0 for i in adapter.modules.values())
    out = am.negate(adapter, scale=0.5).save(tmp_path / "neg.safetensors")
    written = load_file(str(out))
    assert set(written) == set(tensors)
    key = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora"
    assert torch.allclose(written[f"{key}.up.weight"] @ written[f"{key}.down.weight"],
                          -0.5 * tensors[f"{key}.up.weight"] @ tensors[f"{key}.down.weight"], atol=1e-6)
    kohya = tmp_path / "old_kohya.safetensors"
    convert(tmp_path / "old.safetensors", kohya, to="kohya")
    assert "lora_te_text_model_encoder_layers_0_self_attn_k_proj.lora_down.weight" in load_file(str(kohya))


def test_kohya_and_dotted_operands_do_not_mix(kohya_a, tmp_path):
    convert(kohya_a, tmp_path / "d.safetensors", to="diffusers")
    with pytest.raises(CompositionError, match="is a kohya file") as info:
        am.compose("a + b", {"a": kohya_a, "b": tmp_path / "d.safetensors"}, space="delta")
    assert "\n" not in str(info.value)


def test_kohya_naming_rules_and_their_errors():
    assert kohya_to_dotted("lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_ff_net_0_proj") == \
        "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj"
    assert kohya_to_dotted("lora_te2_text_model_encoder_layers_10_mlp_fc2") == "text_encoder_2.text_model.encoder.layers.10.mlp.fc2"
    assert dotted_to_kohya("text_encoder.text_model.encoder.layers.0.mlp.fc1", text_encoder_prefix="lora_te1") == \
        "lora_te1_text_model_encoder_layers_0_mlp_fc1"
    assert dotted_to_kohya("down_blocks.0.resnets.0.conv1", component="unet") == "lora_unet_down_blocks_0_resnets_0_conv1"
    for bad, message in [("lora_unet_input_blocks_4_1_proj_in", "original Stability UNet naming"),
                         ("lora_unet_my_custom_block_0", "not made of known"),
                         ("lora_vae_decoder_conv_in", "unknown prefix")]:
        with pytest.raises(KohyaNameError, match=message) as info:
            kohya_to_dotted(bad)
        assert "\n" not in str(info.value)
    assert kohya_to_dotted("lora_unet_my_custom_block_0", ["unet.my_custom.block.0", "unet.other"]) == "unet.my_custom.block.0"
    with pytest.raises(KohyaNameError, match="several module names"):
        kohya_to_dotted("lora_unet_a_b_c", ["a.b_c", "a_b.c"])
    with pytest.raises(KohyaNameError, match="not rooted"):
        dotted_to_kohya("model.layers.0.q_proj")


def test_convert_with_module_names_and_unknown_names(tmp_path):
    g = torch.Generator().manual_seed(0)
    save_file({"lora_unet_my_custom_block_0.lora_down.weight": torch.randn(2, 4, generator=g),
               "lora_unet_my_custom_block_0.lora_up.weight": torch.randn(4, 2, generator=g)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(KohyaNameError, match="--module-names"):
        convert(tmp_path / "c.safetensors", tmp_path / "c_peft", to="peft")
    assert not (tmp_path / "c_peft").exists()
    result = convert(tmp_path / "c.safetensors", tmp_path / "c_peft", to="peft", module_names=["unet.my_custom.block.0"])
    assert result.renamed == {"lora_unet_my_custom_block_0": "unet.my_custom.block.0"}
    assert "unet.my_custom.block.0" in am.load_adapter(tmp_path / "c_peft").modules


def test_outputs_are_atomic_and_never_overwritten_without_force(kohya_a, tmp_path):
    out = tmp_path / "x.safetensors"
    convert(kohya_a, out, to="kohya")
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        convert(kohya_a, out, to="kohya")
    assert out.read_bytes() == before
    convert(kohya_a, out, to="diffusers", force=True)
    assert detect_format(out).name == "diffusers"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(AdapterMathError, match="is the input"):
        convert(kohya_a, kohya_a, to="kohya", force=True)


@pytest.mark.parametrize("tensors, message", [
    ({"lora_unet_x_proj_in.lora_down.weight": torch.ones(2, 4)}, "has no lora_up"),
    ({"lora_unet_x.lora_down.weight": torch.ones(2, 4), "lora_unet_x.lora_up.weight": torch.ones(4, 3)}, "do not chain"),
    ({"lora_unet_x.lora_down.weight": torch.ones(2, 4, 3, 3), "lora_unet_x.lora_up.weight": torch.ones(4, 2, 3, 3)}, "kernel is not supported"),
    ({"lora_unet_x.lora_down.weight": torch.ones(2, 4), "lora_unet_x.lora_up.weight": torch.ones(4, 2),
      "lora_unet_x.lora_mid.weight": torch.ones(2, 2, 3, 3)}, "lora_mid"),
    ({"lora_unet_x.hada_w1_a": torch.ones(4, 2), "lora_unet_x.hada_w1_b": torch.ones(2, 4)}, "LyCORIS LoHa"),
    ({"lora_unet_x.lora_down.weight": torch.ones(2, 4), "lora_unet_x.lora_up.weight": torch.ones(4, 2),
      "lora_unet_x.alpha": torch.ones(2)}, "should be a scalar"),
    ({"emb_params": torch.ones(2, 8)}, "textual-inversion embedding"),
    ({"base_model.model.x.lora_A.weight": torch.ones(2, 4)}, "PEFT adapter_model file"),
    ({"unet.x.lora_A.weight": torch.ones(2, 4), "unet.x.lora_B.weight": torch.ones(4, 2),
      "unet.x.lora_magnitude_vector": torch.ones(4)}, "DoRA"),
])
def test_bad_lora_files_give_one_line_errors(tmp_path, tensors, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(AdapterLoadError, match=message) as info:
        am.load_adapter(path)
    assert "\n" not in str(info.value)


def test_a_corrupt_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(AdapterLoadError, match="not a readable safetensors file"):
        am.load_adapter(path)
    assert detect_format(path).name == "unknown"


class _Named(nn.Module):
    """A module tree built from dotted paths: ``_Named({"a.0.b": nn.Linear(...)})``."""

    def __init__(self, leaves: dict[str, nn.Module]):
        super().__init__()
        for path, leaf in leaves.items():
            node: nn.Module = self
            parts = path.split(".")
            for part in parts[:-1]:
                if not hasattr(node, part):
                    node.add_module(part, nn.Module())
                node = getattr(node, part)
            node.add_module(parts[-1], leaf)


class TinyPipeline(_Named):
    """Just the diffusers module paths the synthesised kohya file touches, with matching layer shapes."""

    def __init__(self) -> None:
        super().__init__({
            "unet.down_blocks.0.attentions.0.proj_in": nn.Conv2d(8, 8, 1),
            "unet.down_blocks.0.resnets.0.conv1": nn.Conv2d(8, 8, 3, padding=1),
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0": nn.Linear(8, 8),
            "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj": nn.Linear(8, 16),
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj": nn.Linear(6, 6),
        })


def test_unsupported_output_combinations_are_refused(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(TinyPipeline(), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["to_out.0"]))
    model.save_pretrained(tmp_path / "with_head")
    with pytest.raises(AdapterMathError, match="modules_to_save"):
        convert(tmp_path / "with_head", tmp_path / "k.safetensors", to="kohya")
    with pytest.raises(AdapterMathError, match=r"\.safetensors"):
        convert(tmp_path / "with_head", tmp_path / "k.bin", to="kohya")


def test_peft_lora_of_a_bare_unet_converts_with_component(tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    unet = TinyPipeline().unet
    model = get_peft_model(unet, LoraConfig(r=2, lora_alpha=3, target_modules=["conv1", "proj"], use_rslora=True, init_lora_weights=False))
    model.save_pretrained(tmp_path / "unet_lora")
    with pytest.raises(KohyaNameError, match="--component unet"):
        convert(tmp_path / "unet_lora", tmp_path / "u.safetensors", to="kohya")
    convert(tmp_path / "unet_lora", tmp_path / "u.safetensors", to="kohya", component="unet")
    kohya, source = am.load_adapter(tmp_path / "u.safetensors"), am.load_adapter(tmp_path / "unet_lora")
    assert sorted(kohya.modules) == ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj",
                                     "lora_unet_down_blocks_0_resnets_0_conv1"]
    for name in source.modules:  # rsLoRA's α/√r becomes the plain α with the same scaling
        assert torch.allclose(kohya.module(dotted_to_kohya(name, component="unet")).delta(), source.module(name).delta(), atol=1e-6)


def test_a_lora_file_and_a_differently_rooted_peft_adapter_do_not_mix(kohya_a, tmp_path):
    from peft import LoraConfig, get_peft_model

    convert(kohya_a, tmp_path / "d.safetensors", to="diffusers")
    get_peft_model(TinyPipeline().unet, LoraConfig(r=2, target_modules=["conv1"])).save_pretrained(tmp_path / "bare")
    with pytest.raises(CompositionError, match="share no module") as info:
        am.compose("a + b", {"a": tmp_path / "d.safetensors", "b": tmp_path / "bare"}, space="delta")
    assert "--component unet" in str(info.value) and "\n" not in str(info.value)
    convert(tmp_path / "bare", tmp_path / "rooted.safetensors", to="diffusers", component="unet")
    merged = am.compose("a + b", {"a": tmp_path / "d.safetensors", "b": tmp_path / "rooted.safetensors"}, space="delta")
    assert "unet.down_blocks.0.resnets.0.conv1" in merged.module_names and len(merged.module_names) == len(MODULES)
