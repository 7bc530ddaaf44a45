"""One task's SMTP session over aiosmtplib: connect, TLS, login, send, classify errors."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable

import aiosmtplib

from automail.errors import FaultKind, SmtpError
from automail.models import Security, SmtpSettings

from .classify import Reply
from .transaction import SendResult, transact


def _reply_text(exc: aiosmtplib.SMTPResponseException) -> str:
    return " ".join(str(exc.message).split())


def _is_tls_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        text = str(seen).lower()
        if "starttls" in text or "ssl" in text or "tls" in text or "certificate" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class SmtpSession:
    """A reusable connection to the task's server.

    Connects lazily, reuses the connection while messages flow, checks a
    connection that sat idle with NOOP, and reconnects when it was dropped.
    Every aiosmtplib error leaves as an SmtpError with a kind and a readable text.
    """

    def __init__(self, settings: SmtpSettings, password: str | None, *, idle_check_s: float = 5.0) -> None:
        self.settings = settings
        self._password = password
        self._client: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self.idle_check_s = idle_check_s

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.host}:{s.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def connect(self) -> str:
        """Open the session (TLS as configured) and log in; returns the server's greeting."""
        await self.close()
        s = self.settings
        security = Security(s.security)
        if s.username and security is Security.NONE and not (s.allow_insecure_auth or s.is_loopback):
            raise SmtpError(
                f"refusing to send the password for {s.username} to {self.where} without encryption",
                kind=FaultKind.TASK_FATAL,
                fix="open Settings › Basic and choose STARTTLS or SSL/TLS",
            )
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=security is Security.TLS,
            # starttls must get STARTTLS or fail: never the library's silent plaintext fallback.
            start_tls=security is Security.STARTTLS,
            validate_certs=s.verify_certs,
            timeout=s.timeout,
            local_hostname=_local_name(),
        )
        try:
            greeting = await client.connect()
            if client.is_ehlo_or_helo_needed:  # the transaction reads the extensions (PIPELINING, SIZE)
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except OSError as exc:  # aiosmtplib's SMTPConnectError and SMTPConnectTimeoutError among them
            client.close()
            if _is_tls_problem(exc) and not isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
                raise self._tls_error(exc) from None
            raise SmtpError(
                f"cannot reach the SMTP server {self.where}: {_short(exc)}",
                kind=FaultKind.TASK_RETRY,
                fix="check the server name and port, and the network; AutoMail keeps retrying",
            ) from None
        except aiosmtplib.SMTPException as exc:
            client.close()
            if _is_tls_problem(exc):
                raise self._tls_error(exc) from None
            raise SmtpError(
                f"the SMTP server {self.where} refused the session: {_short(exc)}",
                kind=FaultKind.TASK_RETRY,
                fix="check the server name and port",
            ) from None
        if s.username:
            try:
                await client.login(s.username, self._password or "")
            except aiosmtplib.SMTPAuthenticationError as exc:
                client.close()
                raise self._login_error(exc) from None
            except aiosmtplib.SMTPNotSupported:
                client.close()
                raise SmtpError(
                    f"the SMTP server {self.where} does not offer login (AUTH)",
                    kind=FaultKind.TASK_FATAL,
                    fix="check the security setting (many servers offer AUTH only after STARTTLS)",
                ) from None
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
                client.close()
                raise SmtpError(
                    f"the SMTP server {self.where} dropped the connection during login: {_short(exc)}",
                    kind=FaultKind.TASK_RETRY,
                ) from None
            except aiosmtplib.SMTPResponseException as exc:
                client.close()
                kind = FaultKind.TASK_RETRY if 400 <= exc.code < 500 else FaultKind.TASK_FATAL
                raise SmtpError(
                    f"SMTP login to {self.where} as {s.username} failed: {exc.code} {_reply_text(exc)}",
                    kind=kind,
                    code=exc.code,
                    fix="open Settings › Basic and check the user name and password",
                ) from None
        self._client = client
        self._last_used = asyncio.get_running_loop().time()
        return f"{greeting.code} {greeting.message}"

    def _login_error(self, exc: aiosmtplib.SMTPResponseException) -> SmtpError:
        return SmtpError(
            f"SMTP login rejected by {self.where} for {self.settings.username}: {exc.code} {_reply_text(exc)}",
            kind=FaultKind.TASK_FATAL,
            code=exc.code,
            fix="open Settings › Basic and check the user name and password",
        )

    def _tls_error(self, exc: BaseException) -> SmtpError:
        return SmtpError(
            f"secure connection (TLS) to {self.where} failed: {_short(exc)}",
            kind=FaultKind.TASK_FATAL,
            fix="check the security setting and port (STARTTLS 587, SSL/TLS 465) and the server's certificate",
        )

    async def ensure_connected(self) -> None:
        """Connect if needed; probe a connection that sat idle so a stale one is replaced."""
        loop = asyncio.get_running_loop()
        if self.connected and loop.time() - self._last_used > self.idle_check_s:
            assert self._client is not None
            try:
                await self._client.noop()
            except (aiosmtplib.SMTPException, OSError):
                await self.close()
        if not self.connected:
            await self.connect()

    async def send(
        self,
        mail_from: str,
        recipients: tuple[str, ...],
        raw: bytes,
        before_dot: Callable[[], object] | None = None,
    ) -> SendResult:
        """Send one message on the open session; classify every failure.

        ``before_dot`` is called once the envelope is on the wire and before the final dot
        of DATA (see ``transaction``): the worker passes the commit of the previous
        message's result, so that commit's fsync overlaps with the server's work on this
        envelope while a crash can still leave at most one delivered-but-unrecorded message.
        """
        await self.ensure_connected()
        assert self._client is not None
        client = self._client
        total = self.settings.timeout * 3
        try:
            async with asyncio.timeout(total):
                errors, reply = await transact(client, mail_from, list(recipients), raw, before_dot)
        except aiosmtplib.SMTPSenderRefused as exc:
            await self._reset()
            if 400 <= exc.code < 500:
                raise SmtpError(
                    f"sender {mail_from} temporarily refused by {self.where}: {exc.code} {_reply_text(exc)}",
                    kind=FaultKind.TRANSIENT,
                    code=exc.code,
                ) from None
            raise SmtpError(
                f"sender {mail_from} refused by {self.where}: {exc.code} {_reply_text(exc)}",
                kind=FaultKind.TASK_FATAL,
                code=exc.code,
                fix="open Settings › Basic and use a sender address this account may send as",
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            await self._reset()
            codes = [e.code for e in exc.recipients]
            detail = "; ".join(f"{e.recipient}: {e.code} {_reply_text(e)}" for e in exc.recipients)
            permanent = all(c >= 500 for c in codes)
            raise SmtpError(
                f"all recipients refused: {detail}",
                kind=FaultKind.PERMANENT if permanent else FaultKind.TRANSIENT,
                code=min(codes) if not permanent else max(codes),
                refused={e.recipient: Reply(e.code, _reply_text(e)) for e in exc.recipients},
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            await self._reset()
            if exc.code == 421 or exc.code < 0:
                await self.close()
            raise SmtpError(
                f"{self.where} answered {exc.code} {_reply_text(exc)}",
                kind=FaultKind.TRANSIENT if exc.code < 500 else FaultKind.PERMANENT,
                code=exc.code,
            ) from None
        except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
            await self.close()
            raise SmtpError(
                f"{self.where} did not answer in time ({_short(exc) or f'{total:.0f} s'})",
                kind=FaultKind.TRANSIENT,
            ) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise SmtpError(
                f"connection to {self.where} lost while sending: {_short(exc)}",
                kind=FaultKind.TRANSIENT,
            ) from None
        self._last_used = asyncio.get_running_loop().time()
        refused = {addr: Reply(r.code, " ".join(r.message.split())) for addr, r in errors.items()}
        return SendResult(reply=" ".join(reply.split()), refused=refused)

    async def _reset(self) -> None:
        # After a refused MAIL/RCPT/DATA the session must be RSET before it is reused.
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.rset()
            except (aiosmtplib.SMTPException, OSError):
                await self.close()

    async def close(self) -> None:
        """QUIT politely (briefly), then drop the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        if client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                pass
        client.close()


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]


@functools.cache
def _local_name() -> str:
    # aiosmtplib's default socket.getfqdn() may wait for DNS; the host name is enough for EHLO.
    name = socket.gethostname() or "localhost"
    return "".join(c for c in name if c.isalnum() or c in ".-") or "localhost"
