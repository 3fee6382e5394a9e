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
