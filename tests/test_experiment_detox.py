"""The detox experiment: prompt design, λ selection, the verdict rule, the second scorer, and the
results page as a function of its data (the committed page is checked byte for byte in tests/test_results_pages.py)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptermath.errors import DataError
from adaptermath.evaluation.metrics import roc_auc
from adaptermath.experiments import common, detox, insult_probe

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_openings_are_deduplicated_long_enough_and_seeded() -> None:
    texts = ["you are a total idiot", "you are a total fool", "too short", "one two three four five", "  a b  c d "]
    pool = detox.openings(texts, 4, seed=0)
    assert sorted(pool) == ["a b c d", "one two three four", "you are a total"]
    assert detox.openings(texts, 4, seed=0) == pool
    assert sorted(detox.openings(texts, 4, seed=1)) == sorted(pool)


def test_validation_and_test_openings_are_disjoint() -> None:
    texts = [f"w{i} x{i} y{i} z{i} tail" for i in range(30)] + ["w0 x0 y0 z0 again"]
    splits = detox.prompt_splits(texts, {"words": 4, "seed": 3, "val": 10, "test": 20})
    assert len(splits["val"]) == 10 and len(splits["test"]) == 20
    assert not set(splits["val"]) & set(splits["test"])
    with pytest.raises(DataError, match="only 30 distinct openings"):
        detox.prompt_splits(texts, {"words": 4, "seed": 3, "val": 11, "test": 20})


def test_select_lambda_takes_the_least_toxic_within_the_perplexity_budget() -> None:
    points = [(0.1, 0.05, 1.01), (0.25, 0.03, 1.08), (0.5, 0.01, 1.3), (1.0, 0.005, 2.0)]
    assert detox.select_lambda(points, 1.1) == (0.25, True)
    assert detox.select_lambda([(0.1, 0.03, 1.0), (0.2, 0.03, 1.05)], 1.1) == (0.1, True)  # tie: grid order
    assert detox.select_lambda([(0.5, 0.01, 1.3), (1.0, 0.0, 1.2)], 1.1) == (1.0, False)  # none within: lowest ratio


def test_the_verdict_rule() -> None:
    below = {"estimate": -0.05, "low": -0.08, "high": -0.02}
    straddles = {"estimate": -0.01, "low": -0.04, "high": 0.02}
    null = {"estimate": 0.0, "low": -0.004, "high": 0.004}
    thresholds = [0.01, 0.01]
    assert detox.verdict_for_control([below, below], thresholds) == "reproduced"
    assert detox.verdict_for_control([below, straddles], thresholds) == "inconclusive"
    assert detox.verdict_for_control([below, null], thresholds) == "not reproduced"  # excludes a 0.01 reduction
    assert detox.overall_verdict(["reproduced", "reproduced"]) == "reproduced"
    assert detox.overall_verdict(["reproduced", "inconclusive"]) == "inconclusive"
    assert detox.overall_verdict(["inconclusive", "not reproduced"]) == "not reproduced"


def test_roc_auc_is_the_mann_whitney_probability() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [1, 0, 1]) == pytest.approx(0.5)  # ties count one half
    rng = np.random.default_rng(0)
    scores, labels = rng.random(200), rng.integers(0, 2, 200)
    pairs = [(s_p > s_n) + 0.5 * (s_p == s_n) for s_p, l_p in zip(scores, labels) if l_p
             for s_n, l_n in zip(scores, labels) if not l_n]
    assert roc_auc(list(scores), list(labels)) == pytest.approx(float(np.mean(pairs)))
    with pytest.raises(DataError):
        roc_auc([0.1, 0.2], [1, 1])


def test_the_probe_scores_sigmoid_of_a_linear_function_and_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    features = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    monkeypatch.setattr(insult_probe, "embed", lambda texts, **_: features[: len(texts)])
    probe = insult_probe.InsultProbe(np.array([2.0, -1.0]), 0.5, 128, 64)
    expected = 1 / (1 + np.exp(-(features @ probe.weights + probe.bias)))
    assert probe.score(["a", "b", "c"]) == pytest.approx(list(expected))
    again = insult_probe.InsultProbe.from_dict(json.loads(json.dumps(probe.to_dict())))
    assert again.score(["a", "b", "c"]) == probe.score(["a", "b", "c"])
    insult_probe.register(probe)
    from adaptermath.evaluation.toxicity import get_scorer

    assert get_scorer(insult_probe.SCORER_NAME)(["a"]) == pytest.approx([expected[0]])


# --------------------------------------------------------------------------- pages from data


def _fake_data(tmp_path: Path, toxic_drop: float) -> Path:
    """A data folder as ``collect`` writes it, from the quick settings: negating the toxic PEM lowers
    every score by ``toxic_drop`` from the base's, every control leaves the base's scores."""
    settings = common.load_config("detox", quick=True)
    settings.pop("config_path")
    prompts = {"val": [f"val opening {i}" for i in range(6)], "test": [f"test opening {i}" for i in range(30)]}
    rng = np.random.default_rng(1)
    base_scores = {split: rng.uniform(0.1, 0.5, size=(len(prompts[split]), 2)) for split in prompts}
    work = tmp_path / "work"

    def evaluation(name: str, split: str, drop: float, ratio: float) -> None:
        rows = [{"p": p, "s": 0, "text": f"text {p}", "scores": [round(float(max(0.0, v - drop)), 6) for v in base_scores[split][p]]}
                for p in range(len(prompts[split]))]
        record: dict[str, Any] = {"slug": name, "openings": rows, "perplexity": 30.0 * ratio, "perplexity_tokens": 100,
                                  "seconds": 2.0}
        if split == "test":
            record["paper"] = [{"p": 0, "s": s, "text": "x", "scores": [0.1 + drop, 0.2]} for s in range(3)]
        common.write_json_atomic(work / "evaluations" / f"{name}.json", record)

    for split in ("val", "test"):
        evaluation(detox.slug(split), split, 0.0, 1.0)
    for kind in settings["kinds"]:
        for seed in settings["seeds"]:
            evaluation(detox.slug("test", kind, seed, "toxic"), "test", -0.2, 1.0)
            for arm in detox.ARMS:
                for lam in settings["lambdas"]:
                    drop = toxic_drop * lam if arm == "toxic" else 0.0
                    evaluation(detox.slug("val", kind, seed, arm, lam), "val", drop, 1.0 + 0.1 * lam)
                    evaluation(detox.slug("test", kind, seed, arm, lam), "test", drop, 1.0 + 0.1 * lam)
    common.write_json_atomic(work / "scorer_check.json", {"labels": [0, 1, 1, 0], "profanity-check": [0.1, 0.9, 0.25, 0.3],
                                                         insult_probe.SCORER_NAME: [0.2, 0.7, 0.8, 0.1], "seconds": 5.0})
    training = {f"{kind}-s{seed}-{arm}": {"tokens": 128, "loss_first": 5.0, "loss_last": 4.0, "seconds": 1.0,
                                          "trainable_parameters": 10, "threads": 1}
                for kind in settings["kinds"] for seed in settings["seeds"] for arm in detox.TRAINED}
    record = {"experiment": "detox", "settings": settings, "prompts": prompts, "training": training,
              "training_sizes": {"toxic": 1, "neutral": 1, "forum": 1}, "threads": 1,
              "timings": {"training": 60.0, "total": 120.0},
              "versions": {"python": "3", "machine": "test machine", "platform": "test"}}
    return detox.collect(work, tmp_path / "data", record)


def test_a_clear_effect_is_reproduced_and_a_null_one_is_not(tmp_path: Path) -> None:
    clear = detox.analyse(_fake_data(tmp_path / "clear", toxic_drop=0.1))
    assert {kind: k["verdict"] for kind, k in clear["kinds"].items()} == {"lora": "reproduced", "ia3": "reproduced"}
    delta = clear["kinds"]["lora"]["controls"]["neutral"]["delta"][0]
    assert delta["high"] < 0 and delta["estimate"] < -0.05
    assert clear["auc"]["profanity-check"] == pytest.approx(0.75)
    null = detox.analyse(_fake_data(tmp_path / "null", toxic_drop=0.0))
    assert null["kinds"]["lora"]["verdict"] == "not reproduced"
    assert null["kinds"]["lora"]["controls"]["random"]["delta"][1]["estimate"] == pytest.approx(0.0)


def test_the_page_is_a_function_of_the_data_folder(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, toxic_drop=0.1)
    page = detox.render_page(data)
    assert page == detox.render_page(data)
    assert "| LoRA | neutral-prose PEM (control) |" in page and "reproduced |" in page
    evaluations = 2 + 2 * (1 + 2 * 4 * 2)  # base on both splits; per kind: +toxic, and 4 arms × 2 λ on both splits
    assert f"Runtime: {(2 * 3 + 5 + 2 * evaluations) / 60:.1f} min of work" in page
    with gzip.open(data / detox.EVALUATIONS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    records[0]["openings"][0]["scores"][0] = 0.999
    with open(data / detox.EVALUATIONS, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
    assert detox.render_page(data) != page


def test_the_committed_data_is_small_and_holds_no_weights() -> None:
    data = RESULTS / detox.DATA_FOLDER
    files = sorted(p.name for p in data.iterdir())
    assert files == sorted(["run.json", detox.EVALUATIONS, detox.SCORER_CHECK])
    assert sum(p.stat().st_size for p in data.iterdir()) < 4 * 2**20


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        detox.main(["--render", "--docs", str(tmp_path)])
    assert str(raised.value).startswith("error: ") and "\n" not in str(raised.value)
    assert not (tmp_path / detox.PAGE_NAME).exists()


@pytest.mark.slow
def test_the_quick_run_goes_end_to_end_and_its_page_regenerates(tmp_path: Path) -> None:
    from adaptermath.experiments import assets

    try:
        assets.smollm2_model_dir()
        assets.minilm_model_dir()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("profanity_check", reason="pip install 'adaptermath[toxicity]'")
    docs = tmp_path / "docs"
    detox.main(["--quick", "--threads", "1", "--workdir", str(tmp_path / "work"), "--docs", str(docs)])
    page = (docs / detox.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and "| LoRA | random(toxic)" in page and "| (IA)³ |" in page
    assert (docs / detox.PLOT_NAME).stat().st_size > 1000
    shutil.rmtree(tmp_path / "work")
    detox.main(["--quick", "--render", "--docs", str(docs)])
    assert (docs / detox.PAGE_NAME).read_text(encoding="utf-8") == page
