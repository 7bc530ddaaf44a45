"""The demo: an embedded capture SMTP server on 127.0.0.1, a demo company, task and sample mailing."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from filelock import FileLock, Timeout

from automail.engine.service import Service
from automail.errors import NotFoundError
from automail.message import compose
from automail.models import Security, SmtpSettings, Task

DEMO_COMPANY = "Demo Company s.r.o."
DEMO_TASK = "Demo mailing"
DEMO_RATE = 3000
PREFERRED_PORT = 2525
HOME_PREFIX = "automail-demo-"  # the demo's temporary data folders, in the system's temp folder
HOME_LOCK = "demo.lock"  # held while a demo runs: a folder whose lock is free is a left-over
RECEIVED = "demo-received"  # the capture server's .eml files, inside the demo's data folder

_SAMPLE = [
    ("Ján Novák", "jan.novak@example.com", "Invoice 2026-0141", 1280.50),
    ("Mária Kováčová", "maria.kovacova@example.com", "Invoice 2026-0142", 86.00),
    ("Peter Horváth", "peter.horvath@example.com", "Payment reminder 2026-0098", 412.30),
    ("Eva Tóthová", "eva.tothova@example.com", "Invoice 2026-0143", 1999.99),
    ("Tomáš Varga", "tomas.varga@example.com", "Invoice 2026-0144", 54.20),
    ("Zuzana Baláž", "zuzana.balaz@example.com", "Newsletter December", 0.0),
    ("Martin Szabó", "martin.szabo@example.com", "Invoice 2026-0145", 730.00),
    ("Lucia Molnárová", "lucia.molnarova@example.com", "Payment reminder 2026-0101", 99.90),
    ("Andrej Kollár", "andrej.kollar@example.com", "Invoice 2026-0146", 3120.00),
    ("Katarína Lukáčová", "katarina.lukacova@example.com", "Invoice 2026-0147", 15.00),
]


class _Capture:
    """aiosmtpd handler writing each received message to a numbered .eml file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.count += 1
            n = self.count
        path = self.folder / f"{n:04d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        return f"250 2.0.0 Ok: saved as {path.name}"


class CaptureServer:
    """A local SMTP server that accepts everything and saves it as .eml files."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.handler = _Capture(folder)
        self.host = "127.0.0.1"
        self.port = port if port is not None else _free_port(PREFERRED_PORT)
        self._controller = Controller(self.handler, hostname=self.host, port=self.port)

    @property
    def received(self) -> int:
        return self.handler.count

    def start(self) -> CaptureServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def prepare_demo(service: Service, server: CaptureServer) -> Task:
    """Create (or re-point) the demo company and task and queue the sample mailing."""
    try:
        service.definitions.company(DEMO_COMPANY)
    except NotFoundError:
        service.add_company(DEMO_COMPANY)
    smtp = SmtpSettings(
        host=server.host, port=server.port, security=Security.NONE, sender="Demo Company <billing@demo.example>"
    )
    try:
        task = service.edit_task(DEMO_TASK, lambda t: replace(t, smtp=smtp, computer=service.computer, user=""))
    except NotFoundError:
        task = service.add_task(
            Task(name=DEMO_TASK, company=DEMO_COMPANY, smtp=smtp, computer=service.computer, rate_per_hour=DEMO_RATE)
        )
    messages = [
        compose(
            to=[addr],
            subject=subject,
            text=(
                f"Dear {name},\n\n"
                + (f"please find the amount due of {amount:.2f} EUR.\n" if amount else "here is our December news.\n")
                + "\nDemo Company s.r.o.\n"
            ),
            sender=smtp.sender,
            tag="demo",
        )
        for name, addr, subject, amount in _SAMPLE
    ]
    service.enqueue(DEMO_COMPANY, messages)
    service.start_task(DEMO_TASK)
    return task


def sample_size() -> int:
    return len(_SAMPLE)


@contextlib.contextmanager
def demo_home() -> Iterator[Path]:
    """A new temporary data folder for one demo run, set as $AUTOMAIL_HOME while it runs.

    The demo's company, task, outbox, log and received e-mails all live there, never in the
    user's own data folder, and the folder is removed when the demo ends, however it ends
    (Ctrl+C, an error, a crash of the capture server). A demo killed outright leaves its folder
    behind: the next demo removes it (its lock is free).
    """
    remove_left_over_homes()
    home = Path(tempfile.mkdtemp(prefix=HOME_PREFIX))
    lock = FileLock(str(home / HOME_LOCK))
    lock.acquire()
    previous = os.environ.get("AUTOMAIL_HOME")
    os.environ["AUTOMAIL_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("AUTOMAIL_HOME", None)
        else:
            os.environ["AUTOMAIL_HOME"] = previous
        _close_logs_in(home)  # Windows cannot remove an open log file
        lock.release()
        shutil.rmtree(home, ignore_errors=True)


def remove_left_over_homes(min_age_s: float = 60.0) -> list[Path]:
    """Remove the data folders of demos that were killed (their lock is free); return them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(HOME_PREFIX + "*"):
        lock_file = folder / HOME_LOCK
        try:
            if not lock_file.exists() and time.time() - folder.stat().st_mtime < min_age_s:
                continue  # a demo that is just starting and has not taken its lock yet
        except OSError:
            continue  # removed meanwhile
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue  # a demo running now
        lock.release()
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _close_logs_in(home: Path) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        filename = getattr(handler, "baseFilename", "")
        if filename and Path(filename).is_relative_to(home):
            root.removeHandler(handler)
            handler.close()
