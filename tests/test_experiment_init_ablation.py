"""The same-init ablation: the arms' inits differ in LoRA A only, the verdict rule, the analysis,
and the results page regenerating byte for byte from the data committed beside it
(docs/results/data/init_ablation/)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adaptermath.comparison import compare
from adaptermath.errors import DataError
from adaptermath.experiments import common, init_ablation
from adaptermath.init_adapter import init_adapter
from experiments_tiny import save_tiny_bert

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert") / "base")


def test_halves_are_seeded_disjoint_and_cover_the_rows() -> None:
    rows = list(range(11))
    first, second = init_ablation.halves(rows, seed=3)
    assert len(first) == 6 and len(second) == 5 and sorted(first + second) == rows
    assert init_ablation.halves(rows, seed=3) == (first, second)
    assert init_ablation.halves(rows, seed=4) != (first, second)


def test_the_verdict_rule() -> None:
    below = {"estimate": -0.05, "low": -0.08, "high": -0.02}
    null = {"estimate": 0.0, "low": -0.01, "high": 0.01}
    wide = {"estimate": -0.01, "low": -0.05, "high": 0.03}
    assert init_ablation.verdict(null, below, True, True, 0.02) == "reproduced"
    assert init_ablation.verdict(null, below, False, True, 0.02) == "inconclusive"  # the diagnostic must separate
    assert init_ablation.verdict(null, below, True, False, 0.02) == "inconclusive"  # a validity check failed
    assert init_ablation.verdict(null, null, True, True, 0.02) == "not reproduced"  # different inits cost < 0.02
    costly = {"estimate": -0.06, "low": -0.09, "high": -0.03}
    assert init_ablation.verdict(costly, below, True, True, 0.02) == "not reproduced"  # a shared init costs too
    assert init_ablation.verdict(below, below, True, True, 0.02) == "inconclusive"  # its interval reaches -0.02
    assert init_ablation.verdict(wide, below, True, True, 0.02) == "inconclusive"
    assert init_ablation.verdict(null, wide, True, True, 0.02) == "inconclusive"


def test_correct_features_count_right_answers_per_question_over_seeds() -> None:
    labels = [0, 1, 2]
    features = init_ablation.correct_features([{"predictions": [0, 1, 1]}, {"predictions": [0, 2, 2]}], labels)
    assert features.tolist() == [[2.0, 2.0], [1.0, 2.0], [1.0, 2.0]]


def test_the_different_init_shares_the_head_and_b_and_differs_in_a(bert: Path, tmp_path: Path) -> None:
    options = {"kind": "lora", "target_modules": ["query", "value"], "task_type": "SEQ_CLS",
               "modules_to_save": ["classifier"], "num_labels": 3, "r": 4}
    same = init_adapter(bert, tmp_path / "seed0", seed=0, **options)
    body = init_adapter(bert, tmp_path / "seed100", seed=100, **options)
    other = init_ablation.graft_body(same, body, tmp_path / "head0-body100")
    a, b, c = (load_file(str(p / init_ablation.WEIGHTS)) for p in (same, other, body))
    assert sorted(a) == sorted(b)
    head = [k for k in a if not init_ablation.is_lora_tensor(k)]
    lora_a = [k for k in a if ".lora_A." in k]
    assert head and lora_a
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in head)  # head tensors equal
    assert all(np.array_equal(b[k].numpy(), c[k].numpy()) for k in lora_a)  # A drawn with the other seed
    assert not any(np.array_equal(a[k].numpy(), b[k].numpy()) for k in lora_a)
    check = init_ablation.check_inits(same, other)
    assert check["head_equal"] and check["b_zero"] and check["same_keys"] and not check["a_equal"]
    assert abs(check["a_cosine"]) < 0.5
    assert json.loads((other / "adaptermath-init.json").read_text())["grafted"]["lora_from"] == str(body)
    assert not (other / "experiment-init-options.json").exists()
    assert init_ablation.check_inits(same, same)["a_equal"]


def test_without_body_zeroes_b_only(bert: Path, tmp_path: Path) -> None:
    init = init_adapter(bert, tmp_path / "init", kind="lora", target_modules=["query", "value"], task_type="SEQ_CLS",
                        modules_to_save=["classifier"], num_labels=3, r=4, seed=1)
    trained = {k: torch.ones_like(v) for k, v in load_file(str(init / init_ablation.WEIGHTS)).items() if ".lora_B." in k}
    folder = init_ablation.rewrite_adapter(init, tmp_path / "trained", trained)
    with pytest.raises(DataError, match="no tensor 'nope'"):
        init_ablation.rewrite_adapter(init, tmp_path / "bad", {"nope": torch.zeros(1)})
    stripped = init_ablation.without_body(folder, tmp_path / "stripped")
    before, after = load_file(str(folder / init_ablation.WEIGHTS)), load_file(str(stripped / init_ablation.WEIGHTS))
    assert any(before[k].any() for k in before if ".lora_B." in k)
    for key, tensor in after.items():
        if ".lora_B." in key:
            assert not tensor.any()
        else:
            assert np.array_equal(tensor.numpy(), before[key].numpy())


# --------------------------------------------------------------------------- pages from data


def _fake_data(tmp_path: Path, different_loss: float, seeds: tuple[int, ...] = (0, 1)) -> Path:
    """A data folder as ``collect`` writes it: 200 test questions; every PEM right on 90%, the head
    alone on 40%; the merges all right on the same 88%, except that the different-init param-space
    merge also gets ``different_loss`` of the questions wrong."""
    settings = common.load_config("init_ablation")
    settings.pop("config_path")
    settings["seeds"] = list(seeds)
    settings["verdict"]["resamples"] = 300
    n = 200
    labels = [i % 6 for i in range(n)]
    work = tmp_path / "work"
    rng = np.random.default_rng(0)

    def evaluation(name: str, share: float, right: Any = None) -> None:
        right = rng.random(n) < share if right is None else right
        predictions = [label if ok else (label + 1) % 6 for label, ok in zip(labels, right)]
        common.write_json_atomic(work / "evaluations" / f"{name}.json",
                                 {"slug": name, "accuracy": float(right.mean()), "predictions": predictions})

    diagnostics, training, checks = {}, {}, {}
    for seed in seeds:
        for pem in ("h0", "h1-same", "h1-different"):
            evaluation(init_ablation.slug(seed, pem), 0.9)
            training[init_ablation.slug(seed, pem)] = {"rows": 100, "loss_first": 1.8, "loss_last": 0.5, "seconds": 9.0,
                                                       "trainable_parameters": 10, "threads": 1}
        evaluation(init_ablation.slug(seed, "h0-head-only"), 0.4)
        merged = rng.random(n) < 0.88
        for arm in init_ablation.ARMS:
            for space in init_ablation.SPACES:
                lost = rng.random(n) < (different_loss if (arm, space) == ("different", "param") else 0.0)
                evaluation(init_ablation.slug(seed, f"{arm}-{space}"), 0.0, merged & ~lost)
            deviation, a_cos = (0.3, 0.6) if arm == "same" else (0.7, 0.0)
            diagnostics[init_ablation.slug(seed, arm)] = [
                {"module": f"m{i}", "param_vs_delta": deviation + 0.01 * i, "a_cosine": a_cos + 0.01 * i, "update_cosine": 0.3}
                for i in range(12)]
        checks[str(seed)] = {"same_keys": True, "head_equal": True, "b_zero": True, "a_equal": False, "a_cosine": 0.001,
                             "head_tensors": 2}
    record = {"experiment": "init_ablation", "settings": settings, "sizes": {"train": 200, "half": 100, "test": n},
              "labels": ["a", "b", "c", "d", "e", "f"], "test_labels": labels, "init_checks": checks,
              "diagnostics": diagnostics, "training": training, "threads": 1, "timings": {"training": 60.0, "total": 99.0},
              "versions": {"python": "3", "machine": "test machine", "platform": "test"}}
    return init_ablation.collect(work, tmp_path / "data", record)


def test_a_clear_loss_is_reproduced_and_none_is_not(tmp_path: Path) -> None:
    clear = init_ablation.analyse(_fake_data(tmp_path / "clear", different_loss=0.3))
    assert clear["valid"] and clear["separates"] and clear["verdict"] == "reproduced"
    assert clear["arms"]["different"]["d"]["high"] < 0
    assert clear["arms"]["same"]["param_vs_delta"]["estimate"] == pytest.approx(0.355)
    assert clear["majority"] == pytest.approx(34 / 200)
    null = init_ablation.analyse(_fake_data(tmp_path / "null", different_loss=0.0))
    assert null["verdict"] == "not reproduced"


def test_accuracy_intervals_pool_the_seeds_per_question(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, different_loss=0.1)
    facts = init_ablation.analyse(data)
    record, ev = init_ablation.load_data(data)
    right = sum(np.asarray(ev[init_ablation.slug(s, "h0")]["predictions"]) == np.asarray(record["test_labels"])
                for s in (0, 1))
    assert facts["accuracy"]["h0"]["estimate"] == pytest.approx(right.sum() / 400)
    d = facts["arms"]["different"]["d"]["estimate"]
    expected = np.mean([ev[init_ablation.slug(s, "different-param")]["accuracy"]
                        - ev[init_ablation.slug(s, "different-delta")]["accuracy"] for s in (0, 1)])
    assert d == pytest.approx(expected)


def test_a_constant_pem_makes_the_verdict_inconclusive(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, different_loss=0.3)
    with gzip.open(data / init_ablation.EVALUATIONS, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    for r in records:
        if r["slug"] == "s1-h1-same":
            r["predictions"], r["accuracy"] = [0] * len(r["predictions"]), 0.17
    common.write_gzip_text(data / init_ablation.EVALUATIONS, "".join(json.dumps(r) + "\n" for r in records))
    facts = init_ablation.analyse(data)
    assert not facts["valid"] and facts["verdict"] == "inconclusive"
    assert facts["pem_margin"] == pytest.approx(0.0)  # class 0 is the majority class here
    assert "smallest margin +0.000 — **no**" in init_ablation.render_page(data)


def test_the_page_is_a_function_of_the_data_folder(tmp_path: Path) -> None:
    data = _fake_data(tmp_path, different_loss=0.3)
    page = init_ablation.render_page(data)
    assert page == init_ablation.render_page(data)
    assert "**reproduced.**" in page and "| same init | " in page
    record = json.loads((data / "run.json").read_text())
    record["diagnostics"]["s0-same"][0]["param_vs_delta"] = 0.9
    (data / "run.json").write_text(json.dumps(record))
    assert init_ablation.render_page(data) != page


def test_render_without_data_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"^error: .* holds no run.json"):
        init_ablation.main(["--render", "--docs", str(tmp_path)])


def test_the_committed_page_regenerates_byte_for_byte(tmp_path: Path) -> None:
    data = RESULTS / init_ablation.DATA_FOLDER
    assert (data / "run.json").is_file(), "docs/results/data/init_ablation/ is missing"
    assert init_ablation.render_page(data) == (RESULTS / init_ablation.PAGE_NAME).read_text(encoding="utf-8")
    assert not json.loads((data / "run.json").read_text())["settings"]["quick"]


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    workdir, docs = tmp_path / "work", tmp_path / "docs"
    init_ablation.main(["--quick", "--workdir", str(workdir), "--docs", str(docs), "--threads", "1"])
    page = (docs / init_ablation.PAGE_NAME).read_text(encoding="utf-8")
    assert "REDUCED --quick run" in page and (docs / init_ablation.PLOT_NAME).is_file()
    record: dict[str, Any] = json.loads((docs / init_ablation.DATA_FOLDER / "run.json").read_text())
    check = record["init_checks"]["0"]
    assert check["head_equal"] and check["b_zero"] and not check["a_equal"]
    # The recorded diagnostic is adaptermath.compare's on the saved PEMs.
    direct = compare(workdir / "pems" / "s0-h0", workdir / "pems" / "s0-h1-different")
    assert max(m["param_vs_delta"] for m in record["diagnostics"]["s0-different"]) == pytest.approx(direct["max_param_vs_delta"])
    same = init_ablation.analyse(docs / init_ablation.DATA_FOLDER)["arms"]["same"]["a_cosine"]["estimate"]
    assert same > 0.9  # a few small steps from one init leave A near A0
    shutil.copytree(docs, tmp_path / "copy")
    init_ablation.main(["--render", "--docs", str(tmp_path / "copy")])
    assert (tmp_path / "copy" / init_ablation.PAGE_NAME).read_text(encoding="utf-8") == page
