"""A TCP proxy on loopback that delays every byte by a fixed time each way (a long link, no bandwidth cap).

Usage: python bench/delay_proxy.py LISTEN_PORT UPSTREAM_PORT [--delay-ms 5]
Prints ``listening`` once it accepts. 5 ms each way = a 10 ms round trip, an ordinary office uplink
to a provider's SMTP server. Data keep their order and chunking; each chunk leaves ``delay`` after it
arrived, so pipelined commands are not serialised by the proxy (as on a real link). It runs as its
own process so its CPU use does not compete with the benchmarked sender for one interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

HOST = "127.0.0.1"  # loopback only


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader → writer, each chunk ``delay`` s after it was read."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(forward())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    finally:
        queue.put_nowait((loop.time() + delay, b""))
        with contextlib.suppress(OSError):
            await sender


async def _relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream: int, delay: float) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(HOST, upstream)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay))
    finally:
        for w in (client_w, server_w):
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def serve(listen: int, upstream: int, delay: float) -> None:
    server = await asyncio.start_server(lambda r, w: _relay(r, w, upstream, delay), HOST, listen)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("listen", type=int)
    p.add_argument("upstream", type=int)
    p.add_argument("--delay-ms", type=float, default=5.0, help="added each way (default 5 = 10 ms round trip)")
    a = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.listen, a.upstream, a.delay_ms / 1000))


if __name__ == "__main__":
    main()
