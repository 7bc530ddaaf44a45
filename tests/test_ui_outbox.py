"""GUI tests of the outbox window: paging over 100,000 messages, filter, search and the actions."""

from __future__ import annotations

import time
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import MessageStatus
from automail.store.outbox import NewMessage
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]


def message(n: int, tag: str = "") -> NewMessage:
    to = f"client{n}@example.com"
    raw = (
        f"From: Firma <info@firma.sk>\r\nTo: {to}\r\nSubject: Invoice {n}\r\nMessage-ID: <{n}@firma.sk>\r\n"
        f"\r\nDear client {n},\r\nyour invoice is attached.\r\n"
    ).encode()
    return NewMessage(raw, (to,), "Firma <info@firma.sk>", f"Invoice {n}", f"<{n}@firma.sk>", tag)


def settled(root: Any, outbox: Any, timeout: float = 20.0) -> None:
    """Pump Tk until the window's background queries have been drawn."""
    pump(root, lambda: not outbox.busy, timeout=timeout)


def test_outbox_with_100k_messages_opens_page_one_quickly(win: Any, service: Service, root: Any) -> None:
    box = service.outbox(COMPANY)
    box.enqueue([message(n) for n in range(1, 100_001)], time.time())

    started = time.perf_counter()
    win.outbox_button.invoke()
    outbox = win.outbox_window
    pump(root, lambda: outbox.winfo_viewable() and not outbox.busy, timeout=20)
    elapsed = time.perf_counter() - started
    print(
        f"\noutbox window with 100,000 messages: shown in {elapsed * 1000:.0f} ms "
        f"(page query {outbox.load_seconds * 1000:.0f} ms)"
    )
    assert outbox.row_count == 200
    assert outbox.total == 100_000
    assert "Page 1 of 500" in outbox.page_label.cget("text")
    assert outbox.tree.get_children()[0] == "100000"  # newest first
    assert outbox.prev_button.cget("state") == "disabled"
    assert elapsed < 3.0  # loose: the real figure is printed above (well under a second here)

    outbox.next_button.invoke()
    settled(root, outbox)
    assert outbox.tree.get_children()[0] == "99800"
    assert outbox.prev_button.cget("state") == "normal" and "Page 2 of 500" in outbox.page_label.cget("text")
    outbox.last_button.invoke()
    settled(root, outbox)
    assert outbox.row_count == 200 and outbox.tree.get_children()[-1] == "1"
    assert "Page 500 of 500" in outbox.page_label.cget("text")
    assert outbox.next_button.cget("state") == "disabled"
    outbox.prev_button.invoke()
    settled(root, outbox)
    assert outbox.tree.get_children()[-1] == "201" and "Page 499 of 500" in outbox.page_label.cget("text")
    outbox.first_button.invoke()
    settled(root, outbox)
    assert outbox.tree.get_children()[0] == "100000" and outbox.page == 0


def test_filter_and_search(win: Any, service: Service, root: Any) -> None:
    box = service.outbox(COMPANY)
    box.enqueue([message(n) for n in range(1, 301)], time.time())
    box.cancel([1, 2, 3], time.time())
    win.open_outbox(COMPANY)
    outbox = win.outbox_window
    outbox.set_filter(MessageStatus.CANCELLED)
    settled(root, outbox)
    assert outbox.total == 3 and outbox.row_count == 3
    outbox.set_filter(None, "client42@")
    settled(root, outbox)
    assert [outbox.tree.set(i, "to") for i in outbox.tree.get_children()] == ["client42@example.com"]
    outbox.search.delete(0, "end")
    outbox.search.insert(0, "Invoice 29")
    outbox.apply_filter()
    settled(root, outbox)
    assert outbox.total == 11  # 29 and 290…299
    assert outbox.page == 0


def test_retry_cancel_and_show_message(win: Any, service: Service, root: Any) -> None:
    box = service.outbox(COMPANY)
    now = time.time()
    box.enqueue([message(n) for n in range(1, 11)], now)
    claimed = box.claim("Invoices", now, (), "info@firma.sk")
    assert claimed is not None
    box.mark_failed(claimed.message.id, now, 550, "5.1.1 mailbox unavailable", "acct", "Invoices")
    win.open_outbox()
    outbox = win.outbox_window
    settled(root, outbox)
    assert outbox.tree.set("1", "status") == "failed"
    assert "550 5.1.1 mailbox unavailable" in outbox.tree.set("1", "error")

    outbox.select_ids([1])
    outbox.show_button.invoke()
    settled(root, outbox)
    text = outbox.message_view.text.get_text()
    assert "Subject: Invoice 1" in text
    assert "Dear client 1," in text
    assert "Error: 550 5.1.1 mailbox unavailable" in text

    outbox.select_ids([1])
    outbox.retry_button.invoke()
    settled(root, outbox)
    assert box.get(1).status is MessageStatus.QUEUED

    outbox.select_ids([4, 5])
    outbox.cancel_button.invoke()
    outbox.confirm.cancel()
    assert box.get(4).status is MessageStatus.QUEUED
    outbox.select_ids([4, 5])
    outbox.cancel_queued()
    outbox.confirm.ok_button.invoke()
    settled(root, outbox)
    assert box.get(4).status is MessageStatus.CANCELLED and box.get(5).status is MessageStatus.CANCELLED
    assert outbox.tree.set("4", "status") == "cancelled"
    assert "2 message(s) cancelled" in outbox.status_line.cget("text")

    outbox.select_ids([])
    outbox.cancel_queued()
    assert "Select the queued messages" in outbox.status_line.cget("text")


def test_outbox_opens_while_the_main_window_is_hidden(win: Any, root: Any) -> None:
    win.hide()
    win.open_outbox(COMPANY)
    pump(root, lambda: win.outbox_window.winfo_viewable(), timeout=5)
