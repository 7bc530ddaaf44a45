"""GUI tests of New mailing and the Mailings list: real windows on Xvfb, real files, a real SMTP server."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import MessageStatus
from tests.helpers import make_task, new_message
from tests.smtpd import SmtpServer
from tests.ui_support import COMPANY, pump, tcl_calls

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]

TEMPLATE = "Dobrý deň {{ meno }},\n\nv prílohe posielame faktúru {{ cislo }}.\n"
GOOD = (
    "email;meno;cislo;priloha\njan@example.sk;Ján Novák;2026/0042;f42.pdf\neva@example.sk;Eva Malá;2026/0043;f43.pdf\n"
)
BAD = GOOD.replace("eva@example.sk", "eva(at)example.sk")


def type_into(entry: Any, text: str) -> None:
    """Replace an entry's text as a user typing it would."""
    entry.delete(0, "end")
    entry.insert(0, text)


def files(tmp_path: Path, data: str) -> tuple[Path, Path]:
    (tmp_path / "f42.pdf").write_bytes(b"%PDF-1.4 invoice 42\n" + b"x" * 2000)
    (tmp_path / "f43.pdf").write_bytes(b"%PDF-1.4 invoice 43\n" + b"y" * 3000)
    template = tmp_path / "faktura.txt"
    template.write_text(TEMPLATE, encoding="utf-8")
    csv = tmp_path / "zakaznici.csv"
    csv.write_text(data, encoding="utf-8")
    return template, csv


def idle(root: Any, window: Any, timeout: float = 20.0) -> None:
    pump(root, lambda: window.busy == 0, timeout=timeout)


def open_filled(win: Any, root: Any, template: Path, csv: Path) -> Any:
    win.new_mailing_button.invoke()
    mw = win.mailing_window
    pump(root, lambda: mw.winfo_viewable())
    type_into(mw.template.entry, str(template))
    type_into(mw.data.entry, str(csv))
    pump(root, lambda: mw.columns == ["email", "meno", "cislo", "priloha"] and mw.busy == 0)
    type_into(mw.subject.entry, "Faktúra {{ cislo }}")
    return mw


def test_bad_row_is_reported_nothing_queued_then_fixed_previewed_and_queued(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    template, csv = files(tmp_path, BAD)
    mw = open_filled(win, root, template, csv)
    # The column drop-downs were filled from the data file, with guesses a user can change.
    assert mw.to.menu.cget("values") == ["email", "meno", "cislo", "priloha"]
    assert mw.to.get() == "email" and mw.name_column.get() == "meno"
    mw.attach_column.menu.set("priloha")

    mw.queue_button.invoke()
    idle(root, mw)
    rows = mw.problem_rows()
    assert len(rows) == 1
    where, column, reason = rows[0]
    assert where == "line 3" and column == "email" and "eva(at)example.sk" in reason
    assert "Nothing was queued" in mw.status_line.cget("text")
    assert service.outbox(COMPANY).count(None) == 0

    # The user corrects the file and presses Queue again: the file is read again, not the old check reused.
    csv.write_text(GOOD.replace("jan@example.sk", "jan(at)example.sk"), encoding="utf-8")
    mw.queue_button.invoke()
    idle(root, mw)
    assert [r[0] for r in mw.problem_rows()] == ["line 2"]
    assert service.outbox(COMPANY).count(None) == 0

    csv.write_text(GOOD, encoding="utf-8")
    type_into(mw.name.entry, "Faktúry 11/2026")
    type_into(mw.not_before.entry, "2030-01-02 08:00")
    mw.check_button.invoke()
    idle(root, mw)
    assert mw.problem_rows() == []
    assert mw.tabs.get() == "Preview"
    text = mw.preview_text
    assert "To: Ján Novák <jan@example.sk>" in text
    assert "Subject: Faktúra 2026/0042" in text
    assert "Dobrý deň Ján Novák," in text
    assert "f42.pdf — 2.0 KB" in text  # 2,020 bytes
    mw.next_button.invoke()
    assert "Eva Malá <eva@example.sk>" in mw.preview_text and "f43.pdf — 2.9 KB" in mw.preview_text
    assert service.outbox(COMPANY).count(None) == 0  # checking and previewing queue nothing

    mw.queue_button.invoke()
    idle(root, mw)
    assert "Queued 2 message(s) as mailing Faktúry 11/2026" in mw.status_line.cget("text")
    box = service.outbox(COMPANY)
    (mailing,) = box.mailings()
    assert mailing.name == "Faktúry 11/2026" and mailing.total == 2 and mailing.queued == 2
    assert mailing.not_before == time.mktime(time.strptime("2030-01-02 08:00", "%Y-%m-%d %H:%M"))
    assert {m.recipients[0] for m in box.page(None, "", limit=10)} == {"jan@example.sk", "eva@example.sk"}
    # Pressing Queue again does not queue the mailing twice: its name is taken, said under the field.
    mw.queue_button.invoke()
    idle(root, mw)
    assert "already has a mailing named 'Faktúry 11/2026'" in mw.name.error_text
    assert box.count(None) == 2
    # Queuing opened the Mailings list, which shows the new mailing.
    mailings = win.mailings_window
    pump(root, lambda: mailings is not None and "Faktúry 11/2026" in mailings.rows)
    assert mailings.rows["Faktúry 11/2026"].state.cget("text").startswith("Scheduled for 2030-01-02 08:00")


def test_missing_fields_and_bad_time_are_shown_next_to_the_fields(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    win.new_mailing_button.invoke()
    mw = win.mailing_window
    mw.queue_button.invoke()
    assert "data file" in mw.data.error_text and "template" in mw.template.error_text
    template, csv = files(tmp_path, GOOD)
    type_into(mw.template.entry, str(template))
    type_into(mw.data.entry, str(csv))
    pump(root, lambda: bool(mw.columns) and mw.busy == 0)
    mw.queue_button.invoke()
    idle(root, mw)
    # The merge's own check, in the window's words (not the command line's --subject).
    assert mw.subject.error_text == (
        "The mailing has no subject — fill in Subject, or a 'Subject:' line at the top of the template."
    )
    type_into(mw.subject.entry, "Faktúra")
    type_into(mw.not_before.entry, "next Tuesday")
    mw.queue_button.invoke()
    idle(root, mw)
    assert "is not a date and time" in mw.not_before.error_text
    assert service.outbox(COMPANY).count(None) == 0


def test_send_test_message_goes_to_the_address_only(
    win: Any, service: Service, root: Any, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    service.add_task(make_task("Newsletter", COMPANY, port=smtp_server.port, tags=("news",)))
    service.add_task(make_task("Faktúry", COMPANY, port=smtp_server.port, tags=("faktury", "ine")))
    template, csv = files(tmp_path, GOOD)
    mw = open_filled(win, root, template, csv)
    mw.attach_column.menu.set("priloha")
    assert mw.task_menu.cget("values") == ["Faktúry (tag faktury)", "Newsletter (tag news)"]
    mw.task_menu.set("Newsletter (tag news)")
    mw.task_menu.set("Faktúry (tag faktury)")
    type_into(mw.test_to, "tester@firma.sk")
    mw.test_button.invoke()
    idle(root, mw)
    assert "Test message sent to tester@firma.sk through task Faktúry" in mw.status_line.cget("text")
    (sent,) = smtp_server.messages
    assert sent.rcpt_tos == ["tester@firma.sk"]
    assert b"Subject: =?utf-8?" in sent.data or "Faktúra 2026/0042" in sent.data.decode("utf-8", "replace")
    assert service.outbox(COMPANY).count(None) == 0  # a test message is not queued

    # The preview shows the sender the chosen task adds; the queued messages carry its tag, so it sends them.
    mw.check_button.invoke()
    idle(root, mw)
    assert 'From: "Firma s.r.o." <info@firma.sk>    (added at send time from task Faktúry)' in mw.preview_text
    mw.queue_button.invoke()
    idle(root, mw)
    assert {m.tag for m in service.outbox(COMPANY).page(None, "", limit=10)} == {"faktury"}


def test_pause_and_resume_in_the_mailings_list_change_only_that_mailing(win: Any, service: Service, root: Any) -> None:
    service.enqueue(COMPANY, [new_message(n) for n in range(1, 4)], mailing="Faktúry")
    service.enqueue(COMPANY, [new_message(n) for n in range(4, 6)], mailing="Newsletter")
    box = service.outbox(COMPANY)
    box.cancel([3], time.time())
    win.mailings_button.invoke()
    ml = win.mailings_window
    pump(root, lambda: set(ml.rows) == {"Faktúry", "Newsletter"})
    assert list(ml.rows) == ["Newsletter", "Faktúry"]  # newest first
    row = ml.rows["Faktúry"]
    assert row.counts.cget("text") == "0 of 3 sent · 1 cancelled"
    assert abs(row.bar.get() - 1 / 3) < 0.01

    row.pause_button.invoke()
    pump(root, lambda: row.pause_button.cget("text") == "Resume", timeout=10)
    states = {m.name: m.paused for m in box.mailings()}
    assert states == {"Faktúry": True, "Newsletter": False}
    assert row.state.cget("text") == "Paused" and ml.rows["Newsletter"].state.cget("text") == "Sending"
    claimed = box.claim_batch("t", time.time() + 10, limit=10)
    assert {c.message.mailing_id for c in claimed} == {box.mailings()[1].id}  # only Newsletter is claimable
    row.pause_button.invoke()
    pump(root, lambda: row.pause_button.cget("text") == "Pause", timeout=10)
    assert {m.name: m.paused for m in box.mailings()} == {"Faktúry": False, "Newsletter": False}


def test_cancel_and_retry_failed_and_live_refresh(win: Any, service: Service, root: Any) -> None:
    ids = service.enqueue(COMPANY, [new_message(n) for n in range(1, 5)], mailing="Upomienky")
    box = service.outbox(COMPANY)
    win.open_mailings()
    ml = win.mailings_window
    pump(root, lambda: "Upomienky" in ml.rows)
    row = ml.rows["Upomienky"]
    assert row.retry_button.cget("state") == "disabled"
    # The engine (here: the outbox directly) sends one and fails one; the list follows without a click.
    claimed = box.claim_batch("t", time.time() + 1, limit=2)
    box.mark_sent(claimed[0].message.id, time.time(), "250 OK", {}, "info@firma.sk", "t")
    box.mark_failed(claimed[1].message.id, time.time(), 550, "no such user", "info@firma.sk", "t")
    pump(root, lambda: row.counts.cget("text") == "1 of 4 sent · 1 failed", timeout=10)
    assert row.retry_button.cget("state") == "normal"

    row.retry_button.invoke()
    pump(root, lambda: "1 failed message(s) queued again" in ml.status_line.cget("text"), timeout=10)
    assert box.get(claimed[1].message.id).status is MessageStatus.QUEUED

    row.cancel_button.invoke()
    ml.confirm.ok_button.invoke()
    pump(root, lambda: "3 message(s) cancelled" in ml.status_line.cget("text"), timeout=10)
    assert [box.get(i).status for i in ids].count(MessageStatus.CANCELLED) == 3
    pump(root, lambda: row.state.cget("text") == "Cancelled", timeout=10)  # what the user did, not "Finished"
    assert row.pause_button.cget("state") == "disabled" and row.cancel_button.cget("state") == "disabled"


def test_large_file_is_checked_in_the_background_with_progress_and_a_capped_problem_list(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    rows = 12_000
    lines = [f"c{n}@example.sk;Zákazník {n};{n}" for n in range(rows)]
    lines[5] = "nie-je-adresa;Zlý;5"
    template = tmp_path / "t.txt"
    template.write_text("Dobrý deň {{ meno }}, {{ suma }}\n", encoding="utf-8")
    csv = tmp_path / "big.csv"
    csv.write_text("email;meno;cislo\n" + "\n".join(lines) + "\n", encoding="utf-8")  # {{ suma }}: every row fails
    win.new_mailing_button.invoke()
    mw = win.mailing_window
    type_into(mw.template.entry, str(template))
    type_into(mw.data.entry, str(csv))
    type_into(mw.subject.entry, "Faktúra")
    pump(root, lambda: bool(mw.columns) and mw.busy == 0, timeout=20)

    clicked = time.monotonic()
    mw.check_button.invoke()
    # The click hands the work to a background thread and returns at once (on the Tk thread the
    # 12,000 rows would take seconds, and the window would not repaint meanwhile).
    assert time.monotonic() - clicked < 0.5 and mw.busy
    longest = 0.0
    shown: set[float] = set()
    deadline = time.monotonic() + 60
    while mw.busy and time.monotonic() < deadline:
        started = time.monotonic()
        root.update()
        if mw.busy:
            longest = max(longest, time.monotonic() - started)
            shown.add(mw.progress_bar.get())
        time.sleep(0.01)
    assert not mw.busy
    assert mw.progress.done == mw.progress.total == rows and mw.progress_bar.get() == 1
    # The user sees the bar move, and the window never stops answering for long (passes of 0.5–1.3 s
    # were measured before each progress update was cut from ~100 Tcl calls to a few, see below).
    assert any(0 < value < 1 for value in shown), f"the progress bar showed only {sorted(shown)}"
    assert longest < 0.3, f"the Tk thread was blocked for {longest:.2f} s"
    assert mw.check_button.cget("state") == "normal"
    assert f"{rows:,} problem(s) in {rows:,} row(s)" in mw.status_line.cget("text")
    listed = mw.problem_rows()
    assert len(listed) == 1001 and listed[-1][0] == "…" and "11,000 more not listed" in listed[-1][2]
    assert service.outbox(COMPANY).count(None) == 0


def test_progress_updates_cost_a_few_tcl_calls_and_a_job_shortens_the_switch_interval(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    from automail.ui.widgets import JOB_SWITCH_INTERVAL

    template, csv = files(tmp_path, GOOD)
    mw = open_filled(win, root, template, csv)
    normal = sys.getswitchinterval()
    release = threading.Event()
    mw._run("Checking rows…", lambda: release.wait(20), lambda _result: None)
    try:
        pump(root, lambda: sys.getswitchinterval() == JOB_SWITCH_INTERVAL)
        costs = []
        for done in (500, 1000, 1500):
            mw.progress(done, 12_000)
            costs.append(tcl_calls(mw._tick_progress))
        assert mw.progress_bar.get() == 1500 / 12_000
        # CTkProgressBar.set alone took 74 Tcl calls, and the status line's colour 15 more on every update:
        # ~0.5 s per update while the worker held the GIL.
        assert max(costs) <= 8, costs
    finally:
        release.set()
    idle(root, mw)
    assert sys.getswitchinterval() == normal


def test_xlsx_columns_fill_the_lists_and_duplicates_are_warned(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["E-mail", "Meno zákazníka"])
    sheet.append(["jan@example.sk", "Ján Novák"])
    sheet.append(["JAN@example.sk", "Ján Novák"])
    book.save(tmp_path / "zakaznici.xlsx")
    (tmp_path / "t.txt").write_text('Dobrý deň {{ row["Meno zákazníka"] }}\n', encoding="utf-8")
    win.new_mailing_button.invoke()
    mw = win.mailing_window
    type_into(mw.template.entry, str(tmp_path / "t.txt"))
    type_into(mw.data.entry, str(tmp_path / "zakaznici.xlsx"))
    type_into(mw.subject.entry, "Ahoj")
    pump(root, lambda: mw.columns == ["E-mail", "Meno zákazníka"] and mw.busy == 0)
    assert mw.to.get() == "E-mail" and mw.name_column.get() == "Meno zákazníka" and mw.attach_column.get() == ""
    mw.check_button.invoke()
    idle(root, mw)
    ((where, _column, text),) = mw.problem_rows()
    assert where == "sheet 'Sheet' row 3" and text.startswith("warning: ") and "also gets the message of" in text
    assert "Dobrý deň Ján Novák" in mw.preview_text


def test_the_list_draws_the_newest_mailings_only(win: Any, service: Service, root: Any) -> None:
    for n in range(52):
        service.enqueue(COMPANY, [new_message(n)], mailing=f"Round {n}")
    win.open_mailings()
    ml = win.mailings_window
    pump(root, lambda: ml.refresh_count > 0, timeout=20)
    assert len(ml.rows) == 50 and next(iter(ml.rows)) == "Round 51" and "Round 1" not in ml.rows
    assert ml.empty.cget("text") == "2 older mailing(s) not shown." and ml.empty.winfo_manager() == "pack"


def four_mailings(service: Service) -> None:
    """A finished mailing with a failure, a paused one, one sending with a cancelled message, a scheduled one."""
    box = service.outbox(COMPANY)
    now = time.time()

    def send(count: int, failed: int = 0) -> None:
        for i, c in enumerate(box.claim_batch("t", now + 10, limit=count)):
            if i < failed:
                box.mark_failed(c.message.id, now, 550, "no such user", "info@firma.sk", "t")
            else:
                box.mark_sent(c.message.id, now, "250 OK", {}, "info@firma.sk", "t")

    service.enqueue(COMPANY, [new_message(n) for n in range(1, 4)], mailing="Upomienky")
    send(3, failed=1)
    service.enqueue(COMPANY, [new_message(n) for n in range(4, 8)], mailing="Newsletter")
    send(1)
    box.pause_mailing("Newsletter", now)
    ids = service.enqueue(COMPANY, [new_message(n) for n in range(8, 12)], mailing="Faktúry")
    box.cancel(ids[-1:], now)
    service.enqueue(COMPANY, [new_message(n) for n in range(12, 14)], mailing="Vianoce", not_before=now + 86400)


def open_mailings_list(win: Any, root: Any, monkeypatch: pytest.MonkeyPatch, count: int) -> Any:
    """The Mailings window once it shows ``count`` rows, with no refresh of its own due (the test drives them)."""
    from automail.ui import mailings_window

    monkeypatch.setattr(mailings_window, "REFRESH_MS", 600_000)
    win.open_mailings()
    ml = win.mailings_window
    pump(root, lambda: len(ml.rows) == count and ml.busy == 0, timeout=10)
    return ml


def test_a_refresh_of_unchanged_mailings_costs_almost_no_tcl_calls(
    win: Any, service: Service, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    four_mailings(service)
    ml = open_mailings_list(win, root, monkeypatch, 4)
    rows = ml.rows
    assert [rows[n].counts.cget("text") for n in rows] == [
        "0 of 2 sent",
        "0 of 4 sent · 1 cancelled",
        "1 of 4 sent",
        "2 of 3 sent · 1 failed",
    ]
    assert [rows[n].state.cget("text") for n in ("Faktúry", "Newsletter", "Upomienky")] == [
        "Sending",
        "Paused",
        "Finished",
    ]
    assert [round(rows[n].bar.get(), 2) for n in rows] == [0, 0.25, 0.25, 1]

    def refresh() -> None:  # what the Tk thread does when a periodic re-read of the mailings arrives
        ml.busy += 1
        ml._loaded(service.mailings(COMPANY))

    # Each Tcl call may wait for the GIL while the engine sends in this process. Measured before: 5 calls
    # for these four unchanged mailings (each row re-set its Pause button's command; the note under the
    # rows was unpacked again), now none.
    assert tcl_calls(refresh) <= 1
    assert tcl_calls(refresh) <= 1

    # One mailing moves on: only its counts and its bar are redrawn (82 calls before, 74 of them the
    # CTkProgressBar's redraw; now 4).
    box = service.outbox(COMPANY)
    (claimed,) = box.claim_batch("t", time.time() + 10, limit=1)
    box.mark_sent(claimed.message.id, time.time(), "250 OK", {}, "info@firma.sk", "t")
    assert tcl_calls(refresh) <= 6
    assert rows["Faktúry"].counts.cget("text") == "1 of 4 sent · 1 cancelled"
    assert rows["Faktúry"].bar.get() == 0.5
    assert tcl_calls(refresh) <= 1


def test_the_progress_bars_stretch_with_the_window(
    win: Any, service: Service, root: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    four_mailings(service)
    ml = open_mailings_list(win, root, monkeypatch, 4)

    def drawn(bar: Any) -> tuple[float, float, float]:
        """The bar's width and the right edges of its track and of its progress (round caps included)."""
        r = bar.winfo_height() / 2
        return bar.winfo_width(), bar.coords("track")[2] + r, bar.coords("progress")[2] + r

    widths = {}
    for width in (1200, 760):
        ml.geometry(f"{width}x560")
        pump(root, lambda w=width: ml.winfo_width() == w)
        pump(root)
        for name, row in ml.rows.items():
            bar_width, track_end, progress_end = drawn(row.bar)
            assert track_end == bar_width - bar_width % 2, (width, name)  # even, as customtkinter draws
            h = row.bar.winfo_height()
            assert abs(progress_end - (h + row.bar.get() * (track_end - h))) <= 1, (width, name, progress_end)
            widths[width, name] = bar_width
    for name in ml.rows:  # the bars take what the window gains
        assert widths[1200, name] - widths[760, name] == 1200 - 760, name
    full = drawn(ml.rows["Upomienky"].bar)
    assert full[2] == full[1]  # full: to the right end


def test_a_long_path_shows_the_file_name_not_the_start_of_the_folder(
    win: Any, service: Service, root: Any, tmp_path: Path
) -> None:
    """Files in deep folders: the entry shows the end of the path (the file's name), as the user needs to check."""
    deep = tmp_path.joinpath(*[f"Účtovníctvo-{i}-faktúry-november" for i in range(6)])
    deep.mkdir(parents=True)
    template, csv = files(deep, GOOD)
    win.new_mailing_button.invoke()
    mw = win.mailing_window
    pump(root, lambda: mw.winfo_viewable())
    mw.data.set(str(csv))  # as Browse… sets it
    root.update()
    first, last = mw.data.entry._entry.xview()
    assert first > 0.5 and last == 1.0  # scrolled to the end: the name shows
    # Typing elsewhere leaves it showing the name; editing it the user scrolls as in any entry.
    mw.template.entry.focus_set()
    type_into(mw.template.entry, str(template))
    mw.data.entry.focus_set()
    root.update()
    mw.data.entry.icursor(0)
    mw.data.entry.xview_moveto(0.0)
    mw.subject.entry.focus_set()
    root.update()
    pump(root, lambda: mw.data.entry._entry.xview()[1] == 1.0)
    assert mw.template.entry._entry.xview()[1] == 1.0
