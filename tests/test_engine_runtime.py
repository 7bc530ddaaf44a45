"""The engine's runtime (issue 7): order, a slow outbox or keyring, shutdown, Date and Message-ID."""

from __future__ import annotations

import email
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import keyring
import pytest

from automail.engine import runtime
from automail.engine.service import Service
from automail.models import MessageStatus, TaskState
from tests.helpers import cli, eml, engine_process, make_service, make_task, run_engine_until, setup_task, wait_until
from tests.keyring_backend import FileKeyring
from tests.smtpd import SmtpServer


def _ids_in_order(server: SmtpServer) -> list[str | None]:
    return [m.message_id for m in server.messages]


# ---- order (defect 14) ------------------------------------------------------------------------------
def test_after_a_task_error_is_fixed_messages_leave_in_enqueue_order(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    svc = make_service(automail_home, make_task(port=smtp_server.port, rate=3000))
    ids = svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(3)])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    smtp_server.mail_reply = None  # the sender was fixed on the server's side
    svc.start_task("Mailing")  # clears the sticky error
    run_engine_until(svc, lambda: len(smtp_server.messages) == 3, timeout=20)
    expected = [svc.outbox("Firma").get(i).message_id for i in ids]
    assert _ids_in_order(smtp_server) == expected  # 1, 2, 3 — not 2, 3, 1
    svc.close()


# ---- nothing blocks the event loop (defect 9) -----------------------------------------------------------
@pytest.fixture
def second_server() -> Iterator[SmtpServer]:
    """A server requiring AUTH as user / pw (allowed without TLS on loopback)."""
    server = SmtpServer(auth={"user": "pw"}).start()
    yield server
    server.close()


def _two_companies(home: Path, fast: SmtpServer, slow: SmtpServer) -> Service:
    svc = make_service(
        home,
        make_task("Fast", "Firma", port=fast.port),
        make_task("Slow", "Druha", port=slow.port, username="user"),
        password="pw",
    )
    svc.enqueue_raw("Firma", [(f"f{i}", eml(i)) for i in range(3)])
    svc.enqueue_raw("Druha", [("s", eml(9))])
    return svc


def test_a_busy_outbox_does_not_hold_up_other_tasks(
    automail_home: Path, smtp_server: SmtpServer, second_server: SmtpServer
) -> None:
    svc = _two_companies(automail_home, smtp_server, second_server)
    # Another program holds the write lock of Druha's outbox: its writes wait (up to 30 s).
    holder = sqlite3.connect(svc.definitions.company("Druha").outbox_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        svc.start_engine()
        smtp_server.wait_for(3, timeout=4)  # Firma's task sends meanwhile
        assert time.monotonic() - t0 < 4
        assert second_server.messages == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    second_server.wait_for(1, timeout=10)  # and Druha's task catches up once the lock is gone
    svc.stop_engine()
    svc.close()


class _SlowKeyring(FileKeyring):
    """A keyring waiting for its unlock prompt: every read takes 4 s."""

    def get_password(self, service: str, username: str) -> str | None:
        time.sleep(4)
        return super().get_password(service, username)


def test_a_slow_keyring_does_not_hold_up_other_tasks(
    automail_home: Path, smtp_server: SmtpServer, second_server: SmtpServer
) -> None:
    svc = _two_companies(automail_home, smtp_server, second_server)
    keyring.set_keyring(_SlowKeyring())
    t0 = time.monotonic()
    svc.start_engine()
    try:
        smtp_server.wait_for(3, timeout=3)  # the task without a login does not wait for the keyring
        assert time.monotonic() - t0 < 3
        second_server.wait_for(1, timeout=10)
    finally:
        svc.stop_engine()
        svc.close()


class _LockedKeyring(FileKeyring):
    """A keyring whose unlock prompt nobody answers (for 30 s)."""

    def get_password(self, service: str, username: str) -> str | None:
        time.sleep(30)
        return super().get_password(service, username)


def test_a_keyring_nobody_unlocks_does_not_hold_up_the_shutdown(
    automail_home: Path, smtp_server: SmtpServer, second_server: SmtpServer
) -> None:
    svc = _two_companies(automail_home, smtp_server, second_server)
    keyring.set_keyring(_LockedKeyring())
    svc.start_engine()
    smtp_server.wait_for(3, timeout=5)
    engine = svc.engine
    assert engine is not None
    t0 = time.monotonic()
    assert svc.stop_engine()
    assert time.monotonic() - t0 < 5 and not engine.running
    svc.close()


def test_an_unusable_outbox_is_reported_once_and_other_tasks_go_on(
    automail_home: Path, smtp_server: SmtpServer, second_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    _two_companies(automail_home, smtp_server, second_server).close()
    Path(Service(automail_home).definitions.company("Druha").outbox_path).write_bytes(b"not a database" * 100)
    svc = Service(automail_home)  # a fresh process's view: opens the outboxes again
    with caplog.at_level("INFO"):
        svc.start_engine()
        try:
            smtp_server.wait_for(3, timeout=5)
            time.sleep(6)  # the engine tries the other task again every 5 s
        finally:
            svc.stop_engine()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("task Slow cannot run: ") and "Druha" in errors[0], errors
    assert "Task exception was never retrieved" not in caplog.text


# ---- shutdown (defect 10) -------------------------------------------------------------------------------
def test_close_stops_a_stuck_send_within_the_budget_and_gives_the_message_back(
    automail_home: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "SHUTDOWN_BUDGET_S", 4.0)
    smtp_server.stall_seconds = 60  # the server never answers the final dot
    svc = make_service(automail_home, make_task(port=smtp_server.port, timeout=120))
    svc.enqueue_raw("Firma", [("m", eml(1))])
    svc.start_engine()
    assert wait_until(lambda: svc.messages("Firma")[0].status is MessageStatus.SENDING, 5)
    time.sleep(0.5)  # the dot is on the wire
    engine = svc.engine
    assert engine is not None
    t0 = time.monotonic()
    svc.close()
    assert time.monotonic() - t0 < 4.0 + 1.0
    assert not engine.running  # so closing the connections was safe
    # back in the queue (the server never accepted it), not stuck in "sending"
    assert Service(automail_home).messages("Firma")[0].status is MessageStatus.QUEUED


def test_close_keeps_the_connections_an_outbox_write_still_uses(
    automail_home: Path, smtp_server: SmtpServer, second_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "SHUTDOWN_BUDGET_S", 4.0)
    svc = _two_companies(automail_home, smtp_server, second_server)
    druha = svc.outbox("Druha")
    holder = sqlite3.connect(druha.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # Druha's task waits for this lock (up to 30 s) in its outbox thread
    try:
        svc.start_engine()
        smtp_server.wait_for(3, timeout=5)
        assert not svc.stop_engine()  # the engine is done, but a write of Druha's task still runs
        svc.close()
        assert druha._connections  # so nothing was closed under it
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert wait_until(lambda: svc.status()[1].state is TaskState.STOPPED, 10)  # and the write went through


# ---- Date and Message-ID (defect 4) ------------------------------------------------------------------------
def test_every_message_gets_a_date_and_a_message_id_in_the_senders_domain(
    automail_home: Path, smtp_server: SmtpServer
) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port, sender="Firma <info@firma.sk>"))
    svc.enqueue_raw("Firma", [("eml", eml(1))])  # no From, no Date, no Message-ID
    svc.enqueue_raw("Firma", [("eml", b"From: Shop <shop@obchod.sk>\r\n" + eml(2))])
    svc.send("Firma", to=["a@example.com"], subject="Hi", text="Hello")  # `send` without --from
    dated = b"Date: Mon, 02 Nov 2026 08:00:00 +0100\r\n" + eml(3)
    svc.enqueue_raw("Firma", [("dated", dated)])
    run_engine_until(svc, lambda: len(smtp_server.messages) == 4)
    parsed = [email.message_from_bytes(m.data) for m in smtp_server.messages]
    domains = [str(p["Message-ID"]).rstrip(">").rpartition("@")[2] for p in parsed]
    assert domains == ["firma.sk", "obchod.sk", "firma.sk", "firma.sk"]
    assert all(len(p.get_all("Date") or []) == 1 for p in parsed)
    now = svc.clock.now()
    for p in parsed[:3]:
        assert abs(parsedate_to_datetime(p["Date"]).timestamp() - now) < 60
    assert parsed[3]["Date"] == "Mon, 02 Nov 2026 08:00:00 +0100"  # an existing Date is kept
    svc.close()


# ---- exit codes and the standby engine (defect 15) -------------------------------------------------------
def test_run_until_empty_stopped_by_sigterm_with_work_left_exits_1(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--rate", "100")  # one message every 36 s
    cli("enqueue", "--company", "Firma", "-", stdin=eml(1))
    cli("enqueue", "--company", "Firma", "-", stdin=eml(2))
    cli("task", "start", "Mailing")
    proc = subprocess.Popen(
        [sys.executable, "-m", "automail", "run", "--until-empty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        smtp_server.wait_for(1, timeout=20)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "1 message(s) still to send" in err


def test_a_standby_engine_logs_one_line_not_errors_every_5_s(
    automail_home: Path, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    setup_task(smtp_server.port)
    cli("task", "start", "Mailing")
    first = engine_process(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_until(lambda: '"running"' in cli("status", "--json").stdout, 20)
        second = engine_process(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(12)  # two lock retries (every 5 s)
    finally:
        for proc in (second, first):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    log = (automail_home / "logs" / "automail.log").read_text(errors="replace")
    assert log.count("already being run by process") == 1
    assert " ERROR " not in log
