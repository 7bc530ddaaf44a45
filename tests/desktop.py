"""A private X desktop for GUI tests and the footprint benchmark: Xvfb, a tray host (trayer),
a D-Bus session bus and a notification daemon (dunst)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOOLS = ("Xvfb", "trayer", "dbus-daemon", "dunst", "dunstctl", "xdotool", "xwininfo")
WINDOW_NAME = "Automatic tasks"
TRAYER_ARGS = ["trayer", "--edge", "bottom", "--align", "right", "--widthtype", "request", "--height", "32"]
TRAYER_ARGS += ["--transparent", "false", "--tint", "0x404040"]
TRAY_CLASSNAME = "automailSystemTrayIcon"  # pystray's xorg backend: WM_CLASS "<name>SystemTrayIcon"


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class DesktopSession:
    """A private X display (Xvfb), optionally a tray host, a session bus and a notification daemon."""

    def __init__(self, tray: bool = True, notifications: bool = True, size: str = "1280x800x24") -> None:
        self.tray = tray
        self.with_notifications = notifications
        self.size = size
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}

    def start(self) -> DesktopSession:
        read_fd, write_fd = os.pipe()
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", self.size, "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(xvfb)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise RuntimeError("Xvfb did not start")
        self.env = {"DISPLAY": f":{number}"}
        if self.with_notifications:
            bus = subprocess.Popen(
                ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(bus)
            assert bus.stdout is not None
            self.env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().decode().strip()
            self._spawn(["dunst"])
            wait_for(lambda: self.run(["dunstctl", "count", "history"], check=False).returncode == 0, 10, what="dunst")
        if self.tray:
            self.start_tray()
        return self

    def start_tray(self) -> None:
        self._spawn([*TRAYER_ARGS])
        wait_for(lambda: self.windows("--classname", "trayer"), 10, what="trayer")

    def start_test_tray(self, ignore: int) -> subprocess.Popen[str]:
        """tests/tray_host.py as the tray host: it ignores the first ``ignore`` dock requests and
        prints a line per request ("ignored WINDOW" / "embedded WINDOW")."""
        host = subprocess.Popen(
            [sys.executable, "-m", "tests.tray_host", "--ignore", str(ignore)],
            env=self.full_env({"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}),
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(host)  # type: ignore[arg-type]
        assert host.stdout is not None and host.stdout.readline().strip() == "ready"
        return host

    def _spawn(self, argv: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(argv, env=self.full_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def full_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, **self.env, **(extra or {})}

    def run(self, argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.full_env(), capture_output=True, text=True, check=check, timeout=30, **kw)

    def windows(self, *query: str) -> list[str]:
        out = self.run(["xdotool", "search", *query], check=False).stdout
        return out.split()

    def notifications(self) -> list[tuple[str, str]]:
        """(summary, body) of every notification dunst got: shown, waiting and in its history."""
        self.run(["dunstctl", "close-all"], check=False)  # closed notifications move to the history
        time.sleep(0.2)
        data = json.loads(self.run(["dunstctl", "history"]).stdout)["data"][0]
        return [(n["summary"]["data"], n["body"]["data"]) for n in data]

    def screenshot(self, path: Path) -> None:
        if shutil.which("import"):
            self.run(["import", "-window", "root", str(path)], check=False)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
