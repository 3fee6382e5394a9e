"""Paths written in a recipe, as the running process opens them and as an output records them."""

from __future__ import annotations

import os
from pathlib import Path


def _is_explicit_path(value: str) -> bool:
    return value.startswith(("./", "../", "/", "~")) or value in (".", "..") or os.path.isabs(value)


def _cwd_relative(path: str) -> str:
    """``path`` made relative to the working directory (absolute when that is impossible)."""
    absolute = os.path.abspath(path)
    try:
        return os.path.relpath(absolute)
    except ValueError:  # another drive (Windows)
        return absolute


def resolve_path(value: str, folder: str | Path) -> str:
    """A path written in a recipe, as the running process opens it: absolute ones as written
    (with ``~`` expanded), relative ones joined to ``folder`` and made relative to the working directory."""
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return expanded
    return _cwd_relative(os.path.join(folder, expanded))


def resolve_input(ref: str, folder: str | Path) -> str:
    """An input ref: ``hf://`` refs and absolute paths as written, relative paths via :func:`resolve_path`."""
    if ref.startswith("hf://") or os.path.isabs(os.path.expanduser(ref)):
        return ref
    return resolve_path(ref, folder)


def resolve_resource(value: str, folder: str | Path) -> tuple[str, bool]:
    """A base model or data set: ``(value, is_local)``. A local path when it starts with ``./``,
    ``../``, ``/`` or ``~`` or exists relative to ``folder``; else a Hugging Face Hub name as written."""
    candidate = resolve_path(value, folder)
    if _is_explicit_path(value) or os.path.exists(candidate):
        return candidate, True
    return value, False


def _relative_to(path_text: str, target: Path | None) -> str:
    """``path_text`` (as the process opens it) relative to ``target``; absolute ones stay as written."""
    if target is None or os.path.isabs(os.path.expanduser(path_text)):
        return path_text
    try:
        return Path(os.path.relpath(os.path.abspath(os.path.expanduser(path_text)), os.path.abspath(target))).as_posix()
    except ValueError:
        return os.path.abspath(path_text)


