"""Mailings at scale (issue 12): Outbox directly, on a disk-backed temp folder.

An outbox of --messages messages in mailings (one big mailing, --big of them, and the rest in
mailings of 10,000, about half of each sent), then:
1. the counts the Mailings window and `mailing list` read: every mailing, and one mailing;
2. pause and resume of the big mailing (how long each holds the write lock);
3. claim + mark_sent of another mailing's message while the big one is paused (the engine's cost per
   message beside a paused mailing), and with nothing paused.
Usage: python bench/bench_mailings.py [--messages 200000] [--big 150000] [--reads 30] [--cycles 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, reads, remove, small_new_messages, temp_dir, timed

from automail.store.outbox import Outbox

SMALL = 10_000


def build(box: Outbox, total: int, big: int) -> float:
    """The big mailing (all queued) and mailings of SMALL (half of each sent); seconds taken."""
    t0 = time.perf_counter()
    box.enqueue(small_new_messages(big), time.time(), mailing="Big")
    done, k = big, 0
    while done < total:
        n = min(SMALL, total - done)
        ids = box.enqueue(small_new_messages(n, start=done), time.time(), mailing=f"Small {k}")
        with box.transaction() as conn:  # half of it sent, as an engine would have left it (bulk, untimed)
            conn.execute(
                "UPDATE messages SET status='sent', sent_at=?, next_attempt_at=NULL, task='bench'"
                " WHERE id BETWEEN ? AND ?",
                (time.time(), ids[0], ids[0] + n // 2 - 1),
            )
        done, k = done + n, k + 1
    return time.perf_counter() - t0


def cycles(box: Outbox, n: int) -> str:
    """Median wall and CPU time of one claim + mark_sent (a small mailing's message is due; Big may be paused)."""
    times, cpu, big = [], [], box.mailing("Big").id
    for _ in range(n):
        now = time.time()
        c0 = time.thread_time()
        with timed() as t:
            got = box.claim("bench", now)
            box.mark_sent(got.message.id if got else 0, now, "250 ok", {}, "acct", "bench")
        cpu.append(time.thread_time() - c0)
        assert got is not None and got.message.mailing_id != big, "claimed a paused message"
        times.append(t["s"])
    return f"{median(times) * 1000:.3f} ms wall, {median(cpu) * 1000:.3f} ms CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--big", type=int, default=150_000)
    parser.add_argument("--reads", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    folder = temp_dir("automail-bench-mailings-")
    try:
        box = Outbox(folder / "firma.sqlite3", "Firma")
        built = build(box, args.messages, args.big)
        count = len(box.mailings())
        print(f"built {args.messages:,} messages in {count} mailings in {built:.1f} s (Big: {args.big:,} queued)")
        print(f"mailings() (every mailing with counts): {median(reads(box.mailings, args.reads)) * 1000:.2f} ms")
        one = median(reads(lambda: box.mailing("Big"), args.reads))
        print(f"mailing('Big') (one, with counts):       {one * 1000:.2f} ms")
        # The big mailing's messages are due first: a claim that honours a pause must skip all of them.
        with box.transaction() as conn:
            conn.execute("UPDATE messages SET next_attempt_at=0 WHERE next_attempt_at IS NOT NULL AND mailing=1")
        with timed() as t:
            held = box.pause_mailing("Big", time.time())
        print(f"pause_mailing('Big'): {t['s'] * 1000:.1f} ms ({held:,} held)")
        print(f"claim + mark_sent beside the paused Big: {cycles(box, args.cycles)}")
        with timed() as t:
            released = box.resume_mailing("Big", time.time())
        print(f"resume_mailing('Big'): {t['s'] * 1000:.1f} ms ({released:,} released)")
        with box.transaction() as conn:  # Big waits behind the rest again: claims take the small ones
            conn.execute("UPDATE messages SET next_attempt_at=2e9 WHERE next_attempt_at IS NOT NULL AND mailing=1")
        print(f"claim + mark_sent, nothing paused:       {cycles(box, args.cycles)}")
        box.close()
    finally:
        remove(folder)


if __name__ == "__main__":
    main()
