"""Gears configuration (``RG.CONFIGGET`` / ``RG.CONFIGSET``), per gears node.

Core keys keep RedisGears 1.2's names, defaults and runtime rules; any other key is a
user ("extra") value, kept as a string and readable by ``configGet`` in scripts.
Three keys are this project's own: ``WorkerMaxMemoryMB`` (the worker is replaced above it;
default :func:`default_worker_memory_mb`), ``AbortGracePeriodMS`` (how long
``RG.ABORTEXECUTION`` waits for an execution to stop before it replaces the worker) and
``EnvironmentWorkerIdleMS`` (how long a requirement set's worker that nothing uses is kept,
see :mod:`gears.node.worker_pool`).
Startup values come from ``gears node --config K=V`` (and ``gears cluster up --gears-config``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gears.wire.resp import OK, ErrorValue, Status

__all__ = ["GearsConfig", "CORE_DEFAULTS", "default_worker_memory_mb"]


@dataclass(frozen=True)
class _Key:
    default: Any
    runtime: bool
    positive: bool = False


def default_worker_memory_mb() -> int:
    """``WorkerMaxMemoryMB``'s default: a quarter of the machine's physical memory, at
    least 512 MB (``0`` turns the limit off)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - sysconf names exist on Linux
        return MIN_DEFAULT_WORKER_MEMORY_MB
    return max(MIN_DEFAULT_WORKER_MEMORY_MB, (total >> 20) // WORKER_MEMORY_SHARE)


#: ``WorkerMaxMemoryMB`` defaults to 1/WORKER_MEMORY_SHARE of the machine's memory ...
WORKER_MEMORY_SHARE = 4
#: ... and at least this many MB.
MIN_DEFAULT_WORKER_MEMORY_MB = 512

#: name → (default, settable at runtime, must be > 0)
CORE_DEFAULTS: dict[str, _Key] = {
    "MaxExecutions": _Key(1000, True, True),
    "MaxExecutionsPerRegistration": _Key(100, True, True),
    "ProfileExecutions": _Key(0, True),
    "PythonAttemptTraceback": _Key(1, True),
    "ExecutionMaxIdleTime": _Key(5000, True, True),
    "PythonInstallReqMaxIdleTime": _Key(30000, True, True),
    "SendMsgRetries": _Key(3, True),
    "ExecutionThreads": _Key(3, False, True),
    "CreateVenv": _Key(0, False),
    "DownloadDeps": _Key(0, False),
    "ForeceDownloadDepsOnEnterprise": _Key(0, False),
    "OverridePythonAllocators": _Key(1, False),
    "DependenciesUrl": _Key("", False),
    "DependenciesSha256": _Key("", False),
    "PythonInstallationDir": _Key("", False),
    "WorkerMaxMemoryMB": _Key(default_worker_memory_mb(), True),
    "AbortGracePeriodMS": _Key(2000, True, True),
    "EnvironmentWorkerIdleMS": _Key(30000, True, True),
}
_BY_LOWER = {name.lower(): name for name in CORE_DEFAULTS}


class GearsConfig:
    """Current values: core keys (typed) and extra keys (strings)."""

    def __init__(self, startup: dict[str, str] | None = None) -> None:
        self.values: dict[str, Any] = {name: key.default for name, key in CORE_DEFAULTS.items()}
        self.extra: dict[str, str] = {}
        for name, value in (startup or {}).items():
            core = _BY_LOWER.get(name.lower())
            if core is None:
                self.extra[name] = value
            else:
                self.values[core] = self._parse(core, value)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @staticmethod
    def _parse(name: str, value: Any) -> Any:
        key = CORE_DEFAULTS[name]
        if isinstance(key.default, int):
            number = int(value)
            if key.positive and number <= 0:
                raise ValueError(name)
            return number
        return str(value)

    def get(self, names: list[str]) -> list[Any]:
        """``RG.CONFIGGET``: a value (or an embedded error) per name; core names are case-sensitive."""
        out: list[Any] = []
        for name in names:
            if name in self.values:
                out.append(self.values[name])
            elif name in self.extra:
                out.append(self.extra[name])
            else:
                out.append(ErrorValue(f"(error) Unsupported config parameter: {name}"))
        return out

    def set(self, pairs: list[tuple[str, str]]) -> list[Any]:
        """``RG.CONFIGSET``: ``OK`` or an embedded error per pair; core names are case-insensitive."""
        out: list[Any] = []
        for name, value in pairs:
            core = _BY_LOWER.get(name.lower())
            if core is None:
                self.extra[name] = value
                out.append(Status("OK - value was saved in extra config dictionary"))
                continue
            if not CORE_DEFAULTS[core].runtime:
                out.append(ErrorValue(f"(error) Config value {core} not modifiable at runtime"))
                continue
            try:
                self.values[core] = self._parse(core, value)
            except ValueError:
                out.append(ErrorValue(f"(error) Failed setting config value {core}"))
                continue
            out.append(OK)
        return out

    def for_worker(self) -> dict[str, Any]:
        """The values a worker needs."""
        return {**self.values, "extra": dict(self.extra)}
