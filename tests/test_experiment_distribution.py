"""The distribution-generalisation experiment: splits and halves, threshold tuning, the non-constant
check, the verdict rule, and the results page regenerating byte for byte from the data committed
beside it (docs/results/data/distribution/)."""

from __future__ import annotations

import gzip
import json
import math
import random
import shutil
from pathlib import Path
import pytest

from adaptermath.errors import DataError
from adaptermath.experiments import common, distribution

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def test_split_indices_are_disjoint_sized_and_seeded() -> None:
    sizes = {"split_seed": 3, "test": 20, "val": 10, "train": 50}
    parts = distribution.split_indices(100, sizes)
    assert [len(parts[k]) for k in ("test", "val", "train")] == [20, 10, 50]
    assert len(set(parts["test"]) | set(parts["val"]) | set(parts["train"])) == 80
    assert distribution.split_indices(100, sizes) == parts
    assert distribution.split_indices(100, {**sizes, "split_seed": 4}) != parts
    with pytest.raises(DataError, match="cannot give"):
        distribution.split_indices(79, sizes)


def test_halves_are_equal_and_skewed_by_the_recipe() -> None:
    rows = [{"text": f"t{i}", "label": int(i % 5 >= 2)} for i in range(100)]  # 40 negatives
    halves = distribution.halves_for_seed(rows, 0, {"share": 0.8, "label": 0})
    assert len(halves["h0"]) == len(halves["h1"]) == 50 and len(halves["union"]) == 100
    assert sum(r["label"] == 0 for r in halves["h0"]) == 32 and sum(r["label"] == 0 for r in halves["h1"]) == 8
    assert distribution.halves_for_seed(rows, 1, {"share": 0.8, "label": 0})["h0"] != halves["h0"]


def test_stored_margins_keep_their_sign() -> None:
    assert distribution.stored_margin(1.234567) == 1.23457
    assert distribution.stored_margin(3e-7) == 1e-5 and distribution.stored_margin(-3e-7) == -1e-5
    assert distribution.stored_margin(0.0) == 0.0 and math.copysign(1, distribution.stored_margin(-0.0)) == 1


def test_tune_threshold_by_hand_and_against_brute_force() -> None:
    # labels 0 1 0 1 1: t = 0 gets 3/5; t = −1.5 and t = 0.75 get 4/5, and 0.75 is nearer 0
    margins, labels = [-2.0, -1.0, 0.5, 1.0, 3.0], [0, 1, 0, 1, 1]
    assert distribution.accuracy(margins, labels) == 0.6
    t = distribution.tune_threshold(margins, labels)
    assert t == 0.75 and distribution.accuracy(margins, labels, t) == 0.8
    assert distribution.tune_threshold([1.0, 2.0], [1, 1]) == -math.inf  # everything positive, nothing to gain
    assert distribution.tune_threshold([1.0, 2.0], [0, 0]) == math.inf
    rng = random.Random(0)
    for _ in range(20):
        ms = [round(rng.gauss(0.5, 1), 1) for _ in range(40)]
        ys = [int(rng.random() < 0.6) for _ in range(40)]
        best = max(distribution.accuracy(ms, ys, c) for c in [-math.inf, *ms])
        assert distribution.accuracy(ms, ys, distribution.tune_threshold(ms, ys)) == best


def test_choose_lambda_takes_the_first_best() -> None:
    assert distribution.choose_lambda([(0.0, 0.6), (0.4, 0.7), (0.6, 0.7), (1.0, 0.65)]) == 0.4


def test_the_constant_check() -> None:
    labels = [1] * 60 + [0] * 40
    constant = distribution.constant_check([1.0] * 100, labels, {"min_minority_share": 0.05, "min_gain": 0.05})
    assert constant["minority_share"] == 0 and constant["accuracy"] == 0.6 and not constant["passed"]
    good = [1.0] * 55 + [-1.0] * 5 + [-1.0] * 35 + [1.0] * 5  # 90 right; 40% predicted negative
    checked = distribution.constant_check(good, labels, {"min_minority_share": 0.05, "min_gain": 0.05})
    assert checked["accuracy"] == 0.9 and checked["minority_share"] == 0.4 and checked["passed"]
    weak = [1.0] * 60 + [1.0] * 38 + [-1.0] * 2  # predicts negative on 2%
    assert not distribution.constant_check(weak, labels, {"min_minority_share": 0.05, "min_gain": 0.0})["passed"]


def test_the_verdict_rule() -> None:
    above = {"estimate": 0.05, "low": 0.02, "high": 0.08}
    straddles = {"estimate": 0.01, "low": -0.01, "high": 0.03}
    null = {"estimate": 0.0, "low": -0.008, "high": 0.006}
    assert distribution.verdict(above, True, 0.01) == "reproduced"
    assert distribution.verdict(above, False, 0.01) == "inconclusive"  # a constant half: no verdict
    assert distribution.verdict(straddles, True, 0.01) == "inconclusive"
    assert distribution.verdict(null, True, 0.01) == "not reproduced"
    assert distribution.verdict(null, False, 0.01) == "inconclusive"


# --------------------------------------------------------------------------- pages from data


def _margins(labels: list[int], flip: float, rng: random.Random) -> list[float]:
    """Margins of size 1–2 whose sign is right except on ``round(flip·n)`` random rows."""
    flipped = set(rng.sample(range(len(labels)), round(flip * len(labels))))
    return [round((2 * y - 1) * (1 + rng.random()) * (-1 if i in flipped else 1), 5) for i, y in enumerate(labels)]


def _fake_data(tmp_path: Path, merge_flip: float, *, h1_constant: bool = False, null: bool = False) -> Path:
    """A data folder as ``collect`` writes it, from the quick settings: halves right on 75% of the rows
    and a merge right on ``1 − merge_flip``; with ``null``, h1 is weak and the merge *is* tuned h0
    (h0's margins minus its validation threshold)."""
    settings = common.load_config("distribution", quick=True)
    settings.pop("config_path")
    rng = random.Random(7)
    labels = {"val": [int(rng.random() < 0.55) for _ in range(200)], "test": [int(rng.random() < 0.55) for _ in range(400)]}
    evaluations: dict[str, list[float]] = {}
    for seed in settings["seeds"]:
        h0 = {split: _margins(ys, 0.25, rng) for split, ys in labels.items()}
        shift = distribution.tune_threshold(h0["val"], labels["val"])
        for split, ys in labels.items():
            evaluations[distribution.slug(split, seed, "h0")] = h0[split]
            evaluations[distribution.slug(split, seed, "h1")] = ([5.0] * len(ys) if h1_constant
                                                                 else _margins(ys, 0.33 if null else 0.25, rng))
            for space in distribution.spaces(settings):
                evaluations[distribution.slug(split, seed, "merge", 0.5, space)] = ([m - shift for m in h0[split]] if null
                                                                                    else _margins(ys, merge_flip, rng))
            if split == "test":
                evaluations[distribution.slug(split, seed, "union")] = _margins(ys, 0.1, rng)
    training = {f"s{seed}-{name}": {"examples_used": 10, "trainable_parameters": 5, "tokens": 100, "loss_first": 0.7,
                                    "loss_last": 0.4, "seconds": 1.0, "threads": 1, "rounds": 1, "steps": 8}
                for seed in settings["seeds"] for name in distribution.PEMS}
    halves = {str(seed): {"h0": {"rows": 80, "negative_share": 0.7}, "h1": {"rows": 80, "negative_share": 0.2},
                          "union": {"rows": 160, "negative_share": 0.45}} for seed in settings["seeds"]}
    record = {"experiment": "distribution", "settings": settings, "source_rows": 1000, "halves": halves,
              "training": training, "evaluations": evaluations,
              "splits": {split: {"index": list(range(len(ys))), "label": ys} for split, ys in labels.items()},
              "threads": 1, "timings": {"training": 60.0, "total": 120.0},
              "versions": {"python": "3", "machine": "test machine", "platform": "test"}}
    return distribution.collect(tmp_path / "work", tmp_path / "data", record)


def test_a_clear_gain_is_reproduced_a_null_one_is_not_and_a_constant_half_blocks_the_verdict(tmp_path: Path) -> None:
    clear = distribution.analyse(_fake_data(tmp_path / "clear", merge_flip=0.05))
    assert clear["verdict"] == "reproduced" and clear["checks_passed"]
    assert clear["delta"]["low"] > 0.1 and all(m["lambda"] == 0.5 for m in clear["spaces"]["param"]["seeds"].values())
    assert set(clear["spaces"]) == {"param", "delta"} and clear["spaces"]["delta"]["verdict"] == "reproduced"
    mcnemar = clear["spaces"]["param"]["seeds"][0]["mcnemar"]
    assert mcnemar["merge_only"] > mcnemar["half_only"]
    null = distribution.analyse(_fake_data(tmp_path / "null", merge_flip=0.0, null=True))
    assert null["verdict"] == "not reproduced"
    assert null["delta"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    constant = distribution.analyse(_fake_data(tmp_path / "constant", merge_flip=0.05, h1_constant=True))
    assert not constant["checks_passed"] and constant["verdict"] == "inconclusive"
    assert constant["seeds"][0]["checks"]["h1"]["minority_share"] == 0


def test_the_best_tuned_half_is_the_better_on_test(tmp_path: Path) -> None:
    facts = distribution.analyse(_fake_data(tmp_path, merge_flip=0.05))
    arm = facts["spaces"]["param"]
    for seed, s in facts["seeds"].items():
        assert s["test"]["best tuned"] == max(s["test"]["h0 tuned"], s["test"]["h1 tuned"])
        assert arm["seeds"][seed]["delta"] == pytest.approx(arm["seeds"][seed]["test_merge"] - s["test"]["best tuned"])
    pooled = sum(m["test_merge"] for m in arm["seeds"].values()) / len(arm["seeds"])
    assert arm["pooled"]["estimate"] == pytest.approx(pooled)


def test_the_page_is_a_function_of_the_data_folder(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, merge_flip=0.05)
    page = distribution.render_page(data)
    assert page == distribution.render_page(data)
    assert "**reproduced**" in page and "REDUCED --quick run" in page
    with gzip.open(data / distribution.EVALUATIONS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    first = next(r for r in records if r["slug"] == "test-s0-merge-param-0.5")
    first["margin"] = [-m for m in first["margin"]]
    common.write_gzip_text(data / distribution.EVALUATIONS, "".join(json.dumps(r) + "\n" for r in records))
    assert distribution.render_page(data) != page


def test_adaptermath_report_renders_the_data_folder(tmp_path: Path) -> None:
    from adaptermath.report import report

    data = _fake_data(tmp_path, merge_flip=0.05)
    rendered = report(data)
    assert rendered.kind == "experiment:distribution"
    assert (data / "report.md").read_text(encoding="utf-8") == distribution.render_page(data, rendered.files[1] if len(rendered.files) > 1 else None)
    report(data, check=True)


def _committed_data() -> Path:
    data = RESULTS / distribution.DATA_FOLDER
    if not (data / "run.json").is_file():
        pytest.skip("no committed data yet: run python -m adaptermath.experiments.distribution --threads 2 and commit "
                    "docs/results/data/distribution/, distribution.md and distribution-lambda.png")
    return data


def test_the_committed_page_regenerates_byte_for_byte() -> None:
    data = _committed_data()
    assert distribution.render_page(data) == (RESULTS / distribution.PAGE_NAME).read_text(encoding="utf-8")


def test_the_committed_data_is_small_and_holds_no_weights() -> None:
    data = _committed_data()
    assert sorted(p.name for p in data.iterdir()) == sorted(["run.json", distribution.EVALUATIONS, distribution.SPLITS])
    assert sum(p.stat().st_size for p in data.iterdir()) < 4 * 2**20
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    assert record["settings"]["quick"] is False and len(record["settings"]["seeds"]) >= 3
    assert record["settings"]["data"]["val"] >= 1000 and record["settings"]["data"]["test"] >= 2000


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        distribution.main(["--render", "--docs", str(tmp_path)])
    assert str(raised.value).startswith("error: ") and "\n" not in str(raised.value)
    assert not (tmp_path / distribution.PAGE_NAME).exists()


@pytest.mark.slow
def test_the_quick_run_goes_end_to_end_and_its_page_regenerates(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptermath.compose import compose
    from adaptermath.experiments import assets

    try:
        minilm = assets.minilm_model_dir()
        rows = distribution.sentiment_rows("rotten_tomatoes")
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    work, docs = tmp_path / "work", tmp_path / "docs"
    distribution.main(["--quick", "--threads", "1", "--workdir", str(work), "--docs", str(docs)])
    page = (docs / distribution.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and "| LoRA, param space (the paper's operator; primary) | 2 | 64 |" in page
    assert (docs / distribution.PLOT_NAME).stat().st_size > 1000
    facts = distribution.analyse(docs / distribution.DATA_FOLDER)

    # One stored number checked independently: the merge at seed 0's chosen λ, saved, loaded with plain
    # PEFT, argmax of the logits on the test rows.
    settings = facts["record"]["settings"]
    lam = facts["spaces"]["param"]["seeds"][0]["lambda"]
    rounds = {half: facts["record"]["training"][f"s0-{half}"]["rounds"] for half in ("h0", "h1")}
    merged = compose(distribution.EXPRESSION, {half: work / "pems" / f"s0-{half}-r{rounds[half]}" for half in rounds},
                     variables={"λ": lam}, space="param")
    merged.save(tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm))
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(str(minilm), num_labels=2),
                                      str(tmp_path / "merged")).eval()
    test = [rows[i] for i in distribution.split_indices(len(rows), settings["data"])["test"]]
    with torch.no_grad():
        predictions = [int(model(input_ids=torch.tensor([ids[: settings["eval"]["max_length"]]])).logits.argmax(-1))
                       for ids in tokenizer([r["text"] for r in test])["input_ids"]]
    expected = sum(p == r["label"] for p, r in zip(predictions, test)) / len(test)
    assert facts["spaces"]["param"]["seeds"][0]["test_merge"] == pytest.approx(expected, abs=1e-9)

    shutil.rmtree(work)
    distribution.main(["--quick", "--render", "--docs", str(docs)])
    assert (docs / distribution.PAGE_NAME).read_text(encoding="utf-8") == page
