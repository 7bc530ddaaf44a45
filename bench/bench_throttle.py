"""Throttle accuracy: AutoMail at 3,000/h (one send every 1.200 s) for 60 s of real time.

Intervals are measured three ways: from the outbox's ``claimed_at`` (when the throttle let a
send start), from its ``sent_at`` (when the server accepted it), and from arrival times noted
by a tiny local recording server (aiosmtpd, end of DATA).
Usage: python bench/bench_throttle.py [--seconds S] [--rate N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import COMPANY, RecordingServer, Result, automail_service, interval_stats, make_messages

TASK = "bench-throttle"


def bench(seconds: float = 60.0, rate: int = 3000) -> Result:
    interval = 3600.0 / rate
    n = int(seconds / interval) + 5  # more than can go in the window: the throttle, not the queue, limits
    res = Result(f"Throttle accuracy: {rate:,}/h (interval {interval:.3f} s) for {seconds:.0f} s of real time")
    with RecordingServer() as server, automail_service("automail-throttle-", TASK, server.port, rate) as service:
        service.enqueue(COMPANY, make_messages(n))
        service.start_task(TASK)
        service.start_engine()
        time.sleep(seconds)  # bounded: one sleep of the benchmark's length
        service.stop_engine()
        arrivals = list(server.arrivals)
        conn = service.outbox(COMPANY)._conn()
        rows = conn.execute("SELECT claimed_at, sent_at FROM messages WHERE status='sent' ORDER BY sent_at").fetchall()

    series = {
        "outbox claimed_at (send start)": interval_stats([r[0] for r in rows]),
        "outbox sent_at (server accepted)": interval_stats([r[1] for r in rows]),
        "arrival at recording server": interval_stats(arrivals),
    }
    res.table = [["timestamps from", "messages", "mean s", "min s", "max s", "stdev s", f"mean vs {interval:.3f}"]]
    for name, st in series.items():
        res.table.append(
            [
                name,
                str(st["n"] + 1),
                f"{st['mean']:.4f}",
                f"{st['min']:.4f}",
                f"{st['max']:.4f}",
                f"{st['stdev']:.4f}",
                f"{(st['mean'] / interval - 1) * 100:+.2f} %",
            ]
        )
    res.lines.append(f"{len(rows)} messages sent in {seconds:.0f} s ({n} queued)")
    low = interval * (1.19 / 1.2)
    for name in ("outbox claimed_at (send start)", "arrival at recording server"):
        st = series[name]
        res.check(
            f"{name}: mean within 1 % of {interval:.3f} s (got {st['mean']:.4f})",
            abs(st["mean"] - interval) <= 0.01 * interval,
        )
        res.check(f"{name}: no interval shorter than {low:.3f} s (min {st['min']:.4f})", st["min"] >= low)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=int, default=3000)
    a = p.parse_args()
    bench(a.seconds, a.rate).print()


if __name__ == "__main__":
    main()
