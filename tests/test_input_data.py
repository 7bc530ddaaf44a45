"""Damaged data, a hostile environment, names and paths (issue 8, items 7–15): a clear error, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from automail.__main__ import main
from automail.engine.service import Service
from automail.errors import AutomailError, OutboxError
from automail.models import MessageStatus
from automail.paths import safe_filename
from automail.store.outbox import Outbox
from tests.helpers import eml, make_service, make_task, new_message, run_engine_until
from tests.smtpd import SmtpServer


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`automail ARGS` in this process: (exit code, stdout, stderr); fails on a traceback."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


# ---- 7. damaged automail.json ----------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [
        b'{"companies": {"1": {"name": "Firma\xe1", "outbox_path": "x"}}}',
        b'{"companies": "x"}',
        b'{"companies": {"1": {"outbox_path": "x.sqlite3"}}}',
        b'{"tasks": {"1": {"name": "T", "company": "F", "smtp": {"host": "h", "security": "bogus"}}}}',
        b"[1, 2]",
    ],
)
def test_damaged_definitions_give_exit_1_and_are_not_overwritten(
    capsys: pytest.CaptureFixture[str], automail_home: Path, content: bytes
) -> None:
    automail_home.mkdir()
    (automail_home / "automail.json").write_bytes(content)
    commands = [("task", "list"), ("status",)]
    if b"tasks" not in content:
        commands += [("company", "list"), ("company", "add", "Nova")]
    for args in commands:
        code, _out, err = run(capsys, *args)
        assert code == 1 and "automail.json" in err, err
    assert (automail_home / "automail.json").read_bytes() == content


# ---- 8. damaged and foreign outbox files -----------------------------------------------------------
def test_another_programs_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, text TEXT)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    svc = Service(tmp_path / "home")
    with pytest.raises(OutboxError, match="not an AutoMail outbox"):
        svc.add_company("Firma", str(foreign))
    assert foreign.read_bytes() == before and not Path(f"{foreign}-wal").exists()
    assert svc.companies() == []


def test_outbox_with_random_bytes_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svc = Service(tmp_path / "home")
    company = svc.add_company("Firma")
    svc.enqueue("Firma", [new_message(i) for i in range(200)])
    svc.close()
    path = Path(company.outbox_path)
    blob = bytearray(path.read_bytes())
    blob[4096 : len(blob) - 100] = os.urandom(len(blob) - 4196)
    path.write_bytes(bytes(blob))
    send = ("send", "--company", "Firma", "--to", "a@example.com", "--subject", "s")
    for args in (("outbox", "--company", "Firma"), send):
        code, _out, err = run(capsys, *args)
        assert code == 1 and "damaged" in err, err


def test_rows_with_unknown_status_or_bad_recipients_are_clear_errors(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "Firma")
    box.enqueue([new_message(1), new_message(2)], now=0)
    conn = sqlite3.connect(tmp_path / "o.sqlite3")
    conn.execute("UPDATE messages SET status='zzz', next_attempt_at=NULL WHERE id=1")
    conn.execute("UPDATE messages SET recipients='not json' WHERE id=2")
    conn.commit()
    conn.close()
    with pytest.raises(OutboxError, match="unknown status 'zzz'"):
        box.counts()
    with pytest.raises(OutboxError, match=r"message 1 .* damaged: its status .*'zzz'"):
        box.list()
    with pytest.raises(OutboxError, match=r"message 2 .* damaged: its recipients"):
        box.get(2)


def test_missing_body_fails_the_message_and_run_until_empty_ends(tmp_path: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(tmp_path / "home", make_task(port=smtp_server.port))
    ids = svc.enqueue_raw("Firma", [("a.eml", eml(1)), ("b.eml", eml(2))])
    conn = sqlite3.connect(svc.definitions.company("Firma").outbox_path)
    conn.execute("DELETE FROM bodies WHERE id=?", (ids[0],))
    conn.commit()
    conn.close()
    box = svc.outbox("Firma")
    run_engine_until(svc, lambda: box.counts()[MessageStatus.QUEUED] == 0 and len(smtp_server.messages) == 1)
    assert box.get(ids[0]).status is MessageStatus.FAILED and "no body" in box.get(ids[0]).last_error


# ---- 9. environment: unwritable folders, AUTOMAIL_HOME a file --------------------------------------
def test_automail_home_pointing_at_a_file(capsys: pytest.CaptureFixture[str], automail_home: Path) -> None:
    automail_home.write_text("x")
    code, _out, err = run(capsys, "status")
    assert code == 1 and "is a file" in err and "AUTOMAIL_HOME" in err


def test_data_folder_that_cannot_be_created(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("AUTOMAIL_HOME", str(tmp_path / "file" / "home"))  # fails even for root
    code, _out, err = run(capsys, "company", "add", "Firma")
    assert code == 1 and "cannot create the data folder" in err


def test_unwritable_log_and_lock_files(capsys: pytest.CaptureFixture[str], automail_home: Path) -> None:
    # A folder where the file should be makes it unwritable even for root.
    (automail_home / "logs" / "automail.log").mkdir(parents=True)
    (automail_home / "automail.json.lock").mkdir(parents=True)
    code, _out, err = run(capsys, "status")
    assert code == 0 and "cannot write the log" in err
    code, _out, err = run(capsys, "company", "add", "Firma")
    assert code == 1 and "lock file" in err


# ---- 10. out-of-range numbers ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("cancel", "--company", "Firma", str(2**64)),
        ("retry", "--company", "Firma", str(2**63)),
        ("outbox", "--company", "Firma", "--limit", str(2**64)),
    ],
)
def test_ids_beyond_64_bits_are_bad_input(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    run(capsys, "company", "add", "Firma")
    code, _out, err = run(capsys, *args)
    assert code == 2 and ("id" in err or "limit" in err)


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e300", "x"])
def test_max_message_mb_must_be_a_sane_number(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    run(capsys, "company", "add", "Firma")
    monkeypatch.setenv("AUTOMAIL_MAX_MESSAGE_MB", value)
    code, _out, err = run(capsys, "send", "--company", "Firma", "--to", "a@example.com", "--subject", "s")
    assert code == 2 and "AUTOMAIL_MAX_MESSAGE_MB" in err


# ---- 11. bounded reads ----------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["enqueue", "--text", "--html"])
def test_dev_zero_is_read_only_up_to_the_limit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, option: str
) -> None:
    run(capsys, "company", "add", "Firma")
    monkeypatch.setenv("AUTOMAIL_MAX_MESSAGE_MB", "1")
    if option == "enqueue":
        args = ["enqueue", "--company", "Firma", "/dev/zero"]
    else:
        args = ["send", "--company", "Firma", "--to", "a@example.com", "--subject", "s", option, "/dev/zero"]
    code, _out, err = run(capsys, *args)
    assert code == 2 and "over the 1 MB limit" in err


# ---- 12–15. names and paths -------------------------------------------------------------------------
def test_nfc_and_nfd_spellings_and_case_are_one_company(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    nfd = unicodedata.normalize("NFD", "Účtovníctvo")
    company = svc.add_company(nfd)
    assert company.name == unicodedata.normalize("NFC", nfd)
    with pytest.raises(AutomailError, match="exists already"):
        svc.add_company("ÚČTOVNÍCTVO")
    assert svc.definitions.company(nfd) == company == svc.definitions.company("účtovníctvo")
    assert len(list((tmp_path / "home" / "outbox").glob("*.sqlite3"))) == 1


def test_names_differing_only_in_case_on_disk_get_their_own_outbox(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    a = svc.add_company("A/b")
    b = svc.add_company("a_B")  # same file name on a case-insensitive file system
    assert a.outbox_path.lower() != b.outbox_path.lower()


@pytest.mark.parametrize("name", ["x" * (100 + 1), "Ž" * 200, "a\x1b[31m", "a\u2028b", " "])
def test_bad_company_names_exit_2_and_leave_no_file(
    capsys: pytest.CaptureFixture[str], automail_home: Path, name: str
) -> None:
    code, _out, err = run(capsys, "company", "add", name)
    assert code == 2 and "company" in err
    assert not (automail_home / "outbox").exists() or not any((automail_home / "outbox").iterdir())


def test_long_names_within_the_limit_get_short_file_names(tmp_path: Path) -> None:
    svc = Service(tmp_path / "home")
    first = svc.add_company("雪" * 100)
    second = svc.add_company("雪" * (100 - 1) + "雨")
    assert first.outbox_path != second.outbox_path
    assert all(len(Path(c.outbox_path).name.encode()) < 255 for c in (first, second))


def test_relative_outbox_path_is_stored_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, _err = run(capsys, "company", "add", "R", "--outbox", "rel.sqlite3")
    assert code == 0
    (elsewhere := tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _err = run(capsys, "company", "list", "--json")
    assert json.loads(out)[0]["outbox_path"] == str(tmp_path / "rel.sqlite3")
    assert not (elsewhere / "rel.sqlite3").exists()


@pytest.mark.parametrize("name", ["CON", "con", "Nul", "COM1", "lpt9", "AUX.firma", "CONIN$", "COM\u00b9"])
def test_windows_reserved_names_map_to_safe_file_names(name: str) -> None:
    stem = safe_filename(name)
    reserved = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "COM1", "LPT9", "COM\u00b9"}
    assert stem.split(".", 1)[0].upper() not in reserved
    assert stem != name


def test_ordinary_names_keep_their_file_name() -> None:
    assert safe_filename("Účtovníctvo") == "Účtovníctvo"
    assert safe_filename("CONTOSO") == "CONTOSO"
    assert safe_filename("COM10") == "COM10"
