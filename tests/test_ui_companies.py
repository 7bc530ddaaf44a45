"""Removing and re-adding companies (issue 11, item 9), in the window and with the CLI."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import SmtpSettings, Task
from tests.helpers import cli, new_message
from tests.ui_support import COMPANY, pump

SMTP = SmtpSettings(host="smtp.firma.sk", sender="info@firma.sk")
TODAY = dt.date.today().isoformat()


def outbox_path(service: Service) -> Path:
    return Path(service.definitions.company(COMPANY).outbox_path)


def three_queued(service: Service) -> Path:
    service.add_task(Task("Invoices", COMPANY, SMTP, computer="OFFICE-PC"), password="pw")
    service.outbox(COMPANY).enqueue([new_message(i) for i in range(3)], time.time())
    return outbox_path(service)


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_remove_company_asks_with_the_queued_count_and_keeps_the_outbox(win: Any, service: Service, root: Any) -> None:
    path = three_queued(service)
    win.refresh()
    assert win.remove_company_button.cget("state") == "normal"
    win.remove_company_button.invoke()
    text = win.confirm.winfo_children()[0].winfo_children()[0].cget("text")
    assert "3 message(s) still to send will not be sent." in text
    assert "Invoices" in text and "renamed with today's date" in text
    win.confirm.cancel()
    assert [c.name for c in service.companies()] == [COMPANY]
    win.remove_company()
    win.confirm.ok_button.invoke()
    pump(root)
    assert service.companies() == [] and service.tasks() == []
    kept = path.with_name(f"{path.stem}.removed-{TODAY}.sqlite3")
    assert kept.exists() and not path.exists()
    assert str(kept) in win.status_bar.cget("text")
    assert win.company is None and win.remove_company_button.cget("state") == "disabled"


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_remove_company_is_refused_while_its_task_sends(win: Any, service: Service) -> None:
    three_queued(service)
    lock = service.lock_for("Invoices")
    lock.acquire()  # an engine runs the task
    try:
        win.remove_company()
        assert "Stop the task(s) Invoices first" in win.status_bar.cget("text")
        with pytest.raises(Exception, match="cannot be removed while"):
            service.remove_company(COMPANY)
    finally:
        lock.release()
    assert [c.name for c in service.companies()] == [COMPANY]


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
@pytest.mark.parametrize("reuse", [True, False])
def test_re_adding_a_name_whose_outbox_exists_asks(win: Any, service: Service, root: Any, reuse: bool) -> None:
    path = outbox_path(service)
    service.outbox(COMPANY).enqueue([new_message(i) for i in range(3)], time.time())
    service.definitions.remove_company(COMPANY)  # as after an older release's removal: the file stays
    service.close()
    win.refresh()
    win.add_company()
    dlg = win.company_dialog
    dlg.name.set(COMPANY)
    dlg.ok_button.invoke()
    assert not dlg.closed and dlg.reuse_dialog is not None
    text = dlg.reuse_dialog.body.winfo_children()[0].cget("text")
    assert "3 messages, 3 of them still to send" in text and str(path) in text
    if reuse:
        dlg.reuse_dialog.ok_button.invoke()
    else:
        dlg.reuse_dialog.cancel_button.invoke()
    assert dlg.closed
    assert service.outbox(COMPANY).count() == (3 if reuse else 0)
    assert path.with_name(f"{path.stem}.removed-{TODAY}.sqlite3").exists() is not reuse


def test_cli_remove_and_re_add(automail_home: Path) -> None:
    cli("company", "add", "Firma")
    svc = Service(home=automail_home)
    svc.outbox("Firma").enqueue([new_message(i) for i in range(2)], time.time())
    path = Path(svc.definitions.company("Firma").outbox_path)
    svc.close()
    refused = cli("company", "remove", "Firma", check=2)
    assert "2 message(s) still to send" in refused.stderr and "--yes" in refused.stderr
    done = cli("company", "remove", "Firma", "--yes")
    kept = path.with_name(f"Firma.removed-{TODAY}.sqlite3")
    assert str(kept) in done.stdout and kept.exists()

    cli("company", "add", "Firma")  # the old file was set aside: no question
    cli("company", "remove", "Firma")  # empty: no --yes needed
    kept.rename(path)  # an outbox back at the company's place (e.g. restored from a backup)
    asked = cli("company", "add", "Firma", check=2)
    assert "exists already" in asked.stderr and "--reuse-outbox" in asked.stderr and "2 still to send" in asked.stderr
    assert "(reused)" in cli("company", "add", "Firma", "--reuse-outbox").stdout
    assert '"status": "queued"' in cli("outbox", "--company", "Firma", "--json").stdout


def run_in_terminal(args: list[str], answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal (as a person would), type ``answer`` at its question."""
    import os
    import pty
    import select
    import subprocess
    import sys

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "automail", *args], stdin=child, stdout=child, stderr=child)
    os.close(child)
    out, answered, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"? " in out:
                os.write(main, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(main)
    return code, out.decode(errors="replace")


def test_cli_asks_on_a_terminal(automail_home: Path) -> None:
    cli("company", "add", "Firma")
    svc = Service(home=automail_home)
    svc.outbox("Firma").enqueue([new_message(1)], time.time())
    path = Path(svc.definitions.company("Firma").outbox_path)
    svc.close()
    code, out = run_in_terminal(["company", "remove", "Firma"], "n")
    assert code == 2 and "'Firma' has 1 message(s) still to send. Remove it (y/N)?" in out
    code, out = run_in_terminal(["company", "remove", "Firma"], "y")
    assert code == 0 and "removed" in out
    path.with_name(f"Firma.removed-{TODAY}.sqlite3").rename(path)
    code, out = run_in_terminal(["company", "add", "Firma"], "r")
    assert "exists already" in out and "Reuse it with its messages (r), start empty (n), or cancel (c)?" in out
    assert code == 0 and "(reused)" in out
