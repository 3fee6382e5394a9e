"""convert(): rewrite a LoRA adapter in another format (PEFT folder, kohya file, diffusers file).

Every conversion is exact: LoRA tensors are copied bit for bit (only their names change), α is
carried so that s = α/r is unchanged per module, and LoHa/LoKr adapters are re-emitted as their
exact LoRA factors (float32). What can fail is naming: kohya names flatten the module path, so
kohya → PEFT/diffusers derives dotted paths by the diffusers/CLIP naming rules and stops with a
one-line error when a name is unknown or ambiguous — pass ``module_names`` then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..adapter import Adapter, LoraModuleInfo, load_adapter
from ..errors import AdapterMathError
from ..io.output_safety import check_output_location
from .compat import OUTPUT_FORMATS, module_naming
from .config import lora_config
from .writers import (
    KohyaAlpha,
    adapter_factors,
    check_writable,
    effective_alpha,
    kohya_alpha_of,
    kohya_text_encoder_prefix,
    output_metadata,
    plan_outputs,
    read_record,
    write_lora_file,
    write_peft_folder,
)


@dataclass
class ConversionResult:
    """What :func:`convert` wrote."""

    input: str
    output: str
    from_format: str
    to_format: str
    modules: int
    renamed: dict[str, str] = field(default_factory=dict)  # input name -> output name, where they differ
    metadata_added: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "output": self.output, "from": self.from_format, "to": self.to_format,
            "modules": self.modules, "renamed": len(self.renamed), "metadata_added": self.metadata_added,
            "notes": self.notes,
        }


def read_module_names(path: str | Path) -> list[str]:
    """Module paths from a text file, one per line (``#`` comments and blank lines ignored)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AdapterMathError(f"{path}: cannot read module names ({exc.strerror})") from None
    names = [line.split("#", 1)[0].strip() for line in lines]
    names = [n for n in names if n]
    if not names:
        raise AdapterMathError(f"{path}: no module names in the file")
    return names


def convert(input: str | Path | Adapter, output: str | Path, *, to: str, force: bool = False,
            module_names: Iterable[str] | None = None, component: str | None = None,
            allow_pickle: bool = False) -> ConversionResult:
    """Write the LoRA adapter ``input`` to ``output`` in format ``to`` ("peft" | "kohya" | "diffusers").

    ``peft`` writes an adapter folder; ``kohya`` and ``diffusers`` write one ``.safetensors`` file.
    ``module_names`` (model module paths) makes kohya → dotted naming exact; ``component``
    ("unet", "text_encoder", "text_encoder_2") roots the bare module paths of a PEFT adapter.
    The output is written atomically and replaces an existing one only with ``force``.
    """
    if to not in OUTPUT_FORMATS:
        raise AdapterMathError(f"--to must be one of {', '.join(OUTPUT_FORMATS)}, got {to!r}")
    adapter = input if isinstance(input, Adapter) else load_adapter(input, allow_pickle=allow_pickle)
    output = Path(output).expanduser()
    check_output_location(output, [adapter.path, adapter.weights_file])
    if to != "peft" and output.suffix != ".safetensors":
        raise AdapterMathError(f"a {to} file is one .safetensors file; name the output *.safetensors (got {output.name})")
    what = adapter.source or str(adapter.path)
    check_writable(adapter.kind, adapter.config, adapter.extra_keys, to, what)
    infos = {name: info for name, info in adapter.modules.items() if isinstance(info, LoraModuleInfo)}
    naming = module_naming(adapter)
    metadata = adapter.metadata()
    record = read_record(metadata)
    plan = plan_outputs(infos, naming, to, source_format=adapter.format,
                        module_names=list(module_names) if module_names is not None else None,
                        component=component, record=record)
    ranks = {name: (info.rank, effective_alpha(info)) for name, info in infos.items()}
    kohya_alpha: KohyaAlpha | None = None
    te_prefix = None
    if adapter.format == "kohya":
        kohya_alpha = kohya_alpha_of(adapter)
        te_prefix = kohya_text_encoder_prefix(infos)
    elif to == "kohya":
        if record and record.get("from") == "kohya":  # back to kohya: α tensors as the original file had them
            kohya_alpha = KohyaAlpha.from_record(record.get("alpha"), adapter.dtype).fitted(plan, ranks)
        else:
            kohya_alpha = KohyaAlpha(adapter.dtype)
    meta = output_metadata(metadata, adapter.format, to, plan, ranks, kohya_alpha=kohya_alpha, te_prefix=te_prefix)
    names = [m.source_name for m in plan]
    if to == "peft":
        same_names = all(m.name == m.source_name for m in plan)
        if same_names and adapter.format.startswith("peft-"):
            config = dict(adapter.config)
        else:
            config = lora_config({m.name: ranks[m.source_name] for m in plan}, {"base_model_name_or_path": adapter.base_model})
        write_peft_folder(output, plan, adapter_factors(adapter, names), force=force, config=lambda: config, metadata=meta,
                          extras=((k, adapter.extra_tensor(k)) for k in adapter.extra_keys), extra_keys=adapter.extra_keys,
                          protected=[adapter.path, adapter.weights_file])
    else:
        write_lora_file(output, plan, adapter_factors(adapter, names), force=force, metadata=meta,
                        kohya_alpha=kohya_alpha if to == "kohya" else None, ranks=lambda: ranks,
                        protected=[adapter.path, adapter.weights_file])
    result = ConversionResult(
        input=what, output=str(output), from_format=adapter.format, to_format=to, modules=len(plan),
        renamed={m.source_name: m.name for m in plan if m.name != m.source_name},
        metadata_added=sorted(set(meta) - set(metadata)),
    )
    if adapter.format in ("peft-loha", "peft-lokr"):
        result.notes.append(f"{adapter.format[5:]} modules re-emitted as exact LoRA factors (float32)")
    return result

