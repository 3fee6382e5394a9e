"""Merge methods (adaptermath.methods) and their use in compose: each method against a direct
dense computation written here, DARE determinism, rank selection, and end-to-end composes of tiny
PEFT adapters that PEFT loads and merges into the base weights we expect."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

import adaptermath as am
from adaptermath.algebra.truncation import RankPolicy, dense_to_lora
from adaptermath.errors import CompositionError
from adaptermath.methods import available_methods, get_method

TINY = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
TARGETS = ["q_proj", "v_proj", "down_proj"]
PREFIX = "base_model.model."


# --------------------------------------------------------------------------- independent references (numpy)


def ref_trim(x: np.ndarray, density: float) -> np.ndarray:
    """Keep the ⌈density·n⌉ entries of largest magnitude (by sorting)."""
    keep = math.ceil(density * x.size)
    order = np.argsort(-np.abs(x).ravel(), kind="stable")
    mask = np.zeros(x.size, dtype=bool)
    mask[order[:keep]] = True
    return np.where(mask.reshape(x.shape), x, 0.0)


def ref_disjoint_mean(tensors: list[np.ndarray]) -> np.ndarray:
    """Entry by entry: elect the sign of the sum, average the agreeing non-zero entries."""
    stacked = np.stack(tensors)
    out = np.zeros(stacked.shape[1:])
    for index in np.ndindex(*out.shape):
        values = stacked[(slice(None), *index)]
        sign = np.sign(values.sum())
        agreeing = [v for v in values if v != 0 and np.sign(v) == sign]
        out[index] = sum(agreeing) / len(agreeing) if agreeing else 0.0
    return out


def ref_ties(terms: list[tuple[float, np.ndarray]], density: float) -> np.ndarray:
    return ref_disjoint_mean([ref_trim(c * x, density) for c, x in terms])


def ref_magnitude_prune(terms: list[tuple[float, np.ndarray]], density: float) -> np.ndarray:
    return sum(c * ref_trim(x, density) for c, x in terms)


def ref_dare(terms: list[tuple[float, np.ndarray]], drop: float, uniforms: list[np.ndarray], ties: bool) -> np.ndarray:
    dropped = [c * np.where(u >= drop, x, 0.0) / (1 - drop) for (c, x), u in zip(terms, uniforms)]
    return ref_disjoint_mean(dropped) if ties else sum(dropped)


def ref_ext_sub(terms: list[tuple[float, np.ndarray]], direction: str = "common") -> np.ndarray:
    """Row by row, as the Ext-Sub authors' code: subtract the anti-expert minus its shared part."""
    expert = sum(c * x for c, x in terms if c > 0)
    out = expert.copy()
    for c, anti in ((c, x) for c, x in terms if c < 0):
        for j in range(anti.shape[0]):
            e = expert[j] / np.linalg.norm(expert[j])
            if direction == "common":
                a = anti[j] / np.linalg.norm(anti[j])
                u = (e + a) / np.linalg.norm(e + a)
            else:
                u = e
            out[j] += c * (anti[j] - np.dot(anti[j], u) * u)
    return out


def documented_module_generator(seed: int, module: str) -> torch.Generator:
    """The per-module seed as docs/methods.md states it: sha256("{seed}\\0{module}"), 8 bytes LE, 63 bits."""
    digest = hashlib.sha256(f"{seed}\0{module}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def random_terms(seed: int, coefficients=(1.0, 0.7, -0.4), shape=(6, 10)) -> list[tuple[float, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(c, torch.randn(shape, generator=g)) for c in coefficients]


def as_np(terms):
    return [(c, x.double().numpy()) for c, x in terms]


# --------------------------------------------------------------------------- methods on dense tensors


def test_registry_lists_methods_and_refuses_unknown_ones():
    assert available_methods()[0] == "linear"
    assert {"ties", "dare", "dare_ties", "magnitude_prune", "ext_sub"} <= set(available_methods())
    with pytest.raises(CompositionError, match="unknown merge method 'nope'; available: linear"):
        get_method("nope")
    for name in available_methods():
        assert "ΔW" in get_method(name).formula  # every method states its formula


@pytest.mark.parametrize("density", [0.1, 0.35, 1.0])
def test_ties_matches_dense_reference(density):
    terms = random_terms(1)
    got = get_method("ties")(terms, {"density": density})
    np.testing.assert_allclose(got.numpy(), ref_ties(as_np(terms), density), rtol=1e-5, atol=1e-6)


def test_ties_with_density_one_and_agreeing_signs_is_the_mean():
    x = torch.rand(4, 5) + 0.1
    y = torch.rand(4, 5) + 0.1
    got = get_method("ties")([(1.0, x), (1.0, y)], {"density": 1.0})
    torch.testing.assert_close(got, (x + y) / 2)


@pytest.mark.parametrize("density", [0.2, 0.5])
def test_magnitude_prune_matches_dense_reference(density):
    terms = random_terms(2)
    got = get_method("magnitude_prune")(terms, {"density": density})
    np.testing.assert_allclose(got.numpy(), ref_magnitude_prune(as_np(terms), density), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method, ties", [("dare", False), ("dare_ties", True)])
def test_dare_matches_dense_reference_with_the_same_draws(method, ties):
    terms = random_terms(3)
    drop = 0.3
    draws = torch.Generator().manual_seed(99)
    uniforms = [torch.rand(x.shape, generator=draws).double().numpy() for _, x in terms]
    got = get_method(method)(terms, {"drop": drop}, torch.Generator().manual_seed(99))
    np.testing.assert_allclose(got.numpy(), ref_dare(as_np(terms), drop, uniforms, ties), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, sum(c * x for c, x in terms), atol=1e-3)  # entries were really dropped
    single = get_method(method)([(1.0, torch.randn(200, 200))], {"drop": drop})
    assert float((single == 0).float().mean()) == pytest.approx(drop, abs=0.01)


def test_dare_combine_ties_equals_dare_ties():
    terms = random_terms(4)
    a = get_method("dare")(terms, {"drop": 0.4, "combine": "ties"}, torch.Generator().manual_seed(5))
    b = get_method("dare_ties")(terms, {"drop": 0.4}, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


def test_dare_is_unbiased():
    terms = random_terms(5, shape=(3, 4))
    expected = sum(c * x for c, x in terms)
    method = get_method("dare")
    draws = torch.Generator().manual_seed(0)
    mean = sum(method(terms, {"drop": 0.5}, draws) for _ in range(4000)) / 4000
    assert float((mean - expected).abs().max()) < 0.15


@pytest.mark.parametrize("direction", ["common", "expert"])
def test_ext_sub_matches_dense_reference(direction):
    terms = random_terms(6, coefficients=(1.0, -0.6))
    got = get_method("ext_sub")(terms, {"direction": direction})
    np.testing.assert_allclose(got.numpy(), ref_ext_sub(as_np(terms), direction), rtol=1e-5, atol=1e-5)


def test_ext_sub_keeps_what_the_anti_expert_shares_with_the_expert():
    expert = torch.randn(5, 7)
    anti = 2.0 * expert  # pure shared skill, no deficiency: nothing is subtracted
    got = get_method("ext_sub")([(1.0, expert), (-0.8, anti)])
    torch.testing.assert_close(got, expert, atol=1e-5, rtol=1e-5)
    anti = torch.randn(5, 7)
    removed = get_method("ext_sub")([(1.0, expert), (-1.0, anti)], {"direction": "expert"}) - expert
    assert float((removed * expert).sum(dim=1).abs().max()) < 1e-4  # only what is orthogonal to the expert


def test_ext_sub_needs_an_expert_and_an_anti_expert():
    with pytest.raises(CompositionError, match="expert \\(positive coefficient\\) and an anti-expert"):
        get_method("ext_sub")(random_terms(7, coefficients=(1.0, 0.5)))


def test_linear_method_is_the_weighted_sum():
    terms = random_terms(8)
    torch.testing.assert_close(get_method("linear")(terms), sum(c * x for c, x in terms))


def test_options_are_checked_and_can_come_from_sweep_variables():
    ties = get_method("ties")
    with pytest.raises(CompositionError, match="option density must lie in \\(0, 1\\]"):
        ties.resolve_options({"density": 0.0})
    with pytest.raises(CompositionError, match="method ties has no option 'drop'; its options: density"):
        ties.resolve_options({"drop": 0.5})
    assert ties.resolve_options({}, {"density": 0.3}) == {"density": 0.3}
    assert ties.resolve_options({"density": "d"}, {"d": 0.4}) == {"density": 0.4}
    with pytest.raises(CompositionError, match="names no bound variable"):
        ties.resolve_options({"density": "d"}, {})
    dare = get_method("dare")
    assert dare.resolve_options({}, {"p": 0.9}) == {"drop": 0.9, "seed": 0, "combine": "linear"}
    with pytest.raises(CompositionError, match="option drop must lie in \\[0, 1\\)"):
        dare.resolve_options({"drop": 1.0})
    with pytest.raises(CompositionError, match="option combine must be one of linear, ties"):
        dare.resolve_options({"combine": "mean"})


# --------------------------------------------------------------------------- rank selection and re-emission


def matrix_with_spectrum(singular_values: list[float], shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    U, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))
    return (U * torch.tensor(singular_values, dtype=torch.float64)) @ V.T


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99, 0.999])
def test_energy_keeps_the_smallest_rank_holding_that_share(energy):
    s = [10.0, 6.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1]
    D = matrix_with_spectrum(s, (120, 150)).float()
    share = np.cumsum(np.square(s)) / np.sum(np.square(s))
    expected_k = int(np.argmax(share >= energy)) + 1
    factors = dense_to_lora(D, RankPolicy(energy=energy), default_rank=2)
    assert factors.rank == expected_k
    expected_error = math.sqrt(np.sum(np.square(s[expected_k:])) / np.sum(np.square(s)))
    assert factors.relative_error == pytest.approx(expected_error, abs=2e-4)
    measured = float((D - factors.B @ factors.A).norm() / D.norm())
    assert factors.relative_error == pytest.approx(measured, abs=1e-5)


@pytest.mark.parametrize("rank", [3, 40])  # randomized sketch, then full SVD
def test_fixed_rank_is_as_accurate_as_a_full_svd(rank):
    g = torch.Generator().manual_seed(1)
    D = torch.randn(90, 130, generator=g) * torch.logspace(0, -2, 130)[None, :]
    factors = dense_to_lora(D, RankPolicy(rank=rank), default_rank=1)
    s = np.linalg.svd(D.double().numpy(), compute_uv=False)
    optimum = math.sqrt(np.sum(s[rank:] ** 2) / np.sum(s ** 2))
    assert factors.rank == rank
    assert optimum <= factors.relative_error + 1e-6
    assert factors.relative_error <= optimum * 1.01 + 1e-6


def test_max_rank_caps_and_zero_updates_get_rank_one():
    D = matrix_with_spectrum([5.0, 4.0, 3.0, 2.0, 1.0], (40, 50)).float()
    assert dense_to_lora(D, RankPolicy(energy=0.9999, max_rank=3), default_rank=8).rank == 3
    assert dense_to_lora(D, RankPolicy(max_rank=2), default_rank=8).rank == 2
    zero = dense_to_lora(torch.zeros(6, 9), RankPolicy(energy=0.9), default_rank=4)
    assert (zero.rank, zero.relative_error, float(zero.B.abs().sum())) == (1, 0.0, 0.0)


def test_rank_policy_refuses_bad_values():
    for policy, message in [(RankPolicy(energy=0.0), "--energy must lie in"), (RankPolicy(energy=1.5), "--energy must lie in"),
                            (RankPolicy(rank=4, energy=0.9), "--rank or --energy, not both"), (RankPolicy(max_rank=0), "--max-rank")]:
        with pytest.raises(CompositionError, match=message):
            policy.validate()


# --------------------------------------------------------------------------- end to end on tiny PEFT adapters


@pytest.fixture(scope="module")
def tiny_adapters(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(root / "base")
    paths = {"base": root / "base"}
    for index, name in enumerate(["a", "b", "c"]):
        torch.manual_seed(100 + index)
        model = get_peft_model(LlamaForCausalLM.from_pretrained(root / "base"),
                               LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
        model.save_pretrained(root / name)
        paths[name] = root / name
    for index, name in enumerate(["ia3_a", "ia3_b"]):
        torch.manual_seed(200 + index)
        model = get_peft_model(LlamaForCausalLM.from_pretrained(root / "base"),
                               IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"]))
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if "ia3_l" in pname:
                    param.add_(0.3 * torch.randn(param.shape))
        model.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def dense_updates(folder: Path) -> dict[str, np.ndarray]:
    """ΔW = (α/r)·B·A per module, from the saved file and config (not through adaptermath)."""
    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key, A in tensors.items():
        if key.endswith("lora_A.weight"):
            B = tensors[key.replace("lora_A", "lora_B")]
            out[key[len(PREFIX):-len(".lora_A.weight")]] = config["lora_alpha"] / config["r"] * (B.double() @ A.double()).numpy()
    return out


def merged_updates(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    """W_merged − W_base per module, with PEFT loading and merging the adapter."""
    base_model = LlamaForCausalLM.from_pretrained(base)
    base_weights = {n: p.detach().double().clone() for n, p in base_model.named_parameters()}
    merged = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload()
    return {n[: -len(".weight")]: (p.detach().double() - base_weights[n]).numpy()
            for n, p in merged.named_parameters() if not torch.equal(p.detach().double(), base_weights[n])}


def expected_dense(method: str, terms: list[tuple[float, np.ndarray]], options: dict, module: str) -> np.ndarray:
    if method == "ties":
        return ref_ties(terms, options["density"])
    if method == "magnitude_prune":
        return ref_magnitude_prune(terms, options["density"])
    if method == "ext_sub":
        return ref_ext_sub(terms, options.get("direction", "common"))
    if method in ("dare", "dare_ties"):
        draws = documented_module_generator(options.get("seed", 0), module)
        uniforms = [torch.rand(x.shape, generator=draws).double().numpy() for _, x in terms]
        return ref_dare(terms, options["drop"], uniforms, method == "dare_ties")
    raise AssertionError(method)


@pytest.mark.parametrize("method, expression, options", [
    ("ties", "a + 0.8*b - 0.5*c", {"density": 0.4}),
    ("magnitude_prune", "0.6*a + 0.4*b", {"density": 0.3}),
    ("dare", "a + b", {"drop": 0.3, "seed": 7}),
    ("dare_ties", "a + b - 0.3*c", {"drop": 0.2, "seed": 1}),
    ("ext_sub", "a - 0.7*c", {}),
])
def test_compose_with_method_loads_in_peft_and_merges_to_the_expected_update(tiny_adapters, tmp_path, method, expression, options):
    operands = {n: tiny_adapters[n] for n in "abc" if n in expression}
    result = am.compose(expression, operands, method=method, method_options=options)
    out = result.save(tmp_path / "out")
    provenance = json.loads((out / "adaptermath.json").read_text())
    assert provenance["method"] == method and provenance["space"] == "delta"
    assert {k: v for k, v in provenance["options"]["method_options"].items() if k in options} == options
    inputs = {n: dense_updates(p) for n, p in operands.items()}
    merged = merged_updates(tiny_adapters["base"], out)
    assert set(merged) == set(inputs["a"])
    checked_truncation = False
    for module, got in merged.items():
        terms = [(c, inputs[n][module]) for n, c in result.coefficients.items()]
        full_options = get_method(method).resolve_options(options)
        expected = expected_dense(method, terms, full_options, module)
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        report = result.report.modules[module]
        assert report.rank == min(4 * len(operands), *got.shape)  # default: Σ rᵢ, capped by min(out, in)
        assert error == pytest.approx(report.relative_error, abs=1e-4)  # the reported error is the real one
        checked_truncation |= report.relative_error > 1e-3
    assert checked_truncation or method == "ext_sub"


def test_dare_is_deterministic_across_runs_and_module_order(tiny_adapters, tmp_path):
    def run(seed: int, folder: str, reverse: bool = False) -> dict[str, torch.Tensor]:
        result = am.compose("a + b", {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}, method="dare",
                            method_options={"drop": 0.5, "seed": seed})
        if reverse:
            result.module_names = list(reversed(result.module_names))
            return result.state_dict()
        result.save(tmp_path / folder)
        return load_file(str(tmp_path / folder / "adapter_model.safetensors"))

    first, second = run(3, "one"), run(3, "two")
    assert (tmp_path / "one" / "adapter_model.safetensors").read_bytes() == (tmp_path / "two" / "adapter_model.safetensors").read_bytes()
    reversed_order = run(3, "", reverse=True)
    for key, tensor in first.items():
        torch.testing.assert_close(reversed_order[key], tensor, rtol=0, atol=0)
    other = run(4, "three")
    assert any(not torch.equal(other[k], first[k]) for k in first)


def test_energy_on_the_linear_delta_path_picks_ranks_from_the_spectrum(tiny_adapters, tmp_path):
    operands = {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}
    inputs = {n: dense_updates(p) for n, p in operands.items()}
    result = am.compose("a + 0.5*b", operands, space="delta", energy=0.8)
    early_config = result.config  # before saving: computed by one pass
    out = result.save(tmp_path / "out")
    config = json.loads((out / "adapter_config.json").read_text())
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert early_config["r"] == config["r"] and early_config["rank_pattern"] == config["rank_pattern"]
    for module, a in inputs["a"].items():
        s = np.linalg.svd(a + 0.5 * inputs["b"][module], compute_uv=False)
        share = np.cumsum(s ** 2) / np.sum(s ** 2)
        expected_rank = int(np.argmax(share >= 0.8 - 1e-9)) + 1
        assert tensors[f"{PREFIX}{module}.lora_A.weight"].shape[0] == expected_rank
        assert config["rank_pattern"].get(module, config["r"]) == expected_rank
        assert result.report.modules[module].relative_error == pytest.approx(math.sqrt(1 - share[expected_rank - 1]), abs=1e-5)
    merged = merged_updates(tiny_adapters["base"], out)
    for module, got in merged.items():
        exact = inputs["a"][module] + 0.5 * inputs["b"][module]
        error = np.linalg.norm(got - exact) / np.linalg.norm(exact)
        assert error == pytest.approx(result.report.modules[module].relative_error, abs=1e-4)


def test_max_rank_caps_methods_and_linear_delta(tiny_adapters):
    operands = {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}
    for kwargs in ({"method": "ties"}, {"space": "delta"}):
        result = am.compose("a + b", operands, max_rank=3, **kwargs)
        state = result.state_dict()
        assert {t.shape[0] for k, t in state.items() if k.endswith("lora_A.weight")} == {3}
        assert result.config["r"] == 3


def test_method_options_from_sweep_variables_are_recorded(tiny_adapters, tmp_path):
    result = am.compose("a + λ*b", {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}, variables={"λ": 0.5, "density": 0.6},
                        method="ties")
    provenance = result.provenance()
    assert provenance["options"]["method_options"] == {"density": 0.6}
    assert provenance["variables"] == {"λ": 0.5, "density": 0.6}


def test_ia3_methods_act_on_the_deviation(tiny_adapters, tmp_path):
    operands = {"x": tiny_adapters["ia3_a"], "y": tiny_adapters["ia3_b"]}
    out = am.compose("x - 0.5*y", operands, method="ties", method_options={"density": 0.5}).save(tmp_path / "out")
    got = load_file(str(out / "adapter_model.safetensors"))
    x = load_file(str(tiny_adapters["ia3_a"] / "adapter_model.safetensors"))
    y = load_file(str(tiny_adapters["ia3_b"] / "adapter_model.safetensors"))
    for key, value in got.items():
        terms = [(1.0, x[key].double().numpy().ravel() - 1), (-0.5, y[key].double().numpy().ravel() - 1)]
        expected = 1 + ref_ties(terms, 0.5)
        np.testing.assert_allclose(value.double().numpy().ravel(), expected, rtol=1e-5, atol=1e-6)
    PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(tiny_adapters["base"]), str(out))


def test_compose_refuses_bad_method_input(tiny_adapters):
    operands = {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}
    with pytest.raises(CompositionError, match="unknown merge method"):
        am.compose("a + b", operands, method="average")
    with pytest.raises(CompositionError, match="--energy and --max-rank compress a delta-space result"):
        am.compose("a + b", operands, energy=0.9)
    with pytest.raises(CompositionError, match="method ext_sub needs an expert"):
        am.compose("a + b", operands, method="ext_sub")
    with pytest.raises(CompositionError, match="apply to LoRA only"):
        am.compose("x + y", {"x": tiny_adapters["ia3_a"], "y": tiny_adapters["ia3_b"]}, method="ties", max_rank=2)


def test_cli_compose_with_method_flags(tiny_adapters, tmp_path):
    from click.testing import CliRunner

    from adaptermath.cli.main import main

    out = tmp_path / "cli"
    args = ["compose", "a - 0.5*b", "-a", f"a={tiny_adapters['a']}", "-a", f"b={tiny_adapters['b']}", "-o", str(out),
            "--method", "dare_ties", "--drop", "0.3", "--seed", "2", "--max-rank", "5", "--json"]
    run = CliRunner().invoke(main, args)
    assert run.exit_code == 0, run.output
    assert json.loads(run.output)["report"]["relative_error"]["max"] > 0
    provenance = json.loads((out / "adaptermath.json").read_text())
    assert provenance["method"] == "dare_ties"
    assert provenance["options"]["method_options"] == {"drop": 0.3, "seed": 2}
    assert provenance["options"]["max_rank"] == 5
    python = am.compose("a - 0.5*b", {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}, method="dare_ties",
                        method_options={"drop": 0.3, "seed": 2}, max_rank=5).state_dict()
    for key, tensor in load_file(str(out / "adapter_model.safetensors")).items():
        torch.testing.assert_close(tensor, python[key], rtol=0, atol=0)  # the CLI and Python give the same adapter
    run = CliRunner().invoke(main, ["compose", "a + b", "-a", f"a={tiny_adapters['a']}", "-a", f"b={tiny_adapters['b']}",
                                    "-o", str(tmp_path / "bad"), "--method", "ext_sub", "--method-option", "direction=sideways"])
    assert run.exit_code == 2
    assert "option direction must be one of common, expert" in run.output
    run = CliRunner().invoke(main, ["compose", "a + b", "-a", f"a={tiny_adapters['a']}", "-a", f"b={tiny_adapters['b']}",
                                    "-o", str(tmp_path / "bad"), "--density", "0.3"])
    assert run.exit_code == 2 and "method linear has no option 'density'" in run.output


def test_report_lists_every_module_rank_and_error(tiny_adapters, tmp_path):
    result = am.compose("a + b", {"a": tiny_adapters["a"], "b": tiny_adapters["b"]}, method="ties", max_rank=6)
    out = result.save(tmp_path / "out")
    per_module = json.loads((out / "adaptermath.json").read_text())["report"]["per_module"]
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert set(per_module) == set(result.module_names)
    for module, entry in per_module.items():
        assert entry["rank"] == tensors[f"{PREFIX}{module}.lora_A.weight"].shape[0] == 6
        assert entry["relative_error"] == result.report.modules[module].relative_error


@pytest.mark.parametrize("kind", ["normal", "ties", "sparse", "constant", "adversarial"])
def test_kth_smallest_selects_exactly_what_kthvalue_selects(kind):
    """The bracketed selection behind trim_by_magnitude equals a full torch.kthvalue at every rank,
    including tensors with many equal entries (integers, mostly zeros, all equal)."""
    from adaptermath.methods.sparsify import kth_smallest

    generator = torch.Generator().manual_seed(7)
    n = 300_000
    values = {
        "normal": torch.randn(n, generator=generator).abs(),
        "ties": torch.randint(0, 5, (n,), generator=generator).float(),
        "sparse": torch.randn(n, generator=generator) * (torch.rand(n, generator=generator) < 0.01),
        "constant": torch.full((n,), 0.25),
        "adversarial": torch.zeros(n).index_fill_(0, torch.arange(0, n, 64), 1e6),  # the sample sees only 1e6: fallback
    }[kind]
    for k in (1, 2, 977, n // 3, n // 2, n - 60_000 + 1, n - 5, n):
        assert kth_smallest(values, k) == values.kthvalue(k).values, (kind, k)
