"""The worker against a real Postfix (tests/postfix.py): per-recipient outcomes (issue 7, defect 1) and
the Date and Message-ID of what AutoMail queues (defect 4). Postfix's own log is the evidence."""

from __future__ import annotations

import re
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from automail.clock import FakeClock
from automail.engine.service import Service
from automail.models import MessageStatus, RecipientStatus
from tests.helpers import eml, make_service, make_task, run_engine_until
from tests.postfix import Postfix

pytestmark = pytest.mark.slow

PROTOCOL_WARNINGS = ("warning:", "improper command pipelining", "bare <LF>", "non-SMTP command", "too many errors")


def _service(home: Path, postfix: Postfix, clock: FakeClock | None = None) -> Service:
    task = make_task(host=postfix.host, port=postfix.plain_port, retry_delays=(60,), max_age_s=600)
    return make_service(home, task, clock=clock) if clock else make_service(home, task)


def _rcpt_lines(log: str, address: str) -> list[str]:
    return [line for line in log.splitlines() if f"to=<{address}>" in line and "RCPT" in line]


def test_a_450_recipient_stays_pending_and_gets_the_message_alone_with_the_same_message_id(
    automail_home: Path, postfix: Postfix
) -> None:
    tag = uuid.uuid4().hex[:8]
    ok, defer, reject = f"ok{tag}@firma.sk", f"defer{tag}@firma.sk", f"reject{tag}@firma.sk"
    clock = FakeClock()
    svc = _service(automail_home, postfix, clock)
    [msg_id] = svc.enqueue_raw("Firma", [("m", eml(1, to=f"{ok}, {defer}, {reject}"))])
    message_id = svc.outbox("Firma").get(msg_id).message_id
    mark = postfix.log_mark()

    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.DEFERRED)
    [copy] = postfix.wait_for(1, message_id=message_id)
    assert copy.delivered_to == ok
    msg = svc.outbox("Firma").get(msg_id)
    assert {r: msg.recipient_state(r).status for r in msg.recipients} == {
        ok: RecipientStatus.SENT,
        defer: RecipientStatus.DEFERRED,
        reject: RecipientStatus.FAILED,
    }
    assert msg.recipient_state(defer).reply.startswith("450 4.2.0")
    assert msg.recipient_state(reject).reply.startswith("550 5.1.1")

    clock.advance(61)  # the message's retry is due: only defer… is asked again
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).attempts == 2)
    log = postfix.log(since=mark)
    assert len(_rcpt_lines(log, defer)) == 2, log  # refused at both attempts
    assert len(_rcpt_lines(log, reject)) == 1, log  # 5xx: never asked again
    assert len(postfix.messages(message_id=message_id)) == 1  # ok… got exactly one copy
    assert svc.outbox("Firma").get(msg_id).status is MessageStatus.DEFERRED
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log
    svc.close()


def test_every_recipient_refused_is_retried_for_the_450_one_only(automail_home: Path, postfix: Postfix) -> None:
    tag = uuid.uuid4().hex[:8]
    defer, reject = f"defer{tag}@firma.sk", f"reject{tag}@firma.sk"
    svc = _service(automail_home, postfix)
    [msg_id] = svc.enqueue_raw("Firma", [("m", eml(1, to=f"{defer}, {reject}"))])
    mark = postfix.log_mark()
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.DEFERRED)
    msg = svc.outbox("Firma").get(msg_id)
    assert msg.pending_recipients == (defer,)  # retried for the 450 one only
    assert msg.recipient_state(reject).status is RecipientStatus.FAILED
    svc.close()  # ends the session: Postfix logs its command counts
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert re.search(r"disconnect from .* rcpt=0/2 ", log), log
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log


def test_messages_arrive_with_a_date_and_a_message_id_in_the_senders_domain(
    automail_home: Path, postfix: Postfix
) -> None:
    to = f"dated{uuid.uuid4().hex[:8]}@example.sk"
    svc = _service(automail_home, postfix)
    svc.enqueue_raw("Firma", [("m", eml(1, to=to))])  # no From, Date or Message-ID
    svc.send("Firma", to=[to], subject="Pripomienka", text="Dobrý deň")  # `send` without --from
    run_engine_until(svc, lambda: len(postfix.messages(to=to)) == 2, timeout=30)
    for copy in postfix.messages(to=to):
        assert copy.message_id is not None and copy.message_id.endswith("@firma.sk>")
        assert len(copy.message.get_all("Date") or []) == 1
        assert abs(parsedate_to_datetime(str(copy.message["Date"])).timestamp() - svc.clock.now()) < 120
    svc.close()
