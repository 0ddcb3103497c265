"""A worker's registrations: the registry, key events, stream consumers, time events and what is kept of their executions."""
