"""One SMTP mail transaction (MAIL, RCPT…, DATA) on a connection the session opened.

aiosmtplib connects, negotiates TLS and logs in (``session``); this module runs the
transaction itself because the engine needs what aiosmtplib's ``sendmail`` cannot do:

* **PIPELINING** (RFC 2920), adaptively: when the server offers it (and the task allows it),
  MAIL FROM, every RCPT TO and DATA leave in one write — DATA as the last command of the
  group, as RFC 2920 allows and as Postfix's own SMTP client does — and their replies are
  read together, each checked in order: a message costs two round trips (the group → its
  replies ending in 354; the message and its final dot → 250) however many recipients it has,
  against aiosmtplib's 3 + recipients.  The risk is a message whose recipients are all
  refused: its DATA is then refused too (503/554; nothing is sent after it, the transaction
  ends with RSET and the error is the same recipients-refused one as without pipelining), and
  Postfix counts such a DATA as a client error (smtpd.c ``data_cmd`` returns -1 and the
  command loop increments ``error_count``, which drives ``smtpd_soft_error_limit`` tarpitting
  and ``smtpd_hard_error_limit`` disconnection; each refused RCPT counts once already).
  Measured with a real Postfix 3.7 at its defaults (tests/test_postfix_smtp.py
  ``test_why_data_waits_for_the_rcpt_replies``): ten such messages with DATA pipelined end in
  "421 4.7.0 Error: too many errors" and a dropped connection; ended with RSET after the
  RCPT replies, the session stays usable.  So the first message on a connection that finds
  no recipient accepted (every RCPT refused, or MAIL refused) turns DATA pipelining off for
  the rest of that connection (``Pipelining.data``): from then on DATA waits for the RCPT
  replies and is never sent after all-refused ones (three round trips), so a run of bad
  addresses costs the server one DATA error per connection, not one per message.  The rule
  is per connection, not per session object, because the server's error counter is: a new
  connection starts at zero errors, so it starts optimistic again (a reconnect is rare:
  after a dropped or idle connection).  A broken server that answers 354 although no
  recipient was accepted gets the terminating dot alone (an empty message to nobody) and
  the transaction still fails as recipients (or sender) refused — a message is never
  "delivered" to nobody.
* **A hook before the final dot**: ``before_dot`` is called as soon as the first command
  is on the wire, and an awaitable it returns is awaited before the last piece of the message
  and the terminating ``.``, which then go in one write (the worker passes the commit of the
  previous message's result, already running in a thread).  A server accepts a message only
  at that dot, so at most one delivered-but-unrecorded message exists at any time — a crash
  duplicates at most one — while the previous commit's fsync overlaps with this envelope.
* **A reply timeout per step** (``timeouts.Timeouts``) and an upload that may take as long
  as it needs while it moves; a failure after the final dot is reported as an unknown
  outcome, since the server may have accepted the message.
* **8-bit bodies**: ``BODY=8BITMIME`` when the server offers it, otherwise the message is
  re-encoded to 7 bits (``encode``); the server's ``SIZE`` limit is checked before sending.

While the transaction runs, a small reply reader is the transport's protocol (swapped with
the public ``transport.set_protocol``: aiosmtplib 5.x has no public way to pipeline, which
is why ``pyproject.toml`` pins its major version); aiosmtplib's own protocol is put back
afterwards and hears about a lost connection either way.  Every failure leaves as an
``SmtpError`` built by ``classify``; an exception from ``before_dot`` leaves as ``HookFailed``.
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

from automail.errors import FaultKind, Reply, SmtpError

from . import classify, encode
from .timeouts import Timeouts

MAX_REPLY_BYTES = 64 * 1024  # a reply (with its continuation lines) longer than this is garbage
READ_BUFFER = 16 * 1024  # the transport reads replies into this; a longer burst takes several reads
UPLOAD_CHUNK = 256 * 1024  # written at a time; the next waits until the transport has room
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_NOT_IN_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass(frozen=True)
class SendResult:
    """A delivery the server accepted: its reply, and every recipient it refused (4xx and 5xx)."""

    reply: str
    refused: dict[str, Reply]


class HookFailed(Exception):
    """``before_dot`` raised ``error``; the connection was aborted before the final dot."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Broken(Exception):
    """The reply stream is unusable: the connection was lost or the server sent garbage."""


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


class _ReplyReader(asyncio.BufferedProtocol):
    """The transport's protocol during a transaction: splits incoming bytes into replies.

    Unlike a one-reply-per-command reader it keeps every reply that arrives, however the
    server packs them into packets — which pipelining needs.  A lost connection is passed
    on to aiosmtplib's protocol, so the client knows it is disconnected.  It also follows
    the transport's flow control, so the upload can wait for room instead of buffering a
    whole large message in memory.

    A buffered protocol: the transport reads into a small buffer of ours.  With a plain
    ``Protocol`` asyncio allocates 256 KiB for every read (``recv(max_size)``: an mmap, an mremap
    and an munmap per reply, three replies a message).
    """

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self.inner = inner
        self._read_into = memoryview(bytearray(READ_BUFFER))
        self._buffer = bytearray()
        self._replies: deque[Reply] = deque()
        self._lines: list[bytes] = []  # continuation lines of the reply being read
        self._size = 0  # their bytes
        self._waiter: asyncio.Future[None] | None = None
        self._error: _Broken | None = None
        self._paused = False

    # -- asyncio.BufferedProtocol ----------------------------------------------------
    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_into

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_into[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Take bytes the server sent (what ``buffer_updated`` received)."""
        buf = self._buffer
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:end]).rstrip(b"\r")
            start = end + 1
            self._line(line)
        del buf[:start]
        if len(buf) > MAX_REPLY_BYTES:
            self._fail(_Broken("the server sent an over-long reply line"))
        self._wake()

    def _line(self, line: bytes) -> None:
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            text = line[:200].decode("utf-8", "replace")
            self._fail(_Broken(f"malformed SMTP reply: {text!r}"))
            return
        size = self._size + len(line)
        if size > MAX_REPLY_BYTES:
            self._fail(_Broken("the server sent an over-long reply"))
            return
        if line[3:4] == b"-":
            self._lines.append(line)
            self._size = size
            return
        if self._lines:
            self._lines.append(line)
            joined = b" ".join(x[4:].strip() for x in self._lines)
            self._lines, self._size = [], 0
        else:  # most replies are one line
            joined = line[4:].strip()
        self._replies.append(classify.reply(int(line[:3]), joined.decode("utf-8", "surrogateescape")))

    def eof_received(self) -> bool:
        self._fail(_Broken("the server closed the connection"))
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        error = _Broken("connection lost")
        error.__cause__ = exc
        self._fail(error)
        self._paused = False
        self._wake()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()
        self.inner.resume_writing()

    # -- for the transaction -----------------------------------------------------------
    def _fail(self, error: _Broken) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float) -> None:
        # One timer handle, not an ``asyncio.timeout`` context (its object, rescheduling and
        # cancel-to-TimeoutError conversion for each of a message's three replies).
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def reply(self, timeout: float) -> Reply:
        """The next reply, in the order the server sent them; TimeoutError after ``timeout`` s."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        return self._replies.popleft()

    async def drained(self, timeout: float) -> None:
        """Return once the transport takes more data; TimeoutError if it stays full ``timeout`` s."""
        while self._paused:
            if self._error is not None:
                raise self._error
            await self._wait(timeout)
        if self._error is not None:
            raise self._error


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _address(addr: str, utf8: bool) -> bytes:
    if _NOT_IN_ADDRESS.search(addr):
        raise SmtpError(f"the address {addr!r} contains characters SMTP cannot carry", kind=FaultKind.PERMANENT)
    return b"<" + addr.encode("utf-8" if utf8 else "ascii") + b">"


@dataclass
class Pipelining:
    """What one connection pipelines (RFC 2920); the session keeps one per connection.

    ``data``: DATA goes in the envelope's write.  ``transact`` turns it off for good once a
    pipelined DATA met an envelope with no recipient accepted (see the module docstring).
    """

    data: bool = True


@dataclass(frozen=True)
class _Envelope:
    """The replies to one envelope: MAIL FROM, each RCPT TO sent, and DATA when it was pipelined."""

    mail: Reply
    rcpts: list[Reply]
    data: Reply | None


@dataclass(frozen=True)
class _Prepared:
    payload: bytes
    mail: bytes  # the MAIL FROM command with its parameters, CRLF included
    rcpts: list[bytes]  # the RCPT TO commands, CRLF included
    limit: int | None  # the server's SIZE, if it announced one


async def _prepare(client: aiosmtplib.SMTP, where: str, mail_from: str, recipients: list[str], raw: bytes) -> _Prepared:
    """The commands and the payload for this server's extensions; refuse what cannot go."""
    utf8 = not (mail_from.isascii() and all(r.isascii() for r in recipients))
    if utf8 and not client.supports_extension("smtputf8"):
        raise SmtpError(
            f"an address has non-ASCII characters and {where} does not offer SMTPUTF8", kind=FaultKind.PERMANENT
        )
    params = b""
    if encode.needs_7bit(raw):
        if client.supports_extension("8bitmime"):
            params += b" BODY=8BITMIME"
        elif len(raw) > 64 * 1024:
            raw = await asyncio.to_thread(encode.to_7bit, raw)  # parsing a large message takes a while
        else:
            raw = encode.to_7bit(raw)
    payload = data_payload(raw)
    limit: int | None = None
    if client.supports_extension("size"):
        announced = client.esmtp_extensions.get("size", "").strip()
        limit = int(announced) if announced.isdigit() and int(announced) > 0 else None
        if limit is not None and len(payload) > limit:
            raise classify.size_error(where, len(payload), limit)
        params = b" SIZE=%d" % len(payload) + params
    if utf8:
        params += b" SMTPUTF8"
    mail = b"MAIL FROM:" + _address(mail_from, utf8) + params + b"\r\n"
    rcpts = [b"RCPT TO:" + _address(r, utf8) + b"\r\n" for r in recipients]
    return _Prepared(payload, mail, rcpts, limit)


class _Transaction:
    """One message on one connection; a method per protocol step."""

    def __init__(
        self,
        transport: asyncio.Transport,
        reader: _ReplyReader,
        where: str,
        timeouts: Timeouts,
        prepared: _Prepared,
        before_dot: Callable[[], object] | None,
    ) -> None:
        self.transport = transport
        self.reader = reader
        self.where = where
        self.timeouts = timeouts
        self.prepared = prepared
        self.before_dot = before_dot
        self._pending: Awaitable[object] | None = None

    def _run_hook(self) -> None:
        """Call ``before_dot``; an awaitable it returns (a commit in a thread) is awaited before the dot."""
        if self.before_dot is None:
            return
        try:
            result = self.before_dot()
        except BaseException as exc:
            self.transport.abort()  # no final dot: the server throws the unfinished message away
            raise HookFailed(exc) from exc
        if inspect.isawaitable(result):
            self._pending = result

    async def _finish_hook(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            await pending
        except BaseException as exc:
            self.transport.abort()  # no final dot: the server throws the unfinished message away
            raise HookFailed(exc) from exc

    async def _reply(self, step: str, timeout: float, *, after_dot: bool = False) -> Reply:
        try:
            return await self.reader.reply(timeout)
        except (TimeoutError, _Broken) as exc:
            self.transport.abort()  # a reply may still come: the stream is out of step for good
            raise classify.send_failed(self.where, step, exc, timeout, after_dot=after_dot) from None

    async def envelope(self, pipelining: bool, with_data: bool) -> _Envelope:
        """MAIL FROM and the RCPT TOs (and DATA when ``with_data``): in one write when pipelining,
        else each after the last reply.  DATA is never pipelined without the envelope."""
        p, wait = self.prepared, self.timeouts.envelope
        if pipelining:
            group = [p.mail, *p.rcpts, b"DATA\r\n"] if with_data else [p.mail, *p.rcpts]
            self.transport.writelines(group)
            self._run_hook()  # while the server works on the envelope
            mail = await self._group_reply("MAIL FROM", wait)
            rcpts = [await self._group_reply("RCPT TO", wait) for _ in p.rcpts]
            data = await self._group_reply("DATA", self.timeouts.command) if with_data else None
            # After a refused MAIL the RCPTs are refused as out of sequence (503), and DATA after an
            # envelope with no recipient accepted (503, or Postfix's 554 5.5.1): that is no fault.
            suspects = [mail, *rcpts] if mail.code == 250 else [mail]
            if data is not None and mail.code == 250 and any(_accepted(r) for r in rcpts):
                suspects.append(data)
            bad = next((r for r in suspects if classify.is_protocol_error(r)), None)
            if bad is not None:
                raise self._pipelining_fault(f"{self.where} answered the pipelined envelope with {bad}", bad.code)
            return _Envelope(mail, rcpts, data)
        self.transport.write(p.mail)
        self._run_hook()
        mail = await self._reply("MAIL FROM", wait)
        if mail.code != 250:
            return _Envelope(mail, [], None)
        rcpts = []
        for command in p.rcpts:
            self.transport.write(command)
            rcpts.append(await self._reply("RCPT TO", wait))
        return _Envelope(mail, rcpts, None)

    async def _group_reply(self, step: str, timeout: float) -> Reply:
        """The next reply to a pipelined group.  A 421 ends the group: the server closes the connection
        after it (RFC 5321 3.8), so the replies after it never come, and that is no pipelining fault
        (Postfix's "421 4.7.0 Error: too many errors", or a server going down) — the message waits
        for a new connection.  A reply that does not come, or garbage, is one."""
        try:
            r = await self._reply(step, timeout)
        except SmtpError as exc:
            raise self._pipelining_fault(exc.message) from None
        if r.code == 421:
            self.transport.abort()
            raise classify.closing(self.where, step, r)
        return r

    def _pipelining_fault(self, text: str, code: int | None = None) -> classify.PipeliningFault:
        self.transport.abort()
        return classify.PipeliningFault(
            f"{text}; PIPELINING is turned off for the rest of this session", kind=FaultKind.TRANSIENT, code=code
        )

    async def data(self) -> Reply:
        """DATA on its own, after the envelope's replies."""
        self.transport.write(b"DATA\r\n")
        return await self._reply("DATA", self.timeouts.command)

    async def nothing(self) -> None:
        """End a DATA the server accepted (354) although it had no recipient: the final dot alone.

        The message is not sent, so nothing reaches anybody; the reply does not change the
        outcome (the envelope's refusal).  The hook's commit is still awaited before this dot,
        as before every final dot.
        """
        await self._finish_hook()
        self.transport.write(b".\r\n")
        try:
            await self.reader.reply(self.timeouts.final_dot)
        except (TimeoutError, _Broken):
            self.transport.abort()  # out of step for good; the session reconnects

    async def upload(self) -> Reply:
        """The message and the final dot; the server's verdict on the message."""
        payload = memoryview(self.prepared.payload)
        block = self.timeouts.data_block
        try:
            for start in range(0, len(payload), UPLOAD_CHUNK):
                chunk = payload[start : start + UPLOAD_CHUNK]
                if start + UPLOAD_CHUNK < len(payload):
                    self.transport.write(chunk)
                else:
                    # The previous result is durable before this dot.  The last chunk waits with the
                    # dot (the server does nothing with it before the dot): one write, not two.
                    await self._finish_hook()
                    self.transport.writelines([chunk, b".\r\n"])
                await self.reader.drained(block)
        except (TimeoutError, _Broken) as exc:
            self.transport.abort()
            raise classify.send_failed(self.where, "the upload of the message", exc, block, after_dot=False) from None
        final = await self._reply("the end of the message", self.timeouts.final_dot, after_dot=True)
        if final.code != 250:
            raise classify.message_refused(self.where, final, len(payload), self.prepared.limit, after_dot=True)
        return final


async def transact(
    client: aiosmtplib.SMTP,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    before_dot: Callable[[], object] | None = None,
    *,
    where: str = "the SMTP server",
    timeouts: Timeouts | None = None,
    pipelining: bool = True,
    state: Pipelining | None = None,
) -> SendResult:
    """Send one message on ``client``'s open, logged-in session.

    Raises an ``SmtpError`` saying what the failure means (``classify``), with ``refused``
    set when every recipient was refused; after a refusal the connection is still in step
    and the caller sends RSET, after a timeout or a garbled reply it is aborted.  If
    ``before_dot`` raises, the connection is aborted (the server discards the unfinished
    message) and ``HookFailed`` carries the error.  ``pipelining=False`` never pipelines;
    ``state`` is the connection's ``Pipelining`` (None: a fresh one, DATA pipelined).
    """
    state = state if state is not None else Pipelining()
    transport = cast(asyncio.Transport | None, client.transport)
    inner = client.protocol
    if transport is None or inner is None or transport.is_closing():
        raise classify.send_failed(where, "MAIL FROM", ConnectionError("not connected"), 0, after_dot=False)
    prepared = await _prepare(client, where, mail_from, recipients, raw)
    reader = _ReplyReader(inner)
    transport.set_protocol(reader)
    step = _Transaction(transport, reader, where, timeouts or Timeouts(), prepared, before_dot)
    try:
        pipelined = pipelining and client.supports_extension("pipelining")
        replies = await step.envelope(pipelined, with_data=pipelined and state.data)
        refusal = _envelope_refusal(replies, where, mail_from, recipients, prepared)
        if isinstance(refusal, SmtpError):
            if replies.data is not None:
                state.data = False  # the server counted that DATA as an error: no more on this connection
                if replies.data.code == 354:
                    await step.nothing()
            raise refusal
        data = replies.data if replies.data is not None else await step.data()
        if data.code != 354:
            raise classify.message_refused(where, data, len(prepared.payload), prepared.limit, after_dot=False)
        final = await step.upload()
        return SendResult(reply=final.text, refused=refusal)
    finally:
        if not transport.is_closing():
            transport.set_protocol(inner)


def _accepted(r: Reply) -> bool:
    return r.code in (250, 251)


def _envelope_refusal(
    replies: _Envelope, where: str, mail_from: str, recipients: list[str], prepared: _Prepared
) -> SmtpError | dict[str, Reply]:
    """The error when the envelope leaves nobody to send to (MAIL or every RCPT refused), else
    the recipients refused (4xx and 5xx) while others were accepted."""
    if replies.mail.code != 250:
        return classify.mail_refused(where, mail_from, replies.mail, len(prepared.payload), prepared.limit)
    refused = {rcpt: r for rcpt, r in zip(recipients, replies.rcpts, strict=True) if not _accepted(r)}
    if len(refused) == len(recipients):
        return classify.recipients_refused(refused)
    return refused
