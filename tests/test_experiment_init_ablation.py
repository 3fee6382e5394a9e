"""Same-init ablation, end to end on the real MiniLM (--quick; slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.comparison import compare
from adaptermath.experiments import common, init_ablation


def test_settings_come_from_the_distribution_recipe():
    settings = init_ablation.load_settings(None, quick=False)
    distribution = common.load_config("distribution")
    assert settings["adapters"] == distribution["adapters"] and settings["train"] == distribution["train"]
    assert settings["other_init_seed"] != settings["seed"]


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path):
    workdir, docs = tmp_path / "work", tmp_path / "docs"
    document = init_ablation.main(["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"])
    stored = json.loads((workdir / "init_ablation-results.json").read_text())
    assert stored["complete"] and len(stored["rows"]) == 4
    assert (docs / "init_ablation.md").exists()
    same = [r for r in document["rows"] if r["pair"] == "same init"][0]
    other = [r for r in document["rows"] if r["pair"] != "same init"][0]
    # The diagnostic as adaptermath.compare computes it independently from the saved PEMs.
    pems = workdir / "pems" / "lora"
    assert same["a_cosine_mean"] > 0.9 and abs(other["a_cosine_mean"]) < 0.2
    direct = compare(pems / "h0", pems / "h1-init1")
    assert other["param_vs_delta_max"] == pytest.approx(direct["max_param_vs_delta"])
    assert other["param_vs_delta_max"] > same["param_vs_delta_max"]
    assert len(init_ablation.drops(document["rows"])) == 2
