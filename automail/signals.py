"""The signals that ask AutoMail to stop gracefully (finish the message in flight), per platform."""

from __future__ import annotations

import signal


def stop_signals() -> tuple[int, ...]:
    """SIGINT and SIGTERM, plus SIGBREAK on Windows.

    Nothing sends SIGTERM on Windows: Ctrl+Break, closing the console window, logoff and shutdown
    all arrive as SIGBREAK (the C runtime maps every console control event but Ctrl+C to it).
    """
    extra = getattr(signal, "SIGBREAK", None)
    return (signal.SIGINT, signal.SIGTERM) + ((extra,) if extra is not None else ())
