"""Multi-tasking by merging bodies, end to end on the real MiniLM (--quick; slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.experiments import common, multitask


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path):
    from safetensors import safe_open

    from adaptermath.compose import compose

    workdir, docs = tmp_path / "work", tmp_path / "docs"
    document = multitask.main(["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"])
    stored = json.loads((workdir / "results.json").read_text())
    assert stored["complete"] and len(stored["rows"]) == 3
    assert (docs / "multitask.md").exists()
    for row in document["rows"]:
        means = [(lam, sum(s.values()) / 2) for lam, s in row["validation"]]
        assert (row["chosen"], row["chosen_validation"]) == common.choose_best(means)
    # Each task keeps its own head unchanged: the composed head equals the task PEM's head.
    pems = workdir / "pems" / "lora"
    composed = compose(multitask.EXPRESSION, {"sent": pems / "sent", "task2": pems / "task2"},
                       variables={"λ": 0.5}, heads="task2", space="param").state_dict()
    with safe_open(str(pems / "task2" / "adapter_model.safetensors"), framework="pt") as handle:
        for key in handle.keys():
            if "classifier" in key:
                assert composed[key].equal(handle.get_tensor(key))
                assert composed[key].shape[0] == 6  # TREC: six coarse classes
