"""LoHa and LoKr adapters built with PEFT: exact LoRA re-emission, delta-space compose, conversion.

Every check compares against PEFT's own dense ``get_delta_weight`` or a PeftModel forward pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoHaConfig, LoKrConfig, PeftModel, get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

import adaptermath as am
from adaptermath.errors import AdapterMathError, CompositionError, UnsupportedAdapterError
from adaptermath.formats import convert, detect_format, loha_to_lora, lokr_to_lora
from adaptermath.formats.loha import face_splitting_product

LLAMA = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
TARGETS = ["q_proj", "v_proj", "down_proj"]
INPUTS = torch.tensor([[1, 5, 9, 13, 2, 7, 30, 41]])


def base_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**LLAMA)).eval()


def build(config, seed: int, out: Path):
    """A PEFT model with random (init_weights=False) LoHa/LoKr weights under ``seed``, saved to ``out``."""
    base = base_model()
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    model.save_pretrained(out)
    return model.eval()


def peft_deltas(model) -> dict[str, torch.Tensor]:
    """PEFT's own dense ΔW of every adapted module, keyed like adaptermath module names."""
    out = {}
    for name, module in model.named_modules():
        adapters = getattr(module, "_available_adapters", None) or getattr(module, "lora_A", {})  # LyCORIS or LoRA layers
        if hasattr(module, "get_delta_weight") and "default" in adapters:
            with torch.no_grad():
                out[name.removeprefix("base_model.model.")] = module.get_delta_weight("default").detach().float()
    assert out, "no adapted module found"
    return out


def logits_with(updates: dict[str, torch.Tensor]) -> torch.Tensor:
    model = base_model()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, delta in updates.items():
            modules[name].weight.add_(delta.reshape(modules[name].weight.shape))
        return model(INPUTS).logits


def peft_logits(folder: Path) -> torch.Tensor:
    model = PeftModel.from_pretrained(base_model(), str(folder)).eval()
    with torch.no_grad():
        return model(INPUTS).logits


@pytest.fixture(scope="module")
def lyco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("lycoris")
    configs = {
        "loha_a": (LoHaConfig(r=2, alpha=3, target_modules=TARGETS, init_weights=False,
                              rank_pattern={"down_proj": 3}, alpha_pattern={"v_proj": 5}), 1),
        "loha_b": (LoHaConfig(r=2, alpha=3, target_modules=TARGETS, init_weights=False,
                              rank_pattern={"down_proj": 3}, alpha_pattern={"v_proj": 5}), 2),
        "lokr": (LoKrConfig(r=2, alpha=3, target_modules=TARGETS, init_weights=False), 3),
        "lokr_both": (LoKrConfig(r=1, alpha=2, target_modules=TARGETS, init_weights=False, decompose_both=True), 4),
    }
    out = {}
    for name, (config, seed) in configs.items():
        model = build(config, seed, root / name)
        out[name] = (root / name, peft_deltas(model))
    return out


def test_face_splitting_product_is_the_rowwise_kronecker():
    X, Y = torch.randn(3, 2), torch.randn(3, 4)
    P = face_splitting_product(X, Y)
    for i in range(3):
        assert torch.allclose(P[i], torch.kron(X[i], Y[i]))


def test_loha_and_lokr_algebra_on_random_factors():
    g = torch.Generator().manual_seed(0)
    w1a, w1b, w2a, w2b = (torch.randn(s, generator=g, dtype=torch.float64) for s in ((7, 2), (2, 5), (7, 3), (3, 5)))
    A, B = loha_to_lora(w1a, w1b, w2a, w2b)
    assert A.shape == (6, 5) and B.shape == (7, 6)
    assert torch.allclose(B.double() @ A.double(), (w1a @ w1b) * (w2a @ w2b), atol=1e-5)
    full, u, v = torch.randn(3, 2, generator=g), torch.randn(4, 1, generator=g), torch.randn(1, 6, generator=g)
    A, B = lokr_to_lora({"lokr_w1": full, "lokr_w2_a": u, "lokr_w2_b": v})
    assert A.shape[0] == 2 * 1  # min(3, 2) · rank 1
    assert torch.allclose(B @ A, torch.kron(full, u @ v), atol=1e-6)


@pytest.mark.parametrize("name", ["loha_a", "lokr", "lokr_both"])
def test_reemitted_lora_delta_equals_peft_get_delta_weight(lyco, name):
    folder, deltas = lyco[name]
    adapter = am.load_adapter(folder)
    assert adapter.kind == "lora" and adapter.format == f"peft-{name[:4]}"
    assert adapter.config["peft_type"] == "LORA" and adapter.source_config["peft_type"] == name[:4].upper()
    assert set(adapter.modules) == set(deltas)
    for module in adapter.iter_modules():
        reference = deltas[module.name]
        assert torch.allclose(module.delta(), reference, rtol=1e-5, atol=1e-6 * reference.abs().max()), module.name
        info = adapter.modules[module.name]
        assert module.rank == info.rank and info.alpha / info.rank == pytest.approx(info.scaling)
    if name == "loha_a":  # rank r·r, r from rank_pattern; scaling α/r with α from alpha_pattern
        info = adapter.modules["model.layers.0.mlp.down_proj"]
        assert (info.rank, info.scaling) == (9, pytest.approx(3 / 3))
        info = adapter.modules["model.layers.0.self_attn.v_proj"]
        assert (info.rank, info.scaling) == (4, pytest.approx(5 / 2))


def test_delta_space_compose_of_two_loha_adapters_matches_dense_sum_in_peft(lyco, tmp_path):
    (a, deltas_a), (b, deltas_b) = lyco["loha_a"], lyco["loha_b"]
    result = am.compose("0.7*a - 0.4*b", {"a": a, "b": b}, space="delta")
    out = result.save(tmp_path / "merged")
    expected = logits_with({n: 0.7 * deltas_a[n] - 0.4 * deltas_b[n] for n in deltas_a})
    assert torch.allclose(peft_logits(out), expected, atol=1e-5)
    merged = am.load_adapter(out)
    assert merged.format == "peft-lora" and merged.config["peft_type"] == "LORA"
    assert merged.modules["model.layers.0.mlp.down_proj"].rank == 9 + 9


def test_loha_plus_lokr_compressed_by_svd_is_the_best_rank_k_approximation(lyco, tmp_path):
    (loha, d1), (lokr, d2) = lyco["loha_a"], lyco["lokr"]
    result = am.compose("a + 0.5*b", {"a": loha, "b": lokr}, space="delta", rank=3)
    merged = am.load_adapter(result.save(tmp_path / "r3"))
    report = result.report.modules
    for module in merged.iter_modules():
        dense = d1[module.name] + 0.5 * d2[module.name]
        s = torch.linalg.svdvals(dense.double())
        optimum = float(torch.sqrt((s[3:] ** 2).sum() / (s ** 2).sum()))
        error = float((module.delta().double() - dense.double()).norm() / dense.double().norm())
        assert module.rank == 3
        assert error == pytest.approx(optimum, rel=1e-3, abs=1e-6)
        assert report[module.name].relative_error == pytest.approx(optimum, rel=1e-3, abs=1e-6)


def test_parameter_space_is_refused_with_one_line(lyco):
    with pytest.raises(CompositionError) as info:
        am.compose("a + b", {"a": lyco["loha_a"][0], "b": lyco["loha_b"][0]})
    assert str(info.value).startswith("LoHa adapters compose in delta space only: add --space delta")
    assert "\n" not in str(info.value)
    with pytest.raises(CompositionError, match="LoKr adapters compose in delta space only"):
        am.compose("a", {"a": lyco["lokr"][0]}, space="param")


def test_single_loha_negation_in_delta_space_is_exact(lyco, tmp_path):
    folder, deltas = lyco["loha_a"]
    out = am.negate(folder, scale=0.5).save(tmp_path / "neg")
    assert torch.allclose(peft_logits(out), logits_with({n: -0.5 * d for n, d in deltas.items()}), atol=1e-5)


def test_convert_lokr_to_peft_lora_gives_the_same_model(lyco, tmp_path):
    folder, deltas = lyco["lokr_both"]
    result = convert(folder, tmp_path / "as_lora", to="peft")
    assert result.from_format == "peft-lokr" and result.notes
    assert detect_format(tmp_path / "as_lora").name == "peft-lora"
    assert torch.allclose(peft_logits(tmp_path / "as_lora"), peft_logits(folder), atol=1e-5)
    assert torch.allclose(peft_logits(tmp_path / "as_lora"), logits_with(deltas), atol=1e-5)


def test_detect_format_names_loha_and_lokr(lyco):
    info = detect_format(lyco["loha_a"][0])
    assert (info.name, info.kind, info.supported) == ("peft-loha", "adapter", True)
    assert "⊙" in info.description
    assert detect_format(lyco["lokr"][0]).name == "peft-lokr"


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_lokr_on_a_conv_layer_reemits_4d_lora_factors_that_peft_loads(tmp_path):
    torch.manual_seed(0)
    model = get_peft_model(ConvNet(), LoKrConfig(r=8, alpha=4, target_modules=["conv", "head"], init_weights=False)).eval()
    model.save_pretrained(tmp_path / "lokr_conv")
    deltas = peft_deltas(model)
    adapter = am.load_adapter(tmp_path / "lokr_conv")
    conv = adapter.modules["conv"]
    assert len(conv.a_shape) == 4 and conv.a_shape[2:] == (3, 3) and conv.b_shape[2:] == (1, 1)
    for module in adapter.iter_modules():
        assert torch.allclose(module.delta(), deltas[module.name].reshape(module.out_features, -1), atol=1e-6)
    convert(adapter, tmp_path / "as_lora", to="peft")
    torch.manual_seed(0)
    lora = PeftModel.from_pretrained(ConvNet(), str(tmp_path / "as_lora")).eval()
    lora_deltas = peft_deltas(lora)
    assert set(lora_deltas) == set(deltas) == {"conv", "head"}
    for name, delta in lora_deltas.items():
        assert torch.allclose(delta, deltas[name], atol=1e-6), name


def test_loha_tucker_form_is_refused_with_one_line(tmp_path):
    torch.manual_seed(0)
    config = LoHaConfig(r=2, alpha=2, target_modules=["conv"], init_weights=False, use_effective_conv2d=True)
    get_peft_model(ConvNet(), config).save_pretrained(tmp_path / "tucker")
    with pytest.raises(UnsupportedAdapterError, match="Tucker form") as info:
        am.load_adapter(tmp_path / "tucker")
    assert "\n" not in str(info.value)


def test_loha_factors_that_do_not_chain_are_refused(lyco, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(lyco["loha_a"][0], folder)
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in tensors if k.endswith("q_proj.hada_w2_b"))
    tensors[key] = tensors[key][:1]
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterMathError, match="do not chain"):
        am.load_adapter(folder)
