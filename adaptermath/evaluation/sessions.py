"""Opening an engine session (:mod:`adaptermath.evaluation.engine`): the base model loaded in this
process with adapters attached by PEFT, or a vLLM server (:mod:`adaptermath.evaluation.vllm_engine`).

This module imports neither torch nor transformers at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .engine import EngineSession, EngineSpec


class TransformersSession(EngineSession):
    """Today's path: the base model loaded in this process, adapters attached with PEFT in place."""

    def __init__(self, base: str, **load_options: Any) -> None:
        from .models import load_base_model

        self.loaded = load_base_model(base, **load_options)
        self.tokenizer = self.loaded.tokenizer
        self.device_label = str(self.loaded.device)
        self.model = self.loaded.model

    def bare(self) -> Any:
        return self.model

    def attach(self, adapter: Any) -> Any:
        from .models import attach_adapter

        self.model = attach_adapter(self.model, adapter)
        return self.model


def open_engine(
    spec: EngineSpec,
    base: str,
    *,
    kind: str = "auto",
    device: str = "auto",
    dtype: str | None = None,
    gguf_file: str | None = None,
    num_labels: int | None = None,
    adapter_configs: Sequence[Mapping[str, Any]] = (),
) -> EngineSession:
    """A session on ``spec``'s engine for ``base``.

    ``adapter_configs`` are the configs of adapters the run will load: a launched vLLM server is
    started with a ``--max-lora-rank`` that fits the largest of them.
    """
    if spec.name == "transformers":
        return TransformersSession(
            base, device=device, dtype=dtype, task=kind, gguf_file=gguf_file, num_labels=num_labels
        )
    from .vllm_engine import VllmSession

    return VllmSession(spec, base, kind=kind, device=device, dtype=dtype, gguf_file=gguf_file,
                       adapter_configs=adapter_configs)
