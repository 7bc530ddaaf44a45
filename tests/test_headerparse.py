"""The fast header path (issue 12, performance) gives exactly what the email package gives, or steps aside.

Every value of a large table of tricky headers (hand-written, plus combinations and seeded random
mixes of the pieces that trip parsers) goes through the gate twice: with the fast path, and with
it switched off so the email package reads everything.  Results and errors must be identical.
"""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Callable, Iterator
from email import policy
from typing import Any

import pytest

from automail import headerparse, models
from automail.errors import InputError
from automail.message import prepare_raw
from automail.models import email_address_list, parse_mailboxes


def _b64(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


NAMES = [
    "Ján Novák",
    "Jan",
    '"Novák, Ján"',
    '"Jan  Novak"',
    '"Jan \\" Novak"',
    '"J=?utf-8?b?QQ==?="',
    '""',
    "Ing. Ján Novák",
    "Jan (work) Novak",
    _b64("Ján Novák"),
    _b64("Zákazník Čislo") + " " + _b64(" 123"),
    _b64("A") + _b64("B"),
    "=?utf-8?q?J=C3=A1n_Nov=C3=A1k?=",
    "=?UTF-8?Q?J=C3=A1n?= Novak",
    "=?iso-8859-2?q?Nov=E1k?=",
    "=?utf-8*sk?b?w4Fu?=",
    "=?utf-8?b?w4Fu?",
    "=?utf-8?b?QQ?=",  # bad padding
    "=?utf-8?b?/w==?=",  # not UTF-8
    "=?utf-8?q?=?=",
    "=?utf-8?q?=C3=A1?=x",
    "x=?utf-8?q?a?=",
    "=?unknown?q?a?=",
    "=?unknown-8bit?q?=E1?=",
    _b64("a\r\nBcc: evil@example.org"),
    _b64("a\nb"),
    _b64("tab\there"),
    _b64(" lead"),
    _b64("two  spaces"),
    _b64("\u2028"),
    "Ján\xa0Novák",
    "Ján \xa0Novák",
    "O'Brien",
    "a@b",
    "Jan <Novak>",
    "Jan:",
    "Jan;",
    "[Jan]",
    "\\Jan",
    "Ján\u00adNovák",
]
ADDRESSES = [
    "jan.novak@example.sk",
    "ján@example.sk",
    "jan@príklad.sk",
    "a.b-c+d_e@sub.example.com",
    "x@y",
    "a..b@example.sk",
    ".a@example.sk",
    "a.@example.sk",
    '"a b"@example.sk',
    "a@[127.0.0.1]",
    "a@example..sk",
    "a@-example.sk",
    "a@@example.sk",
    "@example.sk",
    "a@",
    "a",
    "=?utf-8?b?YQ==?=@example.sk",
    "a@=?utf-8?b?YQ==?=.sk",
    "a b@example.sk",
    "a@example.sk.",
    "a(c)@example.sk",
    "a@example.sk(c)",
    "ABC@EXAMPLE.SK",
    "x" * 65 + "@example.sk",
]
FORMS = [
    "{a}",
    "<{a}>",
    "{n} <{a}>",
    "{n}<{a}>",
    "{n}  <{a}>",
    "{n}\t<{a}>",
    " {n} <{a}> ",
    "{n} < {a} >",
    "{n} <{a}",
    "{n} {a}",
    "{a} ({n})",
    "{n} <{a}>,",
    ",{n} <{a}>",
    "{n}: {a};",
    "Group: {n} <{a}>, {a};",
    "{n} <{a}>, {a}",
    "{n} <{a}> , {n} <{a}>",
    "{n} <{a}>;{a}",
    "{n} <<{a}>>",
    "{n} <{a}> x",
]
# Pieces for random mixes: specials, white space, encoded-words good and bad, quoting.
PIECES = [
    *NAMES[:14],
    *ADDRESSES[:6],
    "<",
    ">",
    ",",
    ";",
    ":",
    '"',
    "\\",
    "(",
    ")",
    ".",
    "@",
    " ",
    "  ",
    "\t",
    "=?",
    "?=",
    "\xa0",
    "\u3000",
    "[",
    "]",
]


def _address_values() -> Iterator[str]:
    for form, name, addr in itertools.product(FORMS, NAMES, ADDRESSES):
        if "{n}" not in form and name != NAMES[0]:
            continue
        yield form.format(n=name, a=addr)
    rnd = random.Random(12)
    for _ in range(3000):
        yield "".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 8)))


ADDRESS_VALUES = list(dict.fromkeys(_address_values()))


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except InputError as exc:
        return "error", (type(exc).__name__, str(exc), exc.fix)


@pytest.fixture
def slow_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], None]]:
    """A switch that turns the fast path off (and empties the parse caches both ways)."""

    def forget() -> None:
        models._parse_address_list.cache_clear()
        models._CHECKED.clear()

    def switch() -> None:
        monkeypatch.setattr(headerparse, "address_list", lambda value: None)
        monkeypatch.setattr(headerparse, "unstructured", lambda name, value: None)
        forget()

    forget()
    yield switch
    forget()


def test_the_fast_address_path_equals_the_email_package_wherever_it_answers() -> None:
    answered = 0
    for value in ADDRESS_VALUES:
        fast = headerparse.address_list(value)
        if fast is not None:
            answered += 1
            assert email_address_list(value) == fast, value
    # The common forms take the fast path (else it would buy nothing).
    assert answered > 500
    for plain in [
        "jan@example.sk",
        "Ján Novák <jan@example.sk>",
        '"Novák, Ján" <jan@example.sk>, eva@example.sk',
        _b64("Ján Novák") + " <jan@example.sk>",
        "<jan@example.sk>",
        "a@example.sk , b@example.sk",
    ]:
        assert headerparse.address_list(plain) == email_address_list(plain), plain


def test_parse_mailboxes_gives_the_same_results_and_errors_with_and_without_the_fast_path(
    slow_only: Callable[[], None],
) -> None:
    fast = [_outcome(lambda v=value: parse_mailboxes("To", v)) for value in ADDRESS_VALUES]  # type: ignore[misc]
    slow_only()
    slow = [_outcome(lambda v=value: parse_mailboxes("To", v)) for value in ADDRESS_VALUES]  # type: ignore[misc]
    for value, a, b in zip(ADDRESS_VALUES, fast, slow, strict=True):
        assert a == b, value
    assert sum(kind == "ok" for kind, _ in fast) > 300 and sum(kind == "error" for kind, _ in fast) > 300


SUBJECTS = [
    "Faktúra 2026/000123",
    _b64("Faktúra 2026/000123 pre Zákazník Čislo 123"),
    _b64("Faktúra") + " " + _b64(" 2026"),
    _b64("Faktúra") + "  \t " + _b64("2026") + " tail",
    "head " + _b64("á") + " mid " + _b64("é"),
    " " + _b64("A") + " ",
    "=?utf-8?q?Fakt=C3=BAra_1?=",
    "=?utf-8?Q?a?= =?utf-8?q?b?=",
    "=?utf-8?b?QQ?=",
    "=?utf-8?b?/w==?=",
    "=?iso-8859-2?q?Fakt=FAra?=",
    "=?unknown?q?a?=",
    "x=?utf-8?q?a?=",
    "=?utf-8?q?a?=x",
    "=?utf-8?q?=?=",
    "=?utf-8?q?=C3=A1?=",
    _b64("a\r\nBcc: evil@example.org"),
    _b64("a\x00b"),
    _b64("line\u2028sep"),
    _b64("tab\there"),
    _b64("two  spaces"),
    "a \xa0" + _b64("b"),
    "a\u3000" + _b64("b"),
    "=?utf-8?b?" + "QUFB" * 40 + "?=",
    "Re: =?utf-8?b?w4Fu?= (fwd)",
]


def test_line_separators_and_odd_white_space_never_take_the_fast_address_path() -> None:
    # The fast path's character classes leave them to this check (a cheaper regular expression).
    for odd in ("\u2028", "\u2029", "\x85", "\xa0", "\u3000"):
        for value in [
            f"Ján{odd}Novák <a@example.sk>",
            f'"Ján{odd}Novák" <a@example.sk>',
            f"a{odd}b@example.sk",
            f"a@exa{odd}mple.sk",
            f"Ján <a{odd}@example.sk>",
            f"a@example.sk,{odd}b@example.sk",
        ]:
            assert headerparse.address_list(value) is None, value


def test_the_fast_unstructured_path_equals_the_email_package_wherever_it_answers() -> None:
    rnd = random.Random(13)
    values = SUBJECTS + [
        "".join(rnd.choice([*SUBJECTS, " ", "  ", "\t", "x", "=?", "?="]) for _ in range(rnd.randint(1, 5)))
        for _ in range(1500)
    ]
    answered = 0
    for name in ("Subject", "X-Mailer", "Comments", "Content-Type", "Date", "Message-ID", "MIME-Version"):
        for value in values:
            fast = headerparse.unstructured(name, value)
            if fast is not None:
                answered += 1
                assert fast == str(policy.default.header_factory(name, value)), (name, value)
            elif name == "Subject" and value == SUBJECTS[1]:
                pytest.fail("a plain encoded subject must take the fast path")
    assert answered > 600
    assert headerparse.unstructured("Content-Type", "text/plain; name=" + _b64("á")) is None


def _messages() -> Iterator[bytes]:
    for value in ADDRESS_VALUES[::7]:
        yield f"From: Firma <info@firma.sk>\r\nTo: {value}\r\nSubject: s\r\n\r\nbody\r\n".encode()
    for value in ADDRESS_VALUES[3::11]:
        yield f"To: a@example.com\r\nBcc: {value}\r\nSubject: s\r\n\r\nbody\r\n".encode()
        yield f"To: a@example.com\r\nBcc : {value}\r\nSubject: s\r\n\r\nbody\r\n".encode()
        yield f"Resent-To: a@example.com\r\nResent-Bcc:\t{value}\r\n\r\nbody\r\n".encode()
    for value in SUBJECTS:
        yield f"From: {_b64('Firma')} <info@firma.sk>\r\nTo: a@example.com\r\nSubject: {value}\r\n\r\nb\r\n".encode()
        yield f"To: a@example.com\r\nX-Note: {value}\r\nReply-To: {value} <r@example.sk>\r\n\r\nb\r\n".encode()
    for name in NAMES:
        to = f"{name} <a@example.com>,\r\n\t{name} <b@example.com>"
        yield f"From: {name} <info@firma.sk>\r\nTo: {to}\r\n\r\nb\r\n".encode()
        yield f"Sender: {name} <s@firma.sk>\r\nTo: a@example.com\r\nCc: {name} <c@example.com>\r\n\r\nb\r\n".encode()


MESSAGES = list(_messages())


def _gate(raw: bytes) -> tuple[str, Any]:
    def call() -> tuple[Any, ...]:
        msg = prepare_raw(raw, "m.eml", now=0.0, default_sender="info@firma.sk")
        # The Message-ID made for a message without one is random: compare everything else.
        kept = msg.raw if b"\r\nMessage-ID: <" not in msg.raw else msg.raw.split(b"\r\nMessage-ID: <")[0]
        return kept, msg.recipients, msg.from_header, msg.subject

    return _outcome(call)


def test_prepare_raw_gives_the_same_messages_and_errors_with_and_without_the_fast_path(
    slow_only: Callable[[], None],
) -> None:
    fast = [_gate(raw) for raw in MESSAGES]
    slow_only()
    slow = [_gate(raw) for raw in MESSAGES]
    for raw, a, b in zip(MESSAGES, fast, slow, strict=True):
        assert a == b, raw
    assert sum(kind == "ok" for kind, _ in fast) > 100 and sum(kind == "error" for kind, _ in fast) > 100


def test_injection_and_hidden_recipients_are_still_caught_on_the_fast_path() -> None:
    # A line break hidden in an encoded display name or subject is refused, not decoded into a header.
    for raw in [
        f"To: {_b64('a' + chr(13) + chr(10) + 'Bcc: evil@example.org')} <a@example.com>\r\n\r\nb\r\n".encode(),
        f"To: a@example.com\r\nSubject: {_b64('s' + chr(10) + 'Bcc: evil@example.org')}\r\n\r\nb\r\n".encode(),
    ]:
        with pytest.raises(InputError, match=r"line break|control character|CR or LF"):
            prepare_raw(raw, "m.eml")
    msg = prepare_raw(b"To: Jan <a@example.com>\r\nBcc :  Eva <hidden@example.org>\r\n\r\nb\r\n", "m.eml")
    assert "hidden@example.org" in msg.recipients and b"hidden" not in msg.raw


def _raw_variants() -> Iterator[bytes]:
    base = [b"From: Firma <info@firma.sk>", b"To: Jan <a@example.com>", b"Subject: Fakt\xc3\xbara 1"]
    odd = [b"\x00", b"\x0b", b"\x0c", b"\x1f", b"\x7f", b"\r", b"\r\r", b"\xc2\x85", b"\xe2\x80\xa8", b"\xff", b"\t"]
    odd += [b"\xc3", b"x" * 990, b"\xc2\xa0", b"\xef\xbb\xbf"]
    for sep in (b"\r\n", b"\n"):
        for i, line in enumerate(base):
            for bad in odd:
                lines = list(base)
                lines[i] = line + bad
                yield sep.join(lines) + sep + sep + b"body\x00" + sep
                yield sep.join([*lines, b" folded" + bad]) + sep + sep + b"body" + sep
        yield sep.join(base) + sep + b"\r" + sep + b"body" + sep  # "\r" alone ends the header (after LF)
        yield sep.join(base)  # no body at all
        yield b"From someone Mon Nov 30\x01" + sep + sep.join(base) + sep + sep + b"b"  # mbox line
        yield b"\xef\xbb\xbf" + sep.join(base) + sep + sep + b"b"
        yield sep + b"To: a@example.com" + sep + sep + b"b"
        yield sep.join(base) + sep + sep + b"\r\x00\xff" + sep


def test_the_one_scan_header_check_agrees_with_the_line_by_line_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from automail import message

    raws = list(_raw_variants())
    fast = [_gate(raw) for raw in raws]
    monkeypatch.setattr(message, "_head_is_clean", lambda head: False)
    slow = [_gate(raw) for raw in raws]
    for raw, a, b in zip(raws, fast, slow, strict=True):
        assert a == b, raw
    assert sum(kind == "ok" for kind, _ in fast) > 20 and sum(kind == "error" for kind, _ in fast) > 100


def test_the_header_block_is_split_as_the_line_by_line_scan_splits_it() -> None:
    from automail import message

    raws = [*_raw_variants(), *MESSAGES]
    raws += [b"To: a@x.sk\r\n\r", b"To: a@x.sk\n\r", b"\r", b"\n\nTo: a@x.sk", b"To: a@x.sk\r\n\r\n", b"To: a\n\n"]
    raws += [b"To: a\r\r\n\r\nb", b"To: a\n \n\nb", b"To: a\n\r\r\n\r\nb", b"\xef\xbb\xbfTo: a\n\nb", b""]
    for raw in raws:
        for start in (0, 3):
            assert message._header_lines(raw, start)[:3] == message._scan_header_lines(raw, start), (raw, start)
