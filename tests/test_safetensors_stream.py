"""The streaming safetensors writer: files it writes read back exactly with the safetensors library,
whatever the tensors' sizes (several write() calls for one tensor), dtypes and order."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from adaptermath.io.safetensors_stream import WRITE_CHUNK, SafetensorsStreamWriter


def test_written_tensors_read_back_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "big": torch.randn(3 * WRITE_CHUNK // 4 + 1000, 2, generator=generator),  # > 1 MiB: written in pieces
        "small.bf16": torch.randn(7, 3, generator=generator).to(torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "strided": torch.randn(64, 32, generator=generator).T,  # not contiguous
        "ints": torch.arange(10, dtype=torch.int64),
    }
    path = tmp_path / "out.safetensors"
    order = ["small.bf16", "big", "empty", "strided", "ints"]
    with SafetensorsStreamWriter(path, order, metadata={"format": "pt"}) as writer:
        for key in order:
            writer.add(key, tensors[key])
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def test_missing_or_repeated_tensors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="never written"):
        with SafetensorsStreamWriter(tmp_path / "a.safetensors", ["x", "y"]) as writer:
            writer.add("x", torch.ones(2))
    with pytest.raises(ValueError, match="written twice"):
        with SafetensorsStreamWriter(tmp_path / "b.safetensors", ["x"]) as writer:
            writer.add("x", torch.ones(2))
            writer.add("x", torch.ones(2))


@pytest.mark.parametrize("hint", ["exact", "too large", "too small"])
def test_a_size_hint_reserves_the_file_and_changes_no_byte(tmp_path, hint):
    """``data_bytes`` reserves the file on disk first; whatever the hint, the file is byte for byte
    the one written without it (a reservation larger than the data is cut off on close)."""
    generator = torch.Generator().manual_seed(1)
    tensors = {"a": torch.randn(300, 700, generator=generator), "b": torch.randn(5, generator=generator).to(torch.bfloat16)}
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    data_bytes = {"exact": size, "too large": size + 3 * WRITE_CHUNK + 17, "too small": size // 3}[hint]

    def write(path, **options):
        with SafetensorsStreamWriter(path, list(tensors), metadata={"format": "pt"}, **options) as writer:
            for key, tensor in tensors.items():
                writer.add(key, tensor)
        return path.read_bytes()

    plain = write(tmp_path / "plain.safetensors")
    assert write(tmp_path / "hinted.safetensors", data_bytes=data_bytes) == plain
    loaded = load_file(str(tmp_path / "hinted.safetensors"))
    assert all(torch.equal(loaded[key], tensor) for key, tensor in tensors.items())


def test_a_reservation_is_made_before_the_data_is_written(tmp_path):
    """With ``data_bytes`` the file holds its full length on disk before any tensor is added."""
    path = tmp_path / "reserved.safetensors"
    writer = SafetensorsStreamWriter(path, ["x"], data_bytes=10 * WRITE_CHUNK)
    try:
        assert path.stat().st_size == 8 + writer.reserve_bytes + 10 * WRITE_CHUNK
        assert path.stat().st_blocks * 512 >= 10 * WRITE_CHUNK
    finally:
        writer.abort()


def test_a_reservation_that_does_not_fit_fails_before_writing(tmp_path, monkeypatch):
    """No room for the reserved file (ENOSPC, EDQUOT, EFBIG) is an error at once; a file system that
    cannot reserve space (e.g. EOPNOTSUPP) is written without a reservation."""
    import errno
    import os

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(OSError) as raised:
        SafetensorsStreamWriter(tmp_path / "full.safetensors", ["x"], data_bytes=8)
    assert raised.value.errno == errno.ENOSPC

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    with SafetensorsStreamWriter(tmp_path / "plain.safetensors", ["x"], data_bytes=8) as writer:
        writer.add("x", torch.ones(2))
    assert torch.equal(load_file(str(tmp_path / "plain.safetensors"))["x"], torch.ones(2))


@pytest.mark.parametrize("kernel", [True, False], ids=["copy_file_range", "read and write"])
def test_a_tensor_copied_from_another_file_reads_back_exactly(tmp_path, monkeypatch, kernel):
    """``copy_at`` copies a reserved tensor's bytes file to file, between tensors written from memory; where the
    kernel cannot copy (EXDEV: another file system on an old kernel), it reads and writes in pieces."""
    import errno
    import os

    from safetensors.torch import save_file

    from adaptermath.io.safetensors_read import SafetensorsTensorReader

    if not kernel:
        def no_kernel_copy(*args, **kwargs):
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", no_kernel_copy, raising=False)
    generator = torch.Generator().manual_seed(1)
    source = {"big": torch.randn(3 * WRITE_CHUNK // 8 + 123, 2, generator=generator).to(torch.bfloat16),  # several pieces
              "tiny": torch.arange(5, dtype=torch.int32)}
    save_file(source, str(tmp_path / "source.safetensors"))
    reader = SafetensorsTensorReader(tmp_path / "source.safetensors")
    own = torch.randn(4, 4, generator=generator)
    path = tmp_path / "out.safetensors"
    with SafetensorsStreamWriter(path, ["own", "big", "tiny", "after"]) as writer:
        writer.add("own", own)
        for key, tensor in source.items():
            source_fd, offset, nbytes = reader.file_range(key)
            position = writer.reserve(key, reader.header[key]["dtype"], tensor.shape, nbytes)
            writer.copy_at(position, source_fd, offset, nbytes, key=key)
        writer.add("after", own * 2)
    reader.close()
    loaded = load_file(str(path))
    assert torch.equal(loaded["own"], own) and torch.equal(loaded["after"], own * 2)
    for key, tensor in source.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key


def test_a_copy_whose_source_ends_early_is_an_error(tmp_path):
    """A source shorter than the tensor it should hold (a shard truncated under the reader) raises OSError."""
    import os

    (tmp_path / "short.bin").write_bytes(b"\1" * 100)
    fd = os.open(tmp_path / "short.bin", os.O_RDONLY)
    try:
        writer = SafetensorsStreamWriter(tmp_path / "out.safetensors", ["x"])
        with pytest.raises(OSError, match="ended 28 bytes early"):
            writer.copy_at(writer.reserve("x", "U8", [128], 128), fd, 0, 128, key="x")
        writer.abort()
    finally:
        os.close(fd)


def test_reserved_tensors_written_out_of_order_from_threads_read_back_exactly(tmp_path):
    """``reserve`` lays tensors out in the order reserved; their bytes may then arrive in any order, in
    pieces, from several threads (``write_at``), as bake's update threads write their row blocks."""
    from concurrent.futures import ThreadPoolExecutor

    generator = torch.Generator().manual_seed(2)
    first = torch.randn(300, 64, generator=generator).to(torch.bfloat16)
    second = torch.randn(10, generator=generator)
    path = tmp_path / "out.safetensors"
    with SafetensorsStreamWriter(path, ["first", "second"], data_bytes=first.numel() * 2 + 40) as writer:
        at_first = writer.reserve("first", "BF16", first.shape, first.numel() * 2)
        at_second = writer.reserve("second", "F32", second.shape, 40)
        assert at_second == at_first + first.numel() * 2
        writer.write_at(at_second, second.numpy())
        row_bytes = 64 * 2
        blocks = [(start, first[start:start + 32]) for start in range(0, 300, 32)][::-1]
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda item: writer.write_at(at_first + item[0] * row_bytes,
                                                       item[1].contiguous().view(torch.uint8).numpy()), blocks))
    loaded = load_file(str(path))
    assert torch.equal(loaded["first"], first) and torch.equal(loaded["second"], second)
