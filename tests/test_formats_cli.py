"""The command line for the other formats: convert, inspect recognition, compose of LoRA files and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from peft import LoHaConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from adaptermath.cli.main import main
from adaptermath.formats import load_embedding
from test_formats_kohya import MODULES, METADATA, kohya_delta, make_kohya, metadata_of

import adaptermath as am


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_convert_round_trip_from_the_command_line(tmp_path):
    source = make_kohya(tmp_path / "style.safetensors", seed=1)
    code, out, _ = run("convert", source, "--to", "peft", "-o", tmp_path / "peft", "--json")
    assert code == 0
    payload = json.loads(out)
    assert (payload["from"], payload["to"], payload["modules"]) == ("kohya", "peft", len(MODULES))
    code, out, _ = run("convert", tmp_path / "peft", "--to", "kohya", "-o", tmp_path / "back.safetensors")
    assert code == 0 and "kohya" in out
    raw, back = load_file(str(source)), load_file(str(tmp_path / "back.safetensors"))
    assert set(raw) == set(back) and all(torch.equal(raw[k], back[k]) for k in raw)
    assert metadata_of(tmp_path / "back.safetensors") == METADATA
    code, _, err = run("convert", tmp_path / "peft", "--to", "kohya", "-o", tmp_path / "back.safetensors")
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_convert_with_a_module_names_file(tmp_path):
    save_file({"lora_unet_odd_layer_0.lora_down.weight": torch.ones(2, 4), "lora_unet_odd_layer_0.lora_up.weight": torch.ones(4, 2)},
              str(tmp_path / "odd.safetensors"))
    code, _, err = run("convert", tmp_path / "odd.safetensors", "--to", "diffusers", "-o", tmp_path / "d.safetensors")
    assert code == 2 and "--module-names" in err
    (tmp_path / "names.txt").write_text("# unet modules\nunet.odd_layer.0\nunet.other\n")
    code, _, err = run("convert", tmp_path / "odd.safetensors", "--to", "diffusers", "-o", tmp_path / "d.safetensors",
                       "--module-names", tmp_path / "names.txt")
    assert code == 0, err
    assert "unet.odd_layer.0.lora_A.weight" in load_file(str(tmp_path / "d.safetensors"))


def test_inspect_names_every_format(tmp_path):
    kohya = make_kohya(tmp_path / "style.safetensors", seed=1)
    run("convert", kohya, "--to", "diffusers", "-o", tmp_path / "d.safetensors")
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    get_peft_model(base, LoHaConfig(r=2, target_modules=["q_proj"], init_weights=False)).save_pretrained(tmp_path / "loha")
    save_file({"emb_params": torch.randn(2, 8)}, str(tmp_path / "tok.safetensors"))
    expected = {kohya: "kohya", tmp_path / "d.safetensors": "diffusers", tmp_path / "loha": "peft-loha"}
    for path, name in expected.items():
        code, out, err = run("inspect", path, "--json")
        assert code == 0, err
        info = json.loads(out)
        assert info["format"] == name and info["type"] == "LoRA" and info["format_description"]
    code, out, _ = run("inspect", tmp_path / "tok.safetensors", "--json")
    info = json.loads(out)
    assert code == 0 and (info["type"], info["format"], info["token"], info["slots"]) == (
        "textual-inversion embedding", "a1111", "tok", {"embedding": [2, 8]})
    code, out, _ = run("inspect", tmp_path / "loha", "--no-modules")
    assert code == 0 and "peft-loha" in out
    save_file({"lora_unet_x.hada_w1_a": torch.ones(4, 2), "lora_unet_x.hada_w1_b": torch.ones(2, 4)}, str(tmp_path / "lyco.safetensors"))
    torch.save({"<t>": torch.ones(4)}, tmp_path / "emb.bin")
    for path, name in ((tmp_path / "lyco.safetensors", "lycoris"), (tmp_path / "emb.bin", "pickle")):
        code, _, err = run("inspect", path)
        assert code == 2 and f"{name} — " in err and len(err.strip().splitlines()) == 1
    code, out, _ = run("inspect", tmp_path / "emb.bin", "--allow-pickle", "--json")
    assert code == 0 and json.loads(out)["format"] == "diffusers-bin" and json.loads(out)["token"] == "<t>"


def test_compose_kohya_files_from_the_command_line_writes_kohya(tmp_path):
    a, b = make_kohya(tmp_path / "a.safetensors", seed=1), make_kohya(tmp_path / "b.safetensors", seed=2)
    code, out, err = run("compose", "0.5*a + 0.5*b", "-a", f"a={a}", "-a", f"b={b}", "--space", "delta",
                         "-o", tmp_path / "mix.safetensors", "--json")
    assert code == 0, err
    assert json.loads(out)["output"].endswith("mix.safetensors")
    merged = am.load_adapter(tmp_path / "mix.safetensors")
    assert merged.format == "kohya"
    ra, rb = load_file(str(a)), load_file(str(b))
    for name in MODULES:
        expected = 0.5 * kohya_delta(ra, name) + 0.5 * kohya_delta(rb, name)
        assert float((merged.module(name).delta().double() - expected).norm() / expected.norm()) < 2e-3


def test_compose_embeddings_from_the_command_line(tmp_path):
    save_file({"emb_params": torch.ones(2, 8)}, str(tmp_path / "cat.safetensors"))
    save_file({"emb_params": torch.full((2, 8), 3.0)}, str(tmp_path / "dog.safetensors"))
    code, out, err = run("compose", "0.25*cat + 0.5*dog", "-a", f"cat={tmp_path / 'cat.safetensors'}",
                         "-a", f"dog={tmp_path / 'dog.safetensors'}", "-o", tmp_path / "catdog.safetensors", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["token"] == "cat" and payload["coefficients"] == {"cat": 0.25, "dog": 0.5}
    assert torch.allclose(load_embedding(tmp_path / "catdog.safetensors").vectors["embedding"], torch.full((2, 8), 1.75))
    code, out, _ = run("compose", "cat - dog", "-a", f"cat={tmp_path / 'cat.safetensors'}", "-a", f"dog={tmp_path / 'dog.safetensors'}",
                       "--token", "<mix>", "--normalize", "-o", tmp_path / "mix.safetensors")
    assert code == 0 and "<mix>" in out
    assert torch.allclose(load_embedding(tmp_path / "mix.safetensors").vectors["embedding"], torch.full((2, 8), -1.0))
    code, _, err = run("compose", "cat + dog", "-a", f"cat={tmp_path / 'cat.safetensors'}", "-a", f"dog={tmp_path / 'dog.safetensors'}",
                       "--rank", "4", "-o", tmp_path / "r.safetensors")
    assert code == 2 and "--rank applies to adapters" in err


def test_token_is_refused_for_adapters(tmp_path):
    a = make_kohya(tmp_path / "a.safetensors", seed=1)
    code, _, err = run("compose", "a", "-a", f"a={a}", "--token", "x", "-o", tmp_path / "o.safetensors")
    assert code == 2 and "--token applies to textual-inversion embeddings only" in err


def test_compose_format_flag_writes_peft_from_kohya_and_push_needs_a_folder(tmp_path, monkeypatch):
    a, b = make_kohya(tmp_path / "a.safetensors", seed=1), make_kohya(tmp_path / "b.safetensors", seed=2)
    code, _, err = run("compose", "a - b", "-a", f"a={a}", "-a", f"b={b}", "--space", "delta", "--format", "peft",
                       "-o", tmp_path / "folder")
    assert code == 0, err
    folder = am.load_adapter(tmp_path / "folder")
    file_result = am.compose("a - b", {"a": a, "b": b}, space="delta")
    reference = am.load_adapter(file_result.save(tmp_path / "ref.safetensors"))
    assert folder.format == "peft-lora" and (tmp_path / "folder" / "adapter_config.json").is_file()
    assert len(folder.module_names) == len(reference.module_names) == len(MODULES)
    deltas = sorted((folder.module(n).delta() for n in folder.module_names), key=lambda d: (d.shape, float(d.norm())))
    expected = sorted((reference.module(n).delta() for n in reference.module_names), key=lambda d: (d.shape, float(d.norm())))
    for got, want in zip(deltas, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    monkeypatch.setenv("HF_TOKEN", "hf_not_used")  # the token check passes; the format check refuses
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, _, err = run("compose", "a - b", "-a", f"a={a}", "-a", f"b={b}", "--space", "delta",
                       "-o", tmp_path / "file.safetensors", "--push", "alice/x")
    assert code == 2 and "single LoRA file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "file.safetensors").exists()  # refused before computing
