"""``--engine vllm`` against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_vllm.py).

The fake runs the tiny model with PEFT, so greedy generations and perplexity through the engine
must equal the transformers engine's; lifecycle and error tests use its model-free echo backend.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from evaluation_tiny import one_torch_thread, tiny_llama, word_tokenizer  # noqa: F401
from fake_vllm import EchoBackend, FakeVllm, PeftBackend
from peft import IA3Config, LoraConfig, get_peft_model

from adaptermath.cli.main import main
from adaptermath.errors import AdapterMathError
from adaptermath.evaluation import evaluate, register_scorer
from adaptermath.evaluation import toxicity as toxicity_module
from adaptermath.evaluation.engine import (
    AdapterRefusedError,
    BaseMismatchError,
    EngineConfigError,
    EngineError,
    EngineSpec,
    EngineTimeoutError,
    EngineUnreachableError,
)
from adaptermath.evaluation.vllm_launch import EngineLaunchError, launched_server, max_lora_rank_flag
from adaptermath.sweep import sweep

TESTS = Path(__file__).parent
PROMPTS = ["the movie was", "i hated it", "once upon a time there lived", "the book is very"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engine")
    base = root / "base"
    tiny_llama(seed=3).save_pretrained(base)
    word_tokenizer("causal").save_pretrained(base)
    paths = {"base": base}
    for name, seed, rank in (("x", 1, 4), ("y", 2, 4), ("wide", 3, 16)):
        torch.manual_seed(seed)
        config = LoraConfig(r=rank, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                            task_type="CAUSAL_LM")
        get_peft_model(tiny_llama(seed=3), config).save_pretrained(root / name)
        paths[name] = root / name
    ia3 = IA3Config(target_modules=["k_proj", "v_proj"], feedforward_modules=[], init_ia3_weights=False,
                    task_type="CAUSAL_LM")
    get_peft_model(tiny_llama(seed=3), ia3).save_pretrained(root / "ia3")
    paths["ia3"] = root / "ia3"
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    paths["prompts"] = prompts
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join(PROMPTS * 6) + "\n", encoding="utf-8")
    paths["corpus"] = corpus
    return paths


@pytest.fixture(scope="module")
def peft_server(files: dict[str, Path]) -> Iterator[FakeVllm]:
    with FakeVllm(str(files["base"]), backend=PeftBackend(files["base"])) as server:
        yield server


@pytest.fixture()
def length_scorer() -> Iterator[str]:
    name = "test-engine-length"
    register_scorer(name)(lambda: (lambda texts: [min(1.0, len(text) / 30) for text in texts]))
    yield name
    toxicity_module._FACTORIES.pop(name, None)
    toxicity_module._BUILT.pop(name, None)


def run_cli(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- results equal the transformers engine's -------------------------------------------------


def test_greedy_generations_of_a_composition_equal_transformers_and_the_adapter_is_unloaded(files, peft_server):
    common = ["eval", "--base", files["base"], "0.7*x + 0.5*y", "-a", f"x={files['x']}",
              "-a", f"y={files['y']}", "--task", "generate", "--data", files["prompts"], "--greedy",
              "--max-new-tokens", "6", "--json"]
    code, local, err = run_cli(*common)
    assert code == 0, err
    before = len(peft_server.calls)
    code, served, err = run_cli(*common, "--engine", "vllm", "--engine-url", peft_server.url)
    assert code == 0, err
    local_samples, served_samples = json.loads(local)["result"]["samples"], json.loads(served)["result"]["samples"]
    assert served_samples == local_samples
    assert any(sample["text"] for sample in served_samples)
    assert json.loads(served)["device"] == f"vllm {peft_server.url}"
    calls = peft_server.calls[before:]
    loads = [payload for verb, path, payload in calls if path == "/v1/load_lora_adapter"]
    unloads = [payload for verb, path, payload in calls if path == "/v1/unload_lora_adapter"]
    completions = [payload for verb, path, payload in calls if path == "/v1/completions"]
    assert len(loads) == 1 and unloads == [{"lora_name": loads[0]["lora_name"]}]
    assert {payload["model"] for payload in completions} == {loads[0]["lora_name"]}
    assert all(payload["temperature"] == 0.0 and payload["max_tokens"] == 6 for payload in completions)
    assert not Path(loads[0]["lora_path"]).exists()  # the written folder is removed after unloading
    assert peft_server.loaded == {}


def test_perplexity_through_prompt_logprobs_equals_transformers(files, peft_server):
    options = dict(task="perplexity", data=files["corpus"], max_length=16, stride=8)
    local = evaluate(files["base"], files["x"], **options).result
    served = evaluate(files["base"], files["x"], engine=EngineSpec("vllm", url=peft_server.url), **options).result
    assert served.num_tokens == local.num_tokens and served.num_windows == local.num_windows
    assert served.perplexity == pytest.approx(local.perplexity, rel=1e-5)
    windows = [p for v, path, p in peft_server.calls if path == "/v1/completions" and p.get("prompt_logprobs") == 0]
    assert len(windows) >= local.num_windows and all(p["max_tokens"] == 1 for p in windows)


def test_bare_base_uses_the_served_model_name(files, peft_server):
    run = evaluate(files["base"], None, task="generate", data=files["prompts"], do_sample=False, max_new_tokens=3,
                   engine=EngineSpec("vllm", url=peft_server.url))
    local = evaluate(files["base"], None, task="generate", data=files["prompts"], do_sample=False, max_new_tokens=3)
    assert [s.text for s in run.result.samples] == [s.text for s in local.result.samples]
    assert peft_server.calls[-1][2]["model"] == str(files["base"])


def test_sampling_parameters_map_one_to_one_with_a_seed_per_row(files):
    with FakeVllm(str(files["base"])) as server:
        spec = EngineSpec("vllm", url=server.url, concurrency=2)
        run = evaluate(files["base"], files["x"], task="generate", data=files["prompts"], num_samples=2, seed=7,
                       temperature=0.7, top_k=0, top_p=0.9, max_new_tokens=5, engine=spec)
    payloads = [p for v, path, p in server.calls if path == "/v1/completions"]
    assert sorted(p["seed"] for p in payloads) == list(range(7, 7 + 2 * len(PROMPTS)))
    assert {(p["temperature"], p["top_k"], p["top_p"], p["max_tokens"], p["n"]) for p in payloads} == {(0.7, -1, 0.9, 5, 1)}
    assert all(p["repetition_penalty"] == 1.0 and p["min_p"] == 0.0 for p in payloads)
    # rows come back in prompt-major order whatever order the server answered in
    assert [(s.prompt_index, s.sample) for s in run.result.samples] == [(i, j) for i in range(len(PROMPTS)) for j in range(2)]
    assert [s.text.rsplit(":", 1)[1] for s in run.result.samples] == [str(7 + row) for row in range(2 * len(PROMPTS))]


def test_requests_in_flight_never_exceed_the_concurrency(files):
    with FakeVllm(str(files["base"]), delay_s=0.05) as server:
        evaluate(files["base"], files["x"], task="generate", data=files["prompts"], num_samples=4, max_new_tokens=2,
                 engine=EngineSpec("vllm", url=server.url, concurrency=3))
    assert server.max_in_flight == 3
    assert len(server.paths()) == 1 + 4 * len(PROMPTS) + 1  # load, 16 completions, unload


# --- errors: one line, exit status 2 ---------------------------------------------------------


def cli_error(files: dict[str, Path], server_url: str, *extra: object, adapter: Path | None = None) -> str:
    code, out, err = run_cli("eval", "--base", files["base"], adapter or files["x"], "--task", "generate",
                             "--data", files["prompts"], "--max-new-tokens", "2", "--engine", "vllm",
                             "--engine-url", server_url, *extra)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_unreachable_server(files):
    message = cli_error(files, f"http://127.0.0.1:{closed_port()}")
    assert "cannot reach the inference server" in message and "--engine-launch" in message


@pytest.mark.parametrize(
    ("settings", "adapter", "expected", "error"),
    [
        ({"runtime_updating": False}, "x", "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True", EngineConfigError),
        ({"enable_lora": False}, "x", "restart it with --enable-lora", EngineConfigError),
        ({"max_lora_rank": 8}, "wide", "restart it with --max-lora-rank 16", EngineConfigError),
        ({"refuse_load": {1: "Loading lora am-1 failed: bad tensor layout", 2: "Loading lora am-1 failed: bad tensor layout"}}, "x",
         "the server refused the adapter: Loading lora am-1 failed: bad tensor layout", AdapterRefusedError),
        ({}, "ia3", "vLLM serves LoRA adapters only, not IA3", AdapterRefusedError),
        ({"model": "someone/other-model"}, "x", "serves someone/other-model, not the base", BaseMismatchError),
    ],
)
def test_server_errors_become_one_line_messages(files, settings, adapter, expected, error):
    settings = dict(settings)
    with FakeVllm(settings.pop("model", str(files["base"])), **settings) as server:
        assert expected in cli_error(files, server.url, adapter=files[adapter])
        with pytest.raises(error):
            evaluate(files["base"], files[adapter], task="generate", data=files["prompts"], max_new_tokens=2,
                     engine=EngineSpec("vllm", url=server.url))
        assert server.loaded == {}


def test_timeouts_name_the_option_to_raise(files):
    with FakeVllm(str(files["base"]), delay_s=1.0) as server:
        message = cli_error(files, server.url, "--engine-timeout", "0.2")
        assert "did not answer /v1/completions within 0.2 s" in message and "--engine-timeout" in message
        with pytest.raises(EngineTimeoutError):
            evaluate(files["base"], files["x"], task="generate", data=files["prompts"], max_new_tokens=2,
                     engine=EngineSpec("vllm", url=server.url, timeout_s=0.2))


def test_perplexity_is_refused_when_the_server_gives_no_prompt_logprobs(files):
    with FakeVllm(str(files["base"]), prompt_logprobs=False) as server:
        with pytest.raises(EngineError, match="returned no prompt_logprobs, so it cannot score perplexity"):
            evaluate(files["base"], files["x"], task="perplexity", data=files["corpus"], max_length=16,
                     engine=EngineSpec("vllm", url=server.url))


def test_a_server_failing_on_prompt_logprobs_gets_a_one_line_error_with_the_way_out(files):
    with FakeVllm(str(files["base"]), crash_on_prompt_logprobs=True) as server:
        code, out, err = run_cli("eval", "--base", files["base"], files["x"], "--task", "perplexity",
                                 "--data", files["corpus"], "--max-length", "16", "--engine", "vllm",
                                 "--engine-url", server.url)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "failed computing prompt_logprobs for perplexity (HTTP 500: EngineCore encountered an issue" in err
        assert "rerun with --engine-concurrency 1" in err
        with pytest.raises(EngineError, match="prompt_logprobs for perplexity .*; use --engine transformers$"):
            evaluate(files["base"], files["x"], task="perplexity", data=files["corpus"], max_length=16,
                     engine=EngineSpec("vllm", url=server.url, concurrency=1))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--engine", "vllm"], "needs either --engine-url URL (a running server) or --engine-launch"),
        (["--engine-url", "http://127.0.0.1:1"], "--engine-url needs --engine vllm"),
        (["--engine", "vllm", "--engine-url", "ftp://x"], "--engine-url must look like http://HOST:PORT"),
        (["--engine", "vllm", "--engine-url", "http://127.0.0.1:1", "--task", "classification", "--labels", "a,b"],
         "--task classification cannot run on --engine vllm"),
        (["--engine", "vllm", "--engine-url", "http://127.0.0.1:1", "--dtype", "bfloat16"],
         "a running server keeps the --dtype it was started with"),
    ],
)
def test_option_errors(files, extra, expected):
    task = [] if "--task" in extra else ["--task", "generate"]
    code, out, err = run_cli("eval", "--base", files["base"], "--data", files["prompts"], *task, *extra)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


# --- sweeps: runtime loading per point, resume through the results log -----------------------


def test_sweep_on_the_engine_equals_transformers_and_resumes_after_a_refused_load(files, peft_server, tmp_path,
                                                                                   length_scorer):
    options = dict(base=files["base"], task="toxicity", grid={"λ": [0.0, 0.5, 1.0]}, val=files["prompts"],
                   test=files["prompts"], do_sample=False, max_new_tokens=4, scorer=length_scorer)
    operands = {"x": files["x"], "y": files["y"]}
    local = sweep("x + λ*y", operands, results=tmp_path / "local.jsonl", **options)
    spec = EngineSpec("vllm", url=peft_server.url, concurrency=2)
    results = tmp_path / "served.jsonl"
    peft_server.refuse_load = {peft_server.loads + 3: "out of LoRA slots"}
    with pytest.raises(AdapterRefusedError, match="out of LoRA slots"):
        sweep("x + λ*y", operands, results=results, engine=spec, **options)
    assert len(results.read_text().splitlines()) == 1 + 2  # header + the two points scored before the refusal
    loads_before = peft_server.loads
    served = sweep("x + λ*y", operands, results=results, engine=spec, **options)
    # resumed: the third grid point, the chosen point on test and the λ=0, x, y baselines
    assert peft_server.loads - loads_before == 1 + 1 + 3
    assert [r.metrics for r in served.records] == [r.metrics for r in local.records]
    assert served.best_point == local.best_point
    assert json.loads(results.read_text().splitlines()[0])["fingerprint"]["engine"] == "vllm"
    assert "engine" not in json.loads((tmp_path / "local.jsonl").read_text().splitlines()[0])["fingerprint"]
    assert peft_server.loaded == {}


def test_sweep_cli_runs_on_the_engine(files, tmp_path, length_scorer):
    with FakeVllm(str(files["base"])) as server:
        code, out, err = run_cli(
            "sweep", "x + λ*y", "-a", f"x={files['x']}", "-a", f"y={files['y']}", "--base", files["base"],
            "--task", "toxicity", "--grid", "λ=0,1", "--val", files["prompts"], "--scorer", length_scorer,
            "--max-new-tokens", "2", "--engine", "vllm", "--engine-url", server.url, "-o", tmp_path / "sweep", "--json")
    assert code == 0, err
    assert len(json.loads(out)["validation"]) == 2
    assert server.paths().count("/v1/load_lora_adapter") == 2 == server.paths().count("/v1/unload_lora_adapter")


def test_search_cli_runs_on_the_engine(files, tmp_path, length_scorer):
    pytest.importorskip("optuna", reason="pip install 'adaptermath[search]'")
    with FakeVllm(str(files["base"])) as server:
        code, out, err = run_cli(
            "search", "x + λ*y", "-a", f"x={files['x']}", "-a", f"y={files['y']}", "--base", files["base"],
            "--task", "toxicity", "--var", "λ=0:1", "--trials", "2", "--seed", "0", "--val", files["prompts"],
            "--scorer", length_scorer, "--max-new-tokens", "2", "--engine", "vllm", "--engine-url", server.url,
            "-o", tmp_path / "search", "--json")
        assert code == 0, err
        assert json.loads(out)["trials"] == 2
        loads = server.paths().count("/v1/load_lora_adapter")
        assert loads >= 2 and loads == server.paths().count("/v1/unload_lora_adapter")
    study = json.loads((tmp_path / "search" / "search.json").read_text())
    assert study["expression"] == "x + λ*y"


# --- --engine-launch: a stand-in vLLM module started as a process group ----------------------


@pytest.fixture()
def fake_vllm_python(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PYTHONPATH with tests/fake_vllm_pkg, so this interpreter's ``-m vllm...`` is the stand-in."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS / "fake_vllm_pkg"), str(TESTS)]))
    record = tmp_path / "server.json"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def gone(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is our child (a zombie still answers kill(pid, 0))
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def test_launch_runs_the_server_for_the_run_and_leaves_no_process(files, fake_vllm_python):
    spec = EngineSpec("vllm", launch=True, python=sys.executable, start_timeout_s=60,
                      server_args=("--max-model-len", "128"))
    run = evaluate(files["base"], files["wide"], task="generate", data=files["prompts"], max_new_tokens=2, engine=spec)
    assert run.device.startswith("vllm http://127.0.0.1:")
    record = json.loads(fake_vllm_python.read_text())
    argv = record["argv"]
    assert argv[argv.index("--model") + 1] == str(files["base"])
    assert argv[argv.index("--max-lora-rank") + 1] == "16"  # fits the rank-16 adapter
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "--enable-lora" in argv and argv[-2:] == ["--max-model-len", "128"]
    assert argv[argv.index("--dtype") + 1] == "float32"
    assert record["runtime_updating"] == "True"
    assert gone(record["pid"]) and gone(record["child"])


def test_ctrl_c_stops_the_launched_server_and_its_children(files, fake_vllm_python, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with launched_server(str(files["base"]), python=sys.executable, start_timeout_s=60, log_dir=tmp_path) as server:
            record = json.loads(fake_vllm_python.read_text())
            assert server.process.poll() is None
            raise KeyboardInterrupt
    assert gone(record["pid"]) and gone(record["child"])


def test_a_server_that_dies_while_starting_is_reported_with_its_log(files, fake_vllm_python, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_EXIT", "3")
    code, out, err = run_cli("eval", "--base", files["base"], files["x"], "--task", "generate",
                             "--data", files["prompts"], "--engine", "vllm", "--engine-launch",
                             "--engine-python", sys.executable)
    assert code == 2
    assert "exited with status 3 before it was ready: ValueError: fake failure while loading the model" in err
    assert len(err.strip().splitlines()) == 1
    log = Path(err.rsplit("(log: ", 1)[1].split(")", 1)[0])
    assert "fake failure" in log.read_text()  # the log is kept for the user
    shutil.rmtree(log.parent)


def test_a_python_without_vllm_is_refused(files):
    with pytest.raises(EngineLaunchError, match="cannot import vllm; install vllm"):
        evaluate(files["base"], files["x"], task="generate", data=files["prompts"],
                 engine=EngineSpec("vllm", launch=True, python=sys.executable))


def test_max_lora_rank_flag_rounds_up_to_a_value_vllm_accepts():
    assert [max_lora_rank_flag(r) for r in (1, 4, 8, 9, 40, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(AdapterMathError):
        max_lora_rank_flag(1024)


def test_ctrl_c_does_not_wait_for_requests_in_flight():
    from adaptermath.evaluation.vllm_engine import run_bounded

    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    jobs = [lambda: None] + [lambda: time.sleep(1.5)] * 3
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_bounded(jobs, 2, progress=interrupt)
    assert time.monotonic() - started < 1.0
