"""sha256 of input files, remembered by file identity so that merging the same inputs again does not
read them twice.

Every output's provenance records the sha256 of its inputs; for large adapters that hash costs as
much CPU as reading the tensors. Like git's index, the cache keys a digest by the file's device,
inode, size, modification and status-change times (nanoseconds): any write to the file changes
its ctime, so a stale entry is never used. Files under 1 MiB are always hashed (it is cheaper than
the lookup). The cache is a small JSON file, ``$ADAPTERMATH_CACHE/sha256.json`` (default
``$XDG_CACHE_HOME/adaptermath`` or ``~/.cache/adaptermath``), written atomically; losing it only
costs a re-hash. ``ADAPTERMATH_HASH_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from pathlib import Path

MIN_CACHED_BYTES = 1 << 20
MAX_ENTRIES = 10_000
_lock = threading.Lock()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes, read in ``chunk``-sized blocks into one reused buffer (a fresh
    block per read would cost a page fault per page: more than the copy)."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            digest.update(view[:count])
    return digest.hexdigest()


def cache_file() -> Path:
    root = os.environ.get("ADAPTERMATH_CACHE")
    if root:
        return Path(root) / "sha256.json"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "adaptermath" / "sha256.json"


def cache_enabled() -> bool:
    return os.environ.get("ADAPTERMATH_HASH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cached_sha256(path: str | Path) -> str:
    """sha256 of ``path``, from the cache when the file is unchanged since it was last hashed."""
    path = Path(path)
    found = lookup_sha256(path)
    if found is not None:
        return found
    stat = path.stat()
    digest = sha256_file(path)
    remember_sha256(path, stat, digest)
    return digest


def _cache_key(path: Path) -> tuple[os.stat_result, str, list[int]] | None:
    stat = path.stat()
    if stat.st_size < MIN_CACHED_BYTES or not cache_enabled():
        return None
    return stat, f"{stat.st_dev}:{stat.st_ino}", [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def lookup_sha256(path: str | Path) -> str | None:
    """The cached sha256 of ``path`` if the file is unchanged since it was hashed (None otherwise,
    and for files under :data:`MIN_CACHED_BYTES` or with the cache off)."""
    key = _cache_key(Path(path))
    if key is None:
        return None
    _, name, signature = key
    with _lock:
        entry = _load().get(name)
    if isinstance(entry, dict) and entry.get("signature") == signature and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    return None


def remember_sha256(path: str | Path, before: os.stat_result, digest: str) -> None:
    """Store ``digest`` for ``path``, hashed from bytes read after ``before = path.stat()``; kept only
    when the file was not written to meanwhile (same ctime)."""
    path = Path(path)
    key = _cache_key(path)
    if key is None:
        return
    stat, name, signature = key
    if stat.st_ctime_ns != before.st_ctime_ns or stat.st_size != before.st_size:
        return
    with _lock:
        entries = _load()
        entries.pop(name, None)
        entries[name] = {"signature": signature, "sha256": digest, "path": str(path)}
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        _save(entries)


def _load() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(entries: dict[str, dict]) -> None:
    target = cache_file()
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entries), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:  # a read-only home: hash every time
        tmp.unlink(missing_ok=True)
