"""``python scripts/bench.py <suite> [options] [--json]``: the options of every suite and ``main``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import __doc__ as USAGE
from . import ai, batch, chaos, frontdoor, nlp, qa, triggers
from .harness import BASE_PORT, Case, report_json, report_table

SUITES: dict[str, Callable[[argparse.Namespace], list[Case]]] = {
    "chaos": chaos.run_suite,
    "nlp": nlp.run_suite,
    "batch": batch.run_suite,
    "triggers": triggers.run_suite,
    "ai": ai.run_suite,
    "qa": qa.run_suite,
    "frontdoor": frontdoor.run_suite,
}


def parser() -> argparse.ArgumentParser:
    """The command line: a suite and the options of all suites (each says which it is for)."""
    parser = argparse.ArgumentParser(prog="bench.py", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--keys", type=int, default=200_000, help="batch: number of hashes")
    parser.add_argument("--events", type=int, default=20_000, help="triggers: events per measurement")
    parser.add_argument("--stream-entries", type=int, default=2_000, help="triggers: stream entries across the kill")
    parser.add_argument("--calls", type=int, default=200, help="ai, qa: sequential calls for the overhead")
    parser.add_argument("--clients", type=int, default=32, help="ai: concurrent clients for batching")
    parser.add_argument("--model", choices=["minilm", "bert-base"], default="minilm",
                        help="ai: the packaged 6-layer encoder (seq 64) or a random-weight bert-base QA model (seq 128)")
    parser.add_argument("--device", default="CPU", help="ai: CPU, GPU or GPU:<n> (models stored and run there)")
    parser.add_argument("--seconds", type=float, default=15.0, help="ai, qa: seconds per batching / load measurement")
    parser.add_argument("--copies", type=int, default=3, help="nlp: copies of each of the 22 sample articles")
    parser.add_argument("--plain-runs", type=int, default=3, help="qa: runs of the plain script (median)")
    parser.add_argument("--qa-clients", type=int, default=16, help="qa: concurrent /qasearch clients")
    parser.add_argument("--large-calls", type=int, default=6, help="qa: bert-large calls (each way)")
    parser.add_argument("--no-bert-large", dest="bert_large", action="store_false", help="qa: skip the bert-large case")
    parser.add_argument("--chaos-entries", type=int, default=1500, help="chaos: stream entries per fault")
    parser.add_argument("--rounds", type=int, default=3, help="frontdoor: alternating rounds per case (median)")
    parser.add_argument("--frontdoor-clients", type=int, default=50, help="frontdoor: client connections")
    parser.add_argument("--frontdoor-requests", type=int, default=50_000,
                        help="frontdoor: requests per redis-benchmark run (times the pipeline depth)")
    parser.add_argument("--base-port", type=int, default=BASE_PORT)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the suite the command line names and print its figures (a table, or ``--json``)."""
    args = parser().parse_args(argv)
    cases = SUITES[args.suite](args)
    print(report_json(args.suite, cases) if args.json else report_table(args.suite, cases))
    return 0
