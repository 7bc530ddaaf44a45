"""Where AutoMail keeps its data ($AUTOMAIL_HOME or the platform data folder) and its resources."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import platformdirs

from automail import APP_NAME


def data_dir() -> Path:
    """The data folder: $AUTOMAIL_HOME if set, else the user data folder of "AutoMail"."""
    env = os.environ.get("AUTOMAIL_HOME")
    base = Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    return base


def definitions_file(home: Path) -> Path:
    return home / "automail.json"


def outbox_dir(home: Path) -> Path:
    return home / "outbox"


def log_dir(home: Path) -> Path:
    return home / "logs"


def lock_dir(home: Path) -> Path:
    return home / "locks"


def resource_path(*parts: str) -> Path:
    """A bundled resource (assets/…), from the source tree or a PyInstaller bundle."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base.joinpath(*parts)


def safe_filename(name: str) -> str:
    """A file-system-safe version of a company name (keeps letters of any script)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip())
    return cleaned.strip("._") or "company"


def replace_file(src: str | Path, dst: str | Path, attempts: int = 10) -> None:
    """``os.replace(src, dst)``, retried for about 2.5 s while ``dst`` is held open.

    On Windows os.replace fails with PermissionError while another process (a second AutoMail
    reading the file, an antivirus scanner) has the target open; it is released within milliseconds.
    """
    for i in range(attempts):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))
