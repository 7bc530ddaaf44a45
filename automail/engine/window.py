"""Sending windows: pure, told the time, says how long until a task may send; never sleeps.

Windows are local wall-clock times ("Mon-Fri 08:00-17:00" opens at 08:00 on the clock on the wall,
in summer and in winter). Outside every window the worker waits; when one opens, the throttle
spaces the sends as always (its history is kept), so an opening window is not a burst.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo

from automail.models import SendingWindow


class Windows:
    """A task's sending windows; none means any time."""

    def __init__(self, texts: Iterable[str], tz: tzinfo | None = None) -> None:
        """``tz``: the time zone the windows are read in (None: this computer's local time)."""
        self.windows = tuple(SendingWindow.parse(t) for t in texts)
        self.tz = tz

    @property
    def text(self) -> str:
        """The windows as the user wrote them, canonically ("Mon-Fri 08:00-17:00; Sat 09:00-12:00")."""
        return "; ".join(w.text for w in self.windows)

    def delay(self, now: float) -> float:
        """Seconds until a window is open at ``now`` (0 = open now, or no windows)."""
        if not self.windows:
            return 0.0
        today = datetime.fromtimestamp(now, self.tz).date()
        next_open: float | None = None
        for offset in range(-1, 8):  # a window opened yesterday may still be open; one opens within a week
            day = today + timedelta(days=offset)
            for w in self.windows:
                if day.weekday() not in w.days:
                    continue
                start = datetime(day.year, day.month, day.day) + timedelta(minutes=w.start)
                opens, closes = self._ts(start), self._ts(start + timedelta(minutes=w.length))
                if opens <= now < closes:
                    return 0.0
                if opens > now and (next_open is None or opens < next_open):
                    next_open = opens
        assert next_open is not None  # every window has a day, and every day comes within a week
        return next_open - now

    def _ts(self, local: datetime) -> float:
        """Epoch seconds of a wall-clock time (a time skipped by a DST change is read as after it)."""
        return (local.replace(tzinfo=self.tz) if self.tz is not None else local).timestamp()
