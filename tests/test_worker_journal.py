"""The worker's results journal (outbox schema 12), against a real aiosmtpd server on 127.0.0.1: while it
holds the rest of a batch, each result is one durable journal row before the next final dot; when the
batch ends they are folded into their messages."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from automail.engine import worker
from automail.engine.worker import CLAIM_BATCH
from automail.models import EventKind, MessageStatus
from tests.helpers import eml, make_service, make_task, run_engine_until
from tests.smtpd import SmtpServer

N = 2 * CLAIM_BATCH + 7  # two whole batches and a part of one


def at_each_final_dot(server: SmtpServer, look: Callable[[], None]) -> None:
    """Call ``look`` in the server each time it has a whole message, before it answers the final dot."""
    record = server._record

    def looking(*args: Any) -> str:
        look()
        return record(*args)

    server._record = looking  # type: ignore[method-assign]


def test_every_result_is_durable_before_the_next_final_dot_and_folded_in_when_the_batch_ends(
    automail_home: Path, smtp_server_pipelining: SmtpServer
) -> None:
    server = smtp_server_pipelining
    svc = make_service(automail_home, make_task(port=server.port))  # unlimited: claims batches
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(N)])
    path = automail_home / "outbox" / "Firma.sqlite3"
    seen: list[tuple[int, int, int]] = []  # per final dot: (messages before it, results in messages, in journal)

    def look() -> None:
        # The server has the whole message: every earlier message's result must be committed by now.
        with contextlib.closing(sqlite3.connect(path)) as db:
            done = db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()[0]
            journal = db.execute("SELECT count(*) FROM results").fetchone()[0]
        seen.append((len(server.messages), done, journal))

    at_each_final_dot(server, look)
    events: list[EventKind] = []
    svc.subscribe(lambda e: events.append(e.kind))
    run_engine_until(svc, lambda: EventKind.QUEUE_DRAINED in events, timeout=30)
    assert len(seen) == N
    for before, done, journal in seen:
        assert done + journal == before  # each earlier result committed (here or there), none counted twice
    assert max(journal for _, _, journal in seen) == CLAIM_BATCH - 1  # a batch's results wait in the journal
    assert [journal for before, _, journal in seen if before == CLAIM_BATCH] == [0]  # folded in at its end
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.SENT] * N
    assert events.count(EventKind.SENT) == N
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM send_log").fetchone()[0] == N  # the throttle's log, as before
    svc.close()


def test_the_next_final_dot_waits_while_the_journal_row_cannot_be_written(
    automail_home: Path, smtp_server_pipelining: SmtpServer
) -> None:
    """Another program holds the outbox's write lock when message 5 is accepted: its result cannot be
    committed, so message 6 is not finished (no final dot) until the lock is given back."""
    server = smtp_server_pipelining
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(10)])
    path = automail_home / "outbox" / "Firma.sqlite3"
    arrived: list[float] = []
    released: list[float] = []

    def hold_the_lock(db: sqlite3.Connection) -> None:
        time.sleep(0.5)
        released.append(time.monotonic())
        db.execute("COMMIT")
        db.close()

    def look() -> None:
        arrived.append(time.monotonic())
        if len(arrived) == 5:  # before message 5's 250 leaves: its result's commit must wait for this lock
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN IMMEDIATE")
            threading.Thread(target=hold_the_lock, args=(db,), daemon=True).start()

    at_each_final_dot(server, look)
    run_engine_until(svc, lambda: len(server.messages) == 10 and not svc.pending(svc.tasks()), timeout=30)
    assert len(released) == 1 and arrived[5] > released[0]  # message 6's dot came after the lock's end
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.SENT] * 10
    svc.close()


def test_a_fold_that_fails_loses_no_result_and_sends_nothing_twice(
    automail_home: Path, smtp_server_pipelining: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving the batch's results into their messages fails for a while (the outbox's disk is full, a lock
    held too long): the results stay durable in the journal, the one being committed is not dropped,
    and the fold is tried again until it works."""
    monkeypatch.setattr(worker, "STEP_ERROR_BACKOFF_S", 0.2)
    server = smtp_server_pipelining
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(N)])
    path = automail_home / "outbox" / "Firma.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE fail_fold (x)")
        db.execute("INSERT INTO fail_fold VALUES (1)")
        db.execute(
            "CREATE TRIGGER tr_fail_fold BEFORE DELETE ON results WHEN EXISTS (SELECT 1 FROM fail_fold)"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )

    def heal() -> None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=30)) as db:
            db.execute("DELETE FROM fail_fold")

    def look() -> None:
        if len(server.messages) == CLAIM_BATCH - 1:  # the first batch's last message: its fold will fail
            threading.Timer(1.0, heal).start()

    at_each_final_dot(server, look)
    events: list[EventKind] = []
    svc.subscribe(lambda e: events.append(e.kind))
    run_engine_until(svc, lambda: EventKind.QUEUE_DRAINED in events, timeout=60)
    assert sorted(m.message_id for m in server.messages) == sorted(m.message_id for m in svc.messages("Firma"))
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.SENT] * N
    assert events.count(EventKind.SENT) == N
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 0
    svc.close()
