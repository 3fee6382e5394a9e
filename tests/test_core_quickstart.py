"""The README quick start runs as written: the example script, then the documented commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", "", section)  # join continuation lines
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


def test_readme_quickstart_runs(tmp_path):
    commands = quickstart_commands()
    assert commands[0].startswith("python recipes/quickstart/make_adapters.py")
    script = "set -e\n" + "\n".join(commands).replace("recipes/", f"{ROOT}/recipes/")
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "PATH": f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([1, 3, 128])" in result.stdout
    for name in ("merged", "detox", "analogy"):
        assert (tmp_path / "demo" / name / "adaptermath.json").is_file()
