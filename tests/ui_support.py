"""Fixtures and helpers shared by the GUI test modules (conftest.py makes the fixtures visible)."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service

COMPANY = "Firma s.r.o."


def pump(root: Any, until: Callable[[], bool] | None = None, timeout: float = 5.0) -> None:
    """Process Tk events until ``until()`` holds (or a few rounds when None)."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        root.update()
        rounds += 1
        if until is None and rounds >= 5:
            return
        if until is not None and until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def tcl_calls(work: Callable[[], object]) -> int:
    """How many Tcl commands ``work`` runs. Each releases the GIL, and while a background job runs
    Python, getting it back can take a whole switch interval."""
    count = 0

    def profile(_frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call" and arg.__name__ == "call" and type(getattr(arg, "__self__", None)).__name__ == "tkapp":
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


@pytest.fixture
def service(automail_home: Path) -> Iterator[Service]:
    svc = Service(home=automail_home, computer="OFFICE-PC", user="jana")
    svc.add_company(COMPANY)
    yield svc
    svc.close()


@pytest.fixture
def collect_tk_garbage() -> Iterator[None]:
    """Free earlier tests' Tk objects here, on the main thread: a Tcl interpreter freed by a cyclic
    GC run in an engine or worker thread aborts the process ("async handler deleted by the wrong thread")."""
    gc.collect()
    yield
    gc.collect()


@pytest.fixture
def root() -> Iterator[Any]:
    import customtkinter as ctk

    from automail.ui import theme

    theme.apply()  # a fixed mode, never "system": that polls gsettings every 30 ms
    r = ctk.CTk()
    yield r
    try:
        r.destroy()
    except Exception:
        pass


@pytest.fixture
def win(root: Any, service: Service) -> Any:
    from automail.ui.main_window import MainWindow

    w = MainWindow(root, service, on_quit=root.destroy)
    pump(root)
    return w
