"""The outbox at scale (issue 10): query plans, kept counters, migration, readers without the write lock."""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from automail.engine.service import Service
from automail.errors import OutboxError
from automail.models import MessageStatus
from automail.store import outbox as outbox_module
from automail.store.outbox import _SCHEMA_V1, _SCHEMA_V2, SCHEMA_VERSION, Outbox
from bench.common import HISTORY_TASKS, build_history
from tests.helpers import cli, new_message, setup_task

NOW = time.time()
TAGS = tuple(HISTORY_TASKS.values())
TASK = next(iter(HISTORY_TASKS))

# Every hot query, run through the public interface, and the index each must use.
HOT: dict[str, tuple[Callable[[Outbox], object], str]] = {
    "claim, one tag": (lambda b: b.claim_batch(TASK, NOW, TAGS[:1], "", 32), "ix_due_tag"),
    "claim, two tags": (lambda b: b.claim_batch(TASK, NOW, TAGS[:2], "", 32), "ix_due_tag"),
    "claim, no tags": (lambda b: b.claim_batch("All", NOW, (), "", 32), "ix_due"),
    "next_due, tags": (lambda b: b.next_due(TAGS[1:]), "ix_due_tag"),
    "next_due, no tags": (lambda b: b.next_due(), "ix_due"),
    "counts, tags": (lambda b: b.counts(TAGS[:1]), "message_counts"),
    "counts, no tags": (lambda b: b.counts(), "message_counts"),
    "sent last hour": (lambda b: b.sent_count(TASK, NOW - 3600), "ix_task_sent"),
    "sent last 24 h": (lambda b: b.sent_count(TASK, NOW - 86400), "ix_task_sent"),
    "failed count": (lambda b: b.failed_count(TASK, TAGS[:1]), "message_counts"),
    "recover": (lambda b: b.recover(TASK, NOW), "ix_sending"),
    "window page, status": (lambda b: b.page(MessageStatus.FAILED, before=10**9), "ix_status"),
    "window last page": (lambda b: b.page(None, after=0), "PRIMARY KEY"),
    "window count, status": (lambda b: b.count(MessageStatus.QUEUED), "message_counts"),
    "window search": (lambda b: b.page(None, "client1234"), "VIRTUAL TABLE INDEX"),
    "window search, status": (lambda b: b.page(MessageStatus.SENT, "invoice"), "VIRTUAL TABLE INDEX"),
    "window search count": (lambda b: b.count(None, "invoice", cap=1000), "VIRTUAL TABLE INDEX"),
    "window search, newest": (lambda b: b.search_newest(MessageStatus.SENT, "invoice", 200, 1000), "VIRTUAL TABLE"),
    "throttle restore": (lambda b: b.send_times("acct", NOW - 3600), "ix_send_account"),
    "enqueue: Message-IDs held already": (lambda b: b.known_message_ids(["<5.bench@firma.example>"]), "ix_message_id"),
}
INDEXES = ("ix_due", "ix_due_tag", "ix_task_sent", "ix_sending", "ix_status", "ix_send_account", "ix_message_id")


def plan_problems(path: Path) -> list[str]:
    """Run every HOT action on the outbox at ``path``; say which statement reads a table without its index."""
    box = Outbox(path, "Firma")
    raw = sqlite3.connect(path)
    problems = []
    try:
        for name, (action, index) in HOT.items():
            statements: list[str] = []
            box._conn().set_trace_callback(statements.append)
            action(box)
            box._conn().set_trace_callback(None)
            plans = []
            for sql in dict.fromkeys(statements):
                if sql.startswith("--") or sql.split()[0].upper() in ("BEGIN", "COMMIT", "PRAGMA"):
                    continue  # trigger bodies and transaction control
                plan = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql))
                plans.append(plan)
                for table in ("messages", "m", "send_log"):  # m: messages in the window's queries
                    if re.search(rf"\bSCAN {table}\b", plan):
                        problems.append(f"{name}: reads every row of {table}: {plan}")
            if not any(index in plan for plan in plans):
                problems.append(f"{name}: does not use {index}: {plans}")
    finally:
        box.close()
        raw.close()
    return problems


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A year-old outbox in miniature: 90 % sent, some failed, the rest queued, three tagged tasks."""
    path = tmp_path_factory.mktemp("history") / "firma.sqlite3"
    build_history(path, 20_000, failed=60)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM sqlite_stat1")  # as a file that was never analysed
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("analysed", [False, True], ids=["no statistics", "after ANALYZE"])
def test_every_hot_query_uses_its_index(history: Path, tmp_path: Path, analysed: bool) -> None:
    path = tmp_path / "copy.sqlite3"
    shutil.copy(history, path)
    if analysed:
        conn = sqlite3.connect(path)
        conn.execute("ANALYZE")  # statistics change the planner's choices: the plans must hold with them too
        conn.close()
    assert plan_problems(path) == []


@pytest.mark.parametrize("index", INDEXES)
def test_the_plan_check_fails_when_an_index_is_dropped(history: Path, tmp_path: Path, index: str) -> None:
    path = tmp_path / "copy.sqlite3"
    shutil.copy(history, path)
    conn = sqlite3.connect(path)
    conn.execute(f"DROP INDEX {index}")
    conn.close()
    assert any(index in p or "reads every row" in p for p in plan_problems(path))


def _true_counts(path: Path, tags: tuple[str, ...]) -> dict[MessageStatus, int]:
    conn = sqlite3.connect(path)
    clause = f" WHERE tag IN ({','.join('?' * len(tags))})" if tags else ""
    rows = conn.execute(f"SELECT status, count(*) FROM messages{clause} GROUP BY status", tags).fetchall()
    conn.close()
    result = {s: 0 for s in MessageStatus}
    result.update({MessageStatus(s): n for s, n in rows})
    return result


def _true_failed(path: Path, task: str, tags: tuple[str, ...]) -> int:
    conn = sqlite3.connect(path)
    clause = f" AND tag IN ({','.join('?' * len(tags))})" if tags else ""
    sql = f"SELECT count(*) FROM messages WHERE status='failed' AND (task=? OR (task=''{clause}))"
    n = int(conn.execute(sql, [task, *tags]).fetchone()[0])
    conn.close()
    return n


def _claim_and_fail_elsewhere(path: Path) -> None:
    """Another process claims two messages of tag B, fails one and sends the other."""
    code = (
        "import sys; from automail.store.outbox import Outbox\n"
        f"box = Outbox({str(path)!r})\n"
        "got = box.claim_batch('P', 50.0, ('B',), '', 2)\n"
        "box.mark_failed(got[0].message.id, 51.0, 550, 'no', 'acct', 'P')\n"
        "box.mark_sent(got[1].message.id, 51.0, '250', {}, 'acct', 'P')\n"
        "box.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)


def test_counters_stay_exact_through_every_state_change(tmp_path: Path) -> None:
    path = tmp_path / "firma.sqlite3"
    box, other = Outbox(path, "Firma"), Outbox(path, "Firma")  # two handles, like two processes
    rng = random.Random(10)
    scopes: list[tuple[str, ...]] = [(), ("A",), ("B",), ("A", "B"), ("C",)]

    def check() -> None:
        for tags in scopes:
            assert box.counts(tags) == _true_counts(path, tags), tags
            assert other.failed_count("T", tags) == _true_failed(path, "T", tags)
            assert box.failed_count("P", tags) == _true_failed(path, "P", tags)
        assert box.count() == sum(_true_counts(path, ()).values())
        assert box.count(MessageStatus.QUEUED) == _true_counts(path, ())[MessageStatus.QUEUED]

    box.enqueue([new_message(i, tag=rng.choice("ABC")) for i in range(60)], now=0.0)
    check()
    with pytest.raises(AttributeError):
        other.enqueue([new_message(99, tag="A"), None], now=0.0)  # type: ignore[list-item]
    check()  # the rolled-back batch left the counters alone
    claimed = box.claim_batch("T", 1.0, ("A", "B"), "", 10)
    check()
    for c in claimed[:3]:
        other.mark_sent(c.message.id, 2.0, "250", {}, "acct", "T")
    for c in claimed[3:6]:
        box.mark_failed(c.message.id, 2.0, 550, "no", "acct", "T")
    box.mark_deferred(claimed[6].message.id, 2.0, 3.0, 451, "later", "acct", "T")
    box.release([claimed[7].message.id], 2.0)
    check()
    assert box.recover("T", 4.0) == 2
    check()
    assert box.retry([claimed[3].message.id], 5.0) == 1
    check()
    queued = [m.id for m in box.page(MessageStatus.QUEUED, limit=4)]
    other.cancel(queued, 6.0)
    check()
    _claim_and_fail_elsewhere(path)
    check()
    failed = _true_counts(path, ())[MessageStatus.FAILED]
    assert failed > 0 and box.retry(None, 7.0) == failed
    check()
    box.close()
    other.close()


def _v2_file(path: Path) -> None:
    """An outbox as AutoMail wrote it before issue 10 (schema 2), with a few messages."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA_V1 + _SCHEMA_V2)
    for i, (status, tag, task) in enumerate(
        [("sent", "A", "T"), ("sent", "A", "T"), ("failed", "B", "T"), ("queued", "A", ""), ("queued", "B", "")]
    ):
        conn.execute(
            "INSERT INTO messages (status, recipients, subject, tag, message_id, size, task, created_at, queued_at,"
            " next_attempt_at, sent_at, updated_at) VALUES (?,?,?,?,?,1,?,0,0,?,?,0)",
            (
                status,
                f'["anna{i}@firma.sk"]',
                f"Invoice {i}",
                tag,
                f"<{i}@x>",
                task,
                0.0 if status == "queued" else None,
                1.0 if status == "sent" else None,
            ),
        )
    conn.execute("INSERT INTO bodies (id, raw) SELECT id, x'00' FROM messages")
    conn.execute("PRAGMA user_version=2")
    conn.close()


def test_a_v2_outbox_gets_the_new_indexes_counters_and_search(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _v2_file(path)
    box = Outbox(path, "Firma")
    conn = sqlite3.connect(path)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"ix_due_tag", "mailing_counts", "message_counts", "tr_counts_update"} <= names
    assert "ix_tag_status" not in names  # replaced by the counters
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # Statistics for the new index right after the migration (PRAGMA optimize's job on a schema change).
    assert conn.execute("SELECT count(*) FROM sqlite_stat1 WHERE idx='ix_due_tag'").fetchone()[0] == 1
    conn.close()
    assert box.counts(("A",)) == {**{s: 0 for s in MessageStatus}, MessageStatus.SENT: 2, MessageStatus.QUEUED: 1}
    assert box.failed_count("T", ("A",)) == 1
    assert box.search_indexed
    assert [m.id for m in box.page(search="anna3")] == [4]
    assert box.claim("X", 1.0, ("B",)).message.id == 5
    box.close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM sqlite_stat1")  # statistics of 5 rows say "scan": judge the indexes alone
    conn.commit()
    conn.close()
    assert plan_problems(path) == []


def test_readers_never_wait_for_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "firma.sqlite3"
    Outbox(path, "Firma").enqueue([new_message(i) for i in range(3)], now=0.0)
    engine = sqlite3.connect(path, isolation_level=None)
    engine.execute("BEGIN IMMEDIATE")  # an engine in the middle of a write
    results: list[object] = []

    def read() -> None:
        for read_only in (True, False):
            box = Outbox(path, "Firma", read_only=read_only)
            results.append(box.counts()[MessageStatus.QUEUED])
            box.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)  # the busy timeout is 30 s: a reader that waited for the lock is still waiting
    alive = reader.is_alive()
    engine.execute("ROLLBACK")
    engine.close()
    assert not alive and results == [3, 3]
    reader_box = Outbox(path, "Firma", read_only=True)
    with pytest.raises(OutboxError, match="reading only"):
        reader_box.enqueue([new_message(9)], now=1.0)
    reader_box.close()


def test_a_reader_migrates_an_old_file_once(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    _v2_file(path)
    box = Outbox(path, "Firma", read_only=True)
    assert box.counts()[MessageStatus.SENT] == 2
    box.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_search_without_fts5_is_bounded_and_gets_the_index_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "firma.sqlite3"
    monkeypatch.setattr(outbox_module, "_has_fts5", lambda: False)
    monkeypatch.setattr(outbox_module, "SEARCH_SCAN_ROWS", 30)
    box = Outbox(path, "Firma")
    box.enqueue([new_message(i) for i in range(50)], now=0.0)
    assert not box.search_indexed
    assert box.count(search="Invoice 4") == 10  # only the newest 30 are searched: 40…49, not 4
    assert [m.id for m in box.page(search="customer42@")] == [43]
    assert [m.id for m in box.search_newest(None, "customer42@", 5, 20)[0]] == [43]
    box.close()
    monkeypatch.undo()
    box = Outbox(path, "Firma")  # opened where FTS5 exists: the search index is built
    assert box.search_indexed
    assert box.count(search="Invoice 4") == 11  # 4 and 40…49
    assert box.count(search="invoice", cap=20) == 20
    page, total = box.search_newest(None, "invoice", 5, 20)
    assert [m.id for m in page] == [50, 49, 48, 47, 46] and total == 20
    assert box.search_newest(MessageStatus.SENT, "invoice", 5, 20) == ([], 0)
    assert [m.id for m in box.page(search="customer42@")] == [43]
    box.close()


def test_key_paging_walks_every_message_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "firma.sqlite3", "Firma")
    box.enqueue([new_message(i) for i in range(25)], now=0.0)
    pages, before = [], None
    while page := box.page(limit=10, before=before):
        pages.append([m.id for m in page])
        before = page[-1].id
    assert pages == [list(range(25, 15, -1)), list(range(15, 5, -1)), [5, 4, 3, 2, 1]]
    assert [m.id for m in box.page(limit=10, after=0)] == list(range(10, 0, -1))  # the oldest page
    assert [m.id for m in box.page(limit=10, after=15)] == list(range(25, 15, -1))  # back from the second
    assert [m.id for m in box.iter_messages()] == list(range(1, 26))
    box.close()


def test_queries_on_a_watched_thread_are_reported(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "firma.sqlite3", "Firma")
    box.enqueue([new_message(1)], now=0.0)
    seen: list[tuple[str, float]] = []
    box.watch(lambda sql, s, _cpu: seen.append((sql, s)))
    assert box.counts()[MessageStatus.QUEUED] == 1 and box.get(1).id == 1
    other = threading.Thread(target=lambda: box.counts())
    other.start()
    other.join()
    assert len(seen) == 2 and all(s >= 0 for _, s in seen)
    box.watch(None)
    box.counts()
    assert len(seen) == 2
    box.close()


def test_optimize_runs_periodically_and_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = Outbox(tmp_path / "firma.sqlite3", "Firma")
    statements: list[str] = []
    box._conn().set_trace_callback(statements.append)
    box.optimize_if_due()
    assert "PRAGMA optimize" not in statements  # not due yet
    monkeypatch.setattr(outbox_module, "OPTIMIZE_EVERY_S", 0.0)
    box.optimize_if_due()
    assert "PRAGMA optimize" in statements
    statements.clear()
    box.close()
    assert "PRAGMA optimize" in statements


def test_cli_outbox_shows_the_newest_by_default_and_streams_all(automail_home: Path) -> None:
    setup_task(2525)
    svc = Service(automail_home)
    svc.enqueue("Firma", [new_message(i) for i in range(7)])
    svc.close()
    res = cli("outbox", "--company", "Firma", "--json", "--limit", "3")
    assert [m["id"] for m in json.loads(res.stdout)] == [5, 6, 7]  # the newest three, oldest first
    assert "--limit N shows more, --all shows every one" in res.stderr
    everything = cli("outbox", "--company", "Firma", "--json", "--all")
    assert [m["id"] for m in json.loads(everything.stdout)] == list(range(1, 8)) and everything.stderr == ""
    assert json.loads(cli("outbox", "--company", "Firma", "--json").stdout)[-1]["id"] == 7
    lines = cli("outbox", "--company", "Firma", "--all", "--search", "Invoice 3").stdout.splitlines()
    assert lines[0].split("\t")[:2] == ["ID", "STATUS"] and [ln.split("\t")[0] for ln in lines[1:]] == ["4"]
    assert "--limit must be at least 1" in cli("outbox", "--company", "Firma", "--limit", "0", check=2).stderr


def test_cli_status_answers_while_an_engine_holds_the_write_lock(automail_home: Path) -> None:
    setup_task(2525)
    svc = Service(automail_home)
    svc.enqueue("Firma", [new_message(i) for i in range(2)])
    path = svc.definitions.company("Firma").outbox_path
    svc.close()
    engine = sqlite3.connect(path, isolation_level=None)
    engine.execute("BEGIN IMMEDIATE")
    try:
        # Before the fix `status` waited for this lock (busy timeout 30 s > this timeout).
        rows = json.loads(cli("status", "--json", timeout=25).stdout)
    finally:
        engine.execute("ROLLBACK")
        engine.close()
    assert rows[0]["queued"] == 2


def test_claims_beside_a_paused_mailing_read_only_running_ranges(history: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.sqlite3"
    shutil.copy(history, path)
    box = Outbox(path, "Firma")
    box.enqueue([new_message(100_000 + i, tag=TAGS[0]) for i in range(3000)], 0.0, mailing="Big")  # due first
    box.enqueue([new_message(200_000 + i, tag=TAGS[0]) for i in range(5)], NOW, mailing="Small")
    box.pause_mailing("Big", NOW)
    big_id = box.mailing("Big").id
    for tags in ((), TAGS[:1], TAGS[:2]):
        claimed = box.claim_batch("T", NOW + 1, tags, "", 32)
        assert claimed and all(c.message.mailing_id != big_id for c in claimed)
        due = box.next_due(tags)
        assert due is None or due > 0.0  # the paused mailing's due time is not "next"
    statements: list[str] = []
    box._conn().set_trace_callback(statements.append)
    box.claim_batch("T", NOW + 1, (), "", 32)
    box._conn().set_trace_callback(None)
    box.close()
    raw = sqlite3.connect(path)
    claim = next(s for s in statements if s.startswith("UPDATE messages SET status='sending'"))
    plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + claim)]
    raw.close()
    # One due-ordered range per running mailing and one for the messages in none; Big is not read.
    assert sum("USING COVERING INDEX ix_due (mailing=? AND next_attempt_at<?)" in p for p in plan) == 2, plan
    assert plan_problems(path) == []  # every hot query again, with mailings running and one paused
