"""`automail demo`: it runs in a temporary data folder of its own and leaves nothing behind (issue 11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from automail import demo
from automail.engine.service import Service
from automail.paths import data_dir
from tests.desktop import WINDOW_NAME, DesktopSession, missing_tools, wait_for


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder the demo's data folders go to (TMPDIR, here and in subprocesses)."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    return folder


def left_overs(temp_root: Path) -> list[str]:
    return sorted(p.name for p in temp_root.iterdir())


def automail(*args: str) -> list[str]:
    return [sys.executable, "-m", "automail", *args]


def test_headless_demo_sends_the_sample_and_leaves_nothing_behind(automail_home: Path, temp_root: Path) -> None:
    res = subprocess.run(automail("demo", "--headless"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "[10/10] sent" in res.stdout
    assert "e-mails are saved in " + str(temp_root / demo.HOME_PREFIX) in res.stdout
    assert "your own companies and tasks were not touched" in res.stdout
    assert not automail_home.exists()  # the user's data folder: no demo company, task, outbox or log
    assert left_overs(temp_root) == []


def test_demo_saves_the_sample_as_eml_in_its_own_folder(automail_home: Path, temp_root: Path) -> None:
    with demo.demo_home() as home:
        assert data_dir() == home and home.parent == temp_root
        server = demo.CaptureServer(home / demo.RECEIVED).start()
        svc = Service()
        try:
            demo.prepare_demo(svc, server)
            svc.start_engine()
            wait_for(lambda: server.received == demo.sample_size(), 60, what="the sample mailing")
        finally:
            svc.close()
            server.stop()
        saved = sorted((home / demo.RECEIVED).glob("*.eml"))
        assert len(saved) == 10 and b"Subject: Invoice 2026-0141" in saved[0].read_bytes()
    assert os.environ["AUTOMAIL_HOME"] == str(automail_home)  # restored
    assert left_overs(temp_root) == [] and not automail_home.exists()


def test_demo_folder_is_removed_when_the_capture_server_crashes(automail_home: Path, temp_root: Path) -> None:
    with pytest.raises(OSError, match="capture server"), demo.demo_home() as home:
        server = demo.CaptureServer(home / demo.RECEIVED).start()
        svc = Service()
        demo.prepare_demo(svc, server)
        server.stop()  # the capture server goes away mid-demo …
        svc.close()
        raise OSError("the capture server crashed")  # … and the demo ends with an error
    assert left_overs(temp_root) == [] and not automail_home.exists()


def running_demo(*args: str) -> subprocess.Popen[str]:
    """A headless demo that has sent its first e-mail."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        automail("demo", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "[ 1/10] sent" in line:
            return proc
    raise AssertionError(f"the demo ended early: {proc.wait()}")


@pytest.mark.slow
def test_ctrl_c_during_the_demo_leaves_nothing_behind(automail_home: Path, temp_root: Path) -> None:
    proc = running_demo("--headless")
    assert len(left_overs(temp_root)) == 1  # its data folder, while it runs
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert left_overs(temp_root) == [] and not automail_home.exists()


@pytest.mark.slow
def test_a_killed_demo_is_cleaned_up_by_the_next_one(automail_home: Path, temp_root: Path) -> None:
    proc = running_demo("--headless")
    proc.kill()  # nothing runs in the process any more: its folder stays …
    proc.wait(10)
    assert len(left_overs(temp_root)) == 1
    second = running_demo("--headless")  # … until the next demo starts
    assert len(left_overs(temp_root)) == 1  # only the second one's
    second.send_signal(signal.SIGINT)
    second.wait(30)
    assert left_overs(temp_root) == []


# ---- the desktop demo -----------------------------------------------------------------------


@pytest.mark.gui
@pytest.mark.timeout(90)
def test_gui_demo_shows_where_the_emails_are_with_an_open_folder_button(
    automail_home: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch, collect_tk_garbage: None
) -> None:
    import customtkinter as ctk

    from automail.ui import app as app_module
    from tests.test_ui_tray import FakeIcon

    opened: list[Path] = []
    monkeypatch.setattr("automail.ui.tray.open_folder", opened.append)  # not a real file manager
    app_module.theme.apply()
    with demo.demo_home() as home:
        root = ctk.CTk()
        root.withdraw()
        app = app_module.App(root, Service(), demo=True, icon_factory=FakeIcon)
        try:
            app.start()
            folder = home / demo.RECEIVED
            wait_for(lambda: root.update() or any(folder.glob("*.eml")), 30, interval=0.05, what="demo e-mails")
            banner = app.demo_banner
            assert banner.winfo_ismapped() and banner.folder == folder
            assert str(folder) in banner.label.cget("text") and "removed when you quit" in banner.label.cget("text")
            assert banner.winfo_y() < app.window.root.winfo_height() // 4  # at the top of the window
            banner.open_button.invoke()
            assert opened == [folder]
            app.quit()
            wait_for(lambda: root.update() or app.bridge._closed, 15, what="quit")
        finally:
            app.close()
    assert left_overs(temp_root) == []


@pytest.fixture
def desktop() -> Iterator[DesktopSession]:
    if missing := missing_tools():
        pytest.skip(f"needs {', '.join(missing)}")
    session = DesktopSession(notifications=False).start()
    yield session
    session.stop()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_desktop_demo_quit_by_signal_leaves_nothing_behind(
    desktop: DesktopSession, automail_home: Path, temp_root: Path, tmp_path: Path
) -> None:
    app: Any = subprocess.Popen(automail("demo"), env=desktop.full_env(), stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 30, what="demo window")
        wait_for(lambda: list(temp_root.glob(f"{demo.HOME_PREFIX}*/{demo.RECEIVED}/*.eml")), 30, what="e-mails")
        desktop.screenshot(tmp_path / "demo.png")
        app.send_signal(signal.SIGINT)
        assert app.wait(20) == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    time.sleep(0.1)
    assert left_overs(temp_root) == [] and not automail_home.exists()
