"""The engine against a real SMTP server on 127.0.0.1: every outcome of a send."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import replace
from pathlib import Path

import pytest

from automail.clock import FakeClock
from automail.engine.service import Service
from automail.engine.smtp import SmtpSession
from automail.engine.smtp.timeouts import Timeouts
from automail.engine.throttle import Throttle
from automail.engine.worker import Worker
from automail.errors import FaultKind
from automail.models import MessageStatus, Security, TaskState
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.helpers import eml, make_service, make_task, run_engine_until, wait_until
from tests.smtpd import SmtpServer


@pytest.fixture
def events() -> list:
    return []


def statuses(svc: Service, company: str = "Firma") -> list[MessageStatus]:
    return [m.status for m in svc.messages(company)]


def test_sends_queued_messages_with_message_id_and_sender(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port, reply_to="office@firma.sk"))
    ids = svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(5)])
    stored_ids = {svc.outbox("Firma").get(i).message_id for i in ids}
    run_engine_until(svc, lambda: len(smtp_server.messages) == 5)
    got = smtp_server.messages
    assert {m.message_id for m in got} == stored_ids
    assert all(m.mail_from == "info@firma.sk" for m in got)  # envelope sender = task's sender
    assert all(b"From: " in m.data and b"info@firma.sk" in m.data for m in got)  # From added
    assert all(b"Reply-To: office@firma.sk" in m.data for m in got)
    assert statuses(svc) == [MessageStatus.SENT] * 5
    assert all(m.server_reply.startswith("2") or "Ok" in m.server_reply for m in svc.messages("Firma"))
    assert smtp_server.connections == 1  # one reused connection
    svc.close()


def test_existing_from_header_is_kept(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [("m", b"From: Billing <billing@firma.sk>\r\n" + eml(1))])
    run_engine_until(svc, lambda: len(smtp_server.messages) == 1)
    data = smtp_server.messages[0].data
    assert data.count(b"\nFrom:") + data.startswith(b"From:") == 1
    assert b"billing@firma.sk" in data
    svc.close()


def test_permanent_5xx_fails_message_and_next_goes_on(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["554 5.7.1 Message rejected as spam"]
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(3)])
    run_engine_until(svc, lambda: len(smtp_server.messages) == 2)
    msgs = svc.messages("Firma")
    assert [m.status for m in msgs] == [MessageStatus.FAILED, MessageStatus.SENT, MessageStatus.SENT]
    assert msgs[0].last_error_code == 554 and "spam" in msgs[0].last_error
    svc.close()


def test_transient_4xx_defers_with_retry_schedule(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["451 4.3.0 Try again later"]
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=smtp_server.port, retry_delays=(60, 300)), clock=clock)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.DEFERRED])
    msg = svc.messages("Firma")[0]
    assert msg.attempts == 1 and msg.last_error_code == 451
    assert msg.next_attempt_at == pytest.approx(clock.now() + 60)
    clock.advance(61)  # the retry becomes due
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.SENT])
    assert len(smtp_server.messages) == 1
    assert svc.messages("Firma")[0].attempts == 2
    svc.close()


def test_message_older_than_max_age_fails_on_transient_error(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["451 4.3.0 later"] * 5
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=smtp_server.port, max_age_s=3600), clock=clock)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    clock.advance(3601)
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.FAILED])
    assert "gave up" in svc.messages("Firma")[0].last_error
    svc.close()


def test_partial_recipient_refusal_is_sent_with_refusals_recorded(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies = {"bad@example.com": "550 5.1.1 No such user"}
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [("m", eml(1, to="good@example.com, bad@example.com"))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.SENT])
    msg = svc.messages("Firma")[0]
    assert list(msg.refused) == ["bad@example.com"] and msg.refused["bad@example.com"].startswith("550")
    assert smtp_server.messages[0].rcpt_tos == ["good@example.com"]
    assert msg.to_json()["refused"] == {"bad@example.com": msg.refused["bad@example.com"]}
    svc.close()


def test_all_recipients_refused_permanently_fails(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies = {"bad@example.com": "550 5.1.1 No such user"}
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [("m", eml(1, to="bad@example.com")), ("n", eml(2))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.FAILED, MessageStatus.SENT])
    assert svc.messages("Firma")[0].last_error_code == 550
    svc.close()


def test_connection_dropped_mid_data_defers_and_reconnects(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.drop_on_data = 1
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [("m1", eml(1)), ("m2", eml(2))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.DEFERRED, MessageStatus.SENT])
    assert "lost" in svc.messages("Firma")[0].last_error
    assert smtp_server.connections == 2  # reconnected for the next message
    svc.close()


def test_stalled_server_times_out_and_defers(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.stall_seconds = 3  # the reply to the final dot: the outcome is unknown
    short = Timeouts.for_timeout(0.5)
    svc = make_service(
        automail_home,
        make_task(port=smtp_server.port, timeout=0.5),
        session_factory=lambda t, p: SmtpSession(t.smtp, p, timeouts=replace(short, final_dot=1.0)),
    )
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.DEFERRED])
    assert "did not answer" in svc.messages("Firma")[0].last_error
    assert "may have been delivered" in svc.messages("Firma")[0].last_error
    svc.close()


def test_login_rejected_puts_task_in_error_and_keeps_messages_queued(
    automail_home: Path, smtp_server_auth: SmtpServer
) -> None:
    task = make_task(port=smtp_server_auth.port, username=AUTH_USER)
    svc = make_service(automail_home, task, password="wrong-password")
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(3)])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    st = svc.status()[0]
    assert "login rejected" in st.last_error and "535" in st.last_error
    assert "Settings › Basic" in st.last_error
    msgs = svc.messages("Firma")
    assert [m.status for m in msgs] == [MessageStatus.QUEUED] * 3
    assert all(m.attempts == 0 for m in msgs)
    assert smtp_server_auth.messages == []
    # sticky: a new engine does not retry it until the settings change or it is started again
    failures = smtp_server_auth.auth_failures
    svc.start_engine()
    time.sleep(1.5)
    svc.stop_engine()
    assert smtp_server_auth.auth_failures == failures
    assert svc.status()[0].state is TaskState.ERROR
    # fixing the password (a settings change) lets it send
    svc.edit_task(task.name, lambda t: t, password=AUTH_PASSWORD)
    run_engine_until(svc, lambda: len(smtp_server_auth.messages) == 3)
    assert svc.status()[0].state is not TaskState.ERROR
    svc.close()


def test_starttls_required_but_not_offered_is_a_tls_fault(automail_home: Path, smtp_server: SmtpServer) -> None:
    task = make_task(port=smtp_server.port, security=Security.STARTTLS)
    svc = make_service(automail_home, task)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    rec = svc.outbox("Firma").task_state(task.name)
    assert rec is not None and rec.fault is FaultKind.TASK_FATAL
    assert "TLS" in rec.reason
    assert statuses(svc) == [MessageStatus.QUEUED] and smtp_server.messages == []
    svc.close()


def test_starttls_and_login_over_tls(automail_home: Path, smtp_starttls_server: SmtpServer) -> None:
    smtp_starttls_server.auth = {AUTH_USER: AUTH_PASSWORD}
    task = make_task(port=smtp_starttls_server.port, security=Security.STARTTLS, username=AUTH_USER, verify_certs=False)
    svc = make_service(automail_home, task, password=AUTH_PASSWORD)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: len(smtp_starttls_server.messages) == 1)
    assert smtp_starttls_server.messages[0].auth_login == AUTH_USER
    svc.close()


def test_untrusted_certificate_is_a_tls_fault(automail_home: Path, smtp_tls_server: SmtpServer) -> None:
    task = make_task(port=smtp_tls_server.port, security=Security.TLS)  # verify_certs stays on
    svc = make_service(automail_home, task)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    assert "TLS" in svc.status()[0].last_error
    svc.close()


def test_implicit_tls(automail_home: Path, smtp_tls_server: SmtpServer) -> None:
    task = make_task(port=smtp_tls_server.port, security=Security.TLS, verify_certs=False)
    svc = make_service(automail_home, task)
    svc.enqueue_raw("Firma", [("m", eml(1))])
    run_engine_until(svc, lambda: len(smtp_tls_server.messages) == 1)
    svc.close()


def test_sender_refused_stops_the_task(automail_home: Path, smtp_server: SmtpServer) -> None:
    smtp_server.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.enqueue_raw("Firma", [("m", eml(1)), ("n", eml(2))])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    assert "sender" in svc.status()[0].last_error
    assert statuses(svc) == [MessageStatus.QUEUED, MessageStatus.QUEUED]
    assert all(m.attempts == 0 for m in svc.messages("Firma"))
    svc.close()


def test_unreachable_server_retries_with_backoff(automail_home: Path, smtp_server: SmtpServer) -> None:
    port = smtp_server.port
    smtp_server.stop()  # nothing listens on the port now
    svc = make_service(automail_home, make_task(port=port))
    svc.enqueue_raw("Firma", [("m", eml(1))])
    svc.start_engine()
    try:
        assert wait_until(lambda: svc.status()[0].state is TaskState.ERROR, 10)
        rec = svc.outbox("Firma").task_state("Mailing")
        assert rec is not None and rec.fault is FaultKind.TASK_RETRY
        assert "cannot reach" in rec.reason
        assert statuses(svc) == [MessageStatus.QUEUED]
        assert svc.messages("Firma")[0].attempts == 0
        worker = svc.engine._running["Mailing"].worker
        assert worker._retry_at > svc.clock.now() + 10  # backing off, not hammering the server
    finally:
        svc.stop_engine()
    assert svc.status()[0].state is TaskState.STOPPED  # not sticky: the next start retries
    svc.close()


def test_insecure_login_to_remote_host_is_refused_before_storing(automail_home: Path) -> None:
    from automail.errors import InputError

    svc = Service(automail_home)
    svc.add_company("Firma")
    task = make_task(port=25, host="smtp.example.com", username="u")
    with pytest.raises(InputError, match="in clear"):
        svc.add_task(task, "pw")
    assert svc.tasks() == []
    svc.add_task(replace(task, smtp=replace(task.smtp, allow_insecure_auth=True)), "pw")


def test_tags_scope_which_task_sends(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port, tags=("Shop A",)))
    svc.enqueue_raw("Firma", [("a", eml(1))], tag="Shop A")
    svc.enqueue_raw("Firma", [("b", eml(2))], tag="Shop B")
    run_engine_until(svc, lambda: len(smtp_server.messages) == 1)
    assert statuses(svc) == [MessageStatus.SENT, MessageStatus.QUEUED]
    assert svc.status()[0].queued == 0  # the Shop B message is outside this task's scope
    svc.close()


# ---- the worker step by step, with injected time ------------------------------------------------
def _steps(worker: Worker, clock: FakeClock, count: int, advance: bool = True) -> list[float]:
    async def go() -> list[float]:
        sleeps = []
        for _ in range(count):
            sleep = await worker.step(clock.now())
            sleeps.append(sleep)
            if advance and sleep > 0:
                clock.advance(sleep)
        await worker.flush()
        await worker.session.close()
        return sleeps

    return asyncio.run(go())


def _worker(svc: Service, clock: FakeClock, bucket: Throttle, name: str = "Mailing") -> Worker:
    task = svc.task(name)
    company = svc.definitions.company(task.company)
    return Worker(task, company, svc.outbox(task.company), bucket, clock, lambda e: None, None)


def test_worker_spacing_and_restart_without_burst(automail_home: Path, smtp_server: SmtpServer) -> None:
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=smtp_server.port, rate=3000), clock=clock)
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(6)])
    worker = _worker(svc, clock, Throttle(3000))
    _steps(worker, clock, 5)  # send, wait, send, wait, send
    assert len(smtp_server.messages) == 3
    sent = [m.sent_at for m in svc.messages("Firma") if m.sent_at]
    assert [round(b - a, 3) for a, b in itertools.pairwise(sent)] == [1.2, 1.2]
    # "restart": a fresh bucket restored from the outbox's send log
    clock.advance(0.5)
    restored = Throttle(3000)
    restored.restore(svc.outbox("Firma").send_times(svc.task("Mailing").smtp.account_key, clock.now() - 86400))
    worker2 = _worker(svc, clock, restored)
    sleeps = _steps(worker2, clock, 1, advance=False)
    assert sleeps[0] == pytest.approx(0.7)  # no burst: waits out the interval from the last send
    assert len(smtp_server.messages) == 3
    svc.close()


def test_two_tasks_on_one_account_share_the_slowest_bucket(automail_home: Path, smtp_server: SmtpServer) -> None:
    a = make_task("A", port=smtp_server.port, rate=3000, tags=("a",))
    b = make_task("B", port=smtp_server.port, rate=1000, tags=("b",))
    svc = make_service(automail_home, a, b)
    svc.enqueue_raw("Firma", [(f"a{i}", eml(i)) for i in range(3)], tag="a")
    svc.enqueue_raw("Firma", [(f"b{i}", eml(i)) for i in range(3)], tag="b")
    svc.start_engine()
    try:
        assert wait_until(lambda: len(smtp_server.messages) >= 2, 10)
        engine = svc.engine
        assert engine is not None
        buckets = engine._buckets
        assert len(buckets) == 1
        assert next(iter(buckets.values())).rate_per_hour == 1000  # the lower rate wins
        time.sleep(1.0)
        times = sorted(m.time for m in smtp_server.messages)
        assert len(times) == 2  # 3.6 s spacing across both tasks
        assert times[1] - times[0] >= 3.5
    finally:
        svc.stop_engine()
        svc.close()


def test_engine_notices_outside_enqueue_within_two_seconds(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    svc.start_engine()
    try:
        time.sleep(0.5)
        other = Service(automail_home)  # another process's view: separate connections
        other.enqueue_raw("Firma", [("m", eml(1))])
        t0 = time.monotonic()
        smtp_server.wait_for(1, timeout=5)
        assert time.monotonic() - t0 < 2.0
        other.stop_task("Mailing")
        assert wait_until(lambda: "Mailing" not in svc.engine.running_tasks(), 3)
        other.close()
    finally:
        svc.stop_engine()
        svc.close()


def test_engine_start_prunes_the_send_log_but_keeps_the_last_day(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port, rate=None))
    account = svc.task("Mailing").smtp.account_key
    box = svc.outbox("Firma")
    now = svc.clock.now()
    with box.transaction() as conn:  # what earlier runs left: one send 3 days ago, one an hour ago
        for at in (now - 3 * 86400, now - 3600):
            conn.execute("INSERT INTO send_log (account, task, at) VALUES (?,?,?)", (account, "Mailing", at))
    svc.enqueue_raw("Firma", [("m0", eml(0))])
    run_engine_until(svc, lambda: statuses(svc) == [MessageStatus.SENT])
    times = box.send_times(account, 0)
    assert len(times) == 2 and times[0] == now - 3600  # the old entry is gone, the last day is kept
