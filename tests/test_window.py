"""Sending windows: parsed as people write them, and over simulated weeks with the throttle (no burst)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from automail.engine.throttle import Throttle
from automail.engine.window import Windows
from automail.errors import InputError
from automail.models import SendingWindow, SmtpSettings, Task

MONDAY = datetime(2026, 11, 30, tzinfo=UTC).timestamp()  # Monday 30 November 2026, 00:00 UTC
H = 3600.0


def test_parse_and_canonical_text() -> None:
    assert SendingWindow.parse("Mon-Fri 08:00-17:00").text == "Mon-Fri 08:00-17:00"
    assert SendingWindow.parse("mon,wed,fri 9:00-12:30").text == "Mon,Wed,Fri 09:00-12:30"
    assert SendingWindow.parse("Fri-Mon 22:00-06:00").days == frozenset({4, 5, 6, 0})
    assert SendingWindow.parse("08:00-24:00").text == "08:00-24:00"
    assert SendingWindow.parse("22:00-06:00").length == 8 * 60
    for bad, why in [
        ("Mon-Fri", "not a time like 08:00"),
        ("Mon-Fri 0800", "no time range"),
        ("Mon-Fri 8-17", "not a time like 08:00"),
        ("Xyz 08:00-17:00", "not a day"),
        ("Mon 08:00-08:00", "starts when it ends"),
        ("Mon 08:00-25:00", "not a time of day"),
        ("Mon 08:00-17:00 extra", "not a sending window"),
    ]:
        with pytest.raises(InputError, match=why):
            SendingWindow.parse(bad)
    task = Task("T", "C", SmtpSettings(host="h", sender="a@b.sk"), windows=("mon-fri 8:00-17:00",)).validate()
    assert task.windows == ("Mon-Fri 08:00-17:00",)
    assert Task.from_doc(task.to_doc()).windows == task.windows
    plain = Task("T", "C", SmtpSettings(host="h"))
    assert "windows" not in plain.to_doc()  # tasks without windows keep their fingerprint


def test_delay_inside_outside_and_overnight() -> None:
    w = Windows(["Mon-Fri 08:00-17:00", "Sat 09:00-12:00"], UTC)
    assert w.delay(MONDAY) == 8 * H  # Monday 00:00 → 08:00
    assert w.delay(MONDAY + 8 * H) == 0 and w.delay(MONDAY + 17 * H - 1) == 0
    assert w.delay(MONDAY + 17 * H) == 15 * H  # closes at 17:00, opens Tuesday 08:00
    friday_evening = MONDAY + 4 * 24 * H + 17 * H
    assert w.delay(friday_evening) == 16 * H  # Saturday 09:00
    assert w.delay(MONDAY + 5 * 24 * H + 12 * H) == (24 + 12 + 8) * H  # Saturday noon → Monday 08:00
    night = Windows(["Sun 22:00-06:00"], UTC)
    assert night.delay(MONDAY + 5 * H) == 0  # opened Sunday evening, still open Monday 05:00
    assert night.delay(MONDAY + 6 * H) == (6 * 24 - 6 + 22) * H
    assert Windows([], UTC).delay(MONDAY) == 0


def test_wall_clock_across_a_daylight_saving_change() -> None:
    bratislava = ZoneInfo("Europe/Bratislava")
    w = Windows(["08:00-17:00"], bratislava)
    saturday = datetime(2027, 3, 27, 18, 0, tzinfo=bratislava).timestamp()  # the clocks go forward that night
    sunday_8 = datetime(2027, 3, 28, 8, 0, tzinfo=bratislava).timestamp()
    assert w.delay(saturday) == sunday_8 - saturday == 13 * H  # 14 wall-clock hours, 13 real ones
    assert datetime.fromtimestamp(saturday + w.delay(saturday), bratislava).hour == 8


def simulate(windows: Windows, throttle: Throttle, start: float, days: int) -> list[float]:
    """The worker's decision over simulated time: send when both the window and the throttle allow."""
    sends: list[float] = []
    t, end = start, start + days * 24 * H
    while t < end:
        wait = max(windows.delay(t), throttle.delay(t))
        if wait > 0:
            t += wait
            continue
        throttle.record(t)
        sends.append(t)
    return sends


def test_two_simulated_weeks_send_only_inside_windows_and_never_burst() -> None:
    windows = Windows(["Mon-Fri 08:00-17:00"], UTC)
    sends = simulate(windows, Throttle(rate_per_hour=100), MONDAY, 14)
    assert all(windows.delay(t) == 0 for t in sends)
    per_day: dict[int, list[float]] = {}
    for t in sends:
        per_day.setdefault(int((t - MONDAY) // (24 * H)), []).append(t)
    assert sorted(per_day) == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]  # weekdays only
    for day, times in per_day.items():
        assert times[0] == MONDAY + day * 24 * H + 8 * H  # the first send when the window opens …
        assert len(times) == 9 * 100  # … and 100 an hour for 9 hours, not more
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 36.0 - 1e-6  # evenly spaced: no burst after the night or the weekend
    # In any 60 minutes, never more than the hourly rate.
    for i in range(len(sends) - 100):
        assert sends[i + 100] - sends[i] >= H - 1e-6


def test_daily_cap_and_window_together() -> None:
    windows = Windows(["Mon-Fri 08:00-17:00"], UTC)
    sends = simulate(windows, Throttle(rate_per_hour=600, daily_cap=1000), MONDAY, 3)
    # 1,000 in any 24 hours: Monday's 1,000 go by 09:40, Tuesday resumes at 08:00 only where the
    # rolling day allows (after Monday's first sends leave it), and never outside the window.
    assert all(windows.delay(t) == 0 for t in sends)
    for i in range(len(sends) - 1000):
        assert sends[i + 1000] - sends[i] >= 24 * H - 1e-6
    assert len(sends) == 3000
