"""The sha256 of a file computed from the bytes a reader reads anyway, in one pass.

Baking a model reads every byte of every base shard once to update it; hashing the shards for the
provenance would read them all a second time. A :class:`SequentialDigest` is fed the file's bytes
as the reader gets them, ``(offset, bytes)`` piece by piece. When the pieces, taken in the order
given, cover the file exactly from its first byte to its last (safetensors data has no gaps, and
the reader goes in on-disk order), the digest is the file's sha256:

    sha256(file) = sha256(piece₀ ‖ piece₁ ‖ … ‖ pieceₙ)   with offsetₖ₊₁ = offsetₖ + |pieceₖ|, offset₀ = 0,
                                                           offsetₙ + |pieceₙ| = size.

Otherwise (a gap, pieces out of order, bytes after the last piece, or a file changed while read)
:meth:`SequentialDigest.hexdigest` hashes the file on its own, so the result is always the file's
sha256. A digest computed in one pass is stored in the hash cache (:mod:`.hash_cache`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .hash_cache import cached_sha256, remember_sha256


class SequentialDigest:
    """sha256 of ``path`` from consecutive pieces; the first ``prefix`` bytes (e.g. a safetensors
    header) are read here, the rest is given to :meth:`update` by the caller's reads."""

    def __init__(self, path: str | Path, prefix: int = 0) -> None:
        self.path = Path(path)
        self._before = self.path.stat()
        self._digest = hashlib.sha256()
        self._position = 0
        self._complete = True
        if prefix:
            with open(self.path, "rb", buffering=0) as handle:
                self.update(0, handle.read(prefix))

    def update(self, offset: int, data: Any) -> None:
        """Feed the bytes at ``offset`` (any buffer: ``bytes``, a NumPy array, a ``memoryview``)."""
        if not self._complete:
            return
        view = memoryview(data).cast("B")
        if offset != self._position or self._position + len(view) > self._before.st_size:
            self._complete = False
            return
        self._digest.update(view)
        self._position += len(view)

    @property
    def covered(self) -> bool:
        """Whether the pieces so far run without a gap from the start to the end of the file."""
        return self._complete and self._position == self._before.st_size

    def hexdigest(self) -> str:
        """The file's sha256: from the pieces when they covered it and it did not change, else read again."""
        after = os.stat(self.path)
        unchanged = (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            self._before.st_size, self._before.st_mtime_ns, self._before.st_ctime_ns)
        if self.covered and unchanged:
            digest = self._digest.hexdigest()
            remember_sha256(self.path, self._before, digest)
            return digest
        return cached_sha256(self.path)
