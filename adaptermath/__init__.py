"""adaptermath: arithmetic on parameter-efficient fine-tuning modules (LoRA, (IA)^3).

    >>> import adaptermath as am
    >>> merged = am.compose("0.5*sst2 + 0.5*mnli", {"sst2": "./sst2", "mnli": "./mnli"})
    >>> merged.save("./merged")            # a PEFT adapter folder, with adaptermath.json provenance

The public surface: :func:`load_adapter`, :func:`parse_expression`, :func:`compose`,
:func:`negate`, :func:`compare`, :func:`inspect_adapter`, :func:`convert`, :func:`detect_format`,
:func:`evaluate` (scores; evaluators in :mod:`adaptermath.evaluation`),
:func:`sweep`, :func:`load_recipe` / :func:`run_recipe` (YAML recipes),
:func:`bake` (an expression folded into a base model) / :func:`extract` (a LoRA from a fine-tuned model)
(other formats: :mod:`adaptermath.formats`).
"""

__version__ = "0.1.0"

from .adapter import Adapter, load_adapter  # noqa: E402
from .bake import bake  # noqa: E402
from .comparison import compare  # noqa: E402
from .compose import ComposedAdapter, compose  # noqa: E402
from .errors import AdapterMathError  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .expression import LinearCombination, parse_expression  # noqa: E402
from .extract import extract  # noqa: E402
from .formats import convert, detect_format  # noqa: E402
from .init_adapter import init_adapter  # noqa: E402
from .inspection import inspect_adapter  # noqa: E402
from .modules import Ia3Module, LoraModule  # noqa: E402
from .negation import negate  # noqa: E402
from .recipe import load_recipe, run_recipe  # noqa: E402
from .sweep import sweep  # noqa: E402

__all__ = [
    "Adapter",
    "AdapterMathError",
    "ComposedAdapter",
    "Ia3Module",
    "LinearCombination",
    "LoraModule",
    "__version__",
    "bake",
    "compare",
    "compose",
    "convert",
    "detect_format",
    "evaluate",
    "extract",
    "init_adapter",
    "inspect_adapter",
    "load_adapter",
    "load_recipe",
    "negate",
    "parse_expression",
    "run_recipe",
    "sweep",
]
