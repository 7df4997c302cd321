#!/usr/bin/env python3
"""Holds N idle keep-alive connections open against a proxy and reports its memory.

Usage: idle_conns.py PORT N PID...   (PIDs whose RSS is summed)
Each connection makes one request (so the server holds a served keep-alive connection,
not a half-open socket), then idles. Three cycles of open-all / close-all show whether the
memory stays bounded (the same peak each cycle) or keeps growing. Bounded: at most N connections, 4 batches in flight, 120 s overall.
Prints one Markdown-table-ready line on stdout.
"""
import asyncio
import resource
import sys
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from proc import status  # noqa: E402

PORT, N, PIDS = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
DEADLINE = time.monotonic() + 120
CYCLES = 3
# The proxy answers only Hosts that cannot be DNS-rebound (localhost, IP addresses).
REQUEST = b"GET /small.bin HTTP/1.1\r\nHost: localhost\r\n\r\n"


def rss_kib():
    return sum(status(p, "VmRSS") for p in PIDS)


async def request(reader, writer):
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_code = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status_code


async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    code = await request(reader, writer)
    return reader, writer, code


async def open_all():
    conns, bad = [], 0
    while len(conns) < N:
        if time.monotonic() > DEADLINE:
            raise SystemExit("ran out of time opening connections")
        batch = min(250, N - len(conns))
        for r in await asyncio.gather(*(one() for _ in range(batch))):
            conns.append(r[:2])
            bad += r[2] != 200
    return conns, bad


async def close_all(conns):
    for _, w in conns:
        w.close()
    await asyncio.sleep(1.5)


async def main():
    want = N + 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = rss_kib()
    peaks, afters, bad_total = [], [], 0
    for _cycle in range(CYCLES):
        conns, bad = await open_all()
        bad_total += bad
        await asyncio.sleep(2)
        held = rss_kib()
        # still alive and served after idling
        alive = 0
        for r, w in conns[:: max(1, N // 100)]:
            alive += await request(r, w) == 200
        peaks.append(held)
        await close_all(conns)
        afters.append(rss_kib())
    per_conn = (peaks[0] - base) * 1024 / N
    print(
        f"RSS {base / 1024:.1f} MiB idle → {peaks[0] / 1024:.1f} MiB holding {N} "
        f"(**{per_conn:,.0f} bytes/connection**) → {afters[0] / 1024:.1f} MiB after closing; "
        f"cycles 2–3 peak {', '.join(f'{p / 1024:.1f}' for p in peaks[1:])} MiB; "
        f"{'all answered 200' if bad_total == 0 else f'{bad_total} non-200'}, "
        f"{alive}/{len(conns[:: max(1, N // 100)])} sampled still served after idling"
    )


asyncio.run(main())
