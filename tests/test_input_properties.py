"""Property tests (Hypothesis): generated headers, addresses and names against enqueue, send, company add, task add.

The contract (README "Exit codes"): bad input raises InputError (exit 2) and stores nothing; what is
accepted is stored in a form every later step can read: recipients that are valid envelope addresses,
no Bcc on the wire, no line over 998 octets, no NUL, a header block Python's parser reads without defects.

The suite runs a few dozen examples per test ("ci" profile, a few seconds). For a longer local run:
    AUTOMAIL_HYPOTHESIS_PROFILE=thorough python3 -m pytest --timeout 0 tests/test_input_properties.py
(minutes: each example writes to SQLite and TinyDB with fsync).
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automail.engine.service import Service
from automail.errors import InputError
from automail.models import Security, SmtpSettings, Task, check_address, name_key, parse_mailboxes
from automail.store.outbox import NewMessage

_COMMON = {
    "deadline": None,
    "database": None,  # nothing written to .hypothesis/ by the normal suite
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("ci", max_examples=25, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("thorough", max_examples=3000, **_COMMON)  # type: ignore[arg-type]
PROFILE = settings.get_profile(os.environ.get("AUTOMAIL_HYPOTHESIS_PROFILE", "ci"))

# ---- strategies -------------------------------------------------------------------------------------
_NASTY = ["\r", "\n", "\x00", "\x1b[31m", "\u2028", "\u0085", ",", ";", ":", "<", ">", '"', "\\", "@"]
_NASTY += ["=?utf-8?q?", "?="]
_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from([*_NASTY, "a", "ján", "Bcc:", " ", "\t", "x" * 40]), max_size=8).map("".join),
)
_domain = st.sampled_from(
    ["example.com", "bücher.example", "xn--bcher-kva.example", "a..b", "-x.sk", "sk", "ex_ample.com"]
)
_local = st.one_of(st.sampled_from(["info", "ján", "a.b", ".a", "a..b", "a b", '"q"', "=?utf-8?q?j=C3=A1n?="]), _text)
_address = st.one_of(st.emails(), st.builds(lambda loc, dom: f"{loc}@{dom}", _local, _domain), _text)
_mailbox = st.one_of(_address, st.builds(lambda name, addr: f"{name} <{addr}>", _text, _address))
_header_name = st.sampled_from(
    ["To", "Cc", "Bcc", "bcc", "Resent-Bcc", "Resent-To", "From", "Reply-To", "Subject", "X-Tag", "Message-ID"]
)


@st.composite
def _header_block(draw: st.DrawFn) -> bytes:
    lines: list[bytes] = []
    if draw(st.booleans()):
        lines.append(b"To: customer@example.com")  # most messages have a plain recipient
    for _ in range(draw(st.integers(0, 5))):
        name = draw(_header_name).encode()
        gap = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))
        value = draw(st.one_of(_mailbox, st.lists(_mailbox, max_size=3).map(", ".join), _text))
        encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
        lines.append(name + gap + b": " + value.encode(encoding, "replace"))
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(st.sampled_from([b" folded@example.org", b"no colon here", b"\tmore", b"From x"])))
    if draw(st.integers(0, 6)) == 0:
        lines.insert(0, draw(st.sampled_from([b"\xef\xbb\xbf", b"From someone Mon Nov 30 2026", b" "])))
    end = draw(st.sampled_from([b"\r\n", b"\n"]))
    body = draw(st.sampled_from([b"Hello\r\n", b"", b"line\x00nul\r\n", b"y" * 1200, b".\r\n..\r\n"]))
    return end.join(lines) + end + end + body


# ---- the checks every accepted message must pass ------------------------------------------------------
def _check_accepted(msg: NewMessage) -> None:
    assert msg.recipients and len(set(msg.recipients)) == len(msg.recipients)
    for rcpt in msg.recipients:
        assert check_address("rcpt", rcpt) == rcpt
        assert rcpt.rpartition("@")[2].isascii()  # IDN domains in punycode
    assert b"\x00" not in msg.raw
    head, _sep, _body = msg.raw.partition(b"\r\n\r\n")
    assert all(len(line) <= 998 for line in msg.raw.replace(b"\r\n", b"\n").split(b"\n"))
    parsed = BytesParser(policy=policy.default).parsebytes(head + b"\r\n\r\n")
    assert not parsed.defects, parsed.defects
    assert parsed.get_all("bcc") is None and parsed.get_all("resent-bcc") is None
    assert msg.message_id and parsed["message-id"] is not None


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with tempfile.TemporaryDirectory() as home:
        svc = Service(Path(home))
        svc.add_company("Firma")
        yield svc
        svc.close()


@PROFILE
@given(raw=_header_block())
def test_enqueue_refuses_cleanly_or_stores_a_sendable_message(service: Service, raw: bytes) -> None:
    box = service.outbox("Firma")
    before = box.count()
    try:
        (msg_id,) = service.enqueue_raw("Firma", [("gen.eml", raw)], allow_duplicate_id=True)
    except InputError as exc:
        assert exc.exit_code == 2 and str(exc)
        assert box.count() == before
        return
    stored = box.get(msg_id)
    _check_accepted(NewMessage(box.raw(msg_id), stored.recipients, stored.from_header, "", stored.message_id))


@PROFILE
@given(to=st.lists(_address, max_size=3), bcc=st.lists(_address, max_size=2), subject=_text, sender=_mailbox, tag=_text)
def test_send_refuses_cleanly_or_stores_a_sendable_message(
    service: Service, to: list[str], bcc: list[str], subject: str, sender: str, tag: str
) -> None:
    box = service.outbox("Firma")
    before = box.count()
    try:
        msg_id = service.send("Firma", to=to, bcc=bcc, subject=subject, text="Hello", sender=sender, tag=tag)
    except InputError as exc:
        assert exc.exit_code == 2
        assert box.count() == before
        return
    stored = box.get(msg_id)
    _check_accepted(NewMessage(box.raw(msg_id), stored.recipients, stored.from_header, "", stored.message_id))
    # Every entry gave at least one address (an empty one is refused, never dropped), and the stored
    # recipients are exactly those addresses as read ('"q"@example.com' is q@example.com, RFC 5321 4.1.2).
    expected: set[str] = set()
    for entry in to + bcc:
        boxes = parse_mailboxes("to", entry)
        assert boxes, f"{entry!r} holds no address, yet the message was queued"
        expected |= {addr for _name, addr in boxes}
    assert set(stored.recipients) == expected


_names = st.one_of(
    _text,
    st.text(alphabet=st.characters(codec="utf-8"), min_size=90, max_size=130),
    st.sampled_from(["CON", "nul.txt", "Účtovníctvo", unicodedata.normalize("NFD", "Účtovníctvo"), "ÚČTOVNÍCTVO"]),
)


@PROFILE
@given(name=_names)
def test_company_add_refuses_cleanly_or_stores_a_findable_company(service: Service, name: str) -> None:
    folder = service.home / "outbox"
    files_before = set(folder.glob("*.sqlite3"))
    names_before = [c.name for c in service.companies()]
    try:
        company = service.add_company(name)
    except InputError as exc:
        assert exc.exit_code == 2
        assert set(folder.glob("*.sqlite3")) == files_before and [c.name for c in service.companies()] == names_before
        return
    assert company.name == unicodedata.normalize("NFC", company.name) and company.name == company.name.strip()
    assert service.definitions.company(unicodedata.normalize("NFD", name)) == company
    if name.upper().casefold() == name.casefold():  # not so for a few letters, e.g. the dotless ı
        assert service.definitions.company(name.upper()) == company
    path = Path(company.outbox_path)
    assert path.is_absolute() and path.parent == folder and path.exists() and len(path.name.encode()) < 255
    assert sum(name_key(c.name) == name_key(name) for c in service.companies()) == 1


@PROFILE
@given(name=_names, sender=_mailbox, host=_text, tags=st.lists(_text, max_size=2))
def test_task_add_refuses_cleanly_or_stores_a_valid_task(
    service: Service, name: str, sender: str, host: str, tags: list[str]
) -> None:
    tasks_before = service.tasks()
    smtp = SmtpSettings(host=host or "smtp.example.com", port=587, security=Security.STARTTLS, sender=sender)
    try:
        task = service.add_task(Task(name=name, company="firma", smtp=smtp, tags=tuple(tags)))
    except InputError as exc:
        assert exc.exit_code == 2
        assert service.tasks() == tasks_before
        return
    assert service.task(name) == task == task.validate()
    assert task.company == "Firma" and task.smtp.sender_address.isascii()
