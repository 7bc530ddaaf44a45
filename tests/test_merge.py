"""Mail merge: data files as offices have them, templates, the all-or-nothing check, the CLI end to end."""

from __future__ import annotations

import csv
import datetime as dt
import email
import os
import sqlite3
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from automail import api
from automail.engine.service import Service
from automail.errors import InputError
from automail.intake.merge import MergeOptions, Template, html_to_text, load_template, render, simple_name
from automail.intake.sources import read_table
from tests.helpers import cli, setup_task
from tests.smtpd import SmtpServer

ROWS = [
    ("email", "Meno zákazníka", "suma", "príloha"),
    ("jan.novak@example.sk", "Ján Novák", "12,50", "faktúry/faktúra 1.pdf"),
    ("eva@example.sk", "Eva\nKováčová", "3", "faktúry/faktúra 2.pdf"),
    ("peter@example.sk", "Peter Čierny", "7", ""),
]


def write_csv(path: Path, rows: list[tuple[str, ...]], encoding: str = "utf-8", delimiter: str = ";") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


@pytest.fixture
def mailing(tmp_path: Path) -> Path:
    """A folder with customers.csv (cp1250, ;), per-row PDFs and a text template with a Subject line."""
    (tmp_path / "faktúry").mkdir()
    (tmp_path / "faktúry" / "faktúra 1.pdf").write_bytes(b"%PDF-1.4 one\n")
    (tmp_path / "faktúry" / "faktúra 2.pdf").write_bytes(b"%PDF-1.4 two\n")
    write_csv(tmp_path / "customers.csv", ROWS, encoding="cp1250")
    (tmp_path / "invoice.txt").write_text(
        "Subject: Faktúra pre {{ Meno_zákazníka }}\n\nDobrý deň {{ row['Meno zákazníka'] }},\nsuma: {{ suma }} €.\n",
        encoding="utf-8",
    )
    return tmp_path


# ---- data files -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ";"), ("cp1250", ";"), ("utf-8", "\t"), ("cp1250", ",")],
)
def test_csv_encodings_and_delimiters_are_detected(tmp_path: Path, encoding: str, delimiter: str) -> None:
    path = write_csv(tmp_path / "d.csv", ROWS, encoding=encoding, delimiter=delimiter)
    table = read_table(path)
    assert table.columns == ROWS[0]
    assert [r.values["Meno zákazníka"] for r in table.rows] == ["Ján Novák", "Eva\nKováčová", "Peter Čierny"]
    # the quoted newline makes row 2 two lines long: row 3 starts on line 5
    assert [r.where for r in table.rows] == ["line 2", "line 3", "line 5"]


def test_csv_given_encoding_wins_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", ROWS, encoding="cp1250")
    assert read_table(path, encoding="cp1250").rows[0].values["Meno zákazníka"] == "Ján Novák"
    with pytest.raises(InputError, match="not valid utf-8"):
        read_table(path, encoding="utf-8")


def test_csv_with_more_values_than_columns_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("email;meno\na@example.sk;A\nb@example.sk;B;extra\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 3 has 3 values"):
        read_table(path)


def test_xlsx_values_as_the_sheet_shows_them(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Zákazníci"
    sheet.append(["email", "splatnosť", "suma", "kusov"])
    sheet.append(["jan@example.sk", dt.datetime(2026, 12, 1), 12.5, 3.0])
    sheet["B2"].number_format = "dd.mm.yyyy"
    sheet["C2"].number_format = "0.00"
    sheet.append([None, None, None, None])
    sheet.append(["eva@example.sk", dt.datetime(2026, 1, 5), 7, 1])
    sheet["B4"].number_format = "d.m.yyyy"
    other = book.create_sheet("Iné")
    other.append(["email"])
    other.append(["x@example.sk"])
    path = tmp_path / "d.xlsx"
    book.save(path)
    table = read_table(path)
    assert table.columns == ("email", "splatnosť", "suma", "kusov")
    assert [r.values for r in table.rows] == [
        {"email": "jan@example.sk", "splatnosť": "01.12.2026", "suma": "12.50", "kusov": "3"},
        {"email": "eva@example.sk", "splatnosť": "5.1.2026", "suma": "7", "kusov": "1"},
    ]
    assert [r.where for r in table.rows] == ["sheet 'Zákazníci' row 2", "sheet 'Zákazníci' row 4"]
    assert read_table(path, sheet="Iné").rows[0].values == {"email": "x@example.sk"}
    with pytest.raises(InputError, match="no sheet 'Nie'"):
        read_table(path, sheet="Nie")


# ---- templates and rows ---------------------------------------------------------------------------
def test_simple_names_of_columns() -> None:
    assert simple_name("Meno zákazníka") == "Meno_zákazníka"
    assert simple_name("1. splátka") == "_1__splátka"


def test_rows_render_with_names_attachments_and_rfc2231_file_names(mailing: Path) -> None:
    table = read_table(mailing / "customers.csv")
    template = load_template(mailing / "invoice.txt")
    options = MergeOptions(attach_column="príloha", name_column="Meno zákazníka", default_sender="F <info@firma.sk>")
    result = render(table, template, options, data_dir=mailing)
    assert result.ok, result.problems
    assert len(result.messages) == 3
    first = email.message_from_bytes(result.messages[0].raw, policy=policy.default)
    assert first["To"] == "Ján Novák <jan.novak@example.sk>"
    assert first["Subject"] == "Faktúra pre Ján Novák"
    assert first["Date"] and first["Message-ID"].endswith("@firma.sk>")
    assert "suma: 12,50 €." in first.get_body(("plain",)).get_content()
    (attachment,) = first.iter_attachments()
    assert attachment.get_filename() == "faktúra 1.pdf"
    assert attachment.get_content() == b"%PDF-1.4 one\n"
    assert "filename*=utf-8''fakt%C3%BAra%201.pdf" in result.messages[0].raw.decode()
    second = email.message_from_bytes(result.messages[1].raw, policy=policy.default)
    assert second["To"] == "Eva Kováčová <eva@example.sk>"  # the newline in the name folded to a space
    assert not list(email.message_from_bytes(result.messages[2].raw, policy=policy.default).iter_attachments())


def test_every_bad_row_is_reported_with_its_line_and_column(mailing: Path) -> None:
    rows = [
        *ROWS[:2],
        ("not-an-address", "X", "1", ""),
        ("ok@example.sk", "Y", "2", "faktúry/chýba.pdf"),
        ("", "Z", "3", ""),
        ("a@example.sk, zlý@", "W", "4", ""),
    ]
    table = read_table(write_csv(mailing / "bad.csv", rows))
    result = render(
        table, load_template(mailing / "invoice.txt"), MergeOptions(attach_column="príloha"), data_dir=mailing
    )
    problems = [(p.where, p.column, p.reason) for p in result.problems]
    assert problems[0] == ("line 3", "email", "'not-an-address' is not a valid e-mail address")
    assert problems[1][:2] == ("line 4", "príloha") and "chýba.pdf does not exist" in problems[1][2]
    assert problems[2] == ("line 5", "email", "no e-mail address")
    assert problems[3][:2] == ("line 6", "email")
    assert len(result.messages) == 1  # only line 2


def test_an_undefined_variable_is_a_row_problem_and_a_syntax_error_refuses_the_template(mailing: Path) -> None:
    table = read_table(mailing / "customers.csv")
    bad = mailing / "bad.txt"
    bad.write_text("Subject: Hi\n\nDear {{ customer_name }}\n", encoding="utf-8")
    result = render(table, load_template(bad), MergeOptions())
    assert len(result.problems) == 3
    assert "uses {{ customer_name }}, which is not a column of customers.csv" in result.problems[0].reason
    bad.write_text("Subject: Hi\n\nline one\nDear {{ meno }\n", encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        render(table, load_template(bad), MergeOptions())


def test_html_only_template_gets_a_derived_text_part_and_is_autoescaped(mailing: Path, tmp_path: Path) -> None:
    html = tmp_path / "t.html"
    html.write_text("<p>Dobrý deň <b>{{ Meno_zákazníka }}</b></p><p><a href='https://x.sk/u'>Odhlásiť</a></p>")
    rows = [("email", "Meno zákazníka"), ("a@example.sk", "<script>Ján</script>")]
    table = read_table(write_csv(tmp_path / "d.csv", rows))
    result = render(table, load_template(None, html, "Pre {{ Meno_zákazníka }}"), MergeOptions())
    msg = email.message_from_bytes(result.messages[0].raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert "&lt;script&gt;Ján&lt;/script&gt;" in msg.get_body(("html",)).get_content()
    assert "Dobrý deň <script>Ján</script>" in msg.get_body(("plain",)).get_content()
    assert html_to_text("<p>a</p><p><a href='https://x'>b</a></p>") == "a\n\nb <https://x>\n"


def test_eml_style_template_sets_headers_and_list_unsubscribe(tmp_path: Path) -> None:
    template = tmp_path / "t.eml"
    template.write_text(
        "To: {{ meno }} <{{ email }}>\nCc: uctovnictvo@firma.sk\nReply-To: podpora@firma.sk\n"
        "Subject: Newsletter pre {{ meno }}\n\nAhoj {{ meno }}\n",
        encoding="utf-8",
    )
    table = read_table(write_csv(tmp_path / "d.csv", [("email", "meno", "id"), ("a@example.sk", "Ján", "7")]))
    opts = MergeOptions(list_unsubscribe="https://firma.sk/odhlasit?id={{ id }}")
    msg = email.message_from_bytes(render(table, load_template(template), opts).messages[0].raw, policy=policy.default)
    assert msg["To"] == "Ján <a@example.sk>" and msg["Cc"] == "uctovnictvo@firma.sk"
    assert msg["Reply-To"] == "podpora@firma.sk"
    assert msg["List-Unsubscribe"] == "<https://firma.sk/odhlasit?id=7>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_duplicate_recipients_are_warned(tmp_path: Path) -> None:
    rows = [("email",), ("a@example.sk",), ("A@example.sk",)]
    table = read_table(write_csv(tmp_path / "d.csv", rows))
    result = render(table, _text_template(tmp_path), MergeOptions())
    assert result.ok and len(result.messages) == 2
    assert result.warnings == ["line 3: A@example.sk also gets the message of line 2"]


def _text_template(folder: Path) -> Template:
    t = folder / "plain.txt"
    t.write_text("Subject: Hello\n\nHello\n", encoding="utf-8")
    return load_template(t)


# ---- the CLI and the API, end to end ---------------------------------------------------------------
def test_cli_merge_refuses_a_bad_row_and_queues_nothing(mailing: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port)
    rows = [*ROWS, ("zlá adresa", "X", "1", "")]
    write_csv(mailing / "customers.csv", rows, encoding="cp1250")
    args = ["merge", "--company", "Firma", "--data", str(mailing / "customers.csv")]
    args += ["--template", str(mailing / "invoice.txt"), "--attach-column", "príloha"]
    result = cli(*args, check=2)
    assert "line 6, column 'email': 'zlá adresa' is not a valid e-mail address" in result.stderr
    assert "Nothing was queued" in result.stderr
    assert cli("outbox", "--company", "Firma", "--json").stdout.strip() == "[]"
    # --skip-invalid queues the good rows and writes the rejects beside the data file
    result = cli(*args, "--skip-invalid", "--name", "Faktúry 11/2026")
    assert "Queued 3 message(s) as mailing 'Faktúry 11/2026'" in result.stdout
    rejects = (mailing / "customers.rejected.csv").read_text(encoding="utf-8-sig")
    assert "zlá adresa" in rejects and "not a valid e-mail address" in rejects


def test_cli_merge_sends_personalised_messages(mailing: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    args = ["merge", "--company", "Firma", "--data", str(mailing / "customers.csv"), "--name", "Faktúry"]
    args += ["--template", str(mailing / "invoice.txt"), "--attach-column", "príloha"]
    (mailing / "podmienky.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)  # ~10 KB, in every message
    args += [
        "--name-column",
        "Meno zákazníka",
        "--attach",
        str(mailing / "invoice.txt"),
        str(mailing / "podmienky.pdf"),
    ]
    preview = cli(*args, "--preview", "1")
    assert "To: Ján Novák <jan.novak@example.sk>" in preview.stdout
    assert "Attachments: invoice.txt" in preview.stdout and "faktúra 1.pdf (13 bytes)" in preview.stdout
    assert "nothing was queued" in preview.stdout
    cli(*args, "--test-to", "tester@firma.sk")
    (test,) = smtp_server.wait_for(1)
    assert test.rcpt_tos == ["tester@firma.sk"]
    sent = email.message_from_bytes(test.data, policy=policy.default)
    assert sent["Subject"] == "Faktúra pre Ján Novák" and sent["To"] == "Ján Novák <jan.novak@example.sk>"
    assert test.data.isascii()  # 7-bit: needs no 8BITMIME
    smtp_server.clear()
    assert "Queued 3 message(s)" in cli(*args).stdout
    cli("task", "start", "Mailing")
    cli("run", "--until-empty", timeout=60)
    got = {m.rcpt_tos[0]: email.message_from_bytes(m.data, policy=policy.default) for m in smtp_server.messages}
    assert set(got) == {"jan.novak@example.sk", "eva@example.sk", "peter@example.sk"}
    peter = got["peter@example.sk"]
    assert peter["Subject"] == "Faktúra pre Peter Čierny"
    assert peter["From"] == "Firma <info@firma.sk>"
    assert "suma: 7 €." in peter.get_body(("plain",)).get_content()
    names = sorted(p.get_filename() for p in got["eva@example.sk"].iter_attachments())
    assert names == ["faktúra 2.pdf", "invoice.txt", "podmienky.pdf"]
    for msg in got.values():  # the common attachment, stored once in the outbox, arrives whole in each
        (common,) = [p for p in msg.iter_attachments() if p.get_filename() == "podmienky.pdf"]
        assert common.get_content() == (mailing / "podmienky.pdf").read_bytes()
    conn = sqlite3.connect(next((Path(os.environ["AUTOMAIL_HOME"]) / "outbox").glob("*.sqlite3")))
    assert conn.execute("SELECT count(*) FROM parts").fetchone()[0] == 1  # podmienky.pdf (the invoices are tiny)


def test_api_queues_email_messages_all_or_nothing(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    good = EmailMessage()
    good["To"] = "Ján Novák <jan.novak@example.sk>"
    good["Subject"] = "Faktúra"
    good.set_content("Dobrý deň")
    bad = EmailMessage()
    bad["Subject"] = "no recipient"
    bad.set_content("x")
    with pytest.raises(InputError, match="message 2"):
        api.queue("Firma", [good, bad])
    assert api.queue("Firma", [good]) == [1]
    stored = cli("outbox", "--company", "Firma", "--json").stdout
    assert "jan.novak@example.sk" in stored and '"id": 2' not in stored


def test_readme_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    cli("company", "add", "Firma s.r.o.")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "faktura-0042.pdf").write_bytes(b"%PDF-1.4\n")
    write_csv(tmp_path / "zakaznici.csv", [("email", "meno"), ("eva@example.sk", "Eva")])
    (tmp_path / "faktura.txt").write_text("Subject: Faktúra pre {{ meno }}\n\nDobrý deň {{ meno }}\n", encoding="utf-8")
    exec(compile(code, "README.md", "exec"), {})
    stored = cli("outbox", "--company", "Firma s.r.o.", "--json").stdout
    assert "jan.novak@example.sk" in stored and "eva@example.sk" in stored
    (mailing,) = Service().outbox("Firma s.r.o.").mailings()
    assert (mailing.name, mailing.queued) == ("Faktúry 11/2026", 1)
    assert str(tmp_path / "zakaznici.csv") in mailing.sources


@pytest.mark.parametrize("value", ["Faktúra pre Jána Nováka – " + "č" * 80, "x" * 200, "a b " * 40, "Ján 😀 Novák"])
def test_mime_headers_round_trip_and_stay_within_78_characters(value: str) -> None:
    from automail.intake.mime import header, mailbox

    raw = header("Subject", value) + b"To: " + mailbox("Ján Novák", "jan@example.sk").encode("ascii") + b"\r\n\r\nx"
    assert all(len(line) <= 78 for line in raw.split(b"\r\n")[:-2]) or value == "x" * 200
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == " ".join(value.split())
    assert msg["To"] == "Ján Novák <jan@example.sk>"


def test_a_part_many_messages_carry_is_stored_once_and_read_back_whole(tmp_path: Path) -> None:
    from automail.store.outbox import NewMessage, Outbox

    box = Outbox(tmp_path / "o.sqlite3", "Firma")
    part = b"QUJD" * 5000  # a 20 KB base64 attachment
    messages = [
        NewMessage(
            b"To: a%d@example.sk\r\n\r\n" % i + part + b"\r\n", (f"a{i}@example.sk",), "", "", f"<{i}@x>", "", (part,)
        )
        for i in range(50)
    ]
    ids = box.enqueue(messages, 1000.0)
    conn = box._conn()
    assert conn.execute("SELECT count(*) FROM parts").fetchone()[0] == 1
    assert conn.execute("SELECT max(length(raw)) FROM bodies").fetchone()[0] < 200
    assert box.raw(ids[7]) == messages[7].raw
    claimed = box.claim_batch("T", 1001.0, (), "info@firma.sk", 50)
    assert [c.raw for c in claimed] == [m.raw for m in messages]
    assert box.get(ids[0]).to_json()["to"] == ["a0@example.sk"]


def test_send_takes_recipients_as_people_write_them(smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli(
        "send",
        "--company",
        "Firma",
        "--to",
        "Ján Novák <jan.novak@example.sk>",
        "eva@example.sk",
        "--cc",
        '"Kováč, Peter" <peter@example.sk>',
        "--subject",
        "Pripomienka",
    )
    cli("task", "start", "Mailing")
    cli("run", "--until-empty", timeout=60)
    (sent,) = smtp_server.messages
    assert sorted(sent.rcpt_tos) == ["eva@example.sk", "jan.novak@example.sk", "peter@example.sk"]
    msg = email.message_from_bytes(sent.data, policy=policy.default)
    assert msg["To"] == "Ján Novák <jan.novak@example.sk>, eva@example.sk"
    assert msg["Cc"] == '"Kováč, Peter" <peter@example.sk>'
    cli("send", "--company", "Firma", "--to", "Ján <not an address>", "--subject", "x", check=2)


def test_outbox_json_into_a_closed_pipe_is_not_a_data_folder_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    cli("company", "add", "Firma")
    messages = []
    for i in range(400):  # ~250 KB of JSON: more than a pipe holds, so the writer meets the closed end
        msg = EmailMessage()
        msg["To"] = f"zakaznik{i}@example.sk"
        msg["Subject"] = f"Faktúra {i} " + "x" * 200
        msg.set_content("x")
        messages.append(msg)
    api.queue("Firma", messages)
    cmd = [sys.executable, "-m", "automail", "outbox", "--company", "Firma", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()  # the reader leaves, like `| head -1`
    err = proc.stderr.read()
    assert proc.wait(30) == 1
    assert b"data folder" not in err and b"Traceback" not in err, err
