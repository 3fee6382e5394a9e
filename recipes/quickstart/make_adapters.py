"""Make a tiny base model and a few PEFT adapters to try adaptermath on, offline, in seconds.

    python recipes/quickstart/make_adapters.py ./demo

writes ./demo/base (a 2-layer Llama-shaped model with random weights and a tiny word-level
tokenizer), from ONE shared LoRA initialisation three "trained" LoRA adapters (./demo/sst2,
./demo/mnli, ./demo/toxic), an (IA)^3 adapter (./demo/ia3), and a few labelled reviews
(./demo/reviews.jsonl) to try ``adaptermath eval`` and ``adaptermath sweep`` on. "Training" moves B
(and l) a lot and A a little, as real training does. The numbers it gives are those of random
weights: the files are there to try the commands, not to measure anything.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

VOCAB_SIZE = 128
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0-3; LlamaConfig's bos/eos ids are 1 and 2
WORDS = """
the a an and or but is was are were be it this that these i you we they he she my your
movie film book story plot acting music cast ending scene review sentiment text label
good great fun fine nice wonderful excellent amazing lovely brilliant best liked loved enjoyed
bad boring awful dull terrible poor worst hated slow weak silly mess disappointing
positive negative neutral yes no not very really quite too so more less
of to in on at for with from by as about than all some one two
. , : ; ! ? ' " - ( )
""".split()
REVIEWS = [
    ("a wonderful film , i loved it", "positive"),
    ("the acting was great and the story was fun", "positive"),
    ("really good music and a lovely ending", "positive"),
    ("the best movie , brilliant cast", "positive"),
    ("i enjoyed this book very much", "positive"),
    ("an excellent plot , amazing scene", "positive"),
    ("quite nice , i liked the ending", "positive"),
    ("great fun from the cast", "positive"),
    ("a boring film , i hated it", "negative"),
    ("the acting was awful and the story was dull", "negative"),
    ("really bad music and a weak ending", "negative"),
    ("the worst movie , a silly mess", "negative"),
    ("i did not like this slow book", "negative"),
    ("a terrible plot , poor scene", "negative"),
    ("too long and disappointing", "negative"),
    ("dull from the cast", "negative"),
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over :data:`WORDS` (lower-cased; unknown words map to ``<unk>``)."""
    vocab = {token: index for index, token in enumerate(dict.fromkeys(SPECIAL + WORDS))}
    assert len(vocab) <= VOCAB_SIZE, len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def make(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=3)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    make_tokenizer().save_pretrained(root / "base")
    print(f"wrote {root / 'base'} (model and tokenizer)")
    adapters = {
        "sst2": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "mnli": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "toxic": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        "ia3": IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
    }
    for seed, (name, peft_config) in enumerate(adapters.items(), start=1):
        model = LlamaForCausalLM.from_pretrained(root / "base")
        torch.manual_seed(0)  # the shared initialisation
        peft_model = get_peft_model(model, peft_config)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if param.requires_grad:
                    drift = 0.02 if "lora_A" in param_name else 0.3
                    param.add_(drift * torch.randn(param.shape, generator=generator))
        peft_model.save_pretrained(root / name)
        print(f"wrote {root / name}")
    with open(root / "reviews.jsonl", "w", encoding="utf-8") as out:
        for text, label in REVIEWS:
            out.write(json.dumps({"text": text, "label": label}) + "\n")
    print(f"wrote {root / 'reviews.jsonl'} ({len(REVIEWS)} labelled reviews)")


def quiet() -> None:
    """No loading bars or library warnings in a demo's output (errors still show)."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


if __name__ == "__main__":
    quiet()
    make(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"))
