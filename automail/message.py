"""Building and checking messages: .eml parsing, composing, Message-ID, send-time headers."""

from __future__ import annotations

import functools
import math
import mimetypes
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from automail import headerparse
from automail.errors import InputError
from automail.models import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_ascii_local,
    check_mailbox,
    check_text,
    format_mailbox,
    mailbox_address,
    parse_mailboxes,
    single_mailbox,
)
from automail.store.outbox import NewMessage

MAX_LIMIT_MB = 2048
MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1: servers answer "500 Line too long" beyond it
_BOM = b"\xef\xbb\xbf"
# RFC 5322 field name, then optional white space before the colon (obsolete syntax, section 4.5).
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_CONTROL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same checks over a whole header block at once: controls but TAB, CR and LF (a CR must end a line) …
_HEAD_CONTROL_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# … and in valid UTF-8, what check_text refuses beyond them: C1 controls (U+0080–U+009F), U+2028, U+2029.
_HEAD_FORBIDDEN_RE = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]")
_ORIGINATORS = {"from": True, "sender": True, "reply-to": False, "resent-from": True, "resent-sender": True}
_RECIPIENTS = ("to", "cc", "bcc")
_RESENT_RECIPIENTS = ("resent-to", "resent-cc", "resent-bcc")
_HIDDEN = frozenset({"bcc", "resent-bcc"})  # go into the envelope only, never on the wire
_ADDRESS_KEYS = frozenset([*_ORIGINATORS, *_RECIPIENTS, *_RESENT_RECIPIENTS])


def _msgid_domain(*senders: str) -> str:
    """The domain of the first sender that has one: the Message-ID's right-hand side."""
    for sender in senders:
        addr = mailbox_address(sender)
        if "@" in addr:
            return addr.rpartition("@")[2]
    return "automail.invalid"  # no sender known at all (a company without tasks)


def _date(now: float | None) -> str:
    """An RFC 5322 Date header value (local time with its offset) for ``now``."""
    from email.utils import formatdate  # here: email.utils costs ~15 ms of every CLI start

    return formatdate(time.time() if now is None else now, localtime=True)


def _check_size(raw: bytes, source: str, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise InputError(
            source,
            f"the message is {len(raw) / 1048576:.1f} MB, over the {max_bytes / 1048576:.0f} MB limit",
            fix="send large files as a link, or raise the limit with AUTOMAIL_MAX_MESSAGE_MB",
        )


class _Field:
    """One header field as read: its name, the line it starts on, and its physical lines."""

    # A plain class with slots, not a dataclass: `enqueue` makes one per header line, 240,000 for 30,000 files.
    __slots__ = ("_value", "first", "key", "line", "lines", "name")

    def __init__(self, name: str, line: int, first: bytes, value: bytes) -> None:
        self.name = name
        self.key = name.lower()  # the name in lower case
        self.line = line
        self.first = first  # the first line in standard form: "Name:" and the value as read
        self.lines = [value]  # the first without "Name:", continuations as they are (no line ends)
        self._value: str | None = None

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 3.2.2), decoded (UTF-8 was checked when reading)."""
        # Made once, when the whole header has been read: the gate asks for it several times.
        if self._value is None:
            lines = self.lines
            text = lines[0].decode("utf-8") if len(lines) == 1 else b"".join(lines).decode("utf-8")
            self._value = text.strip()
        return self._value

    def to_bytes(self) -> bytes:
        return self.first if len(self.lines) == 1 else b"\r\n".join([self.first, *self.lines[1:]])


def _line_error(source: str, number: int, line: bytes, problem: str, fix: str) -> InputError:
    shown = line[:60].decode("utf-8", "backslashreplace") + ("…" if len(line) > 60 else "")
    return InputError(f"{source}: line {number}", f"{problem}: {shown!r}", fix=fix)


def _check_header_line(source: str, number: int, line: bytes) -> None:
    if len(line) > MAX_LINE_OCTETS:
        raise _line_error(
            source,
            number,
            line,
            f"the header line is {len(line)} octets long, over the limit of {MAX_LINE_OCTETS}",
            "fold the header over several lines, each continuation starting with a space",
        )
    control = _CONTROL_RE.search(line)
    if control:
        raise _line_error(
            source,
            number,
            line,
            f"the header holds the control character 0x{control.group()[0]:02X}",
            "remove NUL, bare CR and other control characters from the headers",
        )
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _line_error(
            source,
            number,
            line,
            f"the header has a byte that is not UTF-8 (0x{line[exc.start]:02X})",
            "save the file as UTF-8, or encode non-ASCII header text as RFC 2047 encoded-words",
        ) from None
    check_text(f"{source}: line {number}", text)


def _head_is_clean(head: bytes) -> bool:
    """True when no line of the header block ``head`` can fail ``_check_header_line`` (the usual case):
    one scan instead of one per line.  False only means "check each line" (which names the line)."""
    if (
        _HEAD_CONTROL_RE.search(head)
        or head.count(b"\r") != head.count(b"\r\n")  # a bare CR
        or max(map(len, head.split(b"\n"))) > MAX_LINE_OCTETS
    ):
        return False
    if head.isascii():
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not ((b"\xc2" in head or b"\xe2\x80" in head) and _HEAD_FORBIDDEN_RE.search(head))


def _header_lines(raw: bytes, start: int) -> tuple[list[bytes], bytes, int, bytes | None]:
    """The header's lines up to the first empty one (line ends removed), the body, the body's first
    line number, and the header block as read (None when it took the line-by-line scan)."""
    crlf = raw.find(b"\n\r\n", start)
    lf = raw.find(b"\n\n", start, len(raw) if crlf < 0 else crlf + 2)  # not through the whole body
    ends = [i for i in (lf, crlf) if i >= 0]
    if not ends or raw.startswith((b"\n", b"\r\n"), start):
        return (*_scan_header_lines(raw, start), None)
    cut = min(ends) + 1  # where the first empty line starts: every line before it has content
    head = raw[start:cut]
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")[:-1]]
    body = raw[cut + 1 :] if raw[cut] == 0x0A else raw[cut + 2 :]
    return lines, body, len(lines) + 2, head


def _scan_header_lines(raw: bytes, start: int) -> tuple[list[bytes], bytes, int]:
    """``_header_lines`` line by line: also right for a header without a body or starting empty."""
    lines: list[bytes] = []
    pos, number = start, 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        stop = len(raw) if end < 0 else end
        line = raw[pos : stop - 1] if stop > pos and raw[stop - 1 : stop] == b"\r" else raw[pos:stop]
        pos = len(raw) if end < 0 else end + 1
        number += 1
        if not line:
            return lines, raw[pos:], number + 1
        lines.append(line)
    return lines, b"", number + 1


def _read_header(raw: bytes, source: str) -> tuple[list[_Field], bytes, int]:
    """Split ``raw`` into header fields and the body; returns (fields, body, body's first line number).

    Refuses what a receiving parser could read differently from us: a line that is neither
    a field nor a continuation, non-UTF-8 bytes, control characters, over-long lines.
    """
    lines, body, body_line, head = _header_lines(raw, len(_BOM) if raw.startswith(_BOM) else 0)
    clean = head is not None and _head_is_clean(head)
    fields: list[_Field] = []
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith(b"From ") and not _FIELD_RE.match(line):
            continue  # an mbox separator line: not part of the message
        if not clean:
            _check_header_line(source, number, line)
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise _line_error(
                    source, number, line, "the message starts with a continuation line", "remove the leading space"
                )
            fields[-1].lines.append(line)
            continue
        match = _FIELD_RE.match(line)
        if match is None:
            raise _line_error(
                source,
                number,
                line,
                "the line is not a header (Name: value) and no empty line separates it from the headers",
                "put an empty line between the headers and the body, or fix the header",
            )
        name, end = match.group(1), match.end()
        # "Name : value" (obsolete syntax) is written back as "Name: value"; the usual line as it is.
        first = line if end == len(name) + 1 else name + b":" + line[end:]
        fields.append(_Field(name.decode("ascii"), number, first, line[end:]))
    return fields, body, body_line


def _check_body(body: bytes, source: str, first_line: int) -> None:
    nul = body.find(b"\x00")
    if nul >= 0:
        line = first_line + body.count(b"\n", 0, nul)
        raise InputError(
            f"{source}: line {line}",
            "the body holds a NUL byte",
            fix="remove NUL bytes, or attach binary data as a base64-encoded MIME part",
        )
    if len(body) <= MAX_LINE_OCTETS:
        return
    lines = body.split(b"\n")
    if max(map(len, lines)) <= MAX_LINE_OCTETS:  # the common case, without a Python call per line
        return
    longest = max(range(len(lines)), key=lambda i: len(lines[i]))
    length = len(lines[longest].rstrip(b"\r"))
    if length > MAX_LINE_OCTETS:
        raise InputError(
            f"{source}: line {first_line + longest}",
            f"the body line is {length} octets long, over the limit of {MAX_LINE_OCTETS} that SMTP servers enforce",
            fix="encode the part as quoted-printable or base64 (Content-Transfer-Encoding), or wrap the lines",
        )


def _field_text(source: str, field: _Field) -> str:
    """The decoded value (RFC 2047 encoded-words too), refused if it hides control characters."""
    if "=?" not in field.value:  # nothing encoded: the lines were checked when read
        return field.value
    where = f"{source}: {field.name} (line {field.line})"
    fast = headerparse.unstructured(field.name, field.value)  # the same text, without the email package
    if fast is not None:
        return check_text(where, fast)
    from email import policy  # here: `enqueue` seldom needs the email package's header machinery

    try:
        text = str(policy.default.header_factory(field.name, field.value))
    except Exception as exc:  # the email package raises assorted errors on garbage
        raise InputError(where, f"cannot be read ({exc!r})", fix="correct the header") from None
    return check_text(where, text)


# RFC 5322 3.6: these occur at most once; two From or two To headers are read differently by receivers.
_UNIQUE = ("from", "sender", "reply-to", "to", "cc", "bcc", "subject", "message-id")


def _check_duplicates(source: str, fields: list[_Field]) -> None:
    if len({f.key for f in fields}) == len(fields):  # no name twice (the usual case): nothing to look for
        return
    by_key: dict[str, list[_Field]] = {}
    for f in fields:
        by_key.setdefault(f.key, []).append(f)
    for key in _UNIQUE:  # in this order: the same header is named whatever else is doubled
        found = by_key.get(key, [])
        if len(found) > 1:
            raise InputError(
                f"{source}: line {found[1].line}",
                f"the header {found[1].name} appears {len(found)} times",
                fix=f"merge them into one {found[0].name} header",
            )


def prepare_raw(
    raw: bytes,
    source: str,
    tag: str = "",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    *,
    now: float | None = None,
    default_sender: str = "",
) -> NewMessage:
    """Check a MIME message and make it ready to queue: the one gate every way in passes.

    The CLI's ``enqueue`` and ``send`` (through ``compose``) call it, and so must the mail
    merge, the pickup folder and the Python API.  Headers are read with obsolete syntax
    recognised; anything another parser could read differently is refused, naming the line.
    Recipients come from To/Cc/Bcc (Resent-To/Cc/Bcc for a resent message); Bcc and
    Resent-Bcc go into the envelope only.  The headers queued are the ones read (written
    back in ``Name: value`` form); a Message-ID (in the domain of From, else of
    ``default_sender``: the task's sender) is added when missing so every attempt carries
    the same one, and a Date (``now``) too.
    """
    _check_size(raw, source, max_bytes)
    check_text("tag", tag)
    if not raw.strip():
        raise InputError(source, "is empty", fix="give a complete MIME message (.eml)")
    fields, body, body_line = _read_header(raw, source)
    if not fields:
        raise InputError(source, "has no e-mail headers", fix="give a MIME message with From/To/Subject headers")
    _check_body(body, source, body_line)
    _check_duplicates(source, fields)
    texts: dict[str, str] = {}
    addresses: list[tuple[str, list[tuple[str, str]]]] = []  # (header key, its mailboxes), every one checked
    for f in fields:
        if f.key not in _ADDRESS_KEYS:
            texts[f.key] = _field_text(source, f)
            continue
        where = f"{source}: {f.name} (line {f.line})"
        mailboxes = parse_mailboxes(where, f.value)
        single = _ORIGINATORS.get(f.key)
        if single:
            single_mailbox(where, f.value, mailboxes, ascii_only=True)
        elif single is not None:
            for _name, addr in mailboxes:
                check_ascii_local(where, addr)
        addresses.append((f.key, mailboxes))
    from_header = next((f.value for f in fields if f.key == "from"), "")
    resent = any(f.key in _RESENT_RECIPIENTS for f in fields)
    wanted = _RESENT_RECIPIENTS if resent else _RECIPIENTS
    recipients = [addr for key, mailboxes in addresses if key in wanted for _name, addr in mailboxes]
    if not recipients:
        raise InputError(source, "has no recipients", fix="add a To, Cc or Bcc header")
    kept = [f.to_bytes() for f in fields if f.key not in _HIDDEN]
    message_id = texts.get("message-id", "").strip()
    if not message_id:
        from email.utils import make_msgid

        message_id = make_msgid(domain=_msgid_domain(from_header, default_sender))
        kept.append(b"Message-ID: " + message_id.encode("ascii"))
    if "date" not in texts:  # RFC 5322 requires it; spam filters score its absence
        kept.append(b"Date: " + _date(now).encode("ascii"))
    return NewMessage(
        raw=b"\r\n".join(kept) + b"\r\n\r\n" + body,
        recipients=tuple(dict.fromkeys(recipients)),
        from_header=from_header,
        subject=texts.get("subject", ""),
        message_id=message_id,
        tag=tag,
    )


def compose(
    *,
    to: Sequence[str],
    subject: str,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    text: str | None = None,
    html: str | None = None,
    attachments: Sequence[Path] = (),
    sender: str = "",
    tag: str = "",
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    now: float | None = None,
    default_sender: str = "",
) -> NewMessage:
    """Build a message from parts (the `send` command); From is filled in at send time if empty.

    The Message-ID is in the domain of ``sender``, else of ``default_sender`` (the task's sender).

    The result then passes ``prepare_raw`` like any .eml, so both ways in hold the same rules.
    """
    check_text("subject", subject)
    check_text("tag", tag)
    # Each value is one address or several, bare or as people write them: "Ján Novák <jan@example.sk>".
    to_list, cc_list, bcc_list = _mailboxes("to", to), _mailboxes("cc", cc), _mailboxes("bcc", bcc)
    if not (to_list or cc_list or bcc_list):
        raise InputError("to", "no recipients given", fix="add --to ADDRESS")
    from_header = check_mailbox("from", sender, ascii_only=True) if sender else ""
    # A non-ASCII local part cannot be written as an encoded-word (RFC 2047 5): such a
    # message is written in UTF-8 (RFC 6532) and needs a server offering SMTPUTF8.
    utf8 = not all(addr.rpartition("@")[0].isascii() for _name, addr in to_list + cc_list + bcc_list)
    from email import policy
    from email.message import EmailMessage

    msg = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    if from_header:
        msg["From"] = from_header
    for header, boxes in (("To", to_list), ("Cc", cc_list), ("Bcc", bcc_list)):
        if boxes:
            msg[header] = ", ".join(format_mailbox(name, addr) for name, addr in boxes)
    msg["Subject"] = subject
    msg["Date"] = _date(now)
    from email.utils import make_msgid

    msg["Message-ID"] = make_msgid(domain=_msgid_domain(from_header, default_sender))
    msg.set_content(text if text is not None else "")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for path in attachments:
        data = read_limited(path, "attach", max_bytes)
        maintype, subtype = attachment_type(path.name).split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return prepare_raw(msg.as_bytes(), "message", tag, max_bytes)


def read_limited(path: Path | str, field: str, max_bytes: int) -> bytes:
    """Read a file (or "-" for standard input), at most ``max_bytes`` + 1 bytes: /dev/zero cannot fill memory."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as fh:
                data = read_at_most(fh, max_bytes)
    except OSError as exc:
        raise InputError(field, f"cannot read {path}: {exc.strerror}", fix="check the path") from exc
    _check_size(data, f"{field} {path}", max_bytes)
    return data


def read_at_most(fh: BinaryIO, max_bytes: int) -> bytes:
    """The rest of an open file, at most ``max_bytes`` + 1 bytes (one more tells the caller it is too big).

    A regular file is read with a buffer of its own size: ``read(max_bytes + 1)`` first allocates the
    whole 25 MB, which cost ~30 µs a file (issue 12: 30,000 files to enqueue, 50,000 to attach).
    """
    try:
        size = os.fstat(fh.fileno()).st_size
    except (OSError, ValueError):  # no file descriptor: read as before
        size = -1
    data = fh.read(min(size, max_bytes) + 1) if size >= 0 else b""
    if size < 0 or len(data) > size:  # a pipe or /proc file (size 0), or a file that grew: read on
        data += fh.read(max_bytes + 1 - len(data))
    return data


# Types Python's built-in table lacks (3.11), for files offices attach.
_EXTRA_TYPES = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".isdoc": "application/xml",
    ".p7m": "application/pkcs7-mime",
    ".p7s": "application/pkcs7-signature",
    ".7z": "application/x-7z-compressed",
}

_COMPRESSED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


@functools.cache
def _mime_table() -> mimetypes.MimeTypes:
    # A MimeTypes instance holds Python's built-in table only: mimetypes.guess_type also reads
    # the Windows registry (or /etc/mime.types), which differs per PC (.csv becomes
    # application/vnd.ms-excel where Excel is installed).
    table = mimetypes.MimeTypes()
    for ext, ctype in _EXTRA_TYPES.items():
        table.add_type(ctype, ext)
    return table


def attachment_type(filename: str) -> str:
    """The MIME type of an attachment, from a fixed table: the same on every computer."""
    ctype, encoding = _mime_table().guess_type(filename, strict=False)
    if encoding:  # "x.tar.gz" is a gzip file, not a tar file
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return ctype or "application/octet-stream"


def _mailboxes(field_name: str, values: Sequence[str]) -> list[tuple[str, str]]:
    """Every given value's mailboxes; a value with none (an empty --bcc "") is refused, never dropped."""
    boxes = []
    for value in values:
        parsed = parse_mailboxes(field_name, value)
        if not parsed:
            fix = "remove the empty entry, or write name@example.com"
            raise InputError(field_name, f"{value!r} holds no e-mail address", fix=fix)
        boxes += parsed
    return boxes


def with_sender_headers(raw: bytes, sender: str, reply_to: str) -> bytes:
    """Add From (the task's sender) and Reply-To when the message lacks them.

    Headers are prepended as bytes so the rest of the message is sent exactly as queued.
    """
    head_end = raw.find(b"\r\n\r\n")
    if head_end < 0:
        head_end = raw.find(b"\n\n")
    head = raw[: head_end if head_end >= 0 else len(raw)]
    names = {line.split(b":", 1)[0].strip().lower() for line in head.splitlines() if line[:1] not in (b" ", b"\t")}
    has = {name: name in names for name in (b"from", b"reply-to")}
    extra = b""
    if not has[b"from"] and sender:
        extra += _header_bytes("From", sender)
    if not has[b"reply-to"] and reply_to:
        extra += _header_bytes("Reply-To", reply_to)
    return extra + raw


@functools.lru_cache(maxsize=64)
def _header_bytes(name: str, value: str) -> bytes:
    # Cached: the same task sender is added to every message of a mailing (the send hot path).
    from email import policy
    from email.message import EmailMessage

    msg = EmailMessage(policy=policy.SMTP)
    msg[name] = value
    return msg.as_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n"


def max_message_bytes() -> int:
    """The size limit: AUTOMAIL_MAX_MESSAGE_MB (a positive number of MB, at most 2048) or 25 MB."""
    value = os.environ.get("AUTOMAIL_MAX_MESSAGE_MB")
    if not value:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = math.nan
    if not 0 < megabytes <= MAX_LIMIT_MB:  # also refuses nan and inf
        raise InputError(
            "AUTOMAIL_MAX_MESSAGE_MB",
            f"{value!r} is not a size from 0 to {MAX_LIMIT_MB} MB",
            fix="set it to e.g. 25, or unset it",
        )
    return int(megabytes * 1024 * 1024)
