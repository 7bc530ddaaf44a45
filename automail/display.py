"""Whether a desktop session is available for the GUI (no GUI imports here)."""

from __future__ import annotations

import os
import sys


def has_display() -> bool:
    """True on Windows/macOS, and on Linux/BSD when an X11 or Wayland display is set."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
