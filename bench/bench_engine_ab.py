"""Engine A/B: this tree's engine against older engines, interleaved, same smtp-sink, same machine.

Attributes a throughput change to its cause (issue 7): each engine is a checkout of a commit, optionally
with a patch, in a temporary git worktree; every round runs each engine once, in its own process,
through that tree's own ``bench_throughput.run_automail`` (2,000 × 1 KB, unlimited task, durable
outbox).  The default engines:

- ``before-issue-7``: commit 5914e0b, the engine before the issue-7 changes;
- ``before-issue-7 + DATA after RCPT``: the same with ``patches/5914e0b-data-after-rcpt.patch``, the one
  protocol change issue 7's defect 1 requires (DATA waits for the RCPT replies: 3 round trips a message);
- ``this tree``.

Usage: python bench/bench_engine_ab.py [--messages N] [--rounds R] [--engine LABEL=COMMIT[+PATCH]]...
Only 127.0.0.1 is used; the worktrees are removed afterwards.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Result, median

HERE = Path(__file__).resolve().parent
DEFAULT_ENGINES = (
    "before-issue-7=5914e0b",
    "before-issue-7 + DATA after RCPT=5914e0b+patches/5914e0b-data-after-rcpt.patch",
)
# Runs inside one engine's tree: its own bench helpers and its own automail package.
_ONE_RUN = """
import os, sys
tree = sys.argv[1]
sys.path[:0] = [os.path.join(tree, "bench"), tree]
os.chdir(tree)
import bench_throughput as bt
from common import SmtpSink
with SmtpSink() as sink:
    print(bt.run_automail(sink.port, int(sys.argv[2]))["rate"])
"""


def checkout(spec: str, parent: Path) -> tuple[str, Path]:
    """LABEL=COMMIT[+PATCH] as a temporary worktree; returns (label, tree)."""
    label, _, target = spec.partition("=")
    commit, _, patch = target.partition("+")
    tree = parent / f"engine-{len(list(parent.iterdir()))}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(tree), commit], check=True, timeout=120)
    if patch:
        subprocess.run(["git", "-C", str(tree), "apply", str(HERE / patch)], check=True, timeout=60)
    return label, tree


def one_run(tree: Path, n: int) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", _ONE_RUN, str(tree), str(n)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"engine run in {tree} failed: {proc.stderr[-800:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def bench(n: int = 2000, rounds: int = 4, engines: tuple[str, ...] = DEFAULT_ENGINES) -> Result:
    res = Result(f"Engine A/B: {n:,} × 1 KB to smtp-sink, {rounds} interleaved rounds (msgs/s)")
    with tempfile.TemporaryDirectory(prefix="automail-ab-") as tmp:
        parent = Path(tmp)
        trees = [checkout(spec, parent) for spec in engines] + [("this tree", ROOT)]
        try:
            runs: dict[str, list[float]] = {label: [] for label, _ in trees}
            for _ in range(rounds):
                for label, tree in trees:
                    runs[label].append(one_run(tree, n))
        finally:
            for _label, tree in trees:
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], timeout=120)
    first = median(runs[trees[0][0]])
    res.table = [["engine", "median msgs/s", "runs", "vs the first"]] + [
        [label, f"{median(r):.0f}", ", ".join(f"{x:.0f}" for x in r), f"{median(r) / first:.2f}×"]
        for label, r in runs.items()
    ]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--engine", action="append", help="LABEL=COMMIT[+PATCH] (default: the two older engines)")
    args = ap.parse_args()
    bench(args.messages, args.rounds, tuple(args.engine) if args.engine else DEFAULT_ENGINES).print()


if __name__ == "__main__":
    main()
