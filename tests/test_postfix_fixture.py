"""The test Postfix (tests/postfix.py) does what the integration tests rely on, checked with aiosmtplib."""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

from tests.postfix import Postfix, PostfixError


def make_message(to: str = "jan@example.sk", subject: str = "Test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "info@firma.sk"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@firma.sk>"
    msg.set_content("Dobrý deň, posielame faktúru.\n")
    return msg


def trust(postfix: Postfix) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(postfix.ca_file))


def session(postfix: Postfix, port: int, body: Callable[[aiosmtplib.SMTP], Awaitable[Any]], **kwargs: Any) -> Any:
    """Connect to ``port`` with aiosmtplib (no automatic STARTTLS), run ``body``, close."""

    async def run() -> Any:
        kwargs.setdefault("start_tls", False)
        client = aiosmtplib.SMTP(hostname=postfix.host, port=port, timeout=10, **kwargs)
        await client.connect()
        try:
            return await body(client)
        finally:
            client.close()
            await asyncio.sleep(0.01)  # let the transport finish closing (ResourceWarning otherwise)

    return asyncio.run(run())


def converse(port: int, *chunks: bytes) -> str:
    """Send raw ``chunks`` one after another, each after the previous reply; return all replies."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        replies.append(sock.recv(4096))
        for chunk in chunks:
            sock.sendall(chunk)
            replies.append(sock.recv(65536))
    return b"".join(replies).decode()


def test_plain_port_delivers_to_the_maildir(postfix: Postfix) -> None:
    msg = make_message(subject="Faktúra č. 1")
    mark = postfix.log_mark()

    session(postfix, postfix.plain_port, lambda c: c.send_message(msg))

    (copy,) = postfix.wait_for(1, message_id=msg["Message-ID"])
    assert copy.delivered_to == "jan@example.sk"
    assert copy.message["Subject"] == "Faktúra č. 1"
    assert copy.message.get_content() == "Dobrý deň, posielame faktúru.\n"
    log = postfix.wait_for_log("status=sent", since=mark)
    assert "connect from localhost[127.0.0.1]" in log
    assert "warning" not in log
    assert postfix.host == "127.0.0.1"


def test_headers_are_delivered_as_sent(postfix: Postfix) -> None:
    # A message without Date must arrive without Date: the tests of AutoMail's own headers need it.
    raw = b"From: info@firma.sk\r\nTo: bez-datumu@example.sk\r\nSubject: Bez Date\r\n\r\nHello\r\n"

    session(postfix, postfix.plain_port, lambda c: c.sendmail("info@firma.sk", ["bez-datumu@example.sk"], raw))

    (copy,) = postfix.wait_for(1, to="bez-datumu@example.sk")
    assert copy.message["Date"] is None
    assert copy.message["Message-ID"] is None
    assert copy.message["From"] == "info@firma.sk"
    assert copy.raw.endswith(raw.replace(b"\r\n", b"\n"))  # Maildir files end lines with LF


def test_recipients_are_answered_by_local_part(postfix: Postfix) -> None:
    async def body(client: aiosmtplib.SMTP) -> list[int]:
        await client.ehlo()
        await client.mail("info@firma.sk")
        codes = []
        for rcpt in ("ok@example.sk", "defer-1@example.sk", "reject-1@example.sk", "deferred@x.sk"):
            codes.append((await client.execute_command(f"RCPT TO:<{rcpt}>".encode())).code)
        await client.rset()
        await client.quit()
        return codes

    assert session(postfix, postfix.plain_port, body) == [250, 450, 550, 450]


def test_size_limit_is_advertised_and_enforced(postfix: Postfix) -> None:
    async def body(client: aiosmtplib.SMTP) -> tuple[str, int, str]:
        await client.ehlo()
        size = client.esmtp_extensions["size"]
        reply = await client.execute_command(f"MAIL FROM:<info@firma.sk> SIZE={postfix.size_limit + 1}".encode())
        await client.quit()
        return size, reply.code, reply.message

    size, code, text = session(postfix, postfix.plain_port, body)
    assert size == str(postfix.size_limit) == "1000000"
    assert (code, text) == (552, "5.3.4 Message size exceeds fixed limit")


def test_submission_offers_auth_only_after_starttls(postfix: Postfix) -> None:
    msg = make_message()

    async def body(client: aiosmtplib.SMTP) -> tuple[bool, bool, bool]:
        await client.ehlo()
        auth_before = "auth" in client.esmtp_extensions
        starttls_offered = client.supports_extension("starttls")
        await client.starttls(tls_context=trust(postfix))  # verifies the certificate for 127.0.0.1
        await client.login(postfix.user, postfix.password)
        auth_after = "auth" in client.esmtp_extensions
        await client.send_message(msg)
        await client.quit()
        return auth_before, starttls_offered, auth_after

    assert session(postfix, postfix.submission_port, body) == (False, True, True)
    postfix.wait_for(1, message_id=msg["Message-ID"])


def test_submission_refuses_mail_without_tls_and_a_wrong_password(postfix: Postfix) -> None:
    async def wrong_password(client: aiosmtplib.SMTP) -> int:
        await client.starttls(tls_context=trust(postfix))
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.auth_plain(postfix.user, "wrong")
        return refused.value.code

    assert session(postfix, postfix.submission_port, wrong_password) == 535
    reply = converse(postfix.submission_port, b"EHLO client.example\r\n", b"MAIL FROM:<info@firma.sk>\r\n")
    assert "530 5.7.0 Must issue a STARTTLS command first" in reply


def test_smtps_port_is_implicit_tls_with_auth(postfix: Postfix) -> None:
    msg = make_message()

    async def body(client: aiosmtplib.SMTP) -> None:
        await client.login(postfix.user, postfix.password)
        await client.send_message(msg)
        await client.quit()

    session(postfix, postfix.smtps_port, body, use_tls=True, tls_context=trust(postfix))
    postfix.wait_for(1, message_id=msg["Message-ID"])


def test_untrusted_certificate_is_refused(postfix: Postfix) -> None:
    with pytest.raises(aiosmtplib.SMTPConnectError) as refused:
        session(postfix, postfix.smtps_port, lambda c: c.noop(), use_tls=True)
    assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)


def test_no8bit_port_does_not_offer_8bitmime(postfix: Postfix) -> None:
    async def ehlo(client: aiosmtplib.SMTP) -> bool:
        await client.ehlo()
        offered = client.supports_extension("8bitmime")
        await client.quit()
        return offered

    assert session(postfix, postfix.plain_port, ehlo) is True
    assert session(postfix, postfix.no8bit_port, ehlo) is False


def test_strict_client_checks(postfix: Postfix) -> None:
    mark = postfix.log_mark()
    bare_lf = converse(
        postfix.plain_port,
        b"EHLO client.example\r\n",
        b"MAIL FROM:<info@firma.sk>\r\n",
        b"RCPT TO:<ok@example.sk>\r\n",
        b"DATA\r\n",
        b"Subject: x\r\n\r\nbare\nnewline\r\n.\r\n",
    )
    assert "550 5.5.2 localhost Error: bare <LF> received" in bare_lf
    unauth_pipelining = converse(postfix.plain_port, b"EHLO client.example\r\nMAIL FROM:<info@firma.sk>\r\n")
    assert "554 5.5.0 Error: SMTP protocol synchronization" in unauth_pipelining
    log = postfix.wait_for_log("improper command pipelining", since=mark)
    assert "bare <LF> received" in log


def test_stop_and_start_again_on_the_same_ports(postfix: Postfix) -> None:
    postfix.stop()
    try:
        assert not postfix.running()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", postfix.plain_port), timeout=5).close()
    finally:
        postfix.start()
    msg = make_message()
    session(postfix, postfix.plain_port, lambda c: c.send_message(msg))
    postfix.wait_for(1, message_id=msg["Message-ID"])


def test_a_start_that_fails_says_why() -> None:
    # What the `postfix` fixture shows (as a failure, never a skip) when Postfix cannot start.
    server = Postfix.in_new_folder()
    try:
        server.configure()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", server.plain_port))
            taken.listen()
            with pytest.raises(PostfixError) as failed:
                server.start()
        assert f"postfix start failed (1); port(s) {server.plain_port} on 127.0.0.1 already in use" in str(failed.value)
        assert "fatal: mail system startup failed" in str(failed.value)  # the log's tail comes with it
    finally:
        server.close()
