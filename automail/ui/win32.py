"""Windows specifics of the desktop app: customtkinter's title-bar code, window icons, foreground rights.

Each function is safe on every platform (a no-op where it does not apply). The Windows calls go
through ``ctypes.windll`` looked up at call time, so tests can replace it on Linux.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any

from automail.paths import resource_path

log = logging.getLogger(__name__)

ICON_AFTER_MS = 300  # customtkinter sets its own logo on each window 200 ms after creating it


def prepare_customtkinter() -> None:
    """Switch off customtkinter's Windows title-bar colouring; call before the first window exists.

    On Windows it withdraws a window to recolour its title bar and restores only the state it saw
    before, so a root that was withdrawn at creation and shown before ``mainloop()`` is withdrawn
    again for good — the app would sit in the tray with no window (CustomTkinter#2810, in 5.2.2
    and 6.0.0). The same code races a dialog's withdraw → resizable() → show sequence. The cost:
    title bars keep the system colour in dark mode.
    """
    import customtkinter as ctk

    ctk.CTk._deactivate_windows_window_header_manipulation = True
    ctk.CTkToplevel._deactivate_windows_window_header_manipulation = True


def create_wrapper(window: Any) -> None:
    """Map a withdrawn window once, invisibly, so that Tk creates its Windows wrapper (Windows only).

    Logoff and shutdown reach Tk as WM_QUERYENDSESSION on that wrapper, which Tk turns into the
    WM_SAVE_YOURSELF protocol (win/tkWinWm.c, WmProc); Tk creates it only when the window is first
    mapped. An app started in the tray and never opened would otherwise be ended without a word.
    """
    if sys.platform != "win32":
        return
    try:
        window.attributes("-alpha", 0.0)
        window.deiconify()
        window.update_idletasks()  # Tk maps toplevels on idle: the wrapper is created here
        window.withdraw()
    except Exception:
        log.debug("could not prepare the window for logoff messages", exc_info=True)
    finally:
        try:
            window.attributes("-alpha", 1.0)
        except Exception:
            pass


def icon_file() -> str:
    return str(resource_path("assets", "automail.ico"))


def set_toplevel_icon(window: Any, later: Any = None) -> None:
    """Give a CTkToplevel AutoMail's icon instead of customtkinter's logo (Windows).

    customtkinter sets its logo 200 ms after creation unless ``iconbitmap`` was called: calling
    it now makes it skip that, and ``later(ms, func)`` (the window's after) sets it once more after
    that moment, in case another version of customtkinter ignores the flag.
    """
    if sys.platform != "win32":
        return  # X11 windows inherit the root's iconphoto(default=True)
    icon = icon_file()

    def apply() -> None:
        try:
            window.iconbitmap(icon)
        except Exception:
            log.debug("window icon not set", exc_info=True)

    apply()
    if later is not None:
        later(ICON_AFTER_MS, apply)


def allow_set_foreground(pid: int) -> None:
    """Let process ``pid`` take the foreground (Windows foreground lock), before asking it to show
    its window; only the process the user just started may pass that right on."""
    if sys.platform != "win32" or pid <= 0:
        return
    try:
        if not ctypes.windll.user32.AllowSetForegroundWindow(int(pid)):
            log.debug("AllowSetForegroundWindow(%s) refused", pid)
    except Exception:
        log.debug("AllowSetForegroundWindow failed", exc_info=True)
