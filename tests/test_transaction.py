"""The SMTP transaction AutoMail runs itself: PIPELINING, the hook before the final dot, replies.

Every outcome is checked against a real aiosmtpd server on 127.0.0.1, once with PIPELINING
advertised (envelope in one write) and once without (one command at a time).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest

from automail.engine.smtp.transaction import MAX_REPLY_BYTES, HookFailed, _ReplyReader, data_payload, transact
from automail.errors import FaultKind, Reply, SmtpError
from automail.models import MessageStatus, TaskState
from tests.helpers import eml, make_service, make_task, run_engine_until
from tests.smtpd import SmtpServer


@pytest.fixture(params=["smtp_server_pipelining", "smtp_server"], ids=["pipelining", "one-by-one"])
def server(request: pytest.FixtureRequest) -> SmtpServer:
    """Every test here runs against a server with PIPELINING and one without."""
    server: SmtpServer = request.getfixturevalue(request.param)
    return server


def _packets_with(server: SmtpServer, *commands: bytes) -> int:
    return sum(all(c in p for c in commands) for p in server.packets)


# ---- through the engine ---------------------------------------------------------------------
def test_envelope_is_pipelined_only_when_offered(automail_home: Path, server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i, to=f"c{i}@example.com")) for i in range(3)])
    run_engine_until(svc, lambda: len(server.messages) == 3 and not svc.pending(svc.tasks()))
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.SENT] * 3
    assert [m.rcpt_tos for m in server.messages] == [["c0@example.com"], ["c1@example.com"], ["c2@example.com"]]
    together = _packets_with(server, b"MAIL FROM:", b"RCPT TO:", b"DATA\r\n")
    if server.pipelining:
        assert together == 3  # MAIL, RCPT and DATA of each message in one write (RFC 2920)
    else:
        assert _packets_with(server, b"MAIL FROM:", b"RCPT TO:") == 0  # never ahead of the server's replies
        assert _packets_with(server, b"RCPT TO:", b"DATA\r\n") == 0
        assert _packets_with(server, b"MAIL FROM:") == 3
    svc.close()


def test_partial_and_total_refusal(automail_home: Path, server: SmtpServer) -> None:
    server.rcpt_replies = {"gone@example.com": "550 5.1.1 No such user", "nobody@example.com": "550 5.1.1 Unknown"}
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw(
        "Firma",
        [
            ("both", eml(1, to="gone@example.com, ok@example.com")),
            ("none", eml(2, to="nobody@example.com")),
            ("next", eml(3, to="next@example.com")),
        ],
    )
    run_engine_until(svc, lambda: len(server.messages) == 2 and not svc.pending(svc.tasks()))
    both, none, nxt = svc.messages("Firma")
    assert both.status is MessageStatus.SENT and "gone@example.com" in both.refused
    assert none.status is MessageStatus.FAILED and none.last_error_code == 550
    assert "nobody@example.com" in none.last_error
    assert nxt.status is MessageStatus.SENT
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.com"], ["next@example.com"]]
    assert server.connections == 1  # a refusal does not cost the connection (RSET, go on)
    svc.close()


def test_data_refused_fails_only_that_message(automail_home: Path, server: SmtpServer) -> None:
    server.data_replies = ["554 5.7.1 Rejected as spam"]
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(3)])
    run_engine_until(svc, lambda: len(server.messages) == 2 and not svc.pending(svc.tasks()))
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.FAILED, MessageStatus.SENT, MessageStatus.SENT]
    assert "spam" in svc.messages("Firma")[0].last_error
    svc.close()


def test_sender_refused_stops_the_task_and_keeps_messages_queued(automail_home: Path, server: SmtpServer) -> None:
    server.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(2)])
    run_engine_until(svc, lambda: svc.status()[0].state is TaskState.ERROR)
    status = svc.status()[0]
    assert "sender" in status.last_error and "553" in status.last_error
    assert [m.status for m in svc.messages("Firma")] == [MessageStatus.QUEUED] * 2
    assert [m.attempts for m in svc.messages("Firma")] == [0, 0]
    assert server.messages == []
    svc.close()


def test_connection_dropped_mid_data_defers(automail_home: Path, server: SmtpServer) -> None:
    server.drop_on_data = 1
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [(f"m{i}", eml(i)) for i in range(2)])
    expected = [MessageStatus.DEFERRED, MessageStatus.SENT]
    run_engine_until(svc, lambda: [m.status for m in svc.messages("Firma")] == expected)
    first = svc.messages("Firma")[0]
    assert first.attempts == 1 and "lost" in first.last_error
    assert server.connections == 2  # reconnected after the drop
    svc.close()


def test_body_arrives_intact_dots_and_line_endings(automail_home: Path, server: SmtpServer) -> None:
    body = b".hidden line\n..two dots\r\nlone CR\rend\n."
    raw = b"To: a@example.com\r\nSubject: dots\r\n\r\n" + body
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [("dots", raw)])
    run_engine_until(svc, lambda: len(server.messages) == 1)
    got = server.messages[0].data
    # dots un-stuffed by the server, every line ending CRLF, the last line "." kept
    assert got.endswith(b"\r\n\r\n.hidden line\r\n..two dots\r\nlone CR\r\nend\r\n.\r\n")
    svc.close()


def test_non_ascii_address_needs_smtputf8(automail_home: Path, server: SmtpServer) -> None:
    svc = make_service(automail_home, make_task(port=server.port))
    svc.enqueue_raw("Firma", [("utf8", eml(1, to="jožo@example.com"))])
    run_engine_until(svc, lambda: len(server.messages) == 1)
    assert server.messages[0].rcpt_tos == ["jožo@example.com"]
    assert svc.messages("Firma")[0].status is MessageStatus.SENT

    server.smtputf8 = False
    server.clear()
    svc.enqueue_raw("Firma", [("utf8-again", eml(2, to="jožo@example.com")), ("ascii", eml(3))])
    # the next engine run opens a fresh connection, which sees the new EHLO
    run_engine_until(svc, lambda: len(server.messages) == 1 and not svc.pending(svc.tasks()))
    _, refused, ascii_msg = svc.messages("Firma")
    assert refused.status is MessageStatus.FAILED and "SMTPUTF8" in refused.last_error
    assert ascii_msg.status is MessageStatus.SENT
    svc.close()


# ---- the transaction on its own -------------------------------------------------------------------
async def _client(server: SmtpServer) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(hostname=server.host, port=server.port, start_tls=False, timeout=5)
    await client.connect()
    await client.ehlo()
    return client


def test_hook_runs_before_the_final_dot_and_a_failing_hook_aborts(server: SmtpServer) -> None:
    async def go() -> None:
        client = await _client(server)
        seen: list[int] = []

        def hook() -> None:  # the server must not have the message yet
            seen.append(len(server.messages))

        result = await transact(client, "info@firma.sk", ["a@example.com"], eml(1), hook)
        assert result.refused == {} and result.reply.startswith("2.0.0 Ok") and seen == [0]
        assert len(server.wait_for(1)) == 1

        def broken() -> None:
            raise RuntimeError("disk full")

        with pytest.raises(HookFailed) as failed:
            await transact(client, "info@firma.sk", ["b@example.com"], eml(2), broken)
        assert isinstance(failed.value.error, RuntimeError) and str(failed.value.error) == "disk full"
        await asyncio.sleep(0.3)
        assert not client.is_connected  # aborted before the dot ...
        assert len(server.messages) == 1  # ... so the server threw the message away

    asyncio.run(go())


def test_transaction_on_a_closed_connection_says_so(server: SmtpServer) -> None:
    async def go() -> None:
        client = await _client(server)
        client.close()
        with pytest.raises(SmtpError, match="lost") as lost:
            await transact(client, "info@firma.sk", ["a@example.com"], eml(1))
        assert lost.value.kind is FaultKind.TRANSIENT and not lost.value.outcome_unknown

    asyncio.run(go())


def test_reply_reader_joins_split_and_packed_replies() -> None:
    async def go() -> None:
        reader = _ReplyReader(asyncio.Protocol())
        reader.data_received(b"250-first line\r\n25")
        reader.data_received(b"0 second\r\n354 go ahead\r\n250 ok")
        assert await reader.reply(1) == Reply(250, "first line second")
        assert await reader.reply(1) == Reply(354, "go ahead")
        reader.data_received(b"\r\n")
        assert await reader.reply(1) == Reply(250, "ok")
        with pytest.raises(TimeoutError):
            await reader.reply(0.05)
        reader.data_received(b"250 \r\n221-a\r\n221 b  c \r\n")  # empty text; the next reply joined again
        assert await reader.reply(1) == Reply(250, "")
        assert await reader.reply(1) == Reply(221, "a b c")
        reader.data_received(b"hello there\r\n")
        with pytest.raises(Exception, match="malformed"):
            await reader.reply(1)
        long = _ReplyReader(asyncio.Protocol())  # many continuation lines, each short, too much in all
        long.data_received(b"250-" + b"x" * 1000 + b"\r\n")
        for _ in range(MAX_REPLY_BYTES // 1000):
            long.data_received(b"250-" + b"x" * 1000 + b"\r\n")
        with pytest.raises(Exception, match="over-long reply"):
            await long.reply(1)

    asyncio.run(go())


def test_data_payload_stuffs_dots_and_normalizes_line_endings() -> None:
    assert data_payload(b"a\r\nb") == b"a\r\nb\r\n"
    assert data_payload(b".x\n.y\r\nz\r") == b"..x\r\n..y\r\nz\r\n"
    assert data_payload(b"plain\r\n") == b"plain\r\n"
    big = b"line\r\n" * 10000
    assert data_payload(big) is big  # already clean: sent as it is, no copy


def test_upload_waits_for_room_and_times_out_only_without_progress() -> None:
    """The data phase has no total deadline: it waits while the transport is full, up to a block's timeout."""

    async def go() -> None:
        reader = _ReplyReader(asyncio.Protocol())
        await reader.drained(0.01)  # room: at once
        reader.pause_writing()
        waiting = asyncio.ensure_future(reader.drained(1))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        reader.resume_writing()  # progress: the upload goes on
        await waiting
        reader.pause_writing()
        with pytest.raises(TimeoutError):
            await reader.drained(0.05)  # no progress for a whole block timeout

    asyncio.run(go())
