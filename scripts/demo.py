"""The main job: a local cluster, a generated corpus, a word count across the shards.

    python scripts/demo.py [--masters 3] [--base-port 30001] [--dir .gears/cluster] [--stop]

Brings the cluster up (or restarts what is not running), writes each generated article's
text to ``paragraphs:<paper_id>``, runs a RedisGears word count through the front door
with ``RG.PYEXECUTE``, and prints the top words. The cluster keeps running afterwards
(``gears cluster down`` stops it) unless ``--stop`` is given.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cluster import launcher  # noqa: E402
from pipelines.corpus import generate_articles  # noqa: E402

WORD_COUNT = """
import re
GB('KeysReader') \\
    .flatmap(lambda r: re.findall(r'[a-z0-9]+', r['value'].lower())) \\
    .filter(lambda w: len(w) > 3) \\
    .countby() \\
    .run('paragraphs:*')
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=30001)
    parser.add_argument("--dir", default=".gears/cluster")
    parser.add_argument("--articles", type=int, default=200)
    parser.add_argument("--stop", action="store_true", help="stop the cluster at the end")
    args = parser.parse_args()

    state = launcher.load_state(args.dir)
    if state is None:
        state = launcher.up(masters=args.masters, base_port=args.base_port, dir=args.dir)
    else:
        state = launcher.up(dir=args.dir)
    print(f"cluster up: front doors {', '.join(str(p) for p in state.ports)}")

    cluster = state.cluster_client(decode_responses=True)
    pipe = cluster.pipeline(transaction=False)
    for article in generate_articles(args.articles):
        pipe.set(f"paragraphs:{article['paper_id']}", "\n".join(p["text"] for p in article["body_text"]))
    pipe.execute()
    cluster.close()
    print(f"loaded {args.articles} generated articles into paragraphs:*")

    client = state.client(decode_responses=True)
    start = time.perf_counter()
    results, errors = client.execute_command("RG.PYEXECUTE", WORD_COUNT)
    elapsed = time.perf_counter() - start
    counts = sorted((ast.literal_eval(item) for item in results), key=lambda kv: (-kv["value"], kv["key"]))
    print(f"word count over {len(state.ports)} shards: {len(counts)} distinct words in {elapsed * 1000:.0f} ms")
    for entry in counts[:10]:
        print(f"  {entry['key']:<14} {entry['value']}")
    if errors:
        print(f"errors: {errors[:3]}")
    if args.stop:
        launcher.down(args.dir)
        print("cluster stopped")
    else:
        print(f"the cluster keeps running; stop it with: .venv/bin/gears cluster down --dir {args.dir}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
