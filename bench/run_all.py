"""Run every benchmark in turn, print a summary and write docs/benchmarks.md.

Usage: python bench/run_all.py [--quick]   (--quick: smaller sizes, for a smoke test; does not write the doc)
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_outbox
import bench_throttle
import bench_throughput
from common import ROOT, Result, machine

DOC = ROOT / "docs" / "benchmarks.md"

ANALYSIS = """
## Where AutoMail's send time goes (profile of 2026-11-26)

Not recomputed by `run_all.py`; from cProfile of the engine thread (2,000 messages, smtp-sink) and
the diagnostic row above.

- Per message the worker does, strictly one after another on the engine's event-loop thread:
  `Outbox.claim` (BEGIN IMMEDIATE … COMMIT, a WAL fsync with `synchronous=FULL`), the SMTP
  transaction, `Outbox.mark_sent` (a second durable commit). In the profile `sqlite3.Connection.execute`
  is the largest item (1.96 s of 5.95 s; claim 1.05 s + mark_sent 1.16 s), ahead of all of aiosmtplib's
  `sendmail` (1.50 s, which the bare loop pays too). The SQLite calls block the event loop, so nothing
  overlaps with them.
- The diagnostic row (bare aiosmtplib + the same two commits, no engine) stays at ~0.3× bare
  aiosmtplib: with two sequential durable commits per message (~0.6 ms on this disk) no engine can
  reach 0.8× (that leaves ~0.1 ms per message for everything beyond the SMTP exchange).
  With `synchronous=NORMAL` (tried, not proposed) AutoMail still reached only ~800 msgs/s (0.4–0.55×):
  the commits themselves (locks, WAL writes) and the serial claim → send → mark structure cost too.
- Engine overhead beyond that floor (event emission, `next_due` per step, 50 ms poll in the bench)
  is 10–35 % depending on the run; the bench's 50 ms polling is not it (the outbox's own
  first-claim → last-sent span gives the same rate).

Proposed engine change (not made by the benchmarks): pipeline and group the commits
while keeping every status change durable before it is reported:
1. `Outbox.claim_batch(task, now, k)`: when the throttle allows more than one send per commit time
   (unlimited or short intervals), claim up to k (e.g. 32) due messages in one transaction
   (status `sending`, same as today, so crash recovery is unchanged: unsent claimed messages go back
   to the queue with their Message-IDs).
2. A per-outbox writer thread that commits outcomes (`mark_sent`/`mark_deferred`/`mark_failed` +
   send_log rows) in group commits: everything that finished while the previous commit was
   fsyncing goes into the next single transaction. The worker awaits a future for the commit only
   before emitting the "sent" event, and moves on to the next SMTP transaction at once, so the fsync
   overlaps with the next send. Commits per message fall from 2 to ~1/k + 1/(messages per fsync).
   The crash window (server accepted, outcome not yet durable → resent once with the same
   Message-ID) exists today between accept and mark_sent; it grows from one message to the messages
   of one pending group commit.
3. Keep throttled sends as today (one claim at a time): at 3,000/h the commit cost is irrelevant and
   the throttle is exact.
"""

METHOD = """\
## Method

- Everything runs on 127.0.0.1. The SMTP server for throughput is Postfix's `smtp-sink` (C, ~0.085 ms CPU
  per message), started by the benchmark on a free port (`-u nobody` when run as root) and shared by all
  senders of one run. aiosmtpd is too slow (~1 ms CPU per message) to benchmark throughput against; it is
  used only as the timestamping server of the throttle benchmark.
- Messages are ~1 KB MIME messages (headers + a padded text body), one recipient each.
- **Throughput** (`bench/bench_throughput.py`): per round, in this order against the same sink:
  (a) AutoMail: a fresh temp `AUTOMAIL_HOME`, `Service(home)`, one company, one task with
  `rate_per_hour=None` (unlimited), security none, no user name; `service.enqueue()` of all messages
  (timed apart, not in the send figure), `start_task`, `start_engine()`, then poll `service.pending()`
  every 50 ms until 0; msgs/s = messages / (engine start → drained). The outbox is SQLite WAL with
  `synchronous=FULL`: every status change (claim → sending, → sent) is a durable commit.
  (b) a bare aiosmtplib loop: one `SMTP()` connection, `sendmail` × N, `quit`.
  (c) `mailmerge` 2.3 (its console script; it opens a new connection per message) with a template,
  a CSV database of N rows and a server config for 127.0.0.1:sink port, `security = Never`,
  `--no-limit --no-dry-run`; its figure is the wall time of the command, start-up included.
  (d, diagnostic) loop (b) with `Outbox.claim` before and `Outbox.mark_sent` after every send and no
  engine: what sequential per-message durable commits cost by themselves.
  Three interleaved rounds; medians; ratios are of medians from the same run (figures move ±50 %
  between sessions on this machine, so only compare within one run).
- **Throttle** (`bench/bench_throttle.py`): one task at 3,000/h (1.200 s) sends to a local aiosmtpd
  server that notes `time.time()` at the end of every DATA, for 60 s of real time with more messages
  queued than can go. Intervals come from the outbox's `claimed_at` (when the throttle let a send start),
  its `sent_at`, and the server's arrival times.
- **Outbox** (`bench/bench_outbox.py`): `automail.store.outbox.Outbox` directly, on the disk-backed temp
  folder. Enqueue 100,000 small messages (200-byte bodies) in 1,000-message calls and in one call, each
  into a fresh file. Then 2,000 `claim` + `mark_sent` cycles (4 rounds of 500, the queue topped up
  untimed between rounds) on a file with 1,000 queued and on one with 1,000,000 queued (built through
  `Outbox.enqueue` in 10,000-message calls); figure = median round, per message.
"""


def write_doc(results: list[Result], started: str, took: float) -> None:
    parts = [
        "# AutoMail benchmarks",
        "",
        f"Date: {started} (UTC). Total run time: {took:.0f} s.",
        "",
        f"Machine: {machine()}.",
        "",
        "Reproduce: `python bench/run_all.py` (each benchmark also runs alone, e.g. "
        "`python bench/bench_throughput.py`; see bench/README.md).",
        "",
        "## Summary",
        "",
    ]
    for r in results:
        for text, ok in r.verdicts:
            parts.append(f"- {'PASS' if ok else 'FAIL'} — {text}")
    parts.append("")
    for r in results:
        parts.append(r.markdown())
    parts.append(METHOD)
    parts.append(ANALYSIS)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(parts), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes; prints only, does not write the doc")
    a = p.parse_args()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    t0 = time.perf_counter()
    results = []
    if a.quick:
        runs = [
            lambda: bench_throughput.bench(200, 1),
            lambda: bench_throttle.bench(6.0, 3000),
            lambda: bench_outbox.bench(10_000, 20_000, 400, 4),
        ]
    else:
        runs = [bench_throughput.bench, bench_throttle.bench, bench_outbox.bench]
    for run in runs:
        r = run()
        r.print()
        results.append(r)
    took = time.perf_counter() - t0
    print("== Summary")
    for r in results:
        for text, ok in r.verdicts:
            print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    if not a.quick:
        write_doc(results, started, took)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
