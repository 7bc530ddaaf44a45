"""A mailing's end is announced once by the running engine, against a real SMTP server on 127.0.0.1:
finished, or cancelled (in the app or by `automail mailing cancel`), before anything was sent or with a
message in flight."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.engine.worker import CLAIM_BATCH
from automail.models import EngineEvent, EventKind, MailingAction, MessageStatus, TaskState
from automail.store.outbox import Outbox
from tests.helpers import cli, eml, make_service, make_task, wait_until
from tests.smtpd import SmtpServer

ENDS = (EventKind.MAILING_FINISHED, EventKind.MAILING_CANCELLED)


def ends(events: list[EngineEvent]) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.progress.end_text()) for e in events if e.kind in ENDS and e.progress is not None]


def running(svc: Service, task: str = "Mailing") -> bool:
    return svc.engine.running_tasks().get(task) in (TaskState.RUNNING, TaskState.WAITING)


def listened(home: Path, server: SmtpServer, rate: int | None = None) -> tuple[Service, list[EngineEvent]]:
    """A service with task "Mailing" sending to ``server``, and the list its engine's events go to."""
    svc = make_service(home, make_task(port=server.port, rate=rate))
    events: list[EngineEvent] = []
    svc.subscribe(events.append)
    return svc, events


@contextlib.contextmanager
def engine(svc: Service) -> Iterator[None]:
    svc.start_engine()
    try:
        yield
    finally:
        svc.stop_engine()


def until_an_end(events: list[EngineEvent], timeout: float = 10, linger: float = 0.0) -> None:
    """Wait for a mailing's end notice, then ``linger`` (the engine looks at the outbox every second:
    nothing may be said twice)."""
    assert wait_until(lambda: ends(events), timeout), events
    time.sleep(linger)


def test_cancel_before_anything_was_sent_is_announced_once(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc, events = listened(automail_home, smtp_server)
    later = time.time() + 3600  # held by --not-before: nothing of them leaves during the test
    svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(3)], mailing="Faktúry 11/2026", not_before=later)
    svc.enqueue_raw("Firma", [(f"b{i}", eml(10 + i)) for i in range(2)], mailing="Newsletter", not_before=later)
    with engine(svc):
        assert wait_until(lambda: running(svc))
        svc.change_mailing(MailingAction.CANCEL, "Faktúry 11/2026")  # the Mailings window
        assert wait_until(lambda: len(ends(events)) == 1, 5), events
        cli("mailing", "cancel", "Newsletter")  # another process
        assert wait_until(lambda: len(ends(events)) == 2, 5), events
        time.sleep(2.5)  # the engine looks at the outbox every second: nothing is said twice
    assert ends(events) == [
        (EventKind.MAILING_CANCELLED, "'Faktúry 11/2026' cancelled: 0 sent, 0 failed, 3 cancelled"),
        (EventKind.MAILING_CANCELLED, "'Newsletter' cancelled: 0 sent, 0 failed, 2 cancelled"),
    ]
    assert smtp_server.messages == []
    svc.close()


@pytest.mark.parametrize("rate", [None, 3000], ids=["unlimited", "throttled"])
@pytest.mark.parametrize("reply", ["250", "451"], ids=["delivered", "deferred"])
def test_cancel_with_a_message_in_flight_is_announced_once_after_its_result(
    automail_home: Path, smtp_server: SmtpServer, rate: int | None, reply: str
) -> None:
    # An unlimited task claims several messages at once: those not yet on the wire have not left either.
    svc, events = listened(automail_home, smtp_server, rate)
    smtp_server.stall_seconds = 3.0  # the reply to the final dot comes late: the message is in flight
    if reply != "250":
        smtp_server.data_replies = [f"{reply} 4.3.0 try again later"]
    ids = svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(5)], mailing="Faktúry 11/2026")
    with engine(svc):
        assert wait_until(lambda: any(p.endswith(b"\r\n.\r\n") for p in smtp_server.packets), 10)
        svc.change_mailing(MailingAction.CANCEL, "Faktúry 11/2026")
        until_an_end(events, linger=2.5)
    delivered = reply == "250"
    assert len(smtp_server.messages) == int(delivered)  # it had left; nothing after it did
    expected = f"'Faktúry 11/2026' cancelled: {int(delivered)} sent, 0 failed, {5 - int(delivered)} cancelled"
    assert ends(events) == [(EventKind.MAILING_CANCELLED, expected)]
    result = EventKind.SENT if delivered else EventKind.DEFERRED
    kinds = [e.kind for e in events if e.kind in (result, *ENDS)]
    assert kinds == [result, EventKind.MAILING_CANCELLED]  # the notice comes after the in-flight result
    box = svc.outbox("Firma")
    assert box.get(ids[0]).status is (MessageStatus.SENT if delivered else MessageStatus.CANCELLED)
    assert all(box.get(i).status is MessageStatus.CANCELLED for i in ids[1:])
    svc.close()


def test_a_finished_mailing_is_announced_once(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc, events = listened(automail_home, smtp_server)
    smtp_server.rcpt_replies = {"customer2@example.com": "550 5.1.1 no such user"}
    svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(4)], mailing="Faktúry 11/2026")
    with engine(svc):
        until_an_end(events, linger=2.5)
    assert ends(events) == [(EventKind.MAILING_FINISHED, "'Faktúry 11/2026' finished: 3 sent, 1 failed")]
    svc.close()


def test_an_unlimited_task_asks_about_the_end_once_per_claimed_batch_not_per_message(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    # While the worker still holds a message of the mailing (claimed, or sent and not yet recorded),
    # the mailing cannot have ended: asking the outbox after every message was a round trip to the
    # I/O thread per message. The end is still announced once, after the last message's event.
    svc, events = listened(automail_home, smtp_server)
    box = svc.outbox("Firma")
    asked: list[int] = []
    end_mailing = box.end_mailing

    def counted(mailing_id: int, now: float) -> object:
        if threading.current_thread().name.startswith("automail-io-"):  # the worker's, not the watcher's
            asked.append(mailing_id)
        return end_mailing(mailing_id, now)

    box.end_mailing = counted  # type: ignore[method-assign]
    total = 2 * CLAIM_BATCH + 6
    svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(total)], mailing="Faktúry 12/2026")
    with engine(svc):
        until_an_end(events, 30, linger=1.5)
    assert ends(events) == [(EventKind.MAILING_FINISHED, f"'Faktúry 12/2026' finished: {total} sent, 0 failed")]
    kinds = [e.kind for e in events if e.kind in (EventKind.SENT, *ENDS)]
    assert kinds == [EventKind.SENT] * total + [EventKind.MAILING_FINISHED]
    assert 1 <= len(asked) <= 3, asked  # one per batch of CLAIM_BATCH (was one per message: 70)
    svc.close()


def test_a_cancel_stops_an_unlimited_tasks_claimed_batch_within_a_message_or_two(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    # An unlimited task claims 32 messages at once. A cancel from another process while they go out:
    # the claimed ones have not left, so they must not go out — not only after the engine's
    # once-a-second look, by when a fast server would have taken the whole batch.
    svc, events = listened(automail_home, smtp_server)
    ids = svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(3 * CLAIM_BATCH)], mailing="Faktúry 11/2026")
    other = Outbox(svc.outbox("Firma").path, "Firma")  # as `automail mailing cancel` opens it
    record = smtp_server._record
    cancelled_after: list[int] = []

    def record_then_cancel(*args: Any) -> str:
        reply = record(*args)
        if len(smtp_server.messages) == 5 and not cancelled_after:
            other.cancel_mailing("Faktúry 11/2026", time.time())  # committed before the 5th is accepted
            cancelled_after.append(len(smtp_server.messages))
        return reply

    smtp_server._record = record_then_cancel  # type: ignore[method-assign]
    with contextlib.closing(other), engine(svc):
        until_an_end(events)
    sent = len(smtp_server.messages)
    # The 6th may already be on the wire when the worker learns of the cancel (with the 5th's commit).
    assert cancelled_after == [5] and sent <= 6, f"{sent - 5} message(s) left after the cancel"
    box = svc.outbox("Firma")
    statuses = [box.get(i).status for i in ids]
    assert statuses.count(MessageStatus.SENT) == sent
    assert statuses.count(MessageStatus.CANCELLED) == len(ids) - sent
    assert ends(events) == [
        (
            EventKind.MAILING_CANCELLED,
            f"'Faktúry 11/2026' cancelled: {sent} sent, 0 failed, {len(ids) - sent} cancelled",
        )
    ]
    svc.close()
