"""GUI tests of the main window found by trying it as a new user (issue 11): Problems panel, buttons, flicker."""

from __future__ import annotations

import time
from typing import Any

import pytest

from automail.engine.service import Service
from automail.models import SmtpSettings, Task, TaskState
from automail.store.outbox import Outbox
from tests.ui_support import COMPANY, pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("collect_tk_garbage")]

OTHER = "Druhá firma a.s."
LOGIN_REJECTED = (
    "SMTP login rejected by smtp.druha.sk:587 for info@druha.sk: 535 5.7.8 bad credentials"
    " — open Settings › Basic and check the user name and password"
)


def smtp_settings(**kw: Any) -> SmtpSettings:
    base = dict(host="smtp.firma.sk", username="info@firma.sk", sender="Firma <info@firma.sk>")
    base.update(kw)
    return SmtpSettings(**base)  # type: ignore[arg-type]


def add_task(service: Service, name: str, company: str = COMPANY, **kw: Any) -> Task:
    return service.add_task(Task(name, company, smtp_settings(), computer="OFFICE-PC", **kw), password="pw")


def button_color(button: Any) -> str:
    """The fill colour the button's face is painted in now."""
    return str(button._canvas.itemcget("inner_parts", "fill"))


# ---- item 3: the Problems panel lists every company's problems -----------------------
def test_problems_panel_shows_errors_of_other_companies(win: Any, service: Service, root: Any) -> None:
    service.add_company(OTHER)
    add_task(service, "Invoices")
    add_task(service, "Newsletter", OTHER)
    service.outbox(OTHER).set_task_state("Newsletter", TaskState.ERROR, time.time(), LOGIN_REJECTED, "task_fatal")
    win.select_company(COMPANY)
    pump(root)
    assert win.company == COMPANY
    assert win.error_panel.winfo_ismapped()
    ((task, text),) = win.error_panel.rows
    assert task == "Newsletter"
    assert text.startswith(f"Newsletter ({OTHER}): SMTP login rejected — open Settings › Basic")

    settings_button, _start = win.error_panel.buttons[0]
    settings_button.invoke()
    pump(root)
    assert win.company == OTHER and win.company_menu.get() == OTHER
    assert win.selected_task() == "Newsletter"
    assert win.settings_dialog is not None and win.settings_dialog._task.name == "Newsletter"
    win.settings_dialog.cancel()


def test_problems_panel_notices_an_error_in_another_company_by_itself(win: Any, service: Service, root: Any) -> None:
    service.add_company(OTHER)
    add_task(service, "Newsletter", OTHER)
    win.select_company(COMPANY)
    assert not win.error_panel.rows
    engine_side = Outbox(service.definitions.company(OTHER).outbox_path, OTHER)  # as an engine process writes it
    engine_side.set_task_state("Newsletter", TaskState.ERROR, time.time(), LOGIN_REJECTED, "task_fatal")
    engine_side.close()
    win._tick()  # the periodic check: another company's outbox changed
    pump(root)
    assert [t for t, _text in win.error_panel.rows] == ["Newsletter"]


def test_problems_panel_start_again_reaches_a_task_of_another_company(win: Any, service: Service) -> None:
    service.add_company(OTHER)
    add_task(service, "Newsletter", OTHER)
    service.outbox(OTHER).set_task_state("Newsletter", TaskState.ERROR, time.time(), LOGIN_REJECTED, "task_fatal")
    win.select_company(COMPANY)
    _settings, start = win.error_panel.buttons[0]
    start.invoke()
    assert service.task("Newsletter").enabled
    assert win.company == OTHER


# ---- item 7: Start / Stop enabled (and looking it) only when they can act -------------
def test_start_and_stop_look_disabled_without_a_selected_task(win: Any, service: Service, root: Any) -> None:
    pump(root)
    enabled_look = button_color(win.add_button)
    for button in (win.start_button, win.stop_button, win.edit_button, win.settings_button):
        assert button.cget("state") == "disabled"
        assert button_color(button) != enabled_look, "a disabled button must not look pressable"

    add_task(service, "Invoices")
    win.refresh()
    win.select_task("Invoices")
    pump(root)
    assert win.start_button.cget("state") == "normal"
    assert button_color(win.start_button) == enabled_look
    assert win.stop_button.cget("state") == "disabled"  # a stopped task cannot be stopped
    assert button_color(win.stop_button) != enabled_look
    win.start_button.invoke()
    pump(root)
    assert win.start_button.cget("state") == "disabled"  # running fine: nothing to start
    assert win.stop_button.cget("state") == "normal"
    assert button_color(win.stop_button) == enabled_look


# ---- item 15: a refresh does not repaint a hovered button ------------------------------
def test_refresh_keeps_the_hover_colour_of_the_button_under_the_pointer(win: Any, service: Service, root: Any) -> None:
    add_task(service, "Invoices")
    win.refresh()
    win.select_task("Invoices")
    pump(root)
    for button in (win.server_button, win.start_button, win.add_button):
        button._on_enter()  # the pointer enters the button
        hover = button_color(button)
        for _ in range(3):
            win.refresh()  # what every engine event burst does while sending
            pump(root)
        assert button_color(button) == hover, button.cget("text")
        button._on_leave()


def test_refresh_leaves_unchanged_rows_alone(win: Any, service: Service, root: Any) -> None:
    add_task(service, "Invoices")
    win.refresh()
    calls: list[tuple[Any, ...]] = []
    original = win.tree.item

    def spy(item: str, option: Any = None, **kw: Any) -> Any:
        if kw:
            calls.append((item, kw))
        return original(item, option, **kw)

    win.tree.item = spy  # type: ignore[method-assign]
    win.refresh()
    assert calls == []
