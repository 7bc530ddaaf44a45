"""Pick customtkinter's appearance once at start, so nothing polls the desktop theme while idle."""

from __future__ import annotations

import os
import sys

_applied: str | None = None


def choose_mode() -> str:
    """ "light" or "dark", decided once: $AUTOMAIL_THEME, else the OS setting on Windows/macOS, else light.

    Never "system": customtkinter then asks darkdetect every 30 ms, which on Linux runs
    `gsettings` as a subprocess (~18 % of a core, see shared notes on customtkinter).
    """
    forced = os.environ.get("AUTOMAIL_THEME", "").strip().lower()
    if forced in ("light", "dark"):
        return forced
    if sys.platform in ("win32", "darwin"):
        try:
            import darkdetect

            return "dark" if darkdetect.isDark() else "light"
        except Exception:
            return "light"
    return "light"


def apply() -> str:
    """Set the fixed appearance mode and the blue colour theme (idempotent); return the mode."""
    global _applied
    if _applied is not None:
        return _applied
    import customtkinter as ctk
    from customtkinter.windows.widgets.appearance_mode.appearance_mode_tracker import AppearanceModeTracker
    from customtkinter.windows.widgets.scaling.scaling_tracker import ScalingTracker

    mode = choose_mode()
    ctk.set_appearance_mode(mode)
    ctk.set_default_color_theme("blue")
    # With a fixed mode the tracker's 30 ms loop has nothing to detect; and the DPI check only
    # matters when a window moves between monitors of different scaling (Windows). Slower loops
    # keep an idle app under 1 % of a core (bench/bench_footprint.py).
    AppearanceModeTracker.update_loop_interval = 2000
    ScalingTracker.update_loop_interval = 500 if sys.platform == "win32" else 2000
    _applied = mode
    return mode
