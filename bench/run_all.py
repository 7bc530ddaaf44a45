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

import bench_chart
import bench_outbox
import bench_rtt
import bench_throttle
import bench_throughput
from common import ROOT, Result, machine

DOC = ROOT / "docs" / "benchmarks.md"

ANALYSIS = """
## Where AutoMail's send time goes

Not recomputed by `run_all.py`; from cProfile / py-spy of the engine (2,000–8,000 messages,
smtp-sink) during the sessions of 2026-11-26.

- First engine (one claim commit + one mark_sent commit per message, both on the event-loop thread,
  aiosmtplib's `sendmail`): 0.19–0.26× bare aiosmtplib, 0.84× mailmerge.
- Second engine: claims 32 messages per transaction; each result committed on a worker database
  thread while the next MAIL FROM / RCPT TO went out, DATA of N+1 waiting for the commit of N:
  0.50–0.54× bare aiosmtplib, 1.2–1.5× mailmerge (targets missed).
- Current engine (`automail/engine/smtp/transaction.py`): AutoMail runs the mail transaction itself on
  the connection aiosmtplib opened (aiosmtplib still connects, does STARTTLS/TLS and AUTH):
  * **PIPELINING** (RFC 2920) when the server offers it, as Postfix, Exchange and Gmail do: MAIL
    FROM, every RCPT TO and DATA leave in one write, the body and its final dot in a second —
    2 round trips per message instead of 4. A DATA after all-refused RCPTs is a client error to
    Postfix (ten such messages end in "421 too many errors", see tests/test_postfix_smtp.py), so
    once a message on a connection has every recipient refused, DATA waits for the RCPT replies
    on that connection (3 round trips). Every reply is still checked in order, and a server that
    does not offer PIPELINING (or a task with `--no-pipelining`) gets one command at a time.
  * **The previous result is committed while this envelope is on the wire**: right after the
    envelope is written, the worker commits message N's result (`mark_sent` + send-log row, one
    `synchronous=FULL` WAL fsync, ~0.2–0.5 ms here) while the server works on message N+1's
    envelope; N+1's final dot is written only after that commit. A server accepts a message at
    its final dot, so at any moment at most one message is delivered-but-unrecorded: a crash still
    duplicates at most one (kill -9 tests, with and without PIPELINING).
  * No database thread: the commit runs on the loop thread, which has nothing else to do at that
    moment; the thread hand-off (executor → future → self-pipe wake-up) cost more than it hid.
  * Each reply has its own timeout (RFC 5321 §4.5.3.2 scaled down; 10 minutes for the final
    dot); a timer is armed only while a reply is actually awaited.
- Against a server without PIPELINING the engine does the same 4 round trips as the bare loop plus
  the commit: see the diagnostic row above — the figure a customer gets from such a server.
- Still not done, on purpose: group commit (several results per fsync) and `synchronous=NORMAL`:
  both would break "at most one duplicate per crash" or power-loss durability.
- Figures are noisy on this 2-core machine (bare aiosmtplib ranged 900–1,960 msgs/s between runs of
  one session); compare only within a run: the rounds interleave the senders for that reason.
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
  (e, diagnostic) (a) against a second smtp-sink started with `-p` (no PIPELINING offered).
  smtp-sink offers PIPELINING by default (as Postfix does); the bare loop (b) and mailmerge (c) never
  pipeline: aiosmtplib's `sendmail` and smtplib send one command per round trip.
  Five interleaved rounds; medians; ratios are of medians from the same run (figures move ±50 %
  between sessions on this machine, so only compare within one run).
- **10 ms round trip** (`bench/bench_rtt.py`): senders (a), (b) and (c) above, 200 messages each, in
  three interleaved rounds, through `bench/delay_proxy.py` (an asyncio TCP proxy on 127.0.0.1, its own
  process, that forwards every chunk 5 ms after it arrived, each way) to smtp-sink. The round trip
  is measured (median SMTP NOOP) before and after every round: it comes out ~1–4 ms above 10 ms,
  the proxy's millisecond timer granularity and wake-ups on this loaded machine. "Round trips per
  message" = ms per message / median measured round trip.
- **Throttle** (`bench/bench_throttle.py`): one task at 3,000/h (1.200 s) sends to a local aiosmtpd
  server that notes `time.time()` at the end of every DATA, for 60 s of real time with more messages
  queued than can go. Intervals come from the outbox's `claimed_at` (when the throttle let a send start),
  its `sent_at`, and the server's arrival times.
- **Outbox** (`bench/bench_outbox.py`): `automail.store.outbox.Outbox` directly, on the disk-backed temp
  folder. Enqueue 100,000 small messages (200-byte bodies) in 1,000-message calls and in one call, each
  into a fresh file. Then 2,000 `claim` + `mark_sent` cycles (4 rounds of 500, the queue topped up
  untimed between rounds) on a file with 1,000 queued and on one with 1,000,000 queued (built through
  `Outbox.enqueue` in 10,000-message calls); figure = median round, per message.
- **A year-old outbox** (`bench/bench_outbox.py`, `bench_year`; issue 10): 1,000,000 messages built with bulk
  SQL (`bench/common.py` `build_history`: the oldest 90 % sent over the past year, 300 of them failed, the
  newest 10 % queued and due; three tasks, each scoped to one tag; the counters fill through the outbox's
  triggers, the search index is rebuilt at the end). Measured there: 2,000 `claim` + `mark_sent` cycles of
  a tagged task against the same on a 1,000-message history; `next_due` with and without tags, a task's
  status counts and `Service.status` (median and worst of 30 calls); the Outbox window's own background
  query (`outbox_window.load_page`: a page by key plus its count) for each window action, 10 times each;
  the engine sending with the three tasks, unlimited, to smtp-sink for 20 s while `automail status --json`
  runs beside it as a command (wall time, interpreter start included) and in-process (a read-only
  `Service` opening the outbox and reading the status); `automail outbox --json` with its default limit
  and with `--all`, in their own processes (peak RSS from `getrusage`, output counted, not kept).
  The "before" column quotes the figures issue 10 measured on the same kind of outbox.
- **Sending chart** (`bench/bench_chart.py`): an outbox of 1,000,000 messages, 900,000 of them sent by three
  tasks (the last 24 hours at 9,000/h), the send log of two days; median of 30 reads of the chart's 24 hourly
  counts through `Outbox.hourly_activity` and `Service.sending_history`, for one task and the whole company.
"""


def previous_summary() -> list[str]:
    """The date and summary lines of the doc about to be replaced, to print beside the new figures."""
    if not DOC.exists():
        return []
    lines = DOC.read_text(encoding="utf-8").splitlines()
    date = next((line for line in lines if line.startswith("Date: ")), "")
    try:
        start = lines.index("## Summary") + 1
    except ValueError:
        return []
    summary = []
    for line in lines[start:]:
        if line.startswith("## "):
            break
        if line.startswith("- "):
            summary.append(line)
    if not summary:
        return []
    when = date.removeprefix("Date: ").partition(" (UTC)")[0]
    return ["## Previous run", "", f"The summary of the run of {when} (UTC), for comparison:", "", *summary, ""]


def write_doc(results: list[Result], started: str, took: float) -> None:
    previous = previous_summary()
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
    parts.extend(previous)
    for r in results:
        parts.append(r.markdown())
    parts.append(METHOD)
    parts.append(ANALYSIS)
    footprint = ROOT / "docs" / "benchmarks-footprint.md"
    if footprint.exists():  # written by bench/bench_footprint.py (needs a display stack)
        parts.append(footprint.read_text(encoding="utf-8"))
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
            lambda: bench_rtt.bench(40, 1),
            lambda: bench_throttle.bench(6.0, 3000),
            lambda: bench_outbox.bench(10_000, 20_000, 400, 4),
            lambda: bench_outbox.bench_year(20_000, 400, 4, 5.0),
            lambda: bench_chart.bench(20_000, 5),
        ]
    else:
        runs = [
            bench_throughput.bench,
            bench_rtt.bench,
            bench_throttle.bench,
            bench_outbox.bench,
            bench_outbox.bench_year,
            bench_chart.bench,
        ]
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
