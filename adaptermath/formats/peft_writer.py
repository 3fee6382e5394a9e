"""Writing a composed adapter as a PEFT folder: ``adapter_model.safetensors`` streamed module by
module, then ``adapter_config.json`` and the provenance record (:mod:`adaptermath.provenance`).

:meth:`adaptermath.compose.ComposedAdapter.save` hands its result here (or, for kohya/diffusers
output, to :func:`adaptermath.formats.writers.save_composed_file`). The inputs' sha256 for the
provenance is computed on another core while the tensors stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import CompositionError
from ..io import SafetensorsStreamWriter, atomic_output_dir
from ..provenance import PROVENANCE_NAME, write_json


def write_composed_folder(composed: Any, output: str | Path, *, force: bool = False,
                          progress: Callable[[int, int, str], None] | None = None,
                          recipe: Mapping[str, Any] | None = None) -> Path:
    """Write a :class:`~adaptermath.compose.ComposedAdapter` as a PEFT adapter folder, atomically:
    config, safetensors (streamed), provenance."""
    output = Path(output).expanduser()
    if output.suffix.lower() in (".safetensors", ".bin", ".pt", ".ckpt"):
        raise CompositionError(
            f"output {output} names a file, but the result is a PEFT adapter folder; give a folder name, "
            "or --format kohya/diffusers to write a single LoRA file")
    protected = [adapter.path for adapter in composed.adapters.values()]
    with atomic_output_dir(output, force=force, protected=protected) as tmp, ThreadPoolExecutor(max_workers=1) as hasher:
        # The inputs' sha256 (for the provenance) is computed on another core while tensors stream.
        hashes = [hasher.submit(adapter.file_hashes) for adapter in composed.adapters.values()]
        keys = composed.tensor_keys()
        with _torch_threads(1 if composed.streams_small_tensors else None), \
                SafetensorsStreamWriter(tmp / "adapter_model.safetensors", keys, metadata={"format": "pt"}) as writer:
            for key, tensor in composed.iter_tensors(progress):
                writer.add(key, tensor)
        for done in hashes:
            done.result()
        write_json(tmp / "adapter_config.json", composed.config)
        write_json(tmp / PROVENANCE_NAME, composed.provenance(recipe, output))
    return output


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run a block with ``count`` torch threads (None: leave the setting alone), then restore it."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
