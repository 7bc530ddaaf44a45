"""Notifier: one notification per incident, delayed "unreachable", aggregated failures; delivery paths."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from automail.errors import FaultKind
from automail.models import EngineEvent, EventKind, Mailing, MailingAction, TaskState
from automail.ui.notify import Delivery, Notifier, dbus_notify
from tests.desktop import DesktopSession, wait_for
from tests.helpers import cli, eml, make_service, make_task, wait_until
from tests.smtpd import SmtpServer


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def error(task: str, reason: str, fault: FaultKind = FaultKind.TASK_FATAL) -> EngineEvent:
    return EngineEvent(EventKind.STATE_CHANGED, task, "Firma", state=TaskState.ERROR, detail=reason, fault=fault)


def state(task: str, st: TaskState) -> EngineEvent:
    return EngineEvent(EventKind.STATE_CHANGED, task, "Firma", state=st)


def failed(task: str, rcpt: str, reason: str = "550 5.1.1 no such user") -> EngineEvent:
    return EngineEvent(EventKind.FAILED, task, "Firma", message_id=1, detail=reason, recipients=(rcpt,))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sent() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def notifier(clock: FakeClock, sent: list[tuple[str, str]]) -> Notifier:
    return Notifier(lambda title, text: sent.append((title, text)), clock=clock, failed_window_s=8)


def test_same_error_repeated_gives_one_then_new_after_recovery(notifier: Notifier, sent: list[tuple[str, str]]) -> None:
    login = "SMTP login rejected: 535 5.7.8"
    for _ in range(5):
        notifier.on_event(error("Invoices", login))
    assert sent == [("Task “Invoices” stopped", login)]
    notifier.on_event(state("Invoices", TaskState.RUNNING))
    notifier.on_event(error("Invoices", login))
    assert len(sent) == 2
    notifier.on_event(error("Invoices", "TLS handshake failed"))  # another reason: another incident
    assert len(sent) == 3
    notifier.on_event(error("Reminders", login))  # another task: its own incident
    assert len(sent) == 4


def test_unreachable_only_after_grace(notifier: Notifier, sent: list[tuple[str, str]], clock: FakeClock) -> None:
    reason = "cannot connect to smtp.firma.sk:587: Connection refused"
    notifier.on_event(error("Invoices", f"{reason} (retrying every 30 s at most)", FaultKind.TASK_RETRY))
    clock.t += 100
    notifier.on_event(error("Invoices", f"{reason} (retrying every 60 s at most)", FaultKind.TASK_RETRY))
    notifier.tick()
    assert sent == []
    clock.t += 100  # 200 s > 3 min
    notifier.tick()
    assert len(sent) == 1 and "cannot reach" in sent[0][0] and "3 min" in sent[0][1]
    clock.t += 600
    notifier.on_event(error("Invoices", f"{reason} (retrying every 300 s at most)", FaultKind.TASK_RETRY))
    notifier.tick()
    assert len(sent) == 1


def test_unreachable_that_recovers_in_time_is_silent(
    notifier: Notifier, sent: list[tuple[str, str]], clock: FakeClock
) -> None:
    notifier.on_event(error("Invoices", "Connection refused", FaultKind.TASK_RETRY))
    clock.t += 60
    notifier.on_event(state("Invoices", TaskState.RUNNING))
    clock.t += 600
    notifier.tick()
    assert sent == []


def test_grace_is_configurable(sent: list[tuple[str, str]], clock: FakeClock) -> None:
    n = Notifier(lambda t, x: sent.append((t, x)), clock=clock, unreachable_grace_s=10)
    n.on_event(error("Invoices", "Connection refused", FaultKind.TASK_RETRY))
    clock.t += 11
    n.tick()
    assert len(sent) == 1


def test_permanent_failures_are_aggregated(notifier: Notifier, sent: list[tuple[str, str]], clock: FakeClock) -> None:
    for rcpt in ("a@x.sk", "b@y.sk", "c@z.sk", "d@w.sk"):
        notifier.on_event(failed("Invoices", rcpt))
        clock.t += 1
    assert sent == []
    clock.t += 5
    notifier.tick()
    assert len(sent) == 1
    title, text = sent[0]
    assert title == "E-mails failed"
    assert text.startswith("4 messages to a@x.sk, b@y.sk, c@z.sk … failed in task “Invoices”.")
    assert "550 5.1.1" in text
    clock.t += 60
    notifier.tick()
    assert len(sent) == 1


def finished(task: str, name: str, sent: int, failed_: int, cancelled: int = 0) -> EngineEvent:
    progress = Mailing(
        id=1, name=name, company="Firma", created_at=0.0, sources=(), paused=False, not_before=None, queued=0,
        sending=0, sent=sent, deferred=0, failed=failed_, cancelled=cancelled, first_sent_at=1.0, last_sent_at=2.0,
    )  # fmt: skip
    return EngineEvent(EventKind.MAILING_FINISHED, task, "Firma", mailing=name, progress=progress)


def test_mailing_finished_flushes_its_failures_then_reports_once(
    notifier: Notifier, sent: list[tuple[str, str]]
) -> None:
    bad = failed("Invoices", "a@x.sk")
    notifier.on_event(EngineEvent(**{**bad.__dict__, "mailing": "Faktúry 11/2026"}))
    notifier.on_event(finished("Invoices", "Faktúry 11/2026", 1240, 3))
    notifier.on_event(finished("Reminders", "faktúry 11/2026", 1240, 3))  # another task saw the same end
    assert sent == [
        (
            "E-mails failed",
            "1 message of mailing 'Faktúry 11/2026' to a@x.sk failed in task “Invoices”. "
            "Last reason: 550 5.1.1 no such user",
        ),
        ("Mailing finished", "Mailing 'Faktúry 11/2026' finished: 1,240 sent, 3 failed"),
    ]
    notifier.on_event(finished("Invoices", "Newsletter", 10, 0, cancelled=5))
    assert sent[-1] == ("Mailing finished", "Mailing 'Newsletter' finished: 10 sent, 0 failed, 5 cancelled")


def test_queue_drained_flushes_failures_but_is_not_news_itself(notifier: Notifier, sent: list[tuple[str, str]]) -> None:
    for i in range(50):  # the old "≥ 5 sends" rule is gone: a mailing's end is reported, not a task's queue
        notifier.on_event(EngineEvent(EventKind.SENT, "Invoices", "Firma", message_id=i))
    notifier.on_event(failed("Invoices", "a@x.sk"))
    notifier.on_event(EngineEvent(EventKind.QUEUE_DRAINED, "Invoices", "Firma"))
    assert sent == [
        ("E-mails failed", "1 message to a@x.sk failed in task “Invoices”. Last reason: 550 5.1.1 no such user"),
    ]


def test_a_single_message_drained_is_not_news(notifier: Notifier, sent: list[tuple[str, str]]) -> None:
    notifier.on_event(EngineEvent(EventKind.SENT, "Invoices", "Firma", message_id=1))
    notifier.on_event(EngineEvent(EventKind.QUEUE_DRAINED, "Invoices", "Firma"))
    notifier.on_event(EngineEvent(EventKind.QUEUE_DRAINED, "Invoices", "Firma"))
    assert sent == []


class FakeIcon:
    HAS_NOTIFICATION = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def notify(self, message: str, title: str | None = None) -> None:
        self.calls.append((title or "", message))


def test_delivery_prefers_the_tray_icon_and_does_not_block() -> None:
    icon = FakeIcon()
    delivery = Delivery(icon=icon)
    started = time.monotonic()
    delivery.send("Task Invoices stopped", "SMTP login rejected")
    assert time.monotonic() - started < 0.1
    wait_for(lambda: icon.calls, 5, what="notify call")
    assert icon.calls == [("Task Invoices stopped", "SMTP login rejected")]
    assert delivery.method == "pystray"
    delivery.close()


def test_delivery_without_any_service_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Delivery(icon=None).deliver_now("t", "x") == ""


@pytest.fixture
def dunst(monkeypatch: pytest.MonkeyPatch) -> Iterator[DesktopSession]:
    """A private Xvfb + session bus + dunst (no tray host)."""
    tools = ("Xvfb", "dbus-daemon", "dunst", "dunstctl")
    if missing := [t for t in tools if shutil.which(t) is None]:
        pytest.skip(f"needs {', '.join(missing)}")
    session = DesktopSession(tray=False).start()
    for key, value in session.env.items():
        monkeypatch.setenv(key, value)
    try:
        yield session
    finally:
        session.stop()


@pytest.mark.slow
def test_dbus_notification_reaches_dunst(dunst: DesktopSession) -> None:
    assert dbus_notify("Task Invoices stopped", "SMTP login rejected") > 0
    assert Delivery(icon=None).deliver_now("E-mails failed", "3 messages failed") == "dbus"
    notes = dunst.notifications()
    assert sorted(notes) == [("E-mails failed", "3 messages failed"), ("Task Invoices stopped", "SMTP login rejected")]


@pytest.mark.slow
def test_notify_send_fallback_reaches_dunst(dunst: DesktopSession) -> None:
    if shutil.which("notify-send") is None:
        pytest.skip("needs notify-send")
    assert Delivery(icon=None, use_dbus=False).deliver_now("Mailing finished", "all sent") == "notify-send"
    assert dunst.notifications() == [("Mailing finished", "all sent")]


def test_a_running_engine_announces_a_mailing_cancelled_in_the_window_or_by_the_cli(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    # Two tasks (two accounts: two throttles), each sending one mailing at 100 an hour: one message each,
    # then 36 s to cancel the rest.
    tasks = [
        make_task(name, port=smtp_server.port, rate=100, tags=(name.lower(),), host=host)
        for name, host in (("Invoices", "127.0.0.1"), ("News", "localhost"))
    ]
    svc = make_service(automail_home, *tasks)
    events: queue.Queue[EngineEvent] = queue.Queue()
    svc.subscribe(events.put)  # as the app's bridge: the engine thread only posts, the Tk thread notifies
    sent: list[tuple[str, str]] = []
    notifier = Notifier(lambda title, text: sent.append((title, text)))

    def notified(count: int) -> bool:
        while not events.empty():
            notifier.on_event(events.get())
        return len(sent) >= count

    svc.enqueue_raw("Firma", [(f"f{i}", eml(i)) for i in range(4)], "invoices", mailing="Faktúry 11/2026")
    svc.enqueue_raw("Firma", [(f"n{i}", eml(10 + i)) for i in range(3)], "news", mailing="Newsletter")
    svc.start_engine()
    try:
        assert wait_until(lambda: len(smtp_server.messages) == 2)
        # Cancelled in the Mailings window (the app's own Service) …
        svc.change_mailing(MailingAction.CANCEL, "Faktúry 11/2026")
        assert wait_until(lambda: notified(1), 5), sent
        assert sent == [("Mailing cancelled", "Mailing 'Faktúry 11/2026' cancelled: 1 sent, 0 failed, 3 cancelled")]
        # … and by `automail mailing cancel`, another process (the engine notices its commit within a second).
        cli("mailing", "cancel", "Newsletter")
        assert wait_until(lambda: notified(2), 5), sent
        assert sent[1] == ("Mailing cancelled", "Mailing 'Newsletter' cancelled: 1 sent, 0 failed, 2 cancelled")
    finally:
        svc.stop_engine()
    notified(3)
    assert len(sent) == 2 and len(smtp_server.messages) == 2  # each said once; nothing more sent
    svc.close()
