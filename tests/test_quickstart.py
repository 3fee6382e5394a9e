"""The README quick start runs as written: every command of its block, extracted from README.md, in
order, in a fresh folder holding a copy of recipes/ — then the recipes run on its files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOISE = ("Loading weights", "FutureWarning", "UserWarning", "Warning:", "it/s]")  # bars and library warnings


def quickstart_commands(readme: str) -> list[str]:
    """The commands of the first ```bash block under "## Quick start", continuation lines joined."""
    section = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", "", section)
    commands, current = [], ""
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line) if not current else line
        if not line.strip():
            continue
        current = f"{current}\n{line}" if current else line
        if current.count('"') % 2 == 0:
            commands.append(current)
            current = ""
    return commands


def test_the_extraction_reads_the_readme_block() -> None:
    commands = quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == "python recipes/quickstart/make_adapters.py demo"
    assert any(c.startswith("adaptermath eval ") for c in commands)
    sweep = [c for c in commands if c.startswith("adaptermath sweep ")]
    assert len(sweep) == 1 and '--grid "λ=0:1:0.25"' in sweep[0]  # five points
    assert commands[-1].startswith('python -c "') and commands[-1].count("\n") == 3


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_readme_quickstart_runs_in_order_then_the_recipes(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    for command in quickstart_commands((ROOT / "README.md").read_text(encoding="utf-8")):
        done = _run(command, tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        if command.startswith(("adaptermath", "python recipes/")):
            assert not [n for n in NOISE if n in done.stderr], f"{command}\n{done.stderr[-2000:]}"
    assert "torch.Size([1, 3, 128])" in done.stdout
    for name in ("merged", "detox", "analogy"):
        assert (tmp_path / "demo" / name / "adaptermath.json").is_file()
    assert (tmp_path / "demo" / "sweep" / "sweep.json").is_file()
    assert (tmp_path / "demo" / "base" / "tokenizer.json").is_file()

    # recipes/ written for the quick start's files never collide with its outputs
    for recipe in ("merge", "negate", "analogy"):
        done = _run(f"adaptermath run recipes/{recipe}.yaml --allow-outside", tmp_path)
        assert done.returncode == 0, done.stderr
    done = _run("adaptermath run recipes/sweep.yaml --dry-run", tmp_path)  # its adapters are placeholders
    assert done.returncode == 0, done.stderr
