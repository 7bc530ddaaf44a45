"""Issue 11, item 10: tasks that would send the same messages are warned about (form and CLI), and a task
shows "Connecting…" until its server has let it in, "Running" only after."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import SmtpSettings, Task
from tests.helpers import cli, setup_task
from tests.ui_support import COMPANY, pump


def smtp(port: int = 587, **kw: Any) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, security="none", sender="info@firma.sk", **kw)  # type: ignore[arg-type]


# ---- overlapping scopes ----------------------------------------------------------------
@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_task_form_warns_when_two_tasks_would_send_the_same_messages(win: Any, service: Service, root: Any) -> None:
    pytest.importorskip("customtkinter")
    service.add_task(Task("Invoices", COMPANY, smtp(), computer="OFFICE-PC"))
    win.refresh()
    win.add_task()
    form = win.task_dialog
    pump(root)
    form.name.set("Reminders")
    form.computer.set("OFFICE-PC")
    assert "'Invoices' of Firma s.r.o. on OFFICE-PC also send the same messages" in form.overlap_text
    assert "different scope tags" in form.overlap_text
    form.computer.set("SERVER-2")  # another computer: no race here
    assert form.overlap_text == ""
    form.computer.set("OFFICE-PC")
    service.edit_task("Invoices", lambda t: replace(t, tags=("invoices",)))
    form.open_settings()
    settings = form.settings_dialog
    settings.open_smtp()
    dlg = settings.smtp_dialog
    dlg.host.set("127.0.0.1")
    dlg.sender_address.set("info@firma.sk")
    dlg.ok()
    settings.tags.set("reminders")
    settings.ok()
    assert form.overlap_text == ""  # separate scopes
    form.open_settings()
    form.settings_dialog.tags.set("reminders, invoices")
    form.settings_dialog.ok()
    assert "also send the messages tagged invoices" in form.overlap_text
    form.ok()  # a warning, not a refusal
    assert form.closed
    assert [t.name for t in service.tasks()] == ["Invoices", "Reminders"]


def test_cli_warns_about_tasks_sending_the_same_messages(automail_home: Path) -> None:
    setup_task(2525, name="Invoices")
    added = cli("task", "add", "Reminders", "--company", "Firma", "--host", "127.0.0.1", "--port", "2525",
                "--security", "none", "--sender", "info@firma.sk")  # fmt: skip
    assert "Warning: task(s) 'Invoices' of Firma on" in added.stderr and "--tag" in added.stderr
    edited = cli("task", "edit", "Reminders", "--tag", "reminders")
    assert "Warning" in edited.stderr  # Invoices still takes every message
    quiet = cli("task", "edit", "Invoices", "--tag", "invoices")
    assert "Warning" not in quiet.stderr


# ---- Connecting… until logged in ----------------------------------------------------------
@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never greets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for s in held:
        s.close()
    server.close()


def _drain(win: Any, service: Service) -> Any:
    import queue

    events: queue.Queue[Any] = queue.Queue()
    service.subscribe(events.put)

    def drain() -> None:
        while not events.empty():
            win.on_event(events.get_nowait())

    return drain


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_task_shows_connecting_until_the_server_answers(
    win: Any, service: Service, root: Any, silent_server: int
) -> None:
    pytest.importorskip("customtkinter")
    service.add_task(Task("Invoices", COMPANY, smtp(silent_server, timeout=30), computer="OFFICE-PC", enabled=True))
    drain = _drain(win, service)
    win.start_server()
    try:
        pump(root, lambda: (drain(), win.tree.set("Invoices", "state") == "Connecting…")[1], timeout=10)
        time.sleep(1.5)  # a moment later it still has no greeting
        drain()
        pump(root)
        assert win.tree.set("Invoices", "state") == "Connecting…"
    finally:
        win.stop_server()
        pump(root, lambda: not win._stopping, timeout=40)


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_a_task_with_nothing_to_send_logs_in_before_it_says_running(
    win: Any, service: Service, root: Any, smtp_server_auth: Any
) -> None:
    pytest.importorskip("customtkinter")
    good = smtp(smtp_server_auth.port, username="info@firma.sk")
    service.add_task(
        Task("Good", COMPANY, good, computer="OFFICE-PC", enabled=True, tags=("a",)), password="S3cret-pass!"
    )
    service.add_task(Task("Broken", COMPANY, good, computer="OFFICE-PC", enabled=True, tags=("b",)), password="wrong")
    drain = _drain(win, service)
    win.start_server()
    try:

        def settled() -> bool:
            drain()
            states = {n: win.tree.set(n, "state") for n in ("Good", "Broken") if win.tree.exists(n)}
            return states.get("Good") == "Running" and states.get("Broken", "").startswith("Error")

        pump(root, settled, timeout=20)  # no message queued: the broken task never showed "Running"
        assert win.tree.set("Broken", "state") == "Error: SMTP login rejected"
    finally:
        win.stop_server()
        pump(root, lambda: not win._stopping, timeout=40)
