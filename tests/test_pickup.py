"""The pickup folder: files other programs drop are queued through the enqueue gate, rejects set aside,
a crash between the commit and the file's removal queues nothing twice, and a kill -9 mid-ingest
loses nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automail.engine.service import Service
from automail.intake import pickup
from automail.models import MessageStatus
from tests.helpers import cli, eml, make_service, make_task, setup_task, wait_until
from tests.smtpd import SmtpServer


def drop(folder: Path, name: str, raw: bytes) -> Path:
    """As a well-behaved writer does: a temporary name, then a rename to .eml."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{name}.tmp"
    tmp.write_bytes(raw)
    final = folder / f"{name}.eml"
    os.replace(tmp, final)
    return final


def test_good_files_queued_rejects_set_aside_temp_files_left(automail_home: Path) -> None:
    svc = Service(automail_home)
    svc.add_company("Firma")
    folder = svc.pickup_folder("Firma")
    assert folder == automail_home / "pickup" / "Firma"
    drop(folder, "a", eml(1))
    drop(folder, "b", eml(2, subject="Faktúra č. 2"))
    drop(folder, "bad", b"To: nobody\r\nSubject: x\r\n\r\nno address\r\n")
    (folder / "c.eml.part").write_bytes(eml(3))  # still being written
    report = svc.ingest_pickup()
    assert (report.queued, report.rejected, report.duplicates) == (2, 1, 0)
    assert sorted(p.name for p in folder.iterdir()) == ["c.eml.part", "rejected"]
    assert sorted(p.name for p in (folder / "rejected").iterdir()) == ["bad.eml", "bad.eml.error.txt"]
    reason = (folder / "rejected" / "bad.eml.error.txt").read_text(encoding="utf-8")
    assert reason.startswith("bad.eml: ") and "not a valid e-mail address" in reason
    # The same gate as `automail enqueue`: the same file there is refused with the same words.
    (automail_home / "bad.eml").write_bytes(b"To: nobody\r\nSubject: x\r\n\r\nno address\r\n")
    refused = cli("enqueue", "--company", "Firma", str(automail_home / "bad.eml"), check=2).stderr
    assert reason.strip().split(": ", 1)[1] in refused
    subjects = sorted(m.subject for m in svc.messages("Firma"))
    assert subjects == ["Faktúra č. 2", "Invoice 1"]
    assert all(m.message_id for m in svc.messages("Firma"))
    svc.close()


def test_crash_between_commit_and_removal_queues_nothing_twice(
    automail_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service(automail_home)
    svc.add_company("Firma")
    folder = svc.pickup_folder("Firma")
    for i in range(5):
        drop(folder, f"m{i}", eml(i))

    def crash(path: Path) -> None:
        raise SystemExit("killed after the commit")

    monkeypatch.setattr(pickup, "_remove", crash)
    with pytest.raises(SystemExit):
        svc.ingest_pickup()
    assert svc.outbox("Firma").count() == 5 and len(list(folder.glob("*.eml"))) == 5
    monkeypatch.undo()
    report = svc.ingest_pickup()
    assert (report.queued, report.duplicates) == (0, 5)
    assert svc.outbox("Firma").count() == 5 and list(folder.glob("*.eml")) == []
    # The same content dropped again later is a new file (another modification time): queued again.
    time.sleep(0.01)
    drop(folder, "m0", eml(0))
    assert svc.ingest_pickup().queued == 1 and svc.outbox("Firma").count() == 6
    svc.close()


def test_running_engine_ingests_within_2_s_and_sends(automail_home: Path, smtp_server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=smtp_server.port))
    folder = svc.pickup_folder("Firma")
    svc.start_engine()
    try:
        time.sleep(1.5)  # the engine is running and idle
        dropped = drop(folder, "invoice", eml(7))
        started = time.monotonic()
        assert wait_until(lambda: not dropped.exists(), timeout=2.0), "not picked up within 2 s"
        took = time.monotonic() - started
        assert svc.outbox("Firma").count() == 1
        assert wait_until(lambda: len(smtp_server.messages) == 1)
        assert smtp_server.messages[0].rcpt_tos == ["customer7@example.com"]
    finally:
        svc.close()
    assert took < 2.0
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.SENT]


def subjects_in_outbox(home: Path) -> list[str]:
    svc = Service(home, read_only=True)
    try:
        return [m.subject for m in svc.messages("Firma")]
    finally:
        svc.close()


def test_kill_9_mid_ingest_loses_nothing_and_queues_nothing_twice(automail_home: Path) -> None:
    # A task that does not take these messages (another tag): the engine runs, nothing is sent.
    setup_task(1, "--tag", "elsewhere")
    cli("task", "start", "Mailing")
    folder = automail_home / "pickup" / "Firma"
    total = 1500
    for i in range(total):
        drop(folder, f"m{i:04d}", eml(i, subject=f"Drop {i}"))
    expected = {f"Drop {i}" for i in range(total)}
    rng = random.Random(12)
    kills_mid_ingest = kills_after_commit = 0
    for _round in range(30):
        remaining = len(list(folder.glob("*.eml")))
        if remaining == 0:
            break
        proc = subprocess.Popen(
            [sys.executable, "-m", "automail", "run"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # Wait until it has started taking files, then kill it at a random moment.
            wait_until(lambda r=remaining: len(list(folder.glob("*.eml"))) < r, timeout=20, interval=0.01)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        left = {f"Drop {int(p.stem[1:])}" for p in folder.glob("*.eml")}
        queued = subjects_in_outbox(automail_home)
        assert len(queued) == len(set(queued)), "a file was queued twice"
        assert set(queued) | left == expected, "a file was lost"
        kills_mid_ingest += bool(left) and len(left) < remaining
        kills_after_commit += bool(set(queued) & left)  # queued, not yet removed: the next run removes them
    assert sorted(subjects_in_outbox(automail_home)) == sorted(expected)
    assert list(folder.glob("*.eml")) == []
    assert kills_mid_ingest >= 1, "no kill landed while files were being taken"
    print(f"kills mid-ingest: {kills_mid_ingest}, of them between a commit and the removal: {kills_after_commit}")


def test_readme_python_writer_example_is_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Pickup folder", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    home = tmp_path / "AutoMail"
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path))
    svc = Service(home)
    svc.add_company("Firma s.r.o.")
    svc.pickup_folder("Firma s.r.o.").mkdir(parents=True)
    exec(compile(code, "README.md", "exec"), {})
    assert svc.ingest_pickup().queued == 1
    (msg,) = svc.messages("Firma s.r.o.")
    assert msg.recipients == ("jan.novak@example.sk",) and msg.subject == "Faktúra 2026/0042"
    svc.close()


def test_duplicate_message_id_is_rejected_as_enqueue_refuses_it(
    automail_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = Service(automail_home)
    svc.add_company("Firma")
    folder = svc.pickup_folder("Firma")
    same = "Message-ID: <same@firma.sk>\r\n"
    drop(folder, "a", eml(1, extra=same))
    drop(folder, "b", eml(2, extra=same))
    assert (svc.ingest_pickup().queued, len(list((folder / "rejected").glob("*.eml")))) == (1, 1)
    error = (folder / "rejected" / "b.eml.error.txt").read_text()
    assert "same Message-ID <same@firma.sk> as a.eml" in error
    drop(folder, "c", eml(3, extra=same))  # a later pass: the outbox has it already
    svc.ingest_pickup()
    later = (folder / "rejected" / "c.eml.error.txt").read_text()
    assert "already in the outbox of Firma" in later
    assert svc.outbox("Firma").count() == 1
    # The fix is one the pickup user can apply: the folder has no options, the enqueue command has.
    assert "give the message a Message-ID of its own" in error and "drop it in the pickup folder again" in error
    command = (
        'queue the file from the rejected folder with automail enqueue --company "Firma" --allow-duplicate-id FILE'
    )
    assert command in later and "pass --allow-duplicate-id" not in later
    # Following the hint queues the message a second time.
    monkeypatch.chdir(folder)
    assert cli("enqueue", "--company", "Firma", "--allow-duplicate-id", "rejected/c.eml").returncode == 0
    assert svc.outbox("Firma").count() == 2
    svc.close()
