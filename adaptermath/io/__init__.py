"""Writing at the edges: streamed safetensors files, atomic output folders and files, output-path safety."""

from .atomic import atomic_output_dir, atomic_output_file, remove_stale_temporaries
from .output_safety import check_output_location
from .safetensors_stream import SafetensorsStreamWriter

__all__ = ["atomic_output_dir", "atomic_output_file", "check_output_location", "remove_stale_temporaries",
           "SafetensorsStreamWriter"]
