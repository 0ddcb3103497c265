"""The model-serving layer: tensors, models and scripts as keys, ``AI.*`` commands, run queues.

Importing the package loads nothing: the worker imports the value, storage and serving
modules it needs, and the node imports :mod:`gears.node.ai_commands` (which registers the
``AI.*`` command handlers) where it gathers its handlers.
"""
