"""Tiny random base models saved to folders, with a word-level tokenizer (no downloads).

Used by the init-adapter and training tests: a Llama causal LM and a BERT encoder with hidden
size 32, saved with ``save_pretrained`` so that they load like real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["[PAD]", "<s>", "</s>", "[UNK]", "[CLS]", "[SEP]"]
WORDS = (
    "the a movie film was is great good bad awful fine boring fun i liked hated it very not "
    "so and plot acting story review : . , ! positive negative cat dog sat on mat ran"
).split()
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import into a test module to run it single-threaded: tiny models gain nothing from threads,
    and on a shared 2-core machine OpenMP's busy-waiting makes 2-thread torch up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def word_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer: ``<s> text`` for ``causal``, ``[CLS] text [SEP]`` for ``encoder``."""
    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if kind == "causal":
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", VOCAB["<s>"])])
    else:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="<s>", eos_token="</s>",
        unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
    )  # fmt: skip


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama (hidden 32) and its tokenizer, saved in ``folder``."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=VOCAB["[PAD]"], bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"],
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # std 0.02 gives near-uniform predictions; larger weights give structure to adapt
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    word_tokenizer("causal").save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A 1-layer BERT encoder (hidden 32, no head: like all-MiniLM-L6-v2) and its tokenizer."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=64, pad_token_id=VOCAB["[PAD]"],
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    word_tokenizer("encoder").save_pretrained(folder)
    return folder
