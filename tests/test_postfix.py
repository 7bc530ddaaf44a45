"""AutoMail's CLI and engine against a real Postfix (tests/postfix.py): what arrives, over how many
connections, across a server restart, and over TLS with a login. Postfix's own log is the evidence."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.helpers import cli, setup_task
from tests.postfix import Delivered, Postfix

pytestmark = pytest.mark.slow

SENDER = "Firma s.r.o. <info@firma.sk>"
# Postfix's complaints about a sloppy client; none may appear for AutoMail's sessions.
PROTOCOL_WARNINGS = ("warning:", "improper command pipelining", "bare <LF>", "non-SMTP command", "too many errors")


def slovak_message(n: int, to: str) -> EmailMessage:
    """A mailing-like message: Slovak subject and body, a binary and a UTF-8 text attachment."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = f"Ľubomír Šťastný {n} <{to}>"
    msg["Subject"] = f"Faktúra č. {n:03d} – Žltý kôň úpel ďábelské ódy, {'ôä' * (n % 4)} Ďakujeme!"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}.{n}@firma.sk>"
    msg.set_content(
        f"Dobrý deň, pán Šťastný,\n\nv prílohe Vám posielame faktúru č. {n:03d} za október.\n"
        "Splatnosť: 14 dní. Ďakujeme, že ste s nami – Ľudmila z účtovného oddelenia.\n\nS pozdravom\nFirma s.r.o.\n"
    )
    pdf = b"%PDF-1.4\n" + random.Random(n).randbytes(2000 + 97 * n)  # binary, every byte value
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"faktúra-{n:03d}.pdf")
    notes = f"Poznámky k faktúre {n}: čučoriedky, ťava, ňufák, dĺžeň, vôňa.\n".encode()
    msg.add_attachment(notes, maintype="text", subtype="plain", filename="poznámky.txt")
    return msg


def parts(msg: EmailMessage) -> list[tuple[str, str | None, object]]:
    """(content type, file name, decoded content) of every leaf part: what the recipient sees."""
    return [(p.get_content_type(), p.get_filename(), p.get_content()) for p in msg.walk() if not p.is_multipart()]


def write(folder: Path, messages: list[EmailMessage]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, msg in enumerate(messages):
        path = folder / f"m{i:03d}.eml"
        path.write_bytes(msg.as_bytes())
        paths.append(str(path))
    return paths


def by_message_id(postfix: Postfix, ids: set[str]) -> dict[str, list[Delivered]]:
    found: dict[str, list[Delivered]] = {}
    for copy in postfix.messages():
        if copy.message_id in ids:
            found.setdefault(copy.message_id, []).append(copy)
    return found


def outbox(company: str = "Firma") -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(cli("outbox", "--company", company, "--json").stdout)
    return rows


def connections(log: str) -> int:
    return len(re.findall(r"smtpd\[\d+\]: connect from localhost\[127\.0\.0\.1\]", log))


def session_summaries(log: str) -> list[str]:
    """Postfix's count of each session's commands ("ehlo=1 mail=1 … commands=5"; failed ones as n/m)."""
    return re.findall(r"disconnect from localhost\[127\.0\.0\.1\] (.*)", log)


def test_thirty_slovak_messages_with_attachments_arrive_intact_over_one_connection(
    tmp_path: Path, postfix: Postfix
) -> None:
    sent = [slovak_message(n, f"zakaznik{n}@example.sk") for n in range(30)]
    setup_task(postfix.plain_port, "--unlimited")
    cli("enqueue", "--company", "Firma", *write(tmp_path / "in", sent))
    cli("task", "start", "Mailing")
    mark = postfix.log_mark()

    cli("run", "--until-empty", timeout=120)

    ids = {str(m["Message-ID"]) for m in sent}
    postfix.wait_for(30, timeout=60)
    delivered = by_message_id(postfix, ids)
    assert {mid: len(copies) for mid, copies in delivered.items()} == dict.fromkeys(ids, 1)
    for msg in sent:
        (copy,) = delivered[str(msg["Message-ID"])]
        assert copy.delivered_to == str(msg["To"]).rpartition("<")[2].rstrip(">")
        assert copy.message["Subject"] == msg["Subject"]
        assert copy.message["To"] == msg["To"]
        assert parts(copy.message) == parts(msg)
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    assert connections(log) == 1, log
    # Postfix's summary of the session: every command succeeded (no "n/m" counts), ended by QUIT.
    assert session_summaries(log) == ["ehlo=1 mail=30 rcpt=30 data=30 quit=1 commands=92"], log
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log
    assert {row["status"] for row in outbox()} == {"sent"}


def test_postfix_stopped_mid_run_and_started_20_s_later_gets_everything_once(tmp_path: Path, postfix: Postfix) -> None:
    sent = [slovak_message(n, f"restart{n}@example.sk") for n in range(10)]
    setup_task(postfix.plain_port, "--rate", "3000")  # one message every 1.2 s: the stop lands mid-run
    cli("enqueue", "--company", "Firma", *write(tmp_path / "in", sent))
    cli("task", "start", "Mailing")
    ids = {str(m["Message-ID"]) for m in sent}

    run = subprocess.Popen(
        [sys.executable, "-m", "automail", "run", "--until-empty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(by_message_id(postfix, ids)) < 3:
            assert time.monotonic() < deadline, "the first messages did not arrive"
            time.sleep(0.05)
        postfix.stop()
        try:
            time.sleep(20)
            assert run.poll() is None, run.communicate()[0]
            assert len(by_message_id(postfix, ids)) < len(sent)
        finally:
            postfix.start()
        output, _ = run.communicate(timeout=150)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()

    assert run.returncode == 0, output
    postfix.wait_for(len(sent), timeout=60)
    delivered = by_message_id(postfix, ids)
    assert {mid: len(copies) for mid, copies in delivered.items()} == dict.fromkeys(ids, 1)
    for msg in sent:
        assert parts(delivered[str(msg["Message-ID"])][0].message) == parts(msg)
    assert {row["status"] for row in outbox()} == {"sent"}


@pytest.mark.parametrize(
    ("security", "port_name"),
    [("tls", "smtps_port"), ("starttls", "submission_port")],
    ids=["implicit-tls", "starttls"],
)
def test_login_over_tls_trusting_the_servers_own_certificate(
    tmp_path: Path, postfix: Postfix, security: str, port_name: str
) -> None:
    port = getattr(postfix, port_name)
    setup_task(
        port,
        "--security",
        security,
        "--ca-file",
        str(postfix.ca_file),
        "--username",
        postfix.user,
        "--password-stdin",
        "--unlimited",
        stdin=postfix.password,
    )
    sent = [slovak_message(n, f"{security}{n}@example.sk") for n in range(3)]
    cli("enqueue", "--company", "Firma", *write(tmp_path / "in", sent))
    cli("task", "start", "Mailing")
    mark = postfix.log_mark()

    cli("run", "--until-empty", timeout=120)

    ids = {str(m["Message-ID"]) for m in sent}
    delivered = by_message_id(postfix, ids)
    assert {mid: len(copies) for mid, copies in delivered.items()} == dict.fromkeys(ids, 1)
    for msg in sent:
        assert parts(delivered[str(msg["Message-ID"])][0].message) == parts(msg)
    log = postfix.wait_for_log("disconnect from localhost[127.0.0.1]", since=mark)
    service = "smtps" if security == "tls" else "submission"
    assert f"postfix/{service}/smtpd" in log
    assert "TLS connection established from localhost[127.0.0.1]" in log, log
    assert f"sasl_method=PLAIN, sasl_username={postfix.user}" in log, log
    assert connections(log) == 1, log
    (summary,) = session_summaries(log)
    assert "auth=1 mail=3 rcpt=3 data=3 quit=1" in summary, log
    assert "/" not in summary, log  # no command failed
    assert not [w for w in PROTOCOL_WARNINGS if w in log], log
