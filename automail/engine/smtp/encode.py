"""Re-encoding an 8-bit message to 7 bits for a server without 8BITMIME (RFC 6152 §3)."""

from __future__ import annotations

import base64
import email.policy
import quopri
import re
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from io import BytesIO

MAX_LINE = 998  # RFC 5321 §4.5.3.1.6, without the CRLF
_PARSE = email.policy.compat32  # keeps headers as they were written (no re-folding)
_WRITE = email.policy.compat32.clone(linesep="\r\n", max_line_length=0)
_IDENTITY = ("7bit", "8bit", "binary")
_TEXT_LINE_END = re.compile(rb"\r\n|\r|\n")


def needs_7bit(raw: bytes) -> bool:
    """The message has 8-bit bytes (so it needs BODY=8BITMIME or re-encoding)."""
    return not raw.isascii()


def to_7bit(raw: bytes) -> bytes:
    """The message with every 8-bit (or over-long) body part re-encoded.

    Text parts become quoted-printable (base64 when that is shorter, e.g. for mostly
    non-Latin text), other parts base64.  Headers are kept byte for byte: non-ASCII in a
    header is a matter for SMTPUTF8, not for the body's transfer encoding.
    """
    msg = BytesParser(policy=_PARSE).parsebytes(raw)
    _encode(msg)
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_WRITE).flatten(msg)
    return out.getvalue()


def _encode(part: Message) -> bool:
    """Re-encode ``part`` (and its children) where needed; True if anything changed."""
    if part.is_multipart():
        payload = part.get_payload()
        assert isinstance(payload, list)
        changed = False
        for child in payload:
            changed = (isinstance(child, Message) and _encode(child)) or changed
        if changed and str(part.get("Content-Transfer-Encoding", "")).lower() in ("8bit", "binary"):
            # a multipart or message/rfc822 may only carry an identity encoding: its parts are 7-bit now
            del part["Content-Transfer-Encoding"]
            part["Content-Transfer-Encoding"] = "7bit"
        return changed
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte not in _IDENTITY:
        return False  # already quoted-printable or base64: 7-bit by construction
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes) or (data.isascii() and all(len(x) <= MAX_LINE for x in data.splitlines())):
        return False
    if part.get_content_maintype() == "text":
        data = _TEXT_LINE_END.sub(b"\r\n", data)  # canonical form before encoding (RFC 2045 §6.8)
        qp = quopri.encodestring(data)
        b64 = _base64(data)
        encoded, name = (qp, "quoted-printable") if len(qp) <= len(b64) else (b64, "base64")
    else:
        encoded, name = _base64(data), "base64"
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = name
    part.set_payload(encoded.decode("ascii"))
    return True


def _base64(data: bytes) -> bytes:
    return base64.encodebytes(data)  # 76-character lines (RFC 2045 §6.8)
