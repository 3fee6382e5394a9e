"""kohya-ss / A1111 Stable-Diffusion LoRA files: key layout and module naming.

A kohya file is one ``.safetensors`` with, per module, three tensors::

    lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight   A  (r, in) or (r, in, kh, kw)
    lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight     B  (out, r) or (out, r, 1, 1)
    lora_unet_down_blocks_0_attentions_0_proj_in.alpha              α  (a scalar; absent means α = r)

and ΔW = (α/r)·B·A (convolutions flattened to in·kh·kw). The module name is the diffusers
module path with its component replaced by a prefix and every "." by "_":

    unet.<path>             ↔  lora_unet_<path with _>
    text_encoder.<path>     ↔  lora_te_<…>   (lora_te1_<…> in SDXL files)
    text_encoder_2.<path>   ↔  lora_te2_<…>

Flattening loses where the dots were, so the reverse needs either the model's module names
(exact) or the naming rules of the diffusers UNet and the CLIP text encoder: the remainder is
split into known module names (``down_blocks``, ``proj_in``, ``to_out``, ``self_attn``…) and
indices, and a name is accepted only when exactly one split exists. Files in the original
Stability naming (``input_blocks_4_1_…``, most SDXL kohya files) are refused for conversion:
mapping them needs the UNet's configuration.
"""

from __future__ import annotations

import re
from typing import Iterable

from ..errors import AdapterMathError

DOWN_SUFFIX = "lora_down.weight"
UP_SUFFIX = "lora_up.weight"
ALPHA_SUFFIX = "alpha"

# kohya prefix -> diffusers component
PREFIX_TO_COMPONENT = {"lora_unet": "unet", "lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}
# Tensor-name fragments of kohya-style files this reader does not handle, with what they are.
UNSUPPORTED_SUFFIXES = {
    "lora_mid.weight": "LoCon with a Tucker core (lora_mid)",
    "dora_scale": "DoRA (dora_scale)",
    "hada_w1_a": "LyCORIS LoHa", "hada_w1_b": "LyCORIS LoHa", "hada_w2_a": "LyCORIS LoHa", "hada_w2_b": "LyCORIS LoHa",
    "hada_t1": "LyCORIS LoHa", "hada_t2": "LyCORIS LoHa",
    "lokr_w1": "LyCORIS LoKr", "lokr_w2": "LyCORIS LoKr", "lokr_w1_a": "LyCORIS LoKr", "lokr_w1_b": "LyCORIS LoKr",
    "lokr_w2_a": "LyCORIS LoKr", "lokr_w2_b": "LyCORIS LoKr", "lokr_t2": "LyCORIS LoKr",
    "diff": "a full weight difference (diff)", "diff_b": "a bias difference (diff_b)",
    "lora_up.bias": "LoRA biases", "lora_down.bias": "LoRA biases",
}

# Module names (with underscores) of the diffusers UNet2DConditionModel and the CLIP text
# encoders; a kohya remainder is split into these and integer indices.
UNET_NAMES = frozenset("""
    down_blocks up_blocks mid_block attentions resnets transformer_blocks attn1 attn2 to_q to_k to_v
    to_out ff net proj proj_in proj_out conv1 conv2 conv_shortcut time_emb_proj downsamplers
    upsamplers conv time_embedding linear_1 linear_2 conv_in conv_out conv_norm_out add_embedding
    norm norm1 norm2 norm3 encoder_hid_proj class_embedding add_k_proj add_v_proj add_q_proj
""".split())
TEXT_ENCODER_NAMES = frozenset("""
    text_model encoder layers self_attn q_proj k_proj v_proj out_proj mlp fc1 fc2 embeddings
    token_embedding position_embedding final_layer_norm layer_norm1 layer_norm2 text_projection
""".split())
SGM_MARKERS = ("input_blocks", "middle_block", "output_blocks")


class KohyaNameError(AdapterMathError):
    """A kohya module name cannot be mapped to a dotted module path (or back)."""


def split_prefix(kohya_name: str) -> tuple[str, str]:
    """("lora_unet", rest) for ``lora_unet_rest``; one-line error for an unknown prefix."""
    for prefix in sorted(PREFIX_TO_COMPONENT, key=len, reverse=True):
        if kohya_name.startswith(prefix + "_"):
            return prefix, kohya_name[len(prefix) + 1:]
    raise KohyaNameError(f"kohya module {kohya_name}: unknown prefix (expected lora_unet_, lora_te_, lora_te1_ or lora_te2_)")


def flatten(path: str) -> str:
    """A dotted module path with every "." replaced by "_" (how kohya names modules)."""
    return path.replace(".", "_")


def _splits(rest: str, vocabulary: frozenset[str], limit: int = 2) -> list[list[str]]:
    """Every way (up to ``limit``) to cut ``rest`` at underscores into vocabulary words and integers."""
    atoms = rest.split("_")
    results: list[list[str]] = []

    def walk(start: int, parts: list[str]) -> None:
        if len(results) >= limit:
            return
        if start == len(atoms):
            results.append(list(parts))
            return
        for end in range(start + 1, len(atoms) + 1):
            word = "_".join(atoms[start:end])
            if (end == start + 1 and word.isdigit()) or word in vocabulary:
                parts.append(word)
                walk(end, parts)
                parts.pop()

    walk(0, [])
    return results


def kohya_to_dotted(kohya_name: str, module_names: Iterable[str] | None = None) -> str:
    """The dotted module path (``unet.down_blocks.0…``) of a kohya module name.

    With ``module_names`` (the model's module paths, with or without the component prefix) the
    match is exact; otherwise the diffusers/CLIP naming rules decide, and an unknown or
    ambiguous name raises :class:`KohyaNameError` with one line that says what to do.
    """
    prefix, rest = split_prefix(kohya_name)
    component = PREFIX_TO_COMPONENT[prefix]
    if module_names is not None:
        matches = set()
        for path in module_names:
            bare = path[len(component) + 1:] if path.startswith(component + ".") else path
            if "." in path and path.split(".", 1)[0] in PREFIX_TO_COMPONENT.values() and not path.startswith(component + "."):
                continue  # a prefixed name of another component
            if flatten(bare) == rest:
                matches.add(bare)
        if len(matches) == 1:
            return f"{component}.{matches.pop()}"
        if len(matches) > 1:
            raise KohyaNameError(f"kohya module {kohya_name} matches several module names: {', '.join(sorted(matches))}")
        raise KohyaNameError(f"kohya module {kohya_name} matches none of the given module names")
    if rest.startswith(SGM_MARKERS):
        raise KohyaNameError(
            f"kohya module {kohya_name} uses the original Stability UNet naming (input_blocks/middle_block/output_blocks), "
            "which maps to diffusers names only with the UNet's configuration; keep this file in kohya format"
        )
    vocabulary = UNET_NAMES if component == "unet" else TEXT_ENCODER_NAMES
    splits = _splits(rest, vocabulary)
    if len(splits) == 1:
        return f"{component}." + ".".join(splits[0])
    if not splits:
        raise KohyaNameError(
            f"cannot derive the module path of kohya module {kohya_name}: {rest!r} is not made of known "
            f"{'diffusers UNet' if component == 'unet' else 'CLIP text encoder'} module names; "
            "pass the model's module names (module_names=..., --module-names FILE)"
        )
    raise KohyaNameError(
        f"kohya module {kohya_name} splits into several module paths ({'.'.join(splits[0])}, {'.'.join(splits[1])}); "
        "pass the model's module names (module_names=..., --module-names FILE)"
    )


def dotted_to_kohya(path: str, *, text_encoder_prefix: str = "lora_te", component: str | None = None) -> str:
    """The kohya name of a dotted module path rooted at ``unet``/``text_encoder``/``text_encoder_2``.

    ``text_encoder_prefix`` is "lora_te" (SD 1.x/2.x) or "lora_te1" (SDXL). A path without a
    component prefix (a PEFT adapter trained on the bare UNet) needs ``component``.
    """
    head, _, tail = path.partition(".")
    if head in ("unet", "text_encoder", "text_encoder_2") and tail:
        component, rest = head, tail
    elif component is not None:
        rest = path
    else:
        raise KohyaNameError(
            f"module {path} is not rooted at unet., text_encoder. or text_encoder_2.; "
            "say which model it belongs to (component='unet', --component unet)"
        )
    if component == "unet":
        prefix = "lora_unet"
    elif component == "text_encoder":
        prefix = text_encoder_prefix
    elif component == "text_encoder_2":
        prefix = "lora_te2"
    else:
        raise KohyaNameError(f"component must be unet, text_encoder or text_encoder_2, got {component!r}")
    return f"{prefix}_{flatten(rest)}"


def is_kohya_key(key: str) -> bool:
    """True for a tensor key of kohya style (``lora_unet_…``/``lora_te…_…`` with kohya suffixes)."""
    return re.match(r"^lora_(unet|te\d?|transformer)_", key) is not None and "." in key
