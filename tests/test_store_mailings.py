"""Mailings in the outbox: created with their messages in one transaction, paused, resumed, cancelled, retried."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from automail.errors import InputError, NotFoundError, OutboxError
from automail.models import MessageStatus, RecipientState, RecipientStatus
from automail.store.outbox import NewMessage, Outbox
from tests.helpers import new_message


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "firma.sqlite3", "Firma")


def test_mailing_is_created_with_its_messages_and_counted(box: Outbox) -> None:
    ids = box.enqueue([new_message(i) for i in range(4)], 100.0, mailing="Faktúry 11/2026", sources=["a.csv", "t.txt"])
    box.enqueue([new_message(9)], 100.0)  # not in a mailing
    m = box.mailing("FAKTÚRY 11/2026")  # case-insensitive, beyond ASCII too
    assert (m.name, m.company, m.sources, m.created_at) == ("Faktúry 11/2026", "Firma", ("a.csv", "t.txt"), 100.0)
    assert (m.queued, m.sent, m.total, m.finished, m.state) == (4, 0, 4, False, "sending")
    assert box.get(ids[0]).mailing_id == m.id and box.get(ids[0] + 4).mailing_id is None
    assert box.mailing_name(m.id) == "Faktúry 11/2026"

    first = box.claim("T", 101.0)
    assert first is not None and first.message.mailing_id == m.id
    box.mark_sent(first.message.id, 102.0, "250 ok", {}, "acct", "T")
    second = box.claim("T", 103.0)
    assert second is not None
    box.mark_failed(second.message.id, 104.0, 550, "no such user", "acct", "T")
    third = box.claim("T", 105.0)
    assert third is not None
    box.mark_sent(third.message.id, 106.0, "250 ok", {}, "acct", "T")
    m = box.mailing("faktúry 11/2026")
    assert (m.queued, m.sending, m.sent, m.failed, m.first_sent_at, m.last_sent_at) == (1, 0, 2, 1, 102.0, 106.0)
    assert [x.name for x in box.mailings()] == ["Faktúry 11/2026"]
    assert box.mailings()[0].to_json()["sent"] == 2


def test_duplicate_name_queues_nothing(box: Outbox) -> None:
    box.create_mailing("Newsletter", ["n.eml"], 1.0)
    with pytest.raises(InputError, match="already has a mailing named 'Newsletter'"):
        box.enqueue([new_message(1)], 2.0, mailing="NEWSLETTER")
    assert box.count() == 0 and len(box.mailings()) == 1
    for bad in ("", "   ", "a\nb", "x" * 201):
        with pytest.raises(InputError, match="not a usable mailing name"):
            box.create_mailing(bad, [], 1.0)
    with pytest.raises(NotFoundError, match="no mailing named 'Nope'"):
        box.mailing("Nope")


def test_mailing_and_messages_are_one_transaction(box: Outbox) -> None:
    def rows() -> Iterator[NewMessage]:
        yield new_message(1)
        yield new_message(2)
        raise RuntimeError("the data file broke half-way")

    with pytest.raises(RuntimeError):
        box.enqueue(rows(), 1.0, mailing="Half")
    assert box.count() == 0 and box.mailings() == []
    # The name is free again: nothing of the failed attempt stayed.
    box.enqueue(rows_ok := [new_message(3)], 2.0, mailing="Half")
    assert box.mailing("Half").queued == len(rows_ok)


def test_not_before_holds_messages_until_then(box: Outbox) -> None:
    box.enqueue([new_message(1), new_message(2)], 100.0, mailing="Later", not_before=5000.0)
    now_id = box.enqueue([new_message(3)], 200.0)[0]
    assert box.mailing("Later").state == "scheduled" and box.mailing("Later").not_before == 5000.0
    claimed = box.claim("T", 4999.0)
    assert claimed is not None and claimed.message.id == now_id  # the later-queued free message goes first
    assert box.claim("T", 4999.0) is None
    assert box.next_due() == 5000.0  # the worker sleeps until then, it does not poll
    got = box.claim("T", 5000.0)
    assert got is not None and got.message.subject == "Invoice 1"
    # A time in the past means "now": the messages keep their queue order.
    box.enqueue([new_message(4)], 300.0, mailing="Past", not_before=10.0)
    assert box.mailing("Past").not_before == 10.0


def test_pause_touches_only_its_mailing_and_resume_restores_due_times(box: Outbox) -> None:
    a = box.enqueue([new_message(i) for i in range(3)], 100.0, mailing="A")
    b = box.enqueue([new_message(i) for i in range(10, 12)], 100.0, mailing="B")
    claimed = box.claim("T", 101.0)
    assert claimed is not None and claimed.message.id == a[0]
    box.mark_deferred(a[0], 102.0, 900.0, 451, "later", "acct", "T")
    assert box.pause_mailing("a", 103.0) == 3  # two queued and the deferred one
    assert box.mailing("A").paused and box.mailing("A").state == "paused"
    assert (box.held_count(), box.held_count([""]), box.held_count(["other"])) == (3, 3, 0)
    # A paused mailing's messages are not claimed: only B's are, however late it is.
    taken = [c.message.id for c in box.claim_batch("T", 10_000.0, limit=10)]
    assert taken == b
    assert box.next_due() is None
    # A retry or a release inside a paused mailing stays held: it is not claimed.
    box.mark_failed(b[0], 10_001.0, 550, "no", "acct", "T")
    box.release(b[1], 10_001.0)
    box.mark_failed(b[1], 10_001.0, 550, "no", "acct", "T")
    box.pause_mailing("B", 10_002.0)
    assert box.retry_mailing("B", 10_003.0) == 2
    assert box.claim("T", 20_000.0) is None
    assert box.mailing("B").queued == 2
    # Resume: each message is due when it was due before (the deferred one keeps its backoff).
    assert box.resume_mailing("A", 10_004.0) == 3
    assert box.get(a[0]).next_attempt_at == 900.0 and box.get(a[1]).next_attempt_at == 100.0
    assert [c.message.id for c in box.claim_batch("T", 20_000.0, limit=10)] == a


def test_paused_message_found_in_sending_after_a_crash_stays_held(box: Outbox) -> None:
    (msg,) = box.enqueue([new_message(1)], 1.0, mailing="M")
    assert box.claim("T", 2.0) is not None
    box.pause_mailing("M", 3.0)
    assert box.recover("T", 4.0) == 1
    assert box.claim("T", 5.0) is None
    box.resume_mailing("M", 6.0)
    got = box.claim("T", 7.0)
    assert got is not None and got.message.id == msg


def test_cancel_and_retry_failed_change_only_their_mailing(box: Outbox) -> None:
    a = box.enqueue([new_message(i) for i in range(3)], 1.0, mailing="A")
    b = box.enqueue([new_message(i) for i in range(10, 12)], 1.0, mailing="B")
    c = box.claim("T", 2.0)
    assert c is not None and c.message.id == a[0]
    sending = box.claim("T", 2.0)
    assert sending is not None and sending.message.id == a[1]
    box.mark_failed(a[0], 3.0, 550, "no", "acct", "T")
    box.pause_mailing("A", 3.5)
    assert box.cancel_mailing("A", 4.0) == 1  # only what has not left: a[2]; a[1] is being sent
    m = box.mailing("A")
    assert (m.cancelled, m.sending, m.failed, m.queued) == (1, 1, 1, 0)
    assert box.get(a[2]).status is MessageStatus.CANCELLED
    assert all(box.get(i).status is MessageStatus.QUEUED for i in b)
    box.resume_mailing("A", 4.5)
    partly = {"x@y.sk": RecipientState(RecipientStatus.SENT, "250 ok")}
    box.mark_failed(a[1], 5.0, 550, "no", "acct", "T", partly)
    assert box.retry_mailing("A", 6.0) == 2
    assert box.get(a[1]).recipient_state("x@y.sk").status is RecipientStatus.SENT  # not asked again
    assert box.mailing("A").queued == 2 and box.mailing("B").queued == 2
    assert box.cancel_mailing("A", 7.0) == 2 and box.mailing("A").finished


def test_schema_5_outbox_gains_mailings_and_receipts(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = old_outbox(path, 5)
    conn.execute(
        "INSERT INTO messages (status, recipients, message_id, size, created_at, queued_at, next_attempt_at,"
        " updated_at) VALUES ('queued', '[\"c1@example.com\"]', '<1@test>', 10, 1.0, 1.0, 1.0, 1.0)"
    )
    conn.execute("INSERT INTO bodies (id, raw) VALUES (1, ?)", (new_message(1).raw,))
    conn.close()
    again = Outbox(path, "Old")
    assert again.get(1).mailing_id is None
    again.enqueue([new_message(2)], 2.0, mailing="New", receipts=["a.eml|1"])
    assert again.mailing("New").queued == 1
    assert again.known_receipts(["a.eml|1", "b.eml|2"]) == {"a.eml|1"}
    with pytest.raises(OutboxError):  # a file already queued: the whole batch is refused
        again.enqueue([new_message(3)], 3.0, receipts=["a.eml|1"])
    assert again.count() == 2


def old_outbox(path: Path, version: int) -> sqlite3.Connection:
    """An outbox file made by the release whose schema was ``version`` (its migrations, nothing later)."""
    from automail.store.outbox import _MIGRATIONS, APPLICATION_ID, _statements

    conn = sqlite3.connect(path, isolation_level=None)
    for target, script in _MIGRATIONS:
        if target <= version:
            for stmt in script if isinstance(script, tuple) else _statements(script):
                conn.execute(stmt)
    conn.execute(f"PRAGMA user_version={version}")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    return conn


def old_message(conn: sqlite3.Connection, mailing: int | None, status: str, n: int) -> None:
    due = 1.0 if status in ("queued", "deferred") else None
    cur = conn.execute(
        "INSERT INTO messages (status, recipients, message_id, size, created_at, queued_at, next_attempt_at,"
        " updated_at, mailing, task) VALUES (?, ?, ?, 10, 1.0, 1.0, ?, 1.0, ?, ?)",
        (status, f'["c{n}@example.com"]', f"<{n}@test>", due, mailing, "" if status == "queued" else "T"),
    )
    conn.execute("INSERT INTO bodies (id, raw) VALUES (?, ?)", (cur.lastrowid, new_message(n).raw))


def test_end_of_a_mailing_is_handed_out_once_and_says_whether_it_was_cancelled(box: Outbox) -> None:
    a = box.enqueue([new_message(i) for i in range(3)], 1.0, mailing="A")
    box.enqueue([new_message(9)], 1.0, mailing="B")
    assert box.end_mailings(2.0) == [] and box.end_mailing(box.mailing("A").id, 2.0) is None  # still to send
    c = box.claim("T", 2.0)
    assert c is not None and c.message.id == a[0]
    assert box.cancel_mailing("A", 3.0) == 2  # a[0] is in flight: not cancelled, and not ended yet
    assert box.end_mailings(3.5) == []
    box.mark_sent(a[0], 4.0, "250 ok", {}, "acct", "T")
    ended = box.end_mailings(5.0)
    assert [(m.name, m.sent, m.cancelled, m.was_cancelled, m.ended_at) for m in ended] == [("A", 1, 2, True, 5.0)]
    assert ended[0].end_text() == "'A' cancelled: 1 sent, 0 failed, 2 cancelled"
    assert box.end_mailings(6.0) == [] and box.end_mailing(ended[0].id, 6.0) is None  # once
    # Cancelled before anything of it left: it ends at once, with nothing sent.
    assert box.cancel_mailing("b", 7.0) == 1
    (b,) = box.end_mailings(7.5)
    assert b.end_text() == "'B' cancelled: 0 sent, 0 failed, 1 cancelled"


def test_in_flight_message_of_a_cancelled_mailing_that_does_not_leave_is_cancelled(box: Outbox) -> None:
    ids = box.enqueue([new_message(i) for i in range(3)], 1.0, mailing="A")
    first, second, third = (box.claim("T", 2.0) for _ in range(3))
    assert first and second and third
    box.cancel_mailing("A", 3.0)  # all three in flight: nothing cancelled yet
    box.mark_deferred(ids[0], 4.0, 60.0, 451, "try later", "acct", "T")  # did not leave
    box.release(ids[1], 4.0)  # given back by a stopping task: did not leave
    box.mark_sent(ids[2], 4.0, "250 ok", {}, "acct", "T")
    assert [box.get(i).status for i in ids] == [MessageStatus.CANCELLED, MessageStatus.CANCELLED, MessageStatus.SENT]
    assert box.next_due() is None and box.claim("T", 100.0) is None
    (m,) = box.end_mailings(5.0)
    assert (m.sent, m.cancelled, m.was_cancelled) == (1, 2, True)


def test_retry_reopens_a_mailing_and_its_next_end_is_announced_again(box: Outbox) -> None:
    (msg,) = box.enqueue([new_message(1)], 1.0, mailing="A")
    assert box.claim("T", 2.0) is not None
    box.mark_failed(msg, 3.0, 550, "no such user", "acct", "T")
    (first,) = box.end_mailings(4.0)
    assert first.end_text() == "'A' finished: 0 sent, 1 failed"
    box.cancel_mailing("A", 5.0)  # nothing left to cancel: the end was said already
    assert box.end_mailings(5.5) == []
    assert box.retry_mailing("A", 6.0) == 1
    assert box.mailing("A").cancelled_at is None and box.end_mailings(6.5) == []
    assert box.claim("T", 7.0) is not None
    box.mark_sent(msg, 8.0, "250 ok", {}, "acct", "T")
    (again,) = box.end_mailings(9.0)
    assert again.end_text() == "'A' finished: 1 sent, 0 failed" and again.ended_at == 9.0


def test_schema_9_outbox_takes_its_ended_mailings_as_announced(tmp_path: Path) -> None:
    path = tmp_path / "v9.sqlite3"
    conn = old_outbox(path, 9)
    for mailing_id, name in ((1, "Done"), (2, "Running"), (3, "Empty")):
        conn.execute(
            "INSERT INTO mailings (id, name, key, created_at) VALUES (?, ?, ?, 1.0)", (mailing_id, name, name.lower())
        )
    for n, (mailing, status) in enumerate([(1, "sent"), (1, "cancelled"), (2, "sent"), (2, "queued")]):
        old_message(conn, mailing, status, n)
    conn.close()
    box = Outbox(path, "Old")
    assert box.mailing("Done").ended_at is not None and box.mailing("Running").ended_at is None
    assert box.end_mailings(5.0) == []  # the old end is not news; "Running" still sends, "Empty" has nothing
    c = box.claim("T", 6.0)
    assert c is not None and c.message.mailing_id == 2
    box.cancel_mailing("Running", 6.5)
    box.mark_deferred(c.message.id, 7.0, 70.0, 451, "later", "acct", "T")  # the v10 trigger cancels it
    (m,) = box.end_mailings(8.0)
    assert (m.name, m.sent, m.cancelled, m.was_cancelled) == ("Running", 1, 1, True)
