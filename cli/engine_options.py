"""The ``--engine`` options shared by the commands that score adapters (eval, sweep).

:func:`engine_options` adds the options and hands the command one ``engine`` argument, an
:class:`~adaptermath.evaluation.engine.EngineSpec`, instead of the individual values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from adaptermath.choices import ENGINE_DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from adaptermath.choices import ENGINE_DEFAULT_START_TIMEOUT_S as DEFAULT_START_TIMEOUT_S
from adaptermath.choices import ENGINE_DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S
from adaptermath.choices import ENGINES

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--engine", "engine_name", type=click.Choice(list(ENGINES)), default="transformers",
                 show_default=True,
                 help="Where generation and perplexity run: transformers in this process, or a vLLM server "
                      "with runtime LoRA loading (docs/engines.md)."),
    click.option("--engine-url", default=None, metavar="URL",
                 help="vLLM: a running OpenAI-compatible server, e.g. http://127.0.0.1:8000."),
    click.option("--engine-launch", is_flag=True, help="vLLM: start a local server for this run and stop it at the end."),
    click.option("--engine-python", default=None, metavar="PYTHON",
                 help="vLLM with --engine-launch: the Python that has vllm installed.  [default: this one]"),
    click.option("--engine-shared-dir", default=None, metavar="DIR",
                 help="vLLM: folder the server can read, where adapters are written for loading.  [default: a temporary folder]"),
    click.option("--engine-concurrency", type=click.IntRange(min=1), default=DEFAULT_CONCURRENCY, show_default=True,
                 help="vLLM: requests in flight at once."),
    click.option("--engine-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT_S,
                 show_default=True, help="vLLM: seconds to wait for one answer."),
    click.option("--engine-start-timeout", type=click.FloatRange(min=0, min_open=True),
                 default=DEFAULT_START_TIMEOUT_S, show_default=True,
                 help="vLLM with --engine-launch: seconds to wait for the server to be ready."),
    click.option("--engine-arg", "engine_args", multiple=True, metavar="ARG",
                 help="vLLM with --engine-launch: an extra server argument, e.g. --engine-arg=--max-model-len=2048 (repeat)."),
]
_NAMES = ("engine_name", "engine_url", "engine_launch", "engine_python", "engine_shared_dir", "engine_concurrency",
          "engine_timeout", "engine_start_timeout", "engine_args")


def engine_options(func: F) -> F:
    """Add the ``--engine*`` options; the command receives them as ``engine: EngineSpec``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from adaptermath.evaluation.engine import EngineSpec

        values = {name: kwargs.pop(name) for name in _NAMES}
        kwargs["engine"] = EngineSpec(
            name=values["engine_name"], url=values["engine_url"], launch=values["engine_launch"],
            python=values["engine_python"], shared_dir=values["engine_shared_dir"],
            concurrency=values["engine_concurrency"], timeout_s=values["engine_timeout"],
            start_timeout_s=values["engine_start_timeout"], server_args=tuple(values["engine_args"]),
        )
        return func(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
