"""The adaptermath command-line application (installed as ``adaptermath.cli``)."""
