"""Domain transfer by analogy, with a null analogy: does ``cls + λ·(tgt − src)`` beat the source
classifier on the target domain, and does it beat ``cls + λ·(src′ − src)``?

SmolLM2-135M-Instruct, rank classification of `` negative`` / `` positive`` after the recipe's
template; VADER ground-truth snippets of two domains (amazon → movies), binarised at ±0.5. For each
training seed, four LoRA PEMs start from one seeded initial adapter:

* ``cls``: a sentiment classifier on the source domain's labelled training rows;
* ``src``: language modelling on one half of the source training texts (labels dropped);
* ``src2`` (src′): language modelling on the *other* half of the source training texts;
* ``tgt``: language modelling on as many target training texts as each half holds.

The three LM PEMs train for the same steps on packed blocks, so they see the same number of tokens.
Composed in delta space (exact ΔW arithmetic)::

    analogy   cls + λ·(ΔW_tgt − ΔW_src)
    null      cls + λ·(ΔW_src′ − ΔW_src)     (same size of update, no domain shift)
    vanilla   cls                            (λ = 0 of both)

plus the base model zero-shot.

**Selection (validation).** Per seed, the λ of the grid with the highest target-validation accuracy
of the analogy (first in grid order on ties; the grid starts at 0, so a tie keeps vanilla transfer).
The null analogy is scored at the same λ: the same size of update, without the domain direction.

**Verdict (test).** With each test row's correct count summed over seeds (seeds pooled), the paired
percentile bootstrap over test rows gives Δ_v = acc(analogy) − acc(vanilla) and
Δ_n = acc(analogy) − acc(null), at the validation-chosen λ of each seed:

* *reproduced*: both intervals lie above 0;
* *not reproduced*: some interval lies below ``min_effect`` (the data exclude a gain of that size
  over vanilla transfer, or over the null analogy);
* *inconclusive* otherwise.

Everything the page states is computed by :func:`render_page` from ``docs/results/data/domain_transfer/``
(``run.json``; ``evaluations.jsonl.gz``: every evaluation with each row's correctness and score
margin): ``--render`` regenerates the page byte for byte. Run:
``python -m adaptermath.experiments.domain_transfer [--quick] [--workdir DIR] [--threads N]``;
settings in ``recipes/experiments/domain_transfer.yaml``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptermath.experiments import common

NAME = "domain_transfer"
PAGE_NAME = "domain_transfer.md"
PLOT_NAME = "domain_transfer-validation.png"
DATA_FOLDER = "data/domain_transfer"
EVALUATIONS = "evaluations.jsonl.gz"
LABELS = ("negative", "positive")
LM_PEMS = ("src", "src2", "tgt")
ARMS = ("analogy", "null")
EXPRESSIONS = {"analogy": "cls + λ*(tgt - src)", "null": "cls + λ*(src2 - src)"}
ARM_LABEL = {"vanilla": "vanilla transfer (cls alone)", "analogy": "analogy cls + λ·(tgt − src)",
             "null": "null analogy cls + λ·(src′ − src)"}


# --------------------------------------------------------------------------- design (pure)


def domain_splits(domain: str, settings: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Train / val / test rows of one VADER domain (seeded split by ``settings["seed"]`` and
    ``settings["data"]["fractions"]``, then each part capped at ``settings["data"][part]``)."""
    from adaptermath.experiments.datasets import train_val_test_split, vader_sentiment

    data = settings["data"]
    train, val, test = train_val_test_split(vader_sentiment(domain), int(settings["seed"]), tuple(data["fractions"]))
    return {"train": train[: data["train"]], "val": val[: data["val"]], "test": test[: data["test"]]}


def lm_texts(source_train: Sequence[Mapping[str, Any]], target_train: Sequence[Mapping[str, Any]],
             size: int) -> dict[str, list[str]]:
    """The LM PEMs' texts: ``src`` the first ``size`` source rows, ``src2`` the next ``size`` (disjoint),
    ``tgt`` the first ``size`` target rows; labels dropped."""
    if len(source_train) < 2 * size or len(target_train) < size:
        raise common.DataError(f"the LM PEMs need {2 * size} source and {size} target training rows, "
                               f"got {len(source_train)} and {len(target_train)}")
    return {"src": [r["text"] for r in source_train[:size]], "src2": [r["text"] for r in source_train[size : 2 * size]],
            "tgt": [r["text"] for r in target_train[:size]]}


def slug(split: str, seed: int | None = None, arm: str | None = None, lam: float | None = None) -> str:
    """The name of one evaluation: ``test-base``, ``val-s0-vanilla``, ``val-s1-null-0.5``; λ = 0 is vanilla."""
    if seed is None:
        return f"{split}-base"
    if arm is None or arm == "vanilla" or lam == 0:
        return f"{split}-s{seed}-vanilla"
    return f"{split}-s{seed}-{arm}-{lam:g}"


def select_lambda(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(λ, validation accuracy) with the highest accuracy, the first in grid order on ties."""
    return common.choose_best(points)


def verdict(vs_vanilla: Mapping[str, float], vs_null: Mapping[str, float], min_effect: float) -> str:
    """``reproduced`` / ``not reproduced`` / ``inconclusive`` from the intervals of Δ_v and Δ_n."""
    if vs_vanilla["low"] > 0 and vs_null["low"] > 0:
        return "reproduced"
    if vs_vanilla["high"] < min_effect or vs_null["high"] < min_effect:
        return "not reproduced"
    return "inconclusive"


def update_norms(folders: Mapping[str, Path]) -> dict[str, float]:
    """‖ΔW‖_F of each PEM and of the differences the analogies add: ``tgt-src``, ``src2-src``, summed over modules."""
    from adaptermath.adapter import load_adapter

    adapters = {name: load_adapter(folder) for name, folder in folders.items()}
    deltas = {name: {m: adapter.module(m).delta() for m in adapter.modules} for name, adapter in adapters.items()}

    def norm(a: str, b: str | None = None) -> float:
        total = sum(float(((d - deltas[b][m]) if b else d).pow(2).sum()) for m, d in deltas[a].items())
        return round(total**0.5, 6)

    return {**{name: norm(name) for name in folders}, "tgt-src": norm("tgt", "src"), "src2-src": norm("src2", "src")}


# --------------------------------------------------------------------------- running


def train_pems(base: Path, workdir: Path, settings: Mapping[str, Any], seed: int,
               data: Mapping[str, Any], threads: int) -> dict[str, dict[str, Any]]:
    """``cls``, ``src``, ``src2``, ``tgt`` of one seed from one seeded init; their folders and training records."""
    adapter, training = settings["adapter"], settings["training"]
    init = common.ensure_init(base, workdir / "init" / f"s{seed}", kind="lora", task_type="CAUSAL_LM", seed=seed,
                              target_modules=adapter["targets"], r=int(adapter["r"]), lora_alpha=adapter["alpha"])
    jobs = {"cls": ("classification", data["cls"]), **{name: ("lm", data[name]) for name in LM_PEMS}}
    pems = {}
    for name, (objective, rows) in jobs.items():
        options = training[objective]
        result = common.train_logged(
            f"seed {seed} {name}", base_model_dir=base, init_adapter_dir=init, data=rows,
            output_dir=workdir / "pems" / f"s{seed}-{name}", objective=objective, steps=int(options["steps"]),
            lr=float(options["lr"]), batch_size=int(options["batch_size"]), max_length=int(options["max_length"]),
            warmup_steps=int(options.get("warmup_steps", 0)), seed=seed, template=settings["template"],
            label_words=LABELS, num_threads=threads, force=True,
        )  # fmt: skip
        keep = ("tokens", "loss_first", "loss_last", "seconds", "trainable_parameters", "threads")
        pems[name] = {"path": result.output, "record": {k: result.record[k] for k in keep}}
    return pems


class Scoring:
    """One live SmolLM2 that adapters are swapped onto, and the target's validation and test rows."""

    def __init__(self, base: Path, settings: Mapping[str, Any], rows: Mapping[str, Sequence[Mapping[str, Any]]]):
        from adaptermath.evaluation import load_base_model

        loaded = load_base_model(base, task="causal-lm")
        self.model, self.tokenizer, self.settings, self.rows = loaded.model, loaded.tokenizer, settings, rows

    def evaluate(self, adapter: Any, split: str) -> dict[str, Any]:
        """Each row's correctness and score margin (log p(positive) − log p(negative)) on ``split``."""
        from adaptermath.evaluation import attach_adapter, detach_adapter, evaluate_classification

        self.model = detach_adapter(self.model) if adapter is None else attach_adapter(self.model, adapter)
        options = self.settings["eval"]
        result = evaluate_classification(self.model, self.tokenizer, list(self.rows[split]), labels=list(LABELS),
                                         template=self.settings["template"], batch_size=int(options["batch_size"]),
                                         max_length=int(options["max_length"]))
        return {"correct": [int(p == g) for p, g in zip(result.predictions, result.gold)],
                "margin": [round(s[1] - s[0], 4) for s in result.scores], "accuracy": result.accuracy}


def _composed(arm: str, lam: float, pems: Mapping[str, Mapping[str, Any]]) -> Any:
    from adaptermath.compose import compose

    if lam == 0:
        return pems["cls"]["path"]
    names = ("cls", "tgt", "src") if arm == "analogy" else ("cls", "src2", "src")
    return compose(EXPRESSIONS[arm], {n: pems[n]["path"] for n in names}, variables={"λ": lam}, space="delta")


def run(settings: Mapping[str, Any], workdir: Path, *, threads: int = 2) -> dict[str, Any]:
    """Train, evaluate the grid on validation, choose λ, evaluate on test (every step resumable); return run.json."""
    import torch

    from adaptermath.experiments.assets import smollm2_model_dir

    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    base = smollm2_model_dir()
    source, target = settings["source"], settings["target"]
    splits = {domain: domain_splits(domain, settings) for domain in (source, target)}
    texts = lm_texts(splits[source]["train"], splits[target]["train"], int(settings["data"]["lm_texts"]))
    data = {"cls": splits[source]["train"], **texts}
    seeds, lambdas = [int(s) for s in settings["seeds"]], [float(v) for v in settings["lambdas"]]
    pems: dict[int, dict[str, dict[str, Any]]] = {}
    with common.timed(timings, "training"):
        for seed in seeds:
            pems[seed] = train_pems(base, workdir, settings, seed, data, threads)
    norms = {f"s{seed}": update_norms({n: p["path"] for n, p in pems[seed].items()}) for seed in seeds}
    scoring = Scoring(base, settings, splits[target])
    store = common.EvaluationStore(workdir / "evaluations", lambda r: f"accuracy {r['accuracy']:.3f}")
    chosen: dict[int, float] = {}
    with common.timed(timings, "validation"):
        store.get(slug("val"), lambda: scoring.evaluate(None, "val"))
        for seed in seeds:
            points = []
            for lam in lambdas:
                record = store.get(slug("val", seed, "analogy", lam),
                                   lambda: scoring.evaluate(_composed("analogy", lam, pems[seed]), "val"))
                points.append((lam, record["accuracy"]))
            chosen[seed] = select_lambda(points)[0]
    with common.timed(timings, "test"):
        store.get(slug("test"), lambda: scoring.evaluate(None, "test"))
        for seed in seeds:
            store.get(slug("test", seed), lambda: scoring.evaluate(pems[seed]["cls"]["path"], "test"))
            for arm in ARMS:
                store.get(slug("test", seed, arm, chosen[seed]),
                          lambda: scoring.evaluate(_composed(arm, chosen[seed], pems[seed]), "test"))
    return {
        "experiment": NAME,
        "settings": {k: v for k, v in settings.items() if k != "config_path"},
        "sizes": {domain: {part: len(rows) for part, rows in parts.items()} for domain, parts in splits.items()},
        "positive_share": {split: sum(r["label"] for r in splits[target][split]) / len(splits[target][split])
                           for split in ("val", "test")},
        "training": {f"s{seed}-{name}": pems[seed][name]["record"] for seed in seeds for name in pems[seed]},
        "update_norms": norms,
        "threads": threads,
        "timings": timings,
        "versions": common.versions(),
    }


def collect(workdir: Path, data: Path, record: Mapping[str, Any]) -> Path:
    """Write what the page reads into ``data`` (replaced): run.json and every evaluation."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((workdir / "evaluations").glob("*.json"))]
    return common.write_data_folder(data, record, {EVALUATIONS: "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)})


# --------------------------------------------------------------------------- analysis and page (pure)


def load_data(data: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """run.json and the evaluations by slug, from the data folder."""
    record = json.loads((data / "run.json").read_text(encoding="utf-8"))
    evaluations = {r["slug"]: r for r in common.read_records(data / EVALUATIONS)}
    return record, evaluations


def row_features(records: Sequence[Mapping[str, Any]]) -> Any:
    """The bootstrap units: per test row, [Σ correct over the records (seeds), number of records]."""
    import numpy as np

    correct = np.asarray([r["correct"] for r in records], dtype=float)
    return np.stack([correct.sum(axis=0), np.full(correct.shape[1], float(len(records)))], axis=1)


def analyse(data: Path) -> dict[str, Any]:
    """Every number on the page, from the data folder alone."""
    from adaptermath.evaluation.statistics import bootstrap_interval, mcnemar_test, paired_bootstrap_interval, ratio

    record, ev = load_data(data)
    settings = record["settings"]
    seeds, lambdas = [int(s) for s in settings["seeds"]], [float(v) for v in settings["lambdas"]]
    rule = settings["verdict"]
    conf, resamples, min_effect = float(rule["confidence"]), int(rule["resamples"]), float(rule["min_effect"])

    def interval(features: Any) -> dict[str, float]:
        iv = bootstrap_interval(features, ratio, confidence=conf, resamples=resamples, seed=0)
        return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}

    def paired(a: Any, b: Any) -> dict[str, float]:
        iv = paired_bootstrap_interval(a, b, ratio, confidence=conf, resamples=resamples, seed=0)
        return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}

    grid = {lam: [ev[slug("val", seed, "analogy", lam)]["accuracy"] for seed in seeds] for lam in lambdas}
    choice = {seed: select_lambda([(lam, grid[lam][i]) for lam in lambdas]) for i, seed in enumerate(seeds)}
    tests = {"vanilla": [ev[slug("test", seed)] for seed in seeds],
             **{arm: [ev[slug("test", seed, arm, choice[seed][0])] for seed in seeds] for arm in ARMS}}
    base = ev[slug("test")]
    features = {arm: row_features(recs) for arm, recs in tests.items()}
    vs_vanilla = paired(features["analogy"], features["vanilla"])
    vs_null = paired(features["analogy"], features["null"])
    per_seed = []
    for i, seed in enumerate(seeds):
        analogy, vanilla, null = (row_features([tests[arm][i]]) for arm in ("analogy", "vanilla", "null"))
        per_seed.append({"seed": seed, "lam": choice[seed][0],
                         "accuracy": {arm: tests[arm][i]["accuracy"] for arm in tests},
                         "vs_vanilla": paired(analogy, vanilla), "vs_null": paired(analogy, null),
                         "mcnemar_vanilla": mcnemar_test(tests["analogy"][i]["correct"], tests["vanilla"][i]["correct"])})
    return {
        "record": record,
        "grid": grid,
        "choice": choice,
        "base_val": ev[slug("val")]["accuracy"],
        "test": {arm: interval(f) for arm, f in features.items()},
        "base": interval(row_features([base])),
        "vanilla_vs_base": paired(features["vanilla"], row_features([base] * len(seeds))),
        "vs_vanilla": vs_vanilla,
        "vs_null": vs_null,
        "per_seed": per_seed,
        "verdict": verdict(vs_vanilla, vs_null, min_effect),
        "test_rows": len(base["correct"]),
    }


def _ci(iv: Mapping[str, float]) -> str:
    return f"{iv['estimate']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"


def _signed(iv: Mapping[str, float]) -> str:
    return f"{iv['estimate']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def _lams(choice: Mapping[int, tuple[float, float]]) -> str:
    return ", ".join(f"{lam:g}" for lam, _ in choice.values())


def render_page(data: Path, plot_name: str | None = PLOT_NAME) -> str:
    """The results page (markdown), a pure function of the files in ``data``."""
    facts = analyse(data)
    record = facts["record"]
    settings = record["settings"]
    seeds, rule = settings["seeds"], settings["verdict"]
    source, target = settings["source"], settings["target"]
    conf = f"{100 * float(rule['confidence']):g}%"
    quick = " (REDUCED --quick run: the numbers mean nothing)" if settings.get("quick") else ""
    sizes = record["sizes"]
    lines = [
        f"# Domain transfer by analogy, with a null analogy (SmolLM2-135M-Instruct, {source} → {target}){quick}",
        "",
        "The paper's claim (Zhang et al. 2023, §4.4, T5 on Amazon ↔ Yelp): a classifier PEM trained on the source "
        "domain transfers better to the target domain when the difference of two language-modelling PEMs, "
        "target minus source, is added to it; the gains there are 0.1–0.7 accuracy points over vanilla transfer. "
        "Here the question is also whether a gain comes *from the domain direction*: the null analogy adds the "
        "difference of two LM PEMs trained on disjoint halves of the *source* texts, an update of the same kind "
        "with no domain shift in it.",
        "",
        "## Verdict",
        "",
        common.markdown_table(
            ["comparison (target test, seeds pooled)", f"Δ accuracy [{conf}]", "λ (per seed, chosen on validation)"],
            [["analogy − vanilla transfer", _signed(facts["vs_vanilla"]), _lams(facts["choice"])],
             ["analogy − null analogy (same λ)", _signed(facts["vs_null"]), _lams(facts["choice"])]]),
        "",
        f"**{facts['verdict']}.** Rule (fixed in the recipe before the run): reproduced when both {conf} intervals lie "
        f"above 0; not reproduced when either lies below +{float(rule['min_effect']):g} (the data exclude a gain of "
        f"{100 * float(rule['min_effect']):g} accuracy point(s) over vanilla transfer, or over the null analogy); "
        "inconclusive otherwise. Δ is the accuracy difference on the same test rows, each row's correct count summed "
        f"over the {len(seeds)} training seeds, with a paired percentile bootstrap over the {facts['test_rows']} test "
        "rows. λ is chosen per seed on the analogy's validation accuracy; the null analogy uses the same λ. "
        f"A gain of {100 * float(rule['min_effect']):g} point(s) is larger than the paper's reported gains: this design "
        "can detect or exclude a gain of that size, not one of the paper's.",
        "",
        "## Test accuracy on the target domain",
        "",
    ]
    rows = [["base model, zero-shot", "–", _ci(facts["base"])]]
    rows += [[ARM_LABEL[arm], "0" if arm == "vanilla" else _lams(facts["choice"]), _ci(facts["test"][arm])]
             for arm in ("vanilla", "analogy", "null")]
    lines += [
        common.markdown_table(["model", "λ (per seed)", f"accuracy, seeds pooled [{conf}]"], rows),
        "",
        f"Vanilla transfer − base model: {_signed(facts['vanilla_vs_base'])} (paired). Positive share of the target "
        f"test rows: {record['positive_share']['test']:.3f} (the majority rate is "
        f"{max(record['positive_share']['test'], 1 - record['positive_share']['test']):.3f}).",
        "",
        "Per training seed (Δ with the paired bootstrap over test rows; McNemar's exact test of analogy against "
        "vanilla, b = rows only the analogy gets right, c = rows only vanilla gets right):",
        "",
    ]
    seed_rows = [[str(s["seed"]), f"{s['lam']:g}",
                  f"{s['accuracy']['vanilla']:.3f}", f"{s['accuracy']['analogy']:.3f}", f"{s['accuracy']['null']:.3f}",
                  _signed(s["vs_vanilla"]), _signed(s["vs_null"]),
                  f"{s['mcnemar_vanilla'][0]} / {s['mcnemar_vanilla'][1]}, p = {s['mcnemar_vanilla'][2]:.3f}"]
                 for s in facts["per_seed"]]
    lines += [
        common.markdown_table(["seed", "λ", "vanilla", "analogy", "null", "analogy − vanilla",
                               "analogy − null", "McNemar b / c"], seed_rows),
        "",
        "## Validation grid",
        "",
        f"Target validation accuracy ({sizes[target]['val']} rows) of the analogy per λ, one value per seed; λ = 0 is "
        f"vanilla transfer. The base model scores {facts['base_val']:.3f}. (The null analogy is scored on test only, "
        "at the chosen λ: the time budget has no room for its validation grid.)",
        "",
    ]
    grid_rows = [[f"{lam:g}", ", ".join(f"{v:.3f}" for v in facts["grid"][lam]),
                  f"{sum(facts['grid'][lam]) / len(seeds):.3f}", str(sum(1 for lam_, _ in facts["choice"].values() if lam_ == lam))]
                 for lam in [float(v) for v in settings["lambdas"]]]
    lines += [common.markdown_table(["λ", "per seed", "mean", f"chosen (of {len(seeds)} seeds)"], grid_rows), ""]
    if plot_name:
        lines += [f"![validation accuracy against λ]({plot_name})", ""]
    norm_rows = [[seed.lstrip("s"), *(f"{n[k]:.3f}" for k in ("cls", "src", "src2", "tgt", "tgt-src", "src2-src")),
                  f"{n['tgt-src'] / n['src2-src']:.2f}"] for seed, n in record["update_norms"].items()]
    lines += [
        "## Is there a domain direction to add?",
        "",
        "‖ΔW‖_F (square root of the sum over the LoRA modules of ‖ΔW‖²_F): of each PEM, of the update the analogy "
        "adds at λ = 1 (tgt − src) and of the one the null adds (src′ − src); ratio = ‖tgt − src‖ / ‖src′ − src‖. "
        "A ratio near 1 means the target-minus-source difference is no larger than the difference between two "
        "samples of source text.",
        "",
        common.markdown_table(["seed", "cls", "src", "src′", "tgt", "tgt − src", "src′ − src", "ratio"], norm_rows),
        "",
    ]
    training_rows = []
    for name in ("cls", *LM_PEMS):
        recs = [record["training"][f"s{seed}-{name}"] for seed in seeds]
        training_rows.append([name, f"{recs[0]['tokens']:,}", "; ".join(f"{r['loss_first']:.2f} → {r['loss_last']:.2f}" for r in recs)])
    timings = record["timings"]
    adapter = settings["adapter"]
    lines += [
        "## Set-up",
        "",
        f"- Base: SmolLM2-135M-Instruct (float32), rank classification of ` negative` / ` positive` after "
        f"`{settings['template']!r}` (prompts cut to {settings['eval']['max_length']} tokens).",
        f"- Data: VADER ground-truth snippets, {source} (source) and {target} (target), binarised at ±0.5; one seeded "
        f"split (seed {settings['seed']}, fractions {settings['data']['fractions']}), sizes {json.dumps(sizes, sort_keys=True)}. "
        f"LM PEM texts: {settings['data']['lm_texts']} each (src and src′ disjoint halves of the source training rows).",
        f"- PEMs: LoRA r = {adapter['r']}, α = {adapter['alpha']} on {', '.join(adapter['targets'])}; all four of a seed "
        f"from one seeded initial adapter. Training: {json.dumps(settings['training'], sort_keys=True)} (packed LM blocks: "
        "every LM PEM sees the same number of tokens). Only LoRA and one direction fit the time budget "
        f"({settings['budget_minutes']} minutes on 2 CPU cores); the paper also ran (IA)³ and both directions.",
        "",
        common.markdown_table(["PEM", "tokens seen", "loss first → last 10 steps (per seed)"], training_rows),
        "",
        f"- Composition in delta space (exact ΔW arithmetic); λ grid {settings['lambdas']}; seeds {seeds}; bootstrap "
        f"{rule['resamples']} resamples.",
        f"- Runtime: {timings.get('total', 0) / 60:.1f} min in all ("
        + ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in timings.items() if stage != "total")
        + f"), torch threads {record['threads']}.",
        *common.environment_lines(record["versions"]),
        "",
        "## Command",
        "",
        "```bash",
        "python -m adaptermath.experiments.setup            # once: models and data",
        f"python -m adaptermath.experiments.{NAME}{' --quick' if settings.get('quick') else ''} --threads {record['threads']}",
        f"python -m adaptermath.experiments.{NAME} --render   # this page, from docs/results/{DATA_FOLDER}/ alone",
        "```",
        "",
        f"Settings: `recipes/experiments/{NAME}.yaml`. Data: `docs/results/{DATA_FOLDER}/` — `run.json` (settings, "
        f"sizes, training records, update norms, runtimes), `{EVALUATIONS}` (every evaluation: each row's correctness "
        "and score margin log p(positive) − log p(negative)).",
        "",
    ]
    return "\n".join(lines)


def headline(data: Path) -> dict[str, str]:
    """The row of docs/results/README.md: the paper's claim, our effect with its interval, the verdict."""
    facts = analyse(data)
    return {"experiment": "Domain transfer by analogy (SmolLM2, amazon → movies, LoRA, delta space, 3 seeds)",
            "paper": "the analogy cls + λ·(tgt − src) beats vanilla transfer by 0.1–0.7 points (T5, Amazon ↔ Yelp)",
            "ours": f"analogy − vanilla {_signed(facts['vs_vanilla'])}; analogy − null analogy {_signed(facts['vs_null'])} "
                    f"(test accuracy, seeds pooled; base zero-shot {_ci(facts['base'])})",
            "verdict": facts["verdict"]}


def plot(data: Path, path: Path) -> Path | None:
    """Validation accuracy of the analogy against λ (one thin line per seed, the mean thick), and the base model."""
    plt = common.pyplot()
    if plt is None:
        return None
    facts = analyse(data)
    lambdas = [float(v) for v in facts["record"]["settings"]["lambdas"]]
    figure, axis = plt.subplots(figsize=(6, 4))
    values = [facts["grid"][lam] for lam in lambdas]
    for i in range(len(values[0])):
        axis.plot(lambdas, [v[i] for v in values], color="tab:blue", alpha=0.3, linewidth=1)
    axis.plot(lambdas, [sum(v) / len(v) for v in values], color="tab:blue", marker="o", linewidth=2, label=ARM_LABEL["analogy"])
    axis.axhline(facts["base_val"], color="black", linestyle=":", label="base model, zero-shot")
    axis.set_xlabel("λ")
    axis.set_ylabel("target validation accuracy")
    axis.legend(fontsize=8)
    return common.save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    common.experiment_command(sys.modules[__name__], "Domain transfer by analogy on SmolLM2, against vanilla transfer and a null analogy.", argv)


if __name__ == "__main__":
    main()
