"""Where the generation-based evaluators run: transformers in this process, or an inference engine.

An *engine session* owns the base model for a run and hands the evaluators a model-like object
per adapter:

* ``transformers`` (the default): the base model is loaded here (:func:`load_base_model`) and each
  adapter is attached with PEFT (:func:`attach_adapter`); the evaluators get a live ``PeftModel``
  (:mod:`adaptermath.evaluation.sessions` opens either kind: :func:`open_engine`).
* ``vllm``: an OpenAI-compatible vLLM server holds the base model. Each adapter is written as a
  PEFT folder the server can read, loaded at run time under a unique name, and unloaded again;
  the evaluators get a :class:`ServedModel` that sends their prompts to the server (see
  :mod:`adaptermath.evaluation.vllm_engine`).

The evaluators only branch where they would call the model: :func:`generate_continuations` hands
a :class:`ServedModel` the tokenized prompts and gets one text per row back, and
:func:`corpus_perplexity` hands it the windows and gets their summed log-likelihoods, so the
results (and their per-example parts) have the same structure on both engines.

This module imports neither torch nor transformers at module level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..choices import ENGINE_DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from ..choices import ENGINE_DEFAULT_START_TIMEOUT_S as DEFAULT_START_TIMEOUT_S
from ..choices import ENGINE_DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
from ..choices import ENGINES
from ..errors import AdapterMathError

# The tasks each engine can score; the others are refused with a one-line error.
ENGINE_TASKS: dict[str, tuple[str, ...]] = {
    "transformers": ("classification", "perplexity", "toxicity", "generate"),
    "vllm": ("perplexity", "toxicity", "generate"),
}


class EngineError(AdapterMathError):
    """The inference engine refused or failed a request (its reason is in the message)."""


class EngineUnreachableError(EngineError):
    """Nothing answers at the engine's URL."""


class EngineTimeoutError(EngineError):
    """The engine did not answer (or start) in time."""


class EngineConfigError(EngineError):
    """The server runs without something adaptermath needs (LoRA, runtime loading, a large enough rank)."""


class AdapterRefusedError(EngineError):
    """The server refused to load an adapter."""


class BaseMismatchError(EngineError):
    """The server serves another base model than the one asked for."""


@dataclass(frozen=True)
class EngineSpec:
    """Which engine scores, and how to reach it.

    ``url`` points at a running OpenAI-compatible server; ``launch`` starts one for the run with
    ``python`` (default: this interpreter). ``shared_dir`` is where adapter folders are written for
    the server to read (default: the system's temporary folder, which only a local server sees).
    At most ``concurrency`` requests are in flight; each must be answered within ``timeout_s``;
    a launched server must be ready within ``start_timeout_s``. ``server_args`` are appended to
    the launched server's command line (e.g. ``("--max-model-len", "2048")``).
    """

    name: str = "transformers"
    url: str | None = None
    launch: bool = False
    python: str | None = None
    shared_dir: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    server_args: tuple[str, ...] = field(default_factory=tuple)

    def check(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}; use {', '.join(ENGINES)}")
        server_only = {"--engine-url": self.url, "--engine-launch": self.launch, "--engine-python": self.python,
                       "--engine-shared-dir": self.shared_dir, "--engine-arg": self.server_args}
        if self.name == "transformers":
            given = [flag for flag, value in server_only.items() if value]
            if given:
                raise EngineError(f"{given[0]} needs --engine vllm")
            return
        if bool(self.url) == bool(self.launch):
            raise EngineError("--engine vllm needs either --engine-url URL (a running server) or --engine-launch")
        if self.url and (self.python or self.server_args):
            raise EngineError("--engine-python and --engine-arg apply to --engine-launch, not to --engine-url")
        if self.concurrency < 1:
            raise EngineError(f"--engine-concurrency must be at least 1, got {self.concurrency}")
        if self.timeout_s <= 0 or self.start_timeout_s <= 0:
            raise EngineError("engine timeouts must be positive")


def engine_spec(engine: EngineSpec | str | None) -> EngineSpec:
    """``engine`` as a checked :class:`EngineSpec` (a bare name is ``EngineSpec(name)``)."""
    spec = EngineSpec() if engine is None else EngineSpec(engine) if isinstance(engine, str) else engine
    spec.check()
    return spec


def check_engine_task(spec: EngineSpec, task: str) -> None:
    """Refuse a task the engine cannot score (one line)."""
    if task not in ENGINE_TASKS[spec.name]:
        raise EngineError(
            f"--task {task} cannot run on --engine {spec.name} (it scores {', '.join(ENGINE_TASKS[spec.name])}); "
            "use --engine transformers"
        )


class ServedModel(ABC):
    """A base model with one adapter (or none), served by an inference engine.

    The evaluators call it where they would call a live model. Token ids go in, so both engines
    see exactly the same prompts (the tokenizer's own prefix, e.g. BOS, included).
    """

    kind: str = "causal-lm"

    @property
    @abstractmethod
    def max_model_len(self) -> int | None:
        """The longest sequence (prompt + generated tokens) the engine accepts, if it says."""

    @abstractmethod
    def sample(
        self,
        prompt_ids: Sequence[Sequence[int]],
        rows: Sequence[tuple[int, int]],
        options: Any,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """One continuation text per ``(prompt index, sample index)`` row, drawn with ``options``
        (a :class:`~adaptermath.evaluation.generate.SamplingOptions`); special tokens removed."""

    @abstractmethod
    def window_nll(
        self,
        tokens: Sequence[int],
        windows: Sequence[Any],
        progress: Callable[[int], None] | None = None,
    ) -> list[tuple[float, int]]:
        """For each perplexity window (``begin``, ``end``, ``first_target``): the summed negative
        log-likelihood of its targets and their number."""


class EngineSession(ABC):
    """One run's hold on an engine: the tokenizer, and a model per adapter (see the module doc)."""

    tokenizer: Any
    device_label: str

    def __enter__(self) -> "EngineSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def bare(self) -> Any:
        """The base model without an adapter."""

    @abstractmethod
    def attach(self, adapter: Any) -> Any:
        """The base model carrying ``adapter`` (a folder, a composed adapter, or ``(config, state)``);
        the model returned by the previous call is no longer valid."""

    def close(self) -> None:
        """Release what the session holds (a launched server, loaded adapters, temporary folders)."""
