"""The demo: an embedded capture SMTP server on 127.0.0.1, a demo company, task and sample mailing."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from automail.engine.service import Service
from automail.errors import NotFoundError
from automail.message import compose
from automail.models import Security, SmtpSettings, Task

DEMO_COMPANY = "Demo Company s.r.o."
DEMO_TASK = "Demo mailing"
DEMO_RATE = 3000
PREFERRED_PORT = 2525

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
