"""Building and checking messages: .eml parsing, composing, Message-ID, send-time headers."""

from __future__ import annotations

import functools
import mimetypes
import os
import time
from collections.abc import Sequence
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path

from automail.errors import InputError
from automail.models import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_address,
    check_no_newline,
    mailbox_address,
)
from automail.store.outbox import NewMessage

_PARSER = BytesParser(policy=policy.default)
_RECIPIENT_HEADERS = ("to", "cc", "bcc")


def _msgid_domain(*senders: str) -> str:
    """The domain of the first sender that has one: the Message-ID's right-hand side."""
    for sender in senders:
        addr = mailbox_address(sender)
        if "@" in addr:
            return addr.rpartition("@")[2]
    return "automail.invalid"  # no sender known at all (a company without tasks)


def _date(now: float | None) -> str:
    """An RFC 5322 Date header value (local time with its offset) for ``now``."""
    return formatdate(time.time() if now is None else now, localtime=True)


def _check_size(raw: bytes, source: str, max_bytes: int) -> None:
    if len(raw) > max_bytes:
        raise InputError(
            source,
            f"the message is {len(raw) / 1048576:.1f} MB, over the {max_bytes / 1048576:.0f} MB limit",
            fix="send large files as a link, or raise the limit with AUTOMAIL_MAX_MESSAGE_MB",
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
    """Validate a MIME message (e.g. an .eml file) and make it ready to queue.

    Recipients come from To/Cc/Bcc; Bcc is removed from what is sent.  A
    Message-ID (in the domain of From, else of ``default_sender``: the task's sender) is
    added when missing so every attempt carries the same one, and a Date (``now``) too.
    """
    _check_size(raw, source, max_bytes)
    check_no_newline("tag", tag)
    if not raw.strip():
        raise InputError(source, "is empty", fix="give a complete MIME message (.eml)")
    try:
        msg = _PARSER.parsebytes(raw)
    except Exception as exc:  # the email package raises assorted errors on garbage
        raise InputError(source, f"is not a readable e-mail message ({exc})", fix="give a MIME message (.eml)") from exc
    if not any(msg.get(h) for h in ("from", "to", "cc", "bcc", "subject")):
        raise InputError(source, "has no e-mail headers", fix="give a MIME message with From/To/Subject headers")
    for name, value in msg.items():
        check_no_newline(f"{source}: header {name}", str(value))
    recipients: list[str] = []
    for header in _RECIPIENT_HEADERS:
        for _name, addr in getaddresses([str(v) for v in msg.get_all(header, [])]):
            if addr:
                recipients.append(check_address(f"{source}: {header.capitalize()}", addr))
            elif _name:
                raise InputError(
                    f"{source}: {header.capitalize()}",
                    f"{_name!r} is not an e-mail address",
                    fix="write it as name@example.com",
                )
    if not recipients:
        raise InputError(source, "has no recipients", fix="add a To, Cc or Bcc header")
    from_header = str(msg.get("from", ""))
    if from_header:
        for _name, addr in getaddresses([from_header]):
            check_address(f"{source}: From", addr)
    changed = False
    if msg.get("bcc") is not None:
        del msg["bcc"]
        changed = True
    message_id = str(msg.get("message-id", "")).strip()
    if not message_id:
        message_id = make_msgid(domain=_msgid_domain(from_header, default_sender))
        msg["Message-ID"] = message_id
        changed = True
    if msg.get("date") is None:  # RFC 5322 requires it; spam filters score its absence
        msg["Date"] = _date(now)
        changed = True
    if changed:
        raw = msg.as_bytes(policy=policy.SMTP)
    return NewMessage(
        raw=raw,
        recipients=tuple(dict.fromkeys(recipients)),
        from_header=from_header,
        subject=str(msg.get("subject", "")),
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
    """
    check_no_newline("subject", subject)
    to_list = [check_address("to", a) for a in to]
    cc_list = [check_address("cc", a) for a in cc]
    bcc_list = [check_address("bcc", a) for a in bcc]
    if not (to_list or cc_list or bcc_list):
        raise InputError("to", "no recipients given", fix="add --to ADDRESS")
    msg = EmailMessage(policy=policy.SMTP)
    if sender:
        msg["From"] = sender
    if to_list:
        msg["To"] = ", ".join(to_list)
    if cc_list:
        msg["Cc"] = ", ".join(cc_list)
    msg["Subject"] = subject
    msg["Date"] = _date(now)
    msg["Message-ID"] = make_msgid(domain=_msgid_domain(sender, default_sender))
    msg.set_content(text if text is not None else "")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for path in attachments:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError("attach", f"cannot read {path}: {exc.strerror}", fix="check the path") from exc
        maintype, subtype = attachment_type(path.name).split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    raw = msg.as_bytes()
    _check_size(raw, "message", max_bytes)
    return NewMessage(
        raw=raw,
        recipients=tuple(dict.fromkeys(to_list + cc_list + bcc_list)),
        from_header=sender,
        subject=subject,
        message_id=str(msg["Message-ID"]),
        tag=tag,
    )


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
    msg = EmailMessage(policy=policy.SMTP)
    msg[name] = value
    return msg.as_bytes().split(b"\r\n\r\n", 1)[0] + b"\r\n"


def max_message_bytes() -> int:
    """The size limit: AUTOMAIL_MAX_MESSAGE_MB or 25 MB."""
    value = os.environ.get("AUTOMAIL_MAX_MESSAGE_MB")
    if not value:
        return DEFAULT_MAX_MESSAGE_BYTES
    try:
        return int(float(value) * 1024 * 1024)
    except ValueError:
        raise InputError("AUTOMAIL_MAX_MESSAGE_MB", f"{value!r} is not a number", fix="set it to e.g. 25") from None
