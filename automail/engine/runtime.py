"""The engine: one background thread with one asyncio loop running every task of this computer."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from automail import secrets
from automail.clock import Clock
from automail.errors import AutomailError, FaultKind, SmtpError, TaskLockedError
from automail.models import Company, EngineEvent, Task, TaskState
from automail.store.definitions import Definitions
from automail.store.outbox import Outbox

from .smtp import SmtpSession
from .tasklock import TaskLock
from .throttle import DAY, Throttle
from .worker import Worker

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0  # how often definitions and outboxes are checked for outside changes
LOCK_RETRY_S = 5.0  # how often a task run by another process is tried again (it may have quit)


@dataclass
class _Running:
    worker: Worker
    lock: TaskLock
    job: asyncio.Task[None]
    fingerprint: str


@dataclass
class EngineHooks:
    """How the engine reaches the rest of the program (all called from the engine thread)."""

    outbox_for: Callable[[Company], Outbox]
    lock_for: Callable[[str], TaskLock]
    emit: Callable[[EngineEvent], None]
    session_factory: Callable[[Task, str | None], SmtpSession] | None = None


class Engine:
    """Runs this computer's enabled tasks in a background thread until ``stop()``.

    Once a second it stats ``automail.json`` and asks each outbox for its
    ``PRAGMA data_version``: edits, starts, stops and enqueues made by other
    processes are noticed within that second, without busy polling.
    """

    def __init__(
        self,
        definitions: Definitions,
        hooks: EngineHooks,
        clock: Clock,
        computer: str,
        user: str,
    ) -> None:
        self.definitions = definitions
        self.hooks = hooks
        self.clock = clock
        self.computer = computer
        self.user = user
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._wake_event: asyncio.Event | None = None
        self._running: dict[str, _Running] = {}
        self._buckets: dict[str, Throttle] = {}
        self._data_versions: dict[str, int] = {}
        self._defs_mtime = -1.0
        self._locked: dict[str, float] = {}  # task run by another process -> when to try again
        self._started = threading.Event()

    # ---- control from any thread --------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the engine thread (no-op if it runs)."""
        if self.running:
            return
        self._started.clear()
        self._thread = threading.Thread(target=self._thread_main, name="automail-engine", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 15.0) -> bool:
        """Finish the messages in flight and stop; True if it ended within ``timeout``."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return True
        try:
            loop.call_soon_threadsafe(stop_event.set)
        except RuntimeError:  # loop already closed
            pass
        thread.join(timeout)
        return not thread.is_alive()

    def poke(self) -> None:
        """Look at definitions and outboxes now (after a change made in this process)."""
        loop, wake = self._loop, self._wake_event
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(self._force_reload)
            except RuntimeError:
                pass

    def running_tasks(self) -> dict[str, TaskState]:
        """Task name → current in-memory state (a snapshot; any thread)."""
        return {name: r.worker.status.state for name, r in list(self._running.items())}

    # ---- the engine thread ---------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException:  # pragma: no cover - the loop itself never raises
            log.exception("the engine stopped unexpectedly")
        finally:
            self._started.set()

    def _force_reload(self) -> None:
        self._defs_mtime = -1.0
        if self._wake_event is not None:
            self._wake_event.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._wake_event = asyncio.Event()
        self._started.set()
        log.info("engine started on %s (user %s)", self.computer, self.user or "-")
        try:
            while not self._stop_event.is_set():
                try:
                    self._reconcile()
                    self._watch_outboxes()
                except AutomailError as exc:
                    log.error("engine: %s", exc)
                except Exception:
                    log.exception("engine: unexpected error while checking tasks")
                self._wake_event.clear()
                waiters = [
                    asyncio.ensure_future(self._stop_event.wait()),
                    asyncio.ensure_future(self._wake_event.wait()),
                ]
                _done, pending = await asyncio.wait(
                    waiters, timeout=WATCH_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
                )
                for p in pending:
                    p.cancel()
        finally:
            await self._stop_all()
            log.info("engine stopped")

    async def _stop_all(self) -> None:
        for run in self._running.values():
            run.worker.stop()
        jobs = [r.job for r in self._running.values()]
        if jobs:
            await asyncio.wait(jobs, timeout=30)
        for name in list(self._running):
            self._forget(name)

    def _forget(self, name: str) -> None:
        run = self._running.pop(name, None)
        if run is not None:
            run.lock.release()

    # ---- deciding which tasks run -------------------------------------------------------
    def _reconcile(self) -> None:
        for name, run in list(self._running.items()):
            if run.job.done():
                self._forget(name)
                self._defs_mtime = -1.0  # look again: it may have stopped to be restarted
        mtime = self.definitions.mtime()
        now = self.clock.now()
        retry_locked = any(now >= at for at in self._locked.values())
        if mtime == self._defs_mtime and not retry_locked:
            return
        self._defs_mtime = mtime
        tasks = self.definitions.local_tasks(self.computer, self.user)
        companies = {c.name.lower(): c for c in self.definitions.companies()}
        wanted: dict[str, tuple[Task, Company]] = {}
        for task in tasks:
            company = companies.get(task.company.lower())
            if not task.enabled or company is None:
                continue
            record = self.hooks.outbox_for(company).task_state(task.name)
            if (
                record is not None
                and record.state is TaskState.ERROR
                and record.fault == FaultKind.TASK_FATAL
                and record.fingerprint == task.fingerprint
                and task.name not in self._running
            ):
                continue  # stopped by a login/TLS/sender fault until its settings change or it is started again
            wanted[task.name] = (task, company)
        for name in list(self._locked):
            if name not in wanted:
                del self._locked[name]  # no longer ours to run: forget that it was locked
        self._configure_buckets(list(wanted.values()))
        for name, run in list(self._running.items()):
            target = wanted.get(name)
            if target is None or target[0].fingerprint != run.fingerprint:
                run.worker.stop()  # finishes the message in flight; restarted below once done
        for name, (task, company) in wanted.items():
            if name not in self._running and now >= self._locked.get(name, now):
                self._launch(task, company)

    def _configure_buckets(self, wanted: list[tuple[Task, Company]]) -> None:
        by_account: dict[str, list[tuple[Task, Company]]] = {}
        for task, company in wanted:
            by_account.setdefault(task.smtp.account_key, []).append((task, company))
        for account, group in by_account.items():
            rates = [t.rate_per_hour for t, _c in group if t.rate_per_hour]
            caps = [t.daily_cap for t, _c in group if t.daily_cap]
            rate, cap = (min(rates) if rates else None), (min(caps) if caps else None)
            bucket = self._buckets.get(account)
            if bucket is None:
                bucket = Throttle(rate, cap)
                now = self.clock.now()
                # Every outbox the account sent from, once (tasks of one company share a file),
                # restored in one sorted pass so the hourly and daily windows stay ordered.
                boxes = [self.hooks.outbox_for(c) for c in {c.outbox_path: c for _t, c in group}.values()]
                for box in boxes:
                    box.prune_send_log(now)  # the send log is only needed for the last 24 hours
                bucket.restore([t for box in boxes for t in box.send_times(account, now - DAY)])
                self._buckets[account] = bucket
            else:
                bucket.reconfigure(rate, cap)

    def _launch(self, task: Task, company: Company) -> None:
        outbox = self.hooks.outbox_for(company)
        lock = self.hooks.lock_for(task.name)
        bucket = self._buckets[task.smtp.account_key]
        password: str | None = None
        error: AutomailError | None = None
        try:
            lock.acquire()
        except AutomailError as exc:
            error = exc
        else:
            if task.smtp.username:
                try:
                    password = secrets.get_password(task.name)
                    if password is None:
                        error = SmtpError(
                            f"no password is stored for task {task.name!r} ({task.smtp.username})",
                            kind=FaultKind.TASK_FATAL,
                            fix="enter it in Settings › Basic, or `automail task edit NAME --password-stdin`",
                        )
                except AutomailError as exc:
                    error = exc
        worker = Worker(task, company, outbox, bucket, self.clock, self._emit, password, self.hooks.session_factory)
        if error is not None:
            log.error("task %s cannot start: %s", task.name, error)
            if isinstance(error, TaskLockedError):
                # The other process owns the task's persisted state: only tell our listeners, once,
                # and try again every few seconds: when that process quits, this engine takes over.
                if task.name not in self._locked:
                    self._emit(
                        EngineEvent("state_changed", task.name, company.name, state=TaskState.ERROR, detail=str(error))
                    )
                self._locked[task.name] = self.clock.now() + LOCK_RETRY_S
            else:
                worker.fail_to_start(error)  # sticky until the task is edited or started again
                lock.release()
            return
        self._locked.pop(task.name, None)
        job = asyncio.ensure_future(worker.run())
        job.add_done_callback(lambda _j: self._wake_event.set() if self._wake_event else None)
        self._running[task.name] = _Running(worker, lock, job, task.fingerprint)
        log.info("task %s started (%s, %s)", task.name, company.name, task.cadence_text)

    def _watch_outboxes(self) -> None:
        by_path: dict[str, list[Worker]] = {}
        for run in self._running.values():
            by_path.setdefault(run.worker.company.outbox_path, []).append(run.worker)
        for path, workers in by_path.items():
            version = workers[0].outbox.data_version()
            if self._data_versions.get(path) != version:
                if path in self._data_versions:
                    for w in workers:
                        w.wake.set()
                self._data_versions[path] = version

    def _emit(self, event: EngineEvent) -> None:
        try:
            self.hooks.emit(event)
        except Exception:
            log.exception("an event listener failed on %s", event.kind)
