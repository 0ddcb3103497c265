"""The model-serving side of a worker: loaded models and scripts, runs, statistics.

The gears node parses and validates ``AI.*`` commands; what needs a backend comes here
(one worker per shard, so models run where their keys live). Input tensors are read
from the local server node at command time (one pipelined round trip with the model's
metadata), runs go through the :class:`~gears.ai.runner.Runner`, and outputs are
written back in one pipeline by the run queue's thread, which also answers the node.
``AI.MODELEXECUTE`` of a loaded model starts on the channel's reading thread
(:meth:`AIService.start_model_execute`), so no other thread sits on its path: every
hand-over between threads and processes costs a wake-up, which is most of the
framework's share of a run. Loaded models are cached per key and version: a re-stored
model is a new version (and a new batching identity), and its statistics restart.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import hiredis

from gears.errors import CommandError, GearsError
from gears.wire.serverconn import ConnectionPerThread, ServerConnection
from gears.ai.backends import LoadedModel, LoadedScript, load_model, load_script
from gears.ai.runner import TIMEDOUT, Runner, RunRequest, RunStats
from gears.ai.storage import MARKER_FIELD, ModelMeta, ScriptMeta, chunk_fields
from gears.ai.tensor_keys import decode_key_value, encode_key_value
from gears.ai.tensors import Tensor

__all__ = ["AIService", "MISSING_TENSOR"]

MISSING_TENSOR = "ERR tensor key is empty or in a different shard"


class AIService:
    """Models, scripts and run queues of one shard."""

    def __init__(self, connections: ConnectionPerThread, threads_per_queue: int = 1) -> None:
        """``connections`` gives each thread its own connection to the local server node."""
        self._connections = connections
        self.runner = Runner(threads_per_queue)
        self._models: dict[str, tuple[str, LoadedModel, ModelMeta]] = {}
        self._scripts: dict[str, tuple[str, LoadedScript, ScriptMeta]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------- server I/O
    def connection(self) -> ServerConnection:
        """This thread's connection to the local server node."""
        return self._connections.get()

    def _server(self, use: Callable[[ServerConnection], Any]) -> Any:
        """``use(connection)``; a connection that failed is dropped, so the next use reconnects."""
        try:
            return use(self._connections.get())
        except (ConnectionError, OSError):
            self._connections.discard()
            raise

    # ------------------------------------------------------------------ loading
    def check_model(self, key: str, meta_json: str) -> tuple[list[str], list[str]]:
        """Load a freshly stored version (its chunks are in the keyspace, its meta not yet);
        returns the input and output names the backend reports."""
        meta = ModelMeta.from_json(meta_json)
        model = self._load(key, meta)
        return model.inputs, model.outputs

    def _load(self, key: str, meta: ModelMeta) -> LoadedModel:
        fields = chunk_fields(meta.version, meta.chunks)
        chunks = self._server(lambda conn: conn.call("HMGET", key, *fields)) if fields else []
        if any(c is None for c in chunks):
            raise CommandError("ERR model key is empty")
        blob = b"".join(chunks)
        model = self.runner.call(meta.device, lambda: load_model(meta.backend, meta.device, blob))
        if meta.backend != "TF":
            meta.inputs, meta.outputs = model.inputs, model.outputs  # what the model itself declares
        with self._lock:
            self._models[key] = (meta.version, model, meta)
            stats = self.runner.stats.get(key)
            if stats is None or stats.kind != "MODEL" or stats.version != meta.version:
                self.runner.stats[key] = RunStats("MODEL", meta.backend, meta.device, meta.tag, meta.version)
        return model

    def model(self, key: str, meta: ModelMeta) -> LoadedModel:
        """The loaded model for this version of ``key`` (loading it if needed)."""
        cached = self._models.get(key)
        if cached is not None and cached[0] == meta.version:
            return cached[1]
        return self._load(key, meta)

    def check_script(self, key: str, meta_json: str, source: str) -> None:
        """Compile a script being stored (errors are the store's reply)."""
        meta = ScriptMeta.from_json(meta_json)
        script = self.runner.call(meta.device, lambda: load_script(meta.device, source, meta.entry_points))
        with self._lock:
            self._scripts[key] = (meta.version, script, meta)
            self.runner.stats[key] = RunStats("SCRIPT", "TORCH", meta.device, meta.tag, meta.version)

    def script(self, key: str, meta: ScriptMeta) -> LoadedScript:
        cached = self._scripts.get(key)
        if cached is not None and cached[0] == meta.version:
            return cached[1]
        source = self._server(lambda conn: conn.call("HGET", key, "source"))
        if source is None:
            raise CommandError("ERR script key is empty")
        self.check_script(key, meta.to_json(), source.decode())
        return self._scripts[key][1]

    # -------------------------------------------------------------- reading
    def read(self, meta_key: str, tensor_keys: list[str]) -> tuple[bytes | None, list[Tensor]]:
        """A model/script key's ``meta`` and the input tensors, in one round trip."""
        metas, tensors = self.fetch([meta_key], tensor_keys)
        return metas[0], tensors

    def fetch(self, meta_keys: list[str], tensor_keys: list[str]) -> tuple[list[bytes | None], list[Tensor]]:
        """The ``meta`` of model/script keys and the tensors of tensor keys, in one round trip."""
        commands = [*(("HGET", k, "meta") for k in meta_keys), *(("GET", k) for k in tensor_keys)]
        replies = self._server(lambda conn: conn.pipeline(commands)) if commands else []
        metas = replies[: len(meta_keys)]
        for meta in metas:
            if isinstance(meta, hiredis.ReplyError):
                raise CommandError(str(meta))
        tensors = []
        for reply in replies[len(meta_keys) :]:
            if isinstance(reply, hiredis.ReplyError):
                raise CommandError(str(reply))
            if reply is None:
                raise CommandError(MISSING_TENSOR)
            tensors.append(decode_key_value(reply))
        return metas, tensors

    def write(self, keys: list[str], tensors: list[Tensor]) -> None:
        """Store output tensors (one pipeline)."""
        commands = [("SET", k, encode_key_value(t)) for k, t in zip(keys, tensors)]
        replies = self._server(lambda conn: conn.pipeline(commands))
        errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if errors:
            raise CommandError(str(errors[0]))

    # ---------------------------------------------------------------- running
    def model_request(self, key: str, meta: ModelMeta, inputs: list[Tensor], timeout_ms: int | None) -> RunRequest:
        model = self.model(key, meta)
        return RunRequest(
            target=model,
            fn=model.run,
            inputs=[t.to_numpy() for t in inputs],
            stats=self.runner.stats.get(key),
            label=key,
            batchsize=meta.batchsize,
            minbatchsize=meta.minbatchsize,
            minbatchtimeout=meta.minbatchtimeout,
            timeout_ms=timeout_ms,
        )

    def model_execute(self, key: str, input_keys: list[str], output_keys: list[str], timeout_ms: int | None) -> Any:
        """``AI.MODELEXECUTE``: ``OK``, ``TIMEDOUT`` or an error reply (waits for the run)."""
        answers: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.start_model_execute(key, input_keys, output_keys, timeout_ms, lambda ok, value: answers.put((ok, value)))
        ok, value = answers.get()
        if not ok:
            raise value
        return value

    def start_model_execute(
        self,
        key: str,
        input_keys: list[str],
        output_keys: list[str],
        timeout_ms: int | None,
        answer: Callable[[bool, Any], None],
        *,
        may_load: bool = True,
    ) -> bool:
        """Read the inputs and queue the run; the run queue's thread writes the outputs and
        calls ``answer(ok, value)`` (``OK``, ``TIMEDOUT`` or the error).

        With ``may_load=False`` (a caller that must not wait seconds) nothing is done and
        False is returned when this version of the model is not loaded yet.
        """
        if not may_load and key not in self._models:
            return False
        try:
            meta = self._model_meta(key)
            if meta.inputs and len(input_keys) != len(meta.inputs):
                raise CommandError("Number of keys given as INPUTS here does not match model definition")
            if meta.outputs and len(output_keys) != len(meta.outputs):
                raise CommandError("Number of keys given as OUTPUTS here does not match model definition")
            meta_json, inputs = self.read(key, input_keys)
            if meta_json is None:
                raise CommandError("ERR model key is empty")
            meta = ModelMeta.from_json(meta_json)
            if not may_load and self._models[key][0] != meta.version:
                return False
            request = self.model_request(key, meta, inputs, timeout_ms)
        except Exception as exc:  # noqa: BLE001 - the error is the command's reply
            answer(False, exc)
            return True
        request.callbacks.append(lambda done: self._answer_finished(done, output_keys, answer))
        self.runner.submit(meta.device, request)
        return True

    def _model_meta(self, key: str) -> ModelMeta:
        """The meta of the cached model, or read from the key (which must hold a model)."""
        cached = self._models.get(key)
        if cached is not None:
            return cached[2]
        marker, meta = self._server(lambda conn: conn.call("HMGET", key, MARKER_FIELD, "meta"))
        if marker is None and meta is None:
            if self._server(lambda conn: conn.call("EXISTS", key)):
                raise CommandError("WRONGTYPE Operation against a key holding the wrong kind of value")
            raise CommandError("ERR model key is empty")
        if marker != b"model" or meta is None:
            raise CommandError("WRONGTYPE Operation against a key holding the wrong kind of value")
        return ModelMeta.from_json(meta)

    def script_execute(
        self,
        key: str,
        function: str,
        keys: list[str],
        input_keys: list[str],
        args: list[str],
        output_keys: list[str],
        timeout_ms: int | None,
        variadic: int = -1,
    ) -> Any:
        """``AI.SCRIPTEXECUTE`` / ``AI.SCRIPTRUN``: ``OK``, ``TIMEDOUT`` or an error reply."""
        meta_json, inputs = self.read(key, input_keys)
        if meta_json is None:
            raise CommandError("ERR script key is empty")
        meta = ScriptMeta.from_json(meta_json)
        request = self.script_request(key, meta, function, keys, args, inputs, timeout_ms, variadic)
        return self._finish(self.runner.run(meta.device, request), output_keys)

    def script_request(
        self,
        key: str,
        meta: ScriptMeta,
        function: str,
        keys: list[str],
        args: list[str],
        inputs: list[Tensor],
        timeout_ms: int | None,
        variadic: int = -1,
    ) -> RunRequest:
        script = self.script(key, meta)
        return RunRequest(
            target=script,
            fn=lambda arrays: script.call(function, arrays, keys, args, variadic),
            inputs=[t.to_numpy() for t in inputs],
            stats=self.runner.stats.get(key),
            timeout_ms=timeout_ms,
            label=key,
        )

    def _answer_finished(self, request: RunRequest, output_keys: list[str], answer: Callable[[bool, Any], None]) -> None:
        try:
            value, ok = self._finish(request, output_keys), True
        except Exception as exc:  # noqa: BLE001 - the error is the command's reply
            value, ok = exc, False
        answer(ok, value)

    def _finish(self, request: RunRequest, output_keys: list[str]) -> Any:
        if request.timed_out:
            return TIMEDOUT
        if request.error is not None:
            raise GearsError(request.error)
        outputs = request.outputs or []
        if len(outputs) < len(output_keys):
            raise GearsError("ERR Model did not generate the expected number of outputs")
        self.write(output_keys, [Tensor.from_numpy(a, copy=False) for a in outputs[: len(output_keys)]])
        return "OK"

    # ------------------------------------------------------------------ stats
    def info(self, key: str, reset: bool) -> Any:
        """``AI.INFO key [RESETSTAT]`` for this shard."""
        stats = self.runner.stats.get(key)
        if stats is None:
            raise CommandError("ERR cannot find run info for key")
        if reset:
            stats.reset()
            return "OK"
        return stats.reply(key)

    def forget(self, key: str) -> None:
        """A model or script key was deleted."""
        with self._lock:
            self._models.pop(key, None)
            self._scripts.pop(key, None)
            self.runner.stats.pop(key, None)
