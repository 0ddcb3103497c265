"""Registrations: what ``register()`` accepts, what it records, how it is reported.

:func:`validate` checks the arguments of ``register()`` exactly as RedisGears 1.2 does
(same error texts) and returns a :class:`Registration`. :class:`Stats` holds the live
statistics, and :func:`dump_entry` builds the ``RG.DUMPREGISTRATIONS`` entry.
"""

from __future__ import annotations

import time
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

from gears.engine.plan import Plan
from gears.engine.records import GearsScriptError

__all__ = ["Registration", "Stats", "validate", "dump_entry", "KEY_TYPES", "MODES"]

MODES = ("async", "async_local", "sync")
KEY_TYPES = ("empty", "string", "list", "hash", "set", "zset", "module", "stream")
POLICIES = ("continue", "abort", "retry")
REGISTERABLE = ("KeysReader", "StreamReader", "CommandReader")


@dataclass
class Stats:
    """Live statistics of one registration on one shard."""

    triggered: int = 0
    success: int = 0
    failures: int = 0
    aborted: int = 0
    dropped: int = 0
    last_ms: float = 0.0
    total_ms: float = 0.0
    last_error: str | None = None
    last_lag_ms: float = 0.0
    total_lag_ms: float = 0.0
    lag_samples: int = 0
    server_outages: int = 0
    last_server_outage: str | None = None
    #: Monotonic counts for the metrics (:meth:`clear` keeps them).
    triggered_total: int = 0
    failures_total: int = 0

    def finished(self, started: float, errors: list[str], server_lost: bool = False) -> None:
        """Record one finished execution that started at ``time.perf_counter()`` ``started``.

        ``server_lost``: it met a server outage, which is not a failure of the user's code
        (the outage itself is counted by :meth:`outage`; the event or batch runs again)."""
        self.last_ms = (time.perf_counter() - started) * 1000
        self.total_ms += self.last_ms
        if server_lost:
            return
        if errors:
            self.failures += 1
            self.failures_total += 1
            self.last_error = errors[0]
        else:
            self.success += 1

    def outage(self, reason: str) -> None:
        """The shard's server node could not be reached (``reason`` says how)."""
        self.server_outages += 1
        self.last_server_outage = "%s %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), reason)

    def clear(self) -> None:
        """``RG.CLEARREGISTRATIONSSTATS``: numTriggered keeps the executions still running."""
        done = self.success + self.failures + self.aborted
        self.triggered = max(0, self.triggered - done)
        self.success = self.failures = self.aborted = 0
        self.last_ms = self.total_ms = 0.0
        self.last_error = None
        self.last_lag_ms = self.total_lag_ms = 0.0
        self.lag_samples = 0
        self.server_outages = 0
        self.last_server_outage = None

    @property
    def average_ms(self) -> float:
        done = self.success + self.failures
        return self.total_ms / done if done else 0.0


@dataclass
class Registration:
    """One registration: its flow, reader, mode and the reader's options."""

    id: str
    reader: str
    mode: str
    plan: Plan
    options: dict[str, Any]
    on_registered: Callable[[], Any] | None = None
    desc: str | None = None
    session_id: str = ""
    stats: Stats = field(default_factory=Stats)
    status: str = "OK"

    def matches_key(self, key: str) -> bool:
        """KeysReader/StreamReader prefix rule: a trailing ``*`` is a prefix, else exact."""
        prefix: str = self.options["prefix"]
        if prefix.endswith("*"):
            return key.startswith(prefix[:-1])
        return key == prefix

    def reader_args(self) -> list[Any]:
        """The ``args`` of the ``RG.DUMPREGISTRATIONS`` entry."""
        o = self.options
        if self.reader == "KeysReader":
            return ["regex", o["prefix"], "eventTypes", o["eventTypes"], "keyTypes", o["keyTypes"], "hookCommands", o["commands"]]
        if self.reader == "StreamReader":
            return [
                "batchSize", o["batch"], "durationMS", o["duration"], "stream", o["prefix"],
                "trimStream", int(o["trimStream"]), "onFailedPolicy", o["onFailedPolicy"],
                "retryInterval", o["onFailedRetryInterval"],
            ]
        return ["trigger", o["trigger"] or o["hook"], "inorder", int(o["inorder"])]


def _string_list(value: Any, not_iterable: str, not_string: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise GearsScriptError(not_iterable)
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise GearsScriptError(not_string)
    return items


def _number(options: dict[str, Any], name: str, default: int, message: str) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GearsScriptError(message)
    return int(value)


def _boolean(options: dict[str, Any], name: str, default: bool, message: str) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise GearsScriptError(message)
    return value


def validate(reg_id: str, plan: Plan, prefix: Any, options: dict[str, Any]) -> Registration:
    """Check ``register()``'s arguments; unknown keyword arguments are ignored, as in RedisGears."""
    if plan.reader not in REGISTERABLE:
        raise GearsScriptError("given reader does not exists or does not support register")
    mode = options.get("mode", "async")
    if not isinstance(mode, str):
        raise GearsScriptError("execution mode must be a string")
    if mode not in MODES:
        raise GearsScriptError("unknown execution mode")
    on_registered = options.get("onRegistered")
    if on_registered is not None and not isinstance(on_registered, types.FunctionType):
        raise GearsScriptError("OnRegistered argument must be a function")
    if plan.reader == "KeysReader":
        parsed = _keys_options(prefix, options)
    elif plan.reader == "StreamReader":
        parsed = _stream_options(prefix, options, mode)
    else:
        parsed = _command_options(options)
    return Registration(reg_id, plan.reader, mode, plan, parsed, on_registered, plan.desc)


def _keys_options(prefix: Any, options: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(prefix, str):
        raise GearsScriptError("regex argument must be a string")
    event_types = _string_list(options.get("eventTypes"), "given eventTypes is not iterable", "given event type is not string")
    key_types = _string_list(options.get("keyTypes"), "given keyTypes is not iterable", "given key type is not string")
    if key_types is not None and any(t not in KEY_TYPES for t in key_types):
        raise GearsScriptError("unknown key type")
    commands = _string_list(options.get("commands"), "given commands is not iterable", "given command is not string")
    return {
        "prefix": prefix,
        "eventTypes": [e.lower() for e in event_types] if event_types is not None else None,
        "keyTypes": key_types,
        "readValue": _boolean(options, "readValue", True, "readValue is not boolean"),
        "commands": [c.lower() for c in commands] if commands is not None else None,
    }


def _stream_options(prefix: Any, options: dict[str, Any], mode: str) -> dict[str, Any]:
    if not isinstance(prefix, str):
        raise GearsScriptError("regex argument must be a string")
    policy = options.get("onFailedPolicy", "continue")
    if not isinstance(policy, str):
        raise GearsScriptError("onFailedPolicy must be a string Continue/Abort/Retry")
    if policy.lower() not in POLICIES:
        raise GearsScriptError("onFailedPolicy must be Continue/Abort/Retry")
    if mode == "sync" and policy.lower() != "continue":
        raise GearsScriptError("using onFailedPolicy Abort/Retry is not allowed on sync executions")
    batch = _number(options, "batch", 1, "batch argument must be a number")
    if batch < 1:
        raise GearsScriptError("batch argument must be a positive number")
    return {
        "prefix": prefix,
        "batch": batch,
        "duration": _number(options, "duration", 0, "duration argument must be a number"),
        "onFailedPolicy": policy.lower(),
        "onFailedRetryInterval": _number(options, "onFailedRetryInterval", 1, "onFailedRetryInterval argument must be a number"),
        "trimStream": _boolean(options, "trimStream", True, "trimStream argument must be a boolean"),
    }


def _command_options(options: dict[str, Any]) -> dict[str, Any]:
    trigger, hook, keyprefix = options.get("trigger"), options.get("hook"), options.get("keyprefix")
    if trigger is None and hook is None:
        raise GearsScriptError("no trigger or hook argument was given")
    if trigger is not None and not isinstance(trigger, str):
        raise GearsScriptError("trigger argument is not string")
    if trigger is not None and (hook is not None or keyprefix is not None):
        raise GearsScriptError("trigger argument can not be combined with hook or keyprefix")
    if hook is not None and not isinstance(hook, str):
        raise GearsScriptError("hook argument is not string")
    if keyprefix is not None and not isinstance(keyprefix, str):
        raise GearsScriptError("keyprefix argument is not string")
    return {
        "trigger": trigger,
        "hook": hook.lower() if hook is not None else None,
        "keyprefix": keyprefix,
        "inorder": _boolean(options, "inorder", False, "inorder argument must be a boolean"),
    }


def dump_entry(reg: Registration, session: dict[str, Any]) -> list[Any]:
    """The ``RG.DUMPREGISTRATIONS`` entry of ``reg`` (``session``: name, description, ids)."""
    s = reg.stats
    data: list[Any] = [
        "mode", reg.mode,
        "numTriggered", s.triggered,
        "numSuccess", s.success,
        "numFailures", s.failures,
        "numAborted", s.aborted,
        "lastRunDurationMS", int(s.last_ms),
        "totalRunDurationMS", int(s.total_ms),
        "avgRunDurationMS", "%f" % s.average_ms,
    ]
    if reg.reader == "StreamReader":
        average_lag = s.total_lag_ms / s.lag_samples if s.lag_samples else 0.0
        data += ["lastEstimatedLagMS", int(s.last_lag_ms), "avgEstimatedLagMS", "%f" % average_lag]
    data += ["lastError", s.last_error, "args", reg.reader_args()]
    if reg.reader == "StreamReader":
        data += ["status", reg.status]
    data += ["numDropped", s.dropped, "numServerOutages", s.server_outages, "lastServerOutage", s.last_server_outage]
    pd = (
        "{'sessionName':'%s', 'sessionDescription':'%s', 'refCount': 1, 'linkedTo': primary, 'dead': false, "
        "'isInstallationNeeded':0, 'registrationsList':%s, 'depsList':%s}"
        % (session["id"], session.get("description") or "", session.get("registrations", []), session.get("requirements", []))
    )
    return ["id", reg.id, "reader", reg.reader, "desc", reg.desc, "RegistrationData", data, "PD", pd,
            "ExecutionThreadPool", "DefaultPool"]
