"""The syntax of the ``AI.*`` commands that run models and scripts: argument lists parsed
into their parts, with RedisAI's error texts. Shared by the node's command handlers
(:mod:`gears.node.ai_commands`) and DAG parsing (:mod:`gears.ai.dag`, which the worker runs too),
so it imports nothing of the node."""

from __future__ import annotations

from gears.errors import ArityError, CommandError
from gears.ai.backends import BACKENDS, check_device
from gears.ai.storage import ModelMeta


def arg_text(arg: bytes) -> str:
    """A command argument as text (undecodable bytes kept as surrogates)."""
    return arg.decode("utf-8", "surrogateescape")


def int_arg(arg: bytes, error: str, minimum: int | None = None) -> int:
    """An integer argument (at least ``minimum``), else :class:`CommandError` ``error``."""
    try:
        value = int(arg)
    except ValueError:
        raise CommandError(error) from None
    if minimum is not None and value < minimum:
        raise CommandError(error)
    return value


def parse_modelstore(args: list[bytes], deprecated: bool) -> tuple[bytes, ModelMeta, list[bytes]]:
    """``AI.MODELSTORE`` (or the deprecated ``AI.MODELSET``) → key, meta (no version yet), blob parts."""
    name = arg_text(args[0]).upper()
    if len(args) < (4 if deprecated else 6):
        raise ArityError(name)
    key = args[1]
    backend = arg_text(args[2]).upper()
    if backend not in BACKENDS:
        raise CommandError("ERR unsupported backend")
    meta = ModelMeta(backend=backend, device=check_device(arg_text(args[3])))
    i = 4
    if _word(args, i) == "TAG":
        meta.tag = arg_text(args[i + 1]) if i + 1 < len(args) else ""
        i += 2
    i = _batch_options(args, i, meta)
    if _word(args, i) == "INPUTS":
        if backend != "TF":
            raise CommandError("ERR INPUTS argument should not be specified for this backend")
        meta.inputs, i = _names(args, i, "input", deprecated)
        if _word(args, i) != "OUTPUTS":
            raise CommandError("ERR OUTPUTS not specified for TF")
        meta.outputs, i = _names(args, i, "output", deprecated)
    elif backend == "TF":
        raise CommandError("ERR INPUTS not specified for TF")
    if _word(args, i) != "BLOB":
        raise CommandError("ERR Invalid argument, expected BLOB")
    if i + 1 >= len(args):
        raise CommandError("ERR Insufficient arguments, missing model BLOB")
    return key, meta, args[i + 1 :]


def _word(args: list[bytes], i: int) -> str:
    """Argument ``i`` as an upper-case keyword, ``""`` past the end."""
    return arg_text(args[i]).upper() if i < len(args) else ""


def _batch_options(args: list[bytes], i: int, meta: ModelMeta) -> int:
    """``[BATCHSIZE n [MINBATCHSIZE m [MINBATCHTIMEOUT t]]]`` from ``i`` into ``meta``; the next index."""

    def value(option: str) -> int:
        return int_arg(args[i + 1], f"ERR Invalid argument for {option}", 0) if i + 1 < len(args) else 0

    if _word(args, i) == "BATCHSIZE":
        meta.batchsize = value("BATCHSIZE")
        i += 2
    if _word(args, i) == "MINBATCHSIZE":
        if meta.batchsize == 0:
            raise CommandError("ERR MINBATCHSIZE specified without BATCHSIZE")
        meta.minbatchsize = value("MINBATCHSIZE")
        i += 2
    if _word(args, i) == "MINBATCHTIMEOUT":
        if meta.minbatchsize == 0:
            raise CommandError("ERR MINBATCHTIMEOUT specified without MINBATCHSIZE")
        meta.minbatchtimeout = value("MINBATCHTIMEOUT")
        i += 2
    return i


def _names(args: list[bytes], i: int, what: str, deprecated: bool) -> tuple[list[str], int]:
    """A counted (or, for the deprecated MODELSET, uncounted) list after INPUTS/OUTPUTS."""
    if deprecated:
        end = i + 1
        stop = b"OUTPUTS" if what == "input" else b"BLOB"
        while end < len(args) and args[end].upper() != stop:
            end += 1
        return [arg_text(a) for a in args[i + 1 : end]], end
    count = int_arg(args[i + 1], f"ERR Invalid argument for {what}_count", 1) if i + 1 < len(args) else 0
    if count == 0:
        raise CommandError(f"ERR Invalid argument for {what}_count")
    names = args[i + 2 : i + 2 + count]
    if len(names) != count:
        raise CommandError(f"ERR number of model {what}s does not match the number of given arguments")
    return [arg_text(a) for a in names], i + 2 + count


def _counted(args: list[bytes], i: int, scope: str, what: str, count_error: str, size_error: str) -> tuple[list[str], int]:
    if i >= len(args) or args[i].upper() != scope.encode():
        raise CommandError(f"ERR {scope} not specified")
    try:
        count = int(args[i + 1])
    except (IndexError, ValueError):
        raise CommandError(f"ERR Invalid argument for {what}_count") from None
    if count <= 0:
        raise CommandError(count_error)
    names = args[i + 2 : i + 2 + count]
    if len(names) != count:
        raise CommandError(size_error)
    return [arg_text(a) for a in names], i + 2 + count


def _timeout(args: list[bytes], i: int) -> int | None:
    if i >= len(args):
        return None
    if args[i].upper() != b"TIMEOUT":
        raise CommandError(f"Invalid argument: {arg_text(args[i])}")
    if i + 1 >= len(args):
        raise CommandError("ERR No value provided for TIMEOUT")
    return int_arg(args[i + 1], "ERR Invalid value for TIMEOUT", 1)


def parse_modelexecute(args: list[bytes], *, in_dag: bool = False) -> tuple[bytes, list[str], list[str], int | None]:
    """``AI.MODELEXECUTE key INPUTS n in... OUTPUTS n out... [TIMEOUT t]`` → its parts."""
    if len(args) < 8:
        raise ArityError("AI.MODELEXECUTE")
    key = args[1]
    inputs, i = _counted(
        args, 2, "INPUTS", "input", "ERR Input count must be a positive integer",
        "ERR number of input keys to AI.MODELEXECUTE command does not match the number of given arguments",
    )
    outputs, i = _counted(
        args, i, "OUTPUTS", "output", "ERR Output count must be a positive integer",
        "ERR number of output keys to AI.MODELEXECUTE command does not match the number of given arguments",
    )
    if in_dag and i < len(args) and args[i].upper() == b"TIMEOUT":
        raise CommandError("ERR TIMEOUT not allowed within a DAG command")
    return key, inputs, outputs, _timeout(args, i)


def parse_modelrun(args: list[bytes], *, in_dag: bool = False) -> tuple[bytes, list[str], list[str], int | None]:
    """Deprecated ``AI.MODELRUN key [TIMEOUT t] INPUTS in... OUTPUTS out...`` → its parts."""
    if len(args) < (4 if in_dag else 6):
        raise ArityError("AI.MODELRUN")
    key, i, timeout = args[1], 2, None
    if args[i].upper() == b"TIMEOUT":
        if in_dag:
            raise CommandError("ERR TIMEOUT not allowed within a DAG command")
        timeout = int_arg(args[i + 1], "ERR Invalid value for TIMEOUT", 1)
        i += 2
    if args[i].upper() != b"INPUTS":
        raise CommandError("ERR INPUTS not specified")
    try:
        split = next(j for j in range(i + 1, len(args)) if args[j].upper() == b"OUTPUTS")
    except StopIteration:
        raise CommandError("ERR OUTPUTS not specified") from None
    return key, [arg_text(a) for a in args[i + 1 : split]], [arg_text(a) for a in args[split + 1 :]], timeout


def parse_scriptexecute(args: list[bytes], *, in_dag: bool = False) -> tuple[bytes, str, dict[str, list[str]], int | None]:
    """``AI.SCRIPTEXECUTE key fn [KEYS ..] [INPUTS ..] [ARGS ..] [OUTPUTS ..] [TIMEOUT t]`` → its parts."""
    if len(args) < (3 if in_dag else 6):
        raise ArityError("AI.SCRIPTEXECUTE")
    key, function = args[1], arg_text(args[2])
    if not in_dag and args[3].upper() not in (b"KEYS", b"INPUTS"):
        raise CommandError("ERR KEYS or INPUTS scope must be provided first for AI.SCRIPTEXECUTE command")
    scopes: dict[str, list[str]] = {}
    i, timeout = 3, None
    while i < len(args):
        scope = arg_text(args[i]).upper()
        if scope == "TIMEOUT":
            if in_dag:
                raise CommandError("ERR TIMEOUT not allowed within a DAG command")
            timeout = _timeout(args, i)
            break
        if scope not in ("KEYS", "INPUTS", "ARGS", "OUTPUTS"):
            raise CommandError(f"ERR Invalid AI.SCRIPTEXECUTE command. Unexpected argument: {arg_text(args[i])}")
        if scope in scopes:
            raise CommandError(f"ERR Already Encountered {scope} scope in AI.SCRIPTEXECUTE command")
        try:
            count = int(args[i + 1])
        except (IndexError, ValueError):
            raise CommandError(f"ERR Invalid or negative value found in number of {scope}") from None
        if count <= 0 and scope == "KEYS":
            raise CommandError("ERR Invalid or negative value found in number of KEYS")
        values = args[i + 2 : i + 2 + count]
        if len(values) != count:
            raise CommandError(f"ERR number of {scope.lower()} to AI.SCRIPTEXECUTE command does not match the number of given arguments")
        scopes[scope] = [arg_text(v) for v in values]
        i += 2 + count
    return key, function, scopes, timeout


def parse_scriptrun(args: list[bytes], *, in_dag: bool = False) -> tuple[bytes, str, list[str], int, list[str], int | None]:
    """Deprecated ``AI.SCRIPTRUN key fn [TIMEOUT t] INPUTS in... [$ in...] OUTPUTS out...``.

    Returns the key, function, inputs, where the ``$`` list starts (-1: none), outputs, timeout."""
    if len(args) < (4 if in_dag else 6):
        raise ArityError("AI.SCRIPTRUN")
    key, function, i, timeout = args[1], arg_text(args[2]), 3, None
    if i < len(args) and args[i].upper() == b"TIMEOUT":
        if in_dag:
            raise CommandError("ERR TIMEOUT not allowed within a DAG command")
        timeout = int_arg(args[i + 1], "ERR Invalid value for TIMEOUT", 1)
        i += 2
    inputs: list[str] = []
    outputs: list[str] = []
    variadic = -1
    section = None
    for arg in args[i:]:
        word = arg.upper()
        if word == b"INPUTS":
            if section is not None:
                raise CommandError("ERR Already encountered an INPUTS section in SCRIPTRUN")
            section = inputs
        elif word == b"OUTPUTS":
            section = outputs
        elif arg == b"$":
            if section is not inputs:
                raise CommandError("ERR Encountered a variable size list of tensors outside of input section")
            variadic = len(inputs)
        elif section is None:
            raise CommandError("ERR Unrecongnized parameter to SCRIPTRUN")
        else:
            section.append(arg_text(arg))
    return key, function, inputs, variadic, outputs, timeout
