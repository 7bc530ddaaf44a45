"""`automail mailing …` and `enqueue --mailing/--not-before` driven as other programs do: real processes and SMTP."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

from tests.helpers import cli, eml, engine_process, setup_task, wait_until
from tests.smtpd import SmtpServer


def write(folder: Path, start: int, count: int, prefix: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        p = folder / f"{prefix}{i}.eml"
        p.write_bytes(eml(i, subject=f"{prefix} {i}"))
        paths.append(str(p))
    return paths


def recipients(server: SmtpServer) -> list[str]:
    return sorted(r for m in server.messages for r in m.rcpt_tos)


def mailing_json(name: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(cli("mailing", "show", name, "--json").stdout)
    return result


def test_pause_resume_cancel_and_retry_change_only_their_mailing(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    out = cli("enqueue", "--company", "Firma", "--mailing", "Faktúry 11/2026", *write(tmp_path, 0, 3, "inv")).stdout
    assert "as mailing 'Faktúry 11/2026'" in out
    cli("enqueue", "--company", "Firma", "--mailing", "Newsletter", *write(tmp_path, 10, 2, "news"))
    dup = cli("enqueue", "--company", "Firma", "--mailing", "NEWSLETTER", *write(tmp_path, 20, 1, "x"), check=2)
    assert "already has a mailing named 'Newsletter'" in dup.stderr

    assert "3 waiting message(s) held; now paused" in cli("mailing", "pause", "faktúry 11/2026").stdout
    first = cli("run", "--until-empty").stdout  # a paused mailing is not "left to send": the run ends
    assert first.count("mailing 'Newsletter' finished: 2 sent, 0 failed") == 1 and "Faktúry" not in first
    assert recipients(smtp_server) == ["customer10@example.com", "customer11@example.com"]
    listed = {m["name"]: m for m in json.loads(cli("mailing", "list", "--json").stdout)}
    assert listed["Faktúry 11/2026"]["state"] == "paused" and listed["Faktúry 11/2026"]["queued"] == 3
    assert listed["Newsletter"]["state"] == "finished" and listed["Newsletter"]["sent"] == 2
    assert listed["Newsletter"]["sources"] == [str(tmp_path / "news10.eml"), str(tmp_path / "news11.eml")]

    cli("mailing", "resume", "Faktúry 11/2026")
    smtp_server.rcpt_replies = {"customer1@example.com": "550 5.1.1 no such user"}
    second = cli("run", "--until-empty", check=1).stdout  # one failed
    assert second.count("mailing 'Faktúry 11/2026' finished: 2 sent, 1 failed") == 1
    shown = mailing_json("Faktúry 11/2026")
    assert (shown["sent"], shown["failed"], shown["state"]) == (2, 1, "finished")
    assert shown["first_sent_at"] is not None and shown["last_sent_at"] is not None
    failures = shown["failures"]
    assert isinstance(failures, list) and failures[0]["to"] == ["customer1@example.com"]
    text = cli("mailing", "show", "Faktúry 11/2026").stdout
    assert "550 5.1.1 no such user" in text and "failed:" in text

    smtp_server.rcpt_replies = {}
    assert "1 failed message(s) queued again" in cli("mailing", "retry-failed", "Faktúry 11/2026").stdout
    cli("run", "--until-empty")
    assert mailing_json("Faktúry 11/2026")["sent"] == 3
    assert mailing_json("Newsletter")["sent"] == 2  # untouched

    cli(
        "enqueue",
        "--company",
        "Firma",
        "--mailing",
        "Later",
        "--not-before",
        "2099-01-01 08:00",
        *write(tmp_path, 30, 2, "l"),
    )
    assert mailing_json("Later")["state"] == "scheduled"
    assert mailing_json("Later")["queued"] == 2
    assert "2 message(s) cancelled" in cli("mailing", "cancel", "Later").stdout
    assert mailing_json("Later")["cancelled"] == 2 and len(smtp_server.messages) == 5  # 2 + 3, none of Later
    assert mailing_json("Later")["state"] == "cancelled"  # not "finished": nothing of it was sent
    assert "cancelled" in cli("mailing", "list").stdout


def test_mailing_errors_are_input_errors(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port)
    cli("company", "add", "Other")
    cli("enqueue", "--company", "Firma", "--mailing", "Same", *write(tmp_path, 0, 1, "a"))
    cli("enqueue", "--company", "Other", "--mailing", "Same", *write(tmp_path, 1, 1, "b"))
    ambiguous = cli("mailing", "pause", "Same", check=2)
    assert "each have a mailing named 'Same'" in ambiguous.stderr and "--company" in ambiguous.stderr
    cli("mailing", "pause", "Same", "--company", "Other")
    assert [m["state"] for m in json.loads(cli("mailing", "list", "--json").stdout)] == ["sending", "paused"]
    assert "no mailing named 'Nope'" in cli("mailing", "show", "Nope", check=2).stderr
    bad = cli("enqueue", "--company", "Firma", "--not-before", "soon", *write(tmp_path, 2, 1, "c"), check=2)
    assert "'soon' is not a date and time" in bad.stderr
    table = cli("mailing", "list").stdout
    assert "Same" in table and "Firma" in table and "Other" in table


def test_run_says_when_a_cancel_leaves_nothing_of_a_mailing_to_send(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--rate", "100")  # one message, then 36 s to cancel the rest
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", "--mailing", "Upomienky", *write(tmp_path, 0, 3, "u"))
    run = engine_process(
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert wait_until(lambda: len(smtp_server.messages) == 1, 20)
        assert "2 message(s) cancelled" in cli("mailing", "cancel", "Upomienky").stdout
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in run.stdout or ()], daemon=True).start()
        said = ""
        deadline = time.monotonic() + 10
        while "Upomienky" not in said and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                said = lines.get(timeout=0.5)
        assert said.strip() == "[Mailing] mailing 'Upomienky' cancelled: 1 sent, 0 failed, 2 cancelled"
    finally:
        run.terminate()
        run.wait(30)
