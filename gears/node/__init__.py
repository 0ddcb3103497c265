"""The gears node process: the front door, command handlers, the coordination of
executions across shards, sessions, its worker processes and its peers. A worker
process imports nothing from here (``lint-imports`` checks it)."""
