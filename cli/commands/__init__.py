"""One module per CLI command. Each module defines a click command and adds it with
``@main.command(...)`` (import ``main`` from ``adaptermath.cli.main``); the group imports every
module here at start-up, so a new command needs no registration elsewhere."""
