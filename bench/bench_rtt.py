"""Throughput over a 10 ms round trip: AutoMail vs a bare aiosmtplib loop vs mailmerge, through a delaying proxy.

Every sender talks to Postfix's smtp-sink through bench/delay_proxy.py (5 ms added each way on
loopback), so round trips, not CPU, set the pace, as on a real link to a provider's server.
The senders are the ones of bench_throughput.py: (a) AutoMail's whole engine with an unthrottled
task, (b) a bare aiosmtplib loop on one reused connection, (c) mailmerge (new connection per message).
Rounds interleave the senders; medians are reported.
Usage: python bench/bench_rtt.py [--messages N] [--rounds R] [--delay-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import prepare_mailmerge, run_aiosmtplib, run_automail, run_mailmerge
from common import HOST, DelayProxy, Result, SmtpSink, median, remove, temp_dir


def measure_rtt(port: int, samples: int = 20) -> float:
    """Median seconds of one SMTP command's round trip (NOOP) through ``port``."""
    import aiosmtplib

    async def go() -> list[float]:
        client = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, use_tls=False, timeout=30)
        await client.connect()
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            await client.noop()
            times.append(time.perf_counter() - t0)
        await client.quit()
        return times

    return median(asyncio.run(go()))


def bench(n: int = 200, rounds: int = 3, delay_ms: float = 5.0) -> Result:
    rtt_ms = 2 * delay_ms
    res = Result(
        f"Throughput over a {rtt_ms:g} ms round trip: {n:,} × 1 KB messages through a delaying proxy "
        f"to smtp-sink ({rounds} interleaved rounds)"
    )
    runs: dict[str, list[dict[str, float]]] = {"automail": [], "aiosmtplib": [], "mailmerge": []}
    mm_dir = temp_dir("mailmerge-rtt-")
    try:
        with SmtpSink() as sink:
            direct_rtt = measure_rtt(sink.port)
            with DelayProxy(sink.port, delay_ms) as proxy:
                rtts = [measure_rtt(proxy.port)]
                mm_cmd = prepare_mailmerge(mm_dir, proxy.port, n)
                for r in range(rounds):
                    runs["automail"].append(run_automail(proxy.port, n))
                    runs["aiosmtplib"].append(run_aiosmtplib(proxy.port, n))
                    runs["mailmerge"].append(run_mailmerge(mm_cmd, n))
                    rtts.append(measure_rtt(proxy.port))  # the machine's load changes between rounds
                    print(
                        f"  round {r + 1}: automail {runs['automail'][-1]['rate']:.1f}, "
                        f"aiosmtplib {runs['aiosmtplib'][-1]['rate']:.1f}, "
                        f"mailmerge {runs['mailmerge'][-1]['rate']:.1f} msgs/s",
                        flush=True,
                    )
    finally:
        remove(mm_dir)

    med = {k: median([x["rate"] for x in v]) for k, v in runs.items()}
    rtt = median(rtts)
    names = {
        "automail": "AutoMail (engine, durable outbox, PIPELINING)",
        "aiosmtplib": "bare aiosmtplib, 1 reused connection",
        "mailmerge": "mailmerge 2.3, new connection per message",
    }
    res.table = [["sender", "median msgs/s", "runs (msgs/s)", "ms per message", "round trips per message"]]
    for key, name in names.items():
        ms = 1000 / med[key]
        runs_text = ", ".join(f"{x['rate']:.1f}" for x in runs[key])
        res.table.append([name, f"{med[key]:.1f}", runs_text, f"{ms:.1f}", f"{ms / (rtt * 1000):.1f}"])
    r_aio = med["automail"] / med["aiosmtplib"]
    r_mm = med["automail"] / med["mailmerge"]
    res.lines.append(f"AutoMail / bare aiosmtplib = {r_aio:.2f}×; AutoMail / mailmerge = {r_mm:.2f}×")
    res.lines.append(
        f"Measured round trip (median SMTP NOOP, before and after every round: "
        f"{', '.join(f'{x * 1000:.1f}' for x in rtts)} ms): {rtt * 1000:.2f} ms through the proxy "
        f"({delay_ms:g} ms added each way; the rest is the proxy's and the client's timer wake-ups on this "
        f"shared machine), {direct_rtt * 1000:.2f} ms straight to smtp-sink"
    )
    res.lines.append(
        "Round trips per message = ms per message / measured round trip: PIPELINING sends MAIL, RCPT "
        "and DATA in one write and the body in a second (2 per message; 3 on a connection where a "
        "message had every recipient refused); the bare loop waits for each of MAIL, RCPT, DATA and "
        "the body (4); mailmerge also connects, greets, EHLOs and QUITs every time"
    )
    # 4 round trips against 2: at most 2× in theory.  DATA stops being pipelined on a connection once
    # a message there had every recipient refused (engine/smtp/transaction.py); none is here.
    res.check(f"over a {rtt_ms:g} ms round trip AutoMail ≥ 1.3× bare aiosmtplib (got {r_aio:.2f}×)", r_aio >= 1.3)
    res.check(f"over a {rtt_ms:g} ms round trip AutoMail ≥ 2× mailmerge (got {r_mm:.2f}×)", r_mm >= 2.0)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--delay-ms", type=float, default=5.0, help="added each way (default 5 = 10 ms round trip)")
    a = p.parse_args()
    bench(a.messages, a.rounds, a.delay_ms).print()


if __name__ == "__main__":
    main()
