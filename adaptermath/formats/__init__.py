"""Module formats beyond PEFT LoRA and (IA)^3, and conversions between them (docs/formats.md).

* PEFT **LoHa** and **LoKr** folders load through :func:`adaptermath.load_adapter` and are
  re-emitted exactly as LoRA (:mod:`.loha`, :mod:`.lokr`, :mod:`.reemit`); they compose in delta space.
* **Stable-Diffusion LoRA files** in kohya or diffusers keys load the same way from a single
  ``.safetensors`` (:mod:`.lora_file`, :mod:`.kohya`); composing them writes the first operand's
  format back (:mod:`.writers`), and :func:`convert` rewrites a LoRA in another format.
* **Textual-inversion embeddings** have their own small API (:mod:`.textual_inversion`).
* :func:`detect_format` says what a path is.

The readers here (:mod:`.kohya`, :mod:`.loha`, :mod:`.lokr`, :mod:`.lora_file`, :mod:`.reemit`,
:mod:`.textual_inversion`, :mod:`.detect`) sit in a lower layer than the writers (:mod:`.compat`,
:mod:`.writers`, :mod:`.peft_writer`, :mod:`.convert`; docs/architecture.md), so this package's
names are imported on first use: reading one format never loads the writers.
"""

from ..facade import make_lazy

# Public names -> the module (in this package) that defines them.
_LAZY = {
    "ConversionResult": "convert",
    "convert": "convert",
    "read_module_names": "convert",
    "FormatInfo": "detect",
    "describe_format": "detect",
    "detect_format": "detect",
    "loha_to_lora": "loha",
    "lokr_to_lora": "lokr",
    "Embedding": "textual_inversion",
    "compose_embeddings": "textual_inversion",
    "load_embedding": "textual_inversion",
    "save_embedding": "textual_inversion",
}

__all__ = sorted(_LAZY)

make_lazy(__name__)
