"""The worker's results journal (outbox schema 12), against a real aiosmtpd server on 127.0.0.1: while it
holds the rest of a batch, each result is one durable journal row before the next final dot; when the
batch ends they are folded into their messages."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from automail.engine.worker import CLAIM_BATCH
from automail.models import EventKind, MessageStatus
from tests.helpers import eml, make_service, make_task, run_engine_until
from tests.smtpd import SmtpServer

N = 2 * CLAIM_BATCH + 7  # two whole batches and a part of one


def test_every_result_is_durable_before_the_next_final_dot_and_folded_in_when_the_batch_ends(
    automail_home: Path, smtp_server_pipelining: SmtpServer
) -> None:
    server = smtp_server_pipelining
    svc = make_service(automail_home, make_task(port=server.port))  # unlimited: claims batches
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(N)])
    path = automail_home / "outbox" / "Firma.sqlite3"
    seen: list[tuple[int, int, int]] = []  # per final dot: (messages before it, results in messages, in journal)
    record = server._record

    def at_the_final_dot(*args: Any) -> str:
        # The server has the whole message: every earlier message's result must be committed by now.
        with contextlib.closing(sqlite3.connect(path)) as db:
            done = db.execute("SELECT count(*) FROM messages WHERE status = 'sent'").fetchone()[0]
            journal = db.execute("SELECT count(*) FROM results").fetchone()[0]
        seen.append((len(server.messages), done, journal))
        return record(*args)

    server._record = at_the_final_dot  # type: ignore[method-assign]
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
