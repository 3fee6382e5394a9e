"""Which operand formats compose together, in which space, and what format the result takes.

* LoHa and LoKr adapters are re-emitted as exact LoRA factors, but those factors are not what a
  LoRA trainer would have produced: adding them factor by factor (parameter space) is
  meaningless. They compose in delta space only.
* kohya files name modules ``lora_unet_down_blocks_0_…`` while diffusers files and PEFT folders
  use dotted paths; operands must use the same naming (convert one first), or their modules
  would silently fail to line up.
* The result is written in the first operand's format: a PEFT folder for PEFT operands, a
  single ``.safetensors`` file in kohya or diffusers keys for Stable-Diffusion LoRA files.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import CompositionError

DELTA_ONLY_FORMATS = {"peft-loha": "LoHa", "peft-lokr": "LoKr"}
FILE_FORMATS = ("kohya", "diffusers")
OUTPUT_FORMATS = ("peft", "kohya", "diffusers")


def module_naming(adapter: Any) -> str:
    """"kohya" for kohya files (flattened names), "dotted" for everything else."""
    return "kohya" if getattr(adapter, "format", "") == "kohya" else "dotted"


def check_composable(adapters: Mapping[str, Any], space: str) -> None:
    """Refuse parameter-space arithmetic on LoHa/LoKr and operands whose module names differ in style."""
    if space == "param":
        for name, adapter in adapters.items():
            variant = DELTA_ONLY_FORMATS.get(getattr(adapter, "format", ""))
            if variant:
                raise CompositionError(f"{variant} adapters compose in delta space only: add --space delta (operand {name!r} is {variant})")
    namings = {name: module_naming(a) for name, a in adapters.items()}
    if len(set(namings.values())) > 1:
        kohya = next(n for n, s in namings.items() if s == "kohya")
        dotted = next(n for n, s in namings.items() if s == "dotted")
        raise CompositionError(
            f"operand {kohya!r} is a kohya file and {dotted!r} uses diffusers/PEFT module names; "
            "convert one first (adaptermath convert FILE -o OUT --to diffusers, or --to kohya)"
        )
    _check_roots(adapters)


def _check_roots(adapters: Mapping[str, Any]) -> None:
    """A LoRA file names modules from the pipeline (``unet.…``), a PEFT folder from its model; refuse
    operands that then share no module and no root, which would only line up as zeros."""
    if not any(getattr(a, "format", "") in FILE_FORMATS for a in adapters.values()):
        return
    items = list(adapters.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1:]:
            if set(a.modules) & set(b.modules):
                continue
            roots_a = {m.split(".", 1)[0] for m in a.modules}
            roots_b = {m.split(".", 1)[0] for m in b.modules}
            if not roots_a & roots_b:
                raise CompositionError(
                    f"operands {name_a!r} ({sorted(roots_a)[0]}.…) and {name_b!r} ({sorted(roots_b)[0]}.…) share no module; "
                    "root the PEFT adapter's module paths first (adaptermath convert ADAPTER --to diffusers --component unet -o FILE)"
                )


def default_output_format(adapters: Mapping[str, Any]) -> str:
    """The first operand's format family: "kohya", "diffusers" or "peft"."""
    first = next(iter(adapters.values()))
    fmt = getattr(first, "format", "peft-lora")
    return fmt if fmt in FILE_FORMATS else "peft"


def resolve_output_format(adapters: Mapping[str, Any], requested: str | None) -> str:
    """``requested`` (checked) or the default; one-line error for an unknown name."""
    if requested is None:
        return default_output_format(adapters)
    if requested not in OUTPUT_FORMATS:
        raise CompositionError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, got {requested!r}")
    return requested


def uses_format_writer(adapters: Mapping[str, Any], requested: str | None) -> bool:
    """True when a composed result must be written by :mod:`.lora_file` rather than as a plain PEFT folder.

    That is when the output is a kohya/diffusers file, or when any operand is such a file (its
    module names and tensor keys then need mapping to PEFT's).
    """
    fmt = resolve_output_format(adapters, requested)
    return fmt != "peft" or any(getattr(a, "format", "") in FILE_FORMATS for a in adapters.values())
