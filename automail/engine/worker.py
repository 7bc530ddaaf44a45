"""One task's loop: claim → wait for the bucket → send → record; it never dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from automail.clock import Clock
from automail.errors import AutomailError, FaultKind, SmtpError
from automail.message import with_sender_headers
from automail.models import Company, EngineEvent, EventSink, MessageStatus, Task, TaskState
from automail.store.outbox import ClaimedMessage, Outbox

from .smtp import SmtpSession
from .throttle import Throttle

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # how often an idle worker looks for messages another process queued
IDLE_CLOSE_S = 20.0  # close the SMTP connection after this long without sending
UNREACHABLE_BACKOFF_S = (15, 30, 60, 120, 300, 600, 900)
STEP_ERROR_BACKOFF_S = 5.0
CLAIM_BATCH = 32  # messages an unlimited task claims per transaction


@dataclass
class WorkerStatus:
    """What the worker is doing now."""

    state: TaskState = TaskState.STOPPED
    reason: str = ""
    fault: str = ""
    code: int | None = None


class Worker:
    """Sends the messages of one task.  ``step(now)`` does one unit of work and
    says how long to sleep; ``run()`` repeats it until ``stop()``."""

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
        self.clock = clock
        self.emit = emit
        factory = session_factory or (lambda t, p: SmtpSession(t.smtp, p))
        self.session = factory(task, password)
        self.status = WorkerStatus()
        self.wake = asyncio.Event()
        self.stopping = False
        self.finished = False  # stopped itself (sticky task error)
        self._had_work = False
        self._last_send = 0.0
        self._unreachable = 0
        self._retry_at = 0.0
        self._held: deque[ClaimedMessage] = deque()
        # The last result, not yet committed: it is committed while the next message's
        # envelope is on the wire (see ``transaction``), or by ``flush``.
        self._unrecorded: tuple[EngineEvent, Callable[[], None]] | None = None
        self._mail_from = task.smtp.sender_address
        self._account = task.smtp.account_key

    # ---- state -----------------------------------------------------------------
    def _set_state(self, state: TaskState, reason: str = "", fault: str = "", code: int | None = None) -> None:
        new = WorkerStatus(state, reason, fault, code)
        if new == self.status:
            return
        self.status = new
        self.outbox.set_task_state(self.task.name, state, self.clock.now(), reason, fault, code, self.task.fingerprint)
        self.emit(
            EngineEvent(
                "state_changed",
                self.task.name,
                self.company.name,
                state=state,
                detail=reason,
                fault=fault,
            )
        )

    def fail_to_start(self, error: AutomailError) -> None:
        """Record why the task could not even start (no password, locked by another process…)."""
        code = error.code if isinstance(error, SmtpError) else None
        self._set_state(TaskState.ERROR, str(error), str(FaultKind.TASK_FATAL), code)
        self.finished = True

    # ---- the loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Repeat ``step`` until stopped; every step's crash is logged and backed off."""
        self.outbox.recover(self.task.name, self.clock.now())
        self._set_state(TaskState.RUNNING)
        try:
            while not self.stopping and not self.finished:
                try:
                    sleep = await self.step(self.clock.now())
                except Exception:
                    log.exception("task %s: unexpected error in the sending loop", self.task.name)
                    sleep = STEP_ERROR_BACKOFF_S
                if sleep > 0 and not self.stopping:
                    await self._sleep(sleep)
        finally:
            self.flush()
            self._release_held(self.clock.now())
            await self.session.close()
            if not self.finished:
                self._set_state(TaskState.STOPPED)

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

    def flush(self) -> None:
        """Commit the last result now (a no-op when it is already durable), then emit its event.

        If the commit fails the result stays pending: the next flush tries again, and no
        further message is delivered meanwhile (its final dot waits for this commit).
        """
        pending = self._unrecorded
        if pending is None:
            return
        event, commit = pending
        try:
            commit()
        except Exception:
            log.error("task %s: recording message %s failed", self.task.name, event.message_id)
            raise
        self._unrecorded = None
        self.emit(event)

    def _record(self, event: EngineEvent, fn: Callable[..., None], *args: object) -> None:
        """Keep a result to commit during the next message's envelope (or at ``flush``)."""
        self.flush()  # normally long done: at most one result waits
        self._unrecorded = (event, lambda: fn(*args))

    def _release_held(self, now: float, *extra: int) -> None:
        ids = [c.message.id for c in self._held] + list(extra)
        self._held.clear()
        if ids:
            self.outbox.release(ids, now)

    async def step(self, now: float) -> float:
        """Do one unit of work at time ``now``; return seconds to sleep before the next."""
        task = self.task
        if now < self._retry_at:
            return self._retry_at - now
        if not self._held:
            self.flush()
        delay = self.throttle.delay(now)
        if delay > 0:
            self._release_held(now)  # claimed messages never wait in "sending"
            if self.outbox.next_due(task.tags) is None:
                return await self._idle(now)
            # Normal spacing between sends is "running"; "waiting" is a cap that holds sending back.
            if delay > self.throttle.interval + 1.0:
                self._set_state(TaskState.WAITING, f"sending limit reached ({task.cadence_text})")
            else:
                self._set_state(TaskState.RUNNING)
            if delay > IDLE_CLOSE_S:
                await self.session.close()
            return delay
        if not self._held:
            # Unlimited tasks claim a batch in one transaction; throttled ones one at a time.
            # No await between the bucket check above and record() below, so workers sharing
            # a bucket in this loop cannot both pass it.
            size = CLAIM_BATCH if self.throttle.interval == 0 else 1
            self._held.extend(self.outbox.claim_batch(task.name, now, task.tags, self._mail_from, size))
            if not self._held:
                return await self._nothing_due(now)
        claimed = self._held.popleft()
        self.throttle.record(now)
        self._had_work = True
        msg = claimed.message
        try:
            await self.session.ensure_connected()
        except SmtpError as exc:
            self.flush()
            self._release_held(self.clock.now(), msg.id)
            return self._task_fault(exc, self.clock.now())
        self._set_state(TaskState.RUNNING)
        raw = with_sender_headers(claimed.raw, task.smtp.sender, task.smtp.reply_to)
        account = self._account
        try:
            # The previous result is committed while this envelope is on the wire, and before
            # this message's final dot: at most one delivered-but-unrecorded message can exist
            # at any time (≤ 1 duplicate per crash).
            result = await self.session.send(self._mail_from, msg.recipients, raw, self.flush)
        except SmtpError as exc:
            self.flush()
            done = self.clock.now()
            if exc.kind in (FaultKind.TASK_FATAL, FaultKind.TASK_RETRY):
                self._release_held(done, msg.id)
                return self._task_fault(exc, done)
            if exc.kind is FaultKind.TRANSIENT:
                attempts = msg.attempts + 1
                next_at = done + task.retry_delay(attempts)
                if next_at - claimed.queued_at <= task.max_age_s:
                    self._record(
                        self._msg_event("deferred", msg.id, str(exc), msg.recipients),
                        self.outbox.mark_deferred,
                        msg.id,
                        done,
                        next_at,
                        exc.code,
                        str(exc),
                        account,
                        task.name,
                    )
                    return 0.0
                reason = f"gave up after {attempts} attempts over {task.max_age_s // 3600} h: {exc}"
                self._fail(msg.id, done, exc.code, reason, msg.recipients)
                return 0.0
            self._fail(msg.id, done, exc.code, str(exc), msg.recipients)
            return 0.0
        except BaseException:
            # Not the message's fault (e.g. the previous result could not be committed):
            # it goes back to the queue untouched, if the outbox lets us.
            with contextlib.suppress(Exception):
                self._release_held(self.clock.now(), msg.id)
            raise
        done = self.clock.now()
        detail = result.reply
        if result.refused:
            detail += " (refused: " + ", ".join(f"{a} {r}" for a, r in result.refused.items()) + ")"
        self._record(
            self._msg_event("sent", msg.id, detail, msg.recipients),
            self.outbox.mark_sent,
            msg.id,
            done,
            result.reply,
            {addr: str(reply) for addr, reply in result.refused.items()},
            account,
            task.name,
        )
        self._last_send = done
        self._unreachable = 0
        return 0.0

    async def _nothing_due(self, now: float) -> float:
        due = self.outbox.next_due(self.task.tags)
        if due is None:
            return await self._idle(now)
        await self._close_if_idle(now)
        self._set_state(TaskState.WAITING, "waiting to retry deferred messages")
        return min(max(due - now, 0.0), IDLE_POLL_S)

    async def _idle(self, now: float) -> float:
        if self._had_work and self.outbox.counts(self.task.tags)[MessageStatus.SENDING] == 0:
            self._had_work = False
            self.emit(EngineEvent("queue_drained", self.task.name, self.company.name))
        self._set_state(TaskState.RUNNING)
        await self._close_if_idle(now)
        return IDLE_POLL_S

    def _fail(self, msg_id: int, now: float, code: int | None, reason: str, rcpts: tuple[str, ...]) -> None:
        event = self._msg_event("failed", msg_id, reason, rcpts)
        self._record(event, self.outbox.mark_failed, msg_id, now, code, reason, self._account, self.task.name)

    def _msg_event(self, kind: str, msg_id: int, detail: str, rcpts: tuple[str, ...]) -> EngineEvent:
        return EngineEvent(
            kind,
            self.task.name,
            self.company.name,
            message_id=msg_id,
            detail=detail,
            recipients=rcpts,
        )

    def _task_fault(self, exc: SmtpError, now: float) -> float:
        log.warning("task %s: %s", self.task.name, exc)
        if exc.kind is FaultKind.TASK_FATAL:
            self._set_state(TaskState.ERROR, str(exc), str(exc.kind), exc.code)
            self.finished = True
            return 0.0
        backoff = UNREACHABLE_BACKOFF_S[min(self._unreachable, len(UNREACHABLE_BACKOFF_S) - 1)]
        self._unreachable += 1
        self._retry_at = now + backoff
        # The reason stays the same across retries: one incident, one notification.
        self._set_state(TaskState.ERROR, str(exc), str(exc.kind), exc.code)
        return float(backoff)

    async def _close_if_idle(self, now: float) -> None:
        if self.session.connected and now - self._last_send > IDLE_CLOSE_S:
            await self.session.close()
