"""Injected time: the engine and the throttle ask a clock, tests pass a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from automail.errors import InputError


class Clock(Protocol):
    """Wall-clock seconds since the epoch (UTC)."""

    def now(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def iso(ts: float | None) -> str | None:
    """UTC ISO-8601 text of a timestamp, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def hour_start(ts: float) -> float:
    """The start of the whole UTC hour ``ts`` falls in (a local clock hour in whole-hour time zones)."""
    return ts - ts % 3600


WHEN_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def parse_when(text: str, field: str = "not-before") -> float:
    """A local date and time as people write it ("2026-12-01 08:00", or a date: its midnight) → epoch seconds.

    An ISO time with an offset or Z ("2026-12-01T07:00:00Z") is taken as given.
    """
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        for fmt in WHEN_FORMATS:
            try:
                return time.mktime(datetime.strptime(value, fmt).timetuple())
            except ValueError:
                continue
        raise InputError(field, f"{text!r} is not a date and time", fix='write it like "2026-12-01 08:00" (local time)')
    return parsed.timestamp()
