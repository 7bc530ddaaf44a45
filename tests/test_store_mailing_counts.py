"""A mailing's counts are kept by triggers (schema 11): after any sequence of what the engine, the user and
another program do to an outbox, they equal a fresh GROUP BY, and a claim never takes a paused mailing's message."""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automail.errors import InputError
from automail.models import MessageStatus, RecipientState, RecipientStatus
from automail.store.outbox import Outbox
from tests.helpers import new_message

MAILINGS = ("A", "B", "C")
TAGS = ("", "news")
OPS = (
    "enqueue",
    "claim",
    "claim_tag",
    "sent",
    "partly_sent",
    "deferred",
    "failed",
    "release",
    "recover",
    "pause",
    "resume",
    "cancel_mailing",
    "cancel_ids",
    "retry_mailing",
    "retry_ids",
    "retry_all",
    "delete",  # another program (or a future purge) deletes messages
    "end",
)
STEPS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1000)), max_size=40)


def true_counts(box: Outbox) -> dict[str, Counter[str]]:
    rows = box._conn().execute(
        "SELECT g.name, m.status, count(*) FROM messages m JOIN mailings g ON g.id = m.mailing"
        " GROUP BY g.name, m.status"
    )
    out: dict[str, Counter[str]] = {}
    for name, status, n in rows:
        out.setdefault(name, Counter())[status] = n
    return out


def kept_counts(box: Outbox) -> dict[str, Counter[str]]:
    """The counts as the Mailings window reads them; they must be the counter rows themselves."""
    table: dict[str, Counter[str]] = {}
    for name, status, n in box._conn().execute(
        "SELECT g.name, c.status, c.n FROM mailing_counts c JOIN mailings g ON g.id = c.mailing WHERE c.n <> 0"
    ):
        table.setdefault(name, Counter())[status] = n
    out: dict[str, Counter[str]] = {}
    for m in box.mailings():
        counts = Counter(
            {
                "queued": m.queued,
                "sending": m.sending,
                "sent": m.sent,
                "deferred": m.deferred,
                "failed": m.failed,
                "cancelled": m.cancelled,
            }
        )
        if +counts:
            out[m.name] = +counts
    assert out == table
    return out


class Model:
    """Drives an outbox with random operations and checks it after each."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        self.now = 1.0
        self.n = 0
        self.sending: list[int] = []

    def ids(self, status: str, pick: int, k: int = 2) -> list[int]:
        rows = self.box._conn().execute("SELECT id FROM messages WHERE status=? ORDER BY id", (status,)).fetchall()
        return [r[0] for r in rows[pick % max(len(rows), 1) :][:k]]

    def paused_ids(self) -> set[int]:
        return {r[0] for r in self.box._conn().execute("SELECT id FROM mailings WHERE paused")}

    def step(self, op: str, pick: int) -> None:
        box, self.now = self.box, self.now + 1.0
        name = MAILINGS[pick % len(MAILINGS)]
        if op == "enqueue":
            k = 1 + pick % 4
            batch = [new_message(self.n + i, tag=TAGS[pick % 2]) for i in range(k)]
            self.n += k
            known = {m.name for m in box.mailings()}
            box.enqueue(batch, self.now, mailing=None if name in known or pick % 5 == 0 else name)
        elif op in ("claim", "claim_tag"):
            paused = self.paused_ids()
            tags = ("news",) if op == "claim_tag" else ()
            for c in box.claim_batch("T", self.now + 10_000, tags, limit=1 + pick % 3):
                assert c.message.mailing_id not in paused, "claimed a message of a paused mailing"
                self.sending.append(c.message.id)
        elif op in ("sent", "partly_sent", "deferred", "failed") and self.sending:
            msg = self.sending.pop(pick % len(self.sending))
            if box.get(msg).status is not MessageStatus.SENDING:
                return
            if op == "sent":
                box.mark_sent(msg, self.now, "250 ok", {}, "acct", "T")
            elif op == "partly_sent":
                got = {"customer@example.com": RecipientState(RecipientStatus.SENT, "250 ok")}
                box.mark_failed(msg, self.now, 550, "no", "acct", "T", got)
            elif op == "deferred":
                box.mark_deferred(msg, self.now, self.now + pick % 3, 451, "later", "acct", "T")
            else:
                box.mark_failed(msg, self.now, 550, "no", "acct", "T")
        elif op == "release" and self.sending:
            box.release(self.sending.pop(pick % len(self.sending)), self.now)
        elif op == "recover":
            box.recover("T", self.now)
            self.sending.clear()
        elif op in ("pause", "resume", "cancel_mailing", "retry_mailing"):
            change = {
                "pause": box.pause_mailing,
                "resume": box.resume_mailing,
                "cancel_mailing": box.cancel_mailing,
                "retry_mailing": box.retry_mailing,
            }[op]
            if name in {m.name for m in box.mailings()}:
                change(name, self.now)
        elif op == "cancel_ids" and (ids := self.ids("queued", pick) + self.ids("deferred", pick, 1)):
            box.cancel(ids, self.now)
        elif op == "retry_ids" and (ids := self.ids("failed", pick)):
            box.retry(ids, self.now)
        elif op == "retry_all":
            box.retry(None, self.now)
        elif op == "delete" and (ids := self.ids(("sent", "cancelled", "failed", "queued")[pick % 4], pick)):
            with box.transaction() as conn:
                conn.executemany("DELETE FROM messages WHERE id=?", [(i,) for i in ids])
                conn.executemany("DELETE FROM bodies WHERE id=?", [(i,) for i in ids])
        elif op == "end":
            for m in box.end_mailings(self.now):
                assert m.pending == 0 and m.total > 0

    def check(self) -> None:
        box = self.box
        assert kept_counts(box) == true_counts(box)
        assert box.counts() == {s: box.count(s) for s in MessageStatus}
        waiting_paused = box._conn().execute(
            "SELECT count(*) FROM messages WHERE status IN ('queued', 'deferred') AND mailing IN"
            " (SELECT id FROM mailings WHERE paused)"
        )
        assert box.held_count() == waiting_paused.fetchone()[0]
        due = box.next_due()
        unpaused = box._conn().execute(
            "SELECT min(next_attempt_at) FROM messages WHERE next_attempt_at IS NOT NULL"
            " AND (mailing IS NULL OR mailing NOT IN (SELECT id FROM mailings WHERE paused))"
        )
        assert due == unpaused.fetchone()[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS)
def test_kept_mailing_counts_equal_a_fresh_group_by_after_any_sequence(steps: list[tuple[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        box = Outbox(Path(folder) / "firma.sqlite3", "Firma")
        model = Model(box)
        try:
            for op, pick in steps:
                try:
                    model.step(op, pick)
                except InputError:
                    pass  # e.g. cancelling a message another step already sent: refused, nothing changed
                model.check()
        finally:
            box.close()


@pytest.mark.parametrize("seed", range(30))
def test_kept_mailing_counts_after_long_random_runs(tmp_path: Path, seed: int) -> None:
    """The same, deterministic: 30 fixed runs of 120 operations each (every operation many times)."""
    rng = random.Random(seed)
    box = Outbox(tmp_path / "firma.sqlite3", "Firma")
    model = Model(box)
    try:
        for _ in range(120):
            try:
                model.step(rng.choice(OPS), rng.randrange(1000))
            except InputError:
                pass
            model.check()
    finally:
        box.close()


def test_schema_10_outbox_gets_its_counts_and_keeps_a_paused_mailing_paused(tmp_path: Path) -> None:
    path = tmp_path / "v10.sqlite3"
    from tests.test_store_mailings import old_message, old_outbox

    conn = old_outbox(path, 10)
    conn.execute("INSERT INTO mailings (id, name, key, created_at, paused) VALUES (1, 'Big', 'big', 1.0, 1)")
    conn.execute("INSERT INTO mailings (id, name, key, created_at) VALUES (2, 'Small', 'small', 1.0)")
    for n, (mailing, status) in enumerate([(1, "sent"), (1, "queued"), (1, "queued"), (2, "queued"), (None, "failed")]):
        old_message(conn, mailing, status, n)
    # What v10's pause did to each waiting message of the paused mailing:
    conn.execute(
        "UPDATE messages SET held_at=next_attempt_at, next_attempt_at=NULL WHERE mailing=1 AND status='queued'"
    )
    assert conn.execute("SELECT count(*) FROM messages WHERE held_at IS NOT NULL").fetchone()[0] == 2
    conn.close()
    box = Outbox(path, "Old")
    assert [(m.name, m.sent, m.queued, m.paused) for m in box.mailings()] == [
        ("Big", 1, 2, True),
        ("Small", 0, 1, False),
    ]
    assert kept_counts(box) == true_counts(box)
    assert box.held_count() == 2
    got = box.claim_batch("T", 100.0, limit=10)
    assert [c.message.mailing_id for c in got] == [2]  # the paused mailing's messages stay where they are
    box.resume_mailing("Big", 101.0)
    assert [c.message.mailing_id for c in box.claim_batch("T", 102.0, limit=10)] == [1, 1]
    box.close()
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"mailing_counts", "ix_due", "ix_due_tag", "ix_mailings_open"} <= names
    assert not names & {"tr_mailing_hold", "ix_ready", "ix_ready_tag"}


def test_pause_and_resume_change_one_row_whatever_the_mailing_size(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "firma.sqlite3", "Firma")
    box.enqueue([new_message(i) for i in range(500)], 1.0, mailing="Big")
    (other,) = box.enqueue([new_message(1000)], 2.0, mailing="Small")
    conn = box._conn()
    before = conn.total_changes
    assert box.pause_mailing("Big", 3.0) == 500
    assert conn.total_changes - before == 1  # the mailing's row: no message is rewritten
    assert [c.message.id for c in box.claim_batch("T", 4.0, limit=10)] == [other]
    before = conn.total_changes
    assert box.resume_mailing("Big", 5.0) == 500
    assert conn.total_changes - before == 1
    assert len(box.claim_batch("T", 6.0, limit=1000)) == 500
    box.close()
