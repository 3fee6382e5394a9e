"""End to end: compose adapter files, load the result with PEFT, compare logits with the base
model whose weights were updated by hand from the input tensors (read with safetensors, not
adaptermath)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import adaptermath as am
from tiny_adapters import adapter_tensors, logits_with_updates, peft_logits

PREFIX = "base_model.model."


def lora_deltas(folder, config=None) -> dict[str, torch.Tensor]:
    """ΔW = s·B·A per module, computed here from the raw file and config."""
    tensors = adapter_tensors(folder)
    config = config or json.loads((folder / "adapter_config.json").read_text())
    out = {}
    for key, A in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        name = key[len(PREFIX): -len(".lora_A.weight")]
        B = tensors[key.replace("lora_A", "lora_B")]
        r = A.shape[0]
        alpha = config["lora_alpha"]
        for pattern, value in (config.get("alpha_pattern") or {}).items():
            if name.endswith(pattern):
                alpha = value
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        out[name] = scaling * B @ A
    return out


def combine(weighted: list[tuple[float, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for c, deltas in weighted:
        for name, delta in deltas.items():
            out[name] = out.get(name, 0) + c * delta
    return out


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))


def test_negation_param_space_llama(tiny, tmp_path, ids):
    out = am.negate(tiny["lora_a"], scale=0.7).save(tmp_path / "neg")
    expected = logits_with_updates("llama", tiny["llama_base"], combine([(-0.7, lora_deltas(tiny["lora_a"]))]), ids)
    torch.testing.assert_close(peft_logits("llama", tiny["llama_base"], out, ids), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factor", ["A", "B"])
def test_param_space_keeps_rank_and_alpha_patterns(tiny, tmp_path, ids, factor):
    """−2·x in parameter space scales both factors: {2A, −2B} or {−2A, 2B}, so ΔW ↦ −4·ΔW."""
    out = am.compose("-2*x", {"x": tiny["lora_patterns"]}, space="param", negate_factor=factor).save(tmp_path / "o")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {"down_proj": 2} and config["alpha_pattern"] == {"v_proj": 2}
    expected = logits_with_updates("llama", tiny["llama_base"], combine([(-4, lora_deltas(tiny["lora_patterns"]))]), ids)
    torch.testing.assert_close(peft_logits("llama", tiny["llama_base"], out, ids), expected, rtol=1e-4, atol=1e-5)


def test_param_space_addition_is_the_factor_formula(tiny, tmp_path, ids):
    """B = Σc·B, A = Σ|c|·A — not Σc·ΔW; checked against the formula computed here."""
    result = am.compose("0.6*a + 0.4*b", {"a": tiny["lora_a"], "b": tiny["lora_b"]})
    out = result.save(tmp_path / "sum")
    ta, tb = adapter_tensors(tiny["lora_a"]), adapter_tensors(tiny["lora_b"])
    updates = {}
    for key in ta:
        if key.endswith("lora_A.weight"):
            name = key[len(PREFIX): -len(".lora_A.weight")]
            kb = key.replace("lora_A", "lora_B")
            A = 0.6 * ta[key] + 0.4 * tb[key]
            B = 0.6 * ta[kb] + 0.4 * tb[kb]
            updates[name] = 2.0 * B @ A
    expected = logits_with_updates("llama", tiny["llama_base"], updates, ids)
    torch.testing.assert_close(peft_logits("llama", tiny["llama_base"], out, ids), expected, rtol=1e-4, atol=1e-5)
    # Shared init: the parameter-space result stays close to the exact weighted sum.
    assert result.report.summary()["param_vs_delta"]["max"] < 0.25
    assert result.report.warnings == []


def test_shared_init_diagnostic_flags_different_inits(tiny):
    same = am.compose("0.5*a + 0.5*b", {"a": tiny["lora_a"], "b": tiny["lora_b"]}, space="param")
    same.state_dict()
    other = am.compose("0.5*a + 0.5*b", {"a": tiny["lora_a"], "b": tiny["lora_other_init"]}, space="param")
    other.state_dict()
    same_dev = same.report.summary()["param_vs_delta"]["max"]
    other_dev = other.report.summary()["param_vs_delta"]["max"]
    assert other_dev > 0.25 > same_dev
    assert other.report.warnings and "--space delta" in other.report.warnings[0]


def test_delta_space_mixed_ranks_and_targets_is_exact(tiny, tmp_path, ids):
    ops = {"a": tiny["lora_a"], "k": tiny["lora_r8_kq"], "p": tiny["lora_patterns"], "s": tiny["lora_rslora"]}
    result = am.compose("0.5*a - 1.5*k + p - 0.25*s", ops, space="delta")
    out = result.save(tmp_path / "delta")
    config = json.loads((out / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(result.module_names)
    assert "model.layers.0.self_attn.k_proj" in config["target_modules"]
    expected = combine([(0.5, lora_deltas(tiny["lora_a"])), (-1.5, lora_deltas(tiny["lora_r8_kq"])),
                        (1.0, lora_deltas(tiny["lora_patterns"])), (-0.25, lora_deltas(tiny["lora_rslora"]))])
    torch.testing.assert_close(peft_logits("llama", tiny["llama_base"], out, ids),
                               logits_with_updates("llama", tiny["llama_base"], expected, ids), rtol=1e-4, atol=1e-5)


def test_delta_space_rank_compression_reports_true_error(tiny, tmp_path):
    result = am.compose("a + b + c", {"a": tiny["lora_a"], "b": tiny["lora_b"], "c": tiny["lora_c"]}, space="delta", rank=3)
    out = result.save(tmp_path / "r3")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 3 and config["lora_alpha"] == 3 and not config["use_rslora"]
    got = lora_deltas(out, config)
    exact = combine([(1.0, lora_deltas(tiny[n])) for n in ("lora_a", "lora_b", "lora_c")])
    for name, report in result.report.modules.items():
        dense = exact[name]
        error = float((got[name] - dense).norm() / dense.norm())
        assert error == pytest.approx(report.relative_error, abs=1e-4)
        best = torch.linalg.svdvals(dense.double())
        optimal = float(torch.sqrt((best[3:] ** 2).sum() / (best ** 2).sum()))
        assert error == pytest.approx(optimal, abs=1e-4)  # the truncated SVD is optimal (Eckart–Young)


def test_ia3_negation_and_sum(tiny, tmp_path, ids):
    out = am.compose("0.5*a - 0.8*b", {"a": tiny["ia3_a"], "b": tiny["ia3_b"]}).save(tmp_path / "ia3")
    ta, tb = adapter_tensors(tiny["ia3_a"]), adapter_tensors(tiny["ia3_b"])
    base = dict(__import__("tiny_adapters").load_base("llama", tiny["llama_base"]).named_modules())
    updates = {}
    for key in ta:
        name = key[len(PREFIX): -len(".ia3_l")]
        deviation = 0.5 * (ta[key] - 1) - 0.8 * (tb[key] - 1)  # l = 1 + Σc(l−1)
        weight = base[name].weight.detach()
        # feed-forward (1, in) vectors scale inputs: W·diag(d); others (out, 1) scale outputs.
        updates[name] = weight * deviation if deviation.shape[0] == 1 else deviation * weight
    torch.testing.assert_close(peft_logits("llama", tiny["llama_base"], out, ids),
                               logits_with_updates("llama", tiny["llama_base"], updates, ids), rtol=1e-4, atol=1e-5)
    negated = am.negate(tiny["ia3_a"]).state_dict()
    for key, value in ta.items():
        torch.testing.assert_close(negated[key], 2 - value)


def test_gpt2_conv1d_fan_in_fan_out(tiny, tmp_path):
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    for space in ("param", "delta"):
        out = am.compose("a - 0.5*b", {"a": tiny["gpt2_a"], "b": tiny["gpt2_b"]}, space=space).save(tmp_path / space)
        config = json.loads((out / "adapter_config.json").read_text())
        assert config["fan_in_fan_out"] is True
        if space == "delta":
            expected = combine([(1.0, lora_deltas(tiny["gpt2_a"])), (-0.5, lora_deltas(tiny["gpt2_b"]))])
        else:
            ta, tb = adapter_tensors(tiny["gpt2_a"]), adapter_tensors(tiny["gpt2_b"])
            expected = {}
            for key in ta:
                if key.endswith("lora_A.weight"):
                    kb = key.replace("lora_A", "lora_B")
                    A = ta[key] + 0.5 * tb[key]
                    B = ta[kb] - 0.5 * tb[kb]
                    expected[key[len(PREFIX): -len(".lora_A.weight")]] = 2.0 * B @ A
        torch.testing.assert_close(peft_logits("gpt2", tiny["gpt2_base"], out, ids),
                                   logits_with_updates("gpt2", tiny["gpt2_base"], expected, ids), rtol=1e-4, atol=1e-5)


def test_bert_classification_heads(tiny, tmp_path):
    ids = torch.randint(0, 64, (3, 7), generator=torch.Generator().manual_seed(2))
    ta, tb = adapter_tensors(tiny["bert_a"]), adapter_tensors(tiny["bert_b"])
    head = {"classifier.weight": PREFIX + "classifier.weight", "classifier.bias": PREFIX + "classifier.bias"}
    deltas = combine([(0.3, lora_deltas(tiny["bert_a"])), (-0.9, lora_deltas(tiny["bert_b"]))])
    # Heads combined with the coefficients normalised to Σ|c| = 1.
    out = am.compose("0.3*a - 0.9*b", {"a": tiny["bert_a"], "b": tiny["bert_b"]}, space="delta").save(tmp_path / "mixed")
    mixed = {p: (0.3 * ta[k] - 0.9 * tb[k]) / 1.2 for p, k in head.items()}
    torch.testing.assert_close(peft_logits("bert", tiny["bert_base"], out, ids),
                               logits_with_updates("bert", tiny["bert_base"], deltas, ids, mixed), rtol=1e-4, atol=1e-5)
    # --heads b: the head is b's, untouched.
    out = am.compose("0.3*a - 0.9*b", {"a": tiny["bert_a"], "b": tiny["bert_b"]}, space="delta", heads="b").save(tmp_path / "b")
    from_b = {p: tb[k] for p, k in head.items()}
    torch.testing.assert_close(peft_logits("bert", tiny["bert_base"], out, ids),
                               logits_with_updates("bert", tiny["bert_base"], deltas, ids, from_b), rtol=1e-4, atol=1e-5)


def test_analogy_with_free_variable_and_provenance(tiny, tmp_path):
    ops = {"cls": tiny["lora_a"], "tgt": tiny["lora_b"], "src": tiny["lora_c"]}
    result = am.compose("cls + λ*(tgt - src)", ops, variables={"λ": 0.2}, space="param")
    out = result.save(tmp_path / "analogy")
    record = json.loads((out / "adaptermath.json").read_text())
    assert record["normal_form"] == "cls + λ*tgt - λ*src"
    assert record["coefficients"] == pytest.approx({"cls": 1.0, "tgt": 0.2, "src": -0.2})
    assert record["variables"] == {"λ": 0.2}
    import hashlib
    for item in record["inputs"]:
        folder = ops[item["name"]]
        digest = hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()
        assert item["files"]["adapter_model.safetensors"] == digest
    # Official analogy formula: A = c0·A_cls + c1·A_tgt + c1·A_src, B = c0·B_cls + c1·B_tgt − c1·B_src.
    saved = adapter_tensors(out)
    tc, tt, ts = (adapter_tensors(ops[n]) for n in ("cls", "tgt", "src"))
    for key in saved:
        if "lora_A" in key:
            torch.testing.assert_close(saved[key], tc[key] + 0.2 * tt[key] + 0.2 * ts[key])
        else:
            torch.testing.assert_close(saved[key], tc[key] + 0.2 * tt[key] - 0.2 * ts[key])


def test_dtype_is_kept_and_can_be_changed(tiny, tmp_path):
    half = am.compose("x", {"x": tiny["lora_a"]}, dtype="bf16").save(tmp_path / "bf16")
    assert all(t.dtype == torch.bfloat16 for t in adapter_tensors(half).values())
    again = am.compose("-x", {"x": half}).save(tmp_path / "again")
    assert all(t.dtype == torch.bfloat16 for t in adapter_tensors(again).values())


def test_composition_streams_one_module_at_a_time(tiny, monkeypatch):
    """The output is produced module by module: reading module k+1 happens only after module k is yielded."""
    from adaptermath.adapter import Adapter

    reads: list[str] = []
    original = Adapter.module

    def spy(self, name):
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(Adapter, "module", spy)
    result = am.compose("a - b", {"a": tiny["lora_a"], "b": tiny["lora_b"]}, space="param")
    stream = result.iter_tensors()
    assert reads == []
    next(stream)
    assert reads == [result.module_names[0]] * 2
    next(stream)
    next(stream)
    assert reads == [result.module_names[0]] * 2 + [result.module_names[1]] * 2


def test_negate_in_param_space_scales_both_factors(tiny):
    """−λ·x in parameter space is {λA, −λB}: ΔW ↦ −λ²·ΔW (the issue's B = Σc·B, A = Σ|c|·A)."""
    result = am.negate(tiny["lora_a"], scale=0.5, space="param")
    saved, original = result.state_dict(), adapter_tensors(tiny["lora_a"])
    for key, value in original.items():
        torch.testing.assert_close(saved[key], 0.5 * value if "lora_A" in key else -0.5 * value)
    assert result.report.summary()["param_vs_delta"]["max"] == pytest.approx(0.5, abs=1e-5)  # |λ² − λ| / λ


def test_single_operand_in_delta_space_keeps_rank_alpha_and_factors(tiny, tmp_path):
    result = am.negate(tiny["lora_patterns"], scale=0.3, negate_factor="A")
    out = result.save(tmp_path / "neg")
    original = json.loads((tiny["lora_patterns"] / "adapter_config.json").read_text())
    config = json.loads((out / "adapter_config.json").read_text())
    for key in ("r", "lora_alpha", "rank_pattern", "alpha_pattern", "target_modules", "use_rslora"):
        assert config[key] == original[key]
    saved, source = adapter_tensors(out), adapter_tensors(tiny["lora_patterns"])
    for key, value in source.items():  # {−λA, B}: the paper's GPT-2 unlearning operator
        torch.testing.assert_close(saved[key], -0.3 * value if "lora_A" in key else value)
