"""The bridge: posts from any thread run on the Tk thread; it slows down when idle."""

from __future__ import annotations

import gc
import threading
import time
import tkinter
from collections.abc import Iterator

import pytest

from automail.models import EngineEvent, EventKind
from automail.ui.bridge import Bridge

pytestmark = pytest.mark.gui


@pytest.fixture
def root() -> Iterator[tkinter.Tk]:
    tk = tkinter.Tk()
    tk.withdraw()
    yield tk
    tk.destroy()
    del tk
    # Collect the Tcl interpreter here, on the Tk thread: collected later by a garbage collection
    # that happens to run in another thread, it aborts the process (Tcl_AsyncDelete).
    gc.collect()


def pump(root: tkinter.Tk, until: threading.Event | None = None, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and until.is_set()):
        root.update()
        time.sleep(0.005)


def test_posts_from_threads_run_on_the_tk_thread(root: tkinter.Tk) -> None:
    bridge = Bridge(root, busy_ms=20)
    bridge.start()
    tk_thread = threading.current_thread()
    ran_on: list[threading.Thread] = []
    events: list[tuple[str, threading.Thread]] = []
    done = threading.Event()
    bridge.add_handler(lambda e: events.append((e.kind, threading.current_thread())))

    def worker(n: int) -> None:
        for _ in range(50):
            bridge.post(lambda: ran_on.append(threading.current_thread()))
        bridge.sink(EngineEvent(EventKind.SENT, f"T{n}", "Firma", message_id=n))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bridge.post(done.set)
    pump(root, done)
    assert done.is_set()
    assert len(ran_on) == 200 and set(ran_on) == {tk_thread}
    assert [k for k, _ in events] == ["sent"] * 4 and {t for _, t in events} == {tk_thread}
    bridge.close()


def test_a_failing_callback_does_not_stop_the_bridge(root: tkinter.Tk) -> None:
    bridge = Bridge(root, busy_ms=20)
    bridge.start()
    done = threading.Event()
    bridge.post(lambda: 1 / 0)
    bridge.add_handler(lambda e: 1 / 0)
    bridge.post(EngineEvent(EventKind.SENT, "T", "Firma"))
    bridge.post(done.set)
    pump(root, done)
    assert done.is_set()


def test_backs_off_when_idle_and_speeds_up_on_posts(root: tkinter.Tk, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automail.ui.bridge.IDLE_AFTER_S", 0.2)
    bridge = Bridge(root, busy_ms=20, idle_ms=300)
    delays: list[int] = []
    real_after = root.after

    def spy(ms: int, func: object) -> str:
        delays.append(ms)
        return real_after(ms, func)

    monkeypatch.setattr(root, "after", spy)
    bridge.start()
    pump(root, seconds=1.0)
    assert delays[-1] == 300  # idle: slow polling
    idle_ticks = len(delays)
    assert idle_ticks < 20
    done = threading.Event()
    threading.Thread(target=lambda: bridge.post(done.set)).start()
    pump(root, done, 1.0)
    pump(root, seconds=0.1)
    assert 20 in delays[idle_ticks:]  # busy again right after an item
    bridge.close()


def test_posts_after_close_are_dropped(root: tkinter.Tk) -> None:
    bridge = Bridge(root)
    bridge.close()
    bridge.post(lambda: None)
    assert bridge.drain() == 0
