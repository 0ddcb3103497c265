"""The worker process of a gears node: where user code runs (see docs/architecture.md)."""
