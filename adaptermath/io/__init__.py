"""Writing at the edges: streamed safetensors files and atomic output folders and files."""

from .atomic import atomic_output_dir, atomic_output_file
from .safetensors_stream import SafetensorsStreamWriter

__all__ = ["atomic_output_dir", "atomic_output_file", "SafetensorsStreamWriter"]
