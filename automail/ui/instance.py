"""One app per data folder: the first listens on 127.0.0.1; later launches ask it to show itself or to quit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from automail.errors import AutomailError
from automail.paths import replace_file

from . import win32

log = logging.getLogger(__name__)


class InstanceError(AutomailError):
    """The running app did not answer or did not quit."""


FILE_NAME = "app-instance.json"
LOCK_NAME = "app-instance.lock"
CONNECT_TIMEOUT_S = 2.0


SHOW, QUIT = "show", "quit"
QUIT_WAIT_S = 60.0  # the app finishes the message in flight before it exits


class SingleInstance:
    """Listen for "show" and "quit" requests from later launches; the port and a token live in the data folder."""

    def __init__(
        self,
        home: Path,
        on_show: Callable[[], None],
        lock: FileLock | None = None,
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        self.file = home / FILE_NAME
        self._lock = lock
        self.on_show = on_show
        self.on_quit = on_quit
        self.token = secrets.token_hex(16)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        self._sock = sock
        port = sock.getsockname()[1]
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": port, "token": self.token, "pid": os.getpid()}), encoding="utf-8")
        with contextlib.suppress(OSError):
            os.chmod(tmp, 0o600)  # the token keeps other local users from poking the app
        replace_file(tmp, self.file)  # antivirus or a second launch may hold it open (Windows)
        self._thread = threading.Thread(target=self._serve, name="automail-instance", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock = self._sock  # close() sets the attribute to None while this thread waits in accept()
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    conn.settimeout(CONNECT_TIMEOUT_S)
                    data = conn.recv(256).decode("utf-8", "replace").split()
                    handler = {SHOW: self.on_show, QUIT: self.on_quit}.get(data[0]) if len(data) == 2 else None
                    if handler is not None and secrets.compare_digest(data[1], self.token):
                        conn.sendall(b"ok\n")
                        handler()
                    else:
                        conn.sendall(b"denied\n")
                except OSError:
                    continue

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept(); close() alone does not
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.file.read_text(encoding="utf-8")).get("token") == self.token:
                self.file.unlink()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def ask_running_instance(home: Path, request: str = SHOW) -> bool:
    """True if an app already runs for ``home`` and was asked to show its window (or to quit).

    A stale file (crashed app, port now closed or owned by someone else) gives False.
    """
    file = home / FILE_NAME
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
        port, token = int(info["port"]), str(info["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    try:
        pid = int(info.get("pid", 0))
    except (TypeError, ValueError):
        pid = 0
    # Windows lets only the process the user just started take the foreground: hand that right on,
    # or the first instance's window only flashes in the taskbar.
    win32.allow_set_foreground(pid)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S) as conn:
            conn.settimeout(CONNECT_TIMEOUT_S)
            conn.sendall(f"{request} {token}\n".encode())
            return conn.recv(16).startswith(b"ok")
    except OSError:
        return False


def quit_running_instance(home: Path, wait_s: float = QUIT_WAIT_S) -> bool:
    """Ask the app running for ``home`` to quit and wait until it has exited; True if one was running.

    The app holds the instance lock for its lifetime, so the lock coming free means it is gone.
    """
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(home / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pass
    else:
        lock.release()
        return False  # nobody runs
    if not ask_running_instance(home, QUIT):
        log.warning("another AutoMail holds %s but did not answer the quit request", home / LOCK_NAME)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise InstanceError(
            f"the running AutoMail (data folder {home}) did not quit within {wait_s:.0f} s",
            fix="quit AutoMail from its tray menu, then try again",
        ) from None
    lock.release()
    return True


def claim(
    home: Path, on_show: Callable[[], None], wait_s: float = 5.0, on_quit: Callable[[], None] | None = None
) -> SingleInstance | None:
    """Become the app of ``home`` (listening for "show"), or return None after asking the running one.

    A file lock held for the app's lifetime decides who is first, so a stale port file left by
    a crash never blocks a start (the OS drops the lock with the process).
    """
    home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(home / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:  # the first may still be starting up
            if ask_running_instance(home):
                return None
            time.sleep(0.25)
        log.warning("another AutoMail holds %s but did not answer", home / LOCK_NAME)
        return None
    guard = SingleInstance(home, on_show, lock, on_quit)
    guard.start()
    return guard
