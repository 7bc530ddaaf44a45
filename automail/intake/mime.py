"""A fast MIME writer for merged messages: 7-bit output (quoted-printable text, base64 attachments).

The ``email`` package's ``EmailMessage`` + ``as_bytes`` costs milliseconds per message, mostly in
re-parsing the headers it has just written; a 50,000-row mailing needs a writer that does only what
a merged message needs, each attachment encoded once however many messages carry it.  Output is
checked by tests against the ``email`` package's parser, and every message still passes the one
input gate (``automail.message.prepare_raw``).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formataddr
from urllib.parse import quote

CRLF = b"\r\n"


@dataclass(frozen=True)
class Part:
    """An encoded attachment: its MIME headers and base64 body, ready to be joined into messages."""

    headers: bytes
    body: bytes


def header(name: str, value: str) -> bytes:
    """``Name: value`` with RFC 2047 encoded-words where the value is not ASCII, folded at 78."""
    if value.isascii():
        if len(name) + len(value) < 76:
            return f"{name}: {value}".encode("ascii") + CRLF
        return _fold_ascii(name, value)
    words = encoded_words(value, first=len(name) + 2)
    return (f"{name}: " + "\r\n ".join(words)).encode("ascii") + CRLF


def encoded_words(text: str, first: int = 0) -> list[str]:
    """``text`` as RFC 2047 base64 encoded-words of at most 75 characters, split between characters.

    (The email package's ``Header.encode`` does the same at about ten times the cost.)
    """
    words: list[str] = []
    budget = (75 - 12 - first) // 4 * 3  # "=?utf-8?b?" + "?=" = 12 characters; 4 base64 chars per 3 bytes
    data = text.encode("utf-8")
    pos, size = 0, len(data)
    while pos < size:
        end = pos + budget
        if end >= size:
            end = size
        else:  # back to the start of a character (UTF-8 continuation bytes are 10xxxxxx)
            while end > pos and data[end] & 0xC0 == 0x80:
                end -= 1
            if end <= pos:  # one character longer than the budget: a word of its own
                end = pos + 1
                while end < size and data[end] & 0xC0 == 0x80:
                    end += 1
        words.append("=?utf-8?b?" + base64.b64encode(data[pos:end]).decode("ascii") + "?=")
        pos, budget = end, (75 - 12) // 4 * 3
    return words


def _fold_ascii(name: str, value: str) -> bytes:
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split():
        if len(current) + 1 + len(word) > 78 and current != f"{name}:":
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return "\r\n".join(lines).encode("ascii") + CRLF


def mailbox(name: str, address: str) -> str:
    """``Name <address>`` with the display name quoted or encoded as needed."""
    if not name:
        return address
    if name.isascii():
        return formataddr((name, address))
    return " ".join(encoded_words(name)) + f" <{address}>"


def address_header(name: str, mailboxes: Sequence[tuple[str, str]]) -> bytes:
    """To/Cc/Reply-To: mailboxes joined, folded between mailboxes."""
    items = [mailbox(n, a) for n, a in mailboxes]
    lines: list[str] = []
    current = f"{name}:"
    for i, item in enumerate(items):
        piece = f" {item}" + ("," if i < len(items) - 1 else "")
        if len(current) + len(piece) > 78 and current != f"{name}:":
            lines.append(current)
            current = " " + piece.lstrip()
        else:
            current += piece
    lines.append(current)
    # A non-ASCII address (RFC 6531 SMTPUTF8) is written in UTF-8 (RFC 6532); names are encoded-words.
    return "\r\n".join(lines).encode("utf-8") + CRLF


def text_part(text: str, subtype: str = "plain") -> Part:
    """A text part in UTF-8, quoted-printable (7-bit, no line over 76 octets), CRLF line ends."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if data and not data.endswith(b"\n"):
        data += b"\n"
    body = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)
    headers = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n'
    ).encode("ascii")
    return Part(headers, body)


def attachment_part(filename: str, content_type: str, data: bytes) -> Part:
    """An attachment, base64 in 76-character lines; a non-ASCII file name as RFC 2231 ``filename*``."""
    if filename.isascii() and '"' not in filename and "\\" not in filename:
        disposition = f'attachment; filename="{filename}"'
    else:
        disposition = "attachment; filename*=utf-8''" + quote(filename, safe="")
    headers = (
        f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: {disposition}\r\n"
    ).encode("ascii")
    return Part(headers, base64_lines(data))


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, 76-character lines ending in CRLF (what ``base64.encodebytes`` gives, with CRLF)."""
    encoded = binascii.b2a_base64(data, newline=False)
    if not encoded:
        return b""
    return CRLF.join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + CRLF


def boundary() -> str:
    # "=_" cannot occur in quoted-printable (= is always =XX there) nor in base64 text.
    return "=_AutoMail_" + os.urandom(12).hex()


def multipart(subtype: str, parts: Sequence[Part]) -> Part:
    """A multipart/``subtype`` of ``parts``."""
    b = boundary()
    delimiter = f"--{b}".encode("ascii")
    chunks: list[bytes] = []
    for part in parts:
        chunks += [delimiter, CRLF, part.headers, CRLF, part.body]
        if not part.body.endswith(CRLF):
            chunks.append(CRLF)
    chunks += [delimiter, b"--", CRLF]
    headers = f'Content-Type: multipart/{subtype}; boundary="{b}"\r\n'.encode("ascii")
    return Part(headers, b"".join(chunks))


def message(headers: Sequence[bytes], body: Part) -> bytes:
    """The whole message: the given header lines, MIME-Version, the body part's headers, then its body."""
    return b"".join([*headers, b"MIME-Version: 1.0\r\n", body.headers, CRLF, body.body])
