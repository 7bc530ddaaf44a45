"""Windows readiness of the desktop app (issue 9), with the Windows-only parts faked.

Each test names what it fakes: ``sys.platform`` set to "win32", pystray's win32 buffer limits,
``ctypes.windll``, a sharing violation on os.replace. docs/packaging.md lists what is verified
on Windows only this way.
"""

from __future__ import annotations

import json
import os
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
