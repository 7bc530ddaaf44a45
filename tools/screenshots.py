"""Produce docs/screenshots/*.png of every AutoMail window, on a sample company (run under Xvfb).

    xvfb-run -s "-screen 0 1280x800x24" python tools/screenshots.py

Uses a temporary AUTOMAIL_HOME and an in-memory keyring: nothing of the user's data is touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keyring

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
sys.path.insert(0, str(ROOT))  # this checkout's automail, whatever `pip install -e` points at


def sample_service(home: Path):  # type: ignore[no-untyped-def]
    """A company with three tasks (one in error) and a few thousand messages in all states."""
    from automail.engine.service import Service
    from automail.models import SmtpSettings, Task, TaskState
    from automail.store.outbox import NewMessage

    service = Service(home=home, computer="OFFICE-PC", user="jana")
    service.add_company("Firma s.r.o.")
    service.add_company("Druhá firma a.s.")
    smtp = SmtpSettings(
        host="smtp.office365.com",
        port=587,
        username="faktury@firma.sk",
        sender="Firma s.r.o. <faktury@firma.sk>",
        reply_to="uctovnictvo@firma.sk",
    )
    service.add_task(
        Task(
            "Invoices",
            "Firma s.r.o.",
            smtp,
            computer="OFFICE-PC",
            rate_per_hour=1800,
            daily_cap=10000,
            tags=("invoices",),
        ),
        password="secret",
    )
    service.add_task(
        Task("Reminders", "Firma s.r.o.", smtp, computer="OFFICE-PC", rate_per_hour=600, tags=("reminders",)),
        password="secret",
    )
    service.add_task(
        Task(
            "Newsletter", "Firma s.r.o.", smtp, computer="SERVER-2", user="", rate_per_hour=None, tags=("newsletter",)
        ),
        password="secret",
    )
    service.start_task("Invoices")
    box = service.outbox("Firma s.r.o.")
    now = time.time()
    send_history(box, now, smtp.account_key)
    subjects = ["Invoice {n}/2026", "Payment reminder {n}", "November newsletter"]
    tags = ["invoices", "reminders", "newsletter"]
    messages = []
    for n in range(1, 2401):
        kind = n % 3
        to = f"client{n}@example.com"
        raw = (
            f"From: Firma s.r.o. <faktury@firma.sk>\r\nTo: {to}\r\nSubject: {subjects[kind].format(n=n)}\r\n"
            f"Message-ID: <{n}@firma.sk>\r\n\r\nDear customer,\r\n\r\nplease find invoice {n} attached.\r\n"
        ).encode()
        messages.append(
            NewMessage(
                raw, (to,), "Firma s.r.o. <faktury@firma.sk>", subjects[kind].format(n=n), f"<{n}@firma.sk>", tags[kind]
            )
        )
    box.enqueue(messages, now - 3000)
    box.set_task_state("Invoices", TaskState.RUNNING, now)
    box.set_task_state(
        "Reminders",
        TaskState.ERROR,
        now,
        "SMTP login rejected by smtp.office365.com:587 for faktury@firma.sk: 535 5.7.3 Authentication "
        "unsuccessful — open Settings › Basic and check the user name and password",
        "task_fatal",
        535,
    )
    other = SmtpSettings(
        host="mail.druha.sk",
        port=465,
        security="tls",  # type: ignore[arg-type]
        username="info@druha.sk",
        sender="info@druha.sk",
    )
    service.add_task(Task("Orders", "Druhá firma a.s.", other, computer="OFFICE-PC", enabled=True), password="secret")
    service.outbox("Druhá firma a.s.").set_task_state(
        "Orders",
        TaskState.ERROR,
        now,
        "cannot reach the SMTP server mail.druha.sk:465: connection timed out — check the network and the "
        "server name in Settings › Basic; AutoMail keeps retrying",
        "task_retry",
    )
    return service


# Invoices sent per hour over the last 24 hours (oldest first): quiet at night, up to the 1,800/h limit by day.
HISTORY = [0, 0, 0, 0, 0, 0, 120, 640, 1210, 1780, 1650, 1420, 930, 0, 0, 0, 0, 0, 0, 0, 0, 210, 980, 240]


def send_history(box, now: float, account: str) -> None:  # type: ignore[no-untyped-def]
    """Queue and send the Invoices of the last 24 hours (through the outbox, as the engine does)."""
    from automail.clock import hour_start
    from automail.store.outbox import NewMessage

    start = hour_start(now) - 23 * 3600
    total = sum(HISTORY)
    raw = b"From: faktury@firma.sk\r\nSubject: Invoice\r\n\r\nSee the attachment.\r\n"
    box.enqueue(
        [
            NewMessage(raw, (f"c{i}@example.com",), "faktury@firma.sk", f"Invoice {i}", f"<h{i}@firma.sk>", "invoices")
            for i in range(total)
        ],
        start - 3600,
    )
    for hour, count in enumerate(HISTORY):
        end = min(start + (hour + 1) * 3600, now)
        claimed = box.claim_batch("Invoices", start + hour * 3600, ("invoices",), "faktury@firma.sk", count)
        for i, c in enumerate(claimed):
            at = start + hour * 3600 + (end - start - hour * 3600) * i / count
            if i % 40 == 7:
                box.mark_failed(c.message.id, at, 550, "5.1.1 mailbox unavailable", account, "Invoices")
            else:
                box.mark_sent(c.message.id, at, "250 2.0.0 OK queued as 4F2A", {}, account, "Invoices")


def sample_mailing_files(tmp: Path) -> Path:
    """A template, a workbook of customers with a PDF each: what the New mailing screenshot shows."""
    import openpyxl

    folder = tmp / "Faktury 11-2026"
    folder.mkdir()
    (folder / "invoice.txt").write_text(
        "Dobrý deň {{ oslovenie }},\n\nv prílohe Vám posielame faktúru č. {{ cislo }} na sumu {{ suma }} EUR "
        "so splatnosťou {{ splatnost }}.\n\nS pozdravom\nFirma s.r.o.\n",
        encoding="utf-8",
    )
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["E-mail", "Meno zákazníka", "oslovenie", "cislo", "suma", "splatnost", "Príloha"])
    people = [
        ("jan.novak@example.sk", "Ján Novák", "pán Novák"),
        ("eva.mala@example.sk", "Eva Malá", "pani Malá"),
        ("peter.horvath@example.sk", "Peter Horváth", "pán Horváth"),
        ("zuzana.kralova@example.sk", "Zuzana Kráľová", "pani Kráľová"),
    ]
    for n, (address, name, greeting) in enumerate(people, 42):
        pdf = f"faktúra 2026-{n:04d}.pdf"
        (folder / pdf).write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * (60 + n))
        sheet.append([address, name, greeting, f"2026/{n:04d}", f"{n * 13.5:.2f}", "15. 12. 2026", pdf])
    book.save(folder / "customers.xlsx")
    return folder


def sample_mailings(service) -> None:  # type: ignore[no-untyped-def]
    """Five mailings of Firma s.r.o.: sending, paused, finished with failures, scheduled, cancelled."""
    from automail.store.outbox import NewMessage

    box = service.outbox("Firma s.r.o.")
    now = time.time()

    def messages(prefix: str, count: int) -> list[NewMessage]:
        raw = b"From: faktury@firma.sk\r\nSubject: x\r\n\r\nx\r\n"
        return [
            NewMessage(raw, (f"{prefix}{i}@example.com",), "faktury@firma.sk", "x", f"<{prefix}{i}@firma.sk>", prefix)
            for i in range(count)
        ]

    def send(tag: str, count: int, failed: int = 0) -> None:
        claimed = box.claim_batch("Invoices", now + 10**6, (tag,), "faktury@firma.sk", count)
        for i, c in enumerate(claimed):
            if i < failed:
                box.mark_failed(c.message.id, now, 550, "5.1.1 mailbox unavailable", "faktury@firma.sk", "Invoices")
            else:
                box.mark_sent(c.message.id, now, "250 OK", {}, "faktury@firma.sk", "Invoices")

    box.enqueue(messages("upomienky", 310), now - 7200, mailing="Upomienky október")
    send("upomienky", 310, failed=4)
    box.enqueue(messages("newsletter", 5200), now - 3600, mailing="Newsletter november")
    send("newsletter", 1870)
    box.pause_mailing("Newsletter november", now)
    box.enqueue(messages("faktury", 1240), now - 600, mailing="Faktúry 11/2026")
    send("faktury", 730, failed=2)
    box.enqueue(messages("vianoce", 860), now, mailing="Vianočný pozdrav", not_before=now + 20 * 86400)
    box.enqueue(messages("akcia", 400), now - 5400, mailing="Akcia december")
    send("akcia", 120)
    box.cancel_mailing("Akcia december", now)


def wait(root, done) -> None:  # type: ignore[no-untyped-def]
    """Let Tk run until ``done()`` (work runs in background threads), at most 20 s."""
    for _ in range(1000):
        root.update()
        if done():
            return
        time.sleep(0.02)
    raise RuntimeError("the window did not finish its work in 20 s")


def capture(window, name: str) -> None:  # type: ignore[no-untyped-def]
    """Save a window (with its frame when a window manager draws one) as docs/screenshots/NAME.png."""
    for _ in range(30):
        window.update()
        time.sleep(0.02)
    xid = int(window.wm_frame(), 16)
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["import", "-window", str(xid), str(OUT / f"{name}.png")], check=True)
    print(f"saved {OUT / name}.png")


def main() -> int:
    if not os.environ.get("DISPLAY"):
        print("no DISPLAY: run under xvfb-run", file=sys.stderr)
        return 1
    # In memory where possible: the sample's ~10,000 sends are durable transactions (one fsync each).
    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="automail-shots-", dir=shm if shm.is_dir() else None))
    os.environ["AUTOMAIL_HOME"] = str(tmp)
    from tests.keyring_backend import DictKeyring  # passwords in memory, for the sample data only

    keyring.set_keyring(DictKeyring())

    import customtkinter as ctk

    from automail.ui import theme
    from automail.ui.main_window import MainWindow

    theme.apply()

    service = sample_service(tmp)
    root = ctk.CTk()
    root.title("AutoMail — Automatic tasks")
    win = MainWindow(root, service, on_quit=root.destroy)
    root.geometry("1180x760+20+10")
    win.select_company("Firma s.r.o.")
    win.select_task("Invoices")
    capture(root, "main_window")

    win.edit_task()
    assert win.task_dialog is not None
    capture(win.task_dialog, "task_form")
    win.task_dialog.open_settings()
    settings = win.task_dialog.settings_dialog
    assert settings is not None
    capture(settings, "settings_basic")
    settings.tabs.set("Other")
    capture(settings, "settings_other")
    settings.tabs.set("Basic")
    settings.open_smtp()
    assert settings.smtp_dialog is not None
    capture(settings.smtp_dialog, "smtp_dialog")
    settings.smtp_dialog.cancel()
    settings.cancel()
    win.task_dialog.cancel()

    win.open_outbox()
    assert win.outbox_window is not None
    for _ in range(500):  # pages load in a worker thread
        root.update()
        if win.outbox_window.row_count:
            break
        time.sleep(0.02)
    win.outbox_window.tree.selection_set(win.outbox_window.tree.get_children()[4])
    capture(win.outbox_window, "outbox")
    win.outbox_window.destroy()

    mailing = sample_mailing_files(tmp)
    win.new_mailing()
    mw = win.mailing_window
    assert mw is not None
    mw.template.set(str(mailing / "invoice.txt"))
    mw.data.set(str(mailing / "customers.xlsx"))
    mw.subject.set("Faktúra {{ cislo }}")
    mw.task_menu.set("Invoices (tag invoices)")
    mw.name.set("Faktúry 11/2026")
    mw.not_before.set("2026-12-01 08:00")
    wait(root, lambda: bool(mw.columns) and mw.busy == 0)
    mw.attach_column.menu.set("Príloha")
    mw.test_to.insert(0, "jana@firma.sk")
    mw.check()
    wait(root, lambda: mw.busy == 0)
    capture(mw, "mailing_window")
    mw.destroy()

    sample_mailings(service)
    win.open_mailings()
    assert win.mailings_window is not None
    ml = win.mailings_window
    wait(root, lambda: len(ml.rows) == 5)
    capture(ml, "mailings")
    ml.destroy()
    root.destroy()
    service.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
