"""Textual-inversion embeddings: every file layout, compose = Σ cᵢ·vᵢ with the token kept, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from adaptermath.errors import AdapterLoadError, AdapterMathError, CompositionError, ExpressionError, OutputExistsError
from adaptermath.formats import compose_embeddings, detect_format, load_embedding, save_embedding


def vectors(seed: int, shape=(2, 8), dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "a1111_pt": tmp_path / "cat.pt",
        "a1111": tmp_path / "dog.safetensors",
        "diffusers": tmp_path / "learned_embeds.safetensors",
        "sdxl_a": tmp_path / "sdxl_a.safetensors",
        "sdxl_b": tmp_path / "sdxl_b.safetensors",
    }
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors(1)}, "name": "cat-token", "step": 500,
                "sd_checkpoint": "abcd", "sd_checkpoint_name": "v1-5"}, out["a1111_pt"])
    save_file({"emb_params": vectors(2)}, str(out["a1111"]), metadata={"trained_by": "me"})
    save_file({"<bird>": vectors(3)}, str(out["diffusers"]))
    for i, name in enumerate(("sdxl_a", "sdxl_b")):
        save_file({"clip_l": vectors(10 + i, (1, 8)), "clip_g": vectors(20 + i, (1, 12))}, str(out[name]))
    return out


def test_every_layout_loads_with_its_token(files):
    cat = load_embedding(files["a1111_pt"], allow_pickle=True)
    assert (cat.format, cat.token, cat.num_vectors) == ("a1111-pt", "cat-token", 2)
    assert torch.equal(cat.vectors["embedding"], vectors(1))
    dog = load_embedding(files["a1111"])
    assert (dog.format, dog.token, dog.metadata) == ("a1111", "dog", {"trained_by": "me"})
    bird = load_embedding(files["diffusers"])
    assert (bird.format, bird.token) == ("diffusers", "<bird>")
    sdxl = load_embedding(files["sdxl_a"])
    assert sdxl.format == "sdxl" and set(sdxl.vectors) == {"clip_l", "clip_g"}
    assert [detect_format(files[k]).name for k in ("a1111", "diffusers", "sdxl_a")] == ["ti-a1111", "ti-diffusers", "ti-sdxl"]
    assert detect_format(files["a1111_pt"]).name == "pickle"
    assert detect_format(files["a1111_pt"], allow_pickle=True).name == "ti-a1111-pt"


def test_compose_is_the_linear_combination_and_keeps_the_token(files, tmp_path):
    result = compose_embeddings("a + λ*(b - c)", {"a": files["a1111_pt"], "b": files["a1111"], "c": files["diffusers"]},
                                variables={"λ": 0.5}, allow_pickle=True)
    expected = vectors(1) + 0.5 * (vectors(2) - vectors(3))
    assert torch.allclose(result.vectors["embedding"], expected, atol=1e-6)
    assert result.token == "cat-token" and result.format == "a1111-pt"
    out = save_embedding(result, tmp_path / "mix.pt")
    again = load_embedding(out, allow_pickle=True)
    assert again.token == "cat-token" and torch.allclose(again.vectors["embedding"], expected, atol=1e-6)
    raw = torch.load(str(out), weights_only=True)
    assert raw["sd_checkpoint_name"] == "v1-5" and "step" not in raw and raw["string_to_token"] == {"*": 265}
    assert json.loads(raw["adaptermath_provenance"])["coefficients"] == {"a": 1.0, "b": 0.5, "c": -0.5}


def test_token_is_configurable_and_stored_where_the_format_has_room(files, tmp_path):
    result = compose_embeddings("0.5*x + 0.5*y", {"x": files["diffusers"], "y": files["a1111"]}, token="<mix>")
    out = save_embedding(result, tmp_path / "mix.safetensors")
    assert list(load_file(str(out))) == ["<mix>"]
    with safe_open(str(out), framework="pt") as handle:
        assert json.loads(handle.metadata()["adaptermath.provenance"])["token"] == "<mix>"
    assert torch.allclose(load_embedding(out).vectors["embedding"], 0.5 * vectors(3) + 0.5 * vectors(2), atol=1e-6)
    as_a1111 = save_embedding(result, tmp_path / "mix_a1111.safetensors", format="a1111")
    assert list(load_file(str(as_a1111))) == ["emb_params"]


def test_sdxl_embeddings_compose_slot_by_slot_in_their_dtype(files, tmp_path):
    half = tmp_path / "half.safetensors"
    save_file({"clip_l": vectors(10, (1, 8), torch.float16), "clip_g": vectors(20, (1, 12), torch.float16)}, str(half))
    result = compose_embeddings("h - 0.25*b", {"h": half, "b": files["sdxl_b"]})
    assert result.vectors["clip_g"].dtype == torch.float16
    expected = vectors(20, (1, 12), torch.float16).float() - 0.25 * vectors(21, (1, 12))
    assert torch.allclose(result.vectors["clip_g"].float(), expected, atol=2e-3)
    out = save_embedding(result, tmp_path / "sdxl_mix.safetensors")
    assert set(load_file(str(out))) == {"clip_l", "clip_g"}


def test_bad_embedding_inputs_give_one_line_errors(files, tmp_path):
    with pytest.raises(AdapterLoadError, match="--allow-pickle"):
        load_embedding(files["a1111_pt"])
    long = tmp_path / "long.safetensors"
    save_file({"emb_params": vectors(5, (3, 8))}, str(long))
    cases = [
        (lambda: compose_embeddings("a + b", {"a": files["a1111"], "b": long}), CompositionError, "differ in shape"),
        (lambda: compose_embeddings("a + b", {"a": files["a1111"], "b": files["sdxl_a"]}), CompositionError, "text-encoder slots"),
        (lambda: compose_embeddings("a * b", {"a": files["a1111"], "b": files["diffusers"]}), ExpressionError, "linear"),
        (lambda: compose_embeddings("a + λ*b", {"a": files["a1111"], "b": files["diffusers"]}), AdapterMathError, "--var λ"),
        (lambda: save_embedding(load_embedding(files["a1111"]), tmp_path / "x.pt"), AdapterMathError, "a safetensors file"),
        (lambda: save_embedding(load_embedding(files["sdxl_a"]), tmp_path / "x.safetensors", format="a1111"), AdapterMathError, "SDXL"),
        (lambda: save_embedding(load_embedding(files["a1111"]), files["a1111"]), OutputExistsError, "already exists"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    nan = tmp_path / "nan.safetensors"
    save_file({"emb_params": torch.full((1, 8), float("nan"))}, str(nan))
    with pytest.raises(AdapterMathError, match="NaN"):
        load_embedding(nan)
    not_embedding = tmp_path / "two.safetensors"
    save_file({"a": torch.ones(2), "b": torch.ones(2)}, str(not_embedding))
    with pytest.raises(AdapterMathError, match="not a textual-inversion embedding"):
        load_embedding(not_embedding)
