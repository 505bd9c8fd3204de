"""One train.prepare mode per process, to count its instructions under valgrind (issue 25):
load on a shared machine moves CPU seconds by tens of percent, instruction counts not at all.

    python bench/prepare_modes.py MODE CORPUS.jsonl OUT

MODE: ``none`` (imports and the tokenizer only: the fixed cost to subtract), ``plain`` (the
plain ``encode_batch`` loop of bench_prepare.py), ``1`` / ``2`` (``prepare --workers``), ``pool``
(start 2 workers, each takes a task, nothing tokenized: the pool start to subtract). Counted
with every child (the forkserver and its workers) by::

    for m in none plain 1 2 pool; do mkdir -p cg/$m; valgrind --tool=cachegrind \\
      --cache-sim=no --branch-sim=no --trace-children=yes --cachegrind-out-file=cg/$m/cg.%p \\
      python bench/prepare_modes.py $m corpus.jsonl out-$m; done
    for m in none plain 1 2 pool; do echo $m $(cat cg/$m/cg.* | awk '/^summary/ {s += $2}
      END {print s}'); done
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if __name__ == "__main__":
    import bench_prepare as B

    from train import corpus as C
    from train.tokenizer import get_tokenizer

    mode, src, out = sys.argv[1:4]
    tok = get_tokenizer("gpt2")
    if mode == "plain":
        B.plain_loop(src, "gpt2", out + ".bin")
    elif mode == "pool":
        pool = C._start_pool(2, tok, "gpt2")
        pool.map(time.sleep, [0.5, 0.5], chunksize=1)
        pool.close()
        pool.join()
    elif mode in ("1", "2"):
        C.prepare([src], out, "gpt2", workers=int(mode), progress=False)
    elif mode != "none":
        raise SystemExit(f"MODE={mode!r} is invalid: must be none, plain, 1, 2 or pool")
