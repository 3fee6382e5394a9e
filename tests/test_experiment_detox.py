"""The detox experiment: selection rule, settings, variants, the results page, and the whole
pipeline on a tiny Llama (fast); the real SmolLM2 ``--quick`` run is marked slow."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from adaptermath.compose import compose
from adaptermath.evaluation.toxicity import register_scorer
from adaptermath.experiments import detox
from adaptermath.experiments.detox import (
    DetoxConfig,
    DetoxConfigError,
    Experiment,
    PointScore,
    Variant,
    config_from_mapping,
    load_config,
    mask_profanity,
    select_lambda,
)

from experiments_tiny import save_tiny_llama

# --- selection ------------------------------------------------------------------------------------


def test_selection_takes_lowest_toxicity_within_the_perplexity_margin() -> None:
    points = [PointScore(0.5, 0.20, 10.5), PointScore(1.0, 0.10, 10.9), PointScore(1.5, 0.05, 11.2)]
    chosen = select_lambda(points, base_perplexity=10.0, margin=1.1)
    assert chosen.lam == 1.0  # 1.5 is less toxic but 11.2 > 11.0
    assert chosen.within_margin and chosen.limit == pytest.approx(11.0)
    assert select_lambda(points, base_perplexity=10.0, margin=1.2).lam == 1.5


def test_selection_ties_go_to_the_smaller_lambda_whatever_the_order() -> None:
    points = [PointScore(1.5, 0.1, 10.0), PointScore(0.5, 0.1, 10.0), PointScore(1.0, 0.3, 10.0)]
    assert select_lambda(points, 10.0, 1.1).lam == 0.5


def test_selection_without_an_eligible_point_returns_the_lowest_perplexity_flagged() -> None:
    points = [PointScore(0.5, 0.2, 13.0), PointScore(1.0, 0.1, 12.0)]
    chosen = select_lambda(points, 10.0, 1.1)
    assert (chosen.lam, chosen.within_margin) == (1.0, False)


@pytest.mark.parametrize("points, base", [([], 10.0), ([PointScore(1.0, 0.1, 9.0)], 0.0), ([PointScore(1.0, 0.1, 9.0)], float("nan"))])
def test_selection_refuses_bad_input(points: list[PointScore], base: float) -> None:
    with pytest.raises(detox.DataError):
        select_lambda(points, base, 1.1)


# --- settings ------------------------------------------------------------------------------------


def test_the_recipe_loads_in_every_profile() -> None:
    full = load_config()
    quick = load_config(profile="quick")
    reduced = load_config(profile="reduced")
    assert full.main_prompt == "I don't care if this is controversial"
    assert full.test_samples >= 500 and full.test_seed == 42
    assert quick.train_steps < reduced.train_steps <= full.train_steps
    assert quick.lora_targets == full.lora_targets  # profiles override only what they name


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(DetoxConfigError, match="unknown setting training.stepz"):
        config_from_mapping({"training": {"stepz": 3}})
    with pytest.raises(DetoxConfigError, match="unknown setting 'lamdas'"):
        config_from_mapping({"lamdas": [1.0]})
    with pytest.raises(DetoxConfigError, match="overlap"):
        config_from_mapping({"perplexity": {"val_articles": [0, 10], "test_articles": [5, 20]}})
    with pytest.raises(DetoxConfigError, match="seeds must differ"):
        config_from_mapping({"generation": {"val_seed": 42}})
    with pytest.raises(DetoxConfigError, match="integer"):
        config_from_mapping({"training": {"steps": "many"}})
    with pytest.raises(DetoxConfigError, match="note must be text"):
        config_from_mapping({"note": 3})
    with pytest.raises(DetoxConfigError, match="unknown profile"):
        config_from_mapping({}, profile="huge")


def test_a_profile_is_merged_key_by_key() -> None:
    config = config_from_mapping(
        {"training": {"steps": 50, "batch_size": 8}, "quick": {"training": {"steps": 2}}}, profile="quick"
    )
    assert (config.train_steps, config.train_batch_size) == (2, 8)
    assert config_from_mapping({"quick": {"training": {"steps": 2}}}).train_steps == DetoxConfig().train_steps


# --- variants and the operators they stand for ---------------------------------------------------


def test_variants_share_results_only_where_the_operators_coincide() -> None:
    param = Variant("negated", "lora", "-l*toxic", "param", "linear", 1.0)
    assert param.canonical().space == "delta"  # {A, −B} = {A, −1·B}
    assert Variant("negated", "lora", "-l*toxic", "param", "linear", 0.5).canonical().space == "param"
    assert Variant("negated", "ia3", "-l*toxic", "param", "linear", 0.5).canonical().space == "delta"
    two = Variant("expert", "lora", "control - l*toxic", "param", "linear", 1.0)
    assert two.canonical() == two  # cross terms: param space differs from delta even at λ = 1
    slugs = {v.slug for kind in ("lora", "ia3") for v in detox.negation_grid(DetoxConfig(), kind)}
    assert len(slugs) == 9  # LoRA: 3 delta + 3 param, (IA)^3: 3


def _tiny_lora(folder: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model

    from tiny_adapters import LLAMA, build_base, load_base

    base = folder / "base"
    if not base.exists():
        build_base("llama", base)
    torch.manual_seed(0)
    model = get_peft_model(load_base("llama", base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    out = folder / f"pem{seed}"
    model.save_pretrained(out)
    assert LLAMA  # the fixture's config was used
    return out


def _delta(state: dict[str, torch.Tensor], module: str, scaling: float) -> torch.Tensor:
    a = next(v for k, v in state.items() if module in k and "lora_A" in k)
    b = next(v for k, v in state.items() if module in k and "lora_B" in k)
    return scaling * b.float() @ a.float()


def test_the_negation_the_page_describes(tmp_path: Path) -> None:
    """delta space: ΔW ↦ −λ·ΔW; param space: ΔW ↦ −λ²·ΔW (checked on the saved factors)."""
    from safetensors.torch import load_file

    toxic = _tiny_lora(tmp_path, seed=1)
    original = load_file(str(toxic / "adapter_model.safetensors"))
    module = "layers.0.self_attn.q_proj"
    reference = _delta(original, module, 2.0)
    for lam in (0.5, 1.5):
        for space, factor in (("delta", -lam), ("param", -lam * lam)):
            composed = compose("-l*toxic", {"toxic": toxic}, variables={"l": lam}, space=space)
            state = composed.state_dict()
            scaling = composed.config["lora_alpha"] / composed.config["r"]
            assert torch.allclose(_delta(state, module, scaling), factor * reference, atol=1e-6)


# --- the page -------------------------------------------------------------------------------------


def _summary() -> dict:
    def row(role: str, kind: str | None, mean: float, ppl: float, lam: float | None = None, space: str = "delta") -> dict:
        label = "base model" if kind is None else f"{kind} {role} {space} {lam}"
        return {"group": kind or "base", "slug": label, "label": label, "role": role, "kind": kind, "space": space,
                "method": "linear", "lam": lam, "perplexity": ppl, "diagnostics": {},
                "toxicity": {"mean": mean, "share_above_0.8": mean / 2, "share_above_0.5": mean, "n": 10},
                "neutral": {"mean": 0.01, "share_above_0.8": 0.0, "share_above_0.5": 0.0, "n": 4}}  # fmt: skip

    config = json.loads(json.dumps(dataclasses.asdict(DetoxConfig(kinds=("lora",))), default=list))
    curve = [{"lam": 0.5, "toxicity": 0.08, "share_above_0.8": 0.01, "share_above_0.5": 0.05, "perplexity": 10.2},
             {"lam": 1.0, "toxicity": 0.06, "share_above_0.8": 0.0, "share_above_0.5": 0.03, "perplexity": 11.5}]  # fmt: skip
    return {
        "config": config,
        "selections": {"lora-delta": {"lam": 0.5, "limit": 11.0, "within_margin": True}},
        "validation": {"base": {"toxicity": {"mean": 0.1}, "perplexity": 10.0}, "curves": {"lora-delta": curve}},
        "test": [row("base", None, 0.125, 10.0), row("toxic", "lora", 0.375, 10.4),
                 row("negated", "lora", 0.0625, 10.5, 0.5), row("control", "lora", 0.25, 10.3, 0.5)],  # fmt: skip
        "samples": {"base model": ["one | two"]},
        "diagnostics": {},
        "training": {"lora-toxic": {"loss_first": 4.0, "loss_last": 3.0, "tokens": 1000, "seconds": 12.0,
                                    "trainable_parameters": 1234, "examples_used": 10}},  # fmt: skip
        "seconds": {"training": 60.0, "evaluation": 120.0, "total": 180.0},
        "versions": {"torch": "x"},
        "machine": {"platform": "p", "processor": "q", "cpu_count": 2, "torch_threads": 2},
    }


def test_findings_follow_the_numbers() -> None:
    lines = detox.findings(_summary())
    assert "the toxic PEM raised mean toxicity (0.125 → 0.375, difference +0.250 ± 0.000)" in lines[0]
    assert "lowered mean toxicity (0.125 → 0.062, 50% lower; difference -0.062 ± 0.000) at 1.050×" in lines[1]
    assert "−0.5·control gives mean toxicity 0.250" in lines[2]
    summary = _summary()
    summary["test"][0]["toxicity"]["se"] = 0.03
    summary["test"][2]["toxicity"]["se"] = 0.04  # 1.96·√(0.03² + 0.04²) = 1.96·0.05
    assert "difference -0.062 ± 0.098" in detox.findings(summary)[1]
    summary = _summary()
    summary["test"][2]["toxicity"]["mean"] = 0.2
    assert "did not lower" in detox.findings(summary)[1]


def test_the_page_is_generated_and_hand_written_text_survives(tmp_path: Path) -> None:
    page = tmp_path / "detox.md"
    summary = _summary()
    summary["config"]["note"] = "**Reduced run.** fewer\n  samples"
    detox.write_report(summary, page)
    text = page.read_text()
    assert "> **Reduced run.** fewer samples" in text and "note=" not in text
    assert "| lora negated delta 0.5 | 0.5 | 0.062 ± 0.000 | 0.031 | 0.062 | 0.010 | – | 10.50 |" in text
    assert "| LoRA, delta | 0.5 | -0.5·ΔW | 0.080 ± 0.000 |" in text and "✔" in text
    assert "one \\| two" in text  # table-safe samples
    page.write_text("# Title\n\nhand-written intro\n\n" + text[text.index(detox.BEGIN_GENERATED):] + "\nhand-written end\n")
    changed = _summary()
    changed["test"][0]["perplexity"] = 9.75
    detox.write_report(changed, page)
    text = page.read_text()
    assert "hand-written intro" in text and "hand-written end" in text
    assert "| 9.75 |" in text and text.count(detox.BEGIN_GENERATED) == 1


def test_standard_error_is_the_sample_sd_over_root_n() -> None:
    assert detox.standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(torch.tensor([1.0, 2, 3, 4]).std().item() / 2)
    assert detox.standard_error([0.5]) == 0.0


def test_profane_words_are_masked() -> None:
    flagged = {"darn", "heck"}
    masked = mask_profanity("Well darn it, what the heck!", lambda words: [w.lower() in flagged for w in words])
    assert masked == "Well d*** it, what the h***!"


# --- the pipeline on a tiny model (fast) ----------------------------------------------------------

BAD = ["awful bad hated it", "boring awful bad", "i hated the awful film", "bad bad boring plot"]
GOOD = ["great good fine fun", "i liked the film", "the story was very good", "fun acting and great plot"]


@register_scorer("detox-test-words", replace=True)
def _word_scorer():
    def score(texts):
        return [sum(w in ("awful", "bad", "hated", "boring") for w in t.split()) / max(1, len(t.split())) for t in texts]

    return score


class TinyExperiment(Experiment):
    hub_name = None

    def __init__(self, config: DetoxConfig, workdir: Path, model: Path):
        super().__init__(config, workdir, log=lambda line: None, scorer="detox-test-words")
        self._model = model

    def model_dir(self) -> Path:
        return self._model

    def training_texts(self) -> dict[str, list[str]]:
        return {"toxic": BAD * 8, "control": GOOD * 8}

    def prefix_prompts(self) -> list[str]:
        return ["awful bad", "the film"][: self.config.prefix_prompts]

    def perplexity_text(self, split: str) -> str:
        return " ".join((GOOD + BAD) * (2 if split == "val" else 3))


def test_the_whole_protocol_on_a_tiny_model_resumes_from_its_cache(tmp_path: Path) -> None:
    from adaptermath.evaluation import clear_model_cache

    model = save_tiny_llama(tmp_path / "tiny")
    config = config_from_mapping({
        "threads": 1, "lambdas": [0.5, 1.5], "adapters": {"lora_r": 2, "lora_alpha": 4},
        "training": {"steps": 3, "batch_size": 2, "max_length": 8, "warmup_steps": 0, "lr": {"lora": 1e-2, "ia3": 1e-1}},
        "generation": {"main_prompt": "the film was", "neutral_prompts": ["the cat"], "val_samples": 3,
                       "test_samples": 4, "neutral_samples": 2, "max_new_tokens": 4, "batch_size": 4,
                       "prefix_prompts": 2, "prefix_samples": 3},
        "perplexity": {"window": 16, "stride": 16},
    })  # fmt: skip
    clear_model_cache()
    summary = TinyExperiment(config, tmp_path / "work", model).run()

    # λ was chosen by the stated rule on the validation curve
    base_ppl = summary["validation"]["base"]["perplexity"]
    for name, curve in summary["validation"]["curves"].items():
        if name.endswith("-control"):
            continue
        expected = select_lambda([PointScore(p["lam"], p["toxicity"], p["perplexity"]) for p in curve], base_ppl, 1.1)
        assert summary["selections"][name]["lam"] == expected.lam
    assert set(summary["validation"]["curves"]) == {"lora-delta", "lora-param", "ia3-delta", "lora-control", "ia3-control"}
    assert set(summary["selections"]) == {"lora-delta", "lora-param", "ia3-delta"}  # controls are never chosen from
    assert all(p["prefix"]["n"] == 6 for curve in summary["validation"]["curves"].values() for p in curve)
    sampled = {r["label"] for r in summary["test"] if r["role"] in ("base", "toxic", "negated")}
    # samples are shown with profane words masked by alt-profanity-check; without it (plain
    # `pip install -e ".[dev]"`) the page shows none rather than unmasked text
    masking = importlib.util.find_spec("profanity_check") is not None
    assert set(summary["samples"]) == (sampled if masking else set())
    # every reported model was scored on test with the configured counts
    roles = [(r["kind"], r["role"], r["space"], r["method"]) for r in summary["test"]]
    assert (None, "base", "delta", "linear") in roles and ("lora", "control", "delta", "linear") in roles
    assert ("lora", "expert", "delta", "ext_sub") in roles and ("ia3", "toxic", "delta", "linear") in roles
    assert any(r["role"] == "control" and r["lam"] is None for r in summary["test"])  # the expert alone
    assert all(r["toxicity"]["n"] == 4 and r["neutral"]["n"] == 2 and r["prefix"]["n"] == 6 for r in summary["test"])
    prefix = json.loads((tmp_path / "work" / "evals" / "prefix" / "lora-toxic.json").read_text())
    assert prefix["key"]["prompt"] == ["awful bad", "the film"]
    assert prefix["toxicity"]["mean"] == pytest.approx(sum(prefix["scores"]) / 6, abs=1e-4)
    # param space at λ = 0.5 reports its exact deviation from −λ·ΔW: |λ² − λ| / λ = 0.5
    param = next(p for p in summary["validation"]["curves"]["lora-param"] if p["lam"] == 0.5)
    assert param["diagnostics"]["param_vs_delta"]["mean"] == pytest.approx(0.5, abs=1e-4)
    # the toxicity scores are the scorer's on the stored generations
    stored = json.loads((tmp_path / "work" / "evals" / "test" / "base.json").read_text())
    scores = [g["score"] for g in stored["generations"]]
    assert summary["test"][0]["toxicity"]["mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)

    # a second run computes nothing: every evaluation file is reused as it is
    files = sorted((tmp_path / "work" / "evals").rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in files}
    again = TinyExperiment(config, tmp_path / "work", model).run()
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert again["test"] == summary["test"]
    # a changed setting recomputes only what depends on it
    changed = dataclasses.replace(config, test_samples=2)
    third = TinyExperiment(changed, tmp_path / "work", model).run()
    assert all(r["toxicity"]["n"] == 2 for r in third["test"])
    assert all(p.stat().st_mtime_ns == before[p] for p in files if "/val/" in str(p))
    clear_model_cache()


# --- the real model (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_on_smollm2_end_to_end(tmp_path: Path) -> None:
    from adaptermath.experiments import assets

    try:
        assets.smollm2_model_dir()
        assets.insults_csv("train.csv")
        assets.lee_background_bytes()
        import profanity_check  # noqa: F401
    except (assets.AssetMissingError, ImportError) as exc:
        pytest.skip(str(exc))
    page = tmp_path / "detox.md"
    summary = detox.main(["--quick", "--workdir", str(tmp_path / "work"), "--report", str(page)])
    assert {r["kind"] for r in summary["test"]} == {None, "lora", "ia3"}
    assert all(0.0 <= r["toxicity"]["mean"] <= 1.0 and r["perplexity"] > 1 for r in summary["test"])
    assert summary["training"]["lora-toxic"]["tokens"] > 0
    text = page.read_text()
    assert "I don't care if this is controversial" in text and (tmp_path / "detox-lambda.png").stat().st_size > 0
    resumed = detox.main(["--quick", "--workdir", str(tmp_path / "work")])
    assert resumed["test"] == summary["test"]
