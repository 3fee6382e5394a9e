"""pyproject.toml lists every package, so a non-editable install ships every module and command."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def packages_on_disk() -> set[str]:
    found = set()
    for init in (ROOT / "adaptermath").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "cli").rglob("__init__.py"):
        found.add(".".join(("adaptermath",) + init.parent.relative_to(ROOT).parts))
    return {p for p in found if "__pycache__" not in p}


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert listed == packages_on_disk()
    assert config["tool"]["setuptools"]["package-dir"] == {"adaptermath.cli": "cli"}
    assert "cli" not in listed  # never installed as a bare top-level package


def test_dev_constraints_pin_cpu_torch_but_package_does_not():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_req = [d for d in config["project"]["dependencies"] if d.startswith("torch")]
    assert torch_req and "==" not in torch_req[0]
    assert "torch==2.13.0" in (ROOT / "constraints-dev.txt").read_text()
