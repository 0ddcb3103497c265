"""StreamReader (batch side): the entries of one local stream after an id.

``fromId`` is exclusive, as with ``XREAD``. Entries are read 1000 at a time. Only the
shard that owns the stream's slot yields records; the others yield none.
"""

from __future__ import annotations

from typing import Any, Iterator

from gears.engine.records import GearsScriptError

from gears_readers.base import ReaderContext

__all__ = ["StreamReader", "stream_record"]

BATCH = 1000


def stream_record(stream: str, entry_id: str, fields: list[str] | None) -> dict[str, Any]:
    """The StreamReader record: ``{'key': stream, 'id': id, 'value': {field: value}}``
    (from a decoding connection)."""
    values = fields or []
    return {"key": stream, "id": entry_id, "value": dict(zip(values[::2], values[1::2]))}


class StreamReader:
    """``GB('StreamReader').run(stream_name, fromId='0-0')``."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        if not isinstance(arg, str):
            raise GearsScriptError("regex argument must be a string")
        from_id = options.get("fromId", "0-0")
        if not isinstance(from_id, str):
            raise GearsScriptError("fromId argument must be a string")
        self.stream = arg
        self.from_id = from_id

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        if not ctx.owns(self.stream):
            return  # another shard holds this stream
        conn = ctx.open_connection(decode=True)
        last = self.from_id
        try:
            while True:
                reply = conn.call("XREAD", "COUNT", BATCH, "STREAMS", self.stream, last)
                if not reply:
                    return
                entries = reply[0][1]
                for entry_id, fields in entries:
                    yield stream_record(self.stream, entry_id, fields)
                if len(entries) < BATCH:
                    return
                last = entries[-1][0]
        finally:
            conn.close()
