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
