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
"""

from .classification import ClassificationResult, evaluate_classification
from .data import load_corpus, load_records
from .engine import EngineError, EngineSpec
from .generate import GenerationResult, Sample, SamplingOptions, generate_samples
from .metrics import ClassificationMetrics, ClassScores, classification_metrics, confusion_matrix
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
from .run import EvaluationRun, build_adapter, evaluate
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
    "clear_model_cache",
    "confusion_matrix",
    "corpus_perplexity",
    "detach_adapter",
    "evaluate",
    "evaluate_classification",
    "evaluate_perplexity",
    "evaluate_toxicity",
    "generate_samples",
    "get_scorer",
    "load_adapter_state",
    "load_base_model",
    "load_corpus",
    "load_records",
    "read_adapter",
    "register_scorer",
]
