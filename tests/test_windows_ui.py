"""Windows readiness of the desktop app (issue 9), with the Windows-only parts faked.

Each test names what it fakes: ``sys.platform`` set to "win32", pystray's win32 buffer limits,
``ctypes.windll``, a sharing violation on os.replace. docs/packaging.md lists what is verified
on Windows only this way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from automail.ui import instance
from automail.ui.notify import WIN32_TEXT_LIMIT, WIN32_TITLE_LIMIT, Delivery, fit_utf16
from automail.ui.tray import Entry, menu_text


# ---- 2: notification text and title within pystray's win32 buffers ------------------------------
class Win32NotifyIcon:
    """pystray's win32 notify: NOTIFYICONDATAW(szInfo=WCHAR[256], szInfoTitle=WCHAR[64]); ctypes
    raises ValueError for a longer string (counted in UTF-16 units, NUL included)."""

    HAS_NOTIFICATION = True

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def notify(self, message: str, title: str | None = None) -> None:
        for text, size in ((message, 256), (title or "", 64)):
            if len(text.encode("utf-16-le")) // 2 >= size:
                raise ValueError("string too long")
        self.shown.append((title or "", message))


def test_long_notifications_are_cut_to_the_win32_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    icon = Win32NotifyIcon()
    delivery = Delivery(icon=icon, use_dbus=False, use_notify_send=False)
    title = "Task “Faktúry za október – veľkoobchod Bratislava a Košice” cannot reach its server"
    text = "For 5 min: " + "connection to smtp.firma.sk:587 refused; " * 10
    assert delivery.deliver_now(title, text) == "pystray"
    (shown_title, shown_text), *_ = icon.shown
    assert shown_title.endswith("…") and len(shown_title) == WIN32_TITLE_LIMIT
    assert shown_text.endswith("…") and len(shown_text) <= WIN32_TEXT_LIMIT
    assert shown_text.startswith("For 5 min: connection to smtp.firma.sk:587 refused;")
    assert delivery.deliver_now("Short", "Fits.") == "pystray"
    assert icon.shown[-1] == ("Short", "Fits.")


def test_fit_utf16_counts_what_a_wchar_buffer_holds() -> None:
    assert fit_utf16("abc", 3) == "abc"
    assert fit_utf16("abcd", 3) == "ab…"
    emoji = "📨" * 10  # two UTF-16 units each
    cut = fit_utf16(emoji, 7)
    assert cut == "📨📨📨…" and len(cut.encode("utf-16-le")) // 2 == 7


# ---- 7: "&" in menu texts -----------------------------------------------------------------------
def test_ampersand_is_doubled_in_windows_menus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert menu_text("Smith & Co") == "Smith & Co"
    monkeypatch.setattr(sys, "platform", "win32")
    assert menu_text("Smith & Co && Sons") == "Smith && Co &&&& Sons"


@pytest.mark.gui
def test_pystray_menu_items_carry_the_escaped_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import pystray  # noqa: F401 (picks its backend by the real platform, before the patch)
    from PIL import Image

    from automail.ui.tray import _make_pystray_icon

    monkeypatch.setattr(sys, "platform", "win32")  # after pystray picked its (xorg) backend
    entries = [Entry("R&D mailing", lambda: None), Entry(lambda: "Stop Smith & Co", lambda: None)]
    icon = _make_pystray_icon(Image.new("RGBA", (16, 16)), "AutoMail", entries)
    try:
        assert [item.text for item in icon.menu.items] == ["R&&D mailing", "Stop Smith && Co"]
    finally:
        dispatch = getattr(icon, "_automail_dispatch", None)
        if dispatch is not None:
            dispatch.close()


# ---- 13: the instance file is replaced with a retry -----------------------------------------------
def test_instance_file_replace_retries_while_the_file_is_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses os.replace while another process (antivirus, a second launch) has the
    target open: faked by failing the first two attempts with PermissionError."""
    real_replace = os.replace
    attempts: list[str] = []

    def held_replace(src: Any, dst: Any) -> None:
        attempts.append(str(dst))
        if len(attempts) <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held_replace)
    shown = threading.Event()
    guard = instance.claim(tmp_path, shown.set)
    assert guard is not None
    try:
        assert len(attempts) == 3
        assert json.loads((tmp_path / instance.FILE_NAME).read_text(encoding="utf-8"))["token"] == guard.token
    finally:
        guard.close()


# ---- Windows as customtkinter sees it: sys.platform = "win32" and a fake ctypes.windll ------------
class _Func:
    def __init__(self, name: str, calls: list[tuple[str, tuple[Any, ...]]], result: Any = 0) -> None:
        self.name, self.calls, self.result = name, calls, result

    def __call__(self, *args: Any) -> Any:
        self.calls.append((self.name, args))
        return self.result(*args) if callable(self.result) else self.result


class _Dll:
    def __init__(self, calls: list[tuple[str, tuple[Any, ...]]], **results: Any) -> None:
        self._calls, self._results = calls, results

    def __getattr__(self, name: str) -> _Func:
        return _Func(name, self._calls, self._results.get(name, 0))


class FakeWindll:
    """user32, shcore and dwmapi as customtkinter and AutoMail call them; records every call."""

    def __init__(self, dpi: int = 96) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

        def get_dpi(_monitor: Any, _kind: Any, x: Any, y: Any) -> int:
            x.contents.value = y.contents.value = dpi
            return 0

        self.user32 = _Dll(self.calls, GetParent=4242, AllowSetForegroundWindow=1)
        self.shcore = _Dll(self.calls, GetDpiForMonitor=get_dpi)
        self.dwmapi = _Dll(self.calls)

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch, collect_tk_garbage: None) -> FakeWindll:
    """Windows for customtkinter and AutoMail: win32 platform, fake windll, icons recorded not loaded
    (X11 Tk cannot read .ico files); customtkinter's title-bar switch as it is by default."""
    import ctypes
    import tkinter

    import customtkinter as ctk

    fake = FakeWindll()
    monkeypatch.setattr(ctypes, "windll", fake, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    for cls in (ctk.CTk, ctk.CTkToplevel):
        monkeypatch.setattr(cls, "_deactivate_windows_window_header_manipulation", False)
    icons: list[tuple[str, str]] = []

    def record_icon(self: Any, bitmap: Any = None, default: Any = None) -> None:
        icons.append((str(self), str(default or bitmap)))

    monkeypatch.setattr(tkinter.Wm, "wm_iconbitmap", record_icon)
    fake.icons = icons  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def win_root(windows: FakeWindll) -> Any:
    from automail.ui.app import make_root

    root = make_root()
    yield root
    try:
        root.destroy()
    except Exception:
        pass


def run_loop(root: Any, ms: int) -> None:
    """Run the real mainloop (customtkinter's Windows code runs at its start) for ``ms``."""
    root.after(ms, root.quit)
    root.mainloop()


@pytest.mark.gui
def test_main_window_stays_shown_once_the_mainloop_starts(win_root: Any, windows: FakeWindll) -> None:
    """CustomTkinter#2810: its title-bar code withdrew the root at mainloop() for good."""
    win_root.deiconify()  # App.start → show_window, before mainloop
    run_loop(win_root, 400)
    assert win_root.state() == "normal" and win_root.winfo_viewable()
    assert not windows.called("DwmSetWindowAttribute")  # the title-bar code did not run


@pytest.mark.gui
def test_a_tray_only_start_maps_the_root_once_invisibly(windows: FakeWindll, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tk delivers logoff (WM_QUERYENDSESSION) only to a window whose wrapper exists, i.e. one that
    was mapped once: make_root maps it at alpha 0 and withdraws it again."""
    import customtkinter as ctk

    from automail.ui.app import make_root

    calls: list[str] = []
    for name in ("deiconify", "withdraw", "attributes"):
        real = getattr(ctk.CTk, name)

        def spy(self: Any, *args: Any, _real: Any = real, _name: str = name) -> Any:
            calls.append(" ".join([_name, *map(str, args)]))
            return _real(self, *args)

        monkeypatch.setattr(ctk.CTk, name, spy)
    root = make_root()
    try:
        assert calls[-4:] == ["attributes -alpha 0.0", "deiconify", "withdraw", "attributes -alpha 1.0"]
        assert root.state() == "withdrawn"
    finally:
        root.destroy()


@pytest.mark.gui
def test_dialogs_show_and_secondary_windows_get_automails_icon(win_root: Any, windows: FakeWindll) -> None:
    from automail.ui.widgets import AppToplevel, ConfirmDialog

    win_root.deiconify()
    dialog = ConfirmDialog(win_root, "Remove task", "Remove it?", lambda: None)
    plain = AppToplevel(win_root)
    run_loop(win_root, 700)  # past customtkinter's 200 ms icon change and the dialog's 200 ms lift
    assert dialog.state() == "normal" and dialog.winfo_viewable()
    icons: list[tuple[str, str]] = windows.icons  # type: ignore[attr-defined]
    for window in (dialog, plain):
        mine = [icon for name, icon in icons if name == str(window)]
        assert mine and mine[-1].endswith("automail.ico"), mine  # the last word is ours, not CustomTkinter's
    root_icons = [icon for name, icon in icons if name == str(win_root)]
    assert root_icons and root_icons[-1].endswith("automail.ico")
    dialog.close()
    plain.destroy()


# ---- 4, 5: errors in Tk callbacks; logoff -------------------------------------------------------
class _Icon:
    HAS_NOTIFICATION = False

    def __init__(self, *_args: Any) -> None:
        self.visible = True
        self.stopped = threading.Event()

    def run(self, setup: Any = None) -> None:
        if setup:
            setup(self)
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()

    def update_menu(self) -> None:
        pass


@pytest.fixture
def desktop_app(root: Any, service: Any) -> Any:
    from automail.ui.app import App

    app = App(root, service, icon_factory=_Icon)
    yield app
    app.tray.stop()
    app.bridge.close()


@pytest.mark.gui
def test_errors_in_window_callbacks_reach_the_log_and_the_status_line(
    desktop_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.ui_support import pump

    def broken() -> None:
        raise KeyError("no such row")

    desktop_app.root.after(0, broken)
    with caplog.at_level("ERROR", logger="automail.ui.app"):
        pump(desktop_app.root, lambda: bool(caplog.records))
    record = caplog.records[0]
    assert record.getMessage() == "unexpected error in the window" and record.exc_info[0] is KeyError
    status = desktop_app.window.status_bar.cget("text")
    assert status.startswith("Unexpected error (KeyError)") and "log" in status


SEND_SAVE_YOURSELF = """
import sys
import Xlib.display, Xlib.protocol.event, Xlib.X
display = Xlib.display.Display()
frame = display.create_resource_object("window", int(sys.argv[1], 16))
protocols, save = display.intern_atom("WM_PROTOCOLS"), display.intern_atom("WM_SAVE_YOURSELF")
event = Xlib.protocol.event.ClientMessage(
    window=frame, client_type=protocols, data=(32, (save, Xlib.X.CurrentTime, 0, 0, 0))
)
frame.send_event(event, event_mask=Xlib.X.NoEventMask)
display.close()
"""


@pytest.mark.gui
@pytest.mark.skipif(sys.platform == "win32", reason="sends an X11 client message")
def test_logoff_message_finishes_the_engine_then_quits(service: Any, collect_tk_garbage: None) -> None:
    """A real WM_SAVE_YOURSELF client message (what Tk makes of Windows' WM_QUERYENDSESSION)."""
    from automail.ui.app import App, make_root
    from tests.desktop import wait_for

    root = make_root()
    app = App(root, service, icon_factory=_Icon)
    try:
        app.start()
        service.start_engine()
        root.deiconify()
        wait_for(lambda: root.update() or root.winfo_viewable(), 10, what="window shown")
        # Sent by another process, as a session manager would.  Once in ~600 CI runs Tk never saw the
        # first message (no "session ends" line; Xvfb without a window manager), so it is sent again
        # after 3 s, at most three times: what is tested is what the app does with it.
        for _attempt in range(3):
            if app._quitting:
                break
            subprocess.run([sys.executable, "-c", SEND_SAVE_YOURSELF, root.wm_frame()], check=True, timeout=30)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: root.update() or app._quitting, 3, what="quit")
                break
        assert app._quitting, "the app did not act on WM_SAVE_YOURSELF"
        assert not service.engine_running  # stopped before the answer, not in the background afterwards
        assert app.tray.icon is None
        wait_for(lambda: root.update() or app.bridge._closed, 15, what="quit finished")
    finally:
        app.close()


# ---- 11: the second launch hands on its foreground right ---------------------------------------
def test_second_launch_allows_the_first_to_take_the_foreground(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    fake = FakeWindll()
    first = instance.claim(tmp_path, lambda: None)
    assert first is not None
    monkeypatch.setattr(ctypes, "windll", fake, raising=False)
    monkeypatch.setattr(sys, "platform", "win32")
    try:
        assert instance.claim(tmp_path, lambda: None, wait_s=2) is None
    finally:
        first.close()
    assert fake.called("AllowSetForegroundWindow") == [(os.getpid(),)]  # the pid in the instance file


# ---- 9: tables scaled and coloured like the rest of the window ---------------------------------
@pytest.fixture
def scaled_dark(monkeypatch: pytest.MonkeyPatch, collect_tk_garbage: None) -> Any:
    """150 % scaling (customtkinter's factor, as a 144-dpi Windows display gives) and dark mode."""
    import customtkinter as ctk

    from automail.ui import theme

    theme.apply()
    ctk.set_appearance_mode("dark")
    ctk.set_widget_scaling(1.5)
    yield ctk
    ctk.set_widget_scaling(1.0)
    ctk.set_appearance_mode(theme.apply())


def screenshot(window: Any, path: Path) -> Any:
    """The window as the X server shows it (ImageMagick's import), as a PIL image."""
    import shutil
    import subprocess

    from PIL import Image

    if shutil.which("import") is None:
        pytest.skip("needs ImageMagick's import")
    window.update()
    subprocess.run(["import", "-window", str(int(window.wm_frame(), 16)), str(path)], check=True, timeout=30)
    return Image.open(path).convert("RGB")


def mean_brightness(image: Any, box: tuple[int, int, int, int]) -> float:
    from PIL import ImageStat

    return float(sum(ImageStat.Stat(image.crop(box).convert("L")).mean))


@pytest.mark.gui
def test_tables_scale_to_150_percent_and_follow_dark_mode(scaled_dark: Any, service: Any, tmp_path: Path) -> None:
    from tkinter import ttk

    from automail.ui.main_window import COLUMNS, MainWindow
    from automail.ui.widgets import TABLE_COLORS
    from tests.helpers import make_task
    from tests.ui_support import COMPANY, pump

    for n in range(6):
        service.add_task(make_task(f"Mailing {n}", COMPANY, port=2525, computer="OFFICE-PC"))
    root = scaled_dark.CTk()
    try:
        window = MainWindow(root, service, on_quit=root.destroy)
        # not window.show(): its focus_force crashed Tk here, in a process that had other Tk roots before
        root.deiconify()
        window.refresh()
        root.geometry("1400x700+0+0")
        pump(root, lambda: bool(window.tree.get_children()) and root.winfo_viewable())
        style = ttk.Style(root)
        name = str(window.tree.cget("style"))
        assert int(style.lookup(name, "rowheight")) == 42  # 28 px × 1.5
        assert str(style.lookup(name, "font")).split()[-1] == "-20"  # 13 px × 1.5, rounded
        assert window.tree.column("name", "width") == round(COLUMNS[0][2] * 1.5)
        assert style.lookup(name, "background") == TABLE_COLORS["dark"].background
        shot = screenshot(root, tmp_path / "main_window_dark_150.png")
        x, y = window.tree.winfo_rootx() - root.winfo_rootx(), window.tree.winfo_rooty() - root.winfo_rooty()
        w, h = window.tree.winfo_width(), window.tree.winfo_height()
        assert mean_brightness(shot, (x + 5, y + h - 60, x + w - 5, y + h - 5)) < 80  # dark rows, not white
        heading = window.tree.bbox(window.tree.get_children()[0])  # first row's box, below the heading
        assert heading and heading[3] == 42
        # a later change of scaling (moving the window to another monitor) re-sizes the table
        scaled_dark.set_widget_scaling(1.0)
        pump(root)
        assert int(style.lookup(name, "rowheight")) == 28
        assert window.tree.column("name", "width") == COLUMNS[0][2]
    finally:
        root.destroy()
