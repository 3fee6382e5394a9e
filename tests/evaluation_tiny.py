"""Tiny random models and a word-level tokenizer for the evaluation tests (no downloads).

Every builder seeds torch, so two calls give the same weights. Hidden sizes are 16-32: a forward
pass takes a few milliseconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run tiny models on one thread: on a busy 2-core machine, two threads that wait on each
    other make a sub-millisecond forward pass 10-20x slower. Import this into a test module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SPECIALS = ["[PAD]", "<s>", "</s>", "[UNK]", "[CLS]", "[SEP]"]
WORDS = (
    "the a movie film book was is great good bad awful terrible fine boring fun i liked hated it "
    "review sentiment : . , ! ? positive negative neutral very not really story acting plot and "
    "so too loved disliked ok meh wonderful dull topic answer question yes no maybe once upon time "
    "there lived king queen who"
).split()
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}


def word_tokenizer(kind: str = "causal") -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer; ``kind`` picks the special tokens it adds.

    causal: ``<s> text`` (like Llama); seq2seq: ``text </s>`` (like T5); encoder: ``[CLS] text [SEP]``.
    """
    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if kind == "causal":
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", VOCAB["<s>"])])
    elif kind == "seq2seq":
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", VOCAB["</s>"])])
    elif kind == "encoder":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])]
        )
    else:
        raise ValueError(kind)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def _spread(model: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Redraw every weight matrix with a larger std: the default init (0.02) makes every input give
    nearly the same prediction, and the tests need predictions that differ between inputs."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, std)
    return model


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=VOCAB["[PAD]"],
        bos_token_id=VOCAB["<s>"],
        eos_token_id=VOCAB["</s>"],
        tie_word_embeddings=False,
    )
    return _spread(LlamaForCausalLM(config)).eval()


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(VOCAB),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        pad_token_id=VOCAB["[PAD]"],
        eos_token_id=VOCAB["</s>"],
        decoder_start_token_id=VOCAB["[PAD]"],
    )
    return _spread(T5ForConditionalGeneration(config)).eval()


def tiny_bert(num_labels: int = 3, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=VOCAB["[PAD]"],
    )
    return _spread(BertForSequenceClassification(config)).eval()


def tiny_gpt2(seed: int = 0):
    """A GPT-2 (absolute position embeddings: left padding must come with position ids)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=VOCAB["<s>"],
        eos_token_id=VOCAB["</s>"],
        pad_token_id=VOCAB["[PAD]"],
    )
    return _spread(GPT2LMHeadModel(config)).eval()
