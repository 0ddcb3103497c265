"""Process-wide resources loaded on first use: the one mechanism the NLP steps share."""

from __future__ import annotations

import functools
import threading
from typing import Callable, TypeVar

__all__ = ["loaded_once"]

T = TypeVar("T")


def loaded_once(load: Callable[[], T]) -> Callable[[], T]:
    """``load`` made to run once per process, on the first call; threads that call it
    meanwhile wait for that load, and every later call returns the same object. A load
    that raises is tried again by the next call."""
    lock = threading.Lock()
    loaded: list[T] = []

    @functools.wraps(load)
    def get() -> T:
        if not loaded:
            with lock:
                if not loaded:
                    loaded.append(load())
        return loaded[0]

    return get
