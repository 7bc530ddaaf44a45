"""The outbox's error boundary (issue 7, defect 8): a failed COMMIT rolls back; SQLite errors become OutboxError."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from automail.errors import OutboxError
from automail.models import MessageStatus
from automail.store.outbox import Outbox
from tests.helpers import new_message


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "firma.sqlite3", "Firma")


def _break_the_next_commit(conn: sqlite3.Connection) -> None:
    """Make COMMIT itself fail: a deferred foreign key left violated is only checked there."""
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    conn.execute("INSERT INTO child VALUES (42)")


def test_a_failed_commit_rolls_back_and_leaves_the_outbox_usable(box: Outbox, tmp_path: Path) -> None:
    box.enqueue([new_message(1)], now=0.0)
    with pytest.raises(OutboxError, match=r"was not saved.*FOREIGN KEY") as info, box.transaction() as conn:
        conn.execute("UPDATE messages SET subject='changed'")
        _break_the_next_commit(conn)
    assert "outbox" in str(info.value) and info.value.fix
    assert not box._conn().in_transaction  # before the fix: still inside, holding the write lock
    assert box.get(1).subject == "Invoice 1"  # rolled back
    # Another process can write at once (it waited out the 30 s busy timeout and failed before).
    other = sqlite3.connect(box.path, timeout=0.5, isolation_level=None)
    other.execute("UPDATE messages SET subject='other' WHERE id=1")
    other.close()
    box.enqueue([new_message(2)], now=1.0)  # and this connection too
    assert [m.id for m in box.list()] == [1, 2]


def test_sqlite_errors_leave_the_store_as_outbox_errors_with_context(box: Outbox) -> None:
    box.enqueue([new_message(1)], now=0.0)
    other = sqlite3.connect(box.path, isolation_level=None)
    other.execute("DROP TABLE bodies")  # e.g. a damaged or foreign file
    other.close()
    with pytest.raises(OutboxError, match=r"raw in the outbox of Firma .*firma\.sqlite3.*no such table") as info:
        box.raw(1)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(OutboxError, match="claim batch in the outbox of Firma"):
        box.claim("T", now=1.0)
    assert box.get(1).status is MessageStatus.QUEUED  # the failed claim was rolled back


def test_a_busy_outbox_says_so_and_how_to_fix_it(box: Outbox) -> None:
    holder = sqlite3.connect(box.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    box._conn().execute("PRAGMA busy_timeout=100")
    try:
        with pytest.raises(OutboxError, match="busy") as info:
            box.enqueue([new_message(1)], now=0.0)
        assert "another program holds the outbox" in (info.value.fix or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
