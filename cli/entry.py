"""The ``adaptermath`` console script: signal handling first, then the command group.

SIGTERM is turned into :class:`Terminated` (a ``KeyboardInterrupt``), so a killed run unwinds like
Ctrl-C: the atomic writers remove their temporary folders, and the CLI prints one line,
``interrupted; nothing written``, exiting 130 (SIGINT) or 143 (SIGTERM) -- never a traceback, also
while the command modules are still being imported.
"""

from __future__ import annotations

import signal
import sys
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


def run() -> None:
    """Entry point: install the handlers, import the commands, run the group."""
    install_signal_handlers()
    try:
        from .main import main

        main(prog_name="adaptermath")
    except KeyboardInterrupt as exc:
        exit_interrupted(exc)
