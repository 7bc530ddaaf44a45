"""One task's loop: claim → wait for the bucket → send → classify → record; it never dies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar

from automail.clock import Clock
from automail.errors import AutomailError, FaultKind, SmtpError
from automail.message import with_sender_headers
from automail.models import (
    Company,
    EngineEvent,
    EventKind,
    EventSink,
    Mailing,
    MessageStatus,
    Task,
    TaskState,
)
from automail.store.outbox import ClaimedMessage, Outbox

from .outcome import Outcome, classify
from .smtp import SmtpSession
from .throttle import Throttle
from .window import Windows

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # how often an idle worker looks for messages another process queued
IDLE_CLOSE_S = 20.0  # close the SMTP connection after this long without sending
UNREACHABLE_BACKOFF_S = (15, 30, 60, 120, 300, 600, 900)
STEP_ERROR_BACKOFF_S = 5.0
CLAIM_BATCH = 32  # messages an unlimited task claims per transaction

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class WorkerStatus:
    """What the worker is doing now."""

    state: TaskState = TaskState.STOPPED
    reason: str = ""
    fault: FaultKind | None = None
    code: int | None = None


@dataclass
class _Unrecorded:
    """A result not yet committed, and its commit once started (in the worker's I/O thread)."""

    event: EngineEvent
    commit: Callable[[], None]
    future: concurrent.futures.Future[bool] | None = None  # its result: whether the journal was folded in
    mailing_id: int | None = None  # the message's mailing: is it finished once this is committed?
    fold: bool = False  # after the commit, fold the results journal into the messages


class _Commit:
    """Awaiting a commit running in the I/O thread.  A commit that is already done is not handed to
    the event loop at all (a thread-safe wake-up per message costs two system calls and a loop
    pass).  One still running wakes a plain loop future from the I/O thread when it ends: one
    thread-safe call and two loop passes, where ``shield(wrap_future(…))`` took three passes and
    two more futures chained by callbacks.  Cancelling the wait never cancels the commit (the
    waiter is ours alone; the commit's own future is not touched)."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[bool]) -> None:
        self.future = future

    def __await__(self) -> Generator[Any, None, bool]:
        future = self.future
        if not future.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            future.add_done_callback(partial(_wake_from_thread, loop, waiter))
            yield from waiter.__await__()
        return future.result()


def _wake_from_thread(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None], _done: object) -> None:
    """In the I/O thread (or at once, if the commit was done already): wake whoever waits for ``waiter``."""
    with contextlib.suppress(RuntimeError):  # the loop has ended meanwhile: nobody waits
        loop.call_soon_threadsafe(_set_done, waiter)


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # a cancelled wait stays cancelled
        waiter.set_result(None)


def mailing_end_event(mailing: Mailing, task: str) -> EngineEvent:
    """The notice of a mailing's end: cancelled if the user cancelled it, else finished."""
    kind = EventKind.MAILING_CANCELLED if mailing.was_cancelled else EventKind.MAILING_FINISHED
    return EngineEvent(kind, task, mailing.company, mailing=mailing.name, progress=mailing)


class Worker:
    """Sends the messages of one task.  ``step(now)`` does one unit of work and
    says how long to sleep; ``run()`` repeats it until ``stop()``.

    Every outbox call runs in the worker's own I/O thread (``_db``), never on the event loop:
    a write that waits for the busy timeout, or a slow disk, holds up this task only.
    """

    def __init__(
        self,
        task: Task,
        company: Company,
        outbox: Outbox,
        throttle: Throttle,
        clock: Clock,
        emit: EventSink,
        password: str | None,
        session_factory: Callable[[Task, str | None], SmtpSession] | None = None,
    ) -> None:
        self.task = task
        self.company = company
        self.outbox = outbox
        self.throttle = throttle
        self.windows = Windows(task.windows)
        self.clock = clock
        self.emit = emit
        factory = session_factory or (lambda t, p: SmtpSession(t.smtp, p))
        self.session = factory(task, password)
        self.status = WorkerStatus()
        self.wake = asyncio.Event()
        self.stopping = False
        self.finished = False  # stopped itself (sticky task error)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"automail-io-{task.name[:20]}")
        self._inflight: set[concurrent.futures.Future[Any]] = set()
        self._had_work = False
        self._last_send = 0.0
        self._unreachable = 0
        self._retry_at = 0.0
        self._logged_in = False  # "Connecting…" until the server has let this task in
        self._held: deque[ClaimedMessage] = deque()
        # The last result, not yet durable: its commit starts in the I/O thread as soon as the result
        # is known and runs while the next message is prepared and its envelope is on the wire; that
        # message's final dot waits for it (see ``transaction``), and so does ``flush``.
        self._unrecorded: _Unrecorded | None = None
        # Results appended to the outbox's results journal (the rest of a batch was held): folded into
        # their messages when nothing is held any more, or before a mailing's end is looked for.
        self._journaled = False
        self.recheck_held = False  # another connection changed the outbox: a held message's mailing may be stopped
        self._seen_version: int | None = None  # the outbox's data_version when the I/O thread last looked
        self._mail_from = task.smtp.sender_address
        self._account = task.smtp.account_key

    # ---- the outbox, off the event loop --------------------------------------------
    async def _db(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run an outbox call in this worker's I/O thread."""
        return await self._in_io(partial(fn, *args, **kwargs))

    def _in_io(self, call: Callable[[], _R]) -> asyncio.Future[_R]:
        return asyncio.wrap_future(self._submit(call))

    def _submit(self, call: Callable[[], _R]) -> concurrent.futures.Future[_R]:
        future = self._io.submit(call)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        return future

    @property
    def io_busy(self) -> bool:
        """Whether an outbox call is still running in the I/O thread (even if nobody awaits it now)."""
        return any(not f.done() for f in list(self._inflight))

    # ---- state -----------------------------------------------------------------
    async def _set_state(
        self, state: TaskState, reason: str = "", fault: FaultKind | None = None, code: int | None = None
    ) -> None:
        new = WorkerStatus(state, reason, fault, code)
        if new == self.status:
            return
        self.status = new
        await self._db(
            self.outbox.set_task_state,
            self.task.name,
            state,
            self.clock.now(),
            reason,
            fault,
            code,
            self.task.fingerprint,
        )
        self.emit(
            EngineEvent(
                EventKind.STATE_CHANGED,
                self.task.name,
                self.company.name,
                state=state,
                detail=reason,
                fault=fault,
            )
        )

    async def fail_to_start(self, error: AutomailError) -> None:
        """Record why the task could not even start (no password, locked by another process…)."""
        code = error.code if isinstance(error, SmtpError) else None
        self.finished = True
        try:
            await self._set_state(TaskState.ERROR, str(error), FaultKind.TASK_FATAL, code)
        finally:
            self._io.shutdown(wait=False)

    # ---- the loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Repeat ``step`` until stopped; every step's crash is logged and backed off."""
        try:
            await self._db(self.outbox.recover, self.task.name, self.clock.now())
            await self._db(self.outbox.prune_send_log, self.clock.now())  # only the last day is needed
            await self._set_state(TaskState.CONNECTING)
            while not self.stopping and not self.finished:
                try:
                    sleep = await self.step(self.clock.now())
                except Exception:
                    log.exception("task %s: unexpected error in the sending loop", self.task.name)
                    sleep = STEP_ERROR_BACKOFF_S
                if sleep > 0 and not self.stopping:
                    await self._sleep(sleep)
        finally:
            try:
                await self.flush()
                await self._release_held(self.clock.now())
                await self.session.close()
                if not self.finished:
                    await self._set_state(TaskState.STOPPED)
            finally:
                with contextlib.suppress(Exception):
                    await self._db(self.outbox.close_thread_connection)
                self._io.shutdown(wait=False)

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            pass

    def stop(self) -> None:
        """Finish the message in flight, then end ``run``."""
        self.stopping = True
        self.wake.set()

    # ---- recording results -----------------------------------------------------------
    def _start_commit(self) -> _Commit | None:
        """Start committing the last result in the I/O thread (if not started); what to await for it
        (None: nothing waits).

        The transaction calls this as its ``before_dot`` hook and awaits it before the final dot,
        so at most one delivered-but-unrecorded message exists at any time.
        """
        pending = self._unrecorded
        if pending is None:
            return None
        if pending.future is None:
            pending.future = self._submit(partial(self._commit_then_look, pending))
        return _Commit(pending.future)

    def _commit_then_look(self, pending: _Unrecorded) -> bool:
        """(I/O thread) Commit a result; then fold the results journal in if asked; then, if messages are
        held, see whether another connection committed since the claim — a pause or cancel from the
        Mailings window or `automail mailing`: the held messages' mailings are looked at before the next
        one is sent (``step``), not only at the engine's once-a-second look, by when an unlimited task
        would have sent the rest of its batch.  Returns whether the journal was folded in.

        Only the commit can fail this call: once it is done, the result is recorded, and a failed
        fold or look must not make the worker commit it again (``attempts`` would count twice)."""
        pending.commit()
        folded = False
        if pending.fold:
            try:
                self.outbox.apply_results()
                folded = True
            except AutomailError as exc:  # the rows are durable where they are; folded at the next chance
                log.warning("task %s: results not yet moved into their messages: %s", self.task.name, exc)
        if self._held:
            try:
                self._note_outside_changes()
            except AutomailError as exc:
                log.warning("task %s: cannot look for outside changes: %s", self.task.name, exc)
        return folded

    def _note_outside_changes(self, *, flag: bool = True) -> None:
        """(I/O thread) Note the outbox's data_version (changed only by other connections' commits)."""
        version = self.outbox.data_version()
        if version != self._seen_version:
            self._seen_version = version
            self.recheck_held = self.recheck_held or flag

    async def flush(self, sending: int | None = None) -> None:
        """Commit the last result now (a no-op when it is already durable), emit its event, and once
        nothing is held, fold the results journal into the messages.

        If the commit fails the result stays pending: the next flush tries again, and no
        further message is delivered meanwhile (its final dot waits for this commit).
        ``sending``: the mailing of a message this worker has sent but not recorded yet (see ``_keep``).
        """
        await self._report(await self._committed(), sending)
        if not self._held:
            await self._fold()

    async def _fold(self) -> None:
        """Fold the results journal into the messages (nothing is held): if this worker appended to it,
        and its last result is committed and reported (a pending one folds it in itself, see ``_keep``)."""
        if self._journaled and self._unrecorded is None:
            await self._db(self.outbox.apply_results)
            self._journaled = False

    async def _committed(self) -> _Unrecorded | None:
        """Wait for the last result's commit; the result, now durable and no longer pending (None: none)."""
        pending = self._unrecorded
        commit = self._start_commit()
        if pending is None or commit is None:
            return None
        try:
            folded = await commit
        except asyncio.CancelledError:
            raise  # the commit goes on in the I/O thread; the next flush waits for it
        except Exception:
            if pending.future is commit.future:
                pending.future = None  # try the commit again next time
            log.error("task %s: recording message %s failed", self.task.name, pending.event.message_id)
            raise
        if self._unrecorded is not pending:
            return None
        self._unrecorded = None
        if folded:
            self._journaled = False
        return pending

    async def _report(self, done: _Unrecorded | None, sending: int | None) -> None:
        """Emit a durable result's event; a mailing cancelled while its message was in flight ends now
        (the notice counts this message)."""
        if done is None:
            return
        self.emit(done.event)
        if done.mailing_id is not None and not self._holds(done.mailing_id, sending):
            ended = await self._db(self.outbox.end_mailing, done.mailing_id, self.clock.now())
            if ended is not None:
                self.emit(mailing_end_event(ended, self.task.name))

    def _holds(self, mailing_id: int, sending: int | None) -> bool:
        """Whether a message of this mailing is still ours in ``sending`` (held, or sent and not recorded).

        Its mailing cannot have ended then, so nobody need ask the outbox (``end_mailing`` would say
        None): an unlimited task asks once per claimed batch instead of once per message, which was a
        round trip to the I/O thread and back for every message (issue 12's end-to-end run).
        """
        return sending == mailing_id or any(c.message.mailing_id == mailing_id for c in self._held)

    async def _keep(
        self, event: EngineEvent, commit: Callable[[], None], mailing_id: int | None, journal: bool
    ) -> None:
        """Start committing a result in the I/O thread; the next final dot (or ``flush``) waits for it.

        Started at once, not when the next envelope is written: the commit's fsync then overlaps
        everything before the next final dot (the next claim, and the round trip of the envelope with DATA).
        The previous result is reported only after this one is registered: a failure while reporting
        it (its mailing's end) must not leave this delivered message without its commit.
        """
        done = await self._committed()  # normally long done: at most one result waits
        # A result written straight into its message also folds in what the journal holds: the batch's
        # results reach their messages at its end, or before a mailing's end is looked for.
        self._unrecorded = _Unrecorded(event, commit, mailing_id=mailing_id, fold=not journal and self._journaled)
        self._journaled = self._journaled or journal
        self._start_commit()
        await self._report(done, sending=mailing_id)

    async def _record(self, claimed: ClaimedMessage, outcome: Outcome, attempted: tuple[str, ...]) -> None:
        """The record step: the message's outcome, committed while the next message starts."""
        msg, now, box = claimed.message, self.clock.now(), self.outbox
        kind = {
            MessageStatus.SENT: EventKind.SENT,
            MessageStatus.DEFERRED: EventKind.DEFERRED,
            MessageStatus.FAILED: EventKind.FAILED,
        }[outcome.status]
        mailing = ""
        if kind is EventKind.FAILED and msg.mailing_id is not None:  # a failure names its mailing
            mailing = await self._db(box.mailing_name, msg.mailing_id)
        event = EngineEvent(
            kind, self.task.name, self.company.name, message_id=msg.id, detail=outcome.detail, recipients=attempted,
            mailing=mailing,
        )  # fmt: skip
        account, task = self._account, self.task.name
        # The next message is in hand: its final dot waits for this commit, so it is the journal's one
        # row, not the message's ~15 pages (see the outbox's schema 12); folded in when the batch ends,
        # or with the last held message of its mailing (whose end is then looked for, see ``_report``).
        journal = bool(self._held) and (msg.mailing_id is None or self._holds(msg.mailing_id, None))
        o = outcome
        mark: Callable[..., None]
        if o.status is MessageStatus.SENT:
            mark = partial(box.mark_sent, msg.id, now, o.reply, o.recipients, account, task)
        elif o.status is MessageStatus.DEFERRED:
            assert o.next_at is not None
            mark = partial(box.mark_deferred, msg.id, now, o.next_at, o.code, o.error, account, task, o.recipients)
        else:
            mark = partial(box.mark_failed, msg.id, now, o.code, o.error, account, task, o.recipients)
        await self._keep(event, partial(mark, journal=journal), msg.mailing_id, journal)

    @property
    def unreported_mailing(self) -> int | None:
        """The mailing of the last result while its event is not out yet (its end is ours to announce)."""
        pending = self._unrecorded
        return None if pending is None else pending.mailing_id

    async def _drop_stopped_held(self, now: float) -> None:
        """Give back the held messages of mailings paused or cancelled since they were claimed (by the
        Mailings window or another process): a held message has not left, so it must not go out."""
        self.recheck_held = False
        mailings = {m for c in self._held if (m := c.message.mailing_id) is not None}
        stopped = await self._db(self.outbox.stopped_mailings, sorted(mailings))
        if stopped:
            back = [c.message.id for c in self._held if c.message.mailing_id in stopped]
            self._held = deque(c for c in self._held if c.message.mailing_id not in stopped)
            await self._db(self.outbox.release, back, now)  # held again if paused, cancelled if cancelled

    async def _release_held(self, now: float, *extra: int) -> None:
        """Give back every held message (and ``extra``); nothing is held then, so the journal is folded in
        (the last result must be committed first: ``flush``)."""
        ids = [c.message.id for c in self._held] + list(extra)
        self._held.clear()
        if ids:
            await self._db(self.outbox.release, ids, now)
        await self._fold()

    # ---- one step: claim → wait → send → classify → record ---------------------------------
    async def step(self, now: float) -> float:
        """Do one unit of work at time ``now``; return seconds to sleep before the next."""
        if now < self._retry_at:
            return self._retry_at - now
        if not self._logged_in and (backoff := await self._log_in()) is not None:
            return backoff
        if not self._held:
            await self.flush()
        if (closed := self.windows.delay(now)) > 0:
            return await self._outside_windows(now, closed)
        delay = self.throttle.delay(now)
        if delay > 0:
            return await self._wait(now, delay)
        if self.recheck_held and self._held:
            await self._drop_stopped_held(now)
        claimed = self._held.popleft() if self._held else None
        if claimed is None:
            # The bucket slot is taken before the claim (an await): workers sharing the bucket
            # in this loop cannot both pass it.  It is given back when nothing was due.
            previous = self.throttle.take(now)
            claimed = await self._claim(now)
            if claimed is None:
                self.throttle.give_back(now, previous)
                return await self._nothing_due(now)
        else:
            self.throttle.take(now)
        self._had_work = True
        return await self._send(claimed)

    async def _log_in(self) -> float | None:
        """Connect and log in once at start (again after each failure), so "Running" means the server let
        us in; returns the back-off after a failure, None when logged in."""
        try:
            await self.session.ensure_connected()
        except SmtpError as exc:
            return await self._task_fault(exc, self.clock.now())
        self._logged_in = True
        await self._set_state(TaskState.RUNNING)
        return None

    async def _claim(self, now: float) -> ClaimedMessage | None:
        """Take the next due messages: a batch for an unlimited task, one for a throttled one."""
        size = CLAIM_BATCH if self.throttle.interval == 0 else 1
        task = self.task
        self._held.extend(await self._db(self._claim_in_io, task.name, now, task.tags, size))
        return self._held.popleft() if self._held else None

    def _claim_in_io(self, task: str, now: float, tags: tuple[str, ...], size: int) -> list[ClaimedMessage]:
        """(I/O thread) Claim, noting the outbox's version first: what others commit from then on
        (the claim saw all before it) is an outside change the held messages' mailings may have had."""
        self._note_outside_changes(flag=False)
        return self.outbox.claim_batch(task, now, tags, self._mail_from, size)

    async def _wait(self, now: float, delay: float) -> float:
        """The bucket says wait ``delay`` seconds: give back what is held and say why we wait."""
        await self.flush()  # the last result, so that releasing folds the journal in (a long wait: a daily cap)
        await self._release_held(now)  # claimed messages never wait in "sending"
        if await self._db(self.outbox.next_due, self.task.tags) is None:
            return await self._idle(now)
        # Normal spacing between sends is "running"; "waiting" is a cap that holds sending back.
        if delay > self.throttle.interval + 1.0:
            await self._set_state(TaskState.WAITING, f"sending limit reached ({self.task.cadence_text})")
        else:
            await self._set_state(TaskState.RUNNING)
        if delay > IDLE_CLOSE_S:
            await self.session.close()
        return delay

    async def _outside_windows(self, now: float, closed: float) -> float:
        """No sending window is open for ``closed`` seconds: hold nothing, say why we wait."""
        await self.flush()
        await self._release_held(now)
        if await self._db(self.outbox.next_due, self.task.tags) is None:
            return await self._idle(now)
        await self._set_state(TaskState.WAITING, f"outside its sending windows ({self.windows.text})")
        await self._close_if_idle(now)
        # Looked at again soon, not slept through: the clock may jump (sleep, a time-zone change).
        return min(closed, IDLE_POLL_S)

    async def _send(self, claimed: ClaimedMessage) -> float:
        """Send one claimed message to its pending recipients, then classify and record the result."""
        msg = claimed.message
        attempted = msg.pending_recipients
        if not attempted:  # nobody left to send to (a retried message that reached everyone)
            await self._record(claimed, classify(msg, claimed.queued_at, self.task, self.clock.now(), "", {}), ())
            return 0.0
        try:
            await self.session.ensure_connected()
        except SmtpError as exc:
            await self.flush()
            await self._release_held(self.clock.now(), msg.id)
            return await self._task_fault(exc, self.clock.now())
        await self._set_state(TaskState.RUNNING)
        raw = with_sender_headers(claimed.raw, self.task.smtp.sender, self.task.smtp.reply_to)
        try:
            # The previous result is being committed meanwhile; it is durable before
            # this message's final dot: at most one delivered-but-unrecorded message can exist
            # at any time (≤ 1 duplicate per crash).
            result = await self.session.send(self._mail_from, attempted, raw, self._start_commit)
        except SmtpError as exc:
            await self.flush()
            done = self.clock.now()
            self.throttle.end(done)
            if exc.kind in (FaultKind.TASK_FATAL, FaultKind.TASK_RETRY):
                await self._release_held(done, msg.id)
                return await self._task_fault(exc, done)
            outcome = classify(msg, claimed.queued_at, self.task, done, "", {}, exc)
        except BaseException:
            # Not the message's fault (e.g. the previous result could not be committed):
            # it goes back to the queue untouched, if the outbox lets us.
            with contextlib.suppress(Exception):
                await self._release_held(self.clock.now(), msg.id)
            raise
        else:
            done = self.clock.now()
            self.throttle.end(done)  # the next send is spaced from here (see Throttle)
            outcome = classify(msg, claimed.queued_at, self.task, done, result.reply, dict(result.refused))
            self._last_send = done
            self._unreachable = 0
        await self._record(claimed, outcome, attempted)
        return 0.0

    async def _nothing_due(self, now: float) -> float:
        due = await self._db(self.outbox.next_due, self.task.tags)
        if due is None:
            return await self._idle(now)
        await self._close_if_idle(now)
        await self._set_state(TaskState.WAITING, "waiting to retry deferred messages")
        return min(max(due - now, 0.0), IDLE_POLL_S)

    async def _idle(self, now: float) -> float:
        if self._had_work:
            counts = await self._db(self.outbox.counts, self.task.tags)
            if counts[MessageStatus.SENDING] == 0:
                self._had_work = False
                self.emit(EngineEvent(EventKind.QUEUE_DRAINED, self.task.name, self.company.name))
        await self._set_state(TaskState.RUNNING)
        await self._close_if_idle(now)
        return IDLE_POLL_S

    async def _task_fault(self, exc: SmtpError, now: float) -> float:
        log.warning("task %s: %s", self.task.name, exc)
        if exc.kind is FaultKind.TASK_FATAL:
            await self._set_state(TaskState.ERROR, str(exc), exc.kind, exc.code)
            self.finished = True
            return 0.0
        backoff = UNREACHABLE_BACKOFF_S[min(self._unreachable, len(UNREACHABLE_BACKOFF_S) - 1)]
        self._unreachable += 1
        self._retry_at = now + backoff
        # The reason stays the same across retries: one incident, one notification.
        await self._set_state(TaskState.ERROR, str(exc), exc.kind, exc.code)
        return float(backoff)

    async def _close_if_idle(self, now: float) -> None:
        if self.session.connected and now - self._last_send > IDLE_CLOSE_S:
            await self.session.close()
