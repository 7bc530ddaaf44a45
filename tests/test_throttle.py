"""The leaky bucket over simulated hours and days (injected time, no sleeping)."""

from __future__ import annotations

import bisect
import itertools

import pytest

from automail.engine.throttle import DAY, HOUR, Throttle


def simulate(throttle: Throttle, start: float, duration: float, demand: int | None = None) -> list[float]:
    """Send as fast as the throttle allows for ``duration`` simulated seconds."""
    now, sends = start, []
    while now < start + duration and (demand is None or len(sends) < demand):
        wait = throttle.delay(now)
        if wait > 0:
            now += wait
            continue
        throttle.record(now)
        sends.append(now)
    return [s for s in sends if s < start + duration]


def max_in_window(sends: list[float], window: float) -> int:
    return max((bisect.bisect_left(sends, s + window) - i for i, s in enumerate(sends)), default=0)


@pytest.mark.parametrize("rate", [100, 1000, 1800, 3000])
def test_even_spacing_and_hourly_limit_over_a_simulated_day(rate: int) -> None:
    sends = simulate(Throttle(rate), 0.0, DAY)
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert sends[0] == 0.0  # the first goes at once
    assert min(gaps) == pytest.approx(HOUR / rate)
    assert max(gaps) == pytest.approx(HOUR / rate)
    assert max_in_window(sends, HOUR) <= rate
    assert len(sends) == pytest.approx(24 * rate, abs=1)


def test_delay_is_pure_and_exact() -> None:
    t = Throttle(3000)
    assert t.delay(100.0) == 0.0
    t.record(100.0)
    assert t.delay(100.0) == pytest.approx(1.2)
    assert t.delay(100.5) == pytest.approx(0.7)
    assert t.delay(101.2) == 0.0
    assert t.delay(100.5) == pytest.approx(0.7)  # asking does not change anything


def test_restart_continues_from_recorded_sends_without_burst() -> None:
    first = Throttle(1000)
    sends = simulate(first, 0.0, 600.0)
    restarted = Throttle(1000)
    restarted.restore(sends)  # what the outbox's send log gives back after a restart
    now = sends[-1] + 0.1
    assert restarted.delay(now) == pytest.approx(3.6 - 0.1)
    more = simulate(restarted, now, 600.0)
    gaps = [b - a for a, b in itertools.pairwise(sends + more)]
    assert min(gaps) >= 3.6 - 1e-9


def test_daily_cap_holds_over_rolling_24_hours() -> None:
    t = Throttle(3000, daily_cap=2000)
    sends = simulate(t, 0.0, 3 * DAY)
    assert max_in_window(sends, DAY) <= 2000
    assert len(sends) == 3 * 2000
    # the cap releases exactly 24 h after the first send of the window
    assert sends[2000] == pytest.approx(sends[0] + DAY)


def test_unlimited_rate_with_cap_only() -> None:
    t = Throttle(None, daily_cap=10)
    assert all(t.delay(0.0) == 0 or t.record(0.0) for _ in range(1))
    for _ in range(10):
        assert t.delay(5.0) == 0.0
        t.record(5.0)
    assert t.delay(5.0) == pytest.approx(DAY)


def test_unlimited_without_cap_never_waits() -> None:
    t = Throttle(None)
    for i in range(1000):
        t.record(float(i) / 1000)
        assert t.delay(float(i) / 1000) == 0.0


def test_lower_rate_after_reconfigure_applies_to_next_send() -> None:
    t = Throttle(3000)
    t.record(0.0)
    t.reconfigure(100, None)
    assert t.delay(1.0) == pytest.approx(35.0)


def test_spacing_counts_from_the_end_of_a_send_that_took_long() -> None:
    """The server never sees two messages closer than the interval, however long one send took."""
    t = Throttle(3000)  # one every 1.2 s
    t.take(0.0)
    t.end(0.05)  # the first send took 50 ms
    assert t.delay(1.2) == pytest.approx(0.05)  # not at 1.2: its message reached the server at ~0.05
    t.take(1.25)
    t.end(1.251)  # a quick one: spacing counts from the later start again
    assert t.delay(2.4) == pytest.approx(0.051)
    t.end(0.5)  # an older end changes nothing
    assert t.delay(2.451) == 0.0


def test_a_send_ending_at_time_zero_still_counts_as_its_end() -> None:
    """Injected clocks may start at 0: an end recorded at 0.0 is an end, not "no end yet"."""
    t = Throttle(3000)
    t.take(-0.05)
    t.end(0.0)
    assert t.delay(1.15) == pytest.approx(0.05)
