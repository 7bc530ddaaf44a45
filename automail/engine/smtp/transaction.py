"""One SMTP mail transaction (MAIL, RCPT…, DATA) on a connection aiosmtplib opened.

aiosmtplib connects, negotiates TLS and logs in; this module runs the transaction itself
because the engine needs two things aiosmtplib's ``sendmail`` cannot do:

* **PIPELINING** (RFC 2920): when the server offers it, MAIL FROM, every RCPT TO and DATA
  leave in one write and their replies are read together — two round trips per message
  instead of 3 + recipients.  Every reply is still checked, in order.
* **A hook before the final dot**: ``before_dot`` is called as soon as the first command
  is on the wire, and always before the terminating ``.`` (the worker passes the commit of
  the previous message's result).  A server accepts a message only at that dot, so at most
  one delivered-but-unrecorded message exists at any time — a crash duplicates at most one —
  while the previous commit's fsync overlaps with the server's work on this envelope.

While the transaction runs, a small reply reader is the transport's protocol (swapped with
the public ``transport.set_protocol``); aiosmtplib's own protocol is put back afterwards and
hears about a lost connection either way.  Failures leave as aiosmtplib's exceptions
(``SMTPSenderRefused``, ``SMTPRecipientsRefused``, ``SMTPDataError``,
``SMTPServerDisconnected``), which ``sender.SmtpSession`` classifies.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import aiosmtplib
from aiosmtplib import SMTPResponse

from automail.errors import Reply

MAX_REPLY_BYTES = 64 * 1024  # a reply (with its continuation lines) longer than this is garbage
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class SendResult:
    """A delivery the server accepted: its reply, and every recipient it refused (4xx and 5xx)."""

    reply: str
    refused: dict[str, Reply]


def data_payload(raw: bytes) -> bytes:
    """The message as it travels after DATA, without the final ``.\\r\\n``: CRLF line
    endings, a leading dot doubled on every line (RFC 5321 4.5.2), ending in CRLF."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:  # a lone CR or LF somewhere
        raw = _LINE_ENDINGS.sub(b"\r\n", raw)
    if raw.startswith(b".") or b"\n." in raw:
        raw = _LEADING_DOT.sub(b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


class _ReplyReader(asyncio.Protocol):
    """The transport's protocol during a transaction: splits incoming bytes into replies.

    Unlike a one-reply-per-command reader it keeps every reply that arrives, however the
    server packs them into packets — which pipelining needs.  A lost connection is passed
    on to aiosmtplib's protocol, so the client knows it is disconnected.
    """

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._lines: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    # -- asyncio.Protocol ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:end]).rstrip(b"\r")
            start = end + 1
            self._line(line)
        del buf[:start]
        if len(buf) > MAX_REPLY_BYTES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "the server sent an over-long reply line"))
        self._wake()

    def _line(self, line: bytes) -> None:
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            text = line[:200].decode("utf-8", "replace")
            self._fail(aiosmtplib.SMTPResponseException(-1, f"malformed SMTP reply: {text!r}"))
            return
        self._lines.append(line)
        if sum(len(x) for x in self._lines) > MAX_REPLY_BYTES:
            self._fail(aiosmtplib.SMTPResponseException(-1, "the server sent an over-long reply"))
            return
        if line[3:4] != b"-":
            text = b"\n".join(x[4:].strip() for x in self._lines).decode("utf-8", "surrogateescape")
            self._replies.append(SMTPResponse(int(line[:3]), text))
            self._lines = []

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the server closed the connection"))
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- for the transaction -----------------------------------------------------------
    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def reply(self) -> SMTPResponse:
        """The next reply, in the order the server sent them."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._replies.popleft()


def _run_hook(hook: Callable[[], object], transport: asyncio.Transport) -> Awaitable[object] | None:
    """Call the hook; an awaitable it returns (e.g. a commit running in a thread) is awaited before the dot."""
    try:
        result = hook()
    except BaseException:
        transport.abort()  # no final dot: the server throws the unfinished message away
        raise
    return result if inspect.isawaitable(result) else None


async def _finish_hook(pending: Awaitable[object] | None, transport: asyncio.Transport) -> None:
    if pending is None:
        return
    try:
        await pending
    except BaseException:
        transport.abort()  # no final dot: the server throws the unfinished message away
        raise


def _accepted(reply: SMTPResponse) -> bool:
    return reply.code in (250, 251)


def _address(addr: str, utf8: bool) -> bytes:
    return b"<" + addr.encode("utf-8" if utf8 else "ascii") + b">"


async def transact(
    client: aiosmtplib.SMTP,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    before_dot: Callable[[], object] | None = None,
) -> tuple[dict[str, SMTPResponse], str]:
    """Send one message on ``client``'s open session; return (refused recipients, reply to DATA).

    Raises ``SMTPSenderRefused`` / ``SMTPRecipientsRefused`` / ``SMTPDataError`` /
    ``SMTPResponseException`` with the server's code, ``SMTPServerDisconnected`` when the
    connection is lost.  After a refusal the server's envelope may still be open: the caller
    sends RSET.  If ``before_dot`` returns an awaitable, it is awaited before the final dot.
    If ``before_dot`` (or its awaitable) raises, the connection is aborted (the server discards the
    unfinished message) and the error is re-raised.
    """
    transport = cast(asyncio.Transport | None, client.transport)
    inner = client.protocol
    if transport is None or inner is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    utf8 = not (mail_from.isascii() and all(r.isascii() for r in recipients))
    if utf8 and not client.supports_extension("smtputf8"):
        raise aiosmtplib.SMTPResponseException(
            553, "an address has non-ASCII characters and the server does not offer SMTPUTF8"
        )
    payload = data_payload(raw)
    mail = b"MAIL FROM:" + _address(mail_from, utf8)
    if client.supports_extension("size"):
        mail += b" SIZE=%d" % (len(payload) + 3)
    if utf8:
        mail += b" SMTPUTF8"
    commands = [mail + b"\r\n"]
    commands += [b"RCPT TO:" + _address(r, utf8) + b"\r\n" for r in recipients]
    commands.append(b"DATA\r\n")
    pipelining = client.supports_extension("pipelining")

    reader = _ReplyReader(inner)
    transport.set_protocol(reader)
    hook: Awaitable[object] | None = None
    try:
        replies: list[SMTPResponse] = []
        if pipelining:
            transport.write(b"".join(commands))
            if before_dot is not None:
                hook = _run_hook(before_dot, transport)  # while the server works on the envelope
            for _ in commands:
                replies.append(await reader.reply())
        else:
            for i, command in enumerate(commands):
                transport.write(command)
                if i == 0 and before_dot is not None:
                    hook = _run_hook(before_dot, transport)
                replies.append(await reader.reply())
                if i == 0 and replies[0].code != 250:
                    break
                if i == len(recipients) and not any(_accepted(r) for r in replies[1:]):
                    break  # every recipient refused: no DATA
        mail_reply, rcpt_replies = replies[0], replies[1 : 1 + len(recipients)]
        data_reply = replies[-1] if len(replies) == len(commands) else None
        if (
            data_reply is not None
            and data_reply.code == 354
            and (mail_reply.code != 250 or not any(_accepted(r) for r in rcpt_replies))
        ):
            # RFC 2920: a server may accept DATA though it refused the envelope; a lone dot
            # ends that empty transaction (it is refused for want of recipients).
            transport.write(b".\r\n")
            await reader.reply()
        if mail_reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, mail_from)
        refused = {rcpt: reply for rcpt, reply in zip(recipients, rcpt_replies, strict=True) if not _accepted(reply)}
        if len(refused) == len(recipients):
            raise aiosmtplib.SMTPRecipientsRefused(
                [aiosmtplib.SMTPRecipientRefused(r.code, r.message, a) for a, r in refused.items()]
            )
        assert data_reply is not None
        if data_reply.code != 354:
            raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
        if hook is None:
            transport.writelines((payload, b".\r\n"))
        else:
            transport.write(payload)
            await _finish_hook(hook, transport)  # the previous result is durable before this dot
            transport.write(b".\r\n")
        final = await reader.reply()
        if final.code != 250:
            raise aiosmtplib.SMTPDataError(final.code, final.message)
        return refused, final.message
    finally:
        if not transport.is_closing():
            transport.set_protocol(inner)
