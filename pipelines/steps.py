"""Step callbacks with bound arguments, for the reference pipelines' registrations."""

from __future__ import annotations

import functools
from typing import Any, Callable

__all__ = ["step"]


def step(fn: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """A plain function calling ``fn(*bound, *args)``: the Gears API takes real functions
    only (not ``functools.partial`` objects), and the name shows in registrations."""
    call_fn = functools.partial(fn, *bound)

    def call(*args: Any) -> Any:
        return call_fn(*args)

    call.__name__ = fn.__name__
    return call
