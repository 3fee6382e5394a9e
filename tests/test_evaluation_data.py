"""Reading evaluation data: formats, field mapping, and one-line errors for bad data."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from adaptermath.errors import DataError
from adaptermath.evaluation.data import (
    gold_labels,
    load_corpus,
    load_records,
    parse_labels,
    render_prompts,
    texts_of,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_formats_give_the_same_records(tmp_path: Path) -> None:
    rows = [{"review": "good film", "y": 1}, {"review": "bad, awful", "y": 0}]
    jsonl = write(tmp_path / "d.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n\n")
    as_json = write(tmp_path / "d.json", json.dumps(rows))
    wrapped = write(tmp_path / "w.json", json.dumps({"data": rows}))
    csv_file = write(tmp_path / "d.csv", 'review,y\ngood film,1\n"bad, awful",0\n')
    tsv_file = write(tmp_path / "d.tsv", "review\ty\ngood film\t1\nbad, awful\t0\n")
    expected = [{"review": "good film", "y": "1"}, {"review": "bad, awful", "y": "0"}]
    for path in (jsonl, as_json, wrapped, csv_file, tsv_file):
        assert load_records(path) == expected, path
    assert load_records(jsonl, limit=1) == expected[:1]


def test_txt_is_one_record_per_line_and_verbatim_as_a_corpus(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "first prompt\n\nsecond prompt\n")
    assert load_records(path) == [{"text": "first prompt"}, {"text": "second prompt"}]
    assert load_corpus(path) == "first prompt\n\nsecond prompt\n"


def test_corpus_from_records_joins_with_a_blank_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"body": "one"}\n{"body": "two"}\n')
    assert load_corpus(path, text_field="body") == "one\n\ntwo"
    assert load_corpus(path, text_field="body", joiner=" ") == "one two"


def test_field_mapping_labels_and_templates() -> None:
    records = [{"premise": "a", "hypothesis": "b", "gold": "1"}, {"premise": "c", "hypothesis": "d", "gold": "yes"}]
    assert texts_of(records, "premise") == ["a", "c"]
    # "1" is not a label name, so it is an index; "yes" is a name.
    assert gold_labels(records, "gold", ["no", "yes"]) == ["yes", "yes"]
    assert render_prompts(records, "{premise} -> {hypothesis}?") == ["a -> b?", "c -> d?"]
    assert parse_labels(" negative, positive ") == ["negative", "positive"]


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("content", "suffix", "pattern"),
    [
        ("", ".jsonl", "holds no records"),
        ("", ".txt", "holds no records"),
        ("\n\n", ".csv", "holds no records"),
        ('{"text": "a"}\n{oops\n', ".jsonl", "line 2 is not valid JSON"),
        ('["a", "b"]', ".json", "item 0 is not an object"),
        ("a,b\n1,2,3\n", ".csv", "line 2 has more cells"),
        ("x", ".parquet", "unknown data format"),
    ],
)
def test_bad_files_are_one_line_data_errors(tmp_path: Path, content: str, suffix: str, pattern: str) -> None:
    path = write(tmp_path / f"bad{suffix}", content)
    with pytest.raises(DataError) as excinfo:
        load_records(path)
    assert pattern in one_line_error(excinfo)


def test_missing_column_unknown_label_and_missing_file() -> None:
    records = [{"text": "a", "label": "pos"}, {"txt": "b", "label": "meh"}]
    with pytest.raises(DataError) as excinfo:
        texts_of(records, "text")
    assert one_line_error(excinfo) == "record 1 has no text field 'text' (its fields: label, txt)"
    with pytest.raises(DataError) as excinfo:
        gold_labels(records, "label", ["neg", "pos"])
    assert one_line_error(excinfo) == "record 1 has unknown label 'meh'; known labels: neg, pos"
    with pytest.raises(DataError) as excinfo:
        gold_labels([{"label": "2"}], "label", ["neg", "pos"])
    assert "unknown label '2'" in one_line_error(excinfo)
    with pytest.raises(DataError) as excinfo:
        render_prompts(records, "Review: {review}")
    assert "template field 'review' is missing from record 0" in one_line_error(excinfo)
    with pytest.raises(DataError) as excinfo:
        load_records("no/such/file.jsonl")
    assert "does not exist" in one_line_error(excinfo)
    for bad in ("positive", "a,a", "a,,b"):
        with pytest.raises(DataError):
            parse_labels(bad)


def test_dataset_names_need_the_optional_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(DataError) as excinfo:
        load_records("glue")
    assert "pip install 'adaptermath[datasets]'" in one_line_error(excinfo)


def test_dataset_names_go_through_load_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if split == "nope":
            raise ValueError('Unknown split "nope".\nShould be one of train, test')
        return [{"sentence": "fine", "label": 1}]

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: object())
    assert load_records("glue", dataset_config="sst2", split="validation") == [{"sentence": "fine", "label": "1"}]
    assert calls == [("glue", "sst2", "validation")]
    with pytest.raises(DataError) as excinfo:
        load_records("glue", split="nope")
    assert one_line_error(excinfo).endswith('Unknown split "nope".')
