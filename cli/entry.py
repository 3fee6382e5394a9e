"""The ``adaptermath`` console script: signal handling first, then the command group.

SIGTERM is turned into :class:`Terminated` (a ``KeyboardInterrupt``), so a killed run unwinds like
Ctrl-C: the atomic writers remove their temporary folders, and the CLI prints one line,
``interrupted; nothing written``, exiting 130 (SIGINT) or 143 (SIGTERM) -- never a traceback, also
while the command modules are still being imported.

A finished command leaves through :func:`exit_without_teardown`: the atexit handlers run and the
standard streams are flushed, then the process ends without tearing the interpreter down, which
after ``import torch`` takes longer (0.3-0.5 s) than many commands' work.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
import threading
from typing import Any, NoReturn

INTERRUPTED_MESSAGE = "interrupted; nothing written"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process was, like SIGINT's ``KeyboardInterrupt``."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """Handle SIGTERM like SIGINT (idempotent; only in the main thread)."""
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. an embedding application)
        pass


def exit_interrupted(exc: BaseException) -> NoReturn:
    """Print the one-line notice and exit 130 (SIGINT) or 143 (SIGTERM); further signals are ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, signal.SIG_IGN)
        except ValueError:
            pass
    try:
        sys.stderr.write(f"\n{INTERRUPTED_MESSAGE}\n")
        sys.stderr.flush()
    except OSError:
        pass
    sys.exit(143 if isinstance(exc, Terminated) else 130)


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives: 0 for ``None``, an integer as it is, and 1 for anything else
    (which is printed to stderr, as the interpreter does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_without_teardown(code: object) -> NoReturn:
    """End the process with ``sys.exit(code)``'s status but without the interpreter's teardown.

    In order: cyclic garbage is collected (so that its finalizers run), the atexit handlers run, stdout
    and stderr are flushed, and ``os._exit`` ends the process. The teardown skipped is freeing every
    module (about 170 000 objects once torch is imported) and libtorch's static destructors. While a
    non-daemon thread still runs, the normal exit is taken instead, so that it is joined first."""
    status = exit_status(code)
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        sys.exit(status)
    gc.collect()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`adaptermath ... | head`) or a closed stream
            pass
    os._exit(status)


def run() -> None:
    """Entry point: install the handlers, import the commands, run the group, exit without teardown."""
    install_signal_handlers()
    try:
        from .main import main

        main(prog_name="adaptermath")
    except KeyboardInterrupt as exc:
        exit_interrupted(exc)
    except SystemExit as exc:
        exit_without_teardown(exc.code)
