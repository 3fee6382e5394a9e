"""``python -m adaptermath``: the same as the ``adaptermath`` console script."""

from adaptermath.cli.entry import run

run()
