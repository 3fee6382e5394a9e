"""Start-up: ``--help``, ``--version`` and every ``COMMAND --help`` import no torch, transformers or
peft; ``inspect`` of a PEFT folder imports neither transformers nor peft; the CLI's choice lists
(adaptermath.choices) agree with the registries they stand for. Timings: benchmarks/cli_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adaptermath.cli.main import main

HEAVY = ("torch", "transformers", "peft")
PROBE = """
import json, sys
from adaptermath.cli.main import main
try:
    main(sys.argv[1:], prog_name="adaptermath")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def _imported_after(*argv: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True,
                          timeout=60)
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [("--help",), ("--version",), *[(name, "--help") for name in sorted(main.commands)]],
                         ids=lambda argv: " ".join(argv))
def test_help_and_version_import_no_torch(argv: tuple[str, ...]) -> None:
    assert _imported_after(*argv) == []


def test_inspect_of_a_peft_folder_imports_no_transformers_or_peft(tiny) -> None:
    # the probe does see a heavy import: inspect reads the tensors with torch
    assert _imported_after("inspect", str(tiny["lora_a"])) == ["torch"]


def test_import_adaptermath_is_lazy() -> None:
    code = ("import sys, adaptermath as am; assert 'torch' not in sys.modules; "
            "import adaptermath.compose, adaptermath.sweep; "
            "assert callable(am.compose) and callable(am.sweep) and am.sweep.__name__ == 'sweep'; "
            "assert set(am.__all__) <= set(dir(am))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_python_dash_m_adaptermath() -> None:
    done = subprocess.run([sys.executable, "-m", "adaptermath", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("adaptermath, version ")


def test_choices_match_the_registries() -> None:
    from adaptermath import choices
    from adaptermath.compose import DTYPES as COMPOSE_DTYPES
    from adaptermath.evaluation.models import DTYPES as MODEL_DTYPES, MODEL_KINDS
    from adaptermath.evaluation.run import TASKS
    from adaptermath.methods import available_methods
    from adaptermath.sweep import DEFAULT_METRICS

    assert list(choices.METHODS) == available_methods()
    assert list(choices.EVAL_TASKS) == list(TASKS)
    assert list(choices.SWEEP_TASKS) == list(DEFAULT_METRICS)
    assert set(choices.DTYPES) == set(COMPOSE_DTYPES) | {"auto"}
    assert set(choices.DTYPES) - {"auto"} <= set(MODEL_DTYPES)
    assert choices.MODEL_TYPES == ("auto", *MODEL_KINDS)
    from adaptermath.modelcard import AUTO_CLASS_FOR_TASK

    assert choices.PEFT_TASK_TYPES == tuple(sorted(AUTO_CLASS_FOR_TASK))


def test_benchmark_page_matches_its_data() -> None:
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("cli_startup", root / "benchmarks" / "cli_startup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = json.loads((root / "docs" / "benchmarks-cli-startup.json").read_text(encoding="utf-8"))
    page = (root / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    section = page.split("<!-- cli_startup: generated", 1)[1].split("-->\n", 1)[1].split("<!-- /cli_startup -->", 1)[0]
    assert section == module.render(results)
