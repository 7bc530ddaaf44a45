"""A company's outbox: one SQLite file holding the message state machine.

queued → sending → sent | deferred | failed | cancelled.  A message is claimed
atomically (``BEGIN IMMEDIATE`` + ``UPDATE … RETURNING``), so two engines or two
tasks never send the same message; a message found in ``sending`` after a crash
goes back to the queue with its Message-ID unchanged.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from automail.errors import FaultKind, InputError, NotFoundError, OutboxError
from automail.models import MessageStatus, RecipientState, RecipientStatus, StoredMessage, TaskState

SCHEMA_VERSION = 4

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

_MIGRATIONS: tuple[tuple[int, str | tuple[str, ...]], ...] = (
    (1, _SCHEMA_V1),
    (2, _SCHEMA_V2),
    (3, _SCHEMA_V3),
    (4, _SCHEMA_V4),
)

_COLUMNS = (
    "id, status, mail_from, recipients, from_header, subject, tag, message_id, attempts, "
    "last_error_code, last_error, refused, server_reply, task, created_at, next_attempt_at, sent_at, rcpt_state"
)

_READY = "next_attempt_at IS NOT NULL"
SEND_LOG_KEEP_S = 2 * 24 * 3600


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


def _row_to_message(row: Sequence[Any]) -> StoredMessage:
    return StoredMessage(
        id=row[0],
        status=MessageStatus(row[1]),
        mail_from=row[2],
        recipients=tuple(json.loads(row[3])),
        from_header=row[4],
        subject=row[5],
        tag=row[6],
        message_id=row[7],
        attempts=row[8],
        last_error_code=row[9],
        last_error=row[10],
        refused=json.loads(row[11]) if row[11] else {},
        server_reply=row[12],
        task=row[13],
        created_at=row[14],
        next_attempt_at=row[15],
        sent_at=row[16],
        recipient_states=_decode_states(row[17]),
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


def _tag_clause(tags: Sequence[str]) -> tuple[str, list[Any]]:
    if not tags:
        return "", []
    return f" AND tag IN ({','.join('?' * len(tags))})", list(tags)


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


@_store_errors
class Outbox:
    """The outbox database of one company.  Safe to share between threads:
    each thread gets its own SQLite connection."""

    def __init__(self, path: str | Path, company: str = "") -> None:
        self.path = Path(path)
        self.company = company
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate(self._conn())

    # ---- connection and transactions ----------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                # FULL: every committed status change survives power loss, not only a crash.
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA busy_timeout=30000")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise OutboxError(
                    f"cannot open the outbox of {self.company or self.path.stem} at {self.path}: {exc}",
                    fix="check that the folder exists and is writable",
                ) from exc
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error, the COMMIT's own included.

        A connection is never left inside a transaction: it would hold the write lock, and every
        later write of every process would wait out the busy timeout and fail.  A failed COMMIT
        raises OutboxError; the body's own sqlite3 errors pass through unchanged for the public
        method around it to name (the connection it yields is inside the store's boundary).
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path} is busy or unusable: {exc}", fix=_fix_for(exc)) from exc
        try:
            yield conn
        except BaseException:
            self._rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise OutboxError(
                f"a change to the outbox of {self.company or self.path.stem} ({self.path}) was not saved: {exc}",
                fix=_fix_for(exc),
            ) from exc

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # Cannot roll back: drop the connection, which releases the lock; the next call opens another.
            conn.close()
            self._local.conn = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self.transaction():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {self.path} was written by a newer AutoMail (schema {version})",
                    fix="upgrade AutoMail",
                )
            for target, script in _MIGRATIONS:
                if version < target:
                    for stmt in script if isinstance(script, tuple) else script.split(";"):
                        if stmt.strip():
                            conn.execute(stmt)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every connection this object opened (all threads)."""
        with self._conn_lock:
            for conn in self._connections:
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
    def enqueue(self, messages: Sequence[NewMessage], now: float) -> list[int]:
        """Queue a batch in one transaction: all of it or nothing."""
        ids: list[int] = []
        with self.transaction() as conn:
            for m in messages:
                cur = conn.execute(
                    "INSERT INTO messages (status, recipients, from_header, subject, tag, message_id, size,"
                    " created_at, queued_at, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
                        now,
                        now,
                    ),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
                conn.execute("INSERT INTO bodies (id, raw) VALUES (?, ?)", (cur.lastrowid, m.raw))
        return ids

    # ---- consuming -----------------------------------------------------------
    def next_due(self, tags: Sequence[str] = ()) -> float | None:
        """When the earliest queued or deferred message becomes due (None: nothing waiting)."""
        clause, args = _tag_clause(tags)
        row = self._conn().execute(f"SELECT min(next_attempt_at) FROM messages WHERE {_READY}{clause}", args).fetchone()
        return None if row[0] is None else float(row[0])

    def claim(self, task: str, now: float, tags: Sequence[str] = (), mail_from: str = "") -> ClaimedMessage | None:
        """Atomically take the next due message for ``task`` (status → sending)."""
        claimed = self.claim_batch(task, now, tags, mail_from, 1)
        return claimed[0] if claimed else None

    def claim_batch(
        self, task: str, now: float, tags: Sequence[str] = (), mail_from: str = "", limit: int = 1
    ) -> list[ClaimedMessage]:
        """Atomically take up to ``limit`` due messages, oldest first, in one transaction."""
        clause, args = _tag_clause(tags)
        with self.transaction() as conn:
            rows = conn.execute(
                f"UPDATE messages SET status='sending', task=?, mail_from=?, claimed_at=?, updated_at=?,"
                f" next_attempt_at=NULL"
                f" WHERE id IN (SELECT id FROM messages WHERE next_attempt_at <= ?{clause}"
                f" ORDER BY next_attempt_at, id LIMIT ?) RETURNING {_COLUMNS}, queued_at",
                [task, mail_from, now, now, now, *args, limit],
            ).fetchall()
            bodies = {}
            if rows:
                ids = [r[0] for r in rows]
                bodies = dict(
                    conn.execute(f"SELECT id, raw FROM bodies WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
                )
        rows.sort(key=lambda r: r[0])
        return [ClaimedMessage(_row_to_message(r), bytes(bodies[r[0]]), float(r[-1])) for r in rows]

    def mark_sent(
        self,
        msg_id: int,
        now: float,
        reply: str,
        recipients: Mapping[str, RecipientState],
        account: str,
        task: str,
    ) -> None:
        """Record a delivery (every recipient sent or failed: ``recipients``) and log it for the throttle."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE messages SET status='sent', sent_at=?, updated_at=?, attempts=attempts+1,"
                " server_reply=?, refused=?, rcpt_state=?, next_attempt_at=NULL, last_error_code=NULL,"
                " last_error='' WHERE id=?",
                (now, now, reply, _refusals(recipients), _encode_states(recipients), msg_id),
            )
            conn.execute("INSERT INTO send_log (account, task, at) VALUES (?,?,?)", (account, task, now))

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
    ) -> None:
        """A transient failure: try again at ``next_at`` (to the recipients still pending in ``recipients``)."""
        states = recipients or {}
        with self.transaction() as conn:
            conn.execute(
                "UPDATE messages SET status='deferred', updated_at=?, attempts=attempts+1, next_attempt_at=?,"
                " last_error_code=?, last_error=?, refused=?, rcpt_state=? WHERE id=?",
                (now, next_at, code, error, _refusals(states), _encode_states(states), msg_id),
            )
            conn.execute("INSERT INTO send_log (account, task, at) VALUES (?,?,?)", (account, task, now))

    def mark_failed(
        self,
        msg_id: int,
        now: float,
        code: int | None,
        error: str,
        account: str,
        task: str,
        recipients: Mapping[str, RecipientState] | None = None,
    ) -> None:
        """A permanent failure: the message will not be tried again unless retried by hand."""
        states = recipients or {}
        with self.transaction() as conn:
            conn.execute(
                "UPDATE messages SET status='failed', updated_at=?, attempts=attempts+1, next_attempt_at=NULL,"
                " last_error_code=?, last_error=?, refused=?, rcpt_state=? WHERE id=?",
                (now, code, error, _refusals(states), _encode_states(states), msg_id),
            )
            if account:
                conn.execute("INSERT INTO send_log (account, task, at) VALUES (?,?,?)", (account, task, now))

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
        """Return the task's messages stuck in ``sending`` (after a crash) to the queue; same Message-ID."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE messages SET status='queued', updated_at=?, claimed_at=NULL,"
                " next_attempt_at=min(queued_at, ?) WHERE status='sending' AND task=?",
                (now, now, task),
            ).rowcount

    def send_times(self, account: str, since: float) -> list[float]:
        """Send attempts on an SMTP account since ``since``: restores the throttle after a restart."""
        rows = (
            self._conn()
            .execute("SELECT at FROM send_log WHERE account=? AND at>? ORDER BY at", (account, since))
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
            for msg_id in id_list:
                (text,) = conn.execute("SELECT rcpt_state FROM messages WHERE id=?", (msg_id,)).fetchone()
                # Recipients that got the message keep it; every other one is tried again.
                states = {a: st for a, st in _decode_states(text).items() if st.status is RecipientStatus.SENT}
                conn.execute(
                    "UPDATE messages SET status='queued', attempts=0, queued_at=?, next_attempt_at=?,"
                    " updated_at=?, rcpt_state=? WHERE id=?",
                    (now, now, now, _encode_states(states), msg_id),
                )
            return len(id_list)

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
        return _row_to_message(row)

    def raw(self, msg_id: int) -> bytes:
        """The MIME bytes of a message."""
        row = self._conn().execute("SELECT raw FROM bodies WHERE id=?", (msg_id,)).fetchone()
        if row is None:
            raise NotFoundError("id", f"message {msg_id} has no body", fix="see `automail outbox`")
        return bytes(row[0])

    def _filter(self, status: MessageStatus | None, search: str) -> tuple[str, list[Any]]:
        where, args = [], []
        if status is not None:
            where.append("status=?")
            args.append(str(status))
        if search:
            where.append("(subject LIKE ? OR recipients LIKE ? OR from_header LIKE ? OR message_id LIKE ?)")
            args.extend([f"%{search}%"] * 4)
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def list(
        self,
        status: MessageStatus | None = None,
        search: str = "",
        limit: int = -1,
        offset: int = 0,
    ) -> list[StoredMessage]:
        """Messages, optionally filtered by status and a search text, one page at a time."""
        where, args = self._filter(status, search)
        rows = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM messages{where} ORDER BY id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            )
            .fetchall()
        )
        return [_row_to_message(r) for r in rows]

    def count(self, status: MessageStatus | None = None, search: str = "") -> int:
        """How many messages match the filter."""
        where, args = self._filter(status, search)
        return int(self._conn().execute(f"SELECT count(*) FROM messages{where}", args).fetchone()[0])

    def counts(self, tags: Sequence[str] = ()) -> dict[MessageStatus, int]:
        """Messages per status (restricted to tags when given)."""
        clause, args = _tag_clause(tags)
        rows = (
            self._conn()
            .execute(f"SELECT status, count(*) FROM messages WHERE 1{clause} GROUP BY status", args)
            .fetchall()
        )
        result = {s: 0 for s in MessageStatus}
        result.update({MessageStatus(r[0]): int(r[1]) for r in rows})
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
                f"SELECT count(*) FROM messages WHERE status='failed' AND (task=? OR (task=''{clause}))",
                [task, *args],
            )
            .fetchone()
        )
        return int(row[0])

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
