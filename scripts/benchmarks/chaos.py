"""``bench.py chaos``: one fault at a time with a writer running (see cluster/chaos.py and
docs/operations.md): what was lost, run twice, and how long recovery took."""

from __future__ import annotations

import argparse

from .harness import Case, local_cluster


MEMORY_LIMIT_MB = 300


def run_suite(args: argparse.Namespace) -> list[Case]:
    """One fault at a time with a writer running (see cluster/chaos.py, docs/operations.md):
    a server node restart and a poison entry on one master, ``RG.ABORTEXECUTION`` of a
    C loop, and a master host lost with ``--replicas 1`` (3 masters)."""
    from gears_cluster import chaos

    batch = 5
    entries = args.chaos_entries
    with local_cluster("gears-bench-chaos-", masters=1, base_port=args.base_port) as state:
        restart = chaos.stream_fault(state, "r", entries, lambda: chaos.restart_server(state, state.nodes[0]), batch=batch)
        poisoned, others, keys = chaos.poison(state, "p", "o", entries // 5, 50, batch=batch)
        abort = chaos.AbortRun()
        chaos.stream_fault(state, "a", entries // 5, lambda: chaos.abort_c_loop(state, abort), batch=batch)
        _, killed_at = chaos.memory_bomb(state, MEMORY_LIMIT_MB)
    with local_cluster("gears-bench-failover-", masters=3, replicas=1, base_port=args.base_port + 100,
                       config={"cluster-node-timeout": "1000"}) as state:
        lost_host = chaos.failover(state, "f", entries, batch=batch)
    others_ok = (others.processed + keys.processed) / max(1, others.written + keys.written)
    stream, takeover = lost_host.stream, lost_host.takeover
    return [
        Case("server_restart_lost", f"entries lost of {restart.written} (server kill -9 + restart)", float(restart.lost), None, False, "0"),
        Case("server_restart_duplicates", "entries run twice", float(restart.duplicates), None, False, f"<= {batch} (one batch)"),
        Case("server_restart_recovery_s", "s from the kill to the next entry processed (restart included)", restart.recovery_s, None, False, "-"),
        Case("poison_other_registrations_ok", "share of the other registrations' work done", others_ok, None, True, "1.0"),
        Case("poison_lost", "entries lost besides the poison one", float(poisoned.lost - 1), None, False, "0"),
        Case("abort_seconds", "s from RG.ABORTEXECUTION of a C loop to its end", abort.seconds, None, False, "<= AbortGracePeriodMS (2 s) + 1"),
        Case("abort_listing_seconds", "s RG.DUMPEXECUTIONS took meanwhile", abort.listing_seconds, None, False, "<= 2.5 (it waits 2 s for the worker)"),
        Case("memory_killed_at_mb", f"MB a memory bomb reached under WorkerMaxMemoryMB={MEMORY_LIMIT_MB}", float(killed_at), None, False, f"< {2 * MEMORY_LIMIT_MB}"),
        Case("failover_lost", f"entries lost of {stream.written} confirmed by WAIT 1", float(stream.lost), None, False, "0"),
        Case("failover_stuck_pending", "entries left pending", float(stream.pending), None, False, "0"),
        Case("failover_duplicates", "entries run twice", float(stream.duplicates), None, False, "bounded"),
        Case("failover_takeover_s", "s from promotion to a new entry processed", takeover.stream_s, None, False, "<= 2"),
        Case("failover_keys_lost", "key events lost between promotion and takeover (probe every 10 ms)", float(takeover.keys_lost), None, False, "documented"),
        Case("failover_keys_window_s", "s from promotion until key events are handled", takeover.keys_s, None, False, "<= 2"),
        Case("failover_writer_keys_lost", f"key events lost of {lost_host.keys.written} written through the front doors", float(lost_host.keys.lost), None, False, "documented"),
    ]

