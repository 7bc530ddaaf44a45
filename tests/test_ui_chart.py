"""The sending chart: per-hour counts from the outbox, the service's limits, and the chart in the main window."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from automail.clock import FakeClock, hour_start
from automail.engine.service import Service
from automail.models import SmtpSettings, Task
from automail.store.outbox import Outbox
from tests.helpers import new_message
from tests.ui_support import COMPANY, pump

HOUR = 3600.0


def send_at(box: Outbox, task: str, times: list[float], fail: set[int] = frozenset(), account: str = "acct") -> None:  # type: ignore[assignment]
    """Queue and deliver one message per time (failing the given indexes), as the engine records them."""
    box.enqueue([new_message(i) for i in range(len(times))], min(times) - 1)
    for i, at in enumerate(times):
        claimed = box.claim(task, at)
        assert claimed is not None
        if i in fail:
            box.mark_failed(claimed.message.id, at, 550, "no such user", account, task)
        else:
            box.mark_sent(claimed.message.id, at, "250 OK", {}, account, task)


def test_hourly_activity_counts_sent_and_failed_per_hour(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "Firma")
    start = 1_800_000_000.0
    send_at(box, "A", [start - 10, start + 5, start + 100, start + 2 * HOUR + 1, start + 2 * HOUR + 2], fail={4})
    send_at(box, "B", [start + 7])
    box.mark_deferred(
        box.enqueue([new_message(99)], start)[0], start + 3 * HOUR, start + 4 * HOUR, 451, "x", "acct", "A"
    )
    assert list(box.hourly_activity(["A"], start, 4)) == [(2, 0), (0, 0), (1, 1), (0, 1)]
    assert list(box.hourly_activity(["A", "B"], start, 1)) == [(3, 0)]
    assert list(box.hourly_activity([], start, 2)) == [(0, 0), (0, 0)]
    box.close()


def test_upgrade_from_schema_2_counts_the_history_in(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    box = Outbox(path, "Firma")
    start = 1_800_000_000.0
    conn = box._conn()
    for stmt in ("DROP TRIGGER tr_hourly_attempt", "DROP TRIGGER tr_hourly_sent", "DROP TABLE send_hourly"):
        conn.execute(stmt)
    send_at(box, "A", [start + 1, start + 2, start + HOUR + 1], fail={1})
    conn = box._conn()
    conn.execute("ALTER TABLE messages DROP COLUMN rcpt_state")  # schema 4's column
    conn.execute("PRAGMA user_version=2")  # an outbox written by the previous release
    box.close()
    box = Outbox(path, "Firma")
    assert list(box.hourly_activity(["A"], start, 2)) == [(1, 1), (1, 0)]
    send_at(box, "A", [start + HOUR + 2])  # and the triggers count from now on
    assert list(box.hourly_activity(["A"], start, 2)) == [(1, 1), (2, 0)]
    box.close()


def test_sending_history_of_a_task_and_of_the_company(automail_home: Path) -> None:
    clock = FakeClock(1_800_001_800.0)  # half past an hour
    svc = Service(home=automail_home, clock=clock, computer="PC", user="")
    svc.add_company(COMPANY)
    same = SmtpSettings(host="smtp.firma.sk", username="a@firma.sk", sender="a@firma.sk")
    other = SmtpSettings(host="smtp.other.sk", username="b@other.sk", sender="b@other.sk")
    svc.add_task(Task("A", COMPANY, same, rate_per_hour=1800, daily_cap=10000, enabled=True))
    svc.add_task(Task("B", COMPANY, same, rate_per_hour=600, enabled=True))  # same account: one bucket
    svc.add_task(Task("C", COMPANY, other, rate_per_hour=300, daily_cap=2000, enabled=True))
    now = clock.now()
    send_at(svc.outbox(COMPANY), "A", [now - 25 * HOUR, now - 2 * HOUR, now - 1, now])
    send_at(svc.outbox(COMPANY), "C", [now - 1])
    history = svc.sending_history(COMPANY, "A")
    assert history.start == hour_start(now) - 23 * HOUR
    assert len(history.sent) == 24 and history.sent[-1] == 2 and history.sent[-3] == 1
    assert history.sent_total == 3  # 25 hours ago is outside the chart
    assert (history.rate_per_hour, history.daily_cap) == (1800, 10000)
    company = svc.sending_history(COMPANY)
    assert company.sent[-1] == 3
    assert (company.rate_per_hour, company.daily_cap) == (600 + 300, 10000 + 2000)
    svc.close()


# ---- the chart in the main window (real Tk on Xvfb) ------------------------------------
ctk = pytest.importorskip("customtkinter")


def smtp(host: str = "smtp.firma.sk", port: int = 587) -> SmtpSettings:
    return SmtpSettings(host=host, port=port, security="none", sender="info@firma.sk")  # type: ignore[arg-type]


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_main_window_shows_the_chart_of_the_selected_task_or_company(win: Any, service: Service, root: Any) -> None:
    service.add_task(Task("Invoices", COMPANY, smtp(), computer="OFFICE-PC", rate_per_hour=1800))
    service.add_task(Task("Reminders", COMPANY, smtp("smtp.other.sk"), computer="OFFICE-PC", rate_per_hour=600))
    now = max(time.time(), hour_start(time.time()) + 10)  # all "now" sends in the current hour
    box = service.outbox(COMPANY)
    send_at(box, "Invoices", [now - 3 * HOUR, now - 2, now - 1], fail={2})
    send_at(box, "Reminders", [now - 5])
    win.refresh()
    win.select_task("Invoices")
    pump(root)
    chart = win.chart
    assert chart.winfo_ismapped()
    assert chart.subject == "task Invoices"
    assert chart.history.sent[-1] == 1 and chart.history.failed[-1] == 1 and chart.history.sent[-4] == 1
    assert chart.summary.cget("text") == "2 sent, 1 failed in the last 24 hours · limit 1,800/h"
    c = chart.canvas
    assert len(c.find_withtag("sent")) == 2 and len(c.find_withtag("failed")) == 1
    assert len(c.find_withtag("limit")) == 1

    chart.scope.set("Whole company")
    chart.scope._command("Whole company")
    pump(root)
    assert chart.subject == COMPANY
    assert chart.history.sent[-1] == 2 and chart.history.rate_per_hour == 2400
    drawn = chart.draw_count
    win.refresh()  # nothing changed: no redraw
    pump(root)
    assert chart.draw_count == drawn


@pytest.mark.gui
@pytest.mark.usefixtures("collect_tk_garbage")
def test_chart_follows_sending_live(win: Any, service: Service, root: Any, smtp_server: Any) -> None:
    import queue

    service.add_task(Task("Invoices", COMPANY, smtp(smtp_server.host, smtp_server.port), computer="OFFICE-PC"))
    events: queue.Queue[Any] = queue.Queue()
    service.subscribe(events.put)
    win.refresh()
    win.select_task("Invoices")
    pump(root)
    assert win.chart.history.sent_total == 0
    for i in range(3):
        service.send(COMPANY, to=[f"r{i}@example.com"], subject=f"S{i}", text="x")
    win.start_task("Invoices")
    win.start_server()

    def shown() -> bool:
        while not events.empty():
            win.on_event(events.get_nowait())
        return win.chart.history.sent_total == 3

    try:
        pump(root, shown, timeout=20)
        assert len(win.chart.canvas.find_withtag("sent")) == 1
    finally:
        win.stop_server()
        pump(root, lambda: not win._stopping, timeout=20)
