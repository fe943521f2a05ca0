#!/usr/bin/env python3
"""A small fixed-rate HTTP/1.1 keep-alive client for scripts/bench's churn phase (127.0.0.1 only).

--connections keep-alive connections; request j of the run is due at start + j / rate and goes out on connection
j mod connections (as h2load --rps spreads its rate over its clients). A request that finds its connection closed
by the server before any byte of the response arrived (a proxy that closes idle keep-alive connections, as nginx's
old workers do on a reload) is sent again once on a new connection, as HTTP clients do for idempotent requests;
such retries are counted apart. h2load, by contrast, gives up a client whose connection the server closed, so it
cannot measure a proxy that reloads.

Latency is counted from the time a request was due, not from when it could be sent: a proxy that stalls delays
the requests queued behind the stalled one on its connection, and those waits are part of what a client at that
rate sees (an open-loop client; the service time alone, from the write, is logged too). Requests are not sent
before they are due; the latest a request left after it was due is reported (`late_ms_max`): when that is large
in the steady state, the client itself could not keep up.

Output: a JSON line {"started": <wall-clock time the first request is due>} on stdout at the start; one line per
request to --log (due time in microseconds since the epoch, status or -1 for a failure, latency from the due time
and from the write, in microseconds); a JSON summary on stdout at the end. SIGTERM or SIGINT ends the run early
(requests in flight still complete, each bounded by --timeout) and still writes both. The run is bounded by
--duration and --max-requests.
"""

import argparse
import asyncio
import gc
import json
import os
import signal
import sys
import time


class Closed(Exception):
    """The server closed the connection before any byte of the response."""


async def read_response(reader):
    """Reads one HTTP/1.1 response; returns (status, keep_alive)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise Closed() from None
        raise
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    length = None
    chunked = False
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection":
            keep_alive = "close" not in value and (keep_alive or "keep-alive" in value)
    if chunked:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length is not None:
        await reader.readexactly(length)
    elif status not in (204, 304) and status >= 200:
        await reader.read()  # body until the server closes
        keep_alive = False
    return status, keep_alive


class Run:
    def __init__(self, args):
        self.args = args
        self.records = []  # (start wall us, status, latency us)
        self.retries = 0
        self.connects = 0
        self.late_max = 0.0
        self.errors = {}
        self.stopping = False
        self.request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n\r\n".encode()

    def error(self, e):
        k = type(e).__name__
        self.errors[k] = self.errors.get(k, 0) + 1

    async def connect(self):
        self.connects += 1
        return await asyncio.open_connection("127.0.0.1", self.args.port)

    async def wait_due(self, due):
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self.late_max = max(self.late_max, -delay)

    async def keepalive_worker(self, k, t0, deadline):
        a = self.args
        conn = None
        j = k
        while not self.stopping and len(self.records) < a.max_requests:
            due = t0 + j / a.rate
            if due >= deadline:
                break
            await self.wait_due(due)
            if self.stopping:
                break
            wall = time.time() - (time.monotonic() - due)  # the due time, on the wall clock
            start = time.monotonic()
            status = -1
            for attempt in (0, 1):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(self.connect(), a.timeout)
                    reader, writer = conn
                    writer.write(self.request)
                    status, keep = await asyncio.wait_for(read_response(reader), a.timeout)
                    if not keep:
                        writer.close()
                        conn = None
                    break
                except (Closed, ConnectionResetError, BrokenPipeError) as e:
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    if reused and attempt == 0:
                        self.retries += 1
                        continue
                    self.error(e)
                    break
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                    if conn is not None:
                        conn[1].close()
                    conn = None
                    self.error(e)
                    break
            end = time.monotonic()
            self.records.append((int(wall * 1e6), status, int((end - due) * 1e6), int((end - start) * 1e6)))
            j += a.connections
        if conn is not None:
            conn[1].close()

    async def main(self):
        a = self.args
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        t0 = time.monotonic() + 0.05
        deadline = t0 + a.duration
        # The caller starts its clock on this line: the first request is due then.
        print(json.dumps({"started": time.time() + 0.05}), flush=True)
        await asyncio.gather(*(self.keepalive_worker(k, t0, deadline) for k in range(a.connections)))
        self.elapsed = min(time.monotonic(), deadline) - t0

    def stop(self):
        self.stopping = True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True, help="Host header")
    ap.add_argument("--path", default="/")
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--max-requests", type=int, default=2_000_000)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        raise SystemExit("rate, duration and connections must be positive")
    gc.disable()  # no collector pauses inside the measurement; the run is bounded
    run = Run(args)
    cpu0 = os.times()
    asyncio.run(run.main())
    cpu1 = os.times()
    with open(args.log, "w") as f:
        for wall, status, lat, sent in run.records:
            f.write(f"{wall}\t{status}\t{lat}\t{sent}\n")
    ok = sum(1 for r in run.records if r[1] != -1)
    json.dump(
        {
            "requests": len(run.records),
            "completed": ok,
            "elapsed": round(run.elapsed, 3),
            "retries": run.retries,
            "connects": run.connects,
            "errors": run.errors,
            "late_ms_max": round(run.late_max * 1000, 1),
            "client_cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
