"""A task with sending windows, driven step by step with an injected clock against a real SMTP server."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from automail.clock import FakeClock
from automail.engine.service import Service
from automail.engine.throttle import Throttle
from automail.engine.worker import Worker
from automail.models import TaskState
from tests.helpers import cli, eml, make_service, make_task, setup_task
from tests.smtpd import SmtpServer

MONDAY = datetime(2026, 11, 30)  # a Monday; local wall-clock time, as windows are


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    return (MONDAY + timedelta(days=day, hours=hour, minutes=minute, seconds=second)).timestamp()


def run_until_sent(svc: Service, worker: Worker, clock: FakeClock, count: int) -> list[TaskState]:
    """Step the worker; a wait outside the windows jumps the clock to the opening (as sleeping would)."""
    states: list[TaskState] = []

    async def go() -> None:
        for _ in range(200):
            if len([m for m in svc.messages("Firma") if m.sent_at]) >= count:
                break
            sleep = await worker.step(clock.now())
            states.append(worker.status.state)
            if worker.status.reason.startswith("outside its sending windows"):
                clock.advance(worker.windows.delay(clock.now()))
            elif sleep > 0:
                clock.advance(sleep)
        await worker.flush()
        await worker.session.close()

    asyncio.run(go())
    return states


def test_task_waits_outside_its_window_and_does_not_burst_when_it_opens(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    clock = FakeClock(at(0, 16, 59))
    task = make_task(port=smtp_server.port, rate=100, windows=("Mon-Fri 08:00-17:00",))
    svc = make_service(automail_home, task, clock=clock)
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(4)])
    task = svc.task("Mailing")
    worker = Worker(
        task, svc.definitions.company("Firma"), svc.outbox("Firma"), Throttle(100), clock, lambda e: None, None
    )
    states = run_until_sent(svc, worker, clock, 4)
    sent = sorted(m.sent_at for m in svc.messages("Firma") if m.sent_at is not None)
    # 16:59:00 and 16:59:36; 17:00:12 is outside the window, so Tuesday 08:00:00 and 08:00:36 —
    # spaced by the rate as always, not two at once when the window opens.
    assert sent == [at(0, 16, 59), at(0, 16, 59, 36), at(1, 8), at(1, 8, 0, 36)]
    assert TaskState.WAITING in states
    assert len(smtp_server.messages) == 4
    record = svc.outbox("Firma").task_state("Mailing")
    assert record is not None
    svc.close()


def test_outside_window_state_says_why(automail_home: Path, smtp_server: SmtpServer) -> None:
    clock = FakeClock(at(5, 10))  # Saturday
    task = make_task(port=smtp_server.port, windows=("Mon-Fri 08:00-17:00",))
    svc = make_service(automail_home, task, clock=clock)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    worker = Worker(
        svc.task("Mailing"), svc.definitions.company("Firma"), svc.outbox("Firma"), Throttle(None), clock,
        lambda e: None, None,
    )  # fmt: skip

    async def one() -> float:
        sleep = await worker.step(clock.now())
        await worker.session.close()
        return sleep

    assert asyncio.run(one()) == 1.0  # looked at again every second, never slept through a clock jump
    assert worker.status.state is TaskState.WAITING
    assert worker.status.reason == "outside its sending windows (Mon-Fri 08:00-17:00)"
    assert smtp_server.messages == [] and svc.messages("Firma")[0].attempts == 0
    svc.close()


def test_cli_windows_on_add_edit_and_list(smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--window", "mon-fri 8:00-17:00", "--window", "Sat 09:00-12:00")
    doc = cli("task", "list", "--json").stdout
    assert '"Mon-Fri 08:00-17:00"' in doc and '"Sat 09:00-12:00"' in doc
    bad = cli("task", "edit", "Mailing", "--window", "Mon-Fri 8-17", check=2)
    assert "'8' in 'Mon-Fri 8-17' is not a time like 08:00" in bad.stderr
    cli("task", "edit", "Mailing", "--window", "22:00-06:00")
    assert '"22:00-06:00"' in cli("task", "list", "--json").stdout
    assert "22:00-06:00" in cli("task", "list").stdout
    cli("task", "edit", "Mailing", "--any-time")
    assert "windows" not in cli("task", "list", "--json").stdout
