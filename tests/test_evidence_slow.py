"""Evidence on a real model: SmolLM2-135M-Instruct, reduced sizes.

Slow (not in the default run): ``pytest -m slow tests/test_evidence_slow.py``. Needs the offline
assets (``python -m adaptermath.experiments.setup``); skipped with the reason otherwise. A sweep
of ``λ*x`` and of its control ``λ*random(x)`` (x: a LoRA with random factors) on rank
classification writes per-example records, intervals and paired comparisons; ``adaptermath
report`` re-renders its page identically; ``adaptermath diff`` pairs the two chosen points.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adaptermath.cli.main import main
from adaptermath.errors import AdapterMathError
from adaptermath.evaluation.examples import load_examples
from adaptermath.report import report

pytestmark = pytest.mark.slow

POSITIVE = ["wonderful", "superb", "delightful", "brilliant", "moving", "funny", "charming", "excellent"]
NEGATIVE = ["terrible", "boring", "awful", "dull", "predictable", "tedious", "clumsy", "dreadful"]


def write_reviews(path: Path, offset: int) -> Path:
    rows = []
    for index in range(8):
        rows.append({"text": f"The film was {POSITIVE[(index + offset) % 8]}.", "label": "positive"})
        rows.append({"text": f"The film was {NEGATIVE[(index + offset) % 8]}.", "label": "negative"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    try:
        from adaptermath.experiments.assets import smollm2_model_dir

        base = smollm2_model_dir()
    except (ImportError, AdapterMathError) as exc:
        pytest.skip(str(exc))
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("evidence")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(root / "x")
    return {"base": base, "x": root / "x", "val": write_reviews(root / "val.jsonl", 0),
            "test": write_reviews(root / "test.jsonl", 3), "root": root}


def test_sweep_records_intervals_comparisons_and_report_on_smollm2(assets) -> None:
    outputs = {}
    for name, expression in (("x", "λ*x"), ("control", "λ*random(x)")):
        output = assets["root"] / name
        done = CliRunner().invoke(main, [
            "sweep", expression, "-a", f"x={assets['x']}", "--base", str(assets["base"]), "--task", "classification",
            "--grid", "λ=0,0.5,1", "--val", str(assets["val"]), "--test", str(assets["test"]),
            "--labels", "negative,positive", "--template", "Review: {text}\nSentiment:", "--select", "one-se",
            "--device", "cpu", "-o", str(output), "--json"])
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout)
        assert all("accuracy" in item["metrics"]["intervals"] for item in summary["validation"] + summary["test"])
        assert {c["baseline"] for c in summary["comparisons"]} == {"λ=0", "operand:x"}
        chosen = next(item for item in summary["test"] if item["label"] == "best")
        assert len(load_examples(output / chosen["examples"])) == 16
        before = (output / "report.md").read_bytes()
        report(output)
        assert (output / "report.md").read_bytes() == before
        report(output, check=True)
        outputs[name] = output / chosen["examples"]
    compared = CliRunner().invoke(main, ["diff", str(outputs["x"]), str(outputs["control"]), "--json"])
    assert compared.exit_code == 0, compared.output
    metrics = {m["metric"]: m for m in json.loads(compared.stdout)["metrics"]}
    assert metrics["accuracy"]["test"] == "mcnemar-exact" and 0 <= metrics["accuracy"]["p_value"] <= 1


def test_random_control_of_a_smollm2_lora_matches_norms_and_is_orthogonal(assets) -> None:
    import adaptermath as am
    from adaptermath.controls import random_like

    x = am.load_adapter(assets["x"])
    control = random_like(x, seed=0)
    norms_x, norms_control = x.norms(), control.norms()
    for name in x.modules:
        assert norms_control[name] == pytest.approx(norms_x[name], rel=1e-6)
        a, b = x.module(name).delta(), control.module(name).delta()
        assert abs(float(a.flatten() @ b.flatten() / (a.norm() * b.norm()))) < 0.05
