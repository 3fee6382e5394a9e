"""Output-path safety: an output never equals, contains or lies inside an input or the base model.

Every command that writes a folder or file calls :func:`check_output_location` (the atomic
writers in :mod:`adaptermath.io.atomic` do it for their callers through ``protected=``). Paths are
compared after ``~`` expansion, ``..`` normalisation and symlink resolution, and also as spelled,
so no spelling of the same place slips through. The working directory, the home folder and the
file-system root (and anything containing them) are never an output: ``-o .`` replaced with
``--force`` would delete them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..errors import UnsafeOutputError


def _spellings(path: str | Path) -> set[Path]:
    """``path`` as spelled (absolute, normalised) and with every symlink resolved."""
    expanded = os.path.expanduser(str(path))
    return {Path(os.path.normpath(os.path.abspath(expanded))), Path(os.path.realpath(expanded))}


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output_location(output: str | Path, protected: Iterable[str | Path | None] = (), *,
                          what: str = "input", replaces: bool = True) -> None:
    """Refuse an ``output`` that equals, contains or lies inside any ``protected`` path.

    ``protected`` holds the inputs (adapter folders or files, ``hf://`` snapshots as local paths)
    and the base model; ``None`` and ``hf://`` names are skipped. Also refused: the working
    directory, the home folder, the root, or any folder containing them. Raises
    :class:`UnsafeOutputError` with a one-line message.

    ``replaces=False`` is for a folder that is written into, never replaced (a sweep's results):
    then only an output equal to or inside a protected path is refused.
    """
    outputs = _spellings(output)
    for out in outputs if replaces else ():
        if out == Path(out.anchor):
            raise UnsafeOutputError(f"output {output} is the root of the file system; choose a new folder")
    places = ((Path.cwd(), "the working directory"), (Path.home(), "your home folder")) if replaces else ()
    for place, label in places:
        for out in outputs:
            for spelled in _spellings(place):
                if _contains(out, spelled):
                    raise UnsafeOutputError(f"output {output} is or contains {label}; "
                                            "replacing it would delete it — choose a new folder such as ./merged")
    for item in protected:
        if item is None or str(item).startswith("hf://"):
            continue
        for out in outputs:
            for spelled in _spellings(item):
                if out == spelled:
                    raise UnsafeOutputError(f"output {output} is the {what} {item}; choose another output")
                if replaces and _contains(out, spelled):
                    raise UnsafeOutputError(f"output {output} contains the {what} {item}; "
                                            "replacing it would delete it — choose another output")
                if _contains(spelled, out):
                    raise UnsafeOutputError(f"output {output} lies inside the {what} {item}; choose another output")
