"""How the worker waits for the previous result's commit (running in its I/O thread) before the next
message's final dot: against a real aiosmtpd server on 127.0.0.1, with commits in a real thread."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from automail.engine.smtp.transaction import HookFailed, transact
from automail.engine.worker import _Commit
from tests.helpers import eml
from tests.smtpd import SmtpServer
from tests.test_transaction import _client


def test_the_final_dot_waits_for_a_commit_still_running_in_its_thread(smtp_server_pipelining: SmtpServer) -> None:
    server = smtp_server_pipelining
    release = threading.Event()
    seen_at_commit_end: list[int] = []

    def commit() -> None:  # a slow fsync
        release.wait(5)
        seen_at_commit_end.append(len(server.messages))

    async def go() -> None:
        client = await _client(server)
        with ThreadPoolExecutor(1) as io:
            future = io.submit(commit)
            asyncio.get_running_loop().call_later(0.3, release.set)
            started = time.monotonic()
            await transact(client, "info@firma.sk", ["a@example.com"], eml(1), lambda: _Commit(future))
            assert time.monotonic() - started >= 0.25  # the dot waited for the commit
        assert seen_at_commit_end == [0]  # the server had nothing while the commit ran
        assert len(server.wait_for(1)) == 1
        await client.quit()

    asyncio.run(go())


def test_a_failed_commit_aborts_before_the_dot(smtp_server_pipelining: SmtpServer) -> None:
    server = smtp_server_pipelining

    def commit() -> None:
        time.sleep(0.1)
        raise OSError("disk full")

    async def go() -> None:
        client = await _client(server)
        with ThreadPoolExecutor(1) as io:
            future = io.submit(commit)
            with pytest.raises(HookFailed) as failed:
                await transact(client, "info@firma.sk", ["a@example.com"], eml(1), lambda: _Commit(future))
        assert isinstance(failed.value.error, OSError) and str(failed.value.error) == "disk full"
        await asyncio.sleep(0.3)
        assert not client.is_connected and server.messages == []

    asyncio.run(go())


def test_cancelling_the_wait_never_cancels_the_commit() -> None:
    release = threading.Event()
    done: list[str] = []

    def commit() -> None:
        release.wait(5)
        done.append("committed")

    async def go() -> None:
        with ThreadPoolExecutor(1) as io:
            future = io.submit(commit)

            async def wait() -> None:
                await _Commit(future)

            waiting = asyncio.ensure_future(wait())
            await asyncio.sleep(0.05)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert not future.cancelled()
            release.set()
            await _Commit(future)  # a second wait for the same commit ends when it does
            assert done == ["committed"] and future.done() and not future.cancelled()
            await _Commit(future)  # and one for a finished commit returns at once

    asyncio.run(go())
