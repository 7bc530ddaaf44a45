"""Per-recipient outcomes (issue 7, defect 1): a 4xx recipient stays pending, a 5xx one fails alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from automail.clock import FakeClock
from automail.engine.outcome import classify
from automail.engine.service import Service
from automail.engine.smtp import SmtpSession
from automail.engine.smtp.timeouts import Timeouts
from automail.errors import FaultKind, Reply, SmtpError
from automail.models import EventKind, MessageStatus, RecipientState, RecipientStatus
from tests.helpers import cli, eml, make_service, make_task, run_engine_until, setup_task, wait_until
from tests.smtpd import SmtpServer

OK, DEFER, BAD = "ok@example.com", "defer@example.com", "bad@example.com"
GREYLISTED = "450 4.2.0 <defer@example.com>: Recipient address rejected: Greylisted"
NO_SUCH_USER = "550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown"


def _states(svc: Service, msg_id: int = 1) -> dict[str, RecipientStatus]:
    msg = svc.outbox("Firma").get(msg_id)
    return {r: msg.recipient_state(r).status for r in msg.recipients}


@pytest.fixture(params=[False, True], ids=["plain", "pipelining"])
def server(request: pytest.FixtureRequest) -> SmtpServer:
    srv = SmtpServer(pipelining=request.param).start()
    request.addfinalizer(srv.close)
    return srv


def test_a_4xx_recipient_stays_pending_and_gets_the_same_message_later(automail_home: Path, server: SmtpServer) -> None:
    server.rcpt_replies = {DEFER: GREYLISTED}
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=server.port, retry_delays=(60, 300)), clock=clock)
    [msg_id] = svc.enqueue_raw("Firma", [("m", eml(1, to=f"{OK}, {DEFER}"))])
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.DEFERRED)
    msg = svc.outbox("Firma").get(msg_id)
    assert [m.rcpt_tos for m in server.messages] == [[OK]]
    assert _states(svc) == {OK: RecipientStatus.SENT, DEFER: RecipientStatus.DEFERRED}
    assert msg.recipient_state(DEFER).reply.startswith("450 4.2.0")
    assert msg.last_error_code == 450 and "delivered to ok@example.com" in msg.last_error
    assert msg.next_attempt_at == pytest.approx(clock.now() + 60)  # the message's retry schedule

    server.rcpt_replies = {}  # greylisting over
    clock.advance(61)
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.SENT)
    first, second = server.messages
    assert second.rcpt_tos == [DEFER]  # only to the recipient still pending: ok@ gets no second copy
    assert second.message_id == first.message_id == msg.message_id
    assert _states(svc) == {OK: RecipientStatus.SENT, DEFER: RecipientStatus.SENT}
    assert svc.outbox("Firma").get(msg_id).attempts == 2
    svc.close()


def test_all_refused_some_4xx_some_5xx_is_retried_for_the_4xx_ones_only(
    automail_home: Path, server: SmtpServer
) -> None:
    server.rcpt_replies = {DEFER: GREYLISTED, BAD: NO_SUCH_USER}
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=server.port, retry_delays=(60,)), clock=clock)
    [msg_id] = svc.enqueue_raw("Firma", [("m", eml(1, to=f"{DEFER}, {BAD}"))])
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.DEFERRED)
    assert server.messages == []
    assert _states(svc) == {DEFER: RecipientStatus.DEFERRED, BAD: RecipientStatus.FAILED}

    server.rcpt_replies = {}  # the server would take bad@ now too: it must not be asked again
    server.clear()
    clock.advance(61)
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.SENT)
    assert [m.rcpt_tos for m in server.messages] == [[DEFER]]
    assert not any(b"RCPT TO:<bad@example.com>" in p for p in server.packets)
    msg = svc.outbox("Firma").get(msg_id)
    assert _states(svc) == {DEFER: RecipientStatus.SENT, BAD: RecipientStatus.FAILED}
    assert msg.refused == {BAD: NO_SUCH_USER}  # the 5xx stays on record
    svc.close()


def test_a_5xx_recipient_is_recorded_and_never_retried(automail_home: Path, server: SmtpServer) -> None:
    server.rcpt_replies = {BAD: NO_SUCH_USER}
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [("m", eml(1, to=f"{OK}, {BAD}"))])
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.SENT)
    assert _states(svc) == {OK: RecipientStatus.SENT, BAD: RecipientStatus.FAILED}
    assert svc.outbox("Firma").get(1).next_attempt_at is None
    svc.close()


def test_a_recipient_still_4xx_after_the_maximum_age_fails_but_the_message_was_delivered(
    automail_home: Path, server: SmtpServer
) -> None:
    server.rcpt_replies = {DEFER: GREYLISTED}
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=server.port, retry_delays=(60,), max_age_s=100), clock=clock)
    svc.enqueue_raw("Firma", [("m", eml(1, to=f"{OK}, {DEFER}"))])
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.DEFERRED)
    clock.advance(61)
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is not MessageStatus.DEFERRED)
    msg = svc.outbox("Firma").get(1)
    assert msg.status is MessageStatus.SENT  # ok@ has it
    assert msg.recipient_state(DEFER).status is RecipientStatus.FAILED
    assert msg.recipient_state(DEFER).reply.startswith("gave up after 2 attempts")
    assert [m.rcpt_tos for m in server.messages] == [[OK]]
    svc.close()


def test_outbox_json_shows_each_recipient_and_retry_takes_a_deferred_message(
    automail_home: Path, server: SmtpServer
) -> None:
    setup_task(server.port, "--unlimited")
    server.rcpt_replies = {DEFER: GREYLISTED}
    path = automail_home.parent / "m.eml"
    path.write_bytes(eml(1, to=f"{OK}, {DEFER}"))
    cli("enqueue", "--company", "Firma", str(path))
    cli("task", "start", "Mailing")
    svc = Service(automail_home)
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.DEFERRED)
    svc.close()
    [doc] = json.loads(cli("outbox", "--company", "Firma", "--json").stdout)
    assert doc["status"] == "deferred"
    assert doc["recipients"] == {
        OK: {"state": "sent", "reply": doc["recipients"][OK]["reply"]},
        DEFER: {"state": "deferred", "reply": GREYLISTED},
    }
    assert "queued as" in doc["recipients"][OK]["reply"]
    # `retry` takes it (before the fix the message was "sent" and retry refused it) …
    assert "1 message(s) queued again" in cli("retry", "--company", "Firma", "1").stdout
    server.rcpt_replies = {}
    server.clear()
    svc = Service(automail_home)
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.SENT)
    svc.close()
    # … and sends only to the recipient that did not have it
    assert [m.rcpt_tos for m in server.messages] == [[DEFER]]


def test_retrying_a_failed_message_keeps_the_recipients_that_got_it(automail_home: Path, server: SmtpServer) -> None:
    server.rcpt_replies = {DEFER: GREYLISTED}
    clock = FakeClock()
    svc = make_service(automail_home, make_task(port=server.port, retry_delays=(60,), max_age_s=30), clock=clock)
    svc.enqueue_raw("Firma", [("m", eml(1, to=f"{DEFER}, {BAD}"))])
    server.rcpt_replies = {DEFER: GREYLISTED, BAD: NO_SUCH_USER}
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.FAILED)
    assert svc.retry("Firma", [1]) == 1
    assert _states(svc) == {DEFER: RecipientStatus.QUEUED, BAD: RecipientStatus.QUEUED}
    server.rcpt_replies = {}
    run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.SENT)
    assert [m.rcpt_tos for m in server.messages] == [[DEFER, BAD]]
    svc.close()


def test_engine_events_say_deferred_for_a_partly_delivered_message(automail_home: Path, server: SmtpServer) -> None:
    server.rcpt_replies = {DEFER: GREYLISTED}
    svc = make_service(automail_home, make_task(port=server.port))
    events = []
    svc.subscribe(events.append)
    svc.enqueue_raw("Firma", [("m", eml(1, to=f"{OK}, {DEFER}"))])
    run_engine_until(svc, lambda: any(e.kind is EventKind.DEFERRED for e in events))
    [event] = [e for e in events if e.message_id == 1]
    assert "defer@example.com: 450" in event.detail and "delivered to ok@example.com" in event.detail
    assert wait_until(lambda: svc.outbox("Firma").get(1).status is MessageStatus.DEFERRED, 2)
    svc.close()


def test_no_answer_to_the_final_dot_is_recorded_as_an_unknown_outcome(automail_home: Path) -> None:
    server = SmtpServer().start()
    try:
        server.stall_seconds = 3  # the server sits on the final dot
        timeouts = replace(Timeouts.for_timeout(0.5), final_dot=1.0)
        svc = make_service(
            automail_home,
            make_task(port=server.port, timeout=0.5),
            session_factory=lambda t, p: SmtpSession(t.smtp, p, timeouts=timeouts),
        )
        svc.enqueue_raw("Firma", [("m", eml(1, to=OK))])
        run_engine_until(svc, lambda: svc.outbox("Firma").get(1).status is MessageStatus.DEFERRED)
        msg = svc.outbox("Firma").get(1)
        assert msg.last_error.startswith("outcome unknown: it may have been delivered")
        assert msg.recipient_state(OK).status is RecipientStatus.UNKNOWN  # not an ordinary deferral
        assert msg.next_attempt_at is not None  # sent again on its schedule: a duplicate, never a loss
        assert MessageStatus.DEFERRED.value == msg.to_json()["status"]
        assert msg.to_json()["recipients"][OK]["state"] == "unknown"
        svc.close()
    finally:
        server.close()


# ---- the classify step alone --------------------------------------------------------------------
def _stored(svc: Service) -> tuple:
    box = svc.outbox("Firma")
    return box.get(1), box


def test_classify_an_unknown_outcome_says_so_and_is_tried_again(automail_home: Path) -> None:
    svc = Service(automail_home)
    svc.add_company("Firma")
    svc.enqueue_raw("Firma", [("m", eml(1, to=OK))])
    msg, _box = _stored(svc)
    task = make_task(port=25)
    error = SmtpError("no reply to the final dot in 600 s", kind=FaultKind.TRANSIENT, outcome_unknown=True)
    outcome = classify(msg, msg.created_at, task, msg.created_at + 1, "", {}, error)
    assert outcome.status is MessageStatus.DEFERRED
    assert outcome.recipients[OK].status is RecipientStatus.UNKNOWN
    assert outcome.error.startswith("outcome unknown: it may have been delivered")


def test_classify_keeps_sent_recipients_and_codes(automail_home: Path) -> None:
    svc = Service(automail_home)
    svc.add_company("Firma")
    svc.enqueue_raw("Firma", [("m", eml(1, to=f"{OK}, {DEFER}, {BAD}"))])
    msg, _box = _stored(svc)
    task = make_task(port=25)
    outcome = classify(
        msg, msg.created_at, task, msg.created_at, "250 queued", {DEFER: Reply(451, "later"), BAD: Reply(550, "no")}
    )
    assert outcome.status is MessageStatus.DEFERRED and outcome.code == 451
    assert outcome.recipients == {
        OK: RecipientState(RecipientStatus.SENT, "250 queued"),
        DEFER: RecipientState(RecipientStatus.DEFERRED, "451 later"),
        BAD: RecipientState(RecipientStatus.FAILED, "550 no"),
    }
