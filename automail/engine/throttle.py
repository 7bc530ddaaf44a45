"""Leaky-bucket throttle: pure, told the time, says how long to wait; never sleeps."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

HOUR = 3600.0
DAY = 86400.0


class Throttle:
    """At N/h one send every 3600/N s (the first at once), at most N in any 60 minutes,
    and, with a daily cap C, at most C in any rolling 24 hours.

    The spacing counts from the later of a send's start and its end (``end``): the server then never
    sees two messages closer than 3600/N s, even when one send took longer than the next (on a
    loaded machine a send's own time varies by tens of ms; spacing only the starts let such a
    pair arrive closer together).  The cost is the send's own time, a few ms per interval.

    ``rate_per_hour=None`` means no spacing (only the daily cap, if any, applies).
    """

    def __init__(self, rate_per_hour: int | None, daily_cap: int | None = None) -> None:
        self.rate_per_hour = rate_per_hour
        self.daily_cap = daily_cap
        self._last: float | None = None
        self._ended: float | None = None  # the end of the latest send (``end``)
        self._hour: deque[float] = deque()
        self._day: deque[float] = deque()

    @property
    def interval(self) -> float:
        """Seconds between two sends (0 when unlimited)."""
        return HOUR / self.rate_per_hour if self.rate_per_hour else 0.0

    def reconfigure(self, rate_per_hour: int | None, daily_cap: int | None) -> None:
        """Change the limits, keeping the history."""
        self.rate_per_hour = rate_per_hour
        self.daily_cap = daily_cap

    def restore(self, send_times: Iterable[float]) -> None:
        """Continue after a restart from recorded sends, so a restart is not a burst."""
        for t in sorted(send_times):
            self.record(t)

    def record(self, now: float) -> None:
        """A send happened at ``now``."""
        self._last = now if self._last is None else max(self._last, now)
        if self.rate_per_hour:
            self._hour.append(now)
        if self.daily_cap:
            self._day.append(now)

    def end(self, now: float) -> None:
        """The send that started last ended at ``now`` (the server has the message, or refused it)."""
        self._ended = now if self._ended is None else max(self._ended, now)

    def take(self, now: float) -> float | None:
        """Record a send at ``now`` before it starts; returns what ``give_back`` needs to undo it."""
        previous = self._last
        self.record(now)
        return previous

    def give_back(self, now: float, previous: float | None) -> None:
        """Undo ``take(now)``: the send did not happen after all (nothing was due)."""
        for window in (self._hour, self._day):
            if window and window[-1] == now:
                window.pop()
        if self._last == now:
            self._last = previous

    def delay(self, now: float) -> float:
        """Seconds to wait before the next send may start (0 = go now)."""
        self._expire(now)
        wait = 0.0
        if self.rate_per_hour and self._last is not None:
            latest = self._last if self._ended is None else max(self._last, self._ended)
            wait = max(wait, latest + self.interval - now)
            if len(self._hour) >= self.rate_per_hour:
                wait = max(wait, self._hour[len(self._hour) - self.rate_per_hour] + HOUR - now)
        if self.daily_cap and len(self._day) >= self.daily_cap:
            wait = max(wait, self._day[len(self._day) - self.daily_cap] + DAY - now)
        return max(wait, 0.0)

    def _expire(self, now: float) -> None:
        while self._hour and self._hour[0] <= now - HOUR:
            self._hour.popleft()
        while self._day and self._day[0] <= now - DAY:
            self._day.popleft()
