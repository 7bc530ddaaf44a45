"""Hostile and broken messages (issue 8, items 1–6): what enqueue and send refuse, and what goes out."""

from __future__ import annotations

from pathlib import Path

import pytest

from automail.engine.service import Service
from automail.errors import InputError
from automail.message import compose, prepare_raw
from automail.models import MessageStatus, SmtpSettings, check_address, check_mailbox
from tests.helpers import cli, make_service, make_task, run_engine_until, setup_task
from tests.smtpd import SmtpServer


def _refused(raw: bytes, *words: str) -> InputError:
    with pytest.raises(InputError) as err:
        prepare_raw(raw, "m.eml")
    for word in words:
        assert word in str(err.value), str(err.value)
    return err.value


def _head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


# ---- 1. Bcc leak ----------------------------------------------------------------------
@pytest.mark.parametrize("name", [b"Bcc :", b"Bcc\t:", b"BCC  :", b"Resent-Bcc:", b"bcc:"])
def test_bcc_in_any_spelling_joins_the_envelope_and_is_removed(name: bytes) -> None:
    resent = b"Resent-To: r@example.org\r\n" if name.startswith(b"Resent") else b""
    raw = b"To: a@example.com\r\n" + resent + name + b" hidden@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    msg = prepare_raw(raw, "m.eml")
    assert "hidden@example.org" in msg.recipients
    assert b"hidden@" not in msg.raw and b"bcc" not in msg.raw.lower()


def test_folded_bcc_is_removed_with_its_continuation_lines() -> None:
    raw = b"To: a@example.com\r\nBcc: one@example.org,\r\n two@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    msg = prepare_raw(raw, "m.eml")
    assert set(msg.recipients) == {"a@example.com", "one@example.org", "two@example.org"}
    assert b"example.org" not in msg.raw


def test_obsolete_space_before_colon_is_written_back_in_standard_form() -> None:
    msg = prepare_raw(b"To : a@example.com\r\nSubject\t: hi\r\n\r\nbody\r\n", "m.eml")
    assert msg.recipients == ("a@example.com",) and msg.subject == "hi"
    assert _head(msg.raw).startswith(b"To: a@example.com\r\nSubject: hi\r\n")


def test_a_header_that_must_be_unique_is_refused_twice_in_any_spelling() -> None:
    # The check skips its search when no name repeats: every way a name can repeat must still be found.
    _refused(b"To: a@example.com\r\nto: b@example.com\r\n\r\nb", "m.eml: line 2", "header to appears 2 times")
    err = _refused(b"X-A: 1\r\nSubject: 1\r\nTo: a@example.com\r\nSUBJECT: 2\r\nsubject : 3\r\n\r\nb", "line 4")
    assert "the header SUBJECT appears 3 times" in str(err) and err.fix == "merge them into one Subject header"
    # Several doubled: the first in RFC 5322's order is named, whatever comes first in the file.
    _refused(b"Subject: 1\r\nSubject: 2\r\nTo: a@example.com\r\nFrom: f@x.sk\r\nFrom: g@x.sk\r\n\r\nb", "From")
    msg = prepare_raw(b"Received: a\r\nReceived: b\r\nX-A: 1\r\nx-a: 2\r\nTo: a@example.com\r\n\r\nb", "m.eml")
    assert _head(msg.raw).startswith(b"Received: a\r\nReceived: b\r\nX-A: 1\r\nx-a: 2\r\nTo: a@example.com\r\n")


def test_a_line_without_colon_in_the_header_is_refused_naming_the_line() -> None:
    raw = b"To: a@example.com\r\nthis is not a header\r\nBcc: hidden@example.org\r\n\r\nbody\r\n"
    err = _refused(raw, "line 2", "not a header")
    assert err.exit_code == 2


def test_the_headers_sent_are_the_headers_read(tmp_path: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(tmp_path / "home", make_task(port=smtp_server.port))
    raw = b"To: a@example.com\r\nBcc : hidden@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    svc.enqueue_raw("Firma", [("m.eml", raw)])
    run_engine_until(svc, lambda: len(smtp_server.messages) == 1)
    (sent,) = smtp_server.messages
    assert sorted(sent.rcpt_tos) == ["a@example.com", "hidden@example.org"]
    assert b"hidden" not in sent.data and b"bcc" not in sent.data.lower()


# ---- 2. senders -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "sender",
    [
        "evil@x.example, Firma <info@firma.example>",
        "Evil\u2028Bcc: x@y.example <info@firma.example>",
        "Firma <info@firma.example> junk",
        "not an address",
        "",
    ],
)
def test_a_task_sender_must_be_exactly_one_address(sender: str) -> None:
    with pytest.raises(InputError) as err:
        SmtpSettings(host="smtp.example.com", sender=sender).validate()
    assert err.value.field == "sender"


def test_eml_with_two_from_addresses_is_refused() -> None:
    _refused(b"From: a@x.example, b@y.example\r\nTo: c@example.com\r\n\r\nbody\r\n", "From", "not exactly one")


def test_send_from_must_be_one_address() -> None:
    with pytest.raises(InputError, match="from"):
        compose(to=["a@example.com"], subject="s", sender="not an address")


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
@pytest.mark.parametrize("empty", ["", "   ", ","])
def test_an_empty_recipient_entry_is_refused_not_dropped(field: str, empty: str) -> None:
    # Found by the property test: send(bcc=["0@A.COM", ""]) queued the message to the one address.
    given = {"to": ["a@example.com"], "cc": [], "bcc": []}
    given[field] = [*given[field], empty]
    with pytest.raises(InputError, match="holds no e-mail address") as err:
        compose(to=given["to"], cc=given["cc"], bcc=given["bcc"], subject="s")
    assert err.value.field == field and "remove the empty entry" in str(err.value)


# ---- 3. garbled addresses, IDN, non-ASCII local parts ----------------------------------------
def test_latin1_byte_in_to_is_refused() -> None:
    _refused(b"To: j\xe1n@example.sk\r\nSubject: s\r\n\r\nbody\r\n", "line 1", "not UTF-8", "0xE1")


def test_encoded_word_inside_an_address_is_refused() -> None:
    _refused(b"To: =?utf-8?q?j=C3=A1n?=@example.sk\r\n\r\nbody\r\n", "To")


def test_idn_domain_goes_to_the_envelope_in_punycode() -> None:
    assert check_address("to", "info@bücher.example") == "info@xn--bcher-kva.example"
    msg = compose(to=["info@bücher.example"], subject="s", text="x")
    assert msg.recipients == ("info@xn--bcher-kva.example",)
    assert msg.raw.isascii()


def test_invalid_idn_domain_is_refused_with_words_that_say_so() -> None:
    with pytest.raises(InputError, match="internationalised \\(IDN\\) domain"):
        check_address("to", "a@bü_cher.example")


def test_non_ascii_local_part_is_written_in_utf8_not_as_an_encoded_word() -> None:
    msg = compose(to=["ján@example.sk"], subject="s", text="x")
    assert msg.recipients == ("ján@example.sk",)
    assert "To: ján@example.sk".encode() in msg.raw and b"=?utf-8?" not in _head(msg.raw)


def test_non_ascii_recipient_fails_clearly_without_smtputf8(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.smtputf8 = False
    svc = make_service(tmp_path / "home", make_task(port=smtp_server.port))
    (msg_id,) = [svc.send("Firma", to=["ján@example.sk"], subject="s", text="x")]
    run_engine_until(svc, lambda: svc.outbox("Firma").get(msg_id).status is MessageStatus.FAILED)
    assert "SMTPUTF8" in svc.outbox("Firma").get(msg_id).last_error
    assert smtp_server.messages == []


def test_non_ascii_recipient_is_delivered_with_smtputf8(tmp_path: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(tmp_path / "home", make_task(port=smtp_server.port))
    svc.send("Firma", to=["ján@bücher.example"], subject="s", text="x")
    run_engine_until(svc, lambda: len(smtp_server.messages) == 1)
    assert smtp_server.messages[0].rcpt_tos == ["ján@xn--bcher-kva.example"]


def test_sender_with_non_ascii_local_part_is_refused() -> None:
    with pytest.raises(InputError, match="non-ASCII"):
        check_mailbox("sender", "Ján <ján@firma.sk>", ascii_only=True)


# ---- 4. long lines ----------------------------------------------------------------------
def test_over_long_header_line_is_refused_at_enqueue() -> None:
    raw = b"To: a@example.com\r\nX-Long: " + b"x" * 100_000 + b"\r\n\r\nbody\r\n"
    _refused(raw, "line 2", "998")


def test_over_long_body_line_is_refused_at_enqueue() -> None:
    raw = b"To: a@example.com\r\n\r\nshort\r\n" + b"y" * 20_000 + b"\r\n"
    _refused(raw, "line 4", "quoted-printable")


def test_long_lines_of_send_are_encoded_not_refused() -> None:
    msg = compose(to=["a@example.com"], subject="s", text="y" * 20_000, html="<p>" + "z" * 20_000)
    assert max(len(line) for line in msg.raw.split(b"\r\n")) <= 78


# ---- 5. one validation for every way in -------------------------------------------------------
def test_send_refuses_what_enqueue_refuses(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    svc.add_company("Firma")
    with pytest.raises(InputError):
        svc.send("Firma", to=["a@example.com"], subject="s", sender="not an address")
    with pytest.raises(InputError, match="tag"):
        svc.send("Firma", to=["a@example.com"], subject="s", tag="a\nb")
    with pytest.raises(InputError, match="tag"):
        svc.enqueue_raw("Firma", [("m.eml", b"To: a@example.com\r\n\r\nx\r\n")], tag="a\nb")
    assert svc.outbox("Firma").count() == 0


# ---- 6. smaller ----------------------------------------------------------------------------
def test_duplicate_message_id_is_refused_unless_allowed(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    svc.add_company("Firma")
    raw = b"To: a@example.com\r\nMessage-ID: <same@example.com>\r\n\r\nx\r\n"
    svc.enqueue_raw("Firma", [("a.eml", raw)])
    with pytest.raises(InputError, match="already in the outbox"):
        svc.enqueue_raw("Firma", [("b.eml", raw)])
    with pytest.raises(InputError, match="same Message-ID"):
        svc.enqueue_raw("Firma", [("c.eml", raw.replace(b"same", b"new")), ("d.eml", raw.replace(b"same", b"new"))])
    assert svc.outbox("Firma").count() == 1
    svc.enqueue_raw("Firma", [("b.eml", raw)], allow_duplicate_id=True)
    assert svc.outbox("Firma").count() == 2


@pytest.mark.parametrize(
    "raw",
    [b"To: a@example.com\r\nSubject: a\x00b\r\n\r\nx\r\n", b"To: a@example.com\r\n\r\nline\r\nnul\x00here\r\n"],
)
def test_nul_bytes_are_refused(raw: bytes) -> None:
    _refused(raw, "line")


def test_mbox_from_line_is_not_sent_as_a_header() -> None:
    raw = b"From someone@example.com Mon Nov 30 04:00:00 2026\nTo: a@example.com\nMessage-ID: <1@x.example>\n\nx\n"
    msg = prepare_raw(raw, "m.eml")
    assert msg.raw.startswith(b"To: a@example.com\r\n")


def test_utf8_bom_before_the_headers_is_dropped() -> None:
    msg = prepare_raw(b"\xef\xbb\xbfTo: a@example.com\r\nSubject: s\r\n\r\nx\r\n", "m.eml")
    assert msg.recipients == ("a@example.com",) and msg.raw.startswith(b"To:")


def test_encoded_line_break_in_a_header_is_refused() -> None:
    _refused(b"To: a@example.com\r\nSubject: =?utf-8?q?a=0ABcc:_x@y.example?=\r\n\r\nx\r\n", "Subject")


def test_cli_company_list_escapes_control_characters_and_cancel_counts_ids_once(automail_home: Path) -> None:
    setup_task(2525)
    cli("company", "add", "Other")
    definitions = automail_home / "automail.json"
    definitions.write_text(definitions.read_text().replace('"Other"', '"Evil\\u001b[31mRed"'))
    out = cli("company", "list").stdout
    assert "\x1b" not in out and "Evil\\x1b[31mRed" in out
    cli("send", "--company", "Firma", "--to", "a@example.com", "--subject", "s")
    res = cli("cancel", "--company", "Firma", "1", "1")
    assert "1 message(s) cancelled" in res.stdout
    res = cli("cancel", "--company", "Firma", str(2**64), check=2)
    assert "not a message id" in res.stderr and "Traceback" not in res.stderr
