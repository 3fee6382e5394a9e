"""The sha256 cache: a hit only for the same unchanged file, a re-hash after any write."""

from __future__ import annotations

import hashlib
import json
import os

from adaptermath.io import hash_cache


def test_cache_hits_only_unchanged_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERMATH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAPTERMATH_HASH_CACHE", "1")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(hash_cache.MIN_CACHED_BYTES + 10))
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    assert hash_cache.cached_sha256(big) == expected
    entries = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert [e["sha256"] for e in entries.values()] == [expected]

    calls = []
    monkeypatch.setattr(hash_cache, "sha256_file", lambda p, chunk=0: calls.append(p) or "recomputed")
    assert hash_cache.cached_sha256(big) == expected and calls == []  # a hit: not read again
    with open(big, "r+b") as handle:  # same size, new content: ctime/mtime change
        handle.write(b"x")
    assert hash_cache.cached_sha256(big) == "recomputed" and len(calls) == 1


def test_small_files_and_disabled_cache_are_always_hashed(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERMATH_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "small.json"
    small.write_text("{}")
    assert hash_cache.cached_sha256(small) == hashlib.sha256(b"{}").hexdigest()
    monkeypatch.setenv("ADAPTERMATH_HASH_CACHE", "0")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (hash_cache.MIN_CACHED_BYTES + 1))
    assert hash_cache.cached_sha256(big) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert not (tmp_path / "cache" / "sha256.json").exists()


def test_sequential_digest_is_the_file_sha256_in_one_pass(tmp_path, monkeypatch):
    from adaptermath.io import sequential_digest
    from adaptermath.io.sequential_digest import SequentialDigest

    monkeypatch.setenv("ADAPTERMATH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAPTERMATH_HASH_CACHE", "1")
    data = os.urandom(hash_cache.MIN_CACHED_BYTES + 1000)
    path = tmp_path / "shard.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    reread = []
    monkeypatch.setattr(sequential_digest, "cached_sha256", lambda p: reread.append(p) or hash_cache.sha256_file(p))

    whole = SequentialDigest(path, prefix=100)  # the header read by the digest, the rest fed in pieces
    whole.update(100, data[100:5000])
    whole.update(5000, memoryview(data)[5000:])
    assert whole.covered and whole.hexdigest() == expected and reread == []
    assert hash_cache.lookup_sha256(path) == expected  # remembered: the next bake does not hash it

    path.write_bytes(data)  # new ctime: the cache entry no longer applies
    assert hash_cache.lookup_sha256(path) is None
    for pieces in ([(0, data[:10]), (20, data[20:])],               # a gap
                   [(0, data[:10]), (0, data)],                      # a piece again (out of order)
                   [(0, data[:-1])]):                                # bytes after the last piece
        partial = SequentialDigest(path)
        for offset, piece in pieces:
            partial.update(offset, piece)
        assert not partial.covered and partial.hexdigest() == expected  # the file is read instead
    assert len(reread) == 3

    changed = SequentialDigest(path)
    changed.update(0, data)
    with open(path, "r+b") as handle:  # written while it was being read: read again
        handle.write(b"y")
    assert changed.hexdigest() == hashlib.sha256(b"y" + data[1:]).hexdigest()
