"""``gears ingest``, ``gears pipeline`` and ``gears api``: the reference pipelines' commands.

    gears ingest cord19 PATH... [--host 127.0.0.1] [--port 30001] [--no-wait] [--timeout S] [--json]
    gears pipeline register nlp [--host --port] [--graph HOST:PORT] [--dictionary FILE] [--json]
    gears pipeline register qa [--host --port] [--max-length 512] [--cache-ttl 0] [--no-backfill] [--json]
    gears pipeline status [--host --port] [--graph HOST:PORT] [--json] [--watch [--interval 2]]
    gears ai load-qa [--model-dir DIR] [--backend TORCH|ONNX] [--device CPU|GPU] [--batch-size 16] [--host --port] [--json]
    gears api [--listen 127.0.0.1:8080] [--host --port] [--graph HOST:PORT]

Each names a front door with ``--host``/``--port`` (or ``--cluster HOST:PORT``) and takes
``--user``/``--password``/``--password-file`` (or ``$GEARS_USER``/``$GEARS_PASSWORD``):
see :mod:`gears.local.cliargs`. Progress goes to stderr; ``--json`` prints one JSON document on
stdout instead of the text summary.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gears.wire import credentials
from gears.local.cliargs import add_connection_arguments, add_json, front_door
from gears.local.cliargs import address as _address

__all__ = ["add_parsers"]

#: Where ``gears api`` listens unless told (``--listen``).
DEFAULT_LISTEN = ("127.0.0.1", 8080)


def _listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, or a bare ``HOST`` on port 8080."""
    return _address(text) if ":" in text else (text, DEFAULT_LISTEN[1])


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 4:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 4, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return seconds


def _connection_options(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)


def _cluster(args: argparse.Namespace) -> Any:
    """A cluster client from the front door the connection options name, with the given credentials."""
    from redis.cluster import RedisCluster

    host, port = front_door(args)
    return RedisCluster(host=host, port=port, decode_responses=True, **credentials.from_args(args).redis_kwargs())


def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gears_pipelines.ingest import find_articles, ingest
    from gears_pipelines.progress import ARTICLES_REGEX, stage_counts

    files = find_articles(args.paths)
    cluster = _cluster(args)
    try:
        baseline = stage_counts(cluster)
        started = time.perf_counter()
        with tqdm(total=len(files), unit="article", desc="write", disable=args.json or None) as bar:
            counts = ingest(cluster, files, progress=bar.update)
        result: dict[str, Any] = {**counts, "write_s": round(time.perf_counter() - started, 3)}
        if args.wait and counts["new"] and not baseline.registrations:
            result["warning"] = f"no registration on {ARTICLES_REGEX} (run `gears pipeline register nlp`): nothing processes these articles"
        elif args.wait and counts["new"]:
            status = _follow(cluster, baseline, counts["new"], args)
            result.update(process_s=round(time.perf_counter() - started, 3), pipeline=status)
    finally:
        cluster.close()
    if args.json:
        print(json.dumps(result))
        return 0
    line = f"{counts['new']} new, {counts['skipped']} already ingested, written in {result['write_s']:.1f} s"
    if "process_s" in result:
        status = result["pipeline"]
        line += (
            f"; processed in {result['process_s']:.1f} s ({status['sentences']} sentences, "
            f"{status['matched_sentences']} matched, {status['edges_pending']} edges pending)"
        )
    print(line)
    if "warning" in result:
        print(f"gears: warning: {result['warning']}", file=sys.stderr)
    return 0


def _follow(cluster: Any, baseline: Any, new: int, args: argparse.Namespace) -> dict[str, Any]:
    """Show the pipeline's progress over the ``new`` articles until it has drained; its last status."""
    from tqdm import tqdm

    from gears_pipelines.progress import NotDrained, follow

    with tqdm(total=new, unit="article", desc="process", disable=args.json or None) as bar:

        def report(stage: Any, status: dict[str, Any]) -> None:
            bar.update(min(stage.finished, new) - bar.n)
            bar.set_postfix(
                sentences=status["sentences"], matched=status["matched_sentences"], edges_pending=status["edges_pending"],
                running=status["executions_pending"], failures=stage.failures, refresh=False,
            )

        try:
            return follow(cluster, baseline, new, report, args.timeout)
        except NotDrained as exc:
            raise SystemExit(f"gears: {exc}") from None


def _register(args: argparse.Namespace) -> int:
    import redis

    from gears_pipelines.deploy import DeployError, deploy_nlp, deploy_qa

    host, port = front_door(args)
    client = redis.Redis(host=host, port=port, decode_responses=True, **credentials.from_args(args).redis_kwargs())
    try:
        if args.name == "nlp":
            deploy_nlp(client, args.graph, args.dictionary)
            result: dict[str, Any] = {"pipeline": "nlp", "session": "nlp", "graph": "%s:%d" % args.graph}
            text = "nlp pipeline registered on every shard (session 'nlp')"
        else:
            count = deploy_qa(client, args.max_length, args.cache_ttl, backfill=not args.no_backfill)
            result = {"pipeline": "qa", "session": "qa", "cache_ttl": args.cache_ttl, "tokenised": count}
            cache = f"answers cached for {args.cache_ttl} s" if args.cache_ttl else "answers not cached"
            text = f"qa pipeline registered on every shard (session 'qa'; {cache}); {count} sentence hashes tokenised"
    except DeployError as exc:
        print(f"gears: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps(result) if args.json else text)
    return 0


def _status_text(status: dict[str, Any]) -> str:
    """``gears pipeline status`` as a person reads it: counters, then one line per stage."""
    lines = [f"{name:<20} {value}" for name, value in status.items() if name != "stages" and value is not None]
    stages = status["stages"]
    if stages:
        width = max(len(s["stage"]) for s in stages)
        lines += ["", f"{'stage':<{width}}  {'triggered':>9}  {'failures':>8}  last error"]
        for stage in stages:
            lines.append(f"{stage['stage']:<{width}}  {stage['triggered']:>9}  {stage['failures']:>8}  {stage['last_error'] or '-'}")
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> int:

    from gears_pipelines.deploy import pipeline_status

    cluster = _cluster(args)  # an unreachable front door or refused credentials: gears.local.cli's one line
    interrupted = threading.Event()

    def interrupt(signum: int, frame: Any) -> None:
        # A KeyboardInterrupt raised inside a finalizer (a socket's __del__ during a refresh)
        # is printed and dropped by Python; the flag still ends the loop after that refresh.
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        while not interrupted.is_set():
            status = pipeline_status(cluster, args.graph)
            if args.json:
                print(json.dumps(status), flush=True)
            else:
                if args.watch:  # like watch(1): a fresh screen with a header per refresh
                    header = f"Every {args.interval:g}s: gears pipeline status"
                    print(("\033[H\033[2J" if sys.stdout.isatty() else "") + f"{header}    {time.strftime('%c')}\n", flush=True)
                print(_status_text(status), flush=True)
            if not args.watch:
                return 0
            interrupted.wait(args.interval)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)
        cluster.close()


def _load_qa(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gears_pipelines.deploy import DeployError, load_qa_model

    if args.model_dir is not None and not Path(args.model_dir).is_dir():
        raise FileNotFoundError(2, "no such model folder", args.model_dir)
    import torch  # noqa: F401 - the 'ai' extra: missing, the command stops before it connects
    cluster = _cluster(args)
    started = time.perf_counter()
    bars: list[Any] = []  # the store's progress bar, made when the store starts

    def step(text: str) -> None:
        if not args.json:
            tqdm.write(f"gears ai load-qa: {text} ...", file=sys.stderr)

    def progress(stored: int, shards: int, size: int) -> None:
        if not bars:
            bars.append(tqdm(total=shards * size, unit="B", unit_scale=True, desc="store", disable=True if args.json else None))
        bars[0].set_postfix_str(f"shard {min(stored + 1, shards)}/{shards}", refresh=False)
        bars[0].update(stored * size - bars[0].n)

    try:
        info = load_qa_model(
            cluster, args.model_dir, args.backend, args.device, args.batch_size, args.min_batch_size, args.min_batch_timeout,
            step=step, progress=progress,
        )
    except (DeployError, OSError, ValueError) as exc:
        print(f"gears: load-qa failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for bar in bars:
            bar.close()
        cluster.close()
    described = info.describe()
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({"model": "bert-qa{<tag>}", "seconds": round(elapsed, 3), **described}))
        return 0
    notice = described.pop("notice", None)
    print(f"bert-qa{{<tag>}} stored on every shard in {elapsed:.1f} s: {json.dumps(described)}")
    if notice:
        print(f"NOTE: {notice}")
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from gears_pipelines.api import create_app
    from gears_pipelines.graph import GraphWriter
    from gears_pipelines.nlp.concepts import load_dictionary

    from gears_pipelines.nlp_pipeline import DEFAULT_DICTIONARY

    if args.dictionary is not None and not Path(args.dictionary).is_file():
        raise FileNotFoundError(2, "no such dictionary file", args.dictionary)
    cluster = _cluster(args)
    app = create_app(cluster, GraphWriter(*args.graph), load_dictionary(args.dictionary or DEFAULT_DICTIONARY))
    uvicorn.run(app, host=args.listen[0], port=args.listen[1], log_level="info")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``ingest``, ``pipeline`` and ``api`` on the ``gears`` command."""
    ingest = sub.add_parser("ingest", help="load CORD-19 articles into the cluster")
    kinds = ingest.add_subparsers(dest="kind", required=True)
    cord19 = kinds.add_parser("cord19", help="CORD-19 JSON files or folders of them")
    cord19.add_argument("paths", nargs="+")
    _connection_options(cord19)
    cord19.add_argument(
        "--wait", action=argparse.BooleanOptionalAction, default=True,
        help="after the writes, show the pipeline's progress until it has drained (default; --no-wait: return after the writes)",
    )
    cord19.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds (exit 1)")
    add_json(cord19, "the counts (and the pipeline's state once drained)")
    cord19.set_defaults(func=_ingest)

    pipeline = sub.add_parser("pipeline", help="the reference pipelines")
    actions = pipeline.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="register a pipeline on every shard")
    register.add_argument("name", choices=["nlp", "qa"])
    _connection_options(register)
    register.add_argument("--graph", type=_address, default=("127.0.0.1", 9001), help="nlp: FalkorDB HOST:PORT (default 127.0.0.1:9001)")
    register.add_argument("--dictionary", help="nlp: a concept dictionary TSV (default: the bundled one)")
    register.add_argument("--max-length", type=_positive, default=512, help="qa: most tokens of question + context when the model does not say (default 512)")
    register.add_argument("--cache-ttl", type=int, default=0, help="qa: keep answers under their key this many seconds (default 0: off)")
    register.add_argument("--no-backfill", action="store_true", help="qa: do not tokenise the sentences that exist already")
    add_json(register, "what was registered")
    register.set_defaults(func=_register)
    status = actions.add_parser("status", help="per-stage progress, failures and last errors")
    _connection_options(status)
    status.add_argument("--graph", type=_address, help="FalkorDB HOST:PORT (default: the one the nlp pipeline was registered with)")
    status.add_argument("--json", action="store_true", help="one JSON object (with --watch: one per line)")
    status.add_argument("--watch", action="store_true", help="refresh until Ctrl-C, like watch(1)")
    status.add_argument("--interval", type=_seconds, default=2.0, help="--watch: seconds between refreshes (default 2)")
    status.set_defaults(func=_status)

    ai = sub.add_parser("ai", help="models of the reference pipelines")
    ai_actions = ai.add_subparsers(dest="action", required=True)
    load_qa = ai_actions.add_parser(
        "load-qa", help="export a BERT QA model and store it as bert-qa{<tag>} on every shard",
        description="Without --model-dir the demo model is stored: a pretrained MiniLM encoder with an "
        "UNTRAINED question-answering head (answers are not meaningful).",
    )
    load_qa.add_argument("--model-dir", help="a local BertForQuestionAnswering checkpoint (save_pretrained output)")
    load_qa.add_argument("--backend", choices=["TORCH", "ONNX"], type=str.upper, default="TORCH")
    load_qa.add_argument("--device", default="CPU", help="CPU, GPU or GPU:<n> (default CPU)")
    load_qa.add_argument("--batch-size", type=int, default=16, help="BATCHSIZE of the model runner (0: no batching; default 16)")
    load_qa.add_argument("--min-batch-size", type=int, default=0, help="MINBATCHSIZE (default 0)")
    load_qa.add_argument("--min-batch-timeout", type=int, default=0, help="MINBATCHTIMEOUT in ms (default 0)")
    _connection_options(load_qa)
    add_json(load_qa, "the stored model's description")
    load_qa.set_defaults(func=_load_qa)

    api = sub.add_parser("api", help="serve the search API and the concept explorer page (FastAPI on uvicorn)")
    api.add_argument(
        "--listen", type=_listen, default=DEFAULT_LISTEN, metavar="HOST[:PORT]",
        help="where the API listens (default 127.0.0.1:8080; the page is at http://HOST:PORT/)",
    )
    _connection_options(api)
    api.add_argument("--graph", type=_address, default=("127.0.0.1", 9001), help="FalkorDB HOST:PORT")
    api.add_argument("--dictionary", help="the concept dictionary TSV (default: the bundled one)")
    api.set_defaults(func=_api)
