"""Outbox scale: automail.store.outbox.Outbox directly, on a disk-backed temp folder.

1. Enqueue 100,000 small messages, in batches of 1,000 per ``enqueue`` call and in one call.
2. Cost of one claim + mark_sent (two durable transactions) with 1,000 queued vs 1,000,000 queued:
   2,000 cycles at each size, in 4 rounds of 500; between rounds the queue is topped up again
   (untimed), so it stays between size-500 and size.
3. A year-old outbox (issue 10): --year N messages built with bulk SQL (about 90 % sent over a year,
   300 failed, 10 % queued; three tasks each scoped to one tag): claim+mark_sent of a tagged task
   at N vs at 1,000; next_due with tags; a task's status counts; the Outbox window's queries;
   the engine sending to smtp-sink with `automail status` run beside it; `automail outbox --json`.
Usage: python bench/bench_outbox.py [--enqueue N] [--big N] [--cycles N] [--year N] [--only-year]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    COMPANY,
    HISTORY_TASKS,
    HOST,
    SENDER,
    Result,
    SmtpSink,
    build,
    build_history,
    median,
    remove,
    small_new_messages,
    temp_dir,
    timed,
)

from automail.models import MessageStatus
from automail.store.outbox import Outbox

YEAR_ENGINE_S = 20.0  # how long the engine sends in the year-old outbox
WINDOW_BEFORE = {"search one address": "0.8–5.2 s (LIKE over 4 columns)", "last page (oldest)": "4.8 s (OFFSET)"}


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


def cycles(box: Outbox, total: int, rounds: int, base: int, task: str = "bench", tag: str = "") -> list[float]:
    """Per-message seconds of claim + mark_sent, for each round; refill (untimed) between rounds.

    ``tag``: claim as a task scoped to that tag (and refill with messages of it)."""
    per = total // rounds
    out = []
    next_id = 10_000_000
    tags = (tag,) if tag else ()
    if tag:  # a history holds few due messages of one tag: queue a round's worth first
        box.enqueue(small_new_messages(per, start=next_id - per, tag=tag), time.time())
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per):
            now = time.time()
            c = box.claim(task, now, tags, mail_from="bench@example.com")
            assert c is not None
            box.mark_sent(c.message.id, time.time(), "250 OK", {}, "acct", task)
        out.append((time.perf_counter() - t0) / per)
        box.enqueue(small_new_messages(per, start=next_id, tag=tag), time.time())  # back to `base` queued
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
        "a claim (BEGIN IMMEDIATE…COMMIT) and a one-statement mark_sent, synchronous=FULL (two WAL fsyncs)"
    )
    return res


def timings(fn: Callable[[], object], n: int = 30) -> tuple[float, float]:
    """(median, worst) milliseconds of ``n`` calls."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out), max(out)


def cli_run(home: Path, *args: str, timeout: float = 600) -> tuple[float, int, int]:
    """(seconds, peak RSS MB, stdout bytes) of `automail ARGS` in its own process, output counted, not kept."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n"
        "n = 0\n"
        "while chunk := p.stdout.read(1 << 16):\n"
        "    n += len(chunk)\n"
        "rc = p.wait()\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, n, rc)\n"
    )
    env = {**os.environ, "AUTOMAIL_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "automail", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=True,
    ).stdout.split()  # fmt: skip
    if out[3] != "0":
        raise RuntimeError(f"automail {' '.join(args)} exited {out[3]}")
    return float(out[0]), int(out[1]) // 1024, int(out[2])


def year_service(home: Path, path: Path, port: int) -> Any:
    """A Service whose company COMPANY uses the outbox at ``path``, with HISTORY_TASKS (enabled, unlimited,
    each scoped to its tag) sending to smtp-sink on 127.0.0.1:port."""
    from automail.engine.service import Service
    from automail.models import Security, SmtpSettings, Task

    svc = Service(home)
    svc.add_company(COMPANY, str(path), reuse=True)  # the built history
    smtp = SmtpSettings(host=HOST, port=port, security=Security.NONE, sender=SENDER)
    for name, tag in HISTORY_TASKS.items():
        task = Task(name=name, company=COMPANY, smtp=smtp, computer=svc.computer, tags=(tag,), enabled=True,
                    rate_per_hour=None)  # fmt: skip
        svc.add_task(task)
    return svc


def window_actions(svc: Any) -> list[tuple[str, float, float]]:
    """(action, median ms, worst ms) of the Outbox window's background queries (outbox_window.load_page)."""
    from automail.ui.outbox_window import load_page

    def page(status: MessageStatus | None, search: str, before: int | None, after: int | None) -> Callable[[], object]:
        return lambda: load_page(svc, COMPANY, status, search, before, after)

    older = load_page(svc, COMPANY, None, "", None, None).messages[-1].id
    cases = [
        ("open (newest page + count)", page(None, "", None, None)),
        ("next page", page(None, "", older, None)),
        ("last page (oldest)", page(None, "", None, 0)),
        ("filter: failed", page(MessageStatus.FAILED, "", None, None)),
        ("search one address", page(None, "client123457@", None, None)),
        ("search a common word (invoice)", page(None, "invoice", None, None)),
        ("search + filter (reminder, sent)", page(MessageStatus.SENT, "reminder", None, None)),
        ("search, last page", page(None, "newsletter", None, 0)),
    ]
    return [(name, *timings(fn, 10)) for name, fn in cases]


def reader_status(home: Path) -> float:
    """Seconds for what `automail status` does after start-up: a read-only Service opens the outbox
    (schema check included) and reads every task's status."""
    from automail.engine.service import Service

    t0 = time.perf_counter()
    reader = Service(home, read_only=True)
    try:
        reader.status()
    finally:
        reader.close()
    return time.perf_counter() - t0


def engine_with_status(home: Path, svc: Any, seconds: float) -> tuple[float, list[float], list[float]]:
    """Run the engine (3 tagged tasks, unlimited) for ``seconds``; `automail status` runs meanwhile,
    as a command and in-process.  Returns (messages sent per second, command s, in-process s)."""
    box = svc.outbox(COMPANY)
    sent0 = box.counts()[MessageStatus.SENT]
    svc.start_engine()
    t0 = time.perf_counter()
    commands, inner = [], []
    try:
        while time.perf_counter() - t0 < seconds:
            commands.append(cli_run(home, "status", "--json", timeout=120)[0])
            inner.extend(reader_status(home) for _ in range(5))
    finally:
        elapsed = time.perf_counter() - t0
        sent = box.counts()[MessageStatus.SENT] - sent0
        svc.stop_engine()
    return sent / elapsed, commands, inner


def bench_year(
    big: int = 1_000_000, total_cycles: int = 2000, rounds: int = 4, engine_s: float = YEAR_ENGINE_S
) -> Result:
    res = Result(f"A year-old outbox: {big:,} messages (≈90 % sent, 300 failed, 10 % queued, 3 tagged tasks)")
    folder = temp_dir("automail-year-")
    tag, task = next(iter(HISTORY_TASKS.values())), next(iter(HISTORY_TASKS))
    try:
        build_history(folder / "small.sqlite", 1000, failed=3)
        large_h = build_history(folder / "year.sqlite", big)
        size_mb = (folder / "year.sqlite").stat().st_size / 1e6
        small_box = Outbox(folder / "small.sqlite", COMPANY)
        small = cycles(small_box, total_cycles, rounds, 100, task, tag)
        small_box.close()
        box = Outbox(folder / "year.sqlite", COMPANY)
        large = cycles(box, total_cycles, rounds, big, task, tag)
        tags = list(HISTORY_TASKS.values())
        q_rows = [
            ("next_due, one tag", *timings(lambda: box.next_due(tags[:1]))),
            ("next_due, two tags", *timings(lambda: box.next_due(tags[1:]))),
            ("next_due, no tags", *timings(lambda: box.next_due())),
            ("status counts of a task (counts + sent 1 h + sent 24 h + failed)", *timings(
                lambda: (box.counts(tags[:1]), box.sent_count(task, time.time() - 3600),
                         box.sent_count(task, time.time() - 86400), box.failed_count(task, tags[:1])))),
        ]  # fmt: skip
        box.close()

        home = folder / "home"
        with SmtpSink() as sink:
            # The same engine run, `automail status` beside it, on the 1,000-message history (topped up so
            # it cannot run dry) first: the rate depends on this machine's fsync latency and load, so
            # compare within one run.
            fresh = Outbox(folder / "small.sqlite", COMPANY)
            for t in HISTORY_TASKS.values():
                fresh.enqueue(small_new_messages(15_000, start=20_000_000, tag=t), time.time())
            fresh.close()
            small_svc = year_service(folder / "home-small", folder / "small.sqlite", sink.port)
            try:
                small_rate = engine_with_status(folder / "home-small", small_svc, engine_s)[0]
            finally:
                small_svc.close()
            svc = year_service(home, folder / "year.sqlite", sink.port)
            try:
                status_rows = [("main-window status of the 3 tasks (Service.status)", *timings(svc.status))]
                window = window_actions(svc)
                rate, status_s, inner_s = engine_with_status(home, svc, engine_s)
            finally:
                svc.close()
        startup = cli_run(home, "--version")[0]
        json_s, json_mb, json_bytes = cli_run(home, "outbox", "--company", COMPANY, "--json")
        all_s, all_mb, all_bytes = cli_run(home, "outbox", "--company", COMPANY, "--json", "--all", timeout=1800)
        shown = len(json.loads(subprocess.run(
            [sys.executable, "-m", "automail", "outbox", "--company", COMPANY, "--json"],
            capture_output=True, env={**os.environ, "AUTOMAIL_HOME": str(home)}, timeout=120, check=True,
        ).stdout))  # fmt: skip
    finally:
        remove(folder)

    s_med, l_med = median(small), median(large)
    ratio = l_med / s_med
    st_med, st_max = statistics.median(status_s), max(status_s)
    in_med, in_max = statistics.median(inner_s), max(inner_s)
    res.table = [
        ["measure", "figure", "target", "before (issue 10)"],
        [f"build {big:,} (bulk SQL + search index)", f"{large_h.seconds:.0f} s, file {size_mb:,.0f} MB; "
         f"{large_h.sent:,} sent, {large_h.failed:,} failed, {large_h.queued:,} queued", "", ""],
        ["claim+mark_sent of a tagged task, 1,000 messages",
         f"{s_med * 1000:.3f} ms/msg (rounds: {', '.join(f'{x * 1000:.3f}' for x in small)})", "", ""],
        [f"claim+mark_sent of a tagged task, {big:,} messages",
         f"{l_med * 1000:.3f} ms/msg (rounds: {', '.join(f'{x * 1000:.3f}' for x in large)})", "", "claim 200–290 ms"],
        [f"ratio {big:,} / 1,000", f"{ratio:.2f}×", "≤ 1.5×", ""],
        *[[name, f"median {m:.2f} ms, worst {w:.2f} ms", "< 1 ms" if "next_due" in name else "",
           "175–264 ms" if name == "next_due, one tag" else ("54–81 ms per task" if "status counts" in name else "")]
          for name, m, w in q_rows + status_rows],
        [f"engine sending (3 tagged tasks, unlimited, to smtp-sink, {engine_s:.0f} s, `automail status` beside it),"
         " 1,000-message history",
         f"{small_rate:,.0f} msgs/s", "", ""],
        [f"the same at {big:,} messages",
         f"{rate:,.0f} msgs/s ({rate / small_rate:.2f}× the rate at 1,000)", "≥ 0.8× the rate at 1,000",
         "133–147 msgs/s (a tenth of ~1,500)"],
        [f"`automail status --json` while the engine sends ({len(status_s)} runs)",
         f"median {st_med:.2f} s, worst {st_max:.2f} s (`automail --version` alone: {startup:.2f} s)", "",
         "1.2 s median, 22 s worst"],
        [f"status without the interpreter start (read-only Service: open + status; {len(inner_s)} runs)",
         f"median {in_med * 1000:.0f} ms, worst {in_max * 1000:.0f} ms", "no wait for the engine's lock", ""],
        *[[f"Outbox window: {name}", f"median {m:.0f} ms, worst {w:.0f} ms", "< 200 ms", WINDOW_BEFORE.get(name, "")]
          for name, m, w in window],
        [f"`automail outbox --json` (default: newest {shown:,})", f"{json_s:.2f} s, peak RSS {json_mb} MB, "
         f"{json_bytes / 1e6:.1f} MB output", "", "44.6 s, 4.6 GB, 463 MB output (no limit)"],
        ["`automail outbox --json --all` (streamed)", f"{all_s:.1f} s, peak RSS {all_mb} MB, "
         f"{all_bytes / 1e6:.0f} MB output", "constant memory", "44.6 s, 4.6 GB"],
    ]  # fmt: skip
    worst_window = max(w for _, _, w in window)
    res.check(f"claim+mark_sent of a tagged task at {big:,} ≤ 1.5× at 1,000 ({ratio:.2f}×)", ratio <= 1.5)
    res.check(f"next_due with a tag < 1 ms (median {q_rows[0][1]:.2f} ms)", q_rows[0][1] < 1)
    res.check(f"every Outbox window action < 200 ms (worst {worst_window:.0f} ms)", worst_window < 200)
    res.check(
        f"engine at {big:,} ≥ 0.8× its rate at 1,000 ({rate:,.0f} vs {small_rate:,.0f} msgs/s)",
        rate >= 0.8 * small_rate,
    )
    res.check(f"status never waits for the engine's lock (worst {in_max * 1000:.0f} ms < 500 ms)", in_max < 0.5)
    res.check(f"`outbox --json --all` streams in constant memory (peak RSS {all_mb} MB)", all_mb < 150)
    res.notes.append(
        f"{total_cycles:,} cycles per size in {rounds} rounds, as task {task!r} scoped to tag {tag!r}; the figure is "
        "the median round. The history is built with bulk SQL, not claim/mark cycles (bench/common.py "
        "build_history). Query figures are the median and worst of 30 calls (window actions: 10)."
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--enqueue", type=int, default=100_000)
    p.add_argument("--big", type=int, default=1_000_000)
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--year", type=int, default=1_000_000, help="messages in the year-old outbox")
    p.add_argument("--engine-seconds", type=float, default=YEAR_ENGINE_S)
    p.add_argument("--only-year", action="store_true", help="only the year-old outbox")
    p.add_argument("--markdown", type=Path, help="also write the results as Markdown here")
    a = p.parse_args()
    results = [] if a.only_year else [bench(a.enqueue, a.big, a.cycles)]
    results.append(bench_year(a.year, a.cycles, engine_s=a.engine_seconds))
    for r in results:
        r.print()
    if a.markdown:
        a.markdown.write_text("\n".join(r.markdown() for r in results), encoding="utf-8")


if __name__ == "__main__":
    main()
