"""Atomic output folders: build in a temporary sibling, then rename into place."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import OutputExistsError


def check_output_path(output: Path, force: bool) -> None:
    """Refuse an existing output unless ``force``; refuse a file where a folder must go."""
    if output.exists() or output.is_symlink():
        if not force:
            raise OutputExistsError(f"{output} already exists; pass --force (force=True) to replace it")
        if not output.is_dir():
            raise OutputExistsError(f"{output} exists and is not a folder; remove it first")


@contextmanager
def atomic_output_dir(output: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``output``; on success it replaces ``output`` in one rename.

    An existing ``output`` is replaced only with ``force=True`` (it is moved aside, the new folder
    renamed in, then the old one deleted). On any error the temporary folder is removed and the
    existing output, if any, is untouched.
    """
    output = Path(output)
    check_output_path(output, force)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        check_output_path(output, force)
        if output.exists():
            old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(output, old)
            os.replace(tmp, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_output_file(output: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary file path next to ``output``; on success it replaces ``output`` (``os.replace``).

    An existing ``output`` is replaced only with ``force=True`` and never when it is a folder. On
    any error the temporary file is removed and the existing output, if any, is untouched.
    """
    output = Path(output)
    if output.exists() or output.is_symlink():
        if not force:
            raise OutputExistsError(f"{output} already exists; pass --force (force=True) to replace it")
        if output.is_dir():
            raise OutputExistsError(f"{output} exists and is a folder; remove it first or choose a file name")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp}")
        if (output.exists() or output.is_symlink()) and not force:
            raise OutputExistsError(f"{output} already exists; pass --force (force=True) to replace it")
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
