"""Issue 11, item 13, with a real pointer and keyboard (xdotool on the test's X server): drop-down lists do
not swallow the next click and close on Esc; Enter presses OK, Esc cancels; dialogs open centred on their
parent."""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

import pytest

from automail.engine.service import Service
from tests.ui_support import pump

ctk = pytest.importorskip("customtkinter")

pytestmark = [
    pytest.mark.gui,
    pytest.mark.usefixtures("collect_tk_garbage"),
    pytest.mark.skipif(shutil.which("xdotool") is None, reason="needs xdotool (Debian package xdotool)"),
]


def xdo(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


def click(widget: Any, dy: int = 0) -> None:
    x, y = widget.winfo_rootx() + widget.winfo_width() // 2, widget.winfo_rooty() + widget.winfo_height() // 2 + dy
    xdo("mousemove", str(x), str(y), "click", "1")


def settle(root: Any, seconds: float = 0.4) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        root.update()
        time.sleep(0.02)


def list_open(menu: Any) -> bool:
    return bool(menu._dropdown_menu.winfo_ismapped())


def test_first_click_after_opening_the_company_list_is_not_swallowed(win: Any, root: Any) -> None:
    settle(root)
    click(win.company_menu)
    pump(root, lambda: list_open(win.company_menu), timeout=5)
    click(win.add_company_button)  # closes the list and, in the same click, opens the dialog
    pump(root, lambda: win.company_dialog is not None, timeout=5)
    assert not list_open(win.company_menu)
    win.company_dialog.cancel()


def test_esc_closes_an_open_list_and_then_the_dialog(win: Any, service: Service, root: Any) -> None:
    win.add_task()
    form = win.task_dialog
    pump(root, lambda: form.winfo_viewable(), timeout=5)
    settle(root)
    click(form.type_menu)
    pump(root, lambda: list_open(form.type_menu), timeout=5)
    xdo("key", "Escape")
    pump(root, lambda: not list_open(form.type_menu), timeout=5)
    assert not form.closed  # the first Esc closed only the list
    form.focus_force()
    settle(root)
    xdo("key", "Escape")
    pump(root, lambda: form.closed, timeout=5)


@pytest.mark.parametrize("key", ["Return", "KP_Enter"])
def test_enter_presses_ok(win: Any, service: Service, root: Any, key: str) -> None:
    win.add_company()
    dlg = win.company_dialog
    pump(root, lambda: str(root.focus_get() or "").startswith(str(dlg.name.entry)), timeout=5)
    dlg.name.set("Nová firma")
    xdo("key", key)
    pump(root, lambda: dlg.closed, timeout=5)
    assert "Nová firma" in [c.name for c in service.companies()]


def test_dialogs_open_centred_on_their_parent(win: Any, root: Any) -> None:
    root.geometry("1000x700+120+60")
    settle(root)
    win.add_company()
    dlg = win.company_dialog
    pump(root, lambda: dlg.winfo_viewable(), timeout=5)
    settle(root)
    parent = (root.winfo_rootx() + root.winfo_width() / 2, root.winfo_rooty() + root.winfo_height() / 2)
    centre = (dlg.winfo_rootx() + dlg.winfo_width() / 2, dlg.winfo_rooty() + dlg.winfo_height() / 2)
    assert abs(centre[0] - parent[0]) <= 3 and abs(centre[1] - parent[1]) <= 3, (centre, parent)
    dlg.cancel()
