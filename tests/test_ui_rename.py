"""Renaming a task (issue 11, item 8): in the form and with `task edit NAME --name NEW`; the keyring entry,
the outbox records and the lock move along, and a crash half-way leaves the old name working."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import keyring
import pytest

from automail.engine.service import Service
from automail.models import SmtpSettings, Task, TaskState
from tests.helpers import cli, new_message, setup_task
from tests.ui_support import COMPANY, pump

SMTP = SmtpSettings(host="smtp.firma.sk", username="info@firma.sk", sender="info@firma.sk")


def stored_password(task: str) -> str | None:
    return keyring.get_password("AutoMail", f"task:{task}")


def with_history(service: Service, name: str = "Invoices") -> None:
    """A task with a password, a persisted error state and one sent message."""
    service.add_task(Task(name, COMPANY, SMTP, computer="OFFICE-PC"), password="pw")
    box = service.outbox(COMPANY)
    box.enqueue([new_message(1)], time.time())
    claimed = box.claim(name, time.time())
    assert claimed is not None
    box.mark_sent(claimed.message.id, time.time(), "250 OK", {}, "acct", name)
    box.set_task_state(name, TaskState.ERROR, time.time(), "SMTP login rejected", "task_fatal")


def assert_named(service: Service, name: str, gone: str) -> None:
    assert [t.name for t in service.tasks()] == [name]
    assert stored_password(name) == "pw" and stored_password(gone) is None
    box = service.outbox(COMPANY)
    record = box.task_state(name)
    assert record is not None and record.state is TaskState.ERROR
    assert box.task_state(gone) is None
    assert service.sending_history(COMPANY, name).sent_total == 1
    (status,) = service.status()
    assert status.task == name and status.sent_last_hour == 1


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_rename_in_the_task_form(win: Any, service: Service, root: Any) -> None:
    pytest.importorskip("customtkinter")
    with_history(service)
    win.refresh()
    win.select_task("Invoices")
    win.edit_button.invoke()
    form = win.task_dialog
    pump(root)
    assert form.name.entry.cget("state") == "normal"
    form.name.set("Bills")
    form.computer.set("OFFICE-PC")
    form.ok_button.invoke()
    assert form.closed, form.general_error.text
    assert_named(service, "Bills", "Invoices")
    pump(root)
    assert win.tree.exists("Bills") and not win.tree.exists("Invoices")


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_rename_to_an_existing_name_is_refused_in_the_form(win: Any, service: Service, root: Any) -> None:
    pytest.importorskip("customtkinter")
    with_history(service)
    service.add_task(Task("Bills", COMPANY, SMTP, computer="OFFICE-PC"))
    win.refresh()
    win.select_task("Invoices")
    win.edit_task()
    form = win.task_dialog
    form.name.set("bills")
    form.ok()
    assert not form.closed
    assert "exists already" in form.name.error_text
    assert stored_password("Invoices") == "pw"


def test_rename_with_the_cli(automail_home: Path, smtp_server: Any) -> None:
    setup_task(smtp_server.port, name="Invoices")
    result = cli("task", "edit", "Invoices", "--name", "Bills", "--rate", "1200")
    assert "Task 'Bills' saved (renamed from 'Invoices')." in result.stdout
    listed = cli("task", "list", "--json").stdout
    assert '"name": "Bills"' in listed and "Invoices" not in listed and '"rate_per_hour": 1200' in listed
    refused = cli("task", "edit", "Bills", "--name", "", check=2)
    assert "name" in refused.stderr and "empty" in refused.stderr


def test_rename_is_refused_while_the_task_is_sending(automail_home: Path, service: Service) -> None:
    with_history(service)
    lock = service.lock_for("Invoices")
    lock.acquire()  # an engine runs it
    try:
        from automail.errors import InputError

        with pytest.raises(InputError, match="cannot be renamed while it is sending"):
            service.rename_task("Invoices", "Bills")
    finally:
        lock.release()
    assert_named(service, "Invoices", "Bills")


CRASH = """
import os, sys
sys.path.insert(0, {repo!r})
from automail.engine.service import Service
from automail.store.definitions import Definitions
original = Definitions.update_task
def crash_{when}(self, name, change):
    if {when!r} == "before":
        os._exit(9)  # killed before the definitions file is written
    result = original(self, name, change)
    os._exit(9)  # killed right after it
Definitions.update_task = crash_{when}
Service(home=__import__("pathlib").Path({home!r}), computer="OFFICE-PC", user="jana").rename_task("Invoices", "Bills")
"""


@pytest.mark.parametrize(("when", "name", "gone"), [("before", "Invoices", "Bills"), ("after", "Bills", "Invoices")])
def test_a_crash_half_way_leaves_one_working_name(
    automail_home: Path, service: Service, when: str, name: str, gone: str
) -> None:
    with_history(service)
    service.close()
    repo = str(Path(__file__).resolve().parent.parent)
    code = textwrap.dedent(CRASH.format(repo=repo, home=str(automail_home), when=when))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    again = Service(home=automail_home, computer="OFFICE-PC", user="jana")  # recovers at start
    try:
        assert_named(again, name, gone)
        assert not list((automail_home / "locks").glob("rename-*.json"))
    finally:
        again.close()
