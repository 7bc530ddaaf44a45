"""Outbox scale: automail.store.outbox.Outbox directly, on a disk-backed temp folder.

1. Enqueue 100,000 small messages, in batches of 1,000 per ``enqueue`` call and in one call.
2. Cost of one claim + mark_sent (two durable transactions) with 1,000 queued vs 1,000,000 queued:
   2,000 cycles at each size, in 4 rounds of 500; between rounds the queue is topped up again
   (untimed), so it stays between size-500 and size.
Usage: python bench/bench_outbox.py [--enqueue N] [--big N] [--cycles N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Result, build, median, remove, small_new_messages, temp_dir, timed

from automail.store.outbox import Outbox


def enqueue_100k(folder: Path, n: int, batch: int | None) -> float:
    box = Outbox(folder / f"enqueue-{batch or 'one'}.sqlite", "bench")
    msgs = small_new_messages(n)
    try:
        with timed() as t:
            if batch is None:
                box.enqueue(msgs, time.time())
            else:
                for i in range(0, n, batch):
                    box.enqueue(msgs[i : i + batch], time.time())
        assert box.count() == n
    finally:
        box.close()
    return t["s"]


def cycles(box: Outbox, total: int, rounds: int, base: int) -> list[float]:
    """Per-message seconds of claim + mark_sent, for each round; refill (untimed) between rounds."""
    per = total // rounds
    out = []
    next_id = 10_000_000
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per):
            now = time.time()
            c = box.claim("bench", now, mail_from="bench@example.com")
            assert c is not None
            box.mark_sent(c.message.id, time.time(), "250 OK", {}, "acct", "bench")
        out.append((time.perf_counter() - t0) / per)
        box.enqueue(small_new_messages(per, start=next_id), time.time())  # back to `base` queued
        next_id += per
    assert box.count() >= base
    return out


def bench(n_enqueue: int = 100_000, big: int = 1_000_000, total_cycles: int = 2000, rounds: int = 4) -> Result:
    res = Result(f"Outbox scale (SQLite WAL, synchronous=FULL; {n_enqueue:,} enqueue; {big:,} queued)")
    folder = temp_dir("automail-outbox-")
    try:
        t_batched = enqueue_100k(folder, n_enqueue, 1000)
        t_one = enqueue_100k(folder, n_enqueue, None)

        small_box = Outbox(folder / "small.sqlite", "bench")
        build(small_box, 1000)
        small = cycles(small_box, total_cycles, rounds, 1000)
        small_box.close()

        big_box = Outbox(folder / "big.sqlite", "bench")
        t_build = build(big_box, big)
        size_mb = (folder / "big.sqlite").stat().st_size / 1e6
        large = cycles(big_box, total_cycles, rounds, big)
        big_box.close()
    finally:
        remove(folder)

    s_med, l_med = median(small), median(large)
    ratio = l_med / s_med
    res.table = [
        ["measure", "figure", "target"],
        [
            f"enqueue {n_enqueue:,} (1,000 per call)",
            f"{t_batched:.2f} s ({n_enqueue / t_batched:,.0f} msgs/s)",
            "< 30 s",
        ],
        [f"enqueue {n_enqueue:,} (one call)", f"{t_one:.2f} s ({n_enqueue / t_one:,.0f} msgs/s)", "< 30 s"],
        [f"build {big:,} queued (10,000 per call)", f"{t_build:.1f} s, file {size_mb:,.0f} MB", "~3 min"],
        [
            "claim+mark_sent, 1,000 queued",
            f"{s_med * 1000:.3f} ms/msg (rounds: {', '.join(f'{x * 1000:.3f}' for x in small)})",
            "",
        ],
        [
            f"claim+mark_sent, {big:,} queued",
            f"{l_med * 1000:.3f} ms/msg (rounds: {', '.join(f'{x * 1000:.3f}' for x in large)})",
            "",
        ],
        [f"ratio {big:,} / 1,000", f"{ratio:.2f}×", "≤ 1.5×"],
    ]
    res.check(f"enqueue {n_enqueue:,} in 1,000-message batches < 30 s ({t_batched:.2f} s)", t_batched < 30)
    res.check(f"enqueue {n_enqueue:,} in one call < 30 s ({t_one:.2f} s)", t_one < 30)
    res.check(f"claim+mark_sent at {big:,} ≤ 1.5× at 1,000 ({ratio:.2f}×)", ratio <= 1.5)
    res.check(f"{big:,}-message build within ~3 minutes ({t_build:.0f} s)", t_build <= 180)
    res.notes.append(
        f"{total_cycles:,} cycles per size in {rounds} rounds; the figure is the median round; each cycle is "
        "two BEGIN IMMEDIATE…COMMIT transactions with synchronous=FULL (two WAL fsyncs)"
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--enqueue", type=int, default=100_000)
    p.add_argument("--big", type=int, default=1_000_000)
    p.add_argument("--cycles", type=int, default=2000)
    a = p.parse_args()
    bench(a.enqueue, a.big, a.cycles).print()


if __name__ == "__main__":
    main()
