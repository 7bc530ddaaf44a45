"""Shared helpers for the benchmarks: a local smtp-sink, 1 KB messages, timing, a recording server.

Only 127.0.0.1 is used.  Every wait is bounded in count and in time.
"""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from automail.message import compose  # noqa: E402
from automail.store.outbox import NewMessage, Outbox  # noqa: E402

HOST = "127.0.0.1"
SMTP_SINK = "/usr/sbin/smtp-sink"
SENDER = "Bench <bench@example.com>"
SENDER_ADDR = "bench@example.com"
MESSAGE_BYTES = 1024
COMPANY = "Bench"


# ---- ports and the sink ---------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` s, 100 tries) until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    for _ in range(100):
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as s:
                s.recv(256)  # the greeting
                s.sendall(b"QUIT\r\n")
            return
        except OSError:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


class LoopbackProcess:
    """A helper process serving on a free loopback port (``self.port``): ``with X() as x:`` starts
    it (``start()``, defined by the subclass) and stops it afterwards."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Terminate the process and reap it (kill it if it does not end within 5 s)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SmtpSink(LoopbackProcess):
    """Postfix's ``smtp-sink`` on a free loopback port (a C sink: ~0.085 ms CPU per message).

    It offers PIPELINING like Postfix, Exchange and Gmail do; ``pipelining=False`` (``-p``) hides it.
    """

    def __init__(self, backlog: int = 1000, pipelining: bool = True) -> None:
        super().__init__()
        self.backlog = backlog
        self.pipelining = pipelining

    def start(self) -> Self:
        if not os.path.exists(SMTP_SINK):
            raise RuntimeError(f"{SMTP_SINK} is missing (Debian package postfix)")
        cmd = [SMTP_SINK]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root otherwise
        if not self.pipelining:
            cmd.append("-p")
        cmd += [f"{HOST}:{self.port}", str(self.backlog)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)
        return self


class DelayProxy(LoopbackProcess):
    """``bench/delay_proxy.py`` on a free loopback port in front of ``upstream``: ``delay_ms`` added
    each way (5 ms = a 10 ms round trip). Its own process, so it does not share the sender's GIL."""

    def __init__(self, upstream: int, delay_ms: float = 5.0) -> None:
        super().__init__()
        self.upstream = upstream
        self.delay_ms = delay_ms

    def start(self) -> Self:
        script = Path(__file__).resolve().with_name("delay_proxy.py")
        cmd = [sys.executable, str(script), str(self.port), str(self.upstream), "--delay-ms", str(self.delay_ms)]
        proc = self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "listening":  # bounded: the process prints or exits
            self.stop()
            raise RuntimeError(f"the delaying proxy did not start: {' '.join(cmd)}")
        wait_listening(self.port)
        return self


# ---- a recording server (arrival timestamps) ----------------------------------------
class RecordingServer:
    """aiosmtpd on a free loopback port that notes ``time.time()`` at the end of every DATA.

    Too slow (~1 ms CPU per message) for throughput, exact enough for arrival times.
    """

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        outer = self

        class _Handler:
            async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
                t = time.time()
                with outer._lock:
                    outer.arrivals.append(t)
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(_Handler(), hostname=HOST, port=self.port)

    def __enter__(self) -> RecordingServer:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


# ---- messages --------------------------------------------------------------------
def make_messages(n: int, size: int = MESSAGE_BYTES, tag: str = "") -> list[NewMessage]:
    """``n`` messages of about ``size`` bytes each (headers + a padded text body)."""
    first = compose(to=["rcpt0@example.com"], subject="Bench 0", text="x", sender=SENDER, tag=tag)
    pad = max(1, size - len(first.raw))
    out = []
    for i in range(n):
        body = (f"Message {i}. " + "lorem ipsum dolor sit amet " * 60)[:pad]
        out.append(compose(to=[f"rcpt{i}@example.com"], subject=f"Bench {i}", text=body, sender=SENDER, tag=tag))
    return out


def small_new_messages(n: int, start: int = 0, body_bytes: int = 200, tag: str = "") -> list[NewMessage]:
    """Cheap hand-made NewMessage objects (no MIME building) for outbox-only benchmarks."""
    body = b"x" * body_bytes
    return [
        NewMessage(
            raw=body,
            recipients=(f"r{i}@example.com",),
            from_header=SENDER,
            subject=f"s{i}",
            message_id=f"<{i}@bench.invalid>",
            tag=tag,
        )
        for i in range(start, start + n)
    ]


BUILD_BATCH = 10_000
BUILD_LIMIT_S = 600.0  # give up building a big outbox past this


def build(box: Any, n: int) -> float:
    """Queue ``n`` 200-byte messages through Outbox.enqueue in 10,000-message batches; return the seconds."""
    t0 = time.perf_counter()
    done = 0
    while done < n:
        k = min(BUILD_BATCH, n - done)
        box.enqueue(small_new_messages(k, start=done), time.time())
        done += k
        if time.perf_counter() - t0 > BUILD_LIMIT_S:
            raise RuntimeError(f"building stopped after {BUILD_LIMIT_S:.0f} s at {done:,} messages")
    return time.perf_counter() - t0


# ---- a year-old outbox ------------------------------------------------------------------
# Three tasks, each sending one tag, like an office after a year of invoices and newsletters.
HISTORY_TASKS = {"Invoices": "invoice", "Newsletter": "news", "Reminders": "reminder"}
YEAR_S = 365 * 24 * 3600


@dataclass(frozen=True)
class History:
    """What build_history made."""

    total: int
    sent: int
    failed: int
    queued: int
    seconds: float


def build_history(path: Path, total: int, *, queued_share: float = 0.1, failed: int = 300) -> History:
    """An outbox of ``total`` messages made with a few bulk SQL statements (no claim/mark cycles):
    the oldest ~90 % sent over the past year, ``failed`` of them failed, the newest ``queued_share``
    queued and due now; tags and tasks cycle through HISTORY_TASKS.  The schema, counters and
    search index come from Outbox itself (the counters' triggers fill them as the rows go in; the
    search index is rebuilt at the end)."""
    t0 = time.perf_counter()
    Outbox(path, COMPANY).close()
    queued = int(total * queued_share)
    history = total - queued
    every = max(1, history // failed) if failed else 0
    every += every % 3 == 0  # not a multiple of 3: the failed messages spread over the three tags
    now = time.time()
    tags = list(HISTORY_TASKS.values())
    tasks = list(HISTORY_TASKS)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # a test fixture: durability does not matter here
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            """
            WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :total),
            rows AS (
                SELECT i,
                       CASE WHEN i > :history THEN 'queued'
                            WHEN :every > 0 AND i % :every = 0 AND i / :every <= :failed THEN 'failed'
                            ELSE 'sent' END AS status,
                       CASE WHEN i > :history THEN :now - 3600 + i * 3600.0 / :total
                            ELSE :now - :year + i * :year / :total END AS at,
                       i % 3 AS k
                FROM seq
            )
            INSERT INTO messages (id, status, mail_from, recipients, from_header, subject, tag, message_id,
                                  size, attempts, last_error_code, last_error, server_reply, task,
                                  created_at, queued_at, next_attempt_at, claimed_at, sent_at, updated_at)
            SELECT i, status,
                   CASE WHEN status = 'queued' THEN '' ELSE 'office@firma.example' END,
                   '["client' || i || '@example.com"]',
                   'Firma s.r.o. <office@firma.example>',
                   CASE k WHEN 0 THEN 'Invoice ' || i || ' for order ' || (i % 9973)
                          WHEN 1 THEN 'Newsletter ' || (i % 52) || ': what is new this week'
                          ELSE 'Payment reminder ' || i END,
                   CASE k WHEN 0 THEN :tag0 WHEN 1 THEN :tag1 ELSE :tag2 END,
                   '<' || i || '.bench@firma.example>',
                   200,
                   CASE WHEN status = 'queued' THEN 0 ELSE 1 END,
                   CASE WHEN status = 'failed' THEN 550 END,
                   CASE WHEN status = 'failed' THEN 'mailbox unavailable' ELSE '' END,
                   CASE WHEN status = 'sent' THEN '250 2.0.0 Ok: queued' ELSE '' END,
                   CASE WHEN status = 'queued' THEN '' WHEN k = 0 THEN :task0 WHEN k = 1 THEN :task1 ELSE :task2 END,
                   at, at,
                   CASE WHEN status = 'queued' THEN at END,
                   CASE WHEN status = 'queued' THEN NULL ELSE at END,
                   CASE WHEN status = 'sent' THEN at + 1 END,
                   at
            FROM rows
            """,
            {
                "total": total,
                "history": history,
                "every": every,
                "failed": failed,
                "now": now,
                "year": YEAR_S,
                "tag0": tags[0],
                "tag1": tags[1],
                "tag2": tags[2],
                "task0": tasks[0],
                "task1": tasks[1],
                "task2": tasks[2],
            },
        )
        conn.execute("INSERT INTO bodies (id, raw) SELECT id, CAST(printf('%.200c', 'x') AS BLOB) FROM messages")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='messages_fts'").fetchone():
            conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")  # what enqueue() indexes
        conn.execute("COMMIT")
        counts = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
    finally:
        conn.close()
    return History(
        total, counts.get("sent", 0), counts.get("failed", 0), counts.get("queued", 0), time.perf_counter() - t0
    )


# ---- timing and stats ---------------------------------------------------------------
@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["s"]`` is the elapsed wall time in seconds."""
    box: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def reads(fn: Callable[[], object], n: int) -> list[float]:
    """Seconds each of ``n`` calls of ``fn`` took."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interval_stats(times: list[float]) -> dict[str, float]:
    """Mean, min, max, stdev of the gaps between consecutive sorted timestamps."""
    ts = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ts)]
    if not gaps:
        return {"n": 0, "mean": float("nan"), "min": float("nan"), "max": float("nan"), "stdev": float("nan")}
    return {
        "n": len(gaps),
        "mean": statistics.fmean(gaps),
        "min": min(gaps),
        "max": max(gaps),
        "stdev": statistics.stdev(gaps) if len(gaps) > 1 else 0.0,
    }


@dataclass
class Result:
    """One benchmark's figures, printed alone or gathered by run_all."""

    name: str
    lines: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)  # first row = header
    verdicts: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, text: str, ok: bool) -> None:
        self.verdicts.append((text, ok))

    def print(self) -> None:
        print(f"== {self.name}")
        widths = [max(len(r[i]) for r in self.table) for i in range(len(self.table[0]))] if self.table else []
        for row in self.table:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        for line in self.lines:
            print("  " + line)
        for text, ok in self.verdicts:
            print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
        for note in self.notes:
            print(f"  note: {note}")

    def markdown(self) -> str:
        out = [f"## {self.name}", ""]
        if self.table:
            out.append("| " + " | ".join(self.table[0]) + " |")
            out.append("|" + "|".join("---" for _ in self.table[0]) + "|")
            for row in self.table[1:]:
                out.append("| " + " | ".join(row) + " |")
            out.append("")
        for line in self.lines:
            out.append(f"- {line}")
        for text, ok in self.verdicts:
            out.append(f"- **{'PASS' if ok else 'FAIL'}**: {text}")
        for note in self.notes:
            out.append(f"- Note: {note}")
        out.append("")
        return "\n".join(out)


def machine() -> str:
    fs = "?"
    try:
        fs = (
            subprocess.run(["df", "-T", tempfile.gettempdir()], capture_output=True, text=True, timeout=5)
            .stdout.splitlines()[1]
            .split()[1]
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc {os.cpu_count()}, {cpu or platform.processor()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, temp folder {tempfile.gettempdir()} on {fs}"
    )


@contextmanager
def automail_service(prefix: str, task: str, port: int, rate: int | None) -> Iterator[Any]:
    """A Service in a fresh AUTOMAIL_HOME with company COMPANY and ``task`` sending to 127.0.0.1:port
    (not started yet); closed, and its folder removed, afterwards."""
    from automail.engine.service import Service
    from automail.models import Security, SmtpSettings, Task

    home = temp_dir(prefix)
    old_home = os.environ.get("AUTOMAIL_HOME")
    os.environ["AUTOMAIL_HOME"] = str(home)
    service = Service(home)
    try:
        service.add_company(COMPANY)
        smtp = SmtpSettings(host=HOST, port=port, security=Security.NONE, sender=SENDER)
        service.add_task(Task(name=task, company=COMPANY, smtp=smtp, computer=service.computer, rate_per_hour=rate))
        yield service
    finally:
        service.close()
        if old_home is None:
            os.environ.pop("AUTOMAIL_HOME", None)
        else:
            os.environ["AUTOMAIL_HOME"] = old_home
        remove(home)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
