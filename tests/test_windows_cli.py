"""Windows readiness of the CLI and the stores (issue 9): stdin and stdout bytes, BOMs, MIME types, keyring.

Most of these fixes are platform-neutral and run for real here; where a Windows-only call or
error is involved (pywintypes.error, the Credential Manager's size limit) it is faked and the
test says so (docs/packaging.md lists them).
"""

from __future__ import annotations

import email
import io
import json
import mimetypes
import signal
import subprocess
import sys
from email import policy
from pathlib import Path

import keyring
import pytest

import automail.__main__ as cli_main
from automail import secrets
from automail.engine.service import Service
from automail.errors import InputError, SecretStoreError
from automail.message import attachment_type, compose
from automail.store.definitions import Definitions
from tests.conftest import REPO_ROOT
from tests.helpers import cli, make_service, make_task, setup_task, wait_until
from tests.smtpd import SmtpServer

TASK_ADD = ["task", "add", "Mailing", "--company", "Firma", "--host", "smtp.example.com", "--username", "u"]
TASK_ADD += ["--sender", "info@firma.sk", "--password-stdin"]


def stored_password(tmp_path: Path) -> str:
    return str(json.loads((tmp_path / "keyring.json").read_text(encoding="utf-8"))["AutoMail"]["task:Mailing"])


# ---- 6: passwords on stdin are UTF-8 bytes -----------------------------------------------------
@pytest.mark.parametrize(
    ("piped", "password"),
    [
        (b"secret \r\n", "secret"),  # cmd: `echo secret | automail …`
        (b"secret\r\n", "secret"),  # PowerShell: `'secret' | automail …`
        (b"secret\n", "secret"),
        (b"secret", "secret"),
        (b"\xef\xbb\xbfsecret\r\n", "secret"),  # a UTF-8 file with a BOM (Notepad)
        ("Heslo-čšž€ \r\n".encode(), "Heslo-čšž€"),
        (b"two  \n", "two "),  # only one space is removed
    ],
)
def test_password_from_stdin_strips_one_line_end_and_space(piped: bytes, password: str) -> None:
    assert cli_main.password_from_stdin(piped) == password


def test_non_ascii_password_through_a_real_pipe_is_stored_exactly(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    cli(*TASK_ADD, stdin="Žltý-kôň ✓ \r\n".encode())
    assert stored_password(tmp_path) == "Žltý-kôň ✓"


def test_password_that_is_not_utf8_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    res = cli(*TASK_ADD, stdin="Pässwort-ô\r\n".encode("cp1250"), check=2)
    assert "password: standard input is not UTF-8 text" in res.stderr and "chcp 65001" in res.stderr
    assert "Traceback" not in res.stderr
    assert json.loads(cli("task", "list", "--json").stdout) == []
    assert not (tmp_path / "keyring.json").exists()


def test_redirected_output_is_utf8_whatever_the_code_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirected stdout on Windows is a TextIOWrapper in the ANSI code page: replaced here by one."""
    cli("company", "add", "Účtovníctvo ✓ s.r.o.")
    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    raw = io.BytesIO()
    fake = io.TextIOWrapper(raw, encoding="cp1252", errors="strict")
    monkeypatch.setattr(sys, "stdout", fake)
    assert cli_main.main(["company", "list", "--json"]) == 0
    fake.flush()
    assert json.loads(raw.getvalue().decode("utf-8"))[0]["name"] == "Účtovníctvo ✓ s.r.o."


# ---- 14: BOMs and MIME types ------------------------------------------------------------------
def test_text_body_saved_by_notepad_with_a_bom(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    body = tmp_path / "body.txt"
    body.write_bytes("\ufeffDobrý deň,\r\nfaktúra je v prílohe.\r\n".encode())
    cli("send", "--company", "Firma", "--to", "jan@example.com", "--subject", "S", "--text", str(body))
    out = json.loads(cli("outbox", "--company", "Firma", "--json").stdout)
    assert len(out) == 1
    svc = Service()
    try:
        raw = svc.outbox("Firma").raw(out[0]["id"])
    finally:
        svc.close()
    text = email.message_from_bytes(raw, policy=policy.default).get_body().get_content()  # type: ignore[union-attr]
    assert text.startswith("Dobrý deň") and "\ufeff" not in text


def test_definitions_file_edited_in_notepad_with_a_bom(automail_home: Path) -> None:
    automail_home.mkdir()
    doc = {"companies": {"1": {"name": "Firma", "outbox_path": str(automail_home / "f.sqlite3")}}}
    (automail_home / "automail.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    defs = Definitions(automail_home / "automail.json", automail_home)
    assert [c.name for c in defs.companies()] == ["Firma"]


def test_attachment_types_ignore_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Excel registers .csv as application/vnd.ms-excel in the Windows registry, which
    mimetypes.init() reads into the module's table: simulated by adding that mapping."""
    monkeypatch.setattr(mimetypes, "types_map", dict(mimetypes.types_map))
    mimetypes.add_type("application/vnd.ms-excel", ".csv")
    assert mimetypes.guess_type("a.csv")[0] == "application/vnd.ms-excel"
    assert attachment_type("export.CSV") == "text/csv"
    assert attachment_type("faktura.pdf") == "application/pdf"
    assert attachment_type("zostava.xlsx") == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert attachment_type("archiv.tar.gz") == "application/gzip"
    assert attachment_type("unknown.zzz") == "application/octet-stream"
    csv = tmp_path / "zoznam.csv"
    csv.write_text("a;b\n", encoding="utf-8")
    msg = compose(to=["jan@example.com"], subject="S", text="t", attachments=[csv])
    parsed = email.message_from_bytes(msg.raw, policy=policy.default)
    assert [p.get_content_type() for p in parsed.iter_attachments()] == ["text/csv"]  # type: ignore[attr-defined]


# ---- 10: keyring errors at the secrets boundary --------------------------------------------
class _PywintypesError(Exception):
    """What pywin32 raises: pywintypes.error(winerror, funcname, strerror), no `winerror` attribute."""


_PywintypesError.__module__ = "pywintypes"
_PywintypesError.__name__ = _PywintypesError.__qualname__ = "error"


class _WinVaultLike(keyring.backend.KeyringBackend):
    """Windows' backend as a service account sees it: CredRead/CredWrite fail with error 1312."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise _PywintypesError(1312, "CredRead", "A specified logon session does not exist.")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise _PywintypesError(1312, "CredWrite", "A specified logon session does not exist.")

    def delete_password(self, service: str, username: str) -> None:
        raise _PywintypesError(1312, "CredDelete", "A specified logon session does not exist.")


def test_pywintypes_error_becomes_secret_store_error_with_the_service_fix() -> None:
    keyring.set_keyring(_WinVaultLike())
    with pytest.raises(SecretStoreError) as info:
        secrets.get_password("Invoices")
    assert "error 1312" in str(info.value) and "AUTOMAIL_HOME" in str(info.value)
    assert "sign in once" in (info.value.fix or "")
    assert info.value.__cause__ is None  # the library's text (it may echo input) is not chained
    with pytest.raises(SecretStoreError):
        secrets.set_password("Invoices", "pw")
    secrets.delete_password("Invoices")  # ignored, as a missing entry


def test_engine_shows_the_keyring_error_on_the_task(automail_home: Path) -> None:
    svc = make_service(automail_home, make_task("Invoices", port=2525, username="u"), password="pw")
    keyring.set_keyring(_WinVaultLike())
    try:
        svc.start_engine()
        assert wait_until(lambda: "1312" in (svc.status()[0].last_error or ""), timeout=10)
    finally:
        svc.stop_engine()
        svc.close()


def test_password_over_the_credential_manager_limit_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(InputError, match="1280 characters"):
        secrets.set_password("Invoices", "x" * 1281)
    secrets.set_password("Invoices", "x" * 1280)
    assert secrets.get_password("Invoices") == "x" * 1280


def test_bogus_keyring_backend_is_a_clear_error_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    cli("company", "add", "Firma")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "bogus.module")
    res = cli(*TASK_ADD, stdin="pw\n", check=1)
    assert "PYTHON_KEYRING_BACKEND=bogus.module cannot be loaded" in res.stderr
    assert "--list-backends" in res.stderr and "Traceback" not in res.stderr
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.keyring_backend.FileKeyring")
    assert json.loads(cli("task", "list", "--json").stdout) == []


# ---- 5: Ctrl+Break, a closed console, logoff: SIGBREAK stops `automail run` gracefully ----------------
@pytest.mark.slow
def test_sigbreak_stops_run_gracefully(smtp_server: SmtpServer) -> None:
    """Windows sends SIGBREAK, never SIGTERM: there it is a real Ctrl+Break; elsewhere SIGBREAK is
    faked as SIGUSR1 (whose default action would kill the process)."""
    setup_task(smtp_server.port)
    cli("task", "start", "Mailing")
    windows = sys.platform == "win32"
    fake = "" if windows else "signal.SIGBREAK = signal.SIGUSR1\n"
    script = f"import signal, sys\n{fake}from automail.__main__ import main\nsys.exit(main(['run']))\n"
    flags = subprocess.CREATE_NEW_PROCESS_GROUP if windows else 0  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        creationflags=flags,
    )
    try:
        assert proc.stdout is not None
        assert "engine running" in proc.stdout.readline()
        proc.send_signal(signal.CTRL_BREAK_EVENT if windows else signal.SIGUSR1)  # type: ignore[attr-defined]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- macOS: the desktop app is refused with a clear message, the CLI works ----------------------------
def test_desktop_app_is_refused_on_macos(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cli_main.main(["gui"]) == 1
    err = capsys.readouterr().err
    assert "does not run on macOS" in err and "automail run" in err and "Traceback" not in err
    assert cli_main.main(["company", "list"]) == 0
