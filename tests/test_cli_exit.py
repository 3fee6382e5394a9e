"""The console script's exit (adaptermath.cli.entry): ``sys.exit``'s status, atexit handlers run and output
flushed, the interpreter's teardown skipped, and the normal exit kept while a non-daemon thread runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adaptermath.cli.entry import exit_status

BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}

# Runs the console script's entry point in a child. `Finalised.__del__` runs only when the interpreter
# tears __main__ down; the atexit handler and the unterminated prints (buffered: stdout is a pipe) must
# still come out, and the garbage cycle (left alone by the disabled automatic collector) be finalised.
SCRIPT = """
import atexit, gc, sys, threading, time
from pathlib import Path

class Finalised:
    def __del__(self):
        sys.stderr.write("torn down\\n")

class Cycle:
    def __del__(self):
        marker.with_suffix(".cycle").write_text("collected")

witness = Finalised()
marker = Path(sys.argv[1])
gc.disable()
cycle = Cycle()
cycle.itself = cycle
del cycle
atexit.register(lambda: (marker.write_text("atexit ran"), print("|printed at exit", end="")))
print("before the command, unterminated", end="")
if sys.argv[2] == "thread":
    def late_write():
        time.sleep(0.5)
        marker.with_suffix(".thread").write_text("joined")
    threading.Thread(target=late_write).start()
sys.argv = ["adaptermath", *sys.argv[3:]]
from adaptermath.cli.entry import run
run()
"""


def _run(tmp_path: Path, thread: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "marker"), thread, *argv], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=BUFFERED)


def test_a_finished_command_skips_the_teardown_but_runs_atexit_and_flushes(tmp_path: Path) -> None:
    done = _run(tmp_path, "none", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("before the command, unterminatedadaptermath, version ")
    assert done.stdout.endswith("|printed at exit")
    assert (tmp_path / "marker").read_text() == "atexit ran"
    assert (tmp_path / "marker.cycle").read_text() == "collected"
    assert "torn down" not in done.stderr


def test_a_failing_command_keeps_its_status_and_one_line_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "none", "inspect", str(tmp_path / "missing"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "missing" in done.stderr
    assert (tmp_path / "marker").read_text() == "atexit ran"


def test_a_running_non_daemon_thread_gets_the_normal_exit(tmp_path: Path) -> None:
    done = _run(tmp_path, "thread", "--version")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "marker.thread").read_text() == "joined"
    assert "torn down" in done.stderr


def test_python_dash_m_adaptermath_exits_through_the_entry_point(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import runpy, sys
        class Finalised:
            def __del__(self):
                sys.stderr.write("torn down\\n")
        sys.modules["__main__"].witness = Finalised()
        sys.argv = ["adaptermath", "--version"]
        runpy.run_module("adaptermath", run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=BUFFERED)
    assert done.returncode == 0 and done.stdout.startswith("adaptermath, version ")
    assert "torn down" not in done.stderr


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (2, 2), (130, 130)])
def test_exit_status_follows_sys_exit(code: object, status: int) -> None:
    assert exit_status(code) == status


def test_exit_status_of_a_message_is_one_and_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status("no such thing") == 1
    assert capsys.readouterr().err == "no such thing\n"
