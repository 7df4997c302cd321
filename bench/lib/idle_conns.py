#!/usr/bin/env python3
"""Holds N idle keep-alive connections open against a proxy and reports its memory.

Usage: idle_conns.py h1|h2c PORT N PID...   (PIDs whose RSS is summed)
Each connection makes one request (so the server holds a served keep-alive connection,
not a half-open socket), then idles:
  h1   HTTP/1.1: `GET /small.bin`, the whole body read.
  h2c  HTTP/2 with prior knowledge (the `h2` package): preface and SETTINGS, one
       `GET /small.bin` on stream 1, the whole answer read, SETTINGS acknowledged.
Three cycles of open-all / close-all show whether the memory stays bounded (the same peak
each cycle) or keeps growing. Bounded: at most N connections, 250 opening at once, 300 s
overall.
Prints `BYTES_PER_CONNECTION<TAB>a Markdown-table-ready line` on stdout.
"""
import asyncio
import resource
import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))
from proc import status  # noqa: E402

PROTO, PORT, N, PIDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
if PROTO not in ("h1", "h2c"):
    sys.exit(f"unknown protocol {PROTO!r} (h1 or h2c)")
TIME_LIMIT = 300  # bench/run keeps iap-proxy's --client-idle-timeout above it
CYCLES = 3
# The proxy answers only Hosts that cannot be DNS-rebound (localhost, IP addresses).
HOST = "localhost"
REQUEST = f"GET /small.bin HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def rss_kib():
    return sum(status(p, "VmRSS") for p in PIDS)


class H1:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    async def request(self):
        self.writer.write(REQUEST)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_code = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status_code


class H2C:
    def __init__(self, reader, writer):
        import h2.config
        import h2.connection

        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()  # preface + SETTINGS

    async def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    async def request(self):
        import h2.events

        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", HOST.encode()),
             (b":path", b"/small.bin")],
            end_stream=True,
        )
        await self.flush()
        status_code = 0
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("closed by the server")
            for ev in self.conn.receive_data(data):  # acknowledges SETTINGS by itself
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status_code = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise ConnectionError(f"stream reset ({ev.error_code})")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise ConnectionError(f"GOAWAY ({ev.error_code})")
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    await self.flush()
                    return status_code
            await self.flush()


async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    c = (H1 if PROTO == "h1" else H2C)(reader, writer)
    return c, await c.request()


async def open_all():
    conns, bad = [], 0
    while len(conns) < N:
        batch = min(250, N - len(conns))
        for c, code in await asyncio.gather(*(one() for _ in range(batch))):
            conns.append(c)
            bad += code != 200
    return conns, bad


async def still_served(c):
    try:
        return await asyncio.wait_for(c.request(), 10) == 200
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
        print(f"probe after idling: {e!r}", file=sys.stderr)
        return False


async def close_all(conns):
    for c in conns:
        c.writer.close()
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
        sample = conns[:: max(1, N // 100)]
        alive = sum([await still_served(c) for c in sample])
        peaks.append(held)
        await close_all(conns)
        afters.append(rss_kib())
    per_conn = (peaks[0] - base) * 1024 / N
    print(
        f"{per_conn:.0f}\t"
        f"RSS {base / 1024:.1f} MiB idle → {peaks[0] / 1024:.1f} MiB holding {N} "
        f"(**{per_conn:,.0f} bytes/connection**) → {afters[0] / 1024:.1f} MiB after closing; "
        f"cycles 2–3 peak {', '.join(f'{p / 1024:.1f}' for p in peaks[1:])} MiB; "
        f"{'all answered 200' if bad_total == 0 else f'{bad_total} non-200'}, "
        f"{alive}/{len(sample)} sampled still served after idling"
    )


async def bounded():
    try:
        await asyncio.wait_for(main(), TIME_LIMIT)
    except asyncio.TimeoutError:
        raise SystemExit(f"ran out of time ({TIME_LIMIT} s)") from None


asyncio.run(bounded())
