"""Show message (issue 11, item 5): the message as the recipients see it, and each recipient's outcome."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import RecipientState, RecipientStatus, SmtpSettings, Task
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]

SENDER = "Firma <faktury@firma.sk>"


def test_show_message_as_the_recipient_sees_it(win: Any, service: Service, root: Any, tmp_path: Path) -> None:
    smtp = SmtpSettings(host="smtp.firma.sk", sender=SENDER, reply_to="uctovnictvo@firma.sk")
    service.add_task(Task("Invoices", COMPANY, smtp, computer="OFFICE-PC", tags=("invoices",)))
    pdf = tmp_path / "invoice-7.pdf"
    pdf.write_bytes(b"%PDF" + b"x" * 3000)
    msg_id = service.send(
        COMPANY,
        to=["jan@example.com", "eva@example.com"],
        subject="Invoice 7/2026",
        text="Dear client,\r\nplease find invoice 7 attached.\r\n",
        attachments=[pdf],
        tag="invoices",
    )
    box = service.outbox(COMPANY)
    win.open_outbox()
    outbox = win.outbox_window
    pump(root, lambda: not outbox.busy, timeout=20)  # the window queries in the background
    outbox.select_ids([msg_id])
    outbox.show_button.invoke()
    pump(root, lambda: not outbox.busy, timeout=20)  # the window queries in the background
    text = outbox.message_view.text.get_text()
    assert "\r" not in text  # no box glyph at line ends
    assert "Dear client,\nplease find invoice 7 attached." in text
    assert f"From: {SENDER}    (added at send time from task Invoices)" in text
    assert "Reply-To: uctovnictvo@firma.sk    (added at send time from task Invoices)" in text
    assert "Message-ID: <" in text and "Date: " in text
    assert text.index("From:") < text.index("To:") < text.index("Subject:")
    assert "  invoice-7.pdf — 2.9 KB" in text
    assert "  jan@example.com — waiting in the queue" in text

    claimed = box.claim("Invoices", time.time(), ("invoices",), "faktury@firma.sk")
    assert claimed is not None
    outcomes = {
        "jan@example.com": RecipientState(RecipientStatus.SENT, "250 2.0.0 queued as 4F2A"),
        "eva@example.com": RecipientState(RecipientStatus.FAILED, "550 5.1.1 no such user"),
    }
    box.mark_sent(msg_id, time.time(), "250 2.0.0 queued as 4F2A", outcomes, "a", "Invoices")
    outbox.reload()
    pump(root, lambda: not outbox.busy, timeout=20)  # the window queries in the background
    outbox.select_ids([msg_id])
    outbox.show_message()
    pump(root, lambda: not outbox.busy, timeout=20)  # the window queries in the background
    text = outbox.message_view.text.get_text()
    assert "  jan@example.com — accepted by the server" in text
    assert "  eva@example.com — refused by the server: 550 5.1.1 no such user" in text
    view = outbox.message_view
    view.focus_force()
    pump(root, lambda: str(view.focus_get() or "").startswith(str(view)), timeout=5)
    view.event_generate("<KeyPress-Escape>")
    pump(root)
    assert not view.winfo_exists()
