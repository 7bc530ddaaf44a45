"""Fixtures and helpers shared by the GUI test modules (conftest.py makes the fixtures visible)."""

from __future__ import annotations

import gc
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
