"""GUI tests of the task, settings and SMTP dialogs found by trying them as a new user (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import SmtpSettings, Task
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]


def add_invoices(service: Service, win: Any, **kw: Any) -> None:
    smtp = SmtpSettings(host="smtp.firma.sk", username="info@firma.sk", sender="Firma <info@firma.sk>")
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC", **kw), password="pw")
    win.refresh()
    win.select_task("Invoices")


def open_smtp(win: Any) -> Any:
    win.add_task()
    win.task_dialog.open_settings()
    win.task_dialog.settings_dialog.open_smtp()
    return win.task_dialog.settings_dialog.smtp_dialog


def type_into(entry: Any, text: str) -> None:
    """Replace an entry's text and send the key release a keyboard would."""
    entry.delete(0, "end")
    entry.insert(0, text)
    entry.event_generate("<KeyRelease>")


# ---- item 4: GUI words, one number format, the slider follows the entry -----------------
def test_rate_error_speaks_of_the_gui_switch_and_formats_numbers_one_way(win: Any, service: Service) -> None:
    add_invoices(service, win)
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.set_rate(5000)
    dlg.ok()
    assert not dlg.closed
    text = dlg.rate_error.text
    assert "--" not in text, text
    assert text == (
        "5,000 e-mails per hour is outside 100…3,000 — choose a value from 100 to 3,000, or switch off Limit sending."
    )
    assert "3000" not in dlg.interval.cget("text")


def test_counts_are_shown_with_thousands_separators(win: Any, service: Service) -> None:
    add_invoices(service, win, rate_per_hour=1800, daily_cap=10000)
    assert win.tree.set("Invoices", "cadence") == "1,800/h, max 10,000/24 h"
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    assert dlg.rate_entry.get() == "1,800" and dlg.cap_entry.get() == "10,000"
    dlg.ok()  # the shown numbers are read back as they are shown
    assert dlg.closed
    task = service.task("Invoices")
    assert (task.rate_per_hour, task.daily_cap) == (1800, 10000)


def test_slider_follows_a_typed_or_pasted_rate(win: Any, service: Service, root: Any) -> None:
    add_invoices(service, win)
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    type_into(dlg.rate_entry, "2,500")
    pump(root)
    assert dlg.rate_slider.get() == 2500
    assert dlg.interval.cget("text") == "one e-mail every 1.4 s"
    dlg.rate_entry.delete(0, "end")
    dlg.rate_entry.insert(0, "1200")  # pasted: no key release
    pump(root)
    assert dlg.rate_slider.get() == 1200
    type_into(dlg.rate_entry, "5000")  # out of range: the slider goes to its end, the error comes on OK
    assert dlg.rate_slider.get() == 3000
    dlg.rate_slider.set(600)
    dlg._slider_moved(600)  # dragging writes the entry
    assert dlg.rate_entry.get() == "600"


# ---- item 6: every invalid SMTP field at once; no double full stop ---------------------
def test_smtp_dialog_shows_every_invalid_field_at_once(win: Any) -> None:
    dlg = open_smtp(win)
    dlg.host.set("")
    dlg.port.set("abc")
    dlg.sender_address.set("")
    dlg.reply_to.set("nobody")
    dlg.ok()
    assert not dlg.closed
    assert "empty" in dlg.host.error_text
    assert "not a number" in dlg.port.error_text
    assert dlg.sender_address.error_text == "The sender address is missing — enter one, e.g. info@example.com."
    assert "not a valid e-mail address" in dlg.reply_to.error_text
    dlg.host.set("smtp.firma.sk")
    dlg.port.set("587")
    dlg.sender_address.set("info@firma.sk")
    dlg.reply_to.set("")
    dlg.ok()
    assert dlg.closed


def test_smtp_dialog_login_in_clear_and_bad_sender_together(win: Any) -> None:
    dlg = open_smtp(win)
    dlg.host.set("smtp.firma.sk")
    dlg.username.set("info@firma.sk")
    dlg.sender_address.set("info@firma.sk\nBcc: x@evil.com")
    dlg.set_security("None")
    dlg.ok()
    assert "line break" in dlg.sender_address.error_text
    assert "in clear" in dlg.security_error.text
    assert "choose STARTTLS or SSL/TLS under Security" in dlg.security_error.text  # the dialog's words


def test_settings_hint_has_one_full_stop(win: Any) -> None:
    win.add_task()
    form = win.task_dialog
    form.name.set("Invoices")
    form.ok()
    assert form.settings_error.text == "The SMTP server and sender are not set up — click Settings…"
