"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, recording what it gets, scripted replies."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"  # loopback only: a test server must never listen on another address

__all__ = ["HOST", "RawServer", "RecordedMessage", "SmtpServer", "make_self_signed_cert"]


@dataclass(frozen=True)
class RecordedMessage:
    """One message the server accepted (answered DATA with a 2xx reply)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str | None  # the Message-ID header as sent, angle brackets included
    peer: Any  # (host, port) of the client
    time: float  # time.time() when accepted
    monotonic: float  # time.monotonic() when accepted, for measuring spacing
    auth_login: str | None  # the username the session authenticated with, if any
    connection: int  # 1-based number of the connection (session) that sent it
    reply: str  # the reply the server gave to DATA
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM parameters (SIZE=…, BODY=…)


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for localhost / 127.0.0.1; return (cert file, key file)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    try:
        _write_cert_cryptography(cert_file, key_file)
    except ImportError:
        _write_cert_openssl(cert_file, key_file)
    return cert_file, key_file


def _write_cert_cryptography(cert_file: Path, key_file: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # far faster to generate than RSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    # CA + key-usage + key identifiers so the certificate also passes OpenSSL's strict
    # verification (VERIFY_X509_STRICT, default in Python >= 3.13) when a test trusts it.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert_openssl(cert_file: Path, key_file: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("need the 'cryptography' package or the openssl command for TLS tests")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=localhost",
         "-addext", f"subjectAltName=DNS:localhost,IP:{HOST}",
         "-keyout", str(key_file), "-out", str(cert_file)],
        check=True,
        capture_output=True,
    )  # fmt: skip


class _Handler:
    """aiosmtpd handler hooks; all state lives on the SmtpServer that owns it."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # this hook style leaves that to the handler
        with self.owner._lock:
            self.owner.ehlo_names.append(hostname)
        if self.owner.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if not self.owner.eightbitmime:
            responses.remove("250-8BITMIME")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.owner.delays.get("MAIL", 0))
        reply = self.owner.mail_reply
        if reply is not None:
            return _closing_if_421(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.owner.delays.get("RCPT", 0))
        replies = self.owner.rcpt_replies
        reply = replies.get(address, replies.get(address.lower()))
        if reply is not None:
            return _closing_if_421(server, reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        if owner.stall_seconds > 0:
            # If the client gives up and disconnects meanwhile, aiosmtpd cancels this
            # coroutine (connection_lost), so a timed-out message is not recorded.
            await asyncio.sleep(owner.stall_seconds)
        with owner._lock:
            drop = owner.drop_on_data > 0
            if drop:
                owner.drop_on_data -= 1
                reply = None
            else:
                reply = owner.data_replies.pop(0) if owner.data_replies else None
        if drop:
            assert server.transport is not None
            server.transport.close()
            # aiosmtpd pushes this after we return; the transport is closing, so it
            # is silently discarded and the client only sees the connection end.
            return "421 4.3.0 connection dropped by test server"
        if reply is not None and not reply.startswith("2"):
            return reply
        return owner._record(server, session, envelope, reply)


def _closing_if_421(server: SMTP, reply: str) -> str:
    """A 421 means the server closes the connection (RFC 5321 3.8): it does, right after the reply."""
    if reply.startswith("421") and server.transport is not None:
        asyncio.get_running_loop().call_soon(server.transport.close)  # after aiosmtpd has written the reply
    return reply


class _RecordingSMTP(SMTP):
    """aiosmtpd's session, noting every chunk of bytes as it arrives."""

    def __init__(self, owner: SmtpServer, *args: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def data_received(self, data: bytes) -> None:
        with self._owner._lock:
            self._owner.packets.append(bytes(data))
        super().data_received(data)

    async def _handle_client(self) -> None:
        # a slow (or, with a long delay, missing) greeting
        await asyncio.sleep(self._owner.delays.get("greeting", 0))
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        await asyncio.sleep(self._owner.delays.get("DATA", 0))  # before the 354
        if self._owner.data_without_recipients and self.envelope is not None and not self.envelope.rcpt_tos:
            self.envelope.rcpt_tos.append("")  # a broken server: 354 although no recipient was accepted
        with self._owner._lock:
            refusal = self._owner.data_command_replies.pop(0) if self._owner.data_command_replies else None
        if refusal is not None:
            await self.push(refusal)  # the DATA command itself refused, before any 354
            return
        await super().smtp_DATA(arg)


class _ServerController(Controller):
    """A Controller that binds port 0 (race-free free port) and builds each session fresh."""

    def __init__(self, owner: SmtpServer, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(_Handler(owner), hostname=HOST, port=0, **kwargs)

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]  # read before start() connects to it
        return server

    def _create_server(self) -> Any:
        return self._bind()

    def factory(self) -> SMTP:
        # Called once per accepted connection, so settings changed by a test apply to
        # the next connection, and counting here counts connections (not EHLOs).
        return self.owner._new_session(self.handler)


class SmtpServer:
    """A threaded aiosmtpd server on 127.0.0.1 with a recording, scriptable handler.

    Behaviour attributes (change them at any time; read per command or per connection):
      rcpt_replies  address -> reply for RCPT TO (others get "250 OK")
      mail_reply    reply for every MAIL FROM, None = accept
      data_replies  queue of replies for the next DATA commands (2xx replies still record)
      drop_on_data  the next N DATA commands close the connection without a reply
      stall_seconds handle_DATA waits this long before answering (the reply to the final dot)
      delays        command -> seconds to wait before answering: "greeting", "MAIL", "RCPT",
                    "DATA" (before its 354)
      eightbitmime  advertise 8BITMIME (RFC 6152)
      size_limit    the SIZE advertised and enforced (aiosmtpd answers 552 above it), None = none
      auth_require_tls  offer AUTH only after STARTTLS (from the next connection on)
      starttls / require_starttls / auth   apply from the next connection on
      pipelining    advertise PIPELINING (RFC 2920) in the EHLO reply
      smtputf8      advertise SMTPUTF8 (from the next connection on)
      data_command_replies  queue of replies for the next DATA commands themselves, given
                    instead of their 354 (data_replies answer the end of the message)
      data_without_recipients  answer DATA with 354 even when no recipient was accepted, like a
                    broken server (what it then accepts is recorded with the recipient "")
    Recorded: messages, packets (every chunk of bytes received, in order: shows
    which commands a client sent together) and ehlo_names (each EHLO's argument).
    Counters: connections (sessions opened since start/clear), auth_failures (rejected
    AUTH commands: aiosmtplib's login() tries each advertised mechanism, PLAIN then LOGIN,
    so one wrong password counts 2).
    Constructor only: tls (implicit TLS, port 465 style).
    """

    def __init__(
        self,
        *,
        starttls: bool = False,
        require_starttls: bool = False,
        tls: bool = False,
        auth: dict[str, str] | None = None,
        certfile: Path | str | None = None,
        keyfile: Path | str | None = None,
        pipelining: bool = False,
    ) -> None:
        self.host = HOST
        self.pipelining = pipelining
        self.smtputf8 = True
        self.data_without_recipients = False
        self.data_command_replies: list[str] = []
        self.packets: list[bytes] = []
        self.port = 0
        self.starttls = starttls
        self.require_starttls = require_starttls
        self.tls = tls
        self.auth = auth
        self.rcpt_replies: dict[str, str] = {}
        self.mail_reply: str | None = None
        self.data_replies: list[str] = []
        self.drop_on_data = 0
        self.stall_seconds = 0.0
        self.delays: dict[str, float] = {}
        self.eightbitmime = True
        self.size_limit: int | None = 33554432  # aiosmtpd's default
        self.auth_require_tls = False
        self.ehlo_names: list[str] = []
        self.connections = 0
        self.auth_failures = 0
        self._messages: list[RecordedMessage] = []
        self._accepted = 0  # numbering for "queued as <n>", not reset by clear()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if (starttls or tls) and certfile is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="automail-smtpd-")
            certfile, keyfile = make_self_signed_cert(Path(self._tmpdir.name))
        self.certfile = Path(certfile) if certfile else None
        self.keyfile = Path(keyfile) if keyfile else None
        self._tls_context: ssl.SSLContext | None = None
        self._controller: _ServerController | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SmtpServer:
        """Start listening on a free port of 127.0.0.1; sets `port`."""
        if self._controller is not None:
            raise RuntimeError("SMTP test server already running")
        controller = _ServerController(
            self,
            ssl_context=self._server_tls_context() if self.tls else None,
            server_hostname="localhost",  # the default, socket.getfqdn(), can take seconds
            ready_timeout=10.0,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        with self._lock:
            self.connections = 0  # Controller.start() opened one connection to probe the server
        return self

    def stop(self) -> None:
        """Stop the server (safe to call twice); recorded messages stay available."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def close(self) -> None:
        """Stop and delete a certificate generated by this object."""
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recorded state --------------------------------------------------------------

    @property
    def messages(self) -> list[RecordedMessage]:
        """A snapshot of the messages accepted so far, in order."""
        with self._lock:
            return list(self._messages)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[RecordedMessage]:
        """Block until at least n messages are recorded; return them, or raise TimeoutError."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= n, timeout):
                raise TimeoutError(f"SMTP test server got {len(self._messages)} of {n} messages in {timeout} s")
            return list(self._messages)

    def clear(self) -> None:
        """Forget recorded messages and reset the connection and auth-failure counters."""
        with self._lock:
            self._messages.clear()
            self.packets.clear()
            self.ehlo_names.clear()
            self.connections = 0
            self.auth_failures = 0

    # -- internals (called on the server thread) -------------------------------------

    def _server_tls_context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            if self.certfile is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="automail-smtpd-")
                self.certfile, self.keyfile = make_self_signed_cert(Path(self._tmpdir.name))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certfile, self.keyfile)
            self._tls_context = context
        return self._tls_context

    def _new_session(self, handler: _Handler) -> SMTP:
        with self._lock:
            self.connections += 1
            number = self.connections
        kwargs: dict[str, Any] = {
            "hostname": "localhost",
            "enable_SMTPUTF8": self.smtputf8,
            "data_size_limit": self.size_limit,
        }
        if self.starttls:
            kwargs["tls_context"] = self._server_tls_context()
            kwargs["require_starttls"] = self.require_starttls
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            # loopback only; lets tests log in without TLS unless they ask for Postfix's habit
            kwargs["auth_require_tls"] = self.auth_require_tls
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS …": intended here, on loopback.
            warnings.simplefilter("ignore", UserWarning)
            smtp = _RecordingSMTP(self, handler, **kwargs)
        smtp.automail_connection = number  # type: ignore[attr-defined]
        return smtp

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        users = self.auth or {}
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if login in users and users[login] == password:
                return AuthResult(success=True, auth_data=login)
        with self._lock:
            self.auth_failures += 1
        # handled=False without a message makes aiosmtpd answer
        # "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)

    def _record(self, server: SMTP, session: Session, envelope: Envelope, reply: str | None) -> str:
        data = envelope.original_content or b""
        message_id = BytesHeaderParser().parsebytes(data).get("Message-ID")
        login = session.auth_data if session.authenticated else None
        with self._changed:
            self._accepted += 1
            reply = reply or f"250 2.0.0 Ok: queued as {self._accepted}"
            self._messages.append(
                RecordedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=data,
                    message_id=str(message_id).strip() if message_id is not None else None,
                    peer=session.peer,
                    time=time.time(),
                    monotonic=time.monotonic(),
                    auth_login=login if isinstance(login, str) else None,
                    connection=getattr(server, "automail_connection", 0),
                    reply=reply,
                    mail_options=list(envelope.mail_options),
                )
            )
            self._changed.notify_all()
        return reply


class RawServer:
    """A TCP server on 127.0.0.1 that is not (quite) an SMTP server: it sends ``banner``
    (None = nothing, like a server that never greets) and then reads until the client goes.
    """

    def __init__(self, banner: bytes | None = None) -> None:
        self.banner = banner
        self.host = HOST
        self.connections = 0
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                if outer.banner is not None:
                    self.request.sendall(outer.banner)
                with contextlib.suppress(OSError):
                    while self.request.recv(4096):
                        pass

        self._server = socketserver.ThreadingTCPServer((HOST, 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
