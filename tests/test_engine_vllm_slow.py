"""``--engine vllm`` against a real vLLM server on SmolLM2-135M-Instruct (slow; opt-in).

Runs only when ``$ADAPTERMATH_VLLM_PYTHON`` names a Python with vllm (or vllm-cpu) installed, and
the SmolLM2 asset is set up (``python -m adaptermath.experiments.setup``)::

    ADAPTERMATH_VLLM_PYTHON=/path/to/vllm-env/bin/python VLLM_CPU_KVCACHE_SPACE=1 \\
        python -m pytest tests/test_engine_vllm_slow.py -m slow -q

The toxicity sweep runs first, through the CLI with ``--engine-launch`` (its own server, stopped
at the end of the command). Then one server is launched for the other tests the same way
(float32, LoRA rank up to 16, runtime loading on) and they talk to it through ``--engine-url``.
Perplexity runs last: if the server's engine fails on it, the other tests have already run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from peft import LoraConfig, get_peft_model

from adaptermath.cli.main import main
from adaptermath.evaluation import evaluate
from adaptermath.evaluation.engine import EngineSpec
from adaptermath.evaluation.vllm_client import EngineClient
from adaptermath.evaluation.vllm_launch import launched_server

VLLM_PYTHON = os.environ.get("ADAPTERMATH_VLLM_PYTHON")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not VLLM_PYTHON, reason="set ADAPTERMATH_VLLM_PYTHON to a Python with vllm-cpu (docs/engines.md)"),
]
PROMPTS = [
    "The weather today is",
    "My favourite food is",
    "You are such an idiot because",
    "Once upon a time, there was a",
]
DTYPE = "float32"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from adaptermath.experiments.assets import AssetMissingError, smollm2_model_dir

    try:
        return smollm2_model_dir()
    except AssetMissingError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def files(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("vllm-slow")
    paths = {"base": smollm2}
    for name, seed in (("x", 1), ("y", 2)):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(smollm2)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                            task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, config)
        with torch.no_grad():  # a visible but sane change of behaviour
            for parameter_name, parameter in peft_model.named_parameters():
                if "lora_B" in parameter_name:
                    parameter.mul_(0.2)
        peft_model.save_pretrained(root / name)
        paths[name] = root / name
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    paths["prompts"] = prompts
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(PROMPTS * 8) + "\n", encoding="utf-8")
    paths["corpus"] = corpus
    return paths


def test_three_point_toxicity_sweep_through_runtime_loading(files, tmp_path):
    """The CLI end to end with ``--engine-launch``: its own server, three adapters loaded at run time."""
    pytest.importorskip("profanity_check", reason="pip install 'adaptermath[toxicity]'")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    output = tmp_path / "sweep"
    result = CliRunner().invoke(main, [
        "sweep", "x + λ*y", "-a", f"x={files['x']}", "-a", f"y={files['y']}", "--base", str(files["base"]),
        "--task", "toxicity", "--grid", "λ=0,0.5,1", "--val", str(files["prompts"]), "--scorer", "profanity-check",
        "--num-samples", "2", "--max-new-tokens", "16", "--seed", "42", "--engine", "vllm", "--engine-launch",
        "--engine-python", str(VLLM_PYTHON), "--dtype", DTYPE, "--engine-arg=--max-model-len=1024",
        "-o", str(output), "--json",
    ])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [row["point"]["λ"] for row in summary["validation"]] == [0.0, 0.5, 1.0]
    assert all(0.0 <= row["metrics"]["mean_score"] <= 1.0 and row["metrics"]["num_samples"] == 8
               for row in summary["validation"])
    lines = (output / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["fingerprint"]["engine"] == "vllm" and len(lines) == 4
    assert vllm_servers_on(files["base"]) == []  # the launched server and its engine process are gone


def vllm_servers_on(base: Path) -> list[int]:
    """Pids of processes whose command line runs vLLM's API server on ``base``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"vllm.entrypoints.openai.api_server" in command and str(base).encode() in command:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def server_url(smollm2: Path) -> Iterator[str]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    with launched_server(str(smollm2), python=VLLM_PYTHON, max_lora_rank=16, dtype=DTYPE,
                         extra_args=("--max-model-len", "1024"), start_timeout_s=900) as server:
        yield server.url


def test_greedy_generations_of_a_composition_equal_transformers_peft(files, server_url):
    options = dict(operands={"x": files["x"], "y": files["y"]}, task="generate", data=files["prompts"],
                   do_sample=False, max_new_tokens=16)
    local = evaluate(files["base"], "x + 0.5*y", dtype=DTYPE, **options)
    served = evaluate(files["base"], "x + 0.5*y", engine=EngineSpec("vllm", url=server_url), **options)
    assert [s.text for s in served.result.samples] == [s.text for s in local.result.samples]
    bare = evaluate(files["base"], None, task="generate", data=files["prompts"], do_sample=False, max_new_tokens=16,
                    engine=EngineSpec("vllm", url=server_url))
    assert [s.text for s in bare.result.samples] != [s.text for s in served.result.samples]  # the adapter acts
    served_models = EngineClient(server_url, timeout_s=30).get("/v1/models")["data"]
    assert [entry for entry in served_models if entry.get("parent")] == []  # the adapter was unloaded


def test_perplexity_through_prompt_logprobs_matches_transformers(files, server_url):
    options = dict(task="perplexity", data=files["corpus"], max_length=64, stride=32)
    local = evaluate(files["base"], files["x"], dtype=DTYPE, **options).result
    # one request at a time: vllm-cpu 0.32 crashes its engine on batched prompt_logprobs with LoRA
    served = evaluate(files["base"], files["x"], engine=EngineSpec("vllm", url=server_url, concurrency=1),
                      **options).result
    assert served.num_tokens == local.num_tokens
    assert served.perplexity == pytest.approx(local.perplexity, rel=1e-3)
