"""GUI tests of the main window, the task form, the settings and SMTP dialogs (real X server via pytest-xvfb)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keyring
import pytest

from automail.engine.service import Service
from automail.models import EngineEvent, EventKind, SmtpSettings, Task, TaskState
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]


def smtp_settings(**kw: Any) -> SmtpSettings:
    base = dict(host="smtp.firma.sk", username="info@firma.sk", sender="Firma <info@firma.sk>")
    base.update(kw)
    return SmtpSettings(**base)  # type: ignore[arg-type]


def fill_smtp(dlg: Any, **values: str) -> None:
    """Type into the SMTP dialog's fields."""
    defaults = {
        "host": "smtp.firma.sk",
        "username": "info@firma.sk",
        "password": "S3cret-pass!",
        "sender_name": "Firma s.r.o.",
        "sender_address": "info@firma.sk",
        "reply_to": "",
    }
    defaults.update(values)
    for name, value in defaults.items():
        getattr(dlg, name).set(value)


def stored_password(task: str) -> str | None:
    return keyring.get_password("AutoMail", f"task:{task}")


# ---- companies ----------------------------------------------------------------------
def test_add_company_dialog_defaults_outbox_to_data_folder(win: Any, service: Service, root: Any) -> None:
    win.add_company()
    dlg = win.company_dialog
    pump(root)
    dlg.name.set("Druhá firma")
    assert dlg.location.get() == str(service.home / "outbox" / "Druhá_firma.sqlite3")
    dlg.ok()
    assert dlg.closed
    assert [c.name for c in service.companies()] == ["Druhá firma", COMPANY]
    assert win.company == "Druhá firma"
    assert win.company_menu.get() == "Druhá firma"


def test_add_company_duplicate_shows_error(win: Any, service: Service) -> None:
    win.add_company()
    dlg = win.company_dialog
    dlg.name.set(COMPANY)
    dlg.ok()
    assert not dlg.closed
    assert "exists already" in dlg.name.error_text
    assert len(service.companies()) == 1


# ---- adding a task through the widgets ---------------------------------------------
def test_add_task_through_form_settings_and_smtp_dialog(win: Any, service: Service, root: Any) -> None:
    win.add_task()
    form = win.task_dialog
    pump(root)
    assert form.computer.get() == "OFFICE-PC"
    form.name.set("Invoices")
    form.ok()  # no settings yet: refused with a clear message next to Settings…
    assert not form.closed
    assert "not set up" in form.settings_error.text
    assert service.tasks() == []

    form.settings_button.invoke()
    settings = form.settings_dialog
    pump(root)
    assert settings.title() == "Settings of automatic task 'Automatic e-mail sending'"
    settings.smtp_button.invoke()
    smtp = settings.smtp_dialog
    pump(root)
    fill_smtp(smtp, reply_to="uctovnictvo@firma.sk")
    smtp.set_security("SSL/TLS")
    assert smtp.port.get() == "465"
    smtp.ok_button.invoke()
    assert smtp.closed

    settings.tabs.set("Other")
    settings.set_rate(1500)
    assert settings.rate_slider.get() == 1500
    settings.cap_switch.select()
    settings._cap_toggled()
    settings.cap_entry.insert(0, "5000")
    settings.retry.set("1 min, 10 min, 2 h")
    settings.tags.set("invoices, urgent")
    settings.windows.set("Mon-Fri 8:00-17:00; Sat 09:00-12:00")
    settings.ok_button.invoke()
    assert settings.closed
    assert service.tasks() == []  # nothing stored before the form's OK
    assert stored_password("Invoices") is None

    form.user.set("jana")
    form.ok_button.invoke()
    assert form.closed
    task = service.definitions.task("Invoices")
    assert task.company == COMPANY
    assert task.computer == "OFFICE-PC" and task.user == "jana"
    assert task.smtp.host == "smtp.firma.sk" and task.smtp.port == 465 and task.smtp.security == "tls"
    assert task.smtp.sender == '"Firma s.r.o." <info@firma.sk>'
    assert task.smtp.reply_to == "uctovnictvo@firma.sk"
    assert task.rate_per_hour == 1500 and task.daily_cap == 5000
    assert task.retry_delays == (60, 600, 7200)
    assert task.tags == ("invoices", "urgent")
    assert task.windows == ("Mon-Fri 08:00-17:00", "Sat 09:00-12:00")
    assert stored_password("Invoices") == "S3cret-pass!"
    pump(root)
    assert win.tree.exists("Invoices")
    assert win.tree.set("Invoices", "type") == "Automatic e-mail sending"


def test_cancel_saves_nothing(win: Any, service: Service) -> None:
    win.add_task()
    form = win.task_dialog
    form.name.set("Invoices")
    form.open_settings()
    form.settings_dialog.open_smtp()
    fill_smtp(form.settings_dialog.smtp_dialog)
    form.settings_dialog.smtp_dialog.ok()
    form.settings_dialog.ok()
    form.cancel_button.invoke()
    assert form.closed
    assert service.tasks() == []
    assert stored_password("Invoices") is None


def add_invoices(service: Service, win: Any, password: str = "pw", select: bool = False) -> None:
    """The task "Invoices" of this company on OFFICE-PC, shown in the window (and selected)."""
    service.add_task(Task("Invoices", COMPANY, smtp_settings(), computer="OFFICE-PC"), password=password)
    win.refresh()
    if select:
        win.select_task("Invoices")


# ---- invalid input ------------------------------------------------------------------
def test_rate_50_blocks_ok_and_shows_the_error(win: Any, service: Service) -> None:
    add_invoices(service, win)
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.set_rate(50)
    assert "choose 100" in str(dlg.interval.cget("text"))
    dlg.ok()
    assert not dlg.closed
    assert "50 e-mails per hour is outside 100…3,000" in dlg.rate_error.text
    assert dlg.tabs.get() == "Other"
    assert service.task("Invoices").rate_per_hour == 1000


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sender_address", "not-an-address", "is not a valid e-mail address"),
        ("sender_address", "info@firma.sk\r\nBcc: x@evil.com", "line break"),
        ("sender_name", "Firma\nBcc: x@evil.com", "line break"),
        ("host", "smtp.firma.sk\r\nX", "line break"),
        ("reply_to", "nobody", "not a valid e-mail address"),
        ("port", "abc", "not a number"),
    ],
)
def test_invalid_smtp_values_block_ok(win: Any, service: Service, field: str, value: str, expected: str) -> None:
    win.add_task()
    form = win.task_dialog
    form.open_settings()
    form.settings_dialog.open_smtp()
    dlg = form.settings_dialog.smtp_dialog
    fill_smtp(dlg)
    getattr(dlg, field).set(value)
    dlg.ok()
    assert not dlg.closed
    assert expected in getattr(dlg, field).error_text
    assert form.settings_dialog.smtp is None  # nothing handed back half-way


def test_login_without_encryption_is_refused_next_to_security(win: Any) -> None:
    win.add_task()
    win.task_dialog.open_settings()
    settings = win.task_dialog.settings_dialog
    settings.open_smtp()
    dlg = settings.smtp_dialog
    fill_smtp(dlg)
    dlg.set_security("None")
    assert dlg.port.get() == "25"
    dlg.ok()
    assert not dlg.closed
    assert "in clear" in dlg.security_error.text


def test_port_follows_security_until_typed(win: Any) -> None:
    win.add_task()
    win.task_dialog.open_settings()
    win.task_dialog.settings_dialog.open_smtp()
    dlg = win.task_dialog.settings_dialog.smtp_dialog
    assert dlg.port.get() == "587"
    dlg.set_security("SSL/TLS")
    assert dlg.port.get() == "465"
    dlg.port.set("2525")
    dlg.set_security("STARTTLS")
    assert dlg.port.get() == "2525"


def test_bad_retry_schedule_and_empty_name(win: Any, service: Service) -> None:
    win.add_task()
    form = win.task_dialog
    form.open_settings()
    settings = form.settings_dialog
    settings.open_smtp()
    fill_smtp(settings.smtp_dialog)
    settings.smtp_dialog.ok()
    settings.retry.set("1 min, soon")
    settings.ok()
    assert not settings.closed
    assert "'soon' is not a duration" in settings.retry.error_text
    settings.retry.set("60, 300")
    settings.windows.set("Mon-Fri 08:00-17:00; weekends")
    settings.ok()
    assert not settings.closed and settings.tabs.get() == "Other"
    assert "'weekends' has no time range like 08:00-17:00" in settings.windows.error_text
    settings.windows.set("")
    settings.ok()
    assert settings.closed
    form.ok()  # name empty
    assert "empty" in form.name.error_text
    assert service.tasks() == []


# ---- the task form ----------------------------------------------------------------
def test_form_notes_a_task_of_another_computer(win: Any) -> None:
    win.add_task()
    form = win.task_dialog
    assert form.note_text == ""
    form.computer.set("SERVER-2")
    assert "will not run on this computer" in form.note_text


def test_edit_task_changes_computer(win: Any, service: Service, root: Any) -> None:
    add_invoices(service, win, select=True)
    win.edit_button.invoke()
    form = win.task_dialog
    pump(root)
    form.computer.set("SERVER-2")
    form.ok()
    assert form.closed
    assert service.task("Invoices").computer == "SERVER-2"
    assert stored_password("Invoices") == "pw"


# ---- settings of an existing task --------------------------------------------------
def test_settings_change_rate_preset_and_password(win: Any, service: Service, root: Any) -> None:
    add_invoices(service, win, "old", select=True)
    win.settings_button.invoke()
    dlg = win.settings_dialog
    pump(root)
    dlg.set_rate(3000)
    assert dlg.interval.cget("text") == "one e-mail every 1.2 s"
    dlg.apply_preset("Microsoft 365 — 1,800/h, 10,000/day")
    assert dlg.rate_entry.get() == "1,800" and dlg.cap_entry.get() == "10,000"
    dlg.open_smtp()
    dlg.smtp_dialog.password.set("new-password")
    dlg.smtp_dialog.show_password.toggle()
    assert dlg.smtp_dialog.password.entry.cget("show") == ""
    dlg.smtp_dialog.ok()
    assert stored_password("Invoices") == "old"  # not before the final OK
    dlg.ok()
    assert dlg.closed
    task = service.task("Invoices")
    assert (task.rate_per_hour, task.daily_cap) == (1800, 10000)
    assert task.secret_rev == 1
    assert stored_password("Invoices") == "new-password"


def test_unlimited_sending(win: Any, service: Service) -> None:
    add_invoices(service, win)
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.limit.deselect()
    dlg._limit_toggled()
    assert "no limit" in dlg.interval.cget("text")
    dlg.ok()
    assert service.task("Invoices").rate_per_hour is None


def test_test_connection_and_test_email(win: Any, service: Service, root: Any, smtp_server: Any) -> None:
    smtp = SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="none", sender="info@firma.sk")  # type: ignore[arg-type]
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC"))
    win.refresh()
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.test_button.invoke()
    pump(root, lambda: dlg.result_text.startswith(("✔", "✖")), timeout=15)
    assert dlg.result_text.startswith("✔ Connected to 127.0.0.1"), dlg.result_text
    dlg.ask_test_email()
    ask = dlg.ask_dialog
    ask.field.set("not an address")
    ask.ok()
    assert "not a valid e-mail address" in ask.field.error_text
    ask.field.set("boss@firma.sk")
    ask.ok()
    assert ask.closed
    pump(root, lambda: dlg.result_text.startswith(("✔", "✖")), timeout=15)
    assert "accepted" in dlg.result_text, dlg.result_text
    assert len(smtp_server.wait_for(1, timeout=5)) == 1


def test_test_connection_failure_shows_error(win: Any, service: Service, root: Any) -> None:
    smtp = SmtpSettings(host="127.0.0.1", port=1, security="none", sender="info@firma.sk", timeout=3)  # type: ignore[arg-type]
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC"))
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.test_connection()
    pump(root, lambda: dlg.result_text.startswith(("✔", "✖")), timeout=15)
    assert dlg.result_text.startswith("✖ cannot reach the SMTP server 127.0.0.1:1"), dlg.result_text
    # A one-off test: it says what to check and to test again, not that AutoMail keeps retrying.
    assert "keeps retrying" not in dlg.result_text and dlg.result_text.endswith("then test again"), dlg.result_text


@pytest.fixture
def silent_server() -> Any:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel's backlog) but never greets."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def open_silent_test(win: Any, service: Service, port: int) -> Any:
    smtp = SmtpSettings(host="127.0.0.1", port=port, security="none", sender="info@firma.sk")  # type: ignore[arg-type]
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC"))  # the task's timeout: 30 s
    win.open_settings("Invoices")
    dlg = win.settings_dialog
    dlg.test_button.invoke()
    return dlg


@pytest.mark.timeout(60)
def test_test_connection_to_a_server_that_never_greets_gives_up_after_10_s(
    win: Any, service: Service, root: Any, silent_server: int
) -> None:
    started = time.monotonic()
    dlg = open_silent_test(win, service, silent_server)
    assert dlg.result_text.startswith(f"Testing 127.0.0.1:{silent_server}"), dlg.result_text
    pump(root, lambda: dlg.result_text.startswith(("✔", "✖")), timeout=20)
    assert 9 < time.monotonic() - started < 14
    assert dlg.result_text.startswith(f"✖ the SMTP server 127.0.0.1:{silent_server} did not answer within 10 s")
    assert "keeps retrying" not in dlg.result_text
    assert not dlg.cancel_test_button.winfo_ismapped() and dlg.test_button.cget("state") == "normal"


def test_test_connection_can_be_cancelled(win: Any, service: Service, root: Any, silent_server: int) -> None:
    dlg = open_silent_test(win, service, silent_server)
    pump(root, lambda: dlg.cancel_test_button.winfo_ismapped())
    assert dlg.test_button.cget("state") == "disabled"
    dlg.cancel_test_button.invoke()
    assert dlg.result_text == "Test cancelled."
    assert not dlg.cancel_test_button.winfo_ismapped() and dlg.test_button.cget("state") == "normal"
    time.sleep(0.5)  # the worker notices the cancel within 0.1 s and answers …
    pump(root)
    assert dlg.result_text == "Test cancelled."  # … but its answer does not overwrite this
    jobs = [t for t in threading.enumerate() if t.name == "automail-ui-job"]
    assert not any(t.is_alive() for t in jobs)  # the test really stopped, it was not just hidden


# ---- main window: remove, start/stop, server, errors, refresh -----------------------
def test_remove_task_asks_first(win: Any, service: Service) -> None:
    add_invoices(service, win, select=True)
    win.remove_button.invoke()
    win.confirm.cancel()
    assert service.tasks()
    win.remove_task()
    win.confirm.ok_button.invoke()
    assert service.tasks() == []
    assert stored_password("Invoices") is None
    assert not win.tree.exists("Invoices")


def test_start_stop_task_and_server_reach_the_engine(win: Any, service: Service, root: Any) -> None:
    add_invoices(service, win, select=True)
    win.start_button.invoke()
    assert service.task("Invoices").enabled
    assert win.stop_button.cget("state") == "normal"
    win.stop_button.invoke()
    assert not service.task("Invoices").enabled

    assert win.server_button.cget("text") == "Start server"
    win.server_button.invoke()
    assert service.engine_running
    assert win.server_button.cget("text") == "Stop server"
    win.server_button.invoke()
    pump(root, lambda: not win._stopping, timeout=20)
    assert not service.engine_running
    assert win.server_button.cget("text") == "Start server"


def test_engine_error_shows_in_error_panel_with_fix(win: Any, service: Service, root: Any) -> None:
    service.add_task(Task("Invoices", COMPANY, smtp_settings(), computer="OFFICE-PC"), password="pw")
    reason = (
        "SMTP login rejected by smtp.firma.sk:587 for info@firma.sk: 535 5.7.8 bad credentials"
        " — open Settings › Basic and check the user name and password"
    )
    service.outbox(COMPANY).set_task_state("Invoices", TaskState.ERROR, time.time(), reason, "task_fatal", 535)
    win.on_event(EngineEvent(EventKind.STATE_CHANGED, "Invoices", COMPANY, state=TaskState.ERROR, detail=reason))
    pump(root, lambda: bool(win.error_panel.rows), timeout=10)
    assert win.error_panel.winfo_ismapped()
    ((task, text),) = win.error_panel.rows
    assert task == "Invoices"
    assert "SMTP login rejected — open Settings › Basic and check the user name and password" in text
    assert win.tree.set("Invoices", "state") == "Error: SMTP login rejected"


def test_hidden_window_does_not_poll(win: Any, root: Any) -> None:
    assert win._tick_job is not None
    win.hide()
    assert win._tick_job is None
    before = win.refresh_count
    win.on_event(EngineEvent(EventKind.SENT, "x", COMPANY))
    pump(root)
    assert win.refresh_count == before and win._dirty
    win.show()
    assert win._tick_job is not None and win.refresh_count == before + 1


def test_explain_maps_engine_errors_to_plain_words() -> None:
    from automail.ui.error_panel import explain

    assert explain("secure connection (TLS) to a:587 failed: wrong version")[0] == "Secure connection (TLS) failed"
    assert explain("cannot reach the SMTP server a:25: refused")[0] == "The SMTP server cannot be reached"
    assert explain("no password is stored for task 'x' (u)")[0] == "No password saved for this task"
    assert explain("something odd — do this") == ("something odd", "do this")


def test_quit_and_log_folder_buttons(root: Any, service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from automail.ui import main_window

    quits: list[bool] = []
    w = main_window.MainWindow(root, service, on_quit=lambda: quits.append(True))
    opened: list[Path] = []
    import automail.ui.tray as tray

    monkeypatch.setattr(tray, "open_folder", opened.append)
    w.log_button.invoke()
    assert opened == [service.home / "logs"]
    w.quit_button.invoke()
    assert quits == [True]


# ---- end to end with the real engine ------------------------------------------------
def _drive(root: Any, win: Any, service: Service) -> Callable[[], None]:
    """Forward engine events to the window the way the app's bridge does: queue → Tk thread."""
    import queue

    events: queue.Queue[EngineEvent] = queue.Queue()
    service.subscribe(events.put)

    def drain() -> None:
        while not events.empty():
            win.on_event(events.get_nowait())

    return drain


def test_window_starts_sending_through_the_engine(win: Any, service: Service, root: Any, smtp_server: Any) -> None:
    smtp = SmtpSettings(host=smtp_server.host, port=smtp_server.port, security="none", sender="info@firma.sk")  # type: ignore[arg-type]
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC", rate_per_hour=3000))
    service.send(COMPANY, to=["a@example.com"], subject="One", text="1")
    service.send(COMPANY, to=["b@example.com"], subject="Two", text="2")
    drain = _drive(root, win, service)
    win.refresh()
    win.select_task("Invoices")
    win.start_button.invoke()
    win.server_button.invoke()
    assert service.engine_running
    assert len(smtp_server.wait_for(2, timeout=15)) == 2

    def sent_shown() -> bool:
        drain()
        return win.tree.exists("Invoices") and win.tree.set("Invoices", "sent") == "2"

    pump(root, sent_shown, timeout=10)
    assert win.tree.set("Invoices", "state") in ("Running", "Waiting")
    win.server_button.invoke()
    pump(root, lambda: not win._stopping, timeout=20)
    assert not service.engine_running


def test_wrong_password_lands_in_the_error_panel(win: Any, service: Service, root: Any, smtp_server_auth: Any) -> None:
    smtp = SmtpSettings(
        host=smtp_server_auth.host,
        port=smtp_server_auth.port,
        security="none",  # type: ignore[arg-type]
        username="info@firma.sk",
        sender="info@firma.sk",
    )
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC", enabled=True), password="wrong")
    service.send(COMPANY, to=["a@example.com"], subject="One", text="1")
    drain = _drive(root, win, service)
    win.start_server()

    def error_shown() -> bool:
        drain()
        return bool(win.error_panel.rows)

    pump(root, error_shown, timeout=15)
    ((task, text),) = win.error_panel.rows
    assert task == "Invoices" and "SMTP login rejected — open Settings › Basic" in text
    assert win.tree.set("Invoices", "state") == "Error: SMTP login rejected"
    assert "error" in win.tree.item("Invoices", "tags")
    win.stop_server()
    pump(root, lambda: not win._stopping, timeout=20)
