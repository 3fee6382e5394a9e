"""compose says what ran (method, options, space, normalised coefficients) and does not write a
parameter-space result that is ≥ 25% off the exact ΔW unless --space param was asked for."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import adaptermath as am
from adaptermath.cli.main import main
from adaptermath.errors import CompositionError


def test_default_param_space_refuses_an_unfaithful_result(tiny, tmp_path) -> None:
    ops = {"a": tiny["lora_a"], "b": tiny["lora_other_init"]}
    with pytest.raises(CompositionError, match=r"off the exact sum of updates.*--space delta.*--space param"):
        am.compose("a + b", ops).save(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    chosen = am.compose("a + b", ops, space="param")
    chosen.save(tmp_path / "param")
    assert chosen.report.summary()["param_vs_delta"]["max"] >= 0.25 and chosen.report.warnings
    am.compose("a + b", ops, space="delta").save(tmp_path / "delta")


def test_a_faithful_default_compose_is_written(tiny, tmp_path) -> None:
    composed = am.compose("-x", {"x": tiny["lora_a"]})  # one operand, |c| = 1: param space is exact
    composed.save(tmp_path / "neg")
    assert composed.options.space == "param" and composed.report.summary()["param_vs_delta"]["max"] < 1e-6


def test_cli_summary_names_method_options_space_and_coefficients(tiny, tmp_path) -> None:
    runner = CliRunner()
    ops = ["-a", f"a={tiny['lora_a']}", "-a", f"b={tiny['lora_b']}"]
    refused = runner.invoke(main, ["compose", "a + b", *ops, "-o", str(tmp_path / "r")])
    assert refused.exit_code == 2 and refused.stderr.startswith("error: parameter-space arithmetic is")
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()

    done = runner.invoke(main, ["compose", "2*a + 2*b", *ops, "--normalize", "-o", str(tmp_path / "n"), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["coefficients"] == {"a": 0.5, "b": 0.5} and payload["normalized"] is True
    assert payload["method"] == "linear" and payload["space"] == "param"
    assert payload["space_note"].startswith("default")

    ties = runner.invoke(main, ["compose", "a + b", *ops, "--method", "ties", "--density", "0.3", "--rank", "4",
                                "-o", str(tmp_path / "t"), "--json"])
    assert ties.exit_code == 0, ties.output
    payload = json.loads(ties.stdout)
    assert payload["method"] == "ties" and payload["method_options"]["density"] == 0.3
    assert payload["space"] == "delta" and "always delta space" in payload["space_note"]
    assert payload["options"] == {"rank": 4}

    human = runner.invoke(main, ["compose", "a + b", *ops, "--space", "delta", "--rank", "4", "-o", str(tmp_path / "h")])
    assert human.exit_code == 0, human.output
    for text in ("method", "linear", "coefficients", "a: 1, b: 1", "space", "delta", "rank=4"):
        assert text in human.stdout, text
