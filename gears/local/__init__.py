"""Tooling on the user's machine: the ``gears`` command, ``gears run``, the Python client, and the ``gears node`` entry point."""
