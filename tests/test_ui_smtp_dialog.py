"""GUI tests of the SMTP dialog's certificate controls and the settings summary (real X server via pytest-xvfb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import Security, SmtpSettings
from automail.ui.settings_dialog import smtp_summary
from tests.test_ui_windows import fill_smtp

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]


def _open_smtp(win: Any) -> Any:
    win.add_task()
    win.task_dialog.open_settings()
    win.task_dialog.settings_dialog.open_smtp()
    return win.task_dialog.settings_dialog.smtp_dialog


def test_ca_file_field_hands_back_the_file(win: Any, service: Service, server_cert: Path) -> None:
    dlg = _open_smtp(win)
    fill_smtp(dlg)
    dlg.ca_file.set(str(server_cert))
    dlg.ok()
    assert dlg.closed
    smtp = win.task_dialog.settings_dialog.smtp
    assert smtp is not None and smtp.ca_file == str(server_cert.resolve()) and smtp.verify_certs


def test_a_missing_ca_file_is_refused_next_to_the_field(win: Any, tmp_path: Path) -> None:
    dlg = _open_smtp(win)
    fill_smtp(dlg)
    dlg.ca_file.set(str(tmp_path / "missing.pem"))
    dlg.ok()
    assert not dlg.closed
    assert "No such file" in dlg.ca_file.error_text
    assert win.task_dialog.settings_dialog.smtp is None


def test_summary_does_not_call_a_plain_connection_verified() -> None:
    def certificate(**kw: Any) -> str:
        rows = dict(smtp_summary(SmtpSettings(host="smtp.firma.sk", sender="info@firma.sk", **kw)))
        return rows["Certificate"]

    assert certificate(security=Security.NONE) == "none (no encryption)"
    assert certificate(security=Security.STARTTLS) == "verified"
    assert certificate(security=Security.TLS, verify_certs=False) == "not verified"
    assert certificate(security=Security.TLS, ca_file="/etc/firma/ca.pem") == "verified with ca.pem"
