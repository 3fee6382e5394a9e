"""The names the CLI offers as choices, without importing torch (so ``--help`` starts fast).

Each tuple mirrors a registry that needs torch or transformers to build; tests/test_cli_startup.py
checks that they agree: :data:`METHODS` = ``adaptermath.methods.available_methods()``,
:data:`EVAL_TASKS` = ``adaptermath.evaluation.run.TASKS``, :data:`SWEEP_TASKS` =
``adaptermath.sweep.DEFAULT_METRICS``, :data:`DTYPES` = ``adaptermath.compose.DTYPES`` plus ``auto``.
"""

from __future__ import annotations

METHODS: tuple[str, ...] = ("linear", "dare", "dare_ties", "ext_sub", "magnitude_prune", "ties")
EVAL_TASKS: tuple[str, ...] = ("classification", "perplexity", "toxicity", "generate")
SWEEP_TASKS: tuple[str, ...] = ("classification", "perplexity", "toxicity")
# The metrics where lower is better: a sweep's --metric and a search's --objective without a direction are
# minimised (adaptermath.sweep, adaptermath.search); every other metric is maximised.
LOWER_IS_BETTER: frozenset[str] = frozenset({"log_loss", "perplexity", "mean_nll", "mean_score",
                                             "share_above_threshold", "share_above_0.5"})


def metric_direction(metric: str) -> str:
    """A metric's natural direction: ``min`` for one in :data:`LOWER_IS_BETTER` (log_loss,
    perplexity, mean_nll, the toxicity metrics), ``max`` for every other (accuracy, macro_f1, ...)."""
    return "min" if metric in LOWER_IS_BETTER else "max"


# The numbers each sweep task reports that a sweep or search can choose by (EVALUATION_METRICS of the recipe).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "log_loss"),
    "perplexity": ("perplexity", "mean_nll"),
    "toxicity": ("mean_score", "share_above_threshold", "share_above_0.5"),
}
# How a sweep chooses its point (adaptermath.sweep.select_point).
SELECTION_RULES: tuple[str, ...] = ("best", "one-se")
# Every command's --dtype takes these; "auto" keeps the source's dtype (the inputs', or the checkpoint's).
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16")
MODEL_TYPES: tuple[str, ...] = ("auto", "causal-lm", "seq2seq", "seq-cls")
# init --task-type: the keys of adaptermath.modelcard.AUTO_CLASS_FOR_TASK, sorted.
PEFT_TASK_TYPES: tuple[str, ...] = ("CAUSAL_LM", "FEATURE_EXTRACTION", "QUESTION_ANS", "SEQ_2_SEQ_LM", "SEQ_CLS",
                                    "TOKEN_CLS")
# Optuna samplers of `adaptermath search` (adaptermath.search).
SAMPLERS: tuple[str, ...] = ("tpe", "cmaes", "gp", "random", "nsga2")
# Where evaluations run (adaptermath.evaluation.engine) and the vLLM client's defaults.
ENGINES: tuple[str, ...] = ("transformers", "vllm")
ENGINE_DEFAULT_CONCURRENCY = 8
ENGINE_DEFAULT_TIMEOUT_S = 600.0
ENGINE_DEFAULT_START_TIMEOUT_S = 900.0
