"""What the evaluating commands (eval, sweep, run) share: the evaluator options each task takes,
shell escapes in templates, and quiet transformers logging."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import click

from adaptermath.errors import AdapterMathError

F = TypeVar("F", bound=Callable[..., Any])


def unescape(text: str | None) -> str | None:
    r"""Turn the escapes a shell leaves alone (``\n``, ``\t``, ``\\``) into the characters."""
    if text is None:
        return None
    replacements = {"n": "\n", "t": "\t", "\\": "\\"}
    out = []
    index = 0
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text) and text[index + 1] in replacements:
            out.append(replacements[text[index + 1]])
            index += 2
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def quiet_transformers() -> None:
    """Hide transformers' per-file loading bars and info logs (errors still show)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def task_options(task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The evaluator keyword arguments for ``task``; a task-specific option given to another task is an error."""
    per_task = {
        "classification": ("labels", "template", "label_field", "label_prefix", "length_normalize", "max_length"),
        "perplexity": ("stride", "max_length"),
        "toxicity": ("template", "num_samples", "max_new_tokens", "seed", "do_sample", "temperature", "top_k",
                     "top_p", "scorer", "threshold", "score_prompt"),
        "generate": ("template", "num_samples", "max_new_tokens", "seed", "do_sample", "temperature", "top_k",
                     "top_p"),
    }
    flags = {"labels": "--labels", "template": "--template", "label_field": "--label-field",
             "label_prefix": "--label-prefix", "length_normalize": "--length-normalize",
             "max_length": "--max-length", "stride": "--stride", "num_samples": "--num-samples",
             "max_new_tokens": "--max-new-tokens", "seed": "--seed", "do_sample": "--greedy",
             "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "scorer": "--scorer",
             "threshold": "--threshold", "score_prompt": "--score-prompt"}
    options: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name not in per_task[task]:
            raise AdapterMathError(f"{flags[name]} does not apply to --task {task}")
        options[name] = value
    return options


def evaluator_flags(func: F) -> F:
    """The data and evaluator options of sweep and search (each adds its own sampling-seed option)."""
    decorators = [
        click.option("--limit", type=click.IntRange(min=1), default=None, help="Use the first N records of each split."),
        click.option("--text-field", default="text", show_default=True, help="Field holding the text or prompt."),
        click.option("--label-field", default=None, help="Field holding the gold label.  [default: label]"),
        click.option("--labels", default=None, metavar="A,B,...", help="Classification: the label verbalisations."),
        click.option("--template", default=None, help="Prompt template with {text}."),
        click.option("--max-length", type=click.IntRange(min=2), default=None, help="Perplexity window / classification truncation."),
        click.option("--stride", type=click.IntRange(min=1), default=None, help="Perplexity: sliding-window stride."),
        click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Toxicity: continuations per prompt."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Toxicity: tokens to generate."),
        click.option("--scorer", default=None, help="Toxicity scorer."),
        click.option("--threshold", type=click.FloatRange(min=0, max=1), default=None, help="Toxicity threshold."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func
