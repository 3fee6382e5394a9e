"""``python -m adaptermath``: the same as the ``adaptermath`` console script."""

from adaptermath.cli.main import main

main(prog_name="adaptermath")
