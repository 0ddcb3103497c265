"""The model-serving layer: tensors, models and scripts as keys, ``AI.*`` commands, run queues.

Importing the package registers the ``AI.*`` command handlers (see :mod:`gears.ai.commands`).
"""

from . import commands  # noqa: F401 - registers the AI.* commands
