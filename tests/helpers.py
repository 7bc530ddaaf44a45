"""Small builders shared by the core tests, and `cli` to run `automail` as a user would."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from automail.engine.service import Service
from automail.engine.smtp import SmtpSession
from automail.engine.smtp.timeouts import Timeouts
from automail.errors import SmtpError
from automail.models import Security, SmtpSettings, Task
from automail.store.outbox import NewMessage


def make_task(
    name: str = "Mailing",
    company: str = "Firma",
    *,
    port: int,
    host: str = "127.0.0.1",
    rate: int | None = None,
    **extra: object,
) -> Task:
    smtp_fields = {k: extra.pop(k) for k in list(extra) if k in SmtpSettings.__dataclass_fields__}
    smtp = SmtpSettings(
        host=host,
        port=port,
        security=smtp_fields.pop("security", Security.NONE),  # type: ignore[arg-type]
        sender=smtp_fields.pop("sender", "Firma s.r.o. <info@firma.sk>"),  # type: ignore[arg-type]
        **smtp_fields,  # type: ignore[arg-type]
    )
    return Task(name=name, company=company, smtp=smtp, rate_per_hour=rate, **extra)  # type: ignore[arg-type]


def make_service(home: Path, *tasks: Task, password: str | None = None, **kwargs: object) -> Service:
    svc = Service(home, **kwargs)  # type: ignore[arg-type]
    for company in dict.fromkeys(t.company for t in tasks):
        svc.add_company(company)
    for task in tasks:
        svc.add_task(task, password)
        svc.start_task(task.name)
    return svc


def session_connect_error(smtp: SmtpSettings, password: str | None, timeouts: Timeouts) -> SmtpError:
    """The SmtpError a session's connect (and login) raises; the test fails if it connects."""

    async def go() -> None:
        s = SmtpSession(smtp, password, timeouts=timeouts)
        try:
            await s.connect()
        finally:
            await s.close()

    with pytest.raises(SmtpError) as caught:
        asyncio.run(go())
    return caught.value


def eml(n: int, to: str | None = None, subject: str | None = None, extra: str = "") -> bytes:
    to = to or f"customer{n}@example.com"
    return f"To: {to}\r\nSubject: {subject or f'Invoice {n}'}\r\n{extra}\r\nHello {n}\r\n".encode()


def new_message(n: int, tag: str = "", size: int = 0) -> NewMessage:
    body = b"x" * size
    raw = eml(n) + body
    return NewMessage(raw, (f"customer{n}@example.com",), "", f"Invoice {n}", f"<{n}@test>", tag)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_engine_until(svc: Service, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Run the service's engine until ``predicate`` holds (fail after ``timeout`` s), then stop it."""
    svc.start_engine()
    try:
        assert wait_until(predicate, timeout), "engine did not reach the expected state in time"
    finally:
        svc.stop_engine()


def cli(
    *args: str, stdin: str | bytes | None = None, check: int | None = 0, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "automail", *args],
        input=data,
        capture_output=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if check is not None:
        assert result.returncode == check, f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}"
    return result


def engine_process(**popen: Any) -> subprocess.Popen[Any]:
    """A real `automail run` (this computer's enabled tasks, until SIGTERM) in the background."""
    return subprocess.Popen([sys.executable, "-m", "automail", "run"], **popen)


def setup_task(port: int, *extra: str, company: str = "Firma", name: str = "Mailing", stdin: str | None = None) -> None:
    """Company ``company`` and task ``name`` sending to 127.0.0.1:port without TLS; ``extra`` options added."""
    cli("company", "add", company)
    cli(
        "task",
        "add",
        name,
        "--company",
        company,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--security",
        "none",
        "--sender",
        "Firma <info@firma.sk>",
        *extra,
        stdin=stdin,
    )


def write_emls(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"m{i}.eml"
        p.write_bytes(eml(i))
        paths.append(str(p))
    return paths


def files_under(root: Path) -> set[str]:
    """Every file and link under ``root`` (relative paths): what an install added or left behind."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.add(str((Path(dirpath) / name).relative_to(root)))
    return found
