"""A company's outbox: one SQLite file holding the message state machine.

queued → sending → sent | deferred | failed | cancelled.  A message is claimed
atomically (``BEGIN IMMEDIATE`` + ``UPDATE … RETURNING``), so two engines or two
tasks never send the same message; a message found in ``sending`` after a crash
goes back to the queue with its Message-ID unchanged.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import inspect
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from automail.errors import FaultKind, InputError, NotFoundError, OutboxError
from automail.models import Mailing, MessageStatus, RecipientState, RecipientStatus, StoredMessage, TaskState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 12
APPLICATION_ID = 0x41754D6C  # "AuMl" in PRAGMA application_id: marks a file as an AutoMail outbox

_SCHEMA_V1 = """
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    status          TEXT    NOT NULL,
    mail_from       TEXT    NOT NULL DEFAULT '',
    recipients      TEXT    NOT NULL,
    from_header     TEXT    NOT NULL DEFAULT '',
    subject         TEXT    NOT NULL DEFAULT '',
    tag             TEXT    NOT NULL DEFAULT '',
    message_id      TEXT    NOT NULL,
    size            INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error_code INTEGER,
    last_error      TEXT    NOT NULL DEFAULT '',
    refused         TEXT    NOT NULL DEFAULT '',
    server_reply    TEXT    NOT NULL DEFAULT '',
    task            TEXT    NOT NULL DEFAULT '',
    created_at      REAL    NOT NULL,
    queued_at       REAL    NOT NULL,
    next_attempt_at REAL,
    claimed_at      REAL,
    sent_at         REAL,
    updated_at      REAL    NOT NULL
);
CREATE TABLE bodies (
    id  INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);
-- next_attempt_at is set exactly while a message waits (queued or deferred), so this
-- partial index holds only the queue, however many sent messages pile up.
CREATE INDEX ix_ready   ON messages(next_attempt_at, id) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX ix_status  ON messages(status, id);
CREATE INDEX ix_sending ON messages(task) WHERE status = 'sending';
CREATE TABLE send_log (
    account TEXT NOT NULL,
    task    TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE INDEX ix_send_account ON send_log(account, at);
CREATE INDEX ix_send_task    ON send_log(task, at);
CREATE TABLE task_state (
    task        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    fault       TEXT NOT NULL DEFAULT '',
    code        INTEGER,
    fingerprint TEXT NOT NULL DEFAULT '',
    pid         INTEGER,
    updated_at  REAL NOT NULL
);
"""

# v2: status counts of a tagged task and "sent in the last hour" of a task without scanning the
# table (the main window refreshes these while a mailing runs; 130–180 ms at 100k messages before).
_SCHEMA_V2 = """
CREATE INDEX ix_tag_status ON messages(tag, status);
CREATE INDEX ix_task_sent  ON messages(task, sent_at) WHERE status = 'sent';
"""

# v3: sent messages and send attempts per task and UTC hour, kept by triggers as they are recorded,
# so the sending chart reads 24 rows per task however many messages the outbox holds. Each
# statement is one item (a trigger body holds semicolons); existing history is counted in once.
_SCHEMA_V3 = (
    """CREATE TABLE send_hourly (
        task     TEXT    NOT NULL,
        hour     INTEGER NOT NULL,  -- whole hours since the epoch (UTC)
        sent     INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,  -- sent, deferred or failed: every send-log entry
        PRIMARY KEY (task, hour)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER tr_hourly_attempt AFTER INSERT ON send_log BEGIN
        INSERT INTO send_hourly (task, hour, attempts) VALUES (new.task, CAST(new.at / 3600 AS INTEGER), 1)
        ON CONFLICT (task, hour) DO UPDATE SET attempts = attempts + 1;
    END""",
    """CREATE TRIGGER tr_hourly_sent AFTER UPDATE OF status ON messages
    WHEN new.status = 'sent' AND old.status <> 'sent' AND new.sent_at IS NOT NULL BEGIN
        INSERT INTO send_hourly (task, hour, sent) VALUES (new.task, CAST(new.sent_at / 3600 AS INTEGER), 1)
        ON CONFLICT (task, hour) DO UPDATE SET sent = sent + 1;
    END""",
    """INSERT INTO send_hourly (task, hour, attempts)
    SELECT task, CAST(at / 3600 AS INTEGER) AS h, count(*) FROM send_log GROUP BY task, h""",
    """INSERT INTO send_hourly (task, hour, sent)
    SELECT task, CAST(sent_at / 3600 AS INTEGER) AS h, count(*) FROM messages
    WHERE status = 'sent' AND sent_at IS NOT NULL GROUP BY task, h
    ON CONFLICT (task, hour) DO UPDATE SET sent = excluded.sent""",
)

# v4: per-recipient state, JSON {address: [status, reply]}; a recipient not in it is queued.
_SCHEMA_V4 = """
ALTER TABLE messages ADD COLUMN rcpt_state TEXT NOT NULL DEFAULT '';
"""

# v5 (issue 10, a year-old outbox: 1,000,000 messages, 90 % sent, tagged tasks):
# - ix_ready_tag serves claim and next_due of a tagged task (one index range per tag, in
#   due order); without it the planner walked every message of the tag (200–290 ms per claim);
# - message_counts keeps the messages per (tag, task, status), maintained by triggers in the
#   same transaction as every change, so status counts read a few rows instead of a million;
#   it replaces ix_tag_status, which only those counts used.
# Idempotent: a file whose version number was set back gets it again without harm.
_SCHEMA_V5 = """
DROP INDEX IF EXISTS ix_tag_status;
CREATE INDEX IF NOT EXISTS ix_ready_tag ON messages(tag, next_attempt_at, id) WHERE next_attempt_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS message_counts (
    tag    TEXT    NOT NULL,
    task   TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (tag, task, status)
) WITHOUT ROWID;
DELETE FROM message_counts;
INSERT INTO message_counts (tag, task, status, n)
    SELECT tag, task, status, count(*) FROM messages GROUP BY tag, task, status;
CREATE TRIGGER IF NOT EXISTS tr_counts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_counts (tag, task, status, n) VALUES (new.tag, new.task, new.status, 1)
        ON CONFLICT (tag, task, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tr_counts_update AFTER UPDATE OF status, tag, task ON messages
WHEN old.status IS NOT new.status OR old.tag IS NOT new.tag OR old.task IS NOT new.task BEGIN
    UPDATE message_counts SET n = n - 1 WHERE tag = old.tag AND task = old.task AND status = old.status;
    INSERT INTO message_counts (tag, task, status, n) VALUES (new.tag, new.task, new.status, 1)
        ON CONFLICT (tag, task, status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tr_counts_delete AFTER DELETE ON messages BEGIN
    UPDATE message_counts SET n = n - 1 WHERE tag = old.tag AND task = old.task AND status = old.status;
END;
"""

# v6 (issue 12): mailings. A message may belong to one mailing (messages.mailing = mailings.id).
# A paused mailing's waiting messages keep their due time in held_at with next_attempt_at NULL, so
# they drop out of ix_ready and the claim query stays as it is; tr_mailing_hold holds any message of
# a paused mailing that something else makes due (a deferral, a release, a retry). ``key`` is the
# case-folded name: names are unique per outbox whatever their case (also beyond ASCII, Ú = ú).
# Idempotent (a file whose version number was set back gets it again): _migrate skips a column
# that exists already.
_SCHEMA_V6 = (
    """CREATE TABLE IF NOT EXISTS mailings (
        id            INTEGER PRIMARY KEY,
        name          TEXT    NOT NULL,
        key           TEXT    NOT NULL UNIQUE,
        sources       TEXT    NOT NULL DEFAULT '[]',  -- JSON list of the files it was made from
        created_at    REAL    NOT NULL,
        not_before    REAL,
        paused        INTEGER NOT NULL DEFAULT 0,
        first_sent_at REAL,
        last_sent_at  REAL
    )""",
    "ALTER TABLE messages ADD COLUMN mailing INTEGER",
    "ALTER TABLE messages ADD COLUMN held_at REAL",
    "CREATE INDEX IF NOT EXISTS ix_mailing ON messages(mailing, status) WHERE mailing IS NOT NULL",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_hold AFTER UPDATE OF next_attempt_at ON messages
    WHEN new.next_attempt_at IS NOT NULL AND new.mailing IS NOT NULL
        AND (SELECT paused FROM mailings WHERE id = new.mailing) BEGIN
        UPDATE messages SET held_at = new.next_attempt_at, next_attempt_at = NULL WHERE id = new.id;
    END""",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_sent AFTER UPDATE OF status ON messages
    WHEN new.status = 'sent' AND old.status <> 'sent' AND new.mailing IS NOT NULL AND new.sent_at IS NOT NULL BEGIN
        UPDATE mailings SET first_sent_at = coalesce(first_sent_at, new.sent_at),
            last_sent_at = max(coalesce(last_sent_at, new.sent_at), new.sent_at) WHERE id = new.mailing;
    END""",
)

# v7 (issue 12): receipts of files taken from the pickup folder, written in the same transaction as
# their messages: after a crash between the commit and the file's removal, the file is recognised
# and removed instead of being queued a second time.
_SCHEMA_V7 = """
CREATE TABLE IF NOT EXISTS pickup_receipts (
    identity TEXT PRIMARY KEY,  -- file name, size, modification time and content hash
    at       REAL NOT NULL
) WITHOUT ROWID
"""

# v8 (issue 12): a part many messages carry (a mailing's common attachment, base64) is stored once.
# A body holds PART_MARK + its SHA-256 + NUL in its place; NUL never occurs in a queued message (the
# input gate refuses it), so the mark cannot be confused with message bytes.
# Also an index on message_id: enqueue refuses a Message-ID the outbox already holds (issue 8), which
# without it read every message of a year-old outbox on every enqueue.
_SCHEMA_V8 = """
CREATE TABLE IF NOT EXISTS parts (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_message_id ON messages(message_id);
"""

# v9 (issue 7, throughput): the send log is kept by a trigger from the message's own row, so recording
# an attempt (sent, deferred, failed) is ONE statement, committed on its own. The engine records in
# its I/O thread; each statement of a BEGIN … COMMIT hands the GIL back and waits to get it again
# from the sending thread (~0.4 ms per message measured), which put that wait between every two
# messages. ``send_account`` is the account of the last attempt ('' when nothing was sent: no entry).
_SCHEMA_V9 = (
    "ALTER TABLE messages ADD COLUMN send_account TEXT NOT NULL DEFAULT ''",
    """CREATE TRIGGER IF NOT EXISTS tr_send_log AFTER UPDATE OF attempts ON messages
    WHEN new.attempts > old.attempts AND new.send_account <> '' BEGIN
        INSERT INTO send_log (account, task, at) VALUES (new.send_account, new.task, new.updated_at);
    END""",
)

# v10 (issue 12, a mailing's end said once): ``cancelled_at`` records that the user cancelled a mailing,
# so its end reads "cancelled" whatever the order of events (a message in flight may finish after the
# cancel); ``ended_at`` is set by whoever announces the end (a worker or the engine's outbox watcher,
# in any process) in the same transaction that checks nothing is left: one notice per end. A retry
# clears both: the mailing runs again and its next end is announced again. tr_mailing_cancelled
# cancels a message of a cancelled mailing that comes back from ``sending`` to wait (a deferral, a
# release, a crash recovery): it never left, and cancel cancels what has not left. Mailings that had
# ended before the upgrade count as announced (no burst of old notices).
_SCHEMA_V10 = (
    "ALTER TABLE mailings ADD COLUMN cancelled_at REAL",
    "ALTER TABLE mailings ADD COLUMN ended_at REAL",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_cancelled AFTER UPDATE OF status ON messages
    WHEN old.status = 'sending' AND new.status IN ('queued', 'deferred') AND new.mailing IS NOT NULL
        AND (SELECT cancelled_at FROM mailings WHERE id = new.mailing) IS NOT NULL BEGIN
        UPDATE messages SET status = 'cancelled', next_attempt_at = NULL, held_at = NULL WHERE id = new.id;
    END""",
    """UPDATE mailings SET ended_at = coalesce(last_sent_at, created_at) WHERE ended_at IS NULL
    AND EXISTS (SELECT 1 FROM messages WHERE mailing = mailings.id)
    AND NOT EXISTS (SELECT 1 FROM messages WHERE mailing = mailings.id
        AND status IN ('queued', 'sending', 'deferred'))""",
)

# v11 (issue 12, mailings at scale: 200,000 messages in mailings):
# - mailing_counts keeps the messages per (mailing, status), maintained by triggers in the same
#   transaction as every change (like message_counts): the Mailings window and `mailing list` read a
#   few rows per mailing instead of a GROUP BY over its messages (~190 ms at 200,000 before);
# - pause and resume change the mailing's row only (they rewrote every waiting message, holding the
#   write lock 5–7 s for 200,000): the claim honours ``mailings.paused`` itself. The due indexes lead
#   with the mailing, so a claim reads one due-ordered range per running mailing (and one for the
#   messages in none) and a paused mailing's due messages are never even read; ix_mailings_open
#   lists the running mailings (ended_at is set once a mailing has nothing left, and cleared by a retry).
#   Held messages of v6–v10 get their due time back; tr_mailing_hold goes.
_SCHEMA_V11 = (
    """CREATE TABLE IF NOT EXISTS mailing_counts (
        mailing INTEGER NOT NULL,
        status  TEXT    NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (mailing, status)
    ) WITHOUT ROWID""",
    "DELETE FROM mailing_counts",
    """INSERT INTO mailing_counts (mailing, status, n)
    SELECT mailing, status, count(*) FROM messages WHERE mailing IS NOT NULL GROUP BY mailing, status""",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_counts_insert AFTER INSERT ON messages
    WHEN new.mailing IS NOT NULL BEGIN
        INSERT INTO mailing_counts (mailing, status, n) VALUES (new.mailing, new.status, 1)
            ON CONFLICT (mailing, status) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_counts_update AFTER UPDATE OF status, mailing ON messages
    WHEN (old.status IS NOT new.status OR old.mailing IS NOT new.mailing)
        AND (old.mailing IS NOT NULL OR new.mailing IS NOT NULL) BEGIN
        UPDATE mailing_counts SET n = n - 1 WHERE mailing = old.mailing AND status = old.status;
        INSERT INTO mailing_counts (mailing, status, n) SELECT new.mailing, new.status, 1 WHERE new.mailing IS NOT NULL
            ON CONFLICT (mailing, status) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS tr_mailing_counts_delete AFTER DELETE ON messages
    WHEN old.mailing IS NOT NULL BEGIN
        UPDATE mailing_counts SET n = n - 1 WHERE mailing = old.mailing AND status = old.status;
    END""",
    "DROP TRIGGER IF EXISTS tr_mailing_hold",
    "UPDATE messages SET next_attempt_at = held_at, held_at = NULL WHERE held_at IS NOT NULL",
    "DROP INDEX IF EXISTS ix_ready",
    "DROP INDEX IF EXISTS ix_ready_tag",
    "CREATE INDEX IF NOT EXISTS ix_due ON messages(mailing, next_attempt_at, id) WHERE next_attempt_at IS NOT NULL",
    """CREATE INDEX IF NOT EXISTS ix_due_tag ON messages(tag, mailing, next_attempt_at, id)
    WHERE next_attempt_at IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS ix_mailings_open ON mailings(paused, id) WHERE ended_at IS NULL",
)

# v12: the results journal.  An unlimited task's result used to be one UPDATE of the message in its
# own durable commit: ~15 pages (the row, six indexes, the send log and its two indexes, four counter
# rows), ~0.65 ms here, which must end before the next message's final dot.  While the worker holds
# the rest of a claimed batch it appends the result here instead (one row, 1–2 pages, ~0.3 ms: just
# as durable), and folds the batch's results into their messages in one transaction when the batch
# ends (``apply_results``: the same UPDATE, so every trigger fires as before).  A crash leaves the
# rows here; the next ``recover`` folds them in before it puts anything back in the queue, so a
# delivered message is never sent again for want of its result.
_SCHEMA_V12 = """
CREATE TABLE IF NOT EXISTS results (
    message    INTEGER PRIMARY KEY,   -- the message (claimed, so in 'sending'); one result per claim
    status     TEXT    NOT NULL,      -- sent | deferred | failed
    at         REAL    NOT NULL,
    next_at    REAL,
    code       INTEGER,
    error      TEXT    NOT NULL,
    reply      TEXT    NOT NULL,
    refused    TEXT    NOT NULL,
    rcpt_state TEXT    NOT NULL,
    task       TEXT    NOT NULL,
    account    TEXT    NOT NULL
);
"""

_MIGRATIONS: tuple[tuple[int, str | tuple[str, ...]], ...] = (
    (1, _SCHEMA_V1),
    (2, _SCHEMA_V2),
    (3, _SCHEMA_V3),
    (4, _SCHEMA_V4),
    (5, _SCHEMA_V5),
    (6, _SCHEMA_V6),
    (7, _SCHEMA_V7),
    (8, _SCHEMA_V8),
    (9, _SCHEMA_V9),
    (10, _SCHEMA_V10),
    (11, _SCHEMA_V11),
    (12, _SCHEMA_V12),
)

# Full-text search over the columns the Outbox window searches, where this SQLite has FTS5
# (checked at run time: _has_fts5).  Not a numbered migration: a file made where FTS5 was missing
# gets it later, when opened where FTS5 exists.  enqueue() indexes a batch itself, in one statement
# after its rows: every statement with a savepoint (a trigger's, or an INSERT into a table with
# triggers) makes FTS5 flush its pending terms, so indexing row by row made enqueue 10–50× slower
# (50,000 messages: 35 s instead of 3 s).  The rare updates and deletes go through triggers.
_SEARCH_INDEX = """
CREATE VIRTUAL TABLE messages_fts USING fts5(
    subject, recipients, from_header, message_id,
    content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER tr_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, recipients, from_header, message_id)
        VALUES ('delete', old.id, old.subject, old.recipients, old.from_header, old.message_id);
END;
CREATE TRIGGER tr_fts_update AFTER UPDATE OF subject, recipients, from_header, message_id ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, recipients, from_header, message_id)
        VALUES ('delete', old.id, old.subject, old.recipients, old.from_header, old.message_id);
    INSERT INTO messages_fts (rowid, subject, recipients, from_header, message_id)
        VALUES (new.id, new.subject, new.recipients, new.from_header, new.message_id);
END;
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
"""

_COLUMNS = (
    "id, status, mail_from, recipients, from_header, subject, tag, message_id, attempts, "
    "last_error_code, last_error, refused, server_reply, task, created_at, next_attempt_at, sent_at, rcpt_state, "
    "mailing"
)
_MAILING_COLUMNS = (
    "id, name, sources, created_at, not_before, paused, first_sent_at, last_sent_at, cancelled_at, ended_at"
)
MAILING_NAME_MAX = 200

_M_COLUMNS = ", ".join(f"m.{c.strip()}" for c in _COLUMNS.split(","))  # the same, of ``messages m``

_READY = "next_attempt_at IS NOT NULL"
SEND_LOG_KEEP_S = 2 * 24 * 3600
SEARCH_SCAN_ROWS = 50_000  # without FTS5, a search reads only the newest this many messages
COUNT_CAP = 1_000  # a search counts its matches up to this many (the window says "1,000+"): ~10 ms at 1,000,000
OPTIMIZE_EVERY_S = 3600.0  # PRAGMA optimize this often on a long-lived connection (SQLite's advice)
ANALYSIS_LIMIT = 1000  # rows ANALYZE samples per index: a 1,000,000-row file is analysed in milliseconds

QueryObserver = Callable[[str, float, float], None]  # (sql, wall seconds, CPU seconds of the thread)


def set_aside(path: Path, day: str) -> Path | None:
    """Rename a closed outbox file (and its WAL files) to NAME.removed-DAY.sqlite3; None if it did not exist.

    A removed company's messages stay readable there, and a new company of the same name starts empty.
    """
    if not path.exists():
        return None
    for n in range(1, 1000):
        suffix = f".removed-{day}" + (f"-{n}" if n > 1 else "")
        target = path.with_name(path.stem + suffix + path.suffix)
        if not target.exists():
            break
    for extra in ("-wal", "-shm"):
        side = Path(str(path) + extra)
        if side.exists():
            side.replace(Path(str(target) + extra))
    path.replace(target)
    return target


@dataclass(frozen=True)
class NewMessage:
    """A validated message ready to be queued."""

    raw: bytes
    recipients: tuple[str, ...]
    from_header: str
    subject: str
    message_id: str
    tag: str = ""
    # Byte runs of ``raw`` that other messages of the batch carry too (e.g. a base64 attachment):
    # stored once in the outbox, however many messages hold them.
    shared: tuple[bytes, ...] = ()


PART_MARK = b"\x00AutoMail-part:"
SHARED_MIN_BYTES = 2048  # smaller runs cost more as a reference than they save


@dataclass(frozen=True)
class ClaimedMessage:
    """A message this task now owns (status ``sending``), with its MIME bytes."""

    message: StoredMessage
    raw: bytes
    queued_at: float


@dataclass(frozen=True)
class TaskStateRecord:
    """The persisted state of one task."""

    task: str
    state: TaskState
    reason: str
    fault: FaultKind | None
    code: int | None
    fingerprint: str
    pid: int | None
    updated_at: float


def _row_to_message(row: Sequence[Any], where: Path | str = "the outbox") -> StoredMessage:
    field = "status"
    try:
        status = MessageStatus(row[1])
        field = "recipients"
        recipients = json.loads(row[3])
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ValueError("not a list of addresses")
        field = "refused recipients"
        refused = json.loads(row[11]) if row[11] else {}
        field = "recipient states"
        states = _decode_states(row[17])
    except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise OutboxError(
            f"message {row[0]} in {where} is damaged: its {field} cannot be read ({exc})",
            fix="the file was changed by another program: cancel or correct that message, or restore a backup",
        ) from exc
    return StoredMessage(
        id=row[0],
        status=status,
        mail_from=row[2],
        recipients=tuple(recipients),
        from_header=row[4],
        subject=row[5],
        tag=row[6],
        message_id=row[7],
        attempts=row[8],
        last_error_code=row[9],
        last_error=row[10],
        refused=refused,
        server_reply=row[12],
        task=row[13],
        created_at=row[14],
        next_attempt_at=row[15],
        sent_at=row[16],
        recipient_states=states,
        mailing_id=row[18],
    )


def _decode_states(text: str) -> dict[str, RecipientState]:
    if not text:
        return {}
    return {addr: RecipientState(RecipientStatus(st), reply) for addr, (st, reply) in json.loads(text).items()}


def _encode_states(states: Mapping[str, RecipientState]) -> str:
    return json.dumps({addr: [str(st.status), st.reply] for addr, st in states.items()}) if states else ""


def _refusals(states: Mapping[str, RecipientState]) -> str:
    refused = {a: st.reply for a, st in states.items() if st.status is not RecipientStatus.SENT and st.reply}
    return json.dumps(refused) if refused else ""


# A journal row's columns, in the order of ``_Result.params``.
_RESULT_FIELDS = (
    "message", "status", "at", "next_at", "code", "error", "reply", "refused", "rcpt_state", "task", "account",
)  # fmt: skip


@dataclass(frozen=True)
class _Result:
    """One attempt's outcome as ``_record_attempt`` stores it (a row of the results journal)."""

    message: int
    status: MessageStatus
    at: float
    next_at: float | None = None
    code: int | None = None
    error: str = ""
    reply: str = ""
    recipients: Mapping[str, RecipientState] = field(default_factory=dict)
    task: str = ""
    account: str = ""

    def params(self) -> dict[str, object]:
        """The named parameters of ``_RECORD_RESULT`` and ``_JOURNAL_RESULT`` (a journal row's columns)."""
        values = (
            self.message, self.status.value, self.at, self.next_at, self.code, self.error, self.reply,
            _refusals(self.recipients), _encode_states(self.recipients), self.task, self.account,
        )  # fmt: skip
        return dict(zip(_RESULT_FIELDS, values, strict=True))


# What each outcome changes in its message, with the named parameters of ``_Result.params`` (a journal
# row has the same names, so folding it in is this same statement).
_RESULT_CHANGES = {
    MessageStatus.SENT: "status='sent', sent_at=:at, next_attempt_at=NULL, last_error_code=NULL, last_error='',"
    " server_reply=:reply",
    MessageStatus.DEFERRED: "status='deferred', next_attempt_at=:next_at, last_error_code=:code, last_error=:error",
    MessageStatus.FAILED: "status='failed', next_attempt_at=NULL, last_error_code=:code, last_error=:error",
}
_RECORD_RESULT = {
    status: f"UPDATE messages SET {changes}, updated_at=:at, attempts=attempts+1, refused=:refused,"
    " rcpt_state=:rcpt_state, task=:task, send_account=:account WHERE id=:message"
    for status, changes in _RESULT_CHANGES.items()
}
_JOURNAL_RESULT = (
    # OR REPLACE: a commit tried again after an error that hid its success writes the same result again.
    f"INSERT OR REPLACE INTO results ({', '.join(_RESULT_FIELDS)})"
    f" VALUES ({', '.join(':' + f for f in _RESULT_FIELDS)})"
)


def _apply_results(conn: sqlite3.Connection) -> int:
    """(In a write transaction) Fold every journaled result into its message, in the order they happened."""
    rows = conn.execute(f"SELECT {', '.join(_RESULT_FIELDS)} FROM results ORDER BY at, message").fetchall()
    for row in rows:
        params = dict(zip(_RESULT_FIELDS, row, strict=True))
        conn.execute(_RECORD_RESULT[MessageStatus(params["status"])], params)
    if rows:
        conn.execute("DELETE FROM results")
    return len(rows)


def _tag_clause(tags: Sequence[str]) -> tuple[str, list[Any]]:
    if not tags:
        return "", []
    return f" AND tag IN ({','.join('?' * len(tags))})", list(tags)


_COMPOUND_ARMS = 400  # SQLite allows 500 terms in one compound SELECT (SQLITE_MAX_COMPOUND_SELECT)


def _arms(tags: Sequence[str], groups: Sequence[int | None]) -> list[tuple[str, list[Any]]]:
    """WHERE clauses (and their arguments) of the due-index ranges a scope reads: one per tag (or
    none) and per group, a group being a running mailing or None (the messages in no mailing)."""
    out = []
    scopes: list[str | None] = [*sorted(set(tags))] or [None]
    for tag in scopes:
        for group in groups:
            where: list[str] = []
            args: list[Any] = []
            if tag is not None:
                where.append("tag = ?")
                args.append(tag)
            if group is None:
                where.append("mailing IS NULL")
            else:
                where.append("mailing = ?")
                args.append(group)
            out.append((" AND ".join(where), args))
    return out


def _union(selects: list[str]) -> str:
    """UNION ALL of any number of SELECTs, nested so no compound exceeds SQLite's limit of terms."""
    while len(selects) > _COMPOUND_ARMS:
        selects = [
            "SELECT * FROM (" + " UNION ALL ".join(selects[i : i + _COMPOUND_ARMS]) + ")"
            for i in range(0, len(selects), _COMPOUND_ARMS)
        ]
    return " UNION ALL ".join(selects)


def _due_ids(tags: Sequence[str], groups: Sequence[int | None], now: float, limit: int) -> tuple[str, list[Any]]:
    """SELECT of the due message ids, oldest due first.

    It reads one range of ix_due (ix_due_tag for a tagged scope) per tag and running mailing (see
    ``_arms``), each in due order and stopping at ``limit``, and merges them: a paused mailing's
    messages are never read, however many are due, and ``tag IN (…) ORDER BY next_attempt_at``
    could not use the index order anyway.
    """
    selects, args = [], []
    for where, arm_args in _arms(tags, groups):
        selects.append(
            "SELECT * FROM (SELECT id, next_attempt_at FROM messages"
            f" WHERE {where} AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?)"
        )
        args += [*arm_args, now, limit]
    return f"SELECT id FROM ({_union(selects)}) ORDER BY next_attempt_at, id LIMIT ?", [*args, limit]


def _statements(script: str) -> Iterator[str]:
    """The statements of a schema script (a trigger body holds ``;`` of its own)."""
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf
            buf = ""


def _has_fts5() -> bool:
    """Whether this Python's SQLite was built with FTS5 (most are; checked at run time)."""
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
    except sqlite3.Error:
        return False
    return True


def _match_query(text: str) -> str:
    """An FTS5 query from what the user typed: every word as a quoted prefix, all required."""
    words = "".join(ch if ch.isalnum() else " " for ch in text).split()
    return " ".join(f'"{w}"*' for w in words)


class _Rows:
    """The fetched rows of an observed statement, with the cursor's reading interface."""

    def __init__(self, cursor: sqlite3.Cursor, rows: list[Any]) -> None:
        self._rows = rows
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Connection(sqlite3.Connection):
    """A connection that can report how long each statement took (see Outbox.watch)."""

    owner = 0  # the thread that uses it
    observer: QueryObserver | None = None
    optimized_at = 0.0

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        observer = self.observer
        if observer is None:
            return super().execute(sql, parameters)
        started, cpu = time.perf_counter(), time.thread_time()
        cursor = super().execute(sql, parameters)
        rows = _Rows(cursor, cursor.fetchall())
        observer(sql, time.perf_counter() - started, time.thread_time() - cpu)
        return rows


_T = TypeVar("_T")


def _fix_for(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "another program holds the outbox file; try again, or close the program that keeps it busy"
    if "no such" in text or "malformed" in text or "not a database" in text:
        return "the file is damaged or not an AutoMail outbox: restore it from a backup"
    return "check that the outbox's folder is writable and the disk has free space"


def _store_errors(cls: type[_T]) -> type[_T]:
    """Every public method of ``cls`` raises OutboxError, never a bare sqlite3.Error (the store's boundary)."""

    def guard(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def guarded(self: Outbox, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"{name.replace('_', ' ')} in the outbox of {self.company or self.path.stem} ({self.path}) "
                    f"failed: {exc}",
                    fix=_fix_for(exc),
                ) from exc

        return guarded

    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(fn) and name not in ("transaction", "close"):
            setattr(cls, name, guard(name, fn))
    return cls


def check_ours(path: Path) -> None:
    """Refuse a file another program made before anything writes to it (even switching it to WAL).

    Ours: empty or missing (new), marked with APPLICATION_ID, or an unmarked outbox of an
    earlier AutoMail (its tables and a schema version).  The file is read through a read-only
    SQLite connection only: closing a plain file handle on it would drop the POSIX locks this
    process's other connections hold (SQLite's documented pitfall, "How To Corrupt" 2.2).
    """
    if not path.exists():
        return
    foreign = OutboxError(
        f"{path} is not an AutoMail outbox (another program's file, or damaged)",
        fix="choose another outbox path; AutoMail never writes to a file it did not create",
    )
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) == sqlite3.SQLITE_NOTADB:
            raise foreign from exc
        raise OutboxError(
            f"{path} cannot be read as an AutoMail outbox ({exc})",
            fix="check the file's permissions; restore it from a backup if it is damaged",
        ) from exc
    if app_id == APPLICATION_ID or (app_id == 0 and not tables):
        return
    if app_id == 0 and version >= 1 and tables >= {"messages", "bodies", "send_log", "task_state"}:
        return
    raise foreign


# A mailing that has messages, none left to send, and whose end nobody has announced (``end_mailing``).
_ENDED_UNANNOUNCED = (
    "ended_at IS NULL AND EXISTS (SELECT 1 FROM mailing_counts WHERE mailing=mailings.id AND n > 0)"
    " AND NOT EXISTS (SELECT 1 FROM mailing_counts WHERE mailing=mailings.id"
    " AND status IN ('queued', 'sending', 'deferred') AND n > 0)"
)


@_store_errors
class Outbox:
    """The outbox database of one company.  Safe to share between threads:
    each thread gets its own SQLite connection."""

    def __init__(self, path: str | Path, company: str = "", read_only: bool = False) -> None:
        """``read_only``: a reader (``automail status``, listings) that never takes the write lock
        once the file's schema is current."""
        self.path = Path(path)
        self.company = company
        self.read_only = read_only
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._conn_lock = threading.Lock()
        self._parts: dict[str, bytes] = {}  # shared parts recently read (see _expand)
        self._watch: tuple[int, QueryObserver] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"cannot create the folder of the outbox {self.path}: {exc.strerror}",
                fix="check the path and that its folder is writable",
            ) from exc
        check_ours(self.path)  # before anything opens it for writing (even the switch to WAL)
        self._migrate()
        self.search_indexed = self._table_exists(self._conn(), "messages_fts")

    # ---- connection and transactions ----------------------------------------
    def _connect(self, read_only: bool) -> _Connection:
        try:
            if read_only:
                conn = sqlite3.connect(
                    self.path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    isolation_level=None,
                    timeout=30,
                    check_same_thread=False,
                    factory=_Connection,
                )
            else:
                conn = sqlite3.connect(
                    self.path, isolation_level=None, timeout=30, check_same_thread=False, factory=_Connection
                )
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: every committed status change survives power loss, not only a crash.
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise OutboxError(
                f"cannot open the outbox of {self.company or self.path.stem} at {self.path}: {exc}",
                fix="check that the folder exists and is writable" if not read_only else "check that the file exists",
            ) from exc
        assert isinstance(conn, _Connection)
        conn.owner = threading.get_ident()
        conn.optimized_at = time.monotonic()
        return conn

    def _conn(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self.read_only)
            if self._watch is not None and self._watch[0] == conn.owner:
                conn.observer = self._watch[1]
            self._local.conn = conn
            alive = {t.ident for t in threading.enumerate()}
            with self._conn_lock:
                # Connections of finished threads (the UI's background jobs) are closed here.
                for old in [c for c in self._connections if c.owner not in alive]:
                    self._connections.remove(old)
                    old.close()
                self._connections.append(conn)
        return conn

    def watch(self, callback: QueryObserver | None, thread: threading.Thread | None = None) -> None:
        """Report (sql, wall s, CPU s) of every statement run on ``thread`` (default: this one); None stops.

        The UI watches its Tk thread: a query there freezes the window for its whole duration.
        """
        ident = (thread or threading.current_thread()).ident or 0
        self._watch = (ident, callback) if callback is not None else None
        with self._conn_lock:
            for conn in self._connections:
                conn.observer = callback if conn.owner == ident else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error, the COMMIT's own included.

        A connection is never left inside a transaction: it would hold the write lock, and every
        later write of every process would wait out the busy timeout and fail.  A failed COMMIT
        raises OutboxError; the body's own sqlite3 errors pass through unchanged for the public
        method around it to name (the connection it yields is inside the store's boundary).
        """
        conn = self._writable_conn()
        with self._transaction(conn):
            yield conn

    def _writable_conn(self) -> _Connection:
        if self.read_only:
            raise OutboxError(
                f"the outbox {self.path} was opened for reading only", fix="open it without read_only to change it"
            )
        return self._conn()

    def _not_saved(self, exc: sqlite3.Error) -> OutboxError:
        return OutboxError(
            f"a change to the outbox of {self.company or self.path.stem} ({self.path}) was not saved: {exc}",
            fix=_fix_for(exc),
        )

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path} is busy or unusable: {exc}", fix=_fix_for(exc)) from exc
        try:
            yield
        except BaseException:
            self._rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._not_saved(exc) from exc

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # Cannot roll back: drop the connection, which releases the lock; the next call opens another.
            conn.close()
            self._local.conn = None

    @staticmethod
    def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (name,)).fetchone() is not None

    def _needs_migration(self, conn: sqlite3.Connection) -> bool:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"outbox {self.path} was written by a newer AutoMail (schema {version})",
                fix="upgrade AutoMail",
            )
        if version < SCHEMA_VERSION:
            return True
        return not self.read_only and _has_fts5() and not self._table_exists(conn, "messages_fts")

    def _migrate(self) -> None:
        """Check the schema without any lock; take the write lock only when something must change."""
        if self.path.exists() and not self._needs_migration(self._conn()):
            return
        # A reader migrates through a short-lived writable connection, then reads as before.
        conn = self._connect(read_only=False) if self.read_only else self._conn()
        try:
            with self._transaction(conn):
                if not self._needs_migration(conn):
                    return  # another process migrated meanwhile
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for target, script in _MIGRATIONS:
                    if version < target:
                        for stmt in script if isinstance(script, tuple) else _statements(script):
                            try:
                                conn.execute(stmt)
                            except sqlite3.OperationalError as exc:
                                # ALTER TABLE … ADD COLUMN has no IF NOT EXISTS; SQLite says it only in the text.
                                if "duplicate column name" not in str(exc):
                                    raise
                if version < SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                if conn.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                if _has_fts5() and not self._table_exists(conn, "messages_fts"):
                    started = time.perf_counter()
                    for stmt in _statements(_SEARCH_INDEX):
                        conn.execute(stmt)
                    log.info("outbox %s: search index built in %.1f s", self.path, time.perf_counter() - started)
            # New indexes need statistics before the planner can weigh them (SQLite's advice:
            # run PRAGMA optimize after a schema change; analysis_limit keeps it quick on big files).
            self._optimize(conn, analyze=True)
        finally:
            if conn is not getattr(self._local, "conn", None):
                conn.close()

    def _optimize(self, conn: _Connection, analyze: bool = False) -> None:
        """PRAGMA optimize (best effort: it never waits long for the write lock)."""
        try:
            conn.execute("PRAGMA busy_timeout=200")
            conn.execute(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
            conn.execute("ANALYZE" if analyze else "PRAGMA optimize")
        except sqlite3.Error as exc:
            log.debug("outbox %s: optimize skipped: %s", self.path, exc)
        finally:
            conn.optimized_at = time.monotonic()
            try:
                conn.execute("PRAGMA busy_timeout=30000")
            except sqlite3.Error:
                pass

    def optimize_if_due(self) -> None:
        """Run PRAGMA optimize on this thread's connection every OPTIMIZE_EVERY_S (long-lived engines)."""
        conn = self._conn()
        if not self.read_only and time.monotonic() - conn.optimized_at >= OPTIMIZE_EVERY_S:
            self._optimize(conn)

    def close(self) -> None:
        """Close every connection this object opened (all threads), optimizing as SQLite advises."""
        with self._conn_lock:
            for conn in self._connections:
                if not self.read_only:
                    self._optimize(conn)
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    def close_thread_connection(self) -> None:
        """Close the calling thread's connection (a thread that is about to end)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._conn_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def data_version(self) -> int:
        """Changes when another connection commits: cheap detection of outside enqueues."""
        return int(self._conn().execute("PRAGMA data_version").fetchone()[0])

    # ---- producing -----------------------------------------------------------
    def enqueue(
        self,
        messages: Iterable[NewMessage],
        now: float,
        *,
        mailing: str | None = None,
        sources: Sequence[str] = (),
        not_before: float | None = None,
        receipts: Sequence[str] = (),
    ) -> list[int]:
        """Queue a batch in one transaction: all of it or nothing.

        ``receipts``: identities of the pickup files the batch came from, recorded in the same
        transaction (see ``known_receipts``); one recorded already fails the whole batch.

        ``mailing``: create a mailing of that name (with its ``sources``) in the same transaction and
        put the batch in it; InputError, and nothing queued, if the outbox has one of that name.
        ``not_before``: the messages wait until then (and the mailing records it).
        ``messages`` may be a generator: a caller can show progress while it is consumed.
        """
        ids: list[int] = []
        due = now if not_before is None else max(now, not_before)
        with self.transaction() as conn:
            conn.executemany("INSERT INTO pickup_receipts (identity, at) VALUES (?, ?)", [(r, now) for r in receipts])
            mailing_id = None
            if mailing is not None:
                mailing_id = self._insert_mailing(conn, mailing, sources, now, not_before)
            stored_parts: dict[int, tuple[bytes, bytes]] = {}  # id(run) -> (run, mark): each run hashed once
            for m in messages:
                cur = conn.execute(
                    "INSERT INTO messages (status, recipients, from_header, subject, tag, message_id, size,"
                    " created_at, queued_at, next_attempt_at, updated_at, mailing) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        MessageStatus.QUEUED,
                        json.dumps(list(m.recipients)),
                        m.from_header,
                        m.subject,
                        m.tag,
                        m.message_id,
                        len(m.raw),
                        now,
                        now,
                        due,
                        now,
                        mailing_id,
                    ),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
                raw = self._store_shared(conn, m, stored_parts) if m.shared else m.raw
                conn.execute("INSERT INTO bodies (id, raw) VALUES (?, ?)", (cur.lastrowid, raw))
            if self.search_indexed and ids:
                # One statement at the end: see _SEARCH_INDEX for why not per row.
                conn.execute(
                    "INSERT INTO messages_fts (rowid, subject, recipients, from_header, message_id)"
                    " SELECT id, subject, recipients, from_header, message_id FROM messages WHERE id >= ?",
                    (ids[0],),
                )
        return ids

    def known_receipts(self, identities: Sequence[str]) -> set[str]:
        """Which of these pickup-file identities were queued already."""
        conn, known = self._conn(), set[str]()
        for i in range(0, len(identities), 500):
            chunk = list(identities[i : i + 500])
            rows = conn.execute(
                f"SELECT identity FROM pickup_receipts WHERE identity IN ({','.join('?' * len(chunk))})", chunk
            )
            known.update(r[0] for r in rows)
        return known

    def prune_receipts(self, before: float) -> None:
        """Forget pickup receipts older than ``before`` (their files are long gone)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM pickup_receipts WHERE at < ?", (before,))

    @staticmethod
    def _store_shared(conn: sqlite3.Connection, m: NewMessage, stored: dict[int, tuple[bytes, bytes]]) -> bytes:
        """``m.raw`` with each shared run replaced by its mark; the run stored once in ``parts``."""
        raw = m.raw
        for run in m.shared:
            if len(run) < SHARED_MIN_BYTES or run not in raw:
                continue
            known = stored.get(id(run))
            if known is None or known[0] is not run:
                digest = hashlib.sha256(run).hexdigest()
                conn.execute("INSERT OR IGNORE INTO parts (hash, data) VALUES (?, ?)", (digest, run))
                known = (run, PART_MARK + digest.encode("ascii") + b"\x00")
                stored[id(run)] = known
            raw = raw.replace(run, known[1])
        return raw

    def _expand(self, conn: sqlite3.Connection, raw: bytes) -> bytes:
        """A stored body with its shared parts put back: the bytes that were queued."""
        if PART_MARK not in raw:
            return raw
        out: list[bytes] = []
        pos = 0
        while (start := raw.find(PART_MARK, pos)) >= 0:
            end = raw.find(b"\x00", start + len(PART_MARK))
            digest = raw[start + len(PART_MARK) : end].decode("ascii")
            data = self._parts.get(digest)
            if data is None:
                row = conn.execute("SELECT data FROM parts WHERE hash=?", (digest,)).fetchone()
                if row is None:
                    raise OutboxError(f"a stored attachment ({digest[:12]}…) is missing from {self.path}")
                data = bytes(row[0])
                if len(self._parts) > 64:
                    self._parts.clear()
                self._parts[digest] = data
            out += [raw[pos:start], data]
            pos = end + 1
        out.append(raw[pos:])
        return b"".join(out)

    # ---- mailings --------------------------------------------------------------
    def create_mailing(self, name: str, sources: Sequence[str], now: float, not_before: float | None = None) -> int:
        """Record an empty mailing (``enqueue(mailing=…)`` creates one with its messages); its id."""
        with self.transaction() as conn:
            return self._insert_mailing(conn, name, sources, now, not_before)

    def _insert_mailing(
        self, conn: sqlite3.Connection, name: str, sources: Sequence[str], now: float, not_before: float | None
    ) -> int:
        clean = name.strip()
        if not clean or len(clean) > MAILING_NAME_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in clean):
            raise InputError(
                "mailing",
                f"{name!r} is not a usable mailing name",
                fix=f"give a name of 1 to {MAILING_NAME_MAX} characters without control characters",
            )
        row = conn.execute("SELECT name FROM mailings WHERE key=?", (clean.casefold(),)).fetchone()
        if row is not None:
            raise InputError(
                "mailing",
                f"the outbox of {self.company or self.path.stem} already has a mailing named {row[0]!r}",
                fix="choose another name (names are compared ignoring case)",
            )
        cur = conn.execute(
            "INSERT INTO mailings (name, key, sources, created_at, not_before) VALUES (?,?,?,?,?)",
            (clean, clean.casefold(), json.dumps(list(sources)), now, not_before),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _mailing_row(self, conn: sqlite3.Connection, name: str) -> Sequence[Any]:
        row = conn.execute(
            f"SELECT {_MAILING_COLUMNS} FROM mailings WHERE key=?", (name.strip().casefold(),)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                "mailing",
                f"there is no mailing named {name!r} in the outbox of {self.company or self.path.stem}",
                fix="see `automail mailing list`",
            )
        return tuple(row)

    def _mailing_from(
        self, conn: sqlite3.Connection, row: Sequence[Any], counted: Mapping[str, int] | None = None
    ) -> Mailing:
        """A mailing from its row and its kept counts (``counted``: status -> n, read here if not given)."""
        if counted is None:
            counted = dict(conn.execute("SELECT status, n FROM mailing_counts WHERE mailing=?", (row[0],)).fetchall())
        counts = dict.fromkeys(MessageStatus, 0)
        for status, n in counted.items():
            counts[MessageStatus(status)] = int(n)
        return Mailing(
            id=row[0],
            name=row[1],
            company=self.company,
            sources=tuple(json.loads(row[2])),
            created_at=row[3],
            not_before=row[4],
            paused=bool(row[5]),
            first_sent_at=row[6],
            last_sent_at=row[7],
            cancelled_at=row[8],
            ended_at=row[9],
            queued=counts[MessageStatus.QUEUED],
            sending=counts[MessageStatus.SENDING],
            sent=counts[MessageStatus.SENT],
            deferred=counts[MessageStatus.DEFERRED],
            failed=counts[MessageStatus.FAILED],
            cancelled=counts[MessageStatus.CANCELLED],
        )

    def mailing(self, name: str) -> Mailing:
        """One mailing with its counts (the name compared ignoring case), or NotFoundError."""
        conn = self._conn()
        return self._mailing_from(conn, self._mailing_row(conn, name))

    def mailings(self) -> list[Mailing]:
        """Every mailing of this outbox with its counts, oldest first."""
        conn = self._conn()
        rows = conn.execute(f"SELECT {_MAILING_COLUMNS} FROM mailings ORDER BY id").fetchall()
        counted: dict[int, dict[str, int]] = {r[0]: {} for r in rows}
        for mailing_id, status, n in conn.execute("SELECT mailing, status, n FROM mailing_counts"):
            counted.setdefault(mailing_id, {})[status] = n
        return [self._mailing_from(conn, r, counted[r[0]]) for r in rows]

    def mailing_messages(self, name: str, status: MessageStatus, limit: int = 100) -> list[StoredMessage]:
        """Up to ``limit`` messages of a mailing in one status, oldest first (``mailing show``'s failures)."""
        conn = self._conn()
        mailing_id = self._mailing_row(conn, name)[0]
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE mailing=? AND status=? ORDER BY id LIMIT ?",
            (mailing_id, str(status), limit),
        ).fetchall()
        return [_row_to_message(r, self.path) for r in rows]

    def held_count(self, tags: Sequence[str] = ()) -> int:
        """Waiting messages held by a paused mailing (restricted to tags when given): not due until resumed."""
        conn = self._conn()
        if not tags:
            row = conn.execute(
                "SELECT sum(n) FROM mailing_counts WHERE status IN ('queued', 'deferred')"
                " AND mailing IN (SELECT id FROM mailings WHERE paused)"
            ).fetchone()
            return int(row[0] or 0)
        clause, args = _tag_clause(tags)
        row = conn.execute(
            "SELECT count(*) FROM messages WHERE mailing IN (SELECT id FROM mailings WHERE paused)"
            f" AND status IN ('queued', 'deferred'){clause}",
            args,
        ).fetchone()
        return int(row[0])

    def end_mailing(self, mailing_id: int, now: float) -> Mailing | None:
        """The mailing with its final counts if it has just ended and nobody has announced it yet, else None.

        Ended: it has messages and none is left to send. The caller announces it: the check and
        ``ended_at`` are one transaction, so of all workers and processes exactly one gets it.
        Reads only (no write lock) while the mailing is running or once its end was taken.
        """
        row = self._conn().execute(f"SELECT 1 FROM mailings WHERE id=? AND {_ENDED_UNANNOUNCED}", (mailing_id,))
        if row.fetchone() is None:
            return None
        with self.transaction() as wconn:
            row = wconn.execute(f"SELECT {_MAILING_COLUMNS} FROM mailings WHERE id=?", (mailing_id,)).fetchone()
            if row is None or row[9] is not None:
                return None
            mailing = self._mailing_from(wconn, row)
            if mailing.pending or mailing.total == 0:  # still sending, or empty (being filled): not ended
                return None
            wconn.execute("UPDATE mailings SET ended_at=? WHERE id=?", (now, mailing_id))
        return replace(mailing, ended_at=now)

    def end_mailings(self, now: float, skip: Iterable[int] = ()) -> builtins.list[Mailing]:
        """Every mailing (but those in ``skip``) that has ended and was not announced yet (see ``end_mailing``),
        oldest first."""
        ended = self._conn().execute(f"SELECT id FROM mailings WHERE {_ENDED_UNANNOUNCED} ORDER BY id")
        skipped = set(skip)
        return [m for (i,) in ended.fetchall() if i not in skipped and (m := self.end_mailing(i, now)) is not None]

    def stopped_mailings(self, mailing_ids: Sequence[int]) -> set[int]:
        """Which of these mailings are paused or cancelled now."""
        if not mailing_ids:
            return set()
        rows = self._conn().execute(
            f"SELECT id FROM mailings WHERE id IN ({','.join('?' * len(mailing_ids))})"
            " AND (paused OR cancelled_at IS NOT NULL)",
            list(mailing_ids),
        )
        return {int(r[0]) for r in rows}

    def mailing_name(self, mailing_id: int) -> str:
        """The name of a mailing by its id ('' if there is none)."""
        row = self._conn().execute("SELECT name FROM mailings WHERE id=?", (mailing_id,)).fetchone()
        return "" if row is None else str(row[0])

    def pause_mailing(self, name: str, now: float) -> int:
        """Stop a mailing's messages from being claimed (others go on); how many wait.

        One row changes, whatever the mailing's size: the claim honours ``mailings.paused`` (see _due_ids).
        """
        return self._set_paused(name, True)

    def resume_mailing(self, name: str, now: float) -> int:
        """Let a paused mailing's messages be claimed again, each at its own due time; how many wait."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> int:
        with self.transaction() as conn:
            mailing_id = self._mailing_row(conn, name)[0]
            conn.execute("UPDATE mailings SET paused=? WHERE id=?", (int(paused), mailing_id))
            row = conn.execute(
                "SELECT sum(n) FROM mailing_counts WHERE mailing=? AND status IN ('queued', 'deferred')", (mailing_id,)
            ).fetchone()
            return int(row[0] or 0)

    def cancel_mailing(self, name: str, now: float) -> int:
        """Cancel every message of a mailing that has not left (queued or deferred); how many."""
        with self.transaction() as conn:
            mailing_id = self._mailing_row(conn, name)[0]
            # Recorded even when nothing is left to cancel: its end (a message in flight may still
            # be recorded after this) is announced as a cancel.
            conn.execute("UPDATE mailings SET cancelled_at=coalesce(cancelled_at, ?) WHERE id=?", (now, mailing_id))
            return conn.execute(
                "UPDATE messages SET status='cancelled', next_attempt_at=NULL, updated_at=?"
                " WHERE mailing=? AND status IN ('queued', 'deferred')",
                (now, mailing_id),
            ).rowcount

    def retry_mailing(self, name: str, now: float) -> int:
        """Queue a mailing's failed messages again (recipients that got it are not asked again)."""
        with self.transaction() as conn:
            mailing_id = self._mailing_row(conn, name)[0]
            ids = [
                r[0] for r in conn.execute("SELECT id FROM messages WHERE mailing=? AND status='failed'", (mailing_id,))
            ]
            self._requeue(conn, ids, now)
            return len(ids)

    def known_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs the outbox already holds."""
        found: set[str] = set()
        for i in range(0, len(message_ids), 500):
            chunk = list(message_ids[i : i + 500])
            rows = (
                self._conn()
                .execute(f"SELECT message_id FROM messages WHERE message_id IN ({','.join('?' * len(chunk))})", chunk)
                .fetchall()
            )
            found.update(r[0] for r in rows)
        return found

    # ---- consuming -----------------------------------------------------------
    def next_due(self, tags: Sequence[str] = ()) -> float | None:
        """When the earliest queued or deferred message becomes due (None: nothing waiting;
        a paused mailing's messages do not count)."""
        conn = self._conn()
        # One min() per range: each is a single seek in ix_due / ix_due_tag.
        arms = _arms(tags, self._running_groups(conn))
        selects = [f"SELECT min(next_attempt_at) AS due FROM messages WHERE {where} AND {_READY}" for where, _ in arms]
        row = conn.execute(f"SELECT min(due) FROM ({_union(selects)})", [a for _, args in arms for a in args])
        due = row.fetchone()[0]
        return None if due is None else float(due)

    @staticmethod
    def _running_groups(conn: sqlite3.Connection) -> list[int | None]:
        """None (the messages in no mailing) and the mailings not paused that may have messages waiting."""
        rows = conn.execute("SELECT id FROM mailings WHERE ended_at IS NULL AND paused = 0 ORDER BY id")
        return [None, *(int(r[0]) for r in rows)]

    def claim(self, task: str, now: float, tags: Sequence[str] = (), mail_from: str = "") -> ClaimedMessage | None:
        """Atomically take the next due message for ``task`` (status → sending)."""
        claimed = self.claim_batch(task, now, tags, mail_from, 1)
        return claimed[0] if claimed else None

    def claim_batch(
        self, task: str, now: float, tags: Sequence[str] = (), mail_from: str = "", limit: int = 1
    ) -> list[ClaimedMessage]:
        """Atomically take up to ``limit`` due messages, oldest first, in one transaction."""
        with self.transaction() as conn:
            # The running mailings are read in the claim's own transaction: a pause committed
            # before it is honoured.
            due, args = _due_ids(tags, self._running_groups(conn), now, limit)
            rows = conn.execute(
                f"UPDATE messages SET status='sending', task=?, mail_from=?, claimed_at=?, updated_at=?,"
                f" next_attempt_at=NULL WHERE id IN ({due}) RETURNING {_COLUMNS}, queued_at",
                [task, mail_from, now, now, *args],
            ).fetchall()
            bodies = {}
            if rows:
                ids = [r[0] for r in rows]
                bodies = dict(
                    conn.execute(f"SELECT id, raw FROM bodies WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
                )
            claimed = [c for r in rows if (c := self._decode_claimed(conn, r, bodies, now)) is not None]
        claimed.sort(key=lambda c: c.message.id)
        return claimed

    def _decode_claimed(
        self, conn: sqlite3.Connection, row: Sequence[Any], bodies: dict[int, bytes], now: float
    ) -> ClaimedMessage | None:
        """A claimed row as a message; a damaged row (no body, unreadable fields) fails instead of looping."""
        try:
            if row[0] not in bodies:
                raise OutboxError(f"message {row[0]} in {self.path} has no body", fix="queue it again")
            raw = self._expand(conn, bytes(bodies[row[0]]))
            return ClaimedMessage(_row_to_message(row, self.path), raw, float(row[-1]))
        except OutboxError as exc:
            log.error("%s", exc)
            conn.execute(
                "UPDATE messages SET status='failed', next_attempt_at=NULL, last_error=?, updated_at=? WHERE id=?",
                (f"damaged in the outbox: {exc.message}", now, row[0]),
            )
            return None

    def mark_sent(
        self,
        msg_id: int,
        now: float,
        reply: str,
        recipients: Mapping[str, RecipientState],
        account: str,
        task: str,
        *,
        journal: bool = False,
    ) -> None:
        """Record a delivery (every recipient sent or failed: ``recipients``) and log it for the throttle.

        ``journal``: append it to the results journal instead (see ``apply_results``)."""
        self._record_attempt(
            _Result(msg_id, MessageStatus.SENT, now, reply=reply, recipients=recipients, task=task, account=account),
            journal,
        )

    def mark_deferred(
        self,
        msg_id: int,
        now: float,
        next_at: float,
        code: int | None,
        error: str,
        account: str,
        task: str,
        recipients: Mapping[str, RecipientState] | None = None,
        *,
        journal: bool = False,
    ) -> None:
        """A transient failure: try again at ``next_at`` (to the recipients still pending in ``recipients``)."""
        result = _Result(msg_id, MessageStatus.DEFERRED, now, next_at, code, error, "", recipients or {}, task, account)
        self._record_attempt(result, journal)

    def mark_failed(
        self,
        msg_id: int,
        now: float,
        code: int | None,
        error: str,
        account: str,
        task: str,
        recipients: Mapping[str, RecipientState] | None = None,
        *,
        journal: bool = False,
    ) -> None:
        """A permanent failure: the message will not be tried again unless retried by hand."""
        result = _Result(msg_id, MessageStatus.FAILED, now, None, code, error, "", recipients or {}, task, account)
        self._record_attempt(result, journal)

    def _record_attempt(self, result: _Result, journal: bool) -> None:
        """One attempt's outcome in ONE statement, its own transaction: the row, and through
        tr_send_log (when the account is set) the throttle's send log and the hourly chart; or, with
        ``journal``, one row of the results journal, which ``apply_results`` turns into that statement."""
        conn = self._writable_conn()
        try:
            conn.execute(_JOURNAL_RESULT if journal else _RECORD_RESULT[result.status], result.params())
        except sqlite3.Error as exc:
            self._rollback(conn)  # a failed commit never leaves the connection holding the write lock
            raise self._not_saved(exc) from exc

    def apply_results(self) -> int:
        """Fold the results journal into the messages, in one transaction; how many results it held.

        Each result becomes the UPDATE ``mark_sent``/``mark_deferred``/``mark_failed`` would have made
        at its time (its triggers keep the counts, the send log and the hourly chart)."""
        with self.transaction() as conn:
            return _apply_results(conn)

    def release(self, msg_id: int | Sequence[int], now: float) -> None:
        """Give claimed messages back untouched (a task-level fault or a stop, not the message's)."""
        ids = [msg_id] if isinstance(msg_id, int) else list(msg_id)
        with self.transaction() as conn:
            # Back at their place in the queue (enqueue order), not behind everything queued since:
            # a task error followed by a fix must not send 2, 3, 1.
            conn.executemany(
                "UPDATE messages SET status='queued', updated_at=?, claimed_at=NULL,"
                " next_attempt_at=min(queued_at, ?) WHERE id=? AND status='sending'",
                [(now, now, i) for i in ids],
            )

    def recover(self, task: str, now: float) -> int:
        """Return the task's messages stuck in ``sending`` (after a crash) to the queue; same Message-ID.

        Results a crash left in the journal are folded in first: those messages have their outcome."""
        with self.transaction() as conn:
            _apply_results(conn)
            return conn.execute(
                "UPDATE messages SET status='queued', updated_at=?, claimed_at=NULL,"
                " next_attempt_at=min(queued_at, ?) WHERE status='sending' AND task=?",
                (now, now, task),
            ).rowcount

    def send_times(self, account: str, since: float) -> list[float]:
        """Send attempts on an SMTP account since ``since``: restores the throttle after a restart.

        Results still in the journal (a crash mid-batch; folded in when the task's worker starts) count too."""
        rows = (
            self._conn()
            .execute(
                "SELECT at FROM send_log WHERE account=? AND at>?"
                " UNION ALL SELECT at FROM results WHERE account=? AND at>? ORDER BY at",
                (account, since, account, since),
            )
            .fetchall()
        )
        return [float(r[0]) for r in rows]

    def prune_send_log(self, now: float) -> None:
        """Forget send-log entries the throttle no longer needs."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM send_log WHERE at < ?", (now - SEND_LOG_KEEP_S,))

    # ---- user actions ----------------------------------------------------------
    def retry(self, ids: Iterable[int] | None, now: float) -> int:
        """Queue failed (or deferred) messages again: the given ids, or every failed one if None."""
        with self.transaction() as conn:
            if ids is None:
                id_list = [r[0] for r in conn.execute("SELECT id FROM messages WHERE status='failed'")]
            else:
                id_list = list(ids)
                self._check_ids(conn, id_list, ("failed", "deferred"), "retry")
            self._requeue(conn, id_list, now)
            return len(id_list)

    @staticmethod
    def _requeue(conn: sqlite3.Connection, ids: Sequence[int], now: float) -> None:
        for i in range(0, len(ids), 500):
            # Their mailings run again: not cancelled any more, and their next end is announced again.
            chunk = list(ids[i : i + 500])
            conn.execute(
                "UPDATE mailings SET cancelled_at=NULL, ended_at=NULL WHERE id IN"
                f" (SELECT DISTINCT mailing FROM messages WHERE id IN ({','.join('?' * len(chunk))}))",
                chunk,
            )
        for msg_id in ids:
            (text,) = conn.execute("SELECT rcpt_state FROM messages WHERE id=?", (msg_id,)).fetchone()
            # Recipients that got the message keep it; every other one is tried again.
            states = {a: st for a, st in _decode_states(text).items() if st.status is RecipientStatus.SENT}
            conn.execute(
                "UPDATE messages SET status='queued', attempts=0, queued_at=?, next_attempt_at=?,"
                " updated_at=?, rcpt_state=? WHERE id=?",
                (now, now, now, _encode_states(states), msg_id),
            )

    def cancel(self, ids: Iterable[int], now: float) -> int:
        """Cancel queued or deferred messages; refuses the whole list if any cannot be cancelled."""
        id_list = list(ids)
        with self.transaction() as conn:
            self._check_ids(conn, id_list, ("queued", "deferred"), "cancel")
            for msg_id in id_list:
                conn.execute(
                    "UPDATE messages SET status='cancelled', next_attempt_at=NULL, updated_at=? WHERE id=?",
                    (now, msg_id),
                )
        return len(id_list)

    def _check_ids(self, conn: sqlite3.Connection, ids: list[int], allowed: tuple[str, ...], verb: str) -> None:
        if not ids:
            raise InputError("id", "no message ids given", fix=f"name the messages to {verb}")
        for msg_id in ids:
            row = conn.execute("SELECT status FROM messages WHERE id=?", (msg_id,)).fetchone()
            if row is None:
                raise NotFoundError(
                    "id",
                    f"message {msg_id} is not in the outbox of {self.company}",
                    fix="see `automail outbox`",
                )
            if row[0] not in allowed:
                raise InputError(
                    "id",
                    f"message {msg_id} is {row[0]} and cannot be {verb}ed"
                    if verb != "retry"
                    else f"message {msg_id} is {row[0]}; only {' or '.join(allowed)} messages can be retried",
                    fix=f"{verb} only {' or '.join(allowed)} messages",
                )

    # ---- reading -------------------------------------------------------------------
    def get(self, msg_id: int) -> StoredMessage:
        """One message or NotFoundError."""
        row = self._conn().execute(f"SELECT {_COLUMNS} FROM messages WHERE id=?", (msg_id,)).fetchone()
        if row is None:
            raise NotFoundError(
                "id",
                f"message {msg_id} is not in the outbox of {self.company}",
                fix="see `automail outbox`",
            )
        return _row_to_message(row, self.path)

    def raw(self, msg_id: int) -> bytes:
        """The MIME bytes of a message."""
        conn = self._conn()
        row = conn.execute("SELECT raw FROM bodies WHERE id=?", (msg_id,)).fetchone()
        if row is None:
            raise NotFoundError("id", f"message {msg_id} has no body", fix="see `automail outbox`")
        return self._expand(conn, bytes(row[0]))

    def _filter(self, status: MessageStatus | None, search: str) -> tuple[str, str, list[Any]]:
        """FROM … WHERE … (messages as ``m``) and the key column for ``status`` and ``search``.

        With FTS5 the search drives the query from the index, in rowid order, so a page or a
        capped count stops early however many messages match ("invoice" matches most of them).
        """
        where: list[str] = []
        args: list[Any] = []
        source, key = "messages m", "m.id"
        if search and self.search_indexed:
            source, key = "messages_fts f JOIN messages m ON m.id = f.rowid", "f.rowid"
            where.append("messages_fts MATCH ?")
            args.append(_match_query(search) or '""')
        elif search:
            # No FTS5 here: a bounded search over the newest SEARCH_SCAN_ROWS messages.
            where.append(
                "m.id > (SELECT coalesce(max(id), 0) FROM messages) - ?"
                " AND (m.subject LIKE ? OR m.recipients LIKE ? OR m.from_header LIKE ? OR m.message_id LIKE ?)"
            )
            args.extend([SEARCH_SCAN_ROWS, *[f"%{search}%"] * 4])
        if status is not None:
            where.append("m.status=?")
            args.append(str(status))
        return f"{source} WHERE {' AND '.join(where) or '1'}", key, args

    def list(
        self,
        status: MessageStatus | None = None,
        search: str = "",
        limit: int = -1,
        offset: int = 0,
    ) -> list[StoredMessage]:
        """Messages, optionally filtered by status and a search text, oldest first."""
        source, key, args = self._filter(status, search)
        sql = f"SELECT {_M_COLUMNS} FROM {source} ORDER BY {key} LIMIT ? OFFSET ?"
        return [_row_to_message(r, self.path) for r in self._conn().execute(sql, [*args, limit, offset]).fetchall()]

    def page(
        self,
        status: MessageStatus | None = None,
        search: str = "",
        *,
        before: int | None = None,
        after: int | None = None,
        limit: int = 200,
    ) -> builtins.list[StoredMessage]:
        """One page, newest first, found by key instead of OFFSET (the last page costs what the first does).

        ``before``: the page of messages older than that id (the next page; None: the newest);
        ``after``: the page of messages newer than that id (the previous page; 0: the oldest page).
        """
        source, key, args = self._filter(status, search)
        if after is not None:
            sql = f"SELECT {_M_COLUMNS} FROM {source} AND {key} > ? ORDER BY {key} LIMIT ?"
            args += [after, limit]
        else:
            sql = f"SELECT {_M_COLUMNS} FROM {source} AND {key} < ? ORDER BY {key} DESC LIMIT ?"
            args += [before if before is not None else 2**63 - 1, limit]
        rows = self._conn().execute(sql, args).fetchall()
        if after is not None:
            rows.reverse()
        return [_row_to_message(r, self.path) for r in rows]

    def search_newest(
        self, status: MessageStatus | None, search: str, limit: int, cap: int
    ) -> tuple[builtins.list[StoredMessage], int]:
        """The newest page of a search and how many messages match (up to ``cap``), from one search:
        a common word's matches are merged once, not once for the page and again for the count."""
        source, key, args = self._filter(status, search)
        conn = self._conn()
        ids = [r[0] for r in conn.execute(f"SELECT m.id FROM {source} ORDER BY {key} DESC LIMIT ?", [*args, cap])]
        page = ids[:limit]
        rows = (
            conn.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE id IN ({','.join('?' * len(page))}) ORDER BY id DESC", page
            ).fetchall()
            if page
            else []
        )
        return [_row_to_message(r) for r in rows], len(ids)

    def iter_messages(self, status: MessageStatus | None = None, search: str = "") -> Iterator[StoredMessage]:
        """Every matching message, oldest first, read in chunks (constant memory at any size)."""
        last = 0
        while True:
            chunk = self.page(status, search, after=last, limit=1000)  # newest first
            if not chunk:
                return
            yield from reversed(chunk)
            last = chunk[0].id

    def count(self, status: MessageStatus | None = None, search: str = "", cap: int | None = None) -> int:
        """How many messages match the filter (counting a search stops at ``cap`` when given)."""
        if not search:
            statuses = [str(status)] if status is not None else [str(s) for s in MessageStatus]
            marks = ",".join("?" * len(statuses))
            row = self._conn().execute(f"SELECT sum(n) FROM message_counts WHERE status IN ({marks})", statuses)
            return int(row.fetchone()[0] or 0)
        source, _key, args = self._filter(status, search)
        limit = f" LIMIT {int(cap)}" if cap is not None else ""
        return int(self._conn().execute(f"SELECT count(*) FROM (SELECT 1 FROM {source}{limit})", args).fetchone()[0])

    def counts(self, tags: Sequence[str] = ()) -> dict[MessageStatus, int]:
        """Messages per status (restricted to tags when given), from the kept counters."""
        clause, args = _tag_clause(tags)
        rows = (
            self._conn()
            .execute(f"SELECT status, sum(n) FROM message_counts WHERE 1{clause} GROUP BY status", args)
            .fetchall()
        )
        result = {s: 0 for s in MessageStatus}
        for status, count in rows:
            if status not in result:
                raise OutboxError(
                    f"the outbox {self.path} has {count} message(s) with the unknown status {status!r}",
                    fix=f"the file was changed by another program: set their status to one of "
                    f"{', '.join(MessageStatus)}, or restore a backup",
                )
            result[MessageStatus(status)] = int(count)
        return result

    def sent_count(self, task: str, since: float) -> int:
        """Messages a task delivered since ``since``."""
        row = (
            self._conn()
            .execute(
                "SELECT count(*) FROM messages WHERE status='sent' AND task=? AND sent_at>?",
                (task, since),
            )
            .fetchone()
        )
        return int(row[0])

    def failed_count(self, task: str, tags: Sequence[str]) -> int:
        """Failed messages of a task (claimed by it, or in its scope and never claimed)."""
        clause, args = _tag_clause(tags)
        row = (
            self._conn()
            .execute(
                f"SELECT sum(n) FROM message_counts WHERE status='failed' AND (task=? OR (task=''{clause}))",
                [task, *args],
            )
            .fetchone()
        )
        return int(row[0] or 0)

    def hourly_activity(self, tasks: Sequence[str], start: float, hours: int) -> Sequence[tuple[int, int]]:
        """(sent, failed attempts) per hour from ``start`` (a whole UTC hour) for the given tasks.

        Reads the per-hour counts the v3 triggers keep (at most ``hours`` rows per task), so the
        sending chart costs the same at 1,000 or 1,000,000 messages. Failed attempts are the
        send-log entries (sent, deferred or failed) less the sent messages.
        """
        first = int(start // 3600)
        sent, attempts = [0] * hours, [0] * hours
        if tasks:
            rows = (
                self._conn()
                .execute(
                    "SELECT hour, sum(sent), sum(attempts) FROM send_hourly"
                    f" WHERE task IN ({','.join('?' * len(tasks))}) AND hour >= ? AND hour < ? GROUP BY hour",
                    [*tasks, first, first + hours],
                )
                .fetchall()
            )
            for hour, s, a in rows:
                sent[hour - first], attempts[hour - first] = int(s), int(a)
        return [(s, max(a - s, 0)) for s, a in zip(sent, attempts, strict=True)]

    # ---- task state ----------------------------------------------------------------
    def set_task_state(
        self,
        task: str,
        state: TaskState,
        now: float,
        reason: str = "",
        fault: FaultKind | None = None,
        code: int | None = None,
        fingerprint: str = "",
    ) -> None:
        """Persist a task's state so other processes (and later runs) can show it."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO task_state (task, state, reason, fault, code, fingerprint, pid, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(task) DO UPDATE SET state=excluded.state,"
                " reason=excluded.reason, fault=excluded.fault, code=excluded.code,"
                " fingerprint=excluded.fingerprint, pid=excluded.pid, updated_at=excluded.updated_at",
                (task, str(state), reason, str(fault) if fault else "", code, fingerprint, os.getpid(), now),
            )

    def task_state(self, task: str) -> TaskStateRecord | None:
        """The persisted state of a task, if it ever ran."""
        row = (
            self._conn()
            .execute(
                "SELECT task, state, reason, fault, code, fingerprint, pid, updated_at FROM task_state WHERE task=?",
                (task,),
            )
            .fetchone()
        )
        if row is None:
            return None
        fault = FaultKind(row[3]) if row[3] else None
        return TaskStateRecord(row[0], TaskState(row[1]), row[2], fault, row[4], row[5], row[6], row[7])

    def rename_task(self, old: str, new: str) -> None:
        """Move everything recorded under a task's name to a new name, in one transaction (idempotent)."""
        with self.transaction() as conn:
            _apply_results(conn)  # a crash's leftover results, under the name they were sent with
            conn.execute("UPDATE messages SET task=? WHERE task=?", (new, old))
            conn.execute("UPDATE send_log SET task=? WHERE task=?", (new, old))
            conn.execute(
                "INSERT INTO send_hourly (task, hour, sent, attempts) SELECT ?, hour, sent, attempts FROM send_hourly"
                " WHERE task=? ON CONFLICT (task, hour) DO UPDATE SET sent=sent+excluded.sent,"
                " attempts=attempts+excluded.attempts",
                (new, old),
            )
            conn.execute("DELETE FROM send_hourly WHERE task=?", (old,))
            if conn.execute("SELECT 1 FROM task_state WHERE task=?", (old,)).fetchone():
                conn.execute("DELETE FROM task_state WHERE task=?", (new,))
                conn.execute("UPDATE task_state SET task=? WHERE task=?", (new, old))

    def delete_task_state(self, task: str) -> None:
        """Forget a removed task's state."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM task_state WHERE task=?", (task,))
