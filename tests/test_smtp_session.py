"""The SMTP client (engine/smtp) against real aiosmtpd servers on 127.0.0.1: each defect of issue 7 it fixes."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import EmailMessage
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from automail.engine.smtp import SendResult, SmtpSession, classify, session
from automail.engine.smtp.encode import to_7bit
from automail.engine.smtp.timeouts import Timeouts
from automail.errors import FaultKind, Reply, SmtpError
from automail.models import MessageStatus, Security, SmtpSettings, TaskState
from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.helpers import cli, eml, make_service, make_task, run_engine_until, session_connect_error, setup_task
from tests.smtpd import RawServer, SmtpServer

SENDER = "info@firma.sk"
FAST = Timeouts(command=2, greeting=2, envelope=2, data_block=2, final_dot=2, quit=1)


def settings(port: int, **kw: Any) -> SmtpSettings:
    kw.setdefault("security", Security.NONE)
    return SmtpSettings(host="127.0.0.1", port=port, sender=SENDER, **kw)


async def _send(
    smtp: SmtpSettings,
    raw: bytes,
    rcpts: tuple[str, ...] = ("a@example.com",),
    *,
    password: str | None = None,
    timeouts: Timeouts = FAST,
) -> SendResult:
    s = SmtpSession(smtp, password, timeouts=timeouts)
    try:
        return await s.send(SENDER, rcpts, raw)
    finally:
        await s.close()


def send(smtp: SmtpSettings, raw: bytes = b"", *args: Any, **kw: Any) -> SendResult:
    return asyncio.run(_send(smtp, raw or eml(1), *args, **kw))


def failure(smtp: SmtpSettings, raw: bytes = b"", *args: Any, **kw: Any) -> SmtpError:
    with pytest.raises(SmtpError) as caught:
        send(smtp, raw, *args, **kw)
    return caught.value


def connect_failure(smtp: SmtpSettings, password: str | None = None) -> SmtpError:
    return session_connect_error(smtp, password, FAST)


def commands(server: SmtpServer, verb: bytes) -> int:
    return sum(p.count(verb) for p in server.packets)


@pytest.fixture(params=["smtp_server_pipelining", "smtp_server"], ids=["pipelining", "one-by-one"])
def server(request: pytest.FixtureRequest) -> SmtpServer:
    s: SmtpServer = request.getfixturevalue(request.param)
    return s


# ---- defect 1 (protocol side): refused recipients ------------------------------------------
def test_every_recipient_refused_ends_with_rset(server: SmtpServer) -> None:
    server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user", "busy@example.com": "450 4.2.1 Busy"}

    async def go() -> tuple[SmtpError, SendResult]:
        s = SmtpSession(settings(server.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as refused:
                await s.send(SENDER, ("gone@example.com", "busy@example.com"), eml(1))
            return refused.value, await s.send(SENDER, ("ok@example.com",), eml(2))
        finally:
            await s.close()

    error, after = asyncio.run(go())
    assert error.kind is FaultKind.TRANSIENT  # one refusal is temporary: retry that one later
    assert error.refused == {
        "gone@example.com": Reply(550, "5.1.1 No such user"),
        "busy@example.com": Reply(450, "4.2.1 Busy"),
    }
    # Pipelined, the refused message's DATA went with its envelope (refused: no body sent); one by
    # one, DATA is sent only for the next message.
    assert commands(server, b"DATA\r\n") == (2 if server.pipelining else 1)
    assert commands(server, b"RSET\r\n") == 1
    assert after.refused == {} and server.connections == 1
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.com"]]


def _data_with_envelope(server: SmtpServer) -> list[bool]:
    """For each DATA the client sent: whether it came in one write with a RCPT TO (pipelined)."""
    return [b"RCPT TO:" in p for p in server.packets if b"DATA\r\n" in p]


def test_all_refused_recipients_stop_pipelined_data_for_the_rest_of_the_connection(server: SmtpServer) -> None:
    """The adaptive rule (transaction.py): DATA goes with the envelope until a message has no recipient
    accepted; then it waits for the RCPT replies on that connection, and a new connection starts over."""
    server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    refusal = {"gone@example.com": Reply(550, "5.1.1 No such user")}

    async def go() -> list[SmtpError | SendResult]:
        s = SmtpSession(settings(server.port), None, timeouts=FAST)
        results: list[SmtpError | SendResult] = []
        try:
            for i, to in enumerate(["ok@example.com", "gone@example.com", "gone@example.com", "ok@example.com"]):
                try:
                    results.append(await s.send(SENDER, (to,), eml(i)))
                except SmtpError as exc:
                    results.append(exc)
            await s.close()  # the next message opens a new connection
            results.append(await s.send(SENDER, ("ok@example.com",), eml(9)))
        finally:
            await s.close()
        return results

    first, refused, refused_again, after, new_connection = asyncio.run(go())
    for error in (refused, refused_again):  # the same error, whether DATA was pipelined or not
        assert isinstance(error, SmtpError) and error.kind is FaultKind.PERMANENT and error.refused == refusal
    assert all(isinstance(r, SendResult) for r in (first, after, new_connection))
    assert server.connections == 2 and commands(server, b"RSET\r\n") == 2
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.com"]] * 3
    if server.pipelining:
        # first, the first refused (its DATA refused, no body), after (DATA alone), a new connection
        assert _data_with_envelope(server) == [True, True, False, True]
    else:
        assert _data_with_envelope(server) == [False, False, False]


def test_a_server_that_says_354_without_recipients_gets_no_message(smtp_server_pipelining: SmtpServer) -> None:
    """A broken server accepts a pipelined DATA although every recipient was refused: the client ends
    the data at once (the final dot alone), reports the refusal, and the connection goes on."""
    server = smtp_server_pipelining
    server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    server.data_without_recipients = True
    hooks: list[tuple[str, int]] = []

    async def commit() -> None:  # the previous result's commit: it ends before even this lone dot
        await asyncio.sleep(0.2)
        hooks.append(("committed", len(server.messages)))

    async def go() -> tuple[SmtpError, SendResult]:
        s = SmtpSession(settings(server.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as refused:
                await s.send(SENDER, ("gone@example.com",), eml(1), commit)
            return refused.value, await s.send(SENDER, ("ok@example.com",), eml(2))
        finally:
            await s.close()

    error, after = asyncio.run(go())
    assert error.refused == {"gone@example.com": Reply(550, "5.1.1 No such user")}
    assert hooks == [("committed", 0)]  # awaited, and before the server had the (empty) message
    nothing, delivered = server.messages  # what the broken server "accepted" for nobody: no data at all
    assert nothing.rcpt_tos == [""] and nothing.data == b""
    assert delivered.rcpt_tos == ["ok@example.com"] and b"Subject" in delivered.data and after.refused == {}
    assert server.connections == 1 and _data_with_envelope(server) == [True, False]


def test_every_recipient_refused_permanently_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user"}
    error = failure(settings(smtp_server.port), eml(1), ("gone@example.com",))
    assert error.kind is FaultKind.PERMANENT and error.code == 550
    assert error.refused == {"gone@example.com": Reply(550, "5.1.1 No such user")}


def test_partial_refusal_lists_each_refused_recipient_with_its_code(server: SmtpServer) -> None:
    server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user", "busy@example.com": "450 4.2.1 Busy"}
    result = send(settings(server.port), eml(1), ("gone@example.com", "ok@example.com", "busy@example.com"))
    assert result.refused == {
        "gone@example.com": Reply(550, "5.1.1 No such user"),
        "busy@example.com": Reply(450, "4.2.1 Busy"),
    }
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.com"]]


# ---- defect 2: size ------------------------------------------------------------------------
def test_message_over_the_announced_size_fails_alone_before_sending(smtp_server: SmtpServer) -> None:
    smtp_server.size_limit = 10_240_000

    async def go() -> tuple[SmtpError, SendResult]:
        s = SmtpSession(settings(smtp_server.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as too_big:
                await s.send(SENDER, ("a@example.com",), eml(1) + b"x" * 10_240_000)
            return too_big.value, await s.send(SENDER, ("b@example.com",), eml(2))
        finally:
            await s.close()

    error, after = asyncio.run(go())
    assert error.kind is FaultKind.PERMANENT and error.code == 552
    assert "is larger than the server's limit of 10,240,000 bytes" in str(error)
    assert commands(smtp_server, b"MAIL FROM") == 1  # the big one never left
    assert after.reply and [m.rcpt_tos for m in smtp_server.messages] == [["b@example.com"]]


def test_size_refusal_on_mail_from_fails_that_message_not_the_task(automail_home: Path, server: SmtpServer) -> None:
    server.mail_reply = "552 5.3.4 Message size exceeds fixed limit"
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [("m1", eml(1)), ("m2", eml(2))])
    run_engine_until(svc, lambda: all(m.status is MessageStatus.FAILED for m in svc.messages("Firma")))
    assert svc.status()[0].state is not TaskState.ERROR
    assert all("larger than" in m.last_error for m in svc.messages("Firma"))
    # A refused MAIL stops pipelined DATA on the connection too: only the first message's DATA went
    # (with its envelope, refused by the server); one by one, none.
    assert server.connections == 1 and commands(server, b"DATA\r\n") == (1 if server.pipelining else 0)
    svc.close()


def test_size_refusal_after_the_data_fails_the_message(smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["552 5.3.4 Message size exceeds fixed limit"]
    error = failure(settings(smtp_server.port))
    assert error.kind is FaultKind.PERMANENT and error.code == 552 and "larger than" in str(error)


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("552 5.3.4 Message size exceeds fixed limit", FaultKind.PERMANENT),
        ("552 Message too big", FaultKind.PERMANENT),
        ("555 5.5.4 Unsupported option: BODY=8BITMIME", FaultKind.PERMANENT),
        ("550 5.5.0 Message refused", FaultKind.PERMANENT),
        ("553 5.7.1 Sender address rejected: not owned by user", FaultKind.TASK_FATAL),
        ("550 5.1.8 Sender address rejected: Domain not found", FaultKind.TASK_FATAL),
        ("530 5.7.0 Authentication required", FaultKind.TASK_FATAL),
        ("553 sender not allowed", FaultKind.TASK_FATAL),
        ("451 4.3.0 Try again later", FaultKind.TRANSIENT),
    ],
)
def test_a_mail_from_refusal_stops_the_task_only_when_it_is_about_the_sender(reply: str, kind: FaultKind) -> None:
    code, text = reply.split(" ", 1)
    assert classify.mail_refused("smtp.firma.sk:587", SENDER, Reply(int(code), text), 2000, None).kind is kind


# ---- defect 3: nothing escapes the classifier ----------------------------------------------
@pytest.fixture
def auth_after_tls(server_cert: Path) -> Iterator[SmtpServer]:
    """Postfix's habit: STARTTLS offered, AUTH only once TLS is up."""
    srv = SmtpServer(starttls=True, certfile=server_cert, keyfile=server_cert.with_name("key.pem"))
    srv.auth = {AUTH_USER: AUTH_PASSWORD}
    srv.auth_require_tls = True
    with srv:
        yield srv


def test_login_offered_only_after_tls_with_security_none_says_choose_starttls(auth_after_tls: SmtpServer) -> None:
    error = connect_failure(settings(auth_after_tls.port, username=AUTH_USER), AUTH_PASSWORD)
    assert error.kind is FaultKind.TASK_FATAL
    assert "offers login only over TLS — choose STARTTLS" in str(error)


def test_login_only_after_tls_stops_the_task_and_leaves_nothing_sending(
    automail_home: Path, auth_after_tls: SmtpServer
) -> None:
    task = make_task(port=auth_after_tls.port, username=AUTH_USER)
    svc = make_service(automail_home, task, password=AUTH_PASSWORD)
    svc.enqueue_raw("Firma", [("m1", eml(1)), ("m2", eml(2))])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    assert "choose STARTTLS" in svc.status()[0].last_error
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.QUEUED] * 2
    # the advice works
    svc.edit_task(task.name, lambda t: replace(t, smtp=replace(t.smtp, security=Security.STARTTLS, verify_certs=False)))
    svc.start_task(task.name)
    run_engine_until(svc, lambda: len(auth_after_tls.messages) == 2)
    svc.close()


def test_a_server_that_is_not_smtp_is_a_task_error_with_its_text() -> None:
    with RawServer(b"HTTP/1.1 400 Bad Request\r\n\r\n") as raw:
        error = connect_failure(settings(raw.port))
    assert error.kind is FaultKind.TASK_FATAL and "Malformed SMTP response" in str(error)


def test_any_library_exception_becomes_a_task_error() -> None:
    s = SmtpSession(settings(25), None)
    error = s._setup_error(aiosmtplib.SMTPException("something new"))
    assert error.kind is FaultKind.TASK_FATAL and "something new" in str(error)


# ---- defect 5: TLS faults by type, never by text -------------------------------------------
def test_a_refused_connection_to_a_host_named_ssl_is_not_a_tls_fault() -> None:
    s = SmtpSession(SmtpSettings(host="ssl0.ovh.net", port=587, sender=SENDER), None)
    exc = aiosmtplib.SMTPConnectError("Error connecting to ssl0.ovh.net on port 587: [Errno 111] Connect call failed")
    exc.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    error = s._setup_error(exc)
    assert error.kind is FaultKind.TASK_RETRY and "TLS" not in str(error)


def test_untrusted_certificate_names_the_ca_file_option(smtp_tls_server: SmtpServer) -> None:
    error = connect_failure(settings(smtp_tls_server.port, security=Security.TLS))
    assert error.kind is FaultKind.TASK_FATAL
    assert "certificate could not be verified" in str(error) and "--ca-file" in str(error)


# ---- defect 13: a per-task CA file -----------------------------------------------------------
def test_ca_file_trusts_the_servers_own_certificate(smtp_tls_server: SmtpServer, server_cert: Path) -> None:
    send(settings(smtp_tls_server.port, security=Security.TLS, ca_file=str(server_cert)))
    assert len(smtp_tls_server.messages) == 1


def test_ca_file_over_starttls(smtp_starttls_server: SmtpServer, server_cert: Path) -> None:
    send(settings(smtp_starttls_server.port, security=Security.STARTTLS, ca_file=str(server_cert)))
    assert len(smtp_starttls_server.messages) == 1


def test_an_unreadable_ca_file_says_so(smtp_tls_server: SmtpServer, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    error = connect_failure(settings(smtp_tls_server.port, security=Security.TLS, ca_file=str(bad)))
    assert error.kind is FaultKind.TASK_FATAL and "CA file" in str(error) and str(bad) in str(error)


# ---- defect 6: 8-bit bodies ----------------------------------------------------------------
def _slovak() -> bytes:
    msg = EmailMessage()
    msg["To"] = "a@example.com"
    msg["Subject"] = "Faktúra"
    msg.set_content("Dobrý deň,\nv prílohe je faktúra č. 1.\n" + "dlhý riadok " * 120 + "\n", cte="8bit")
    msg.add_attachment(bytes(range(256)) * 4, maintype="application", subtype="octet-stream", filename="a.bin")
    att = msg.get_payload()[1]
    del att["Content-Transfer-Encoding"]
    att["Content-Transfer-Encoding"] = "binary"  # as some generators write raw attachments
    att.set_payload((bytes(range(256)) * 4).decode("latin-1"), "latin-1")
    return msg.as_bytes(policy=email.policy.SMTP.clone(cte_type="8bit"))


def _texts(data: bytes) -> tuple[str, bytes]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    text, att = list(msg.iter_parts())
    payload = att.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return str(text.get_content()), payload


def test_8bit_body_is_declared_when_the_server_offers_8bitmime(smtp_server: SmtpServer) -> None:
    raw = eml(1) + "Dobrý deň\r\n".encode()
    send(settings(smtp_server.port), raw)
    got = smtp_server.messages[0]
    assert "BODY=8BITMIME" in got.mail_options
    assert got.data == raw


def test_8bit_body_is_re_encoded_when_the_server_lacks_8bitmime(smtp_server: SmtpServer) -> None:
    smtp_server.eightbitmime = False
    raw = _slovak()
    send(settings(smtp_server.port), raw)
    got = smtp_server.messages[0]
    assert not any(o.startswith("BODY=") for o in got.mail_options)
    assert got.data.isascii() and max(len(x) for x in got.data.splitlines()) <= 998
    assert _texts(got.data) == _texts(raw)  # the same text and attachment, in 7 bits


def test_to_7bit_leaves_a_7bit_message_and_keeps_headers() -> None:
    raw = _slovak()
    seven = to_7bit(raw)
    assert seven.isascii()
    assert seven.split(b"\r\n\r\n")[0] == raw.split(b"\r\n\r\n")[0]  # the headers, byte for byte
    assert to_7bit(seven) == seven


# ---- defect 7: timeouts --------------------------------------------------------------------
def test_timeouts_follow_rfc_5321_scaled_to_the_task_timeout() -> None:
    t = Timeouts.for_timeout(30)
    assert (t.command, t.greeting, t.envelope, t.data_block, t.final_dot) == (30, 60, 60, 60, 600)


def test_a_slow_reply_to_mail_from_times_out_on_that_step(smtp_server: SmtpServer) -> None:
    smtp_server.delays = {"MAIL": 2}
    error = failure(settings(smtp_server.port), timeouts=replace(FAST, envelope=0.5))
    assert error.kind is FaultKind.TRANSIENT and not error.outcome_unknown
    assert "did not answer MAIL FROM within 0.5 s" in str(error)


def test_no_reply_to_the_final_dot_is_an_unknown_outcome(smtp_server: SmtpServer) -> None:
    smtp_server.stall_seconds = 3
    start = time.monotonic()
    error = failure(settings(smtp_server.port), timeouts=replace(FAST, final_dot=1))
    assert time.monotonic() - start < 2.5
    assert error.kind is FaultKind.TRANSIENT and error.outcome_unknown
    assert "may have been delivered" in str(error)


def test_connection_lost_after_the_final_dot_is_an_unknown_outcome(smtp_server: SmtpServer) -> None:
    smtp_server.drop_on_data = 1
    error = failure(settings(smtp_server.port))
    assert error.kind is FaultKind.TRANSIENT and error.outcome_unknown


def test_connection_lost_before_the_dot_is_an_ordinary_deferral(smtp_server: SmtpServer) -> None:
    smtp_server.delays = {"RCPT": 2}
    error = failure(settings(smtp_server.port), timeouts=replace(FAST, envelope=0.3))
    assert error.kind is FaultKind.TRANSIENT and not error.outcome_unknown


# ---- defect 11: login, QUIT, EHLO ------------------------------------------------------------
def test_a_wrong_password_is_tried_once_and_the_session_ends_with_quit(smtp_server_auth: SmtpServer) -> None:
    error = connect_failure(settings(smtp_server_auth.port, username=AUTH_USER), "wrong")
    assert error.kind is FaultKind.TASK_FATAL and "535" in str(error)
    assert smtp_server_auth.auth_failures == 1  # not PLAIN and then LOGIN
    time.sleep(0.2)
    assert smtp_server_auth.packets[-1] == b"QUIT\r\n"


def test_quit_before_close(smtp_server: SmtpServer) -> None:
    send(settings(smtp_server.port))
    time.sleep(0.2)
    assert smtp_server.packets[-1] == b"QUIT\r\n"


def test_ehlo_names_the_fqdn_or_the_address_literal(smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "_fqdn", "vm")  # a bare host name is no FQDN
    send(settings(smtp_server.port))
    monkeypatch.setattr(session, "_fqdn", "pc7.office.firma.sk")
    send(settings(smtp_server.port))
    assert smtp_server.ehlo_names == ["[127.0.0.1]", "pc7.office.firma.sk"]


# ---- defect 12: the security setting does not match the port ----------------------------------
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
def test_plain_start_on_an_ssl_tls_port_says_choose_ssl_tls_fast(
    smtp_tls_server: SmtpServer, security: Security
) -> None:
    start = time.monotonic()
    error = connect_failure(settings(smtp_tls_server.port, security=security))
    assert time.monotonic() - start < 5
    assert error.kind is FaultKind.TASK_FATAL and "choose SSL/TLS" in str(error)


@pytest.mark.parametrize("fixture", ["smtp_server", "smtp_starttls_server"])
def test_ssl_tls_on_a_plain_port_says_choose_starttls_fast(request: pytest.FixtureRequest, fixture: str) -> None:
    srv: SmtpServer = request.getfixturevalue(fixture)
    start = time.monotonic()
    error = connect_failure(settings(srv.port, security=Security.TLS))
    assert time.monotonic() - start < 5
    assert error.kind is FaultKind.TASK_FATAL and "choose STARTTLS" in str(error)


def test_a_silent_server_is_no_tls_port_but_unreachable() -> None:
    with RawServer(None) as raw:
        error = connect_failure(settings(raw.port, security=Security.STARTTLS))
    assert error.kind is FaultKind.TASK_RETRY and "did not answer the greeting within 2 s" in str(error)


def test_a_server_that_began_its_greeting_is_never_probed_for_tls() -> None:
    # Postfix's postscreen sends "220-" and keeps the client waiting: a TLS probe would be a pregreet.
    with RawServer(b"220-mail.firma.sk ESMTP please wait\r\n") as raw:
        error = connect_failure(settings(raw.port, security=Security.STARTTLS))
        assert raw.connections == 1
    assert error.kind is FaultKind.TASK_RETRY and "did not answer the greeting" in str(error)


# ---- defect 16: PIPELINING -------------------------------------------------------------------
def _pipelined(server: SmtpServer) -> int:
    return sum(b"MAIL FROM:" in p and b"RCPT TO:" in p for p in server.packets)


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
def test_pipelining_over_tls(server_cert: Path, security: Security) -> None:
    tls = {"starttls": security is Security.STARTTLS, "tls": security is Security.TLS}
    srv = SmtpServer(pipelining=True, certfile=server_cert, keyfile=server_cert.with_name("key.pem"), **tls)
    with srv:
        result = send(settings(srv.port, security=security, ca_file=str(server_cert)), eml(1), ("a@x.sk", "b@x.sk"))
        assert result.refused == {} and [m.rcpt_tos for m in srv.messages] == [["a@x.sk", "b@x.sk"]]
        assert _pipelined(srv) == 1  # the packets are recorded after decryption


def test_pipelining_can_be_turned_off_per_task(smtp_server_pipelining: SmtpServer) -> None:
    send(settings(smtp_server_pipelining.port, pipelining=False), eml(1), ("a@x.sk", "b@x.sk"))
    assert len(smtp_server_pipelining.messages) == 1 and _pipelined(smtp_server_pipelining) == 0


def test_a_protocol_error_while_pipelining_turns_it_off_for_the_session(smtp_server_pipelining: SmtpServer) -> None:
    smtp_server_pipelining.rcpt_replies = {"b@x.sk": "554 5.5.0 Error: SMTP protocol synchronization"}

    async def go() -> SmtpError:
        s = SmtpSession(settings(smtp_server_pipelining.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as fault:
                await s.send(SENDER, ("a@x.sk", "b@x.sk"), eml(1))
            assert not s.pipelining
            smtp_server_pipelining.rcpt_replies = {}
            await s.send(SENDER, ("a@x.sk", "b@x.sk"), eml(2))
            return fault.value
        finally:
            await s.close()

    fault = asyncio.run(go())
    assert fault.kind is FaultKind.TRANSIENT and "PIPELINING is turned off" in str(fault)
    assert len(smtp_server_pipelining.messages) == 1 and _pipelined(smtp_server_pipelining) == 1  # the first only


def test_a_protocol_error_to_a_pipelined_data_is_a_pipelining_fault(server: SmtpServer) -> None:
    """DATA answered "need RCPT" although a recipient was accepted: the server lost step with the
    pipelined group.  One by one, the same reply is an ordinary refusal of DATA."""
    server.data_command_replies = ["503 5.5.1 Error: need RCPT command"]

    async def go() -> tuple[SmtpError, bool, SendResult]:
        s = SmtpSession(settings(server.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as refused:
                await s.send(SENDER, ("a@x.sk",), eml(1))
            return refused.value, s.pipelining, await s.send(SENDER, ("a@x.sk",), eml(2))
        finally:
            await s.close()

    error, pipelining_after, after = asyncio.run(go())
    if server.pipelining:
        assert isinstance(error, classify.PipeliningFault) and "PIPELINING is turned off" in str(error)
        assert error.kind is FaultKind.TRANSIENT and not pipelining_after and server.connections == 2
    else:
        assert not isinstance(error, classify.PipeliningFault) and "refused DATA: 503" in str(error)
        assert error.kind is FaultKind.PERMANENT and server.connections == 1
    assert after.refused == {} and len(server.messages) == 1


@pytest.mark.parametrize("closing_at", ["MAIL", "RCPT"])
def test_a_421_in_the_pipelined_group_defers_the_message_and_keeps_pipelining(
    smtp_server_pipelining: SmtpServer, closing_at: str
) -> None:
    """The server says 421 and closes (Postfix after too many errors, a server going down): the replies
    after it never come, which is no protocol error of the server's — the message waits for a new
    connection, which pipelines as before."""
    server = smtp_server_pipelining
    closing = "421 4.7.0 Error: too many errors"
    if closing_at == "MAIL":
        server.mail_reply = closing
    else:
        server.rcpt_replies = {"a@x.sk": closing}

    async def go() -> tuple[SmtpError, bool, SendResult]:
        s = SmtpSession(settings(server.port), None, timeouts=FAST)
        try:
            with pytest.raises(SmtpError) as closed:
                await s.send(SENDER, ("a@x.sk",), eml(1))
            server.mail_reply, server.rcpt_replies = None, {}
            return closed.value, s.pipelining, await s.send(SENDER, ("a@x.sk",), eml(2))
        finally:
            await s.close()

    error, pipelining_after, after = asyncio.run(go())
    assert not isinstance(error, classify.PipeliningFault), error
    assert error.kind is FaultKind.TRANSIENT and error.code == 421 and "too many errors" in str(error)
    assert pipelining_after and after.refused == {} and server.connections == 2
    assert len(server.messages) == 1 and _pipelined(server) == 2  # both envelopes pipelined


def test_aiosmtplib_is_the_major_version_the_transaction_was_written_for() -> None:
    # transaction.py swaps the transport's protocol: pyproject.toml pins aiosmtplib to 5.x
    assert version("aiosmtplib").split(".")[0] == "5"


# ---- the task options on the command line ------------------------------------------------------
def _smtp_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli("task", "list", "--json").stdout)[0]["smtp"]
    return doc


def test_cli_ca_file_verify_and_pipelining_options(smtp_tls_server: SmtpServer, server_cert: Path) -> None:
    setup_task(smtp_tls_server.port, "--no-verify-certs", "--no-pipelining")
    assert _smtp_doc()["verify_certs"] is False and _smtp_doc()["pipelining"] is False
    cli("task", "edit", "Mailing", "--security", "tls", "--port", str(smtp_tls_server.port), "--verify-certs")
    failed = cli("task", "test", "Mailing", check=1)
    assert "--ca-file" in failed.stderr and "Traceback" not in failed.stderr
    cli("task", "edit", "Mailing", "--ca-file", str(server_cert), "--pipelining")
    doc = _smtp_doc()
    assert doc["verify_certs"] is True and doc["ca_file"] == str(server_cert.resolve()) and doc["pipelining"] is True
    assert "Connected to 127.0.0.1" in cli("task", "test", "Mailing").stdout


def test_cli_refuses_a_missing_ca_file_and_stores_nothing(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    result = cli(
        "task", "add", "Mailing", "--company", "Firma", "--host", "smtp.firma.sk", "--sender", SENDER,
        "--ca-file", str(tmp_path / "missing.pem"), check=2,
    )  # fmt: skip
    assert "ca-file" in result.stderr and "is not a file" in result.stderr
    assert json.loads(cli("task", "list", "--json").stdout) == []


def test_cli_task_test_against_auth_after_tls_prints_the_fix_not_a_traceback(auth_after_tls: SmtpServer) -> None:
    setup_task(auth_after_tls.port, "--username", AUTH_USER, "--password-stdin", stdin=AUTH_PASSWORD)
    failed = cli("task", "test", "Mailing", check=1)
    assert "offers login only over TLS — choose STARTTLS" in failed.stderr and "Traceback" not in failed.stderr
