"""Benchmarks: ``python scripts/bench.py <suite> [options] [--json]`` (``--help`` lists the
suites and options). The suites live in ``scripts/benchmarks/`` (Python puts this script's
folder first on ``sys.path``, so the package imports as ``benchmarks``)."""

import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main())
