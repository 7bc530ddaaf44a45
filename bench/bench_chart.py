"""Sending chart read cost: sent and failed per hour over 24 hours, from an outbox of 1,000,000 messages.

A read is of the per-task, per-hour counts the outbox's triggers keep (table send_hourly). Set-up:
the outbox is filled through Outbox.enqueue (1,000,000 messages); then one SQL transaction (a million
mark_sent calls would take minutes; the triggers fire as they do for the engine) sends 900,000 of them
by three tasks: the last 24 hours at 9,000/h (3,000/h per task), the rest over the 29 days before;
1 % of the last two days fail instead, and the send log holds every attempt of the last two days.
Measured: Outbox.hourly_activity and Service.sending_history (what the main window calls) for one
task and for the whole company, median of repeated reads; the one-time upgrade of such an outbox
from schema 2; and, for comparison, the sent-per-hour count by a full scan of the messages table.

Usage: python bench/bench_chart.py [--messages 1000000] [--reads 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import COMPANY, Result, automail_service, build, median, reads

from automail.clock import hour_start
from automail.models import Security, SmtpSettings, Task

TASKS = ("A", "B", "C")
DAY = 86400.0
TARGET_MS = 50.0  # a refresh of the window may take ~40 ms in all (2 % of a core at one per 2 s)


def fill_history(box: object, total: int, now: float) -> dict[str, int]:
    """Mark 90 % of the outbox as sent by TASKS (see the module doc), with the matching send log."""
    conn = box._conn()  # type: ignore[attr-defined]
    sent = total * 9 // 10
    recent = min(sent, 9000 * 24)  # the last 24 hours at 9,000/h
    older = sent - recent
    with box.transaction() as c:  # type: ignore[attr-defined]
        # First the send times, then the outcome in one step (sending -> sent | failed), as the engine does.
        c.execute(
            "UPDATE messages SET status='sending', task=CASE id % 3 WHEN 0 THEN 'A' WHEN 1 THEN 'B' ELSE 'C' END,"
            " next_attempt_at=NULL, attempts=1,"
            " sent_at=CASE WHEN id <= :older THEN :now - 30*86400 + (id * 29.0*86400 / :older)"
            "         ELSE :now - 86400 + ((id - :older) * 86400.0 / :recent) END"
            " WHERE id <= :sent",
            {"older": max(older, 1), "recent": recent, "now": now, "sent": sent},
        )
        c.execute(
            "UPDATE messages SET updated_at=sent_at,"
            " status=CASE WHEN id % 100 = 0 AND sent_at >= :since THEN 'failed' ELSE 'sent' END,"
            " sent_at=CASE WHEN id % 100 = 0 AND sent_at >= :since THEN NULL ELSE sent_at END"
            " WHERE status='sending'",
            {"since": now - 2 * DAY},
        )
        c.execute(
            "INSERT INTO send_log (account, task, at) SELECT 'acct', task, updated_at FROM messages"
            " WHERE status IN ('sent', 'failed') AND updated_at >= ?",
            (now - 2 * DAY,),
        )
    counts = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
    counts["send_log"] = conn.execute("SELECT count(*) FROM send_log").fetchone()[0]
    return counts


def upgrade_from_v2(service: object, box: object) -> float:
    """Seconds to open the outbox once it is turned back into schema 2 (no hourly counts yet)."""
    from automail.store.outbox import Outbox

    conn = box._conn()  # type: ignore[attr-defined]
    for stmt in ("DROP TRIGGER tr_hourly_attempt", "DROP TRIGGER tr_hourly_sent", "DROP TABLE send_hourly"):
        conn.execute(stmt)
    conn.execute("PRAGMA user_version=2")
    path = box.path  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    Outbox(path, COMPANY).close()
    return time.perf_counter() - t0


def bench(messages: int = 1_000_000, n_reads: int = 30) -> Result:
    res = Result(f"Sending chart read ({messages:,} messages in the outbox)")
    with automail_service("automail-chart-", "A", port=25, rate=3000) as service:
        for name in TASKS[1:]:
            smtp = SmtpSettings(host="127.0.0.1", port=25, security=Security.NONE, sender="b@example.com")
            service.add_task(Task(name=name, company=COMPANY, smtp=smtp, computer=service.computer, rate_per_hour=3000))
        box = service.outbox(COMPANY)
        t_build = build(box, messages)
        now = time.time()
        counts = fill_history(box, messages, now)
        start = hour_start(now) - 23 * 3600
        conn = box._conn()
        one = reads(lambda: box.hourly_activity(["A"], start, 24), n_reads)
        every = reads(lambda: box.hourly_activity(list(TASKS), start, 24), n_reads)
        svc_one = reads(lambda: service.sending_history(COMPANY, "A"), n_reads)
        svc_all = reads(lambda: service.sending_history(COMPANY), n_reads)
        history = service.sending_history(COMPANY)
        t_upgrade = upgrade_from_v2(service, box)
        scan = reads(
            lambda: conn.execute(
                "SELECT CAST((sent_at - ?) / 3600 AS INTEGER) h, count(*) FROM messages NOT INDEXED"
                " WHERE status='sent' AND sent_at >= ? GROUP BY h",
                (start, start),
            ).fetchall(),
            max(3, n_reads // 10),
        )
    ms = {
        k: median(v) * 1000 for k, v in {"one": one, "all": every, "s1": svc_one, "sa": svc_all, "scan": scan}.items()
    }
    res.table = [
        ["read (24 hourly buckets)", "median", "target"],
        ["Outbox.hourly_activity, one task", f"{ms['one']:.2f} ms", f"< {TARGET_MS:.0f} ms"],
        ["Outbox.hourly_activity, whole company (3 tasks)", f"{ms['all']:.2f} ms", f"< {TARGET_MS:.0f} ms"],
        ["Service.sending_history, one task", f"{ms['s1']:.2f} ms", f"< {TARGET_MS:.0f} ms"],
        ["Service.sending_history, whole company", f"{ms['sa']:.2f} ms", f"< {TARGET_MS:.0f} ms"],
        ["for comparison: sent per hour by a full table scan", f"{ms['scan']:.0f} ms", ""],
    ]
    res.lines.append(
        f"outbox: {counts.get('sent', 0):,} sent, {counts.get('failed', 0):,} failed, {counts.get('queued', 0):,} "
        f"queued; send log {counts['send_log']:,} rows (2 days); built in {t_build:.0f} s"
    )
    res.lines.append(
        "opening this outbox as written by the previous release (schema 2) counts its history in once: "
        f"{t_upgrade:.1f} s"
    )
    res.lines.append(
        f"chart of the company: {history.sent_total:,} sent and {history.failed_total:,} failed in 24 hours "
        f"(busiest hour {max(history.sent):,})"
    )
    for key, label in (("one", "one task"), ("all", "whole company"), ("s1", "service, one task"), ("sa", "service")):
        res.check(
            f"chart read ({label}) < {TARGET_MS:.0f} ms at {messages:,} messages ({ms[key]:.2f} ms)",
            ms[key] < TARGET_MS,
        )
    res.notes.append(
        f"{n_reads} reads each; the figure is the median. The sent counts come from the partial index "
        "ix_task_sent (task, sent_at) WHERE status='sent', the attempts from the send log's (task, at) index, "
        "so a read touches at most 24 rows per task (table send_hourly, kept by triggers as sends are recorded); "
        "Service.sending_history also reads the definitions file. The full-scan row shows what a chart read "
        "straight from the messages table would cost"
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--reads", type=int, default=30)
    a = p.parse_args()
    bench(a.messages, a.reads).print()


if __name__ == "__main__":
    main()
