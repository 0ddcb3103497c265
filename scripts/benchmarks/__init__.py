"""Benchmarks: the framework against what a user would write instead, in the same run.

    python scripts/bench.py batch [--keys 200000] [--json]
    python scripts/bench.py triggers [--events 20000] [--json]
    python scripts/bench.py ai [--clients 32] [--model minilm|bert-base] [--device CPU|GPU] [--json]
    python scripts/bench.py nlp [--copies 3] [--json]
    python scripts/bench.py qa [--no-bert-large] [--json]
    python scripts/bench.py chaos [--chaos-entries 1500] [--json]
    python scripts/bench.py frontdoor [--rounds 3] [--json]

Each suite starts its own local cluster (in a temporary folder, on its own ports),
measures the framework and the baseline, checks that both computed the same thing,
and prints both figures and their ratio. Absolute numbers on a shared 2-core machine
are noise; the ratios are the figures. ``--json`` prints one object:
``{"suite", "cases": [{"name", "metric", "framework", "baseline", "ratio",
"higher_is_better", "goal"}], "env": {...}}``.

The package: :mod:`.harness` (the figure type, timing, throw-away clusters, reports), one
module per suite (each with ``run_suite(args) -> list[Case]``), :mod:`.cli` (the options
and ``main``); ``scripts/bench.py`` is the entry point.
"""
