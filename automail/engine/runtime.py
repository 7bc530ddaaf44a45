"""The engine: one background thread with one asyncio loop running every task of this computer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar

from automail import secrets
from automail.clock import Clock
from automail.errors import AutomailError, FaultKind, SmtpError, TaskLockedError
from automail.models import Company, EngineEvent, EventKind, Task, TaskState
from automail.store.definitions import Definitions
from automail.store.outbox import Outbox

from .smtp import SmtpSession
from .tasklock import TaskLock
from .throttle import DAY, Throttle
from .worker import Worker, mailing_end_event

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")

WATCH_INTERVAL_S = 1.0  # how often definitions and outboxes are checked for outside changes
LOCK_RETRY_S = 5.0  # how often a task run by another process is tried again (it may have quit)
# The one shutdown budget: stopping waits this long for the messages in flight, then cancels them
# (a message cancelled before its final dot stays queued; one cancelled after it may be sent
# again, as after a crash).  Every caller that stops the engine relies on this value.
SHUTDOWN_BUDGET_S = 20.0
_CANCEL_GRACE_S = 3.0  # of the budget: what cancelled workers get to give their messages back


async def _in_daemon_thread(fn: Callable[[], _R]) -> _R:
    """Run a call that may block without end (a keyring waiting for its unlock prompt) in a daemon
    thread: unlike the executors' threads, it never keeps the engine or the process from ending."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_R] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop has ended meanwhile: nobody waits
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=run, name="automail-keyring", daemon=True).start()
    return await future


@dataclass
class _Running:
    lock: TaskLock
    fingerprint: str
    job: asyncio.Future[None] | None = None
    worker: Worker | None = None  # once its lock and password are in hand
    stopping: bool = False

    def stop(self) -> None:
        self.stopping = True
        if self.worker is not None:
            self.worker.stop()


@dataclass
class EngineHooks:
    """How the engine reaches the rest of the program (all called from the engine thread)."""

    outbox_for: Callable[[Company], Outbox]
    lock_for: Callable[[str], TaskLock]
    emit: Callable[[EngineEvent], None]
    session_factory: Callable[[Task, str | None], SmtpSession] | None = None
    pickup: Callable[[], object] | None = None  # one pass over the pickup folders (in a thread of its own)


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
        self._locked: dict[str, float] = {}  # task run by another process (or unstartable) -> when to try again
        self._cannot_start: dict[str, str] = {}  # task -> why it could not run (logged once)
        self._started = threading.Event()
        self._io: ThreadPoolExecutor | None = None
        self._pickup: ThreadPoolExecutor | None = None
        self._pickup_job: asyncio.Future[object] | None = None
        self.io_busy = False  # a worker's outbox call outlived the shutdown: its connections are in use

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

    def stop(self) -> bool:
        """Finish the messages in flight and stop within the shutdown budget; True if the engine ended
        and none of its outbox calls still runs (only then may the outboxes be closed)."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or loop is None or stop_event is None:
            return True
        try:
            loop.call_soon_threadsafe(stop_event.set)
        except RuntimeError:  # loop already closed
            pass
        thread.join(SHUTDOWN_BUDGET_S + 2.0)  # the engine keeps the budget itself; this is a backstop
        return not thread.is_alive() and not self.io_busy

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
        return {name: r.worker.status.state for name, r in list(self._running.items()) if r.worker is not None}

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
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automail-engine-io")
        self._started.set()
        log.info("engine started on %s (user %s)", self.computer, self.user or "-")
        try:
            while not self._stop_event.is_set():
                # A check waiting for a slow disk must not delay a stop: whichever ends first.
                stopped = asyncio.ensure_future(self._stop_event.wait())
                check = asyncio.ensure_future(self._check())
                await asyncio.wait([stopped, check], return_when=asyncio.FIRST_COMPLETED)
                if self._stop_event.is_set():
                    check.cancel()
                    break
                self._wake_event.clear()
                woken = asyncio.ensure_future(self._wake_event.wait())
                await asyncio.wait([stopped, woken], timeout=WATCH_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
                for waiter in (stopped, woken):
                    waiter.cancel()
        finally:
            await self._stop_all()
            self._io.shutdown(wait=False)
            if self._pickup is not None:
                self._pickup.shutdown(wait=False)
            log.info("engine stopped")

    async def _check(self) -> None:
        """Start and stop tasks as the definitions say; wake workers whose outbox changed."""
        try:
            self._start_pickup()
            await self._reconcile()
            await self._watch_outboxes()
        except AutomailError as exc:
            log.error("engine: %s", exc)
        except Exception:
            log.exception("engine: unexpected error while checking tasks")

    def _start_pickup(self) -> None:
        """Start a pass over the pickup folders unless one still runs (a big drop takes a while)."""
        job = self._pickup_job
        if job is not None and job.done() and not job.cancelled() and job.exception() is not None:
            log.error("pickup folder: %s", job.exception())
        if self.hooks.pickup is None or (job is not None and not job.done()):
            return
        if self._pickup is None:
            self._pickup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="automail-pickup")
        self._pickup_job = asyncio.get_running_loop().run_in_executor(self._pickup, self.hooks.pickup)

    async def _stop_all(self) -> None:
        for run in self._running.values():
            run.stop()
            if run.worker is None and run.job is not None:
                run.job.cancel()  # still taking its lock or password: nothing is in flight
        jobs = [r.job for r in self._running.values() if r.job is not None]
        workers = [r.worker for r in self._running.values() if r.worker is not None]
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_BUDGET_S
        if jobs:
            _done, late = await asyncio.wait(jobs, timeout=SHUTDOWN_BUDGET_S - _CANCEL_GRACE_S)
            if late:
                log.warning("%d task(s) still sending after %.0f s: stopping them now", len(late), SHUTDOWN_BUDGET_S)
                for job in late:
                    job.cancel()
                await asyncio.wait(late, timeout=_CANCEL_GRACE_S)
        if self._pickup_job is not None and not self._pickup_job.done():  # a batch commits or not: wait a bit
            await asyncio.wait([self._pickup_job], timeout=max(deadline - asyncio.get_running_loop().time(), 0.1))
        # A cancelled worker's outbox call may still run in its thread: its connection is in use.
        while any(w.io_busy for w in workers) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self.io_busy = any(w.io_busy for w in workers) or not (self._pickup_job is None or self._pickup_job.done())
        if self.io_busy:
            log.warning("an outbox write is still running after the shutdown budget")
        for name in list(self._running):
            self._forget(name)

    def _forget(self, name: str) -> None:
        run = self._running.pop(name, None)
        if run is not None:
            run.lock.release()

    # ---- deciding which tasks run -------------------------------------------------------
    # Definitions (TinyDB), outboxes (SQLite) and the keyring are read in threads: a slow disk or a
    # keyring waiting for an unlock prompt must not hold up the tasks that are sending.
    async def _in_io(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run a definitions or outbox call in the engine's I/O thread (one thread: one SQLite
        connection per outbox, so ``PRAGMA data_version`` readings stay comparable)."""
        assert self._io is not None
        return await asyncio.get_running_loop().run_in_executor(self._io, partial(fn, *args, **kwargs))

    async def _reconcile(self) -> None:
        for name, run in list(self._running.items()):
            if run.job is not None and run.job.done():
                self._forget(name)
                self._defs_mtime = -1.0  # look again: it may have stopped to be restarted
        mtime = await self._in_io(self.definitions.mtime)
        now = self.clock.now()
        retry_locked = any(now >= at for at in self._locked.values())
        if mtime == self._defs_mtime and not retry_locked:
            return
        self._defs_mtime = mtime
        running = set(self._running)
        wanted = await self._in_io(self._wanted_tasks, running)
        for name in list(self._locked):
            if name not in wanted:
                del self._locked[name]  # no longer ours to run: forget that it was locked
        await self._configure_buckets(list(wanted.values()))
        for name, run in list(self._running.items()):
            target = wanted.get(name)
            if target is None or target[0].fingerprint != run.fingerprint:
                run.stop()  # finishes the message in flight; restarted below once done
        for name, (task, company) in wanted.items():
            if name not in self._running and now >= self._locked.get(name, now):
                self._launch(task, company)

    def _wanted_tasks(self, running: set[str]) -> dict[str, tuple[Task, Company]]:
        """The tasks this engine should run now (in a thread: reads definitions and outboxes)."""
        tasks = self.definitions.local_tasks(self.computer, self.user)
        companies = {c.name.lower(): c for c in self.definitions.companies()}
        wanted: dict[str, tuple[Task, Company]] = {}
        for task in tasks:
            company = companies.get(task.company.lower())
            if not task.enabled or company is None:
                continue
            try:
                record = self.hooks.outbox_for(company).task_state(task.name)
            except AutomailError:
                record = None  # one unusable outbox must not stop the others: the task's start says why
            if (
                record is not None
                and record.state is TaskState.ERROR
                and record.fault is FaultKind.TASK_FATAL
                and record.fingerprint == task.fingerprint
                and task.name not in running
            ):
                continue  # stopped by a login/TLS/sender fault until its settings change or it is started again
            wanted[task.name] = (task, company)
        return wanted

    async def _configure_buckets(self, wanted: list[tuple[Task, Company]]) -> None:
        by_account: dict[str, list[tuple[Task, Company]]] = {}
        for task, company in wanted:
            by_account.setdefault(task.smtp.account_key, []).append((task, company))
        for account, group in by_account.items():
            rates = [t.rate_per_hour for t, _c in group if t.rate_per_hour]
            caps = [t.daily_cap for t, _c in group if t.daily_cap]
            rate, cap = (min(rates) if rates else None), (min(caps) if caps else None)
            bucket = self._buckets.get(account)
            if bucket is None:
                companies = list({c.outbox_path: c for _t, c in group}.values())
                sends = await self._in_io(self._recent_sends, account, companies, self.clock.now())
                bucket = Throttle(rate, cap)
                bucket.restore(sends)
                self._buckets.setdefault(account, bucket)
            else:
                bucket.reconfigure(rate, cap)

    def _recent_sends(self, account: str, companies: list[Company], now: float) -> list[float]:
        """The account's sends of the last day, from every outbox it sent from (in a thread).

        Only reads: a write here would wait for another process's write lock and hold up every
        task (each worker prunes its own send log, in its own thread).
        """
        # Every outbox once (tasks of one company share a file), restored in one sorted pass so
        # the hourly and daily windows stay ordered.
        sends: list[float] = []
        for company in companies:
            try:
                sends += self.hooks.outbox_for(company).send_times(account, now - DAY)
            except AutomailError:
                pass  # an unusable outbox: its tasks cannot start, and say why themselves
        return sends

    def _launch(self, task: Task, company: Company) -> None:
        run = _Running(self.hooks.lock_for(task.name), task.fingerprint)
        self._running[task.name] = run
        run.job = asyncio.ensure_future(self._run_task(run, task, company))
        run.job.add_done_callback(lambda _j: self._wake_event.set() if self._wake_event else None)

    async def _run_task(self, run: _Running, task: Task, company: Company) -> None:
        """Take the task's lock and password (in threads), then run its worker until it stops."""
        try:
            outbox = await self._in_io(self.hooks.outbox_for, company)
            await asyncio.to_thread(run.lock.acquire)
        except TaskLockedError as exc:
            self._standby(task, company, exc)
            return
        except AutomailError as exc:  # e.g. the outbox cannot be opened
            self._unstartable(task, exc)
            return
        self._locked.pop(task.name, None)
        password: str | None = None
        error: AutomailError | None = None
        try:
            password = await _in_daemon_thread(partial(self._password, task))
        except AutomailError as exc:
            error = exc
        worker = Worker(task, company, outbox, self._buckets[task.smtp.account_key], self.clock, self._emit,
                        password, self.hooks.session_factory)  # fmt: skip
        run.worker = worker
        if error is not None:
            log.error("task %s cannot start: %s", task.name, error)
            await worker.fail_to_start(error)  # sticky until the task is edited or started again
            return
        if run.stopping:
            worker.stop()  # stopped while its password was read (a restart after an edit)
        log.info("task %s started (%s, %s)", task.name, company.name, task.cadence_text)
        try:
            await worker.run()
        except AutomailError as exc:  # its outbox failed before or after the sending loop
            self._unstartable(task, exc)
        else:
            self._cannot_start.pop(task.name, None)

    def _unstartable(self, task: Task, error: AutomailError) -> None:
        """The task could not run: say so once, and try again every few seconds."""
        if self._cannot_start.get(task.name) != str(error):
            log.error("task %s cannot run: %s", task.name, error)
        self._cannot_start[task.name] = str(error)
        self._locked[task.name] = self.clock.now() + LOCK_RETRY_S

    def _password(self, task: Task) -> str | None:
        if not task.smtp.username:
            return None
        password = secrets.get_password(task.name)
        if password is None:
            raise SmtpError(
                f"no password is stored for task {task.name!r} ({task.smtp.username})",
                kind=FaultKind.TASK_FATAL,
                fix="enter it in Settings › Basic, or `automail task edit NAME --password-stdin`",
            )
        return password

    def _standby(self, task: Task, company: Company, error: TaskLockedError) -> None:
        """Another process runs the task: say so once, and try again every few seconds.

        That process owns the task's persisted state, so only our listeners hear about it; when
        it quits, this engine takes over.
        """
        if task.name not in self._locked:
            log.info("task %s: %s; this engine takes over when it quits", task.name, error.message)
            self._emit(
                EngineEvent(EventKind.STATE_CHANGED, task.name, company.name, state=TaskState.ERROR, detail=str(error))
            )
        self._locked[task.name] = self.clock.now() + LOCK_RETRY_S

    async def _watch_outboxes(self) -> None:
        by_path: dict[str, list[Worker]] = {}
        for run in self._running.values():
            if run.worker is not None:
                by_path.setdefault(run.worker.company.outbox_path, []).append(run.worker)
        for path, workers in by_path.items():
            await self._in_io(workers[0].outbox.optimize_if_due)  # hourly PRAGMA optimize (SQLite's advice)
            version = await self._in_io(workers[0].outbox.data_version)
            if self._data_versions.get(path) != version:
                for w in workers:
                    if path in self._data_versions:
                        w.wake.set()
                    w.recheck_held = True  # a mailing may have been paused or cancelled meanwhile
                await self._announce_ended(workers)
                self._data_versions[path] = version

    async def _announce_ended(self, workers: list[Worker]) -> None:
        """Announce the mailings of an outbox that ended without a send of ours ending them: cancelled
        in the Mailings window or by `automail mailing cancel` (another process), before anything was
        sent or after; or ended while no engine ran. The outbox hands each end out once."""
        # A mailing whose last result a worker has yet to report is that worker's to announce, after
        # the result's own event.
        busy = {m for w in workers if (m := w.unreported_mailing) is not None}
        ended = await self._in_io(workers[0].outbox.end_mailings, self.clock.now(), busy)
        task = min(w.task.name for w in workers)  # a task of the company (the notice is about the mailing)
        for mailing in ended:
            self._emit(mailing_end_event(mailing, task))

    def _emit(self, event: EngineEvent) -> None:
        try:
            self.hooks.emit(event)
        except Exception:
            log.exception("an event listener failed on %s", event.kind)
