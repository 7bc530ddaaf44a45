"""The SMTP client (engine/smtp) against a real Postfix (tests/postfix.py): issue 7's defects 1 (protocol
side), 2, 3, 6, 11, 12, 13 and 16 as a strict real server shows them. Postfix's own log is the evidence."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from automail.engine.smtp import SendResult, SmtpSession
from automail.engine.smtp.timeouts import Timeouts
from automail.errors import FaultKind, Reply, SmtpError
from automail.models import MessageStatus, Security, SmtpSettings, TaskState
from tests.helpers import cli, make_service, make_task, run_engine_until, session_connect_error, setup_task
from tests.postfix import Postfix

pytestmark = pytest.mark.slow

SENDER = "info@firma.sk"
TIMEOUTS = Timeouts(command=10, greeting=10, envelope=10, data_block=10, final_dot=30, quit=2)
PROTOCOL_WARNINGS = ("warning:", "improper command pipelining", "bare <LF>", "non-SMTP command", "too many errors")


def settings(postfix: Postfix, port: int, security: Security = Security.NONE, **kw: Any) -> SmtpSettings:
    return SmtpSettings(host=postfix.host, port=port, security=security, sender=SENDER, **kw)


def message(to: str, body: str = "Dobrý deň, v prílohe je faktúra č. 1.\n", size: int = 0) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = "Faktúra"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@firma.sk>"
    msg.set_content(body, cte="8bit")
    if size:
        msg.add_attachment(b"\x00\xff" * (size // 2), maintype="application", subtype="octet-stream", filename="x.bin")
    return msg


async def _session(smtp: SmtpSettings, password: str | None, *sends: tuple[tuple[str, ...], bytes]) -> list[Any]:
    s = SmtpSession(smtp, password, timeouts=TIMEOUTS)
    results: list[Any] = []
    try:
        for rcpts, raw in sends:
            try:
                results.append(await s.send(SENDER, rcpts, raw))
            except SmtpError as exc:
                results.append(exc)
    finally:
        await s.close()
    return results


def session(smtp: SmtpSettings, *sends: tuple[tuple[str, ...], bytes], password: str | None = None) -> list[Any]:
    return asyncio.run(_session(smtp, password, *sends))


def connect_error(smtp: SmtpSettings, password: str | None = None) -> SmtpError:
    return session_connect_error(smtp, password, TIMEOUTS)


def leaves(msg: EmailMessage) -> list[tuple[str, object]]:
    """What the recipient sees: each leaf part's type and decoded content (text with LF line ends)."""
    found: list[tuple[str, object]] = []
    for part in msg.walk():
        if not part.is_multipart():
            content = part.get_content()
            found.append(
                (part.get_content_type(), content.replace("\r\n", "\n") if isinstance(content, str) else content)
            )
    return found


def session_stats(log: str) -> str:
    """The counters of the (last) session, e.g. 'ehlo=1 mail=2 rcpt=1/3 data=1 rset=1 quit=1 commands=…'."""
    found = re.findall(r"disconnect from localhost\[127\.0\.0\.1\] (.*)", log)
    assert found, log
    return str(found[-1])


# ---- 1 (protocol side): every recipient refused ------------------------------------------------
def test_all_refused_recipients_end_with_rset(postfix: Postfix) -> None:
    mark = postfix.log_mark()
    ok = message("ok@example.sk")
    refused, sent = session(
        settings(postfix, postfix.plain_port),
        (("reject1@example.sk", "defer1@example.sk"), message("reject1@example.sk").as_bytes()),
        (("ok@example.sk",), ok.as_bytes()),
    )
    assert isinstance(refused, SmtpError) and refused.kind is FaultKind.TRANSIENT
    assert refused.refused is not None
    assert {a: r.code for a, r in refused.refused.items()} == {"reject1@example.sk": 550, "defer1@example.sk": 450}
    assert isinstance(sent, SendResult)
    postfix.wait_for(1, message_id=str(ok["Message-ID"]))
    stats = session_stats(postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark))
    # two DATA: the refused message's, pipelined with its envelope and refused (no body sent), and
    # the accepted message's; the refused one ended with RSET
    assert "data=1/2 " in stats and "rset=1" in stats and "rcpt=1/3" in stats, stats
    log = postfix.log(since=mark)
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log  # the log says which warning


def _replies(sock: socket.socket, count: int) -> list[bytes]:
    """Read ``count`` complete replies (their last lines)."""
    buffer, found = b"", []
    while len(found) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\r\n")
        found += [line for line in lines if line[3:4] == b" "]
    return found


@pytest.mark.parametrize("pipelined_data", [True, False], ids=["DATA-pipelined", "RSET-after-replies"])
def test_why_data_waits_for_the_rcpt_replies(postfix: Postfix, pipelined_data: bool) -> None:
    """The evidence for transaction.py's adaptive rule: Postfix counts a DATA after all-refused RCPTs as
    a client error (smtpd_hard_error_limit, 20 by default, then "421 too many errors" and the
    connection is gone), while the same refusals ended with RSET leave the session usable."""
    mark = postfix.log_mark()
    replies: list[bytes] = []
    with socket.create_connection((postfix.host, postfix.plain_port), timeout=10) as sock:
        _replies(sock, 1)
        sock.sendall(b"EHLO [127.0.0.1]\r\n")
        _replies(sock, 1)
        envelope = b"MAIL FROM:<info@firma.sk>\r\nRCPT TO:<reject-why@example.sk>\r\n"
        with contextlib.suppress(ConnectionError):
            for _ in range(10):  # ten messages whose only recipient is refused
                sock.sendall(envelope + b"DATA\r\n" if pipelined_data else envelope)
                replies += _replies(sock, 3 if pipelined_data else 2)
                sock.sendall(b"RSET\r\n")  # a refused DATA leaves the transaction open, too
                replies += _replies(sock, 1)
            sock.sendall(b"QUIT\r\n")
            replies += _replies(sock, 1)
    if pipelined_data:
        assert any(r.startswith(b"421") and b"too many errors" in r for r in replies), replies
        assert "too many errors" in postfix.wait_for_log("disconnect from", since=mark)
    else:
        assert replies[-1].startswith(b"221") and len(replies) == 10 * 3 + 1, replies


def test_a_run_of_all_refused_messages_costs_one_data_error_and_keeps_the_session(postfix: Postfix) -> None:
    """The adaptive rule against the evidence above: twelve messages whose only recipient is refused,
    then a good one, on one connection.  Only the first refused message's DATA was pipelined (and
    refused); the others waited for their RCPT reply and ended with RSET, so Postfix counted 13
    errors, not 24 (its hard limit is 20), and the good message was delivered on the same session."""
    mark = postfix.log_mark()
    good = message("ok-run@example.sk")
    refused = [((f"reject-run{i}@example.sk",), message(f"reject-run{i}@example.sk").as_bytes()) for i in range(12)]
    *errors, sent = session(settings(postfix, postfix.plain_port), *refused, (("ok-run@example.sk",), good.as_bytes()))
    for i, error in enumerate(errors):
        assert isinstance(error, SmtpError) and error.kind is FaultKind.PERMANENT, error
        assert error.refused is not None and list(error.refused) == [f"reject-run{i}@example.sk"]
        assert error.refused[f"reject-run{i}@example.sk"].code == 550
    assert isinstance(sent, SendResult), sent
    postfix.wait_for(1, message_id=str(good["Message-ID"]))
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert log.count("disconnect from") == 1, log  # one connection all along
    assert "mail=13 rcpt=1/13 data=1/2 rset=12 quit=1" in session_stats(log), log
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log  # the log says which warning


def test_partly_refused_recipients_are_listed_with_their_codes(postfix: Postfix) -> None:
    msg = message("ok2@example.sk")
    mark = postfix.log_mark()
    [result] = session(
        settings(postfix, postfix.plain_port),
        (("ok2@example.sk", "defer2@example.sk", "reject2@example.sk"), msg.as_bytes()),
    )
    assert isinstance(result, SendResult)
    assert {a: r.code for a, r in result.refused.items()} == {"defer2@example.sk": 450, "reject2@example.sk": 550}
    assert isinstance(result.refused["reject2@example.sk"], Reply)
    assert [m.delivered_to for m in postfix.wait_for(1, message_id=str(msg["Message-ID"]))] == ["ok2@example.sk"]
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert "rcpt=1/3 data=1 " in session_stats(log), log  # DATA pipelined with the envelope, answered 354
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log  # the log says which warning


# ---- 2: the server's size limit ----------------------------------------------------------------
def test_an_oversized_message_fails_alone_before_it_is_sent(automail_home: Path, postfix: Postfix) -> None:
    big, small = message("big@example.sk", size=postfix.size_limit), message("small@example.sk")
    mark = postfix.log_mark()
    svc = make_service(automail_home, make_task(port=postfix.plain_port, sender=SENDER))
    svc.enqueue_raw("Firma", [("big", big.as_bytes()), ("small", small.as_bytes())])
    run_engine_until(svc, lambda: not svc.pending(svc.tasks()), timeout=30)
    big_row, small_row = svc.messages("Firma")
    assert big_row.status is MessageStatus.FAILED and big_row.last_error_code == 552
    assert "is larger than the server's limit of 1,000,000 bytes" in big_row.last_error
    assert small_row.status is MessageStatus.SENT
    assert svc.status()[0].state is not TaskState.ERROR
    postfix.wait_for(1, message_id=str(small["Message-ID"]))
    stats = session_stats(postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark))
    assert "mail=1 " in stats, stats  # the big one never reached MAIL FROM
    svc.close()


# ---- 3: login offered only after STARTTLS, with security "none" ----------------------------------
def test_no_encryption_against_auth_after_starttls_stops_the_run_with_the_fix(tmp_path: Path, postfix: Postfix) -> None:
    setup_task(postfix.submission_port, "--username", postfix.user, "--password-stdin", stdin=postfix.password)
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("x@example.sk").as_bytes())
    cli("enqueue", "--company", "Firma", str(eml))
    cli("task", "start", "Mailing")
    start = time.monotonic()
    run = cli("run", "--until-empty", check=1, timeout=60)
    assert time.monotonic() - start < 30
    assert "offers login only over TLS — choose STARTTLS" in run.stderr and "Traceback" not in run.stderr
    assert "unexpected error" not in run.stderr
    rows = cli("outbox", "--company", "Firma", "--json").stdout
    assert '"status": "queued"' in rows and '"status": "sending"' not in rows


# ---- 6: 8-bit bodies -------------------------------------------------------------------------------
def test_8bit_body_declared_to_a_server_with_8bitmime(postfix: Postfix) -> None:
    msg = message("eight@example.sk")
    session(settings(postfix, postfix.plain_port), (("eight@example.sk",), msg.as_bytes()))
    [got] = postfix.wait_for(1, message_id=str(msg["Message-ID"]))
    assert got.message["Content-Transfer-Encoding"] == "8bit"
    assert got.message.get_content() == msg.get_content()


def test_8bit_body_re_encoded_for_a_server_without_8bitmime(postfix: Postfix) -> None:
    msg = message("seven@example.sk", body="Dobrý deň, " + "ťava " * 300 + "\n", size=3000)
    mark = postfix.log_mark()
    session(settings(postfix, postfix.no8bit_port), (("seven@example.sk",), msg.as_bytes()))
    [got] = postfix.wait_for(1, message_id=str(msg["Message-ID"]))
    body = got.raw.split(b"\n\n", 1)[1]
    assert body.isascii() and max(len(line) for line in body.splitlines()) <= 998
    assert leaves(got.message) == leaves(msg)
    log = postfix.log(since=mark)
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log  # the log says which warning


# ---- 11: one login attempt, QUIT, EHLO name ---------------------------------------------------------
def test_a_wrong_password_fails_once_and_the_session_ends_with_quit(postfix: Postfix) -> None:
    mark = postfix.log_mark()
    smtp = settings(
        postfix, postfix.submission_port, Security.STARTTLS, username=postfix.user, ca_file=str(postfix.ca_file)
    )
    error = connect_error(smtp, "wrong-password")
    assert error.kind is FaultKind.TASK_FATAL and "535" in str(error)
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert log.count("authentication failed") == 1, log
    assert "auth=0/1" in session_stats(log) and "quit=1" in session_stats(log)


def test_ehlo_uses_the_address_literal_without_a_dotted_name(postfix: Postfix, monkeypatch: pytest.MonkeyPatch) -> None:
    from automail.engine.smtp import session as session_module

    monkeypatch.setattr(session_module, "_fqdn", "vm")
    msg = message("helo@example.sk")
    session(settings(postfix, postfix.plain_port), (("helo@example.sk",), msg.as_bytes()))
    [got] = postfix.wait_for(1, message_id=str(msg["Message-ID"]))
    assert str(got.message["Received"]).startswith("from [127.0.0.1] (localhost [127.0.0.1])")


# ---- 12: the security setting does not match the port ---------------------------------------------
@pytest.mark.parametrize("security", [Security.STARTTLS, Security.NONE])
def test_plain_start_on_the_implicit_tls_port_says_choose_ssl_tls(postfix: Postfix, security: Security) -> None:
    start = time.monotonic()
    error = connect_error(settings(postfix, postfix.smtps_port, security))
    assert time.monotonic() - start < 5
    assert "choose SSL/TLS" in str(error) and error.kind is FaultKind.TASK_FATAL


def test_implicit_tls_on_the_starttls_port_says_choose_starttls(postfix: Postfix) -> None:
    start = time.monotonic()
    error = connect_error(settings(postfix, postfix.submission_port, Security.TLS, ca_file=str(postfix.ca_file)))
    assert time.monotonic() - start < 5
    assert "choose STARTTLS" in str(error) and error.kind is FaultKind.TASK_FATAL


# ---- 13: the task's CA file -------------------------------------------------------------------------
def test_without_the_ca_file_the_error_names_the_option(postfix: Postfix) -> None:
    error = connect_error(settings(postfix, postfix.smtps_port, Security.TLS))
    assert error.kind is FaultKind.TASK_FATAL and "--ca-file" in str(error)


@pytest.mark.parametrize("security", [Security.TLS, Security.STARTTLS])
def test_the_ca_file_trusts_postfix_and_pipelining_passes_its_strict_checks(
    postfix: Postfix, security: Security
) -> None:
    port = postfix.smtps_port if security is Security.TLS else postfix.submission_port
    smtp = settings(postfix, port, security, username=postfix.user, ca_file=str(postfix.ca_file))
    msgs = [message(f"pipe{i}@example.sk") for i in range(3)]
    mark = postfix.log_mark()
    results = session(
        smtp,
        *[((f"pipe{i}@example.sk", "ok@example.sk"), m.as_bytes()) for i, m in enumerate(msgs)],
        password=postfix.password,
    )
    assert all(isinstance(r, SendResult) for r in results), results
    for m in msgs:
        postfix.wait_for(2, message_id=str(m["Message-ID"]))
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert "mail=3 rcpt=6 data=3" in session_stats(log), log
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log  # smtpd_forbid_unauth_pipelining = yes
