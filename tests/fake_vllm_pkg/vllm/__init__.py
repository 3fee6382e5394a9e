"""A stand-in for vLLM used by the --engine-launch tests (see api_server.py)."""
