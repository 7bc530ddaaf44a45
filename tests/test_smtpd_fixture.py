"""The SMTP test server fixture does what tests rely on, checked with aiosmtplib directly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import keyring
import keyring.errors
import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.keyring_backend import DictKeyring, FailKeyring, FileKeyring
from tests.smtpd import SmtpServer


def make_message(to: str = "jan@example.sk", n: int = 1) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "info@firma.sk"
    msg["To"] = to
    msg["Subject"] = f"Test {n}"
    msg["Message-ID"] = f"<test-{n}@firma.sk>"
    msg.set_content("Dobrý deň")
    return msg


def send(server: SmtpServer, message: EmailMessage | None = None, **kwargs: Any) -> Any:
    """aiosmtplib.send in a fresh event loop; returns (refused recipients, reply text)."""
    kwargs.setdefault("timeout", 2)

    async def run() -> Any:
        try:
            return await aiosmtplib.send(message or make_message(), hostname=server.host, port=server.port, **kwargs)
        finally:
            # After an error aiosmtplib closes its transport, which finishes closing on a
            # later loop iteration; without this asyncio.run ends first (ResourceWarning).
            await asyncio.sleep(0.01)

    return asyncio.run(run())


def test_send_is_recorded(smtp_server: SmtpServer) -> None:
    errors, reply = send(smtp_server)

    assert errors == {}
    assert reply.startswith("2.0.0 Ok: queued as")
    (msg,) = smtp_server.wait_for(1, timeout=1)
    assert smtp_server.host == "127.0.0.1"
    assert msg.mail_from == "info@firma.sk"
    assert msg.rcpt_tos == ["jan@example.sk"]
    assert msg.message_id == "<test-1@firma.sk>"
    assert b"Subject: Test 1" in msg.data
    assert msg.peer[0] == "127.0.0.1"
    assert msg.auth_login is None
    assert msg.connection == 1
    smtp_server.clear()
    assert smtp_server.messages == []
    assert smtp_server.connections == 0


def test_wait_for_times_out(smtp_server: SmtpServer) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        smtp_server.wait_for(1, timeout=0.05)


def test_rejected_recipient(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies["nikto@example.sk"] = "550 5.1.1 no such user"

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
        send(smtp_server, make_message("nikto@example.sk"))

    assert info.value.recipients[0].code == 550
    assert smtp_server.messages == []


def test_partly_rejected_recipients_are_returned(smtp_server: SmtpServer) -> None:
    smtp_server.rcpt_replies["later@example.sk"] = "451 4.3.0 try later"

    errors, _ = send(smtp_server, make_message("jan@example.sk, later@example.sk"))

    assert errors["later@example.sk"][0] == 451
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["jan@example.sk"]


def test_sender_rejected(smtp_server: SmtpServer) -> None:
    smtp_server.mail_reply = "553 5.7.1 sender rejected"

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        send(smtp_server)

    assert info.value.code == 553


def test_data_replies_queue(smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["451 4.3.0 try later", "250 2.0.0 custom ok"]

    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        send(smtp_server)
    assert info.value.code == 451
    assert smtp_server.messages == []

    assert send(smtp_server)[1] == "2.0.0 custom ok"
    assert send(smtp_server)[1].startswith("2.0.0 Ok: queued as")
    assert len(smtp_server.wait_for(2)) == 2


def test_drop_on_data_disconnects(smtp_server: SmtpServer) -> None:
    smtp_server.drop_on_data = 1

    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(smtp_server)

    assert smtp_server.messages == []
    assert smtp_server.drop_on_data == 0
    send(smtp_server)
    assert len(smtp_server.wait_for(1)) == 1


def test_stall_makes_client_time_out(smtp_server: SmtpServer) -> None:
    smtp_server.stall_seconds = 1.5

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        send(smtp_server, timeout=1)

    assert smtp_server.messages == []  # the client hung up before the server answered


def test_auth_accepts_right_password(smtp_server_auth: SmtpServer) -> None:
    send(smtp_server_auth, username=AUTH_USER, password=AUTH_PASSWORD)

    assert smtp_server_auth.wait_for(1)[0].auth_login == AUTH_USER
    assert smtp_server_auth.auth_failures == 0


def test_auth_rejects_wrong_password(smtp_server_auth: SmtpServer) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
        send(smtp_server_auth, username=AUTH_USER, password="wrong")

    assert info.value.code == 535
    assert "5.7.8" in info.value.message
    # aiosmtplib tries PLAIN, then LOGIN: each rejected AUTH command counts.
    assert smtp_server_auth.auth_failures == 2


def test_auth_is_required(smtp_server_auth: SmtpServer) -> None:
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        send(smtp_server_auth)

    assert info.value.code == 530


def test_starttls(smtp_starttls_server: SmtpServer) -> None:
    send(smtp_starttls_server, start_tls=True, validate_certs=False)

    assert len(smtp_starttls_server.wait_for(1)) == 1


def test_starttls_against_plain_server_fails(smtp_server: SmtpServer) -> None:
    with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
        send(smtp_server, start_tls=True, validate_certs=False)

    assert smtp_server.messages == []


def test_require_starttls(smtp_starttls_server: SmtpServer) -> None:
    smtp_starttls_server.require_starttls = True

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
        send(smtp_starttls_server, start_tls=False)
    assert info.value.code == 530


def test_implicit_tls(smtp_tls_server: SmtpServer) -> None:
    send(smtp_tls_server, use_tls=True, validate_certs=False)

    assert len(smtp_tls_server.wait_for(1)) == 1


def test_implicit_tls_validates_against_server_cert(smtp_tls_server: SmtpServer, server_cert: Path) -> None:
    send(smtp_tls_server, use_tls=True, cert_bundle=str(server_cert))
    with pytest.raises(aiosmtplib.SMTPConnectError):
        send(smtp_tls_server, use_tls=True)  # the system CAs do not know the test cert

    assert len(smtp_tls_server.wait_for(1)) == 1


def test_connections_are_counted(smtp_server: SmtpServer) -> None:
    async def two_on_one_connection() -> None:
        async with aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port) as client:
            await client.send_message(make_message(n=1))
            await client.send_message(make_message(n=2))

    asyncio.run(two_on_one_connection())
    assert smtp_server.connections == 1
    send(smtp_server, make_message(n=3))

    assert smtp_server.connections == 2
    assert [m.connection for m in smtp_server.wait_for(3)] == [1, 1, 2]


def test_restart_gets_new_port_and_keeps_messages() -> None:
    with SmtpServer() as server:
        send(server)
        first_port = server.port
        server.stop()
        server.start()
        send(server)
        assert server.port != 0
        assert len(server.wait_for(2)) == 2
    assert first_port != 0


def test_keyring_is_file_backed(automail_home: Path, tmp_path: Path) -> None:
    assert automail_home == tmp_path / "home"
    keyring.set_password("AutoMail", "task", "pw")

    assert (tmp_path / "keyring.json").exists()
    code = "import keyring; print(keyring.get_password('AutoMail', 'task'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=20).stdout
    assert out.strip() == "pw"
    keyring.delete_password("AutoMail", "task")
    with pytest.raises(keyring.errors.PasswordDeleteError):
        keyring.delete_password("AutoMail", "task")
    assert keyring.get_password("AutoMail", "task") is None


@pytest.mark.parametrize("backend", [DictKeyring, FileKeyring])
def test_keyring_backends_roundtrip(backend: type[keyring.backend.KeyringBackend]) -> None:
    ring = backend()
    ring.set_password("svc", "user", "heslo")
    assert ring.get_password("svc", "user") == "heslo"
    ring.delete_password("svc", "user")
    assert ring.get_password("svc", "user") is None
    with pytest.raises(keyring.errors.PasswordDeleteError):
        ring.delete_password("svc", "user")


def test_fail_keyring_raises() -> None:
    keyring.set_keyring(FailKeyring())
    with pytest.raises(keyring.errors.NoKeyringError):
        keyring.get_password("svc", "user")
    with pytest.raises(keyring.errors.KeyringError):
        keyring.set_password("svc", "user", "x")
