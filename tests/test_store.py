"""The outbox state machine and the definitions store, without the engine."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from automail.errors import DefinitionsError, InputError, OutboxError
from automail.models import MessageStatus, RecipientState, RecipientStatus, SmtpSettings, Task
from automail.store.definitions import Definitions
from automail.store.outbox import SCHEMA_VERSION, Outbox
from tests.helpers import new_message


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "firma.sqlite3", "Firma")


def test_state_machine_and_message_id_kept(box: Outbox) -> None:
    ids = box.enqueue([new_message(i) for i in range(3)], now=100.0)
    claimed = box.claim("T", now=101.0, mail_from="info@firma.sk")
    assert claimed is not None and claimed.message.id == ids[0]
    assert box.get(ids[0]).status is MessageStatus.SENDING
    box.mark_deferred(ids[0], 102.0, 162.0, 451, "later", "acct", "T")
    assert box.claim("T", now=103.0).message.id == ids[1]  # deferred one is not due yet
    assert box.next_due() == 100.0  # the third is due
    box.mark_failed(ids[1], 104.0, 550, "no such user", "acct", "T")
    third = box.claim("T", now=105.0)
    assert third.message.id == ids[2]
    refusal = {"x@y.sk": RecipientState(RecipientStatus.FAILED, "550 no")}
    box.mark_sent(ids[2], 106.0, "250 ok", refusal, "acct", "T")
    first_again = box.claim("T", now=170.0)
    assert first_again.message.id == ids[0] and first_again.message.message_id == "<0@test>"
    assert first_again.message.attempts == 1
    counts = box.counts()
    assert counts[MessageStatus.SENT] == 1 and counts[MessageStatus.FAILED] == 1
    assert box.send_times("acct", 0) == [102.0, 104.0, 106.0]


def test_each_attempt_is_one_statement_that_also_logs_it_for_the_throttle(box: Outbox) -> None:
    """Outcome and send-log entry are written by one UPDATE (tr_send_log), committed on its own."""
    ids = box.enqueue([new_message(i) for i in range(3)], now=100.0)
    box.claim_batch("T", 101.0, limit=3)
    statements: list[str] = []
    box.watch(lambda sql, _wall, _cpu: statements.append(sql))
    box.mark_sent(ids[0], 102.0, "250 ok", {}, "acct-1", "T")
    assert len(statements) == 1 and statements[0].startswith("UPDATE messages")  # no BEGIN, no COMMIT
    box.watch(None)
    box.mark_deferred(ids[1], 103.0, 500.0, 451, "later", "acct-2", "T")
    box.mark_failed(ids[2], 104.0, None, "too large for the server", "", "T")  # never sent: not logged
    assert box.send_times("acct-1", 0) == [102.0] and box.send_times("acct-2", 0) == [103.0]
    conn = sqlite3.connect(box.path)
    assert conn.execute("SELECT account, task, at FROM send_log ORDER BY at").fetchall() == [
        ("acct-1", "T", 102.0),
        ("acct-2", "T", 103.0),
    ]
    conn.close()
    box.retry([ids[2]], 105.0)  # attempts back to 0: no entry
    box.mark_sent(ids[2], 106.0, "250 ok", {}, "acct-1", "T")  # recorded without a claim: still logged once
    assert box.send_times("acct-1", 0) == [102.0, 106.0]
    assert box.get(ids[0]).status is MessageStatus.SENT and box.get(ids[1]).attempts == 1


def test_claim_is_atomic_across_threads(tmp_path: Path) -> None:
    path = tmp_path / "firma.sqlite3"
    Outbox(path).enqueue([new_message(i) for i in range(300)], now=0.0)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = Outbox(path)  # a separate handle, like another process
        while (c := mine.claim("T", now=1.0)) is not None:
            with lock:
                claimed.append(c.message.id)
        mine.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 301))


def test_recover_returns_sending_messages_to_queue(box: Outbox) -> None:
    box.enqueue([new_message(1)], now=0.0)
    box.claim("T", now=1.0)
    assert box.recover("Other", now=2.0) == 0
    assert box.recover("T", now=2.0) == 1
    msg = box.get(1)
    assert msg.status is MessageStatus.QUEUED and msg.message_id == "<1@test>"


def test_tags_and_batch_rollback(box: Outbox) -> None:
    box.enqueue([new_message(1, tag="A"), new_message(2, tag="B")], now=0.0)
    assert box.claim("T", now=1.0, tags=("B",)).message.id == 2
    with pytest.raises(AttributeError):
        box.enqueue([new_message(3), None], now=0.0)  # type: ignore[list-item]
    assert box.count() == 2  # the failed batch left nothing behind


def test_cancel_refuses_whole_list_if_one_is_not_cancellable(box: Outbox) -> None:
    box.enqueue([new_message(i) for i in range(2)], now=0.0)
    box.claim("T", now=1.0)
    with pytest.raises(InputError, match="message 1 is sending"):
        box.cancel([2, 1], now=2.0)
    assert box.get(2).status is MessageStatus.QUEUED


def test_schema_version_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    Outbox(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxError, match="newer AutoMail"):
        Outbox(path)


def test_paging_and_search(box: Outbox) -> None:
    box.enqueue([new_message(i) for i in range(50)], now=0.0)
    page = box.list(limit=10, offset=20)
    assert [m.id for m in page] == list(range(21, 31))
    assert box.count(search="Invoice 4") == 11
    assert box.count(MessageStatus.SENT) == 0


def _task(name: str) -> Task:
    return Task(name=name, company="Firma", smtp=SmtpSettings(host="127.0.0.1", sender="info@firma.sk"))


def test_definitions_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    d = Definitions(tmp_path / "automail.json", tmp_path)
    d.add_company("Firma")
    d.add_task(_task("A"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".automail-")] == []
    data = json.loads((tmp_path / "automail.json").read_text())
    assert next(iter(data["tasks"].values()))["name"] == "A"
    with pytest.raises(InputError, match="exists already"):
        d.add_company("FIRMA")


def test_corrupt_definitions_raise_and_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "automail.json"
    path.write_text("{ not json")
    with pytest.raises(DefinitionsError, match="damaged"):
        Definitions(path, tmp_path)
    assert path.read_text() == "{ not json"


def test_two_processes_editing_definitions_lose_no_edit(tmp_path: Path) -> None:
    d = Definitions(tmp_path / "automail.json", tmp_path)
    d.add_company("Firma")
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from automail.store.definitions import Definitions\n"
        "from automail.models import Task, SmtpSettings\n"
        "home = Path(sys.argv[1]); d = Definitions(home / 'automail.json', home)\n"
        "for i in range(15):\n"
        "    d.add_task(Task(name=f'{sys.argv[2]}-{i}', company='Firma',"
        " smtp=SmtpSettings(host='127.0.0.1', sender='info@firma.sk')))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), tag]) for tag in ("a", "b", "c")]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert len(d.tasks()) == 45


def test_a_long_running_store_adds_after_another_process_added(tmp_path: Path) -> None:
    """The app keeps one Definitions open; the CLI (another instance) adds in between."""
    app = Definitions(tmp_path / "automail.json", tmp_path)
    cli = Definitions(tmp_path / "automail.json", tmp_path)
    app.add_company("Firma")  # the app's table now remembers "next ID = 2"
    cli.add_company("Druha")  # ...which the CLI takes
    app.add_company("Tretia")  # TinyDB alone: "Document with ID 2 already exists"
    smtp = SmtpSettings(host="127.0.0.1", sender="info@firma.sk")
    app.add_task(Task(name="A", company="Firma", smtp=smtp))
    cli.add_task(Task(name="B", company="Firma", smtp=smtp))
    app.add_task(Task(name="C", company="Firma", smtp=smtp))
    assert [c.name for c in cli.companies()] == ["Druha", "Firma", "Tretia"]
    assert [t.name for t in cli.tasks()] == ["A", "B", "C"]


def test_engine_and_store_do_not_import_gui_toolkits() -> None:
    code = (
        "import sys\n"
        "import automail.engine.service, automail.store.outbox, automail.store.definitions, automail.__main__\n"
        "bad = [m for m in ('tkinter', 'customtkinter', 'pystray', 'PIL') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_duplicate_message_id_check_uses_its_index(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", "Firma")
    plan = box._conn().execute(
        "EXPLAIN QUERY PLAN SELECT message_id FROM messages WHERE message_id IN (?, ?)", ("a", "b")
    )
    assert "ix_message_id" in " ".join(str(r) for r in plan.fetchall())
