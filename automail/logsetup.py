"""Logging to the rotating file logs/automail.log in the data folder (and stderr on request)."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from automail.paths import log_dir

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(home: Path, verbose: bool = False, to_stderr: bool = False) -> Path:
    """Send AutoMail's log to ``logs/automail.log`` (1 MB × 5 files); returns the file path."""
    folder = log_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "automail.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_automail", False):
            root.removeHandler(handler)
            handler.close()
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    file_handler._automail = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    # A windowed (frozen) app has no stderr at all.
    if to_stderr and sys.stderr is not None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        stream._automail = True  # type: ignore[attr-defined]
        root.addHandler(stream)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiosmtpd's own logger is chatty about every connection of the demo server.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    return path
