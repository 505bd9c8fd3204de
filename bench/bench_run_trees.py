"""The default run's steady-state tokens/s on two checkouts, alternating in one session.

    python bench/bench_run_trees.py BASE_DIR [OTHER_DIR (default: this checkout)] [--runs 3]

Each run is ``python -m train`` (the default model, data and batch) for ``--steps`` steps with
no evaluation, checkpoint or sample inside the timed window, in a fresh process whose working
directory is the checkout (so it imports that checkout's ``schedules``/``models``/``train``);
the trainer's own summary line gives the steady-state throughput (compilation excluded). The
runs alternate (base, other, base, ...) so that a machine's load drifts over both alike; the
medians and their ratio are printed. Make a base checkout with ``git worktree add /tmp/base REV``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tokens_per_s(tree: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as wd:
        cmd = [sys.executable, "-m", "train", f"--workdir={wd}", f"--steps={steps}",
               f"--eval-interval={steps}", f"--checkpoint-interval={steps}", "--sample-tokens=0",
               "--no-tensorboard", "--log-interval=50", "--total-steps=2800"]
        env = {**os.environ, "PYTHONPATH": tree}
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"throughput ([\d,]+) tokens/s", out.stdout)
    if m is None:
        raise RuntimeError(f"{tree}: no throughput line in\n{out.stdout[-2000:]}")
    return float(m.group(1).replace(",", ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base")
    p.add_argument("other", nargs="?", default=HERE)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    a = p.parse_args()
    got: dict[str, list[float]] = {a.base: [], a.other: []}
    for _ in range(a.runs):
        for tree in (a.base, a.other):
            got[tree].append(tokens_per_s(tree, a.steps))
            print(f"{tree}: {got[tree][-1]:,.0f} tokens/s", flush=True)
    mb, mo = statistics.median(got[a.base]), statistics.median(got[a.other])
    print(f"median tokens/s: base {mb:,.0f}, other {mo:,.0f}; other / base = {mo / mb:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
