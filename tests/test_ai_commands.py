"""Every AI.* command's argument errors and reply shapes (redisai-spec §1), on 1 and 3 shards.

test_ai.py covers the main paths (tensors, models, scripts, batching, DAGs, the redisAI
module); this file covers the deprecated forms, the reply-shape variants, the argument
errors and the cluster rules.
"""

from __future__ import annotations

import numpy as np
import pytest
import redis

torch = pytest.importorskip("torch")

from ai_models import Affine, owner, tag, torchscript  # noqa: E402

SCRIPT = "def f(tensors: List[Tensor], keys: List[str], args: List[str]):\n    return tensors[0] * 2\n"


def fails(client: redis.Redis, message: str, *command: object) -> None:
    """``command`` is refused with an error containing ``message``."""
    with pytest.raises(redis.ResponseError, match=message):
        client.execute_command(*command)


def affine(values: list[float]) -> list[bytes]:
    """What the Affine model gives for one row, as TENSORGET VALUES replies it."""
    row = (torch.tensor([values], dtype=torch.float32) @ Affine().weight).detach().numpy().ravel()
    return [repr(float(np.float32(v))).removesuffix(".0").encode() for v in row]


def stored_affine(gc, values: list[float]) -> tuple[redis.Redis, str, str, str, str]:
    """A fresh hashtag ``t`` with the Affine model at ``m{t}`` and a 1x4 input ``values`` at
    ``x{t}``: ``(client on their shard, t, model, x, y)``; ``y{t}`` is a free output name."""
    t = tag()
    model, x, y = f"m{{{t}}}", f"x{{{t}}}", f"y{{{t}}}"
    client = owner(gc, model)
    client.execute_command("AI.MODELSTORE", model, "TORCH", "CPU", "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", x, "FLOAT", 1, 4, "VALUES", *values)
    return client, t, model, x, y


def test_deprecated_modelset_and_modelrun(gc):
    t = tag()
    model, x, y = f"m{{{t}}}", f"x{{{t}}}", f"y{{{t}}}"
    client = owner(gc, model)
    blob = torchscript(Affine())
    assert client.execute_command("AI.MODELSET", model, "TORCH", "CPU", "TAG", "old", "BLOB", blob) == b"OK"
    assert client.execute_command("AI.MODELGET", model, "META")[4:6] == [b"tag", b"old"]
    fails(client, "INPUTS argument should not be specified for this backend",
          "AI.MODELSET", model, "TORCH", "CPU", "INPUTS", "a", "OUTPUTS", "b", "BLOB", blob)
    client.execute_command("AI.TENSORSET", x, "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    assert client.execute_command("AI.MODELRUN", model, "INPUTS", x, "OUTPUTS", y) == b"OK"
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == affine([1, 2, 3, 4])
    assert client.execute_command("AI.MODELRUN", model, "TIMEOUT", 1000, "INPUTS", x, "OUTPUTS", y) == b"OK"
    fails(client, "wrong number of arguments for 'ai.modelrun' command", "AI.MODELRUN", model, "INPUTS", x)
    fails(client, "INPUTS not specified", "AI.MODELRUN", model, "IN", x, "OUTPUTS", y)
    fails(client, "OUTPUTS not specified", "AI.MODELRUN", model, "INPUTS", x, x, y)
    fails(client, "Number of keys given as INPUTS here does not match model definition",
          "AI.MODELRUN", model, "INPUTS", x, x, "OUTPUTS", y)
    assert client.execute_command("AI.INFO", model)[15] == 2


def test_a_model_store_sent_again_or_beside_another_goes_through(gc):
    """A store sent again while the first still runs (a client whose socket timeout ran out
    first: redis-py 8 waits 5 s, then sends it again), or one cut short, leaves the key a hash of
    chunks with no meta yet: a new store of the key goes through, where before it was
    WRONGTYPE. Stores of one key at the same time each succeed, and the key keeps only
    the chunks of the version that is current. A user's own hash is still WRONGTYPE."""
    import threading

    t = tag()
    model, x, y, theirs = f"m{{{t}}}", f"x{{{t}}}", f"y{{{t}}}", f"h{{{t}}}"
    client = owner(gc, model)
    blob = torchscript(Affine())
    client.hset(model, "blob:0123456789abcdef:0", b"the start of a store that never finished")
    assert client.execute_command("AI.MODELSTORE", model, "TORCH", "CPU", "BLOB", blob) == b"OK"
    client.execute_command("AI.TENSORSET", x, "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    assert client.execute_command("AI.MODELEXECUTE", model, "INPUTS", 1, x, "OUTPUTS", 1, y) == b"OK"
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == affine([1, 2, 3, 4])

    fresh = f"n{{{t}}}"
    replies: list[object] = []

    def store() -> None:
        with owner(gc, fresh) as own:
            try:
                replies.append(own.execute_command("AI.MODELSTORE", fresh, "TORCH", "CPU", "BLOB", blob))
            except redis.RedisError as exc:
                replies.append(exc)

    threads = [threading.Thread(target=store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [b"OK"] * 4
    fields = client.hkeys(fresh)
    chunks = [f for f in fields if f.startswith(b"blob:")]
    assert sorted(set(fields) - set(chunks)) == [b"__gears_ai__", b"meta"] and len(chunks) == 1, fields
    assert client.execute_command("AI.MODELEXECUTE", fresh, "INPUTS", 1, x, "OUTPUTS", 1, y) == b"OK"

    client.hset(theirs, mapping={"blob:not-ours": "x", "name": "a user's hash"})
    fails(client, "WRONGTYPE", "AI.MODELSTORE", theirs, "TORCH", "CPU", "BLOB", blob)


def test_modelget_reply_shapes_and_errors(gc):
    t = tag()
    model = f"m{{{t}}}"
    client = owner(gc, model)
    blob = torchscript(Affine())
    client.execute_command("AI.MODELSTORE", model, "TORCH", "CPU", "BATCHSIZE", 4, "MINBATCHSIZE", 2, "MINBATCHTIMEOUT", 7, "BLOB", blob)
    meta = client.execute_command("AI.MODELGET", model, "META")
    assert meta == [b"backend", b"TORCH", b"device", b"CPU", b"tag", b"", b"batchsize", 4, b"minbatchsize", 2,
                    b"inputs", [b"x"], b"outputs", [], b"minbatchtimeout", 7]
    for options in ((), ("META", "BLOB"), ("BLOB", "META"), ("META", "NOPE")):
        whole = client.execute_command("AI.MODELGET", model, *options)
        expected = meta if options == ("META", "NOPE") else [*meta, b"blob", blob]
        assert whole == expected, options
    assert client.execute_command("AI.MODELGET", model, "BLOB") == blob
    fails(client, "wrong number of arguments for 'ai.modelget' command", "AI.MODELGET")
    fails(client, "model key is empty", "AI.MODELGET", f"none{{{t}}}")
    client.set(f"s{{{t}}}", "text")
    fails(client, "WRONGTYPE", "AI.MODELGET", f"s{{{t}}}")
    fails(client, "WRONGTYPE", "AI.MODELDEL", f"s{{{t}}}")
    fails(client, "model key is empty", "AI.MODELDEL", f"none{{{t}}}")
    fails(client, "Invalid argument for BATCHSIZE", "AI.MODELSTORE", model, "TORCH", "CPU", "BATCHSIZE", "x", "BLOB", blob)
    fails(client, "MINBATCHTIMEOUT specified without MINBATCHSIZE",
          "AI.MODELSTORE", model, "TORCH", "CPU", "BATCHSIZE", 4, "MINBATCHTIMEOUT", 5, "BLOB", blob)
    fails(client, "Insufficient arguments, missing model BLOB", "AI.MODELSTORE", model, "TORCH", "CPU", "TAG", "t", "BLOB")
    assert client.execute_command("AI.MODELGET", model, "META") == meta  # the failed stores changed nothing


def test_modelexecute_argument_errors(gc):
    client, t, model, x, y = stored_affine(gc, [1, 2, 3, 4])
    run = ("AI.MODELEXECUTE", model)
    fails(client, "wrong number of arguments for 'ai.modelexecute' command", *run, "INPUTS", 1, x, "OUTPUTS", 1)
    fails(client, "INPUTS not specified", *run, "IN", 1, x, "OUTPUTS", 1, y)
    fails(client, "Invalid argument for input_count", *run, "INPUTS", "one", x, "OUTPUTS", 1, y)
    fails(client, "Input count must be a positive integer", *run, "INPUTS", 0, x, "OUTPUTS", 1, y)
    fails(client, "OUTPUTS not specified", *run, "INPUTS", 1, x, "OUT", 1, y)
    fails(client, "Invalid argument for output_count", *run, "INPUTS", 1, x, "OUTPUTS", "one", y)
    fails(client, "Output count must be a positive integer", *run, "INPUTS", 1, x, "OUTPUTS", 0, y)
    fails(client, "number of output keys to AI.MODELEXECUTE command does not match",
          *run, "INPUTS", 1, x, "OUTPUTS", 3, y, y)
    fails(client, "No value provided for TIMEOUT", *run, "INPUTS", 1, x, "OUTPUTS", 1, y, "TIMEOUT")
    fails(client, "Invalid value for TIMEOUT", *run, "INPUTS", 1, x, "OUTPUTS", 1, y, "TIMEOUT", 0)
    fails(client, "Invalid argument: SOON", *run, "INPUTS", 1, x, "OUTPUTS", 1, y, "SOON", 1)
    fails(client, "^model key is empty", "AI.MODELEXECUTE", f"none{{{t}}}", "INPUTS", 1, x, "OUTPUTS", 1, y)
    client.set(f"s{{{t}}}", "text")
    fails(client, "^WRONGTYPE Operation against a key holding the wrong kind of value$",
          "AI.MODELEXECUTE", f"s{{{t}}}", "INPUTS", 1, x, "OUTPUTS", 1, y)
    assert client.exists(y) == 0  # nothing ran
    assert client.execute_command(*run, "INPUTS", 1, x, "OUTPUTS", 1, y, "TIMEOUT", 5000) == b"OK"


def test_script_commands_errors_and_reply_shapes(gc):
    t = tag()
    script, x, y = f"s{{{t}}}", f"x{{{t}}}", f"y{{{t}}}"
    client = owner(gc, script)
    store = ("AI.SCRIPTSTORE", script, "CPU")
    assert client.execute_command(*store, "TAG", "v2", "ENTRY_POINTS", 1, "f", "SOURCE", SCRIPT) == b"OK"
    assert client.execute_command("AI.SCRIPTGET", script, "META") == [b"device", b"CPU", b"tag", b"v2", b"Entry Points", [b"f"]]
    assert client.execute_command("AI.SCRIPTGET", script, "SOURCE") == SCRIPT.encode()
    both = [b"device", b"CPU", b"tag", b"v2", b"Entry Points", [b"f"], b"source", SCRIPT.encode()]
    assert client.execute_command("AI.SCRIPTGET", script) == both
    assert client.execute_command("AI.SCRIPTGET", script, "META", "SOURCE") == both
    fails(client, "script key is empty", "AI.SCRIPTGET", f"none{{{t}}}")
    fails(client, "script key is empty", "AI.SCRIPTDEL", f"none{{{t}}}")
    fails(client, "Insufficient arguments, missing script entry points", *store, "TAG", "a", "SOURCE", SCRIPT, "x")
    fails(client, "Non numeric entry points number provided to AI.SCRIPTSTORE command",
          *store, "ENTRY_POINTS", "one", "f", "SOURCE", SCRIPT)
    fails(client, "Insufficient arguments, missing script SOURCE", *store, "ENTRY_POINTS", 1, "f", "CODE", SCRIPT)
    fails(client, "Function g does not exist in the given script.", *store, "ENTRY_POINTS", 1, "g", "SOURCE", SCRIPT)
    fails(client, "unsupported device", "AI.SCRIPTSTORE", script, "XPU", "ENTRY_POINTS", 1, "f", "SOURCE", SCRIPT)
    fails(client, "expected", *store, "ENTRY_POINTS", 1, "f", "SOURCE", SCRIPT.replace("* 2", "*"))  # a compile error
    assert client.execute_command("AI.SCRIPTGET", script, "META")[3] == b"v2"  # the failed stores changed nothing
    client.execute_command("AI.TENSORSET", x, "FLOAT", 2, "VALUES", 1, 2)
    run = ("AI.SCRIPTEXECUTE", script, "f")
    assert client.execute_command(*run, "KEYS", 1, x, "INPUTS", 1, x, "OUTPUTS", 1, y, "TIMEOUT", 5000) == b"OK"
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == [b"2", b"4"]
    fails(client, "KEYS or INPUTS scope must be provided first for AI.SCRIPTEXECUTE command", *run, "OUTPUTS", 1, y)
    fails(client, "Already Encountered INPUTS scope in AI.SCRIPTEXECUTE command", *run, "INPUTS", 1, x, "INPUTS", 1, x)
    fails(client, "Invalid AI.SCRIPTEXECUTE command. Unexpected argument: MORE", *run, "INPUTS", 1, x, "MORE", 1)
    fails(client, "number of inputs to AI.SCRIPTEXECUTE command does not match the number of given arguments",
          *run, "INPUTS", 2, x)
    fails(client, "Invalid or negative value found in number of KEYS", *run, "KEYS", 0, "INPUTS", 1, x)
    fails(client, "Already encountered an INPUTS section in SCRIPTRUN",
          "AI.SCRIPTRUN", script, "f", "INPUTS", x, "INPUTS", x, "OUTPUTS", y)
    fails(client, "Encountered a variable size list of tensors outside of input section",
          "AI.SCRIPTRUN", script, "f", "$", x, "OUTPUTS", y)
    assert client.execute_command("AI.SCRIPTDEL", script) == b"OK"
    fails(client, "script key is empty", "AI.SCRIPTEXECUTE", script, "f", "INPUTS", 1, x, "OUTPUTS", 1, y)


def test_deprecated_dagrun_forms(gc):
    client, _, model, x, y = stored_affine(gc, [1, 0, 0, 0])
    reply = client.execute_command(
        "AI.DAGRUN", "LOAD", 1, x, "PERSIST", 1, y, "|>",
        "AI.MODELRUN", model, "INPUTS", x, "OUTPUTS", y, "|>", "AI.TENSORGET", y, "VALUES",
    )
    assert reply == [b"OK", affine([1, 0, 0, 0])]
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == affine([1, 0, 0, 0])
    readonly = client.execute_command(
        "AI.DAGRUN_RO", "LOAD", 1, x, "|>", "AI.MODELRUN", model, "INPUTS", x, "OUTPUTS", "local", "|>",
        "AI.TENSORGET", "local", "META",
    )
    assert readonly == [b"OK", [b"dtype", b"FLOAT", b"shape", [1, 3]]]
    fails(client, "AI.MODELEXECUTE cannot be used in a deprecated AI.DAGRUN command",
          "AI.DAGRUN", "LOAD", 1, x, "|>", "AI.MODELEXECUTE", model, "INPUTS", 1, x, "OUTPUTS", 1, y)
    fails(client, "PERSIST cannot be specified in a read-only DAG",
          "AI.DAGRUN_RO", "LOAD", 1, x, "PERSIST", 1, y, "|>", "AI.TENSORGET", x, "VALUES")
    fails(client, "Deprecated AI.MODELRUN cannot be used in AI.DAGEXECUTE command",
          "AI.DAGEXECUTE", "LOAD", 1, x, "|>", "AI.MODELRUN", model, "INPUTS", x, "OUTPUTS", y)


def test_dag_header_and_op_errors(gc):
    t = tag()
    x = f"x{{{t}}}"
    client = owner(gc, x)
    client.execute_command("AI.TENSORSET", x, "FLOAT", 1, "VALUES", 1)
    fails(client, "missing arguments for 'AI.DAGEXECUTE' command", "AI.DAGEXECUTE", "LOAD", 1, x, "|>")
    fails(client, "DAG is empty", "AI.DAGEXECUTE", "LOAD", 1, x, "|>", "|>")
    fails(client, "Invalid DAG command. Unexpected argument:  SOON", "AI.DAGEXECUTE", "LOAD", 1, x, "SOON", "|>", "AI.TENSORGET", x)
    fails(client, "Invalid DAG command. Unexpected argument:  LOAD",
          "AI.DAGEXECUTE", "LOAD", 1, x, "LOAD", 1, x, "|>", "AI.TENSORGET", x)
    fails(client, "number of keys to LOAD into DAG does not match the number of given arguments",
          "AI.DAGEXECUTE", "LOAD", 2, x, "|>", "AI.TENSORGET", x)
    fails(client, "invalid or negative value found in number of keys to LOAD",
          "AI.DAGEXECUTE", "LOAD", 0, x, "|>", "AI.TENSORGET", x)
    fails(client, "PERSIST keys must be unique", "AI.DAGEXECUTE", "PERSIST", 2, x, x, "|>", "AI.TENSORSET", x, "FLOAT", 1, "VALUES", 1)
    fails(client, "Invalid value for TIMEOUT", "AI.DAGEXECUTE", "LOAD", 1, x, "TIMEOUT", 0, "|>", "AI.TENSORGET", x)
    fails(client, "Unsupported command within DAG", "AI.DAGEXECUTE", "LOAD", 1, x, "|>", "SET", x, 1)
    fails(client, "TIMEOUT not allowed within a DAG command",
          "AI.DAGEXECUTE", "LOAD", 1, x, "|>", "AI.MODELEXECUTE", f"m{{{t}}}", "INPUTS", 1, x, "OUTPUTS", 1, "o", "TIMEOUT", 5)
    fails(client, "AI.SCRIPTEXECUTE command cannot be specified in a read-only DAG",
          "AI.DAGEXECUTE_RO", "LOAD", 1, x, "|>", "AI.SCRIPTEXECUTE", f"s{{{t}}}", "f", "INPUTS", 1, x, "OUTPUTS", 1, "o")
    fails(client, "tensor key is empty or in a different shard", "AI.DAGEXECUTE", "LOAD", 1, f"none{{{t}}}", "|>", "AI.TENSORGET", x)
    assert client.execute_command("AI.DAGEXECUTE", "LOAD", 1, x, "TIMEOUT", 5000, "|>", "AI.TENSORGET", x, "VALUES") == [[b"1"]]


def test_info_and_config(gc):
    t = tag()
    model = f"m{{{t}}}"
    client = owner(gc, model)
    client.execute_command("AI.MODELSTORE", model, "TORCH", "CPU", "TAG", "i", "BLOB", torchscript(Affine()))
    info = client.execute_command("AI.INFO", model, "ANYTHING")  # a third argument other than RESETSTAT is ignored
    assert info == [b"key", model.encode(), b"type", b"MODEL", b"backend", b"TORCH", b"device", b"CPU", b"tag", b"i",
                    b"duration", 0, b"samples", 0, b"calls", 0, b"errors", 0]
    fails(client, "cannot find run info for key", "AI.INFO", f"none{{{t}}}")
    fails(client, "wrong number of arguments for 'ai.info' command", "AI.INFO")
    assert client.execute_command("AI.CONFIG", "MODEL_CHUNK_SIZE", 1 << 20) == b"OK"
    assert client.execute_command("AI.CONFIG", "GET", "MODEL_CHUNK_SIZE") == 1 << 20
    fails(client, "MODEL_CHUNK_SIZE: invalid chunk size", "AI.CONFIG", "MODEL_CHUNK_SIZE", 0)
    fails(client, "MODEL_CHUNK_SIZE: missing chunk size", "AI.CONFIG", "MODEL_CHUNK_SIZE")
    assert client.execute_command("AI.CONFIG", "BACKENDSPATH", "/opt/backends") == b"OK"
    assert client.execute_command("AI.CONFIG", "GET", "BACKENDSPATH") == b"/opt/backends"
    fails(client, "BACKENDSPATH: missing path argument", "AI.CONFIG", "BACKENDSPATH")
    assert client.execute_command("AI.CONFIG", "GET", "NOTHING") is None
    assert client.execute_command("AI.CONFIG", "LOADBACKEND", "TORCH", "redisai_torch.so") == b"OK"
    fails(client, "unsupported backend", "AI.CONFIG", "LOADBACKEND", "CAFFE", "x.so")
    fails(client, "error loading backend", "AI.CONFIG", "LOADBACKEND", "TF", "redisai_tensorflow.so")
    fails(client, "unsupported subcommand", "AI.CONFIG", "THREADS")


def test_blocking_commands_are_refused_in_a_transaction(gc):
    client, t, model, x, y = stored_affine(gc, [1, 2, 3, 4])
    pipe = client.pipeline(transaction=True)
    pipe.set(f"k{{{t}}}", "v")
    pipe.execute_command("AI.MODELEXECUTE", model, "INPUTS", 1, x, "OUTPUTS", 1, y)
    with pytest.raises(redis.ResponseError, match="Cannot run RedisAI command within a transaction or a LUA script"):
        pipe.execute()
    assert client.exists(f"k{{{t}}}", y) == 0  # EXEC was refused: nothing ran


def test_tensor_commands_queue_in_a_transaction(gc):
    """AI.TENSORSET and AI.TENSORGET queue between MULTI and EXEC, as in RedisAI; EXEC
    gives each its own reply (errors in place); a malformed one fails the transaction."""
    t = tag()
    x, text = f"x{{{t}}}", f"s{{{t}}}"
    client = owner(gc, x)
    client.set(text, "not a tensor")
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("AI.TENSORSET", x, "FLOAT", 2, "VALUES", 1, 2)
    pipe.set(f"k{{{t}}}", "v")
    pipe.execute_command("AI.TENSORGET", x, "VALUES")
    pipe.execute_command("AI.TENSORGET", x, "META", "BLOB")
    pipe.execute_command("AI.TENSORGET", f"none{{{t}}}")
    pipe.execute_command("AI.TENSORGET", text)
    pipe.execute_command("AI.TENSORSET", text, "FLOAT", 1, "VALUES", 1)
    replies = pipe.execute(raise_on_error=False)
    assert replies[:4] == [b"OK", True, [b"1", b"2"], [b"dtype", b"FLOAT", b"shape", [2], b"blob", np.array([1, 2], "<f4").tobytes()]]
    errors = [str(r) for r in replies[4:]]
    assert "tensor key is empty or in a different shard" in errors[0]
    assert all(e.startswith("WRONGTYPE") for e in errors[1:]), errors
    assert client.get(text) == b"not a tensor"
    pipe = client.pipeline(transaction=True)
    pipe.set(f"k2{{{t}}}", "v")
    pipe.execute_command("AI.TENSORSET", x, "FLOAT32", 1, "VALUES", 1)
    with pytest.raises(redis.ResponseError, match="invalid data type"):
        pipe.execute()
    assert client.exists(f"k2{{{t}}}") == 0  # nothing of the failed transaction ran

def _commands_on_my_connection(client: redis.Redis) -> int:
    """How many commands the server node ran on this client's upstream connection
    (``tot-cmds`` of ``CLIENT INFO``, which the front door forwards on it)."""
    info = client.execute_command("CLIENT", "INFO").decode()
    return int(next(field for field in info.split() if field.startswith("tot-cmds=")).split("=")[1])


def test_tensorsets_of_a_trusted_client_go_to_the_server_in_one_piece(gc):
    """Once a client is known to have authenticated as the node's own user, the front
    door forwards its AI.TENSORSETs as the server script that does them, on its own
    connection and without waiting for earlier replies; errors are still each in its
    place (the handler answers a request the script form refuses), a MULTI whose reply
    is not in yet queues them, and a malformed one still fails the EXEC."""
    t = tag()
    x, y, text = f"x{{{t}}}", f"y{{{t}}}", f"s{{{t}}}"
    client = owner(gc, x)
    client.execute_command("AI.TENSORSET", x, "FLOAT", 1, "VALUES", 0)  # a handler: proves the authentication
    client.set(text, "not a tensor")
    before = _commands_on_my_connection(client)
    pipe = client.pipeline(transaction=False)
    for n in range(3):
        pipe.execute_command("AI.TENSORSET", f"{x}{n}", "FLOAT", 1, "VALUES", n)
    assert pipe.execute() == [b"OK"] * 3
    # the three scripts ran on it (their own calls count too), then CLIENT INFO; through
    # the handler they run on the node's connection and only CLIENT INFO counts here
    assert _commands_on_my_connection(client) >= before + 3 + 1
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("AI.TENSORSET", x, "FLOAT", 2, "VALUES", 1, 2)
    pipe.execute_command("AI.TENSORSET", y, "FLOAT32", 1, "VALUES", 1)
    pipe.execute_command("AI.TENSORSET", text, "FLOAT", 1, "VALUES", 1)
    pipe.execute_command("AI.TENSORSET", y, "FLOAT", 2, "VALUES", 1)
    pipe.execute_command("AI.TENSORGET", x, "VALUES")
    pipe.get(text)
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] == b"OK" and replies[4:] == [[b"1", b"2"], b"not a tensor"], replies
    assert "invalid data type" in str(replies[1])
    assert str(replies[2]).startswith("WRONGTYPE")
    assert "wrong number of values" in str(replies[3]), replies[3]
    assert client.exists(y) == 0
    pipe = client.pipeline(transaction=True)  # MULTI, the commands and EXEC in one write
    pipe.execute_command("AI.TENSORSET", y, "FLOAT", 1, "VALUES", 7)
    pipe.execute_command("AI.TENSORSET", text, "FLOAT", 1, "VALUES", 1)
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] == b"OK" and str(replies[1]).startswith("WRONGTYPE"), replies
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == [b"7"]
    pipe = client.pipeline(transaction=True)
    pipe.set(f"k{{{t}}}", "v")
    pipe.execute_command("AI.TENSORSET", y, "FLOAT32", 1, "VALUES", 1)
    with pytest.raises(redis.ResponseError, match="invalid data type"):
        pipe.execute()
    assert client.exists(f"k{{{t}}}") == 0
    assert client.execute_command("AI.TENSORGET", y, "VALUES") == [b"7"]


def test_tensorgets_of_a_trusted_client_go_to_the_server_in_one_piece(gc):
    """A trusted client's AI.TENSORGETs are forwarded as the server script that reads
    the key, on its own connection with no barrier; the front door turns each marked
    reply into the tensor reply as it passes. Every format, every error in its place,
    and a MULTI whose reply is not in yet queues them: the EXEC result is turned too."""
    t = tag()
    x, text, wrong, none = f"x{{{t}}}", f"s{{{t}}}", f"h{{{t}}}", f"none{{{t}}}"
    client = owner(gc, x)
    client.execute_command("AI.TENSORSET", x, "FLOAT", 2, "VALUES", 1, 2)
    client.set(text, "not a tensor")
    client.hset(wrong, "f", "v")
    blob = np.array([1, 2], "<f4").tobytes()
    before = _commands_on_my_connection(client)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("AI.TENSORGET", x, "VALUES")
    pipe.execute_command("AI.TENSORGET", x, "BLOB")
    pipe.execute_command("AI.TENSORGET", x, "META")
    pipe.execute_command("AI.TENSORGET", x)
    pipe.execute_command("AI.TENSORGET", none)
    pipe.execute_command("AI.TENSORGET", text)
    pipe.execute_command("AI.TENSORGET", wrong, "BLOB")
    pipe.execute_command("AI.TENSORGET", x, "NOSUCHFORMAT")
    pipe.set(text, "still forwarded")
    replies = pipe.execute(raise_on_error=False)
    meta = [b"dtype", b"FLOAT", b"shape", [2]]
    assert replies[:4] == [[b"1", b"2"], blob, meta, [*meta, b"blob", blob]], replies
    assert "tensor key is empty or in a different shard" in str(replies[4])
    assert str(replies[5]).startswith("WRONGTYPE") and str(replies[6]).startswith("WRONGTYPE"), replies[5:7]
    assert isinstance(replies[7], redis.ResponseError) and replies[8] is True, replies[7:]
    # seven scripts ran on its connection (the malformed one took the handler's path),
    # then the SET and CLIENT INFO
    assert _commands_on_my_connection(client) >= before + 7 + 2
    pipe = client.pipeline(transaction=True)  # MULTI, the commands and EXEC in one write
    pipe.execute_command("AI.TENSORSET", x, "FLOAT", 1, "VALUES", 7)
    pipe.execute_command("AI.TENSORGET", x, "VALUES")
    pipe.execute_command("AI.TENSORGET", none)
    replies = pipe.execute(raise_on_error=False)
    assert replies[:2] == [b"OK", [b"7"]], replies
    assert "tensor key is empty or in a different shard" in str(replies[2])
    assert client.execute_command("AI.TENSORGET", x, "META") == [b"dtype", b"FLOAT", b"shape", [1]]


def test_keys_in_another_slot_or_shard(cluster3):
    """CROSSSLOT when a command's keys hash to different slots; MOVED (to the owner's
    front door) when they belong to another shard."""
    client = redis.Redis(port=cluster3.ports[0])
    cluster = cluster3.cluster_client()
    here = next(f"{{{t}}}" for t in (tag() for _ in range(1000)) if cluster.get_node_from_key(f"{{{t}}}").port == cluster3.ports[0])
    away = next(f"{{{t}}}" for t in (tag() for _ in range(1000)) if cluster.get_node_from_key(f"{{{t}}}").port != cluster3.ports[0])
    away_port = cluster.get_node_from_key(away).port
    client.execute_command("AI.TENSORSET", f"x{here}", "FLOAT", 1, "VALUES", 1)
    for command in (
        ("AI.MODELEXECUTE", f"m{here}", "INPUTS", 1, f"x{away}", "OUTPUTS", 1, f"y{here}"),
        ("AI.DAGEXECUTE", "LOAD", 1, f"x{here}", "PERSIST", 1, f"y{away}", "|>", "AI.TENSORSET", f"y{away}", "FLOAT", 1, "VALUES", 1),
        ("AI.SCRIPTEXECUTE", f"s{here}", "f", "KEYS", 1, f"k{away}", "INPUTS", 1, f"x{here}", "OUTPUTS", 1, f"y{here}"),
    ):
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            client.execute_command(*command)
    for command in (
        ("AI.TENSORGET", f"x{away}", "META"),
        ("AI.TENSORSET", f"x{away}", "FLOAT", 1, "VALUES", 1),
        ("AI.MODELEXECUTE", f"m{away}", "INPUTS", 1, f"x{away}", "OUTPUTS", 1, f"y{away}"),
        ("AI.DAGEXECUTE", "ROUTING", away, "|>", "AI.TENSORSET", "t", "FLOAT", 1, "VALUES", 1),
        ("AI.INFO", f"m{away}"),
    ):
        with pytest.raises(redis.exceptions.MovedError) as moved:
            client.execute_command(*command)
        assert moved.value.port == away_port, command
    assert cluster.exists(f"x{away}") == 0  # nothing was written on the other shard
    cluster.close()
