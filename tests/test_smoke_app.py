"""Smoke test: the real app under its own Xvfb with a tray host (trayer), D-Bus and dunst."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.desktop import TRAY_CLASSNAME, WINDOW_NAME, DesktopSession, missing_tools, wait_for
from tests.smtpd import SmtpServer


def _session(**options: Any) -> Iterator[DesktopSession]:
    if missing := missing_tools():
        pytest.skip(f"needs {', '.join(missing)}")
    session = DesktopSession(**options).start()
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def desktop() -> Iterator[DesktopSession]:
    """A display with a tray host, a session bus and dunst."""
    yield from _session()


def cli(session: DesktopSession, *args: str, stdin: str | None = None) -> str:
    result = session.run([sys.executable, "-m", "automail", *args], input=stdin)
    return result.stdout


@contextmanager
def running_app(session: DesktopSession, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``automail gui`` on the session's display; killed if still running, its output printed."""
    log_path = tmp_path / "app.log"
    with log_path.open("wb") as log:
        app = subprocess.Popen(
            [sys.executable, "-m", "automail", "gui"], env=session.full_env(), stdout=log, stderr=log
        )
        try:
            yield app
        finally:
            if app.poll() is None:
                app.kill()
                app.wait()
            print(log_path.read_text(errors="replace"))
            app_log = Path(session.full_env()["AUTOMAIL_HOME"]) / "logs" / "automail.log"
            if app_log.exists():  # shown by pytest when the test failed
                print(app_log.read_text(errors="replace"))


def is_docked(session: DesktopSession, window: str) -> bool:
    """Embedded by the tray host: the icon window's parent is no longer the root window."""
    tree = session.run(["xwininfo", "-tree", "-id", window], check=False).stdout
    root = session.run(["xwininfo", "-root"], check=False).stdout.split("Window id:")[1].split()[0]
    parent = [line for line in tree.splitlines() if "Parent window id:" in line]
    return bool(parent) and root not in parent[0]


def icon_clickable(session: DesktopSession, window: str) -> tuple[int, int] | None:
    """Docked, mapped and given its size by the tray host: the (x, y) of its centre, else None.

    Docking reparents the 1x1 icon window first and sizes it a moment later; a click in between
    misses it, as it would miss for a person.
    """
    if not is_docked(session, window):
        return None
    info = session.run(["xwininfo", "-id", window], check=False).stdout
    fields = dict(line.strip().split(": ", 1) for line in info.splitlines() if ": " in line)
    width, height = int(fields.get("Width", 0)), int(fields.get("Height", 0))
    if fields.get("Map State") != "IsViewable" or width < 16 or height < 16:
        return None
    return width // 2, height // 2


def click_icon(session: DesktopSession, window: str) -> None:
    x, y = wait_for(lambda: icon_clickable(session, window), 10, what="icon mapped and sized in the tray")
    session.run(["xdotool", "mousemove", "--window", window, str(x), str(y), "click", "1"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_app_docks_opens_sends_notifies_once_and_exits_on_sigterm(
    desktop: DesktopSession, smtp_server_auth: SmtpServer, automail_home: Path, tmp_path: Path
) -> None:
    port = str(smtp_server_auth.port)
    common = ["--company", "Firma", "--host", "127.0.0.1", "--port", port, "--security", "none"]
    common += ["--username", AUTH_USER, "--password-stdin", "--allow-insecure-auth", "--unlimited"]
    cli(desktop, "company", "add", "Firma")
    cli(desktop, "task", "add", "Invoices", *common, "--sender", "Firma <info@firma.sk>", "--tag", "good",
        stdin=AUTH_PASSWORD)  # fmt: skip
    cli(desktop, "task", "add", "Reminders", *common, "--sender", "Firma <info@firma.sk>", "--tag", "bad",
        stdin="wrong password")  # fmt: skip
    body = tmp_path / "body.txt"
    body.write_text("Hello from the smoke test.\n")
    for i in range(3):
        cli(desktop, "send", "--company", "Firma", "--to", f"client{i}@example.com", "--subject", f"Invoice {i}",
            "--text", str(body), "--tag", "good")  # fmt: skip
    cli(desktop, "send", "--company", "Firma", "--to", "late@example.com", "--subject", "Reminder",
        "--text", str(body), "--tag", "bad")  # fmt: skip
    cli(desktop, "task", "start", "--all")

    with running_app(desktop, tmp_path) as app:
        # The icon docks in trayer; the window starts hidden (companies exist, so not a first start).
        icon = wait_for(lambda: desktop.windows("--classname", TRAY_CLASSNAME), 20, what="tray icon")[0]
        wait_for(lambda: is_docked(desktop, icon), 10, what="icon docked in trayer")
        assert not desktop.windows("--onlyvisible", "--name", WINDOW_NAME)

        # A left click on the icon opens the window (xorg backend + ButtonPressMask fix, pystray#151).
        click_icon(desktop, icon)
        wait_for(lambda: desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 10, what="main window")

        # The good task sends; the wrong password gives exactly one notification.
        received = smtp_server_auth.wait_for(3, timeout=30)
        assert sorted(m.rcpt_tos[0] for m in received) == [f"client{i}@example.com" for i in range(3)]
        wait_for(lambda: any("Reminders" in s for s, _ in desktop.notifications()), 20, what="notification")
        time.sleep(3)  # room for a duplicate to show up, if the app would send one
        shots = Path(os.environ.get("AUTOMAIL_SMOKE_SHOTS", tmp_path))
        desktop.screenshot(shots / "smoke-app.png")
        notes = desktop.notifications()
        about_login = [n for n in notes if "Reminders" in n[0] or "Reminders" in n[1]]
        assert len(about_login) == 1, notes
        assert "login" in about_login[0][1].lower() or "auth" in about_login[0][1].lower(), about_login

        # A second launch does not start a second app: it asks the first one to show itself.
        second = desktop.run([sys.executable, "-m", "automail", "gui"], check=False)
        assert second.returncode == 0 and "already running" in second.stdout

        started = time.monotonic()
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert not desktop.windows("--classname", TRAY_CLASSNAME)


@pytest.fixture
def bare_desktop() -> Iterator[DesktopSession]:
    """A display without a tray host (yet) and without notifications."""
    yield from _session(tray=False, notifications=False)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_icon_docks_when_the_tray_host_starts_after_the_app(
    bare_desktop: DesktopSession, automail_home: Path, tmp_path: Path
) -> None:
    """A panel that starts after AutoMail (autostart at login) or restarts still gets the icon."""
    cli(bare_desktop, "company", "add", "Firma")
    with running_app(bare_desktop, tmp_path) as app:
        icon = wait_for(lambda: bare_desktop.windows("--classname", TRAY_CLASSNAME), 20, what="tray icon")[0]
        # No tray host: after a moment the window is shown instead, so the user is never left with nothing.
        wait_for(lambda: bare_desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 15, what="fallback window")
        assert not is_docked(bare_desktop, icon)

        bare_desktop.start_tray()
        wait_for(lambda: icon_clickable(bare_desktop, icon), 15, what="icon docked in the late tray host")

        # Docked now, the icon works: hide the window (no window manager here to minimize it), click the icon.
        window = bare_desktop.windows("--onlyvisible", "--name", WINDOW_NAME)[0]
        bare_desktop.run(["xdotool", "windowunmap", "--sync", window])
        assert not bare_desktop.windows("--onlyvisible", "--name", WINDOW_NAME)
        click_icon(bare_desktop, icon)
        wait_for(lambda: bare_desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 10, what="window again")

        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=10) == 0
        text = (automail_home / "logs" / "automail.log").read_text()
        assert text.count("xorg_tray: no tray host") == 1, text  # retried quietly, not logged every 2 s
        assert "Failed to dock icon" not in text, text


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_window_shows_when_the_tray_host_ignores_the_icon_and_the_menu_quits(
    bare_desktop: DesktopSession, automail_home: Path, tmp_path: Path
) -> None:
    """A tray host that ignored the dock request left the app invisible: no icon, no window (issue 11).
    The window shows; the icon asks again and docks; its right-click menu works (no PyGObject here)."""
    host = bare_desktop.start_test_tray(ignore=2)  # the request at start and the first retry
    assert host.stdout is not None
    cli(bare_desktop, "company", "add", "Firma")  # not a first start: the window would stay hidden
    with running_app(bare_desktop, tmp_path) as app:
        icon = wait_for(lambda: bare_desktop.windows("--classname", TRAY_CLASSNAME), 20, what="tray icon")[0]
        assert host.stdout.readline().split() == ["ignored", str(int(icon))]
        wait_for(lambda: bare_desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 15, what="window shown")
        assert host.stdout.readline().split() == ["ignored", str(int(icon))]
        assert host.stdout.readline().split() == ["embedded", str(int(icon))]
        x, y = wait_for(lambda: icon_clickable(bare_desktop, icon), 10, what="icon docked at last")

        # The right-click menu: Down selects its first entry and Up wraps round to the last, Quit.
        bare_desktop.run(["xdotool", "mousemove", "--window", icon, str(x), str(y), "click", "3"])
        wait_for(lambda: bare_desktop.windows("--onlyvisible", "--class", "Menu"), 10, what="tray menu")
        bare_desktop.screenshot(tmp_path / "tray-menu.png")
        bare_desktop.run(["xdotool", "key", "Down", "Up", "Return"])
        assert app.wait(timeout=15) == 0


NATIVE_CHECK = "import gi; gi.require_version('Gtk', '3.0'); gi.require_version('AyatanaAppIndicator3', '0.1')"


def native_tray_pythonpath(folder: Path) -> str | None:
    """A PYTHONPATH entry with which this Python imports PyGObject, Gtk 3 and AyatanaAppIndicator
    ("" if it does already); None where it cannot (the packages named in .ci/run are missing).

    A Python of its own (pyenv, like this machine's) does not see Debian's python3-gi; its ``gi``
    package alone is linked in when it was built for this Python version.
    """

    def imports(path: str) -> bool:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}
        return subprocess.run([sys.executable, "-c", NATIVE_CHECK], env=env, capture_output=True).returncode == 0

    if imports(""):
        return ""
    debian = Path("/usr/lib/python3/dist-packages/gi")
    if not list(debian.glob(f"_gi.cpython-{sys.version_info.major}{sys.version_info.minor}-*.so")):
        return None
    (folder / "gi").symlink_to(debian)
    return str(folder) if imports(str(folder)) else None


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_native_tray_menu_where_pygobject_is_importable(
    desktop: DesktopSession, automail_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PyGObject, pystray's appindicator backend gives the tray its native (GTK) menu (issue 11)."""
    (tmp_path / "gi-only").mkdir()
    extra = native_tray_pythonpath(tmp_path / "gi-only")
    if extra is None:
        pytest.skip("PyGObject with Gtk 3 and AyatanaAppIndicator3 is not importable (see .ci/run)")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.environ["PYTHONPATH"], extra])))
    monkeypatch.delenv("PYSTRAY_BACKEND")  # pystray's own choice: appindicator first
    cli(desktop, "company", "add", "Firma")
    with running_app(desktop, tmp_path) as app:
        # No StatusNotifier host here: libayatana-appindicator falls back to an XEmbed icon in trayer.
        icon = wait_for(lambda: desktop.windows("--classname", "^automail$"), 20, what="native tray icon")[0]
        assert not desktop.windows("--classname", TRAY_CLASSNAME)  # not the xorg backend
        x, y = wait_for(lambda: icon_clickable(desktop, icon), 10, what="icon docked in trayer")
        assert not desktop.windows("--onlyvisible", "--name", WINDOW_NAME)

        def menu_choose(*keys: str) -> None:
            desktop.run(["xdotool", "mousemove", "--window", icon, str(x), str(y), "click", "3"])
            time.sleep(1)  # the GTK menu opens
            desktop.run(["xdotool", "key", *keys])

        menu_choose("Down", "Return")  # the first entry: Open AutoMail
        wait_for(lambda: desktop.windows("--onlyvisible", "--name", WINDOW_NAME), 10, what="window from the menu")
        menu_choose("Up", "Return")  # the last entry: Quit
        assert app.wait(timeout=15) == 0
