"""One task's SMTP session over aiosmtplib: connect, TLS, login; each message goes to ``transaction``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable

import aiosmtplib

from automail.errors import FaultKind, SmtpError
from automail.models import Security, SmtpSettings

from . import classify
from .timeouts import Timeouts
from .transaction import HookFailed, Pipelining, SendResult, transact

log = logging.getLogger(__name__)

TLS_PROBE_AFTER_S = 1.5  # silence after connecting before checking whether the port waits for TLS
PROBE_TIMEOUT_S = 5.0
MECHANISMS = ("plain", "login", "cram-md5")  # one is used, never a second after a refusal
_HOST_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_fqdn: str | None = None


class SmtpSession:
    """A reusable connection to the task's server.

    Connects lazily, reuses the connection while messages flow, checks a connection that
    sat idle with NOOP, and reconnects when it was dropped.  Every failure leaves as an
    SmtpError with a kind and a readable text (``classify``); no library exception escapes.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        password: str | None,
        *,
        idle_check_s: float = 5.0,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._tls_context: ssl.SSLContext | None = None
        self.idle_check_s = idle_check_s
        self.timeouts = timeouts or Timeouts.for_timeout(settings.timeout)
        # Off when the task says so, or for the rest of this session once the server made a
        # protocol error while commands were pipelined (RFC 2920 servers that get it wrong).
        self.pipelining = settings.pipelining
        # Per connection (like the server's error counter): whether DATA still goes with the envelope.
        self._pipelined = Pipelining()
        self._step = "connecting"

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.host}:{s.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    # ---- connect, TLS, login -----------------------------------------------------------
    async def connect(self) -> str:
        """Open the session (TLS as configured) and log in; returns the server's greeting."""
        await self.close()
        s = self.settings
        security = Security(s.security)
        if s.username and security is Security.NONE and not (s.allow_insecure_auth or s.is_loopback):
            raise SmtpError(
                f"refusing to send the password for {s.username} to {self.where} without encryption",
                kind=FaultKind.TASK_FATAL,
                fix="choose STARTTLS or SSL/TLS as the security setting",
            )
        client: aiosmtplib.SMTP | None = None
        try:
            context = await self._context() if security is not Security.NONE else None
            client, greeting = await self._open(security, context)
            await self._hello(client)
            if security is Security.STARTTLS:
                await self._starttls(client, context)
                await self._hello(client)
            if s.username:
                await self._login(client)
        except SmtpError:
            await _quit(client, self.timeouts.quit)
            raise
        except Exception as exc:
            await _quit(client, self.timeouts.quit)
            raise self._setup_error(exc) from exc
        self._client = client
        self._pipelined = Pipelining()  # a new connection starts optimistic again
        self._last_used = asyncio.get_running_loop().time()
        return f"{greeting.code} {' '.join(greeting.message.split())}"

    async def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            try:
                self._tls_context = await asyncio.to_thread(tls_context, self.settings)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise SmtpError(
                    f"the CA file {self.settings.ca_file} cannot be used: {exc}",
                    kind=FaultKind.TASK_FATAL,
                    fix="give a PEM file of CA certificates (--ca-file PATH, or the CA file in the SMTP settings)",
                ) from None
        return self._tls_context

    async def _open(
        self, security: Security, context: ssl.SSLContext | None
    ) -> tuple[aiosmtplib.SMTP, aiosmtplib.SMTPResponse]:
        """TCP (and TLS on an SSL/TLS port) and the greeting; a port of the other kind is named fast."""
        s, wait = self.settings, self.timeouts.greeting
        name = await _local_fqdn() or "localhost"
        if security is Security.TLS:
            client = self._new_client(name, context)
            self._step = "the greeting"
            try:
                return client, await client.connect(timeout=wait)
            except Exception as exc:
                cause = classify.tls_cause(exc)
                if (
                    cause is not None
                    and not isinstance(cause, ssl.SSLCertVerificationError)
                    and await _greets_in_clear(s.host, s.port, min(wait, PROBE_TIMEOUT_S))
                ):
                    raise classify.expects_plain_start(self.where) from None
                raise
        # A plain connection to an SSL/TLS port gets no greeting: the server waits for a TLS
        # handshake.  When not a byte has come after a short while, a second connection tries
        # one, so the user hears "choose SSL/TLS" in seconds instead of "no answer" after the
        # greeting timeout.  A server that has begun its greeting (Postfix's postscreen sends
        # "220-" and makes the client wait) is never probed: a probe would be a pregreet to it.
        self._step = "connecting"
        sock = await _open_socket(s.host, s.port, self.timeouts.command)
        try:
            self._step = "the greeting"
            silent = not await _readable(sock, TLS_PROBE_AFTER_S)
            if silent and await _answers_tls(s.host, s.port, min(wait, PROBE_TIMEOUT_S)):
                raise classify.expects_implicit_tls(self.where)
            sock.setblocking(False)
            client = self._new_client(name, context, sock)
        except BaseException:
            sock.close()
            raise
        return client, await client.connect(timeout=wait)

    def _new_client(
        self, name: str, context: ssl.SSLContext | None, sock: socket.socket | None = None
    ) -> aiosmtplib.SMTP:
        s = self.settings
        tls = Security(s.security) is Security.TLS
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=None if sock is not None else s.port,
            sock=sock,
            use_tls=tls,
            # STARTTLS is done in connect(), where "not offered" is an error: never the library's
            # silent plaintext fallback.
            start_tls=False,
            tls_context=context if tls else None,
            timeout=self.timeouts.command,
            local_hostname=name,
        )

    async def _hello(self, client: aiosmtplib.SMTP) -> None:
        self._step = "EHLO"
        name = await _ehlo_name(client)
        try:
            await client.ehlo(hostname=name, timeout=self.timeouts.command)
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            self._step = "HELO"
            await client.helo(hostname=name, timeout=self.timeouts.command)

    async def _starttls(self, client: aiosmtplib.SMTP, context: ssl.SSLContext | None) -> None:
        self._step = "STARTTLS"
        if not client.supports_extension("starttls"):
            raise classify.starttls_not_offered(self.where)
        await client.starttls(tls_context=context, server_hostname=self.settings.host, timeout=self.timeouts.command)

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        """AUTH with one mechanism: a refused password is tried once, not once per mechanism."""
        self._step = "login"
        username, password = self.settings.username, self._password or ""
        if not client.supports_extension("auth"):
            raise classify.login_not_offered(
                self.where,
                over_tls=client.get_transport_info("sslcontext") is not None,
                starttls_offered=client.supports_extension("starttls"),
            )
        offered = client.server_auth_methods
        mechanism = next((m for m in MECHANISMS if m in offered), None)
        if mechanism is None:
            raise classify.no_common_mechanism(self.where, [m.upper() for m in offered])
        auth = {"plain": client.auth_plain, "login": client.auth_login, "cram-md5": client.auth_crammd5}[mechanism]
        try:
            await auth(username, password, timeout=self.timeouts.command)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise classify.login_refused(self.where, username, classify.reply(exc.code, exc.message)) from None

    def _setup_error(self, exc: BaseException) -> SmtpError:
        """What an exception while setting the session up means (by type and cause, never text)."""
        cause = classify.tls_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return classify.certificate_error(self.where, cause, self.settings)
        if cause is not None:
            return classify.tls_failed(self.where, cause)
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
            return classify.session_refused(self.where, self._step, classify.reply(exc.code, exc.message))
        if isinstance(exc, OSError | TimeoutError):  # refused, reset, lost, timed out
            wait = self.timeouts.greeting if self._step == "the greeting" else self.timeouts.command
            return classify.unreachable(self.where, self._step, exc, wait)
        return classify.unexpected(self.where, self._step, exc)

    async def ensure_connected(self) -> None:
        """Connect if needed; probe a connection that sat idle so a stale one is replaced."""
        loop = asyncio.get_running_loop()
        if self.connected and loop.time() - self._last_used > self.idle_check_s:
            assert self._client is not None
            try:
                await self._client.noop(timeout=self.timeouts.command)
            except Exception:  # any failure: a fresh connection answers the question
                await self.close()
        if not self.connected:
            await self.connect()

    # ---- messages ----------------------------------------------------------------------
    async def send(
        self,
        mail_from: str,
        recipients: tuple[str, ...],
        raw: bytes,
        before_dot: Callable[[], object] | None = None,
    ) -> SendResult:
        """Send one message on the open session; every failure is an SmtpError.

        ``before_dot`` is called once the envelope is on the wire and before the final dot
        of DATA (see ``transaction``): the worker passes the commit of the previous
        message's result, so that commit's fsync overlaps with the server's work on this
        envelope while a crash can still leave at most one delivered-but-unrecorded message.
        Its exceptions are raised as they are, after the connection was aborted.
        """
        await self.ensure_connected()
        assert self._client is not None
        client = self._client
        try:
            result = await transact(
                client,
                mail_from,
                list(recipients),
                raw,
                before_dot,
                where=self.where,
                timeouts=self.timeouts,
                pipelining=self.pipelining,
                state=self._pipelined,
            )
        except HookFailed as exc:
            await self.close()
            raise exc.error from None
        except classify.PipeliningFault as exc:
            self.pipelining = False
            log.warning("%s", exc)
            await self.close()
            raise
        except SmtpError as exc:
            if exc.code == 421 or not client.is_connected:
                await self.close()
            else:
                await self._reset()
            raise
        except Exception as exc:
            await self.close()
            raise classify.unexpected(self.where, "sending", exc) from exc
        self._last_used = asyncio.get_running_loop().time()
        return result

    async def _reset(self) -> None:
        # After a refused MAIL/RCPT/DATA the session must be RSET before it is reused.
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.rset(timeout=self.timeouts.command)
            except Exception:
                await self.close()

    async def close(self) -> None:
        """QUIT politely (briefly), then drop the connection."""
        client, self._client = self._client, None
        await _quit(client, self.timeouts.quit)


async def _quit(client: aiosmtplib.SMTP | None, timeout: float) -> None:
    """Say QUIT if the connection still stands, then close it; never raises."""
    if client is None:
        return
    if client.is_connected:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.quit(timeout=timeout), timeout)
    client.close()


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The TLS context for a task: the system's CAs plus the task's CA file; reads files."""
    context = ssl.create_default_context()
    if settings.ca_file:
        context.load_verify_locations(cafile=settings.ca_file)
    if not settings.verify_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _local_fqdn() -> str | None:
    """This computer's fully qualified name, if it has one (looked up once, off the event loop)."""
    global _fqdn
    if _fqdn is None:
        _fqdn = await asyncio.to_thread(socket.getfqdn)  # may wait for DNS
    name = _fqdn.strip().rstrip(".")
    if _HOST_NAME.fullmatch(name) and not name.lower().startswith("localhost"):
        return name
    return None


async def _ehlo_name(client: aiosmtplib.SMTP) -> str:
    """The EHLO argument (RFC 5321 §4.1.4): the FQDN, else the address literal of our end."""
    name = await _local_fqdn()
    if name is not None:
        return name
    address = str(client.get_transport_info("sockname")[0])
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


async def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A non-blocking TCP socket connected to host:port, on the event loop (cancellable at once:
    a cancelled Test connection leaves no thread behind waiting for a silent server)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"cannot resolve {host}")
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
            except OSError as exc:  # the next address may answer (IPv6, then IPv4)
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error


async def _readable(sock: socket.socket, timeout: float) -> bool:
    """The server sent something (or closed) within ``timeout`` s; nothing is read from the socket."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())


async def _answers_tls(host: str, port: int, timeout: float) -> bool:
    """A TLS handshake with the port succeeds (certificate not checked: only the protocol is asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _greets_in_clear(host: str, port: int, timeout: float) -> bool:
    """The port sends a plain-text SMTP greeting (220) on a plain connection."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return line[:3] == b"220"
