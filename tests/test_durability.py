"""Crash safety and concurrency with real processes: kill -9 mid-sending, parallel enqueuers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from automail.engine.worker import CLAIM_BATCH
from tests.helpers import cli, eml, engine_process, setup_task, wait_until, write_emls
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.slow


def outbox(company: str = "Firma") -> list[dict]:
    return json.loads(cli("outbox", "--company", company, "--json").stdout)


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelining"])
def test_kill_9_during_sending_loses_nothing_and_duplicates_at_most_one(
    tmp_path: Path, smtp_server: SmtpServer, pipelining: bool
) -> None:
    smtp_server.pipelining = pipelining  # the envelope in one write, the result committed meanwhile
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 60))
    ids = {m["message_id"] for m in outbox()}
    smtp_server.stall_seconds = 0.05  # slow enough that the kill lands mid-run, often mid-DATA
    for _round in range(2):
        proc = engine_process(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_until(lambda n=15 * (_round + 1): len(smtp_server.messages) >= n, 30)
        finally:  # killed also when the wait fails: a failed run leaves no engine behind
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    sending = [m for m in outbox() if m["status"] == "sending"]
    # claimed by the killed engine (an unlimited task claims a batch)
    assert len(sending) <= CLAIM_BATCH
    # Most of them were delivered and their results are only in the results journal (one row each,
    # durable before the next final dot); the next start folds them in before it requeues anything.
    with contextlib.closing(sqlite3.connect(Path(os.environ["AUTOMAIL_HOME"]) / "outbox" / "Firma.sqlite3")) as db:
        journaled = {r[0] for r in db.execute("SELECT message FROM results")}
    assert journaled and journaled <= {m["id"] for m in sending}
    smtp_server.stall_seconds = 0
    assert cli("run", "--until-empty", timeout=120).returncode == 0
    rows = outbox()
    assert [m["status"] for m in rows] == ["sent"] * 60  # nothing lost
    got = Counter(m.message_id for m in smtp_server.messages)
    assert set(got) == ids  # every message arrived, with the Message-ID it was queued with
    duplicates = sum(n - 1 for n in got.values())
    assert duplicates <= 2  # at most one per kill


def test_four_processes_enqueue_while_engine_sends_exactly_once(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    engine = engine_process(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        script = (
            "import sys\n"
            "from automail.engine.service import Service\n"
            "svc = Service()\n"
            "w = int(sys.argv[1])\n"
            "for b in range(10):\n"
            "    svc.enqueue_raw('Firma', [(f'{w}-{b}-{i}', (f'To: p{w}x{b}x{i}@example.com\\r\\n'\n"
            "        f'Subject: w{w} b{b} i{i}\\r\\n\\r\\nbody').encode()) for i in range(10)])\n"
        )
        producers = [subprocess.Popen([sys.executable, "-c", script, str(w)]) for w in range(4)]
        for p in producers:
            assert p.wait(60) == 0
        assert wait_until(lambda: len(smtp_server.messages) >= 400, 60)
        time.sleep(0.5)
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(20) == 0, engine.stderr.read() if engine.stderr else ""
    got = Counter(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert len(got) == 400 and set(got.values()) == {1}
    assert Counter(m["status"] for m in outbox()) == {"sent": 400}


def test_sigterm_finishes_the_message_in_flight(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", "-", stdin=eml(1))
    smtp_server.stall_seconds = 4.0
    proc = engine_process(stdout=subprocess.DEVNULL)
    try:
        # In flight = the server holds the whole message and has not answered the final dot yet
        # (watched on the server: a CLI poll of the outbox can take longer than the stall under load).
        assert wait_until(lambda: b"Hello 1\r\n.\r\n" in b"".join(smtp_server.packets), 30)
        assert not smtp_server.messages
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:  # a failed run leaves no engine behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert [m["status"] for m in outbox()] == ["sent"]
    assert len(smtp_server.messages) == 1
