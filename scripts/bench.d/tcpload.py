#!/usr/bin/env python3
"""The TCP side of scripts/bench's tcp phase (127.0.0.1 only): an upstream server and two clients.

  tcpload.py serve PORT            the upstream: the first byte a connection sends picks what it gets.
                                   b"S": a stream of bytes until the client closes (bulk transfer);
                                   b"E": every later byte echoed back, then EOF once the client half-closes.
  tcpload.py stream PORT SECONDS CONNECTIONS
                                   CONNECTIONS connections read the stream for SECONDS; prints a JSON line
                                   {"bytes": total received, "seconds": elapsed, "errors": n}.
  tcpload.py connect PORT SECONDS [--max N]
                                   one exchange per new connection, one after the other, for SECONDS (at most N):
                                   connect, send b"E" + 63 bytes, half-close, read the 63 echoed bytes and EOF,
                                   close. Prints {"connections": n, "errors": n, "p50_us", "p99_us", "max_us"}.

Everything is bounded in time: each socket operation by a 5 s timeout, each run by SECONDS.
"""

import json
import socket
import sys
import threading
import time

CHUNK = 256 * 1024
PAYLOAD = bytes(range(63))


def serve(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(4096)
    block = memoryview(b"x" * CHUNK)

    def one(c):
        try:
            c.settimeout(30)
            mode = c.recv(1)
            if mode == b"S":
                while True:
                    c.sendall(block)
            elif mode == b"E":
                while True:
                    data = c.recv(65536)
                    if not data:
                        break
                    c.sendall(data)
        except OSError:
            pass
        finally:
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def stream(port, seconds, connections):
    total = [0] * connections
    errors = [0]
    deadline = time.monotonic() + seconds

    def reader(i):
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"S")
                while time.monotonic() < deadline:
                    n = s.recv_into(view)
                    if n == 0:
                        errors[0] += 1
                        return
                    total[i] += n
        except OSError:
            errors[0] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    print(json.dumps({"bytes": sum(total), "seconds": time.monotonic() - t0, "errors": errors[0]}), flush=True)


def connect(port, seconds, limit):
    lat = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(lat) + errors < limit:
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"E" + PAYLOAD)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    d = s.recv(4096)
                    if not d:
                        break
                    got += d
            if got != PAYLOAD:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)
        except OSError:
            errors += 1
    lat.sort()

    def q(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6) if lat else None

    print(json.dumps({"connections": len(lat), "errors": errors, "p50_us": q(0.5), "p99_us": q(0.99),
                      "max_us": q(1.0)}), flush=True)


def main():
    a = sys.argv[1:]
    if len(a) >= 2 and a[0] == "serve":
        serve(int(a[1]))
    elif len(a) == 4 and a[0] == "stream":
        stream(int(a[1]), float(a[2]), int(a[3]))
    elif len(a) in (3, 5) and a[0] == "connect":
        limit = int(a[4]) if len(a) == 5 and a[3] == "--max" else 10**9
        connect(int(a[1]), float(a[2]), limit)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
