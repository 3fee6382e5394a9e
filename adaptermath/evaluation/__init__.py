"""Evaluators: score an adapter (or a composition) on a live base model.

Every evaluator takes a live model -- a transformers model or a ``PeftModel`` -- its tokenizer,
the data and options, and returns a result dataclass with ``.to_dict()``. None of them loads or
rebuilds the model, so a sweep can swap adapter tensors in place (:func:`attach_adapter`) and call
them again::

    from adaptermath.evaluation import load_base_model, attach_adapter, evaluate_classification

    base = load_base_model("HuggingFaceTB/SmolLM2-135M-Instruct")       # once per process
    model = attach_adapter(base.model, "./sst2-lora")
    result = evaluate_classification(model, base.tokenizer, "dev.jsonl",
                                     labels="negative,positive",
                                     template="Review: {text}\\nSentiment:")
    print(result.accuracy, result.to_dict()["confusion_matrix"])
    print(metric_intervals(result.example_set()))   # every metric with its bootstrap interval

Per-example records, intervals and paired comparisons: :mod:`.examples`, :mod:`.evidence` and the
pure :mod:`.statistics` (docs/evaluation.md, "Evidence").
"""

from .classification import ClassificationResult, evaluate_classification
from .data import load_corpus, load_records
from .engine import EngineError, EngineSpec
from .evidence import Comparison, compare_examples, diff, metric_intervals
from .examples import ExampleSet, load_examples, write_examples
from .generate import GenerationResult, Sample, SamplingOptions, generate_samples
from .metrics import ClassificationMetrics, ClassScores, classification_metrics, confusion_matrix, log_loss, roc_auc
from .models import (
    BaseModel,
    ModelLoadError,
    attach_adapter,
    clear_model_cache,
    detach_adapter,
    load_adapter_state,
    load_base_model,
    read_adapter,
)
from .perplexity import PerplexityResult, corpus_perplexity, evaluate_perplexity
from .run import EvaluationRun, build_adapter, evaluate, result_intervals
from .toxicity import (
    ScorerError,
    ToxicityResult,
    available_scorers,
    evaluate_toxicity,
    get_scorer,
    register_scorer,
)

__all__ = [
    "BaseModel",
    "Comparison",
    "ExampleSet",
    "ClassScores",
    "ClassificationMetrics",
    "ClassificationResult",
    "EngineError",
    "EngineSpec",
    "EvaluationRun",
    "GenerationResult",
    "ModelLoadError",
    "PerplexityResult",
    "Sample",
    "SamplingOptions",
    "ScorerError",
    "ToxicityResult",
    "attach_adapter",
    "build_adapter",
    "available_scorers",
    "classification_metrics",
    "roc_auc",
    "clear_model_cache",
    "compare_examples",
    "confusion_matrix",
    "corpus_perplexity",
    "detach_adapter",
    "diff",
    "evaluate",
    "evaluate_classification",
    "evaluate_perplexity",
    "evaluate_toxicity",
    "generate_samples",
    "get_scorer",
    "load_adapter_state",
    "load_base_model",
    "load_corpus",
    "load_examples",
    "load_records",
    "log_loss",
    "metric_intervals",
    "read_adapter",
    "register_scorer",
    "result_intervals",
    "write_examples",
]
