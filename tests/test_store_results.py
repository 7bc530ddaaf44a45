"""The results journal (outbox schema 12): a result appended while a batch is held is as durable as
one written into its message, and folding it in leaves exactly what the direct write leaves."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from automail.models import MessageStatus, RecipientState, RecipientStatus
from automail.store.outbox import Outbox
from tests.helpers import new_message

SKIP = ("id", "message_id", "subject", "recipients", "raw_size", "search_text")  # differ per message anyway

REFUSED = {"x@y.sk": RecipientState(RecipientStatus.FAILED, "550 no such user")}


def outcomes(box: Outbox, ids: list[int], *, journal: bool) -> None:
    """One of each outcome, at the same times, written directly or to the journal."""
    sent, deferred, failed = ids
    box.mark_sent(sent, 102.0, "250 2.0.0 Ok: queued", REFUSED, "acct", "T", journal=journal)
    box.mark_deferred(deferred, 103.0, 500.0, 451, "try later", "acct", "T", journal=journal)
    box.mark_failed(failed, 104.0, 554, "rejected", "acct", "T", REFUSED, journal=journal)


def snapshot(box: Outbox, ids: list[int]) -> dict[str, object]:
    """Everything the outcomes changed: the rows (but what differs per message), counts, logs, chart."""
    with contextlib.closing(sqlite3.connect(box.path)) as db:
        db.row_factory = sqlite3.Row
        rows = []
        for i in ids:
            row = dict(db.execute("SELECT * FROM messages WHERE id=?", (i,)).fetchone())
            rows.append({k: v for k, v in row.items() if k not in SKIP})
        return {
            "rows": rows,
            "counts": box.counts(),
            "mailings": box.mailings(),
            "send_log": db.execute("SELECT account, task, at FROM send_log ORDER BY at").fetchall(),
            "hourly": db.execute("SELECT task, hour, sent, attempts FROM send_hourly ORDER BY hour").fetchall(),
            "journal": db.execute("SELECT count(*) FROM results").fetchone()[0],
        }


def claimed_box(path: Path) -> tuple[Outbox, list[int]]:
    box = Outbox(path, "Firma")
    ids = box.enqueue([new_message(i) for i in range(3)], now=100.0, mailing="M")
    assert len(box.claim_batch("T", 101.0, limit=3)) == 3
    return box, ids


def test_folding_the_journal_in_leaves_what_the_direct_write_leaves(tmp_path: Path) -> None:
    direct, direct_ids = claimed_box(tmp_path / "direct.sqlite3")
    outcomes(direct, direct_ids, journal=False)
    journaled, journal_ids = claimed_box(tmp_path / "journal.sqlite3")
    outcomes(journaled, journal_ids, journal=True)
    before = snapshot(journaled, journal_ids)
    assert before["journal"] == 3
    assert [r["status"] for r in before["rows"]] == ["sending"] * 3  # not in the messages yet
    assert journaled.apply_results() == 3
    assert snapshot(journaled, journal_ids) == snapshot(direct, direct_ids)
    assert snapshot(direct, direct_ids)["journal"] == 0
    assert journaled.apply_results() == 0  # nothing twice


def test_a_journaled_result_is_one_small_commit(tmp_path: Path) -> None:
    """The point of the journal: one INSERT of one row, not the message's row, indexes and counters."""
    box, ids = claimed_box(tmp_path / "o.sqlite3")
    statements: list[str] = []
    box.watch(lambda sql, _wall, _cpu: statements.append(sql))
    box.mark_sent(ids[0], 102.0, "250 ok", {}, "acct", "T", journal=True)
    box.watch(None)
    assert len(statements) == 1 and statements[0].startswith("INSERT OR REPLACE INTO results")
    with contextlib.closing(sqlite3.connect(box.path)) as db:
        assert db.execute("SELECT message, status, at, task, account FROM results").fetchall() == [
            (ids[0], "sent", 102.0, "T", "acct")
        ]


@pytest.mark.parametrize("how", ["recover", "rename"])
def test_a_crash_s_journal_is_folded_in_before_anything_is_requeued(tmp_path: Path, how: str) -> None:
    """After kill -9 the journal holds delivered messages still in 'sending': the next start's
    recover must not put them back in the queue (each would be sent again)."""
    box, ids = claimed_box(tmp_path / "o.sqlite3")
    box.mark_sent(ids[0], 102.0, "250 ok", {}, "acct", "T", journal=True)
    box.mark_deferred(ids[1], 103.0, 500.0, 451, "later", "acct", "T", journal=True)
    box.close_thread_connection()  # the killed engine's connection is gone
    again = Outbox(box.path, "Firma")
    if how == "rename":
        again.rename_task("T", "U")
        # The results were folded in first, so they moved with the rest of the task's history.
        assert [again.get(i).task for i in ids] == ["U"] * 3
        with contextlib.closing(sqlite3.connect(box.path)) as db:
            assert db.execute("SELECT DISTINCT task FROM send_log").fetchall() == [("U",)]
        assert again.recover("U", 200.0) == 1
    else:
        assert again.recover("T", 200.0) == 1  # only the message with no result
    assert [again.get(i).status for i in ids] == [MessageStatus.SENT, MessageStatus.DEFERRED, MessageStatus.QUEUED]
    assert again.get(ids[1]).next_attempt_at == 500.0 and again.get(ids[0]).attempts == 1
    assert again.send_times("acct", 0) == [102.0, 103.0]
    assert again.apply_results() == 0


def test_a_schema_11_outbox_gains_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    box, ids = claimed_box(path)
    box.close_thread_connection()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE results")
        db.execute("PRAGMA user_version=11")
        db.commit()
    again = Outbox(path, "Firma")
    again.mark_sent(ids[0], 102.0, "250 ok", {}, "acct", "T", journal=True)
    assert again.apply_results() == 1 and again.get(ids[0]).status is MessageStatus.SENT


def test_the_throttle_counts_journaled_sends(tmp_path: Path) -> None:
    """After a crash mid-batch the restarted engine builds its throttle before the worker folds the
    journal in: a daily cap must still count the sends that only the journal knows of."""
    box, ids = claimed_box(tmp_path / "o.sqlite3")
    box.mark_sent(ids[0], 102.0, "250 ok", {}, "acct", "T")
    box.mark_sent(ids[1], 103.0, "250 ok", {}, "acct", "T", journal=True)
    box.mark_failed(ids[2], 104.0, 552, "too large", "", "T", journal=True)  # never sent: not a send
    assert box.send_times("acct", 0) == [102.0, 103.0]
    box.apply_results()
    assert box.send_times("acct", 0) == [102.0, 103.0]  # the same sends, once
