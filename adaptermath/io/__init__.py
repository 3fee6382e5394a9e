"""Writing at the edges: streamed safetensors files and atomic output folders."""

from .atomic import atomic_output_dir
from .safetensors_stream import SafetensorsStreamWriter

__all__ = ["atomic_output_dir", "SafetensorsStreamWriter"]
