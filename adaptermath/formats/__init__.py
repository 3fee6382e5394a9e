"""Module formats beyond PEFT LoRA and (IA)^3, and conversions between them (docs/formats.md).

* PEFT **LoHa** and **LoKr** folders load through :func:`adaptermath.load_adapter` and are
  re-emitted exactly as LoRA (:mod:`.loha`, :mod:`.lokr`, :mod:`.reemit`); they compose in delta space.
* **Stable-Diffusion LoRA files** in kohya or diffusers keys load the same way from a single
  ``.safetensors`` (:mod:`.lora_file`, :mod:`.kohya`); composing them writes the first operand's
  format back (:mod:`.writers`), and :func:`convert` rewrites a LoRA in another format.
* **Textual-inversion embeddings** have their own small API (:mod:`.textual_inversion`).
* :func:`detect_format` says what a path is.
"""

from .convert import ConversionResult, convert, read_module_names
from .detect import FormatInfo, describe_format, detect_format
from .loha import loha_to_lora
from .lokr import lokr_to_lora
from .textual_inversion import Embedding, compose_embeddings, load_embedding, save_embedding

__all__ = [
    "ConversionResult",
    "Embedding",
    "FormatInfo",
    "compose_embeddings",
    "convert",
    "describe_format",
    "detect_format",
    "load_embedding",
    "loha_to_lora",
    "lokr_to_lora",
    "read_module_names",
    "save_embedding",
]
