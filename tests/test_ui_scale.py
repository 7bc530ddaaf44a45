"""The desktop windows on a year-old outbox (issue 10): no outbox query on the Tk thread over 50 ms."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import MessageStatus, Task
from bench.common import HISTORY_TASKS, build_history
from tests.helpers import make_task
from tests.smtpd import SmtpServer
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.slow, pytest.mark.usefixtures("collect_tk_garbage")]

MESSAGES = 200_000
TK_QUERY_LIMIT_S = 0.05


def test_windows_at_200k_messages_never_query_long_on_the_tk_thread(
    win: Any, service: Service, root: Any, smtp_server: SmtpServer
) -> None:
    box = service.outbox(COMPANY)
    history = build_history(Path(box.path), MESSAGES)  # bulk SQL: ~90 % sent over a year, 300 failed, 10 % queued
    tasks: list[Task] = []
    for name, tag in HISTORY_TASKS.items():
        task = make_task(name, COMPANY, port=smtp_server.port, tags=(tag,), computer=service.computer, enabled=True)
        tasks.append(service.add_task(task))
    queries: list[tuple[float, float, str]] = []  # (wall s, CPU s, sql) of every query on this (the Tk) thread
    service.watch_queries(lambda sql, wall, cpu: queries.append((wall, cpu, sql)))

    win.refresh()
    win.open_outbox(COMPANY)
    outbox = win.outbox_window

    def settled() -> None:
        pump(root, lambda: not outbox.busy, timeout=60)

    settled()
    assert outbox.total == MESSAGES and outbox.row_count == 200
    for act in (outbox.next_page, outbox.last_page, outbox.previous_page, outbox.first_page):
        act()
        settled()
    assert outbox.tree.get_children()[0] == str(MESSAGES)
    outbox.set_filter(MessageStatus.FAILED)
    settled()
    assert outbox.total == history.failed > 0
    outbox.set_filter(None, "client123457@")
    settled()
    assert outbox.tree.get_children() == ("123457",)
    outbox.set_filter(None, "invoice")
    settled()
    assert outbox.capped and outbox.row_count == 200
    outbox.select_ids([int(outbox.tree.get_children()[0])])
    outbox.show_message()
    settled()
    assert outbox.message_view is not None
    outbox.set_filter(None, "")
    settled()

    # The engine sends while both windows are open: the main window refreshes on its events.
    service.start_engine()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            pump(root)
            time.sleep(0.02)
    finally:
        service.stop_engine()
    pump(root)
    win.refresh()
    assert sum(s.sent_last_hour for s in service.status(tasks=tasks)) > 0  # it did send meanwhile

    assert queries, "the Tk thread's queries were not observed"
    slowest = max(queries)
    print(f"\n{len(queries)} queries on the Tk thread; slowest {slowest[0] * 1000:.1f} ms: {slowest[2][:120]}")
    # CPU time decides: on the shared test machine the wall time of a 1 ms query can include
    # another process's time slice; a scan of 200,000 rows costs its CPU time on any machine.
    assert max(cpu for _, cpu, _ in queries) < TK_QUERY_LIMIT_S, sorted(queries)[-3:]
    assert sorted(wall for wall, _, _ in queries)[len(queries) * 9 // 10] < TK_QUERY_LIMIT_S
