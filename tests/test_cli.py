"""The `automail` command line as other programs drive it: real subprocesses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER
from tests.helpers import cli, eml, engine_process, setup_task, wait_until, write_emls
from tests.smtpd import SmtpServer


def add_auth_task(port: int, password: str, *extra: str) -> None:
    """Company "Firma" and task "Mailing" logging in as AUTH_USER; the password comes on stdin."""
    setup_task(port, "--username", AUTH_USER, "--password-stdin", *extra, stdin=password)


def test_full_cycle_enqueue_run_outbox_status(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    out = cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 3)).stdout
    assert "Queued 3 message(s)" in out
    cli("send", "--company", "Firma", "--to", "a@example.com", "--subject", "Hello", "--tag", "x")
    run = cli("run", "--until-empty")
    assert run.stdout.count(" sent #") == 4
    assert len(smtp_server.messages) == 4
    outbox = json.loads(cli("outbox", "--company", "Firma", "--json").stdout)
    assert [m["status"] for m in outbox] == ["sent"] * 4
    assert set(outbox[0]) >= {
        "id",
        "status",
        "from",
        "to",
        "subject",
        "tag",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
        "next_attempt_at",
        "message_id",
    }
    assert outbox[3]["tag"] == "x" and outbox[3]["to"] == ["a@example.com"]
    status = json.loads(cli("status", "--json").stdout)
    assert status == [
        {
            "task": "Mailing",
            "company": "Firma",
            "state": "stopped",
            "queued": 0,
            "deferred": 0,
            "sent_last_hour": 4,
            "sent_last_24h": 4,
            "failed": 0,
            "last_error": None,
        }
    ]


def test_run_until_empty_exits_1_when_messages_failed(tmp_path: Path, smtp_server: SmtpServer) -> None:
    smtp_server.data_replies = ["550 5.7.1 rejected"]
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 2))
    run = cli("run", "--until-empty", check=1)
    assert "failed" in run.stdout + run.stderr
    failed = json.loads(cli("outbox", "--company", "Firma", "--status", "failed", "--json").stdout)
    assert len(failed) == 1 and failed[0]["last_error"].startswith("550")
    cli("retry", "--company", "Firma", "--failed")
    assert cli("run", "--until-empty").returncode == 0
    assert len(smtp_server.messages) == 2


def test_run_until_empty_ends_when_the_queue_drains_not_at_the_next_poll(
    tmp_path: Path, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drained task's event wakes the check: with a 60 s poll the run still ends right after the last send."""
    import time

    from automail import __main__ as main
    from automail.engine.service import Service

    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 3))
    monkeypatch.setattr(main, "UNTIL_EMPTY_CHECK_S", 60.0)
    start = time.monotonic()
    code = main.run_engine(Service(), True, on_event=lambda e: None)  # main thread: it installs signal handlers
    assert code == main.EXIT_OK
    assert time.monotonic() - start < 30  # the old loop only looked again after a whole poll (60 s here)
    assert len(smtp_server.messages) == 3


def test_password_only_in_keyring_and_wrong_password_stops_run(
    tmp_path: Path, automail_home: Path, smtp_server_auth: SmtpServer
) -> None:
    secret = "Wr0ng-But-Secret-Pa55!"
    add_auth_task(smtp_server_auth.port, secret + "\n", "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 2))
    run = cli("run", "--until-empty", check=1)
    assert "login rejected" in run.stderr and "535" in run.stderr
    assert secret not in run.stdout + run.stderr
    status = json.loads(cli("status", "--json").stdout)[0]
    assert status["state"] == "error" and status["queued"] == 2
    # the secret is nowhere in the data folder: definitions, outbox, logs, locks
    for path in automail_home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"password found in {path}"
    assert json.loads((tmp_path / "keyring.json").read_text())["AutoMail"]["task:Mailing"] == secret
    # the right password, set through the CLI, clears the error and sends
    cli("task", "edit", "Mailing", "--password-stdin", stdin=AUTH_PASSWORD + "\n")
    assert cli("run", "--until-empty").returncode == 0
    assert len(smtp_server_auth.messages) == 2


def test_no_keyring_refuses_password_and_stores_nothing(automail_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.keyring_backend.FailKeyring")
    cli("company", "add", "Firma")
    res = cli(
        "task",
        "add",
        "Mailing",
        "--company",
        "Firma",
        "--host",
        "smtp.example.com",
        "--username",
        "u",
        "--password-stdin",
        "--sender",
        "info@firma.sk",
        stdin="pw\n",
        check=1,
    )
    assert "keyring" in res.stderr and "PYTHON_KEYRING_BACKEND" in res.stderr
    assert json.loads(cli("task", "list", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["task", "add", "T", "--company", "Firma", "--host", "h", "--rate", "50", "--sender", "a@b.sk"], "rate"),
        (["task", "add", "T", "--company", "Firma", "--host", "h", "--rate", "3001", "--sender", "a@b.sk"], "rate"),
        (["task", "add", "T", "--company", "Firma", "--host", "h", "--sender", "not an address"], "sender"),
        (["task", "add", "T", "--company", "Firma", "--host", "h", "--sender", "a@b.sk\r\nBcc: x@y.sk"], "sender"),
        (["task", "add", "T", "--company", "Nope", "--host", "h", "--sender", "a@b.sk"], "company"),
        (["task", "edit", "Nope", "--rate", "200"], "task"),
        (["send", "--company", "Firma", "--to", "bad", "--subject", "s"], "to"),
        (["send", "--company", "Firma", "--to", "a@b.sk", "--subject", "a\nBcc: evil@x.sk"], "subject"),
        (["send", "--company", "Firma", "--subject", "no recipients"], "to"),
        (["send", "--company", "Firma", "--to", "a@b.sk", "--subject", "s", "--attach", "/nonexistent"], "attach"),
        (["enqueue", "--company", "Firma", "/nonexistent.eml"], "nonexistent"),
        (["enqueue", "--company", "Nope", "-"], "company"),
        (["outbox", "--company", "Nope"], "company"),
        (["cancel", "--company", "Firma", "999"], "id"),
        (
            ["task", "add", "T", "--company", "Firma", "--host", "h", "--sender", "a@b.sk", "--retry-delays", "1,x"],
            "retry",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_field_and_stores_nothing(
    args: list[str], field: str, automail_home: Path
) -> None:
    cli("company", "add", "Firma")
    before = (automail_home / "automail.json").read_bytes()
    res = cli(*args, stdin=eml(1), check=2)
    assert field in res.stderr.lower()
    assert res.stdout == ""
    assert (automail_home / "automail.json").read_bytes() == before
    assert json.loads(cli("outbox", "--company", "Firma", "--json").stdout) == []


def test_batch_enqueue_is_all_or_nothing(tmp_path: Path, automail_home: Path) -> None:
    cli("company", "add", "Firma")
    good = write_emls(tmp_path / "in", 3)
    bad = tmp_path / "in" / "bad.eml"
    bad.write_bytes(b"To: someone\r\nSubject: broken\r\n\r\nx")
    res = cli("enqueue", "--company", "Firma", *good, str(bad), check=2)
    assert "bad.eml" in res.stderr and "not a valid e-mail address" in res.stderr
    big = tmp_path / "in" / "big.eml"
    big.write_bytes(eml(9) + b"x" * 2_000_000)
    with pytest.MonkeyPatch.context() as mp:  # cli() passes this process's environment on
        mp.setenv("AUTOMAIL_MAX_MESSAGE_MB", "1")
        res = cli("enqueue", "--company", "Firma", *good, str(big), check=2)
    assert "limit" in res.stderr
    nobody = tmp_path / "in" / "nobody.eml"
    nobody.write_bytes(b"Subject: no recipients\r\n\r\nx")
    assert "no recipients" in cli("enqueue", "--company", "Firma", str(nobody), check=2).stderr
    assert json.loads(cli("outbox", "--company", "Firma", "--json").stdout) == []


def test_enqueue_from_stdin_and_bcc_is_stripped(smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port, "--unlimited")
    cli("task", "start", "Mailing")
    cli("enqueue", "--company", "Firma", "-", stdin=eml(1, extra="Bcc: hidden@example.com\r\n"))
    cli("run", "--until-empty")
    msg = smtp_server.messages[0]
    assert sorted(msg.rcpt_tos) == ["customer1@example.com", "hidden@example.com"]
    assert b"hidden@example.com" not in msg.data


def test_cancel_and_retry(tmp_path: Path) -> None:
    cli("company", "add", "Firma")
    cli("enqueue", "--company", "Firma", *write_emls(tmp_path / "in", 2))
    cli("cancel", "--company", "Firma", "1")
    rows = json.loads(cli("outbox", "--company", "Firma", "--json").stdout)
    assert [r["status"] for r in rows] == ["cancelled", "queued"]
    assert "cannot be cancel" in cli("cancel", "--company", "Firma", "1", check=2).stderr
    assert "only failed or deferred" in cli("retry", "--company", "Firma", "2", check=2).stderr


def test_corrupt_definitions_stop_with_clear_error_and_are_not_touched(automail_home: Path) -> None:
    cli("company", "add", "Firma")
    path = automail_home / "automail.json"
    path.write_text('{"companies": {"1": {"name": "Fir', encoding="utf-8")
    before = path.read_bytes()
    for args in (["status"], ["company", "add", "Other"], ["task", "list"]):
        res = cli(*args, check=1)
        assert str(path) in res.stderr and "damaged" in res.stderr
    assert path.read_bytes() == before


def test_company_and_task_listing_and_removal(smtp_server: SmtpServer) -> None:
    setup_task(
        smtp_server.port,
        "--tag",
        "Shop A",
        "--tag",
        "Shop B",
        "--daily-cap",
        "500",
        "--rate",
        "1800",
        "--computer",
        "other-pc",
        "--user",
        "jana",
    )
    companies = json.loads(cli("company", "list", "--json").stdout)
    assert companies[0]["name"] == "Firma" and companies[0]["outbox_path"].endswith("Firma.sqlite3")
    tasks = json.loads(cli("task", "list", "--json").stdout)
    assert tasks[0]["tags"] == ["Shop A", "Shop B"] and tasks[0]["daily_cap"] == 500
    assert tasks[0]["rate_per_hour"] == 1800 and tasks[0]["computer"] == "other-pc" and tasks[0]["user"] == "jana"
    assert "task(s) Mailing" in cli("company", "remove", "Firma", check=2).stderr
    assert "runs on other-pc" in cli("task", "start", "Mailing").stdout
    cli("task", "remove", "Mailing")
    cli("company", "remove", "Firma")
    assert json.loads(cli("company", "list", "--json").stdout) == []


def test_task_test_reports_server_answer_and_login_failure(smtp_server_auth: SmtpServer) -> None:
    add_auth_task(smtp_server_auth.port, AUTH_PASSWORD)
    assert "logged in as info@firma.sk" in cli("task", "test", "Mailing").stdout
    cli("task", "edit", "Mailing", "--password-stdin", stdin="bad")
    assert "535" in cli("task", "test", "Mailing", check=1).stderr


def engine_running() -> bool:
    """The (only) task is persisted as running: an engine holds its lock."""
    return json.loads(cli("status", "--json").stdout)[0]["state"] == "running"


def test_second_engine_says_which_process_holds_the_task(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port)
    cli("task", "start", "Mailing")
    first = engine_process(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(engine_running, 20)
        second = cli("run", "--until-empty", check=None, timeout=30)
        assert "already being run by process" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.terminate()
        assert first.wait(15) == 0


def test_second_engine_takes_over_when_the_first_quits(tmp_path: Path, smtp_server: SmtpServer) -> None:
    setup_task(smtp_server.port)
    cli("task", "start", "Mailing")
    first = engine_process(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second: subprocess.Popen[bytes] | None = None
    output = tmp_path / "second.out"
    try:
        assert wait_until(engine_running, 20)
        with output.open("wb") as sink:
            second = engine_process(stdout=sink, stderr=subprocess.STDOUT)
        assert wait_until(lambda: b"already being run by process" in output.read_bytes(), 20)
        first.terminate()
        assert first.wait(15) == 0
        cli("enqueue", "--company", "Firma", "-", stdin=eml(1))
        smtp_server.wait_for(1, timeout=20)  # sent by the second engine (retries the lock every 5 s)
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            second.terminate()
            second.wait(20)
    assert second is not None and second.returncode == 0
    text = output.read_text(errors="replace")
    assert text.count("already being run by process") == 1  # said once, not at every retry
    assert [m["status"] for m in json.loads(cli("outbox", "--company", "Firma", "--json").stdout)] == ["sent"]


def test_gui_without_display_points_to_headless(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    demo = cli("demo", timeout=120)  # falls back to the headless demo, and says so
    assert "--headless" in demo.stderr and "sent #10" in demo.stdout
    assert "automail run" in cli(check=1).stderr
