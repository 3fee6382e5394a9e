"""Small frictions a newcomer met (issue 14): inspect's size, tables when piped, the model card,
compose --push, -o FILE.safetensors, recipe errors all at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import adaptermath as am
from adaptermath.cli.main import main
from adaptermath.modelcard import model_card_metadata, render_model_card
from adaptermath.recipe import load_recipe
from adaptermath.errors import RecipeError


def test_inspect_size_is_the_weights_file(tiny) -> None:
    info = am.inspect_adapter(tiny["lora_a"])
    assert info["size_bytes"] == (Path(tiny["lora_a"]) / "adapter_model.safetensors").stat().st_size


def test_piped_tables_keep_whole_module_names(tiny) -> None:
    runner = CliRunner()  # stdout is not a terminal, as when piped
    names = [row["name"] for row in am.compare(tiny["lora_a"], tiny["lora_b"])["modules"]]
    compared = runner.invoke(main, ["compare", str(tiny["lora_a"]), str(tiny["lora_b"])], env={"COLUMNS": "40"})
    inspected = runner.invoke(main, ["inspect", str(tiny["lora_a"])], env={"COLUMNS": "40"})
    for result in (compared, inspected):
        assert result.exit_code == 0, result.output
        assert "…" not in result.stdout
        assert all(name in result.stdout for name in names)


def _provenance(base: str) -> dict:
    return {"format": "adaptermath.provenance/1", "expression": "a + b", "normal_form": "a + b", "space": "param",
            "method": "linear", "adapter_type": "lora", "base_model": base,
            "options": {"negate_factor": "B", "rank": None, "method_options": {}, "heads": None, "dtype": None},
            "inputs": [], "recipe": {"version": 1, "expression": "a + b", "output": ".",
                                     "inputs": {"a": "../" + "x" * 120, "b": "../b"}}}


def test_card_hides_null_options_and_is_not_wrapped() -> None:
    card = render_model_card(_provenance("owner/model"), {"peft_type": "LORA"})
    assert "Option `negate_factor`" in card
    assert "Option `rank`" not in card and "Option `heads`" not in card and "Option `method_options`" not in card
    assert "x" * 120 in card  # the long recipe line is one line


def test_a_local_base_is_never_a_link_or_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "demo" / "base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for local in ("demo/base", "./demo/base", str(tmp_path / "demo" / "base")):
        metadata = model_card_metadata(_provenance(local), {})
        assert "base_model" not in metadata and not any(t.startswith("base_model:") for t in metadata["tags"])
        assert "huggingface.co/demo" not in render_model_card(_provenance(local), {})
    snapshot = tmp_path / "models--owner--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert model_card_metadata(_provenance(str(snapshot)), {})["base_model"] == "owner/model"
    assert model_card_metadata(_provenance("owner/model"), {})["base_model"] == "owner/model"


def test_compose_push_checks_the_token_before_computing(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import adaptermath.compose as compose_module  # noqa: F401  (the function; the module is in sys.modules)
    import sys

    calls = []
    real = sys.modules["adaptermath.compose"].compose
    monkeypatch.setattr(sys.modules["adaptermath.compose"], "compose", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = CliRunner().invoke(main, ["compose", "-x", "-a", f"x={tiny['lora_a']}", "-o", str(tmp_path / "o"),
                                       "--push", "me/repo"])
    assert result.exit_code == 2 and "token" in result.stderr
    assert calls == [] and not (tmp_path / "o").exists()


def test_a_file_name_output_with_peft_inputs_is_refused(tiny, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compose", "-x", "-a", f"x={tiny['lora_a']}", "-o", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "--format kohya/diffusers" in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_recipe_validation_reports_every_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("version: 1\ninputs:\n  a: ./a\nexpression: a\nspace: dleta\n"
                                     "options:\n  rank: 0\noutput: ./o\nforce: maybe\n", encoding="utf-8")
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "r.yaml")
    message = str(caught.value)
    assert message.startswith("3 problems: ") and "\n" not in message
    assert "'space'" in message and "'options.rank'" in message and "'force'" in message
    result = CliRunner().invoke(main, ["run", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
