"""The multitask experiment: data design, λ selection, the PEM check, the verdict rule, and the results
page regenerating byte for byte from the data committed beside it (docs/results/data/multitask/)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adaptermath.experiments import common, multitask


def test_balanced_takes_half_of_each_label_and_is_seeded() -> None:
    rows = [{"text": f"h{i}", "label": 0} for i in range(20)] + [{"text": f"s{i}", "label": 1} for i in range(3)]
    picked = multitask.balanced(rows, 6, seed=0)
    assert sorted(r["text"] for r in picked) == ["h0", "h1", "h2", "s0", "s1", "s2"]
    assert picked == multitask.balanced(rows, 6, seed=0)
    assert len(multitask.balanced(rows, 10, seed=0)) == 8  # the rarer label runs out: 5 ham, 3 spam


def test_task_splits_share_one_split_and_keep_the_natural_mix_on_test() -> None:
    rows = [{"text": f"t{i}", "label": int(i % 8 == 0)} for i in range(400)]
    settings = {"data_seed": 0, "sizes": {"train": 20, "val": 10, "test": 30}}
    plain = multitask.task_splits(rows, settings, balance_train=False)
    even = multitask.task_splits(rows, settings, balance_train=True)
    assert [len(plain[p]) for p in ("train", "val", "test")] == [20, 10, 30]
    assert plain["test"] == even["test"] and plain["val"] == even["val"]
    assert sum(r["label"] for r in even["train"]) == 10
    texts = {p: {r["text"] for r in plain[p]} for p in plain}
    assert not texts["train"] & texts["test"] and not texts["val"] & texts["test"]


def test_accuracy_majority_and_the_choice_of_lambda() -> None:
    assert multitask.accuracy("0110", "0111") == 0.75
    assert multitask.majority_rate("0001") == 0.75 and multitask.majority_rate("1111") == 1.0
    points = [(0.0, 0.5, 0.9), (0.25, 0.7, 0.8), (0.5, 0.8, 0.7), (1.0, 0.9, 0.2)]
    assert multitask.choose_lambda(points) == 0.25  # 0.75 ties with 0.5's 0.75: first in grid order
    assert multitask.choose_lambda([(0.0, 0.5, 0.5), (1.0, 0.6, 0.5)]) == 1.0


def test_the_pem_check_refuses_constant_and_weak_classifiers() -> None:
    gold = "0000000011"  # majority 0.8
    assert multitask.pem_passes("0000000011", gold, 0.05)
    assert not multitask.pem_passes("0000000000", gold, 0.05)  # constant, at the majority rate
    assert not multitask.pem_passes("0000000010", gold, 0.15)  # 0.9 < 0.8 + 0.15
    assert not multitask.pem_passes("1111111111", "1111111111", 0.0)  # one label only


def test_the_verdict_rule() -> None:
    iv = lambda e, lo, hi: {"estimate": e, "low": lo, "high": hi}  # noqa: E731
    good = (iv(0.9, 0.85, 0.95), 0.6, iv(0.1, 0.05, 0.15), iv(-0.01, -0.03, 0.01), 0.05)
    assert multitask.task_verdict(*good) == "reproduced"
    assert multitask.task_verdict(iv(0.62, 0.55, 0.69), 0.6, good[2], good[3], 0.05) == "inconclusive"
    assert multitask.task_verdict(iv(0.58, 0.5, 0.6), 0.6, good[2], good[3], 0.05) == "not reproduced"  # at majority
    assert multitask.task_verdict(good[0], 0.6, iv(-0.1, -0.2, -0.01), good[3], 0.05) == "not reproduced"  # below base
    assert multitask.task_verdict(good[0], 0.6, good[2], iv(-0.2, -0.3, -0.08), 0.05) == "not reproduced"  # far below own
    assert multitask.task_verdict(good[0], 0.6, good[2], iv(-0.05, -0.09, -0.01), 0.05) == "inconclusive"
    assert multitask.overall_verdict(["reproduced", "reproduced"], True) == "reproduced"
    assert multitask.overall_verdict(["reproduced", "reproduced"], False) == "inconclusive"
    assert multitask.overall_verdict(["inconclusive", "not reproduced"], True) == "not reproduced"
    assert multitask.overall_verdict(["not reproduced", "reproduced"], False) == "inconclusive"


def test_pooled_features_count_correct_predictions_per_example() -> None:
    features = multitask.pooled_features(["011", "111", "010"], "011")
    assert features.tolist() == [[2.0, 3.0], [3.0, 3.0], [2.0, 3.0]]


# --------------------------------------------------------------------------- pages from data


def _predictions(gold: str, accuracy: float, rng: np.random.Generator) -> str:
    """``gold`` with about (1 − accuracy) of its positions flipped (at least one of each label kept)."""
    flips = rng.random(len(gold)) > accuracy
    return "".join(str(1 - int(g)) if f else g for g, f in zip(gold, flips))


def _fake_data(tmp_path: Path, merge_quality: float, spam_pem: float = 0.97) -> Path:
    """A data folder as ``collect`` writes it (quick settings, 3 seeds, 400 test rows): each own PEM is
    accurate, the other task's PEM and the base are weak; the merge at 0 < λ < 1 scores ``merge_quality``."""
    settings = common.load_config("multitask", quick=True)
    settings.pop("config_path")
    settings["seeds"] = [0, 1, 2]
    rng = np.random.default_rng(0)
    gold = {"sent": {s: "".join(str(int(v)) for v in rng.random(n) < 0.55) for s, n in (("val", 60), ("test", 400))},
            "spam": {s: "".join(str(int(v)) for v in rng.random(n) < 0.13) for s, n in (("val", 60), ("test", 400))}}
    own = {"sent": 0.9, "spam": spam_pem}
    work = tmp_path / "work"
    folder = multitask.evaluations_folder(work, settings)

    def write(name: str, task: str, split: str, quality: float) -> None:
        pred = _predictions(gold[task][split], quality, rng) if quality >= 0 else "0" * len(gold[task][split])
        common.write_json_atomic(folder / f"{name}.json", {"slug": name, "task": task, "split": split, "pred": pred})

    for split in ("val", "test"):
        write(multitask.slug(split, "sent"), "sent", split, 0.6)
        write(multitask.slug(split, "spam"), "spam", split, 0.3)
        for seed in settings["seeds"]:
            for lam in settings["lambdas"]:
                for task in multitask.TASKS:
                    if lam == multitask.OWN_LAMBDA[task]:
                        quality = own[task]
                    elif lam == 1 - multitask.OWN_LAMBDA[task]:
                        quality = 0.5
                    else:
                        quality = merge_quality if merge_quality >= 0 else -1
                    write(multitask.slug(split, task, seed, lam), task, split, quality)
    training = {f"s{seed}-{task}": {"tokens": 128, "loss_first": 5.0, "loss_last": 0.5, "seconds": 1.0,
                                    "trainable_parameters": 10, "threads": 1}
                for seed in settings["seeds"] for task in multitask.TASKS}
    record = {"experiment": "multitask", "settings": settings, "gold": gold, "training": training, "threads": 1,
              "sizes": {t: {"train": 16, "val": 60, "test": 400} for t in multitask.TASKS},
              "timings": {"training": 60.0, "total": 120.0},
              "versions": {"python": "3", "machine": "test machine", "platform": "test"}}
    return multitask.collect(work, tmp_path / "data", record)


def test_a_good_merge_is_reproduced_and_a_collapsed_one_is_not(tmp_path: Path) -> None:
    good = multitask.analyse(_fake_data(tmp_path / "good", merge_quality=0.95))
    assert good["chosen"] == {0: 0.5, 1: 0.5, 2: 0.5} and good["checks_pass"]
    assert good["verdict"] == "reproduced", {t: v["verdict"] for t, v in good["tasks"].items()}
    collapsed = multitask.analyse(_fake_data(tmp_path / "collapsed", merge_quality=-1))  # always answers label 0
    assert collapsed["tasks"]["sent"]["verdict"] == "not reproduced"
    assert collapsed["verdict"] == "not reproduced"
    failed = multitask.analyse(_fake_data(tmp_path / "failed", merge_quality=0.95, spam_pem=-1))  # a constant spam PEM
    assert not failed["checks_pass"] and failed["verdict"] == "inconclusive"


def test_the_pooled_merge_accuracy_is_the_mean_over_seeds(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, merge_quality=0.8)
    facts = multitask.analyse(data)
    record, ev = multitask.load_data(data)
    gold = record["gold"]["spam"]["test"]
    by_hand = np.mean([multitask.accuracy(ev[multitask.slug("test", "spam", s, facts["chosen"][s])]["pred"], gold)
                       for s in (0, 1, 2)])
    assert facts["tasks"]["spam"]["accuracy"]["merge"]["estimate"] == pytest.approx(by_hand)
    assert facts["tasks"]["spam"]["majority"] == pytest.approx(multitask.majority_rate(gold))


def test_the_page_is_a_function_of_the_data_folder(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, merge_quality=0.95)
    page = multitask.render_page(data)
    assert page == multitask.render_page(data)
    assert "**Overall: reproduced.**" in page and "| SMS spam | 1 | " in page
    with gzip.open(data / multitask.EVALUATIONS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    first = records[0]["pred"]
    records[0]["pred"] = ("1" if first[0] == "0" else "0") + first[1:]
    common.write_gzip_text(data / multitask.EVALUATIONS, "".join(json.dumps(r) + "\n" for r in records))
    assert multitask.render_page(data) != page


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        multitask.main(["--render", "--docs", str(tmp_path)])
    assert str(raised.value).startswith("error: ") and "\n" not in str(raised.value)
    assert not (tmp_path / multitask.PAGE_NAME).exists()


@pytest.mark.slow
def test_the_quick_run_goes_end_to_end_and_its_page_regenerates(tmp_path: Path) -> None:
    from adaptermath.experiments import assets

    try:
        assets.smollm2_model_dir()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    docs = tmp_path / "docs"
    multitask.main(["--quick", "--threads", "1", "--workdir", str(tmp_path / "work"), "--docs", str(docs)])
    page = (docs / multitask.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and "| SMS spam |" in page and "## The whole λ curve" in page
    assert (docs / multitask.PLOT_NAME).stat().st_size > 1000
    record: dict[str, Any] = json.loads((docs / multitask.DATA_FOLDER / "run.json").read_text(encoding="utf-8"))
    assert set(record["training"]) == {"s0-sent", "s0-spam"}
    shutil.rmtree(tmp_path / "work")
    multitask.main(["--quick", "--render", "--docs", str(docs)])
    assert (docs / multitask.PAGE_NAME).read_text(encoding="utf-8") == page
