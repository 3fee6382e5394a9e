"""Reading single tensors from a safetensors file with positioned reads, without a memory map.

``safetensors.safe_open`` maps the whole file: every page a tensor read touches stays resident in
the process for as long as the file is open, so streaming eight 160 MB adapters module by module
shows 1.3 GB of resident memory although only a few MB are in use at any time. Reading each
tensor's bytes with ``os.preadv`` into a fresh buffer keeps the process's memory at what it holds.

Layout (the format's specification): ``u64 little-endian N | N bytes of JSON header | data``; each
header entry gives ``data_offsets`` [begin, end) relative to the start of the data.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch


class SafetensorsTensorReader:
    """Positioned reads of one safetensors file's tensors as raw bytes (``uint8`` tensors)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(self._fd).st_size
            (header_size,) = struct.unpack("<Q", os.pread(self._fd, 8, 0))
            if header_size > size - 8:
                raise ValueError("header larger than the file")
            header = json.loads(os.pread(self._fd, header_size, 8))
            self.header: dict = header  # the parsed JSON header (dtype, shape, data_offsets per tensor)
            self._data_start = 8 + header_size
            self._spans: dict[str, tuple[int, int]] = {}
            for key, entry in header.items():
                if key == "__metadata__":
                    continue
                begin, end = (int(v) for v in entry["data_offsets"])
                if not 0 <= begin <= end or self._data_start + end > size:
                    raise ValueError(f"tensor {key} lies outside the file")
                self._spans[key] = (begin, end)
        except BaseException:
            self.close()  # and mark it closed, so that __del__ cannot close a reused descriptor
            raise

    def read_bytes(self, key: str, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """The bytes of tensor ``key`` as a fresh ``uint8`` tensor (view it as its dtype and shape),
        or read into the start of ``buffer`` (a contiguous ``uint8`` tensor at least that long)."""
        begin, end = self._spans[key]
        out = torch.empty(end - begin, dtype=torch.uint8) if buffer is None else buffer[: end - begin]
        buffer = memoryview(out.numpy())
        done = 0
        while done < len(buffer):
            count = os.preadv(self._fd, [buffer[done:]], self._data_start + begin + done)
            if count == 0:
                raise OSError(f"{self.path}: file ended inside tensor {key}")
            done += count
        return out

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()
