"""The facade the CLI and the UI call: definitions, outboxes, the engine and its events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from automail import secrets
from automail.clock import Clock, SystemClock, hour_start
from automail.errors import AutomailError, FaultKind, InputError, NotFoundError, OutboxExistsError, SmtpError
from automail.intake.pickup import PickupReport, dropped_files, ingest, pickup_dir
from automail.message import compose, max_message_bytes, prepare_raw, with_sender_headers
from automail.models import (
    Company,
    EngineEvent,
    EventKind,
    EventSink,
    Mailing,
    MailingAction,
    MessageStatus,
    SendingHistory,
    StoredMessage,
    Task,
    TaskState,
    TaskStatus,
    check_message_ids,
    check_name,
    current_user,
    this_computer,
)
from automail.paths import data_dir, definitions_file, lock_dir, prepare_data_dir
from automail.store.definitions import Definitions
from automail.store.outbox import NewMessage, Outbox, QueryObserver, set_aside

from . import rename
from .tasklock import TaskLock

if TYPE_CHECKING:  # imported where used: `enqueue` and `merge` start without the sending engine and asyncio
    from .runtime import Engine
    from .smtp import SmtpSession

log = logging.getLogger(__name__)

TEST_TIMEOUT_S = 10.0  # a one-off connection test: connect, greeting, TLS and login within this
TEST_FIX = "check the server name, port and security setting, and the network; then test again"


class Service:
    """Everything AutoMail can do, for one data folder."""

    def __init__(
        self,
        home: Path | None = None,
        clock: Clock | None = None,
        computer: str | None = None,
        user: str | None = None,
        session_factory: Callable[[Task, str | None], SmtpSession] | None = None,
        read_only: bool = False,
    ) -> None:
        """``read_only``: open outboxes for reading only (``automail status``, listings): such a
        service never waits for the write lock of an engine that is sending."""
        self.home = prepare_data_dir(home or data_dir())
        self.read_only = read_only
        self.clock: Clock = clock or SystemClock()
        self.computer = computer or this_computer()
        self.user = current_user() if user is None else user
        self.definitions = Definitions(definitions_file(self.home), self.home)
        self._outboxes: dict[str, Outbox] = {}
        self._outbox_lock = threading.Lock()
        self._sinks: list[EventSink] = []
        self._session_factory = session_factory
        self._engine: Engine | None = None
        self._query_watch: tuple[threading.Thread, QueryObserver] | None = None
        if not read_only:  # a reader leaves an interrupted rename to the next writer
            rename.recover(self.definitions, self.outbox, lock_dir(self.home))  # after a crash mid-rename

    # ---- events -------------------------------------------------------------------
    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Call ``sink`` (from the engine thread) for every engine event; returns an unsubscribe."""
        self._sinks.append(sink)
        return lambda: self._sinks.remove(sink) if sink in self._sinks else None

    def _emit(self, event: EngineEvent) -> None:
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception:
                log.exception("event listener failed")

    # ---- companies -------------------------------------------------------------------
    def companies(self) -> list[Company]:
        return self.definitions.companies()

    def add_company(self, name: str, outbox_path: str | None = None, reuse: bool | None = None) -> Company:
        """Create a company and its outbox database.

        An outbox file already at that place (a company of that name was removed, or the data folder was
        restored) is not silently reattached: ``reuse=None`` raises OutboxExistsError saying what it holds,
        ``True`` takes it with its messages, ``False`` sets it aside (renamed with today's date) and starts empty.
        A refused add leaves no file behind.
        """
        name = check_name("company", name)
        path = Path(outbox_path).expanduser().absolute() if outbox_path else self.definitions.default_outbox_path(name)
        if path.exists() and not any(Path(c.outbox_path) == path for c in self.companies()):
            if reuse is None:
                raise OutboxExistsError(name.strip(), path, *_outbox_counts(path))
            if not reuse:
                set_aside(path, time.strftime("%Y-%m-%d", time.localtime(self.clock.now())))
        company = self.definitions.add_company(name, outbox_path)
        path = Path(company.outbox_path)
        existed = path.exists()
        try:
            self.outbox(company.name)
        except AutomailError:
            self.definitions.remove_company(company.name)
            if not existed:  # only a file this call created
                for leftover in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))):
                    leftover.unlink(missing_ok=True)
            raise
        return company

    def company_load(self, name: str) -> tuple[int, list[str], list[str]]:
        """(messages still to send, its tasks, those of them running now): what removing it would drop."""
        company = self.definitions.company(name)
        counts = self._outbox_of(company).counts()
        pending = counts[MessageStatus.QUEUED] + counts[MessageStatus.SENDING] + counts[MessageStatus.DEFERRED]
        tasks = [t.name for t in self.tasks(company.name)]
        return pending, tasks, [t for t in tasks if self.lock_for(t).is_held_elsewhere()]

    def remove_company(self, name: str) -> tuple[Company, Path | None]:
        """Remove a company and its tasks (refused while one runs); its outbox file is kept, renamed with
        today's date (NAME.removed-YYYY-MM-DD.sqlite3 beside it). Returns the company and that file."""
        company = self.definitions.company(name)
        _pending, tasks, running = self.company_load(company.name)
        if running:
            raise InputError(
                "company",
                f"{company.name!r} cannot be removed while its task(s) {', '.join(running)} are sending",
                fix="stop those tasks first (or the AutoMail that runs them)",
            )
        for task in tasks:
            self.remove_task(task)
        self.definitions.remove_company(company.name)
        with self._outbox_lock:
            box = self._outboxes.pop(company.outbox_path, None)
        if box is not None:
            box.close()
        kept = set_aside(Path(company.outbox_path), time.strftime("%Y-%m-%d", time.localtime(self.clock.now())))
        return company, kept

    def outbox(self, company_name: str) -> Outbox:
        """The outbox of a company (opened once per process)."""
        return self._outbox_of(self.definitions.company(company_name))

    def _outbox_of(self, company: Company) -> Outbox:
        with self._outbox_lock:
            box = self._outboxes.get(company.outbox_path)
            if box is None:
                box = Outbox(company.outbox_path, company.name, read_only=self.read_only)
                if self._query_watch is not None:
                    box.watch(self._query_watch[1], self._query_watch[0])
                self._outboxes[company.outbox_path] = box
            return box

    def watch_queries(self, callback: QueryObserver | None, thread: threading.Thread | None = None) -> None:
        """Report (sql, wall s, CPU s) of every outbox query run on ``thread`` (default: this one), in every
        outbox this service opens; None stops.  The UI watches its Tk thread."""
        target = thread or threading.current_thread()
        with self._outbox_lock:
            self._query_watch = (target, callback) if callback is not None else None
            for box in self._outboxes.values():
                box.watch(callback, target)

    # ---- tasks ---------------------------------------------------------------------
    def tasks(self, company: str | None = None) -> list[Task]:
        tasks = self.definitions.tasks()
        if company is not None:
            tasks = [t for t in tasks if t.company.lower() == company.lower()]
        return tasks

    def task(self, name: str) -> Task:
        return self.definitions.task(name)

    def add_task(self, task: Task, password: str | None = None) -> Task:
        """Validate and store a task; its password goes to the keyring only. All or nothing."""
        task = task.validate()
        self.definitions.company(task.company)
        if any(t.name.lower() == task.name.lower() for t in self.definitions.tasks()):
            raise InputError("task", f"a task named {task.name!r} exists already", fix="choose another name")
        if password:
            secrets.set_password(task.name, password)
        try:
            return self.definitions.add_task(task)
        except BaseException:
            if password:
                secrets.delete_password(task.name)
            raise

    def edit_task(self, name: str, change: Callable[[Task], Task], password: str | None = None) -> Task:
        """Change a task; a new password is stored first and bumps the task's secret revision."""
        current = self.definitions.task(name)
        candidate = change(current).validate()  # refuse bad input before touching the keyring
        if candidate.name != current.name:  # keyring entry, outbox records and lock move with it
            current = self.rename_task(current.name, candidate.name)
            name = current.name
        if password:
            secrets.set_password(current.name, password)

        def apply(t: Task) -> Task:
            updated = change(t)
            return replace(updated, secret_rev=t.secret_rev + 1) if password else updated

        task = self.definitions.update_task(name, apply)
        self._poke()
        return task

    def overlapping(self, task: Task) -> list[Task]:
        """Other tasks that would take the same messages as ``task`` (see Task.shares_messages_with)."""
        return [t for t in self.tasks(task.company) if task.shares_messages_with(t)]

    def rename_task(self, old: str, new: str) -> Task:
        """Rename a task with its password, state and history; all or nothing (see engine/rename.py)."""
        task = rename.rename_task(self.definitions, self.outbox, self.lock_for, lock_dir(self.home), old, new.strip())
        self._poke()
        return task

    def remove_task(self, name: str) -> Task:
        """Delete a task and its password (a running engine stops it within a second)."""
        task = self.definitions.remove_task(name)
        secrets.delete_password(task.name)
        try:
            box = self.outbox(task.company)
            box.delete_task_state(task.name)
            # A message the task had claimed when it was killed would otherwise stay "sending".
            if not self.lock_for(task.name).is_held_elsewhere():
                box.recover(task.name, self.clock.now())
        except AutomailError:
            pass
        self._poke()
        return task

    def has_password(self, name: str) -> bool:
        return secrets.get_password(name) is not None

    def start_task(self, name: str) -> Task:
        """Enable a task; also clears a sticky login/TLS/sender error."""
        task = self.definitions.update_task(name, lambda t: replace(t, enabled=True, start_seq=t.start_seq + 1))
        self._poke()
        return task

    def stop_task(self, name: str) -> Task:
        """Disable a task (the engine finishes the message in flight)."""
        task = self.definitions.update_task(name, lambda t: replace(t, enabled=False))
        self._poke()
        return task

    def start_all(self) -> list[Task]:
        tasks = self.definitions.set_all_enabled(True, self.computer, self.user)
        self._poke()
        return tasks

    def stop_all(self) -> list[Task]:
        tasks = self.definitions.set_all_enabled(False, self.computer, self.user)
        self._poke()
        return tasks

    def test_task(
        self,
        task: Task | str,
        password: str | None = None,
        *,
        timeout: float = TEST_TIMEOUT_S,
        cancel: threading.Event | None = None,
    ) -> str:
        """Connect, secure and log in once with a task's settings; return what the server said.

        Gives up after ``timeout`` seconds in all (a server that accepts the connection but
        never greets would otherwise hold the test for the task's full timeouts), or as soon
        as ``cancel`` is set. Runs its own short event loop: call it from a worker thread in a GUI.
        """
        if isinstance(task, str):
            task = self.definitions.task(task)
        task = task.validate()
        if password is None and task.smtp.username:
            password = secrets.get_password(task.name)
        where = f"{task.smtp.host}:{task.smtp.port}"
        import asyncio

        from .smtp import SmtpSession

        async def probe() -> str:
            session = SmtpSession(task.smtp, password)
            greeting = await session.connect()
            await session.close()
            return greeting

        async def until_done() -> str:
            job = asyncio.ensure_future(probe())
            try:
                async with asyncio.timeout(timeout):
                    while not job.done():
                        if cancel is not None and cancel.is_set():
                            raise AutomailError(f"the connection test with {where} was cancelled")
                        await asyncio.wait({job}, timeout=0.1)
            finally:
                job.cancel()  # a no-op once it is done
            return job.result()

        try:
            greeting = asyncio.run(until_done())
        except TimeoutError:
            raise SmtpError(
                f"the SMTP server {where} did not answer within {timeout:g} s", kind=FaultKind.TASK_RETRY, fix=TEST_FIX
            ) from None
        except SmtpError as exc:
            if exc.kind is not FaultKind.TASK_RETRY:
                raise
            # The task's own words say it keeps retrying; a one-off test does not.
            raise SmtpError(exc.message, kind=exc.kind, code=exc.code, fix=TEST_FIX) from exc
        login = f", logged in as {task.smtp.username}" if task.smtp.username else ""
        return f"Connected to {task.smtp.host}:{task.smtp.port} ({task.smtp.security}){login}. Server: {greeting}"

    def send_test_email(self, task: Task, to: str, password: str | None = None) -> str:
        """Send one test e-mail now, outside the outbox and the throttle; return the server's reply."""
        task = task.validate()
        if password is None and task.smtp.username:
            password = secrets.get_password(task.name)
        msg = compose(
            to=[to],
            subject=f"AutoMail test from task {task.name}",
            text=f"This is a test e-mail sent by AutoMail task {task.name!r} on {self.computer}.",
            sender=task.smtp.sender,
            now=self.clock.now(),
        )
        return self.send_now(task, msg.raw, msg.recipients, password)

    def send_now(self, task: Task, raw: bytes, recipients: Sequence[str], password: str | None = None) -> str:
        """Send one message now through ``task``'s server, outside the outbox and the throttle
        (the task's From/Reply-To are added as at send time); return the server's reply."""
        task = task.validate()
        if password is None and task.smtp.username:
            password = secrets.get_password(task.name)
        raw = with_sender_headers(raw, task.smtp.sender, task.smtp.reply_to)
        import asyncio

        from .smtp import SmtpSession

        async def deliver() -> str:
            session = SmtpSession(task.smtp, password)
            try:
                result = await session.send(task.smtp.sender_address, tuple(recipients), raw)
            finally:
                await session.close()
            return result.reply

        return asyncio.run(deliver())

    # ---- messages -------------------------------------------------------------------
    def enqueue(
        self,
        company: str,
        messages: Sequence[NewMessage],
        *,
        mailing: str | None = None,
        sources: Sequence[str] = (),
        not_before: float | None = None,
    ) -> list[int]:
        """Queue already prepared messages in one transaction (as one mailing when ``mailing`` is named)."""
        if not messages:
            raise InputError("messages", "nothing to queue", fix="give at least one message")
        box = self.outbox(company)
        if mailing is None and not_before is None:
            ids = box.enqueue(messages, self.clock.now())
        else:
            ids = box.enqueue(messages, self.clock.now(), mailing=mailing, sources=sources, not_before=not_before)
        self._poke()
        return ids

    def enqueue_raw(
        self,
        company: str,
        items: Iterable[tuple[str, bytes]],
        tag: str = "",
        *,
        mailing: str | None = None,
        not_before: float | None = None,
        allow_duplicate_id: bool = False,
        mailing_sources: Sequence[str] | None = None,
    ) -> list[int]:
        """Validate every (source name, MIME bytes) pair, then queue all or nothing.

        A Message-ID already in the outbox or twice in the batch is refused unless
        ``allow_duplicate_id``: receivers drop or thread a second message with the same ID.
        ``mailing_sources``: what the mailing records it was made from (default: every source name),
        e.g. the folder a user gave rather than its 30,000 files.
        """
        box = self.outbox(company)
        prepare = self.preparer(company, tag)
        prepared, sources = [], []
        for source, raw in items:
            prepared.append(prepare(source, raw))
            sources.append(source)
        if not allow_duplicate_id:
            self._refuse_duplicate_ids(box, sources, prepared)
        if mailing_sources is not None:
            sources = list(mailing_sources)
        return self.enqueue(company, prepared, mailing=mailing, sources=sources, not_before=not_before)

    @staticmethod
    def _refuse_duplicate_ids(
        box: Outbox,
        sources: Sequence[str],
        messages: Sequence[NewMessage],
        fix: str = "give each message its own Message-ID (or remove it), or pass --allow-duplicate-id",
    ) -> None:
        known = box.known_message_ids(list(dict.fromkeys(m.message_id for m in messages)))
        seen: dict[str, str] = {}
        for source, msg in zip(sources, messages, strict=True):
            if msg.message_id in known:
                other = f"a message already in the outbox of {box.company}"
            elif msg.message_id in seen:
                other = seen[msg.message_id]
            else:
                seen[msg.message_id] = source
                continue
            raise InputError(
                source,
                f"has the same Message-ID {msg.message_id} as {other}",
                fix=fix,
            )

    def preparer(self, company: str, tag: str = "") -> Callable[[str, bytes], NewMessage]:
        """The gate every ready-made message passes, `automail enqueue` and the pickup folder alike:
        (source name, MIME bytes) → a message to queue, or InputError."""
        limit, now, sender = max_message_bytes(), self.clock.now(), self.sender_for(company, tag)
        return lambda source, raw: prepare_raw(raw, source, tag, limit, now=now, default_sender=sender)

    def _pickup_gate(self, company: Company) -> Callable[[str, bytes], NewMessage]:
        """``enqueue``'s gate for one file at a time: the preparer, then the Message-ID checks (against the
        outbox and the files before it in this pass)."""
        box, prepare = self._outbox_of(company), self.preparer(company.name)
        seen: dict[str, tuple[str, NewMessage]] = {}
        # The pickup folder has no options: the fix says what its writer can do instead.
        fix = (
            "give the message a Message-ID of its own (or none: AutoMail then adds one) and drop it in the "
            "pickup folder again; if it really must go out twice, queue the file from the rejected folder with "
            f'automail enqueue --company "{company.name}" --allow-duplicate-id FILE'
        )

        def gate(source: str, raw: bytes) -> NewMessage:
            msg = prepare(source, raw)
            earlier = seen.get(msg.message_id)
            if earlier is not None:
                self._refuse_duplicate_ids(box, [earlier[0], source], [earlier[1], msg], fix)
            self._refuse_duplicate_ids(box, [source], [msg], fix)
            seen[msg.message_id] = (source, msg)
            return msg

        return gate

    def pickup_folder(self, company: str) -> Path:
        """Where other programs drop .eml files for a company (see automail/intake/pickup.py)."""
        return pickup_dir(self.home, self.definitions.company(company).name)

    def ingest_pickup(self) -> PickupReport:
        """Queue what waits in every company's pickup folder (the engine calls this every second)."""
        total = PickupReport()
        for comp in self.definitions.companies():
            folder = pickup_dir(self.home, comp.name)
            folder.mkdir(parents=True, exist_ok=True)
            if not dropped_files(folder):
                continue
            report = ingest(folder, self._outbox_of(comp), self._pickup_gate(comp), self.clock.now)
            log.info(
                "pickup %s: %d queued, %d rejected, %d already queued",
                comp.name, report.queued, report.rejected, report.duplicates,
            )  # fmt: skip
            total.queued += report.queued
            total.rejected += report.rejected
            total.duplicates += report.duplicates
        return total

    def send(
        self,
        company: str,
        *,
        to: Sequence[str],
        subject: str,
        cc: Sequence[str] = (),
        bcc: Sequence[str] = (),
        text: str | None = None,
        html: str | None = None,
        attachments: Sequence[Path] = (),
        sender: str = "",
        tag: str = "",
    ) -> int:
        """Compose a message from parts (see message.compose) and queue it.

        Without ``sender`` the message gets the sending task's From at send time, and its
        Message-ID that sender's domain now.
        """
        self.definitions.company(company)
        msg = compose(
            to=to,
            subject=subject,
            cc=cc,
            bcc=bcc,
            text=text,
            html=html,
            attachments=attachments,
            sender=sender,
            tag=tag,
            max_bytes=max_message_bytes(),
            now=self.clock.now(),
            default_sender=self.sender_for(company, tag),
        )
        return self.enqueue(company, [msg])[0]

    def sender_for(self, company: str, tag: str) -> str:
        """The sender of the task that will send a message of ``company`` with ``tag`` ("" if none):
        the From a message without one gets at send time, so its Message-ID takes that domain."""
        tasks = self.tasks(company)
        in_scope = [t for t in tasks if not t.tags or tag in t.tags]
        return next((t.smtp.sender for t in in_scope or tasks), "")

    def messages(
        self, company: str, status: MessageStatus | None = None, search: str = "", limit: int = -1, offset: int = 0
    ) -> list[StoredMessage]:
        return self.outbox(company).list(status, search, limit, offset)

    def sending_task(self, company: str, msg: StoredMessage) -> Task | None:
        """The task that sent a message, or the one that would send it (its scope takes the message's
        tag; tasks of this computer first); None when no task would."""
        if msg.task:
            return next((t for t in self.tasks(company) if t.name.lower() == msg.task.lower()), None)
        takers = [t for t in self.tasks(company) if not t.tags or msg.tag in t.tags]
        takers.sort(key=lambda t: (not t.runs_here(self.computer, self.user), not t.enabled, t.name.lower()))
        return takers[0] if takers else None

    def retry(self, company: str, ids: Sequence[int] | None) -> int:
        """Queue failed messages again (all failed ones when ids is None)."""
        count = self.outbox(company).retry(None if ids is None else check_message_ids(ids), self.clock.now())
        self._poke()
        return count

    def cancel(self, company: str, ids: Sequence[int]) -> int:
        """Cancel queued or deferred messages; an id given twice counts once."""
        return self.outbox(company).cancel(check_message_ids(ids), self.clock.now())

    # ---- mailings ------------------------------------------------------------------------
    def mailings(self, company: str | None = None) -> list[Mailing]:
        """The mailings of one company, or of every company (oldest first within each)."""
        comps = [self.definitions.company(company)] if company else self.definitions.companies()
        return [m for comp in comps for m in self._outbox_of(comp).mailings()]

    def find_mailing(self, name: str, company: str | None = None) -> Mailing:
        """A mailing by name; without ``company`` the name must be unique across the companies."""
        if company:
            return self.outbox(company).mailing(name)
        found = [m for m in self.mailings() if m.name.casefold() == name.strip().casefold()]
        if not found:
            raise NotFoundError("mailing", f"there is no mailing named {name!r}", fix="see `automail mailing list`")
        if len(found) > 1:
            raise InputError(
                "mailing",
                f"companies {', '.join(repr(m.company) for m in found)} each have a mailing named {name!r}",
                fix="say which one with --company",
            )
        return found[0]

    def mailing_failures(self, mailing: Mailing, limit: int = 100) -> list[StoredMessage]:
        """The failed messages of a mailing, oldest first."""
        return self.outbox(mailing.company).mailing_messages(mailing.name, MessageStatus.FAILED, limit)

    def change_mailing(self, action: MailingAction, name: str, company: str | None = None) -> tuple[Mailing, int]:
        """Pause, resume, cancel or retry the failed messages of a mailing; the mailing after it and how many
        messages the action changed.  Other mailings are not touched."""
        found = self.find_mailing(name, company)
        box, now = self.outbox(found.company), self.clock.now()
        change = {
            MailingAction.PAUSE: box.pause_mailing,
            MailingAction.RESUME: box.resume_mailing,
            MailingAction.CANCEL: box.cancel_mailing,
            MailingAction.RETRY_FAILED: box.retry_mailing,
        }[action]
        count = change(found.name, now)
        self._poke()
        return box.mailing(found.name), count

    # ---- status --------------------------------------------------------------------------
    def status(self, company: str | None = None, tasks: Sequence[Task] | None = None) -> list[TaskStatus]:
        """Every task's persisted state and counts (works with or without a running engine).

        ``tasks``: only these (already read) tasks instead of all tasks of ``company``.
        """
        now = self.clock.now()
        result = []
        companies = {c.name.lower(): c for c in self.definitions.companies()}
        running = self._engine.running_tasks() if self._engine is not None else {}
        for task in tasks if tasks is not None else self.tasks(company):
            comp = companies.get(task.company.lower())
            if comp is None:
                continue
            box = self._outbox_of(comp)
            record = box.task_state(task.name)
            state = record.state if record else TaskState.STOPPED
            reason = record.reason if record and record.state is TaskState.ERROR else ""
            if state in (TaskState.CONNECTING, TaskState.RUNNING, TaskState.WAITING) and task.name not in running:
                # Persisted as running, but no engine holds the task: it was killed or has exited.
                if not self.lock_for(task.name).is_held_elsewhere():
                    state = TaskState.STOPPED
            counts = box.counts(task.tags)
            result.append(
                TaskStatus(
                    task=task.name,
                    company=comp.name,
                    state=state,
                    queued=counts[MessageStatus.QUEUED] + counts[MessageStatus.SENDING],
                    deferred=counts[MessageStatus.DEFERRED],
                    sent_last_hour=box.sent_count(task.name, now - 3600),
                    sent_last_24h=box.sent_count(task.name, now - 86400),
                    failed=box.failed_count(task.name, task.tags),
                    last_error=reason,
                    updated_at=record.updated_at if record else None,
                    pid=record.pid if record else None,
                    fault=record.fault if record and state is TaskState.ERROR else None,
                )
            )
        return result

    def sending_history(self, company: str, task: str | None = None, hours: int = 24) -> SendingHistory:
        """Sent and failed per clock hour over the last ``hours`` (the current hour last), for one task
        or the whole company, with the hourly limit and daily cap in force."""
        tasks = [self.task(task)] if task is not None else self.tasks(company)
        start = hour_start(self.clock.now()) - (hours - 1) * 3600
        counts = self.outbox(company).hourly_activity([t.name for t in tasks], start, hours)
        rate, cap = _limits_in_force(tasks if task is not None else [t for t in tasks if t.enabled] or tasks)
        return SendingHistory(
            start, tuple(s for s, _f in counts), tuple(f for _s, f in counts), rate_per_hour=rate, daily_cap=cap
        )

    def problems(self) -> list[tuple[str, str, str]]:
        """(company, task, reason) of every task in error, in every company; reads no message counts."""
        companies = {c.name.lower(): c for c in self.definitions.companies()}
        found = []
        for task in self.definitions.tasks():
            company = companies.get(task.company.lower())
            record = self._outbox_of(company).task_state(task.name) if company is not None else None
            if company is not None and record is not None and record.state is TaskState.ERROR and record.reason:
                found.append((company.name, task.name, record.reason))
        return sorted(found, key=lambda p: (p[0].lower(), p[1].lower()))

    def pending(self, tasks: Sequence[Task]) -> int:
        """Messages still queued, sending or deferred in the scope of the given tasks."""
        total = 0
        for task in tasks:
            counts = self.outbox(task.company).counts(task.tags)
            total += counts[MessageStatus.QUEUED] + counts[MessageStatus.SENDING] + counts[MessageStatus.DEFERRED]
        return total

    def held(self, tasks: Sequence[Task]) -> int:
        """Messages in the scope of the given tasks that a paused mailing holds (not sent until resumed)."""
        return sum(self.outbox(task.company).held_count(task.tags) for task in tasks)

    def local_tasks(self) -> list[Task]:
        """Tasks assigned to this computer (and this OS user, where they name one)."""
        return self.definitions.local_tasks(self.computer, self.user)

    # ---- engine ------------------------------------------------------------------------
    def lock_for(self, task_name: str) -> TaskLock:
        return TaskLock(lock_dir(self.home), task_name)

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def engine_running(self) -> bool:
        return self._engine is not None and self._engine.running

    def start_engine(self) -> Engine:
        """Start sending in the background (the "server")."""
        if self._engine is None or not self._engine.running:
            from .runtime import Engine, EngineHooks

            hooks = EngineHooks(
                outbox_for=self._outbox_of,
                lock_for=self.lock_for,
                emit=self._emit,
                session_factory=self._session_factory,
                pickup=self.ingest_pickup,
            )
            self._engine = Engine(self.definitions, hooks, self.clock, self.computer, self.user)
            self._engine.start()
            self._emit(EngineEvent(EventKind.ENGINE_STARTED, "", ""))
        return self._engine

    def stop_engine(self) -> bool:
        """Stop sending, finishing the messages in flight within the shutdown budget
        (``runtime.SHUTDOWN_BUDGET_S``); False if the engine thread is still running."""
        if self._engine is None:
            return True
        ok = self._engine.stop()
        self._emit(EngineEvent(EventKind.ENGINE_STOPPED, "", ""))
        return ok

    def _poke(self) -> None:
        if self._engine is not None:
            self._engine.poke()

    def close(self) -> None:
        """Stop the engine and close every database connection (unless the engine still uses them)."""
        if not self.stop_engine():
            # Closing would pull the connections from under the engine thread; the process is
            # about to end, which closes them anyway.
            log.warning("the engine did not stop in time: its outbox connections are left open")
            return
        with self._outbox_lock:
            for box in self._outboxes.values():
                box.close()
            self._outboxes.clear()


def _limits_in_force(tasks: Sequence[Task]) -> tuple[int | None, int | None]:
    """The combined hourly limit and daily cap of tasks: tasks sharing an SMTP account share the
    strictest limit (one throttle bucket), separate accounts add up; one unlimited account means none."""
    if not tasks:
        return None, None
    by_account: dict[str, list[Task]] = {}
    for t in tasks:
        by_account.setdefault(t.smtp.account_key, []).append(t)
    rates = [min((t.rate_per_hour for t in g if t.rate_per_hour), default=None) for g in by_account.values()]
    caps = [min((t.daily_cap for t in g if t.daily_cap), default=None) for g in by_account.values()]
    rate = None if None in rates else sum(r for r in rates if r is not None)
    cap = None if None in caps else sum(c for c in caps if c is not None)
    return rate, cap


def _outbox_counts(path: Path) -> tuple[int, int]:
    """(messages, messages still to send) in an outbox file that no company uses."""
    box = Outbox(path, path.stem)
    try:
        counts = box.counts()
    finally:
        box.close()
    pending = counts[MessageStatus.QUEUED] + counts[MessageStatus.SENDING] + counts[MessageStatus.DEFERRED]
    return sum(counts.values()), pending
