#!/usr/bin/env python3
"""Portcullis side by side with nginx, HAProxy and a direct connection, in one run (see docs/benchmarks.md).

Run through scripts/bench (which installs the tools and builds the proxy). Everything listens on 127.0.0.1 only;
every process started here is stopped on exit (by its process group id).

Phases:
1. throughput: for each routing-table size, start Portcullis, nginx and HAProxy with the same host table, then run
   wrk against direct / portcullis / nginx / haproxy in alternation (A B C D A B C D ...), then a fixed-rate run
   (h2load --rps) at 50% of nginx's closed-loop rate for latency and CPU at equal load.
2. reload: with 10 and 10,000 routes loaded, how long a file change takes to be served (404 -> 200), and whether
   requests under wrk load see any error while 100 route edits are published.
3. profile (--profile or --only profile): instructions per request under callgrind, perf samples of Portcullis.
4. wakeups (--only wakeups, not in the default run): Portcullis next to nginx made slower in user space only
   (regular-expression locations it rejects on every request), to see whether kernel time per request follows
   user time through the wake-ups of the upstream and the client.
"""

import argparse
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = []  # Popen objects, each the leader of its own process group


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------

def start(argv, cpu, logfile, env=None):
    """Starts argv pinned to `cpu` in its own process group; output goes to logfile."""
    out = open(logfile, "ab")
    p = subprocess.Popen(
        ["taskset", "-c", str(cpu)] + argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    STARTED.append(p)
    return p


def stop(p):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=5)


def stop_all():
    while STARTED:
        stop(STARTED.pop())


def pids_of(p):
    """The process and its children (nginx/haproxy may fork): every pid whose process group is p's."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == p.pid:  # pgrp
                pids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def cpu_split(pids):
    """(utime, stime) of every thread of these processes, in clock ticks: user space and kernel."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return user, system


def cpu_ticks(pids):
    """utime + stime of every thread of these processes, in clock ticks."""
    return sum(cpu_split(pids))


def mem_kb(pids, key):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def sleeps(pids):
    """Voluntary context switches of every thread of these processes: how often they blocked waiting for work."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def wakeup_ipis(cpus):
    """Interrupts these CPUs received from the others to run a function or reschedule (the CAL and RES lines of
    /proc/interrupts): mostly wake-ups of a task that slept there. None where the file has no such lines."""
    try:
        with open("/proc/interrupts") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    header = lines[0].split() if lines else []
    cols = [header.index(f"CPU{c}") + 1 for c in set(cpus) if f"CPU{c}" in header]
    if not cols:
        return None
    total = None
    for line in lines[1:]:
        parts = line.split()
        if parts and parts[0] in ("CAL:", "RES:"):
            total = (total or 0) + sum(int(parts[i]) for i in cols if len(parts) > i)
    return total


def machine_busy():
    """(busy ticks, total ticks) of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def http_get(port, host, path="/", timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        c.close()


def wait_status(port, host, status, timeout, path="/"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_get(port, host, path) == status:
            return True
        time.sleep(0.05)
    return False


# ----------------------------------------------------------------------------------------------------------------
# Configuration of the peers (generated from the same host list)
# ----------------------------------------------------------------------------------------------------------------

def host(k):
    return f"h{k}.bench.test"


NGINX_COMMON = """worker_processes 1;
daemon off;
master_process off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}.err warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/{name}-cb;
  proxy_temp_path {tmp}/{name}-pt;
  fastcgi_temp_path {tmp}/{name}-ft;
  uwsgi_temp_path {tmp}/{name}-ut;
  scgi_temp_path {tmp}/{name}-st;
"""


def write_upstream_conf(tmp, port):
    path = f"{tmp}/upstream.conf"
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(tmp=tmp, name="upstream"))
        f.write(
            f"  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
        )
    return path


def write_nginx_conf(tmp, port, up_port, n, extra_regex=0):
    """nginx as the reverse proxy for n hosts. extra_regex > 0 puts that many regular-expression locations, which
    never match, before the proxying one: nginx then tries all of them on every request (the wake-ups phase)."""
    name = f"nginx-{n}" if not extra_regex else f"nginx-{n}-r{extra_regex}"
    path = f"{tmp}/{name}.conf"
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(tmp=tmp, name=name))
        f.write("  server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 64;\n")
        f.write(
            f"  upstream up {{ server 127.0.0.1:{up_port}; keepalive 128; keepalive_requests 1000000; }}\n"
        )
        f.write(f"  server {{ listen 127.0.0.1:{port} default_server backlog=4096; return 404; }}\n")
        loc = "".join(f"location ~ ^/nomatch{i}/x[a-z]+y$ {{ return 404; }} " for i in range(extra_regex)) + (
            "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
            "proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
            "proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; }"
        )
        for k in range(n):
            f.write(f"  server {{ listen 127.0.0.1:{port}; server_name {host(k)}; {loc} }}\n")
        f.write("}\n")
    return path


def write_haproxy_conf(tmp, port, up_port, n):
    mapfile = f"{tmp}/haproxy-{n}.map"
    with open(mapfile, "w") as f:
        for k in range(n):
            f.write(f"{host(k)} be_up\n")
    path = f"{tmp}/haproxy-{n}.cfg"
    with open(path, "w") as f:
        f.write(
            f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  use_backend %[req.hdr(host),field(1,:),lower,map_str({mapfile},be_404)]
backend be_up
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  server up 127.0.0.1:{up_port} maxconn 1000
backend be_404
  http-request return status 404
"""
        )
    return path


PORTCULLIS_BASE = """apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portcullis
  annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {{controller: portcullis.dev/ingress-controller}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
"""

SERVICE = """---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: bench}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


def ingress(name, hostname, service, paths=("/",)):
    p = ", ".join(
        f"{{path: {x}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}"
        for x in paths
    )
    return (
        f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench}}\n"
        f"spec:\n  rules:\n  - host: {hostname}\n    http: {{paths: [{p}]}}\n"
    )


def write_portcullis_manifests(d, up_port, n):
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/00-base.yaml", "w") as f:
        f.write(PORTCULLIS_BASE.format())
        f.write(SERVICE.format(name="up", port=up_port))
        f.write(SERVICE.format(name="up2", port=up_port))
    # The file source reads at most 1,024 documents per file: 500 Ingresses per file.
    for start_k in range(0, n, 500):
        with open(f"{d}/10-routes-{start_k // 500:03d}.yaml", "w") as f:
            for k in range(start_k, min(n, start_k + 500)):
                f.write(ingress(f"h{k}", host(k), "up"))


def write_atomic(path, text):
    d, base = os.path.split(path)
    tmp = os.path.join(d, "." + base + ".tmp")  # hidden: the file source skips it
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
# Load generators
# ----------------------------------------------------------------------------------------------------------------

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def run_wrk(args, port, hostname, duration, connections, path="/"):
    """Runs wrk pinned to the client core; returns its figures and its own CPU time."""
    argv = [
        "taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
        "--latency", "-H", f"Host: {hostname}", f"http://127.0.0.1:{port}{path}",
    ]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + duration + 15
    out = b""
    # wait4 gives wrk's own rusage (the client's CPU, for the background-load figure).
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    out = p.stdout.read().decode(errors="replace")
    p.returncode = 0
    r = {"wrk_cpu_ticks": (ru.ru_utime + ru.ru_stime) * CLK_TCK, "raw": out}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)
        r[f"p{q}"] = parse_latency(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sockerr"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def run_h2load(args, port, hostname, rate, duration, logfile):
    """Fixed request rate (h2load --rps, HTTP/1.1, 16 connections); per-request latencies from its log."""
    clients = 16
    per_client = max(1, int(rate / clients))
    if os.path.exists(logfile):
        os.remove(logfile)
    argv = [
        "taskset", "-c", str(args.client_cpu), "h2load", "--h1", "-t1", f"-c{clients}",
        f"--rps={per_client}", f"-D{duration}", "-H", f":authority: {hostname}", f"--log-file={logfile}",
        f"http://127.0.0.1:{port}/",
    ]
    try:
        out = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=duration + 15
        ).stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        out = ""
    lat = []
    bad = 0
    with open(logfile) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                if not parts[1].startswith("2"):
                    bad += 1
                lat.append(int(parts[2]))
    lat.sort()
    r = {"requests": len(lat), "rps": len(lat) / duration, "non2xx": bad, "raw": out}
    r["p50"] = lat[len(lat) // 2] if lat else float("nan")
    r["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    m = re.search(r"(\d+) errored", out)
    r["sockerr"] = int(m.group(1)) if m else 0
    return r


# ----------------------------------------------------------------------------------------------------------------
# Phase 1: throughput side by side
# ----------------------------------------------------------------------------------------------------------------

class Target:
    def __init__(self, name, port, proc):
        self.name = name
        self.port = port
        self.proc = proc
        self.runs = []
        self.fixed = None

    def pids(self):
        return pids_of(self.proc)


def portcullis_argv(args, manifests):
    """Portcullis serving `manifests` on the bench's proxy port (first port + 1), one data-plane thread."""
    return [args.binary, "run", "--manifests", manifests, "--http-port", str(args.port + 1), "--bind-address",
            "127.0.0.1", "--admin-addr", f"127.0.0.1:{args.port + 9}", "--threads", "1"]


def portcullis_env(args, level):
    env = dict(os.environ, RUST_LOG=level)
    for kv in args.portcullis_env:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def measure(args, t, hostname, duration, connections, others_pids, upstream_pids):
    pids = t.pids()
    busy0, all0 = machine_busy()
    u0, s0 = cpu_split(pids)
    o0 = cpu_ticks(others_pids)
    peer_cpus = (args.client_cpu, args.upstream_cpu)
    z0, i0 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    r = run_wrk(args, t.port, hostname, duration, connections)
    z1, i1 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    u1, s1 = cpu_split(pids)
    o1 = cpu_ticks(others_pids)
    r["upstream_sleeps"] = z1 - z0
    r["ipis"] = i1 - i0 if i0 is not None and i1 is not None else None
    busy1, all1 = machine_busy()
    c0, c1 = u0 + s0, u1 + s1
    r["cpu_ticks"] = c1 - c0
    r["user_ticks"] = u1 - u0
    r["sys_ticks"] = s1 - s0
    # Busy CPU time on the machine that is neither the target, the upstream nor wrk: other people's work.
    ours = (c1 - c0) + (o1 - o0) + r["wrk_cpu_ticks"]
    r["background"] = max(0.0, ((busy1 - busy0) - ours) / max(1, all1 - all0))
    return r


def measure_fixed(args, t, hostname, rate, logfile, upstream_pids):
    """A fixed-rate run (h2load) against t, with the target's CPU time (user, kernel) and the wake-up counts."""
    pids = t.pids()
    peer_cpus = (args.client_cpu, args.upstream_cpu)
    u0, s0 = cpu_split(pids)
    z0, i0 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    r = run_h2load(args, t.port, hostname, rate, args.fixed_duration, logfile)
    z1, i1 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    u1, s1 = cpu_split(pids)
    r["cpu_ticks"] = (u1 + s1) - (u0 + s0)
    r["user_ticks"] = u1 - u0
    r["sys_ticks"] = s1 - s0
    r["upstream_sleeps"] = z1 - z0
    r["ipis"] = i1 - i0 if i0 is not None and i1 is not None else None
    return r


def fmt(v, digits=0):
    if v is None or v != v:  # NaN
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if not a or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def throughput_phase(args, tmp, n, upstream, results):
    log(f"== throughput, {n} route(s)")
    pc_dir = f"{tmp}/portcullis-{n}"
    write_portcullis_manifests(pc_dir, args.port, n)
    env = portcullis_env(args, "warn")
    pc = start(
        portcullis_argv(args, pc_dir), args.proxy_cpu, f"{tmp}/portcullis-{n}.log", env=env,
    )
    ng = start(
        ["nginx", "-p", tmp + "/", "-c", write_nginx_conf(tmp, args.port + 2, args.port, n), "-e",
         f"{tmp}/nginx-{n}.err"],
        args.proxy_cpu, f"{tmp}/nginx-{n}.log",
    )
    ha = start(
        ["haproxy", "-db", "-f", write_haproxy_conf(tmp, args.port + 3, args.port, n)],
        args.proxy_cpu, f"{tmp}/haproxy-{n}.log",
    )
    targets = [
        Target("direct", args.port, upstream),
        Target("portcullis", args.port + 1, pc),
        Target("nginx", args.port + 2, ng),
        Target("haproxy", args.port + 3, ha),
    ]
    last = host(n - 1)
    for t in targets[1:]:
        if not wait_status(t.port, last, 200, 60):
            raise SystemExit(f"{t.name} does not serve {last} (see {tmp})")
        if http_get(t.port, "unknown.bench.test") != 404:
            raise SystemExit(f"{t.name} does not answer 404 for an unknown host (see {tmp})")

    up_pids = pids_of(upstream)
    # Warm-up: connections, pools, caches.
    for t in targets:
        run_wrk(args, t.port, last, 1, args.connections)
    for rnd in range(args.rounds):
        for t in targets:
            others = up_pids if t.proc is not upstream else []
            r = measure(args, t, last, args.duration, args.connections, others, up_pids)
            t.runs.append(r)
            log(
                f"   round {rnd + 1} {t.name:10s} {r['rps']:>9,.0f} req/s  p99 {fmt(r['p99'])} us  "
                f"CPU {r['cpu_ticks'] * 1e6 / CLK_TCK / max(1, r['requests']):.1f} us/req  "
                f"background {r['background'] * 100:.0f}%"
            )

    # Fixed rate: half of nginx's closed-loop rate, the same for everybody.
    nginx_rps = statistics.median(r["rps"] for r in targets[2].runs)
    rate = int(nginx_rps * 0.5)
    for t in targets:
        r = measure_fixed(args, t, last, rate, f"{tmp}/h2load.log", up_pids)
        t.fixed = r
        log(f"   fixed {rate}/s {t.name:10s} p50 {fmt(r['p50'])} us  p99 {fmt(r['p99'])} us")

    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
    results.append((n, rate, targets))
    for p in (pc, ng, ha):
        stop(p)
        STARTED.remove(p)


def per_request(counts, requests):
    """A count summed over runs, per request; None when a run could not count it."""
    if any(c is None for c in counts):
        return None
    return sum(counts) / max(1, requests)


def summarize(t):
    runs = t.runs
    req = sum(r["requests"] for r in runs)
    return {
        "rps": statistics.median(r["rps"] for r in runs),
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "cpu": sum(r["cpu_ticks"] for r in runs) * 1e6 / CLK_TCK / max(1, req),
        "user": sum(r["user_ticks"] for r in runs) * 1e6 / CLK_TCK / max(1, req),
        "sys": sum(r["sys_ticks"] for r in runs) * 1e6 / CLK_TCK / max(1, req),
        "rss": t.hwm_kb / 1024,
        "non2xx": sum(r["non2xx"] for r in runs),
        "sockerr": sum(r["sockerr"] for r in runs),
        "background": statistics.mean(r["background"] for r in runs),
        "sleeps": sum(r["upstream_sleeps"] for r in runs) / max(1, req),
        "ipis": per_request([r["ipis"] for r in runs], req),
        "spread": (min(r["rps"] for r in runs), max(r["rps"] for r in runs)),
    }


def print_throughput(args, results):
    for n, rate, targets in results:
        s = {t.name: summarize(t) for t in targets}
        print()
        print(
            f"### {n} route(s): closed loop, wrk -t1 -c{args.connections}, {args.rounds} rounds x {args.duration} s "
            f"per target, alternating (medians; CPU = all rounds)"
        )
        print()
        print("| target | req/s | req/s min..max | p50 us | p99 us | CPU us/req | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req | peak RSS MB | non-2xx | socket errors | background load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            x = s[t.name]
            name = "direct (upstream nginx)" if t.name == "direct" else t.name
            print(
                f"| {name} | {fmt(x['rps'])} | {fmt(x['spread'][0])}..{fmt(x['spread'][1])} | {fmt(x['p50'])} | "
                f"{fmt(x['p99'])} | {fmt(x['cpu'], 1)} | {fmt(x['user'], 1)} | {fmt(x['sys'], 1)} | "
                f"{fmt(x['sleeps'], 3)} | {fmt(x['ipis'], 3)} | {fmt(x['rss'], 1)} | {x['non2xx']} | {x['sockerr']} | "
                f"{x['background'] * 100:.0f}% |"
            )
        pc, ng, ha, d = s["portcullis"], s["nginx"], s["haproxy"], s["direct"]
        print()
        print(
            f"Portcullis/nginx: req/s {ratio(pc['rps'], ng['rps'])}, p50 {ratio(pc['p50'], ng['p50'])}, "
            f"p99 {ratio(pc['p99'], ng['p99'])}, CPU/req {ratio(pc['cpu'], ng['cpu'])} "
            f"(user {ratio(pc['user'], ng['user'])}, kernel {ratio(pc['sys'], ng['sys'])}), "
            f"RSS {ratio(pc['rss'], ng['rss'])}"
        )
        print(
            f"CPU target (nginx's / 1.3): {fmt(ng['cpu'] / 1.3, 1)} us/req; kernel time alone per request: "
            f"nginx {fmt(ng['sys'], 1)}, HAProxy {fmt(ha['sys'], 1)}, Portcullis {fmt(pc['sys'], 1)} us"
        )
        print(
            f"Portcullis/HAProxy: req/s {ratio(pc['rps'], ha['rps'])}, p99 {ratio(pc['p99'], ha['p99'])}, "
            f"CPU/req {ratio(pc['cpu'], ha['cpu'])}"
        )
        print(
            f"Portcullis/direct: req/s {ratio(pc['rps'], d['rps'])}, p50 {ratio(pc['p50'], d['p50'])}, "
            f"p99 {ratio(pc['p99'], d['p99'])}"
        )
        print()
        print(
            f"Fixed rate {rate:,} req/s (50% of nginx's closed-loop median), h2load --h1 -c16, "
            f"{args.fixed_duration} s per target:"
        )
        print()
        print("| target | req/s done | p50 us | p99 us | CPU us/req | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req | non-2xx | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            f = t.fixed
            name = "direct (upstream nginx)" if t.name == "direct" else t.name
            n_req = max(1, f["requests"])
            cpu = f["cpu_ticks"] * 1e6 / CLK_TCK / n_req
            user = f["user_ticks"] * 1e6 / CLK_TCK / n_req
            sys_ = f["sys_ticks"] * 1e6 / CLK_TCK / n_req
            print(
                f"| {name} | {fmt(f['rps'])} | {fmt(f['p50'])} | {fmt(f['p99'])} | {fmt(cpu, 1)} | {fmt(user, 1)} | "
                f"{fmt(sys_, 1)} | {fmt(f['upstream_sleeps'] / n_req, 3)} | {fmt(per_request([f['ipis']], n_req), 3)} | "
                f"{f['non2xx']} | {f['sockerr']} |"
            )
        fp, fn = targets[1].fixed, targets[2].fixed
        def per_req(f, key):
            return f[key] / max(1, f["requests"])

        print()
        print(
            f"Portcullis/nginx at fixed rate: p50 {ratio(fp['p50'], fn['p50'])}, p99 {ratio(fp['p99'], fn['p99'])}, "
            f"CPU/req {ratio(per_req(fp, 'cpu_ticks'), per_req(fn, 'cpu_ticks'))} "
            f"(user {ratio(per_req(fp, 'user_ticks'), per_req(fn, 'user_ticks'))}, "
            f"kernel {ratio(per_req(fp, 'sys_ticks'), per_req(fn, 'sys_ticks'))})"
        )


def wakeups_phase(args, tmp, upstream):
    """Does kernel time per request grow with user time? nginx made slower in user space only (regular-expression
    locations it tries and rejects on every request; no extra system call), next to Portcullis: user and kernel
    CPU per request, how often the upstream slept, and the wake-up interrupts its CPU received."""
    log("== wake-ups: kernel time against user time")
    n = 1
    last = host(n - 1)
    pc_dir = f"{tmp}/portcullis-wakeups"
    write_portcullis_manifests(pc_dir, args.port, n)
    targets = [Target("portcullis", args.port + 1, start(portcullis_argv(args, pc_dir), args.proxy_cpu,
                                                             f"{tmp}/portcullis-wakeups.log",
                                                             env=portcullis_env(args, "warn")))]
    for j, k in enumerate(WAKEUP_REGEXES):
        port = args.port + 2 + j
        conf = write_nginx_conf(tmp, port, args.port, n, extra_regex=k)
        targets.append(Target(f"nginx +{k} regex locations" if k else "nginx", port,
                              start(["nginx", "-p", tmp + "/", "-c", conf, "-e", f"{tmp}/nginx-r{k}.err"],
                                    args.proxy_cpu, f"{tmp}/nginx-r{k}.log")))
    for t in targets:
        if not wait_status(t.port, last, 200, 60):
            raise SystemExit(f"{t.name} does not serve {last} (see {tmp})")
        run_wrk(args, t.port, last, 1, args.connections)
    up_pids = pids_of(upstream)
    for _ in range(args.rounds):
        for t in targets:
            t.runs.append(measure(args, t, last, args.duration, args.connections, up_pids, up_pids))
    rate = int(min(statistics.median(r["rps"] for r in t.runs) for t in targets) * 0.7)
    for t in targets:
        t.fixed = measure_fixed(args, t, last, rate, f"{tmp}/h2load.log", up_pids)
    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
        stop(t.proc)
        STARTED.remove(t.proc)
    return rate, targets


WAKEUP_REGEXES = (0, 150, 400)


def print_wakeups(args, rate, targets):
    print()
    print(f"### Kernel time against user time: 1 route, nginx made slower in user space only "
          f"({args.rounds} rounds x {args.duration} s closed loop, then {args.fixed_duration} s at {rate:,} req/s)")
    print()
    print("| target | closed loop: req/s | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req "
          "| fixed rate: user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        x = summarize(t)
        f = t.fixed
        n_req = max(1, f["requests"])
        print(
            f"| {t.name} | {fmt(x['rps'])} | {fmt(x['user'], 1)} | {fmt(x['sys'], 1)} | {fmt(x['sleeps'], 3)} | "
            f"{fmt(x['ipis'], 3)} | {fmt(f['user_ticks'] * 1e6 / CLK_TCK / n_req, 1)} | "
            f"{fmt(f['sys_ticks'] * 1e6 / CLK_TCK / n_req, 1)} | {fmt(f['upstream_sleeps'] / n_req, 3)} | "
            f"{fmt(per_request([f['ipis']], n_req), 3)} |"
        )


# ----------------------------------------------------------------------------------------------------------------
# Phase 2: configuration changes
# ----------------------------------------------------------------------------------------------------------------

def published_version(logfile):
    v = 0
    with open(logfile, errors="replace") as f:
        for line in f:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            m = re.search(r"configuration published\s+version=(\d+)", line)
            if m:
                v = int(m.group(1))
    return v


def poll_until(port, hostname, status, timeout):
    """Polls on one keep-alive connection; returns seconds until `status` was answered, or None."""
    t0 = time.monotonic()
    conn = None
    while time.monotonic() - t0 < timeout:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/", headers={"Host": hostname})
            r = conn.getresponse()
            r.read()
            if r.status == status:
                conn.close()
                return time.monotonic() - t0
        except OSError:
            if conn:
                conn.close()
            conn = None
        time.sleep(0.001)
    return None


def reload_phase(args, tmp, n, results):
    log(f"== configuration changes, {n} routes")
    d = f"{tmp}/reload-{n}"
    write_portcullis_manifests(d, args.port, n)
    write_atomic(f"{d}/20-hot.yaml", ingress("hot", "hot.bench.test", "up"))
    logfile = f"{tmp}/reload-{n}.log"
    port = args.port + 1
    t0 = time.monotonic()
    pc = start(
        portcullis_argv(args, d), args.proxy_cpu, logfile, env=portcullis_env(args, "info"),
    )
    if not wait_status(port, host(n - 1), 200, 120):
        raise SystemExit(f"portcullis with {n} routes did not start (see {logfile})")
    startup = time.monotonic() - t0
    time.sleep(0.5)
    pids = pids_of(pc)
    rss_loaded = mem_kb(pids, "VmRSS") / 1024

    # 404 -> 200 for a new route, a few times.
    lat = []
    for i in range(args.reload_trials):
        h = f"new{i}.bench.test"
        assert http_get(port, h) == 404
        t = time.monotonic()
        write_atomic(f"{d}/30-new{i}.yaml", ingress(f"new{i}", h, "up"))
        got = poll_until(port, h, 200, 30)
        lat.append(None if got is None else (time.monotonic() - t) * 1000)
        time.sleep(0.3)

    # 100 edits under load: the edited route is the one under load (its backend Service alternates and a path is
    # added on every edit), so every publish swaps the very entry requests are using.
    v0 = published_version(logfile)
    span = args.edits * args.edit_interval
    busy = {}

    def edits():
        for i in range(args.edits):
            svc = "up2" if i % 2 == 0 else "up"
            paths = ["/"] + [f"/e{j}" for j in range(i + 1)]
            write_atomic(f"{d}/20-hot.yaml", ingress("hot", "hot.bench.test", svc, paths))
            time.sleep(args.edit_interval)

    import threading

    th = threading.Thread(target=edits)
    duration = int(span + 3)
    c0 = cpu_ticks(pids)

    def delayed_start():
        time.sleep(1.0)
        th.start()

    starter = threading.Thread(target=delayed_start)
    starter.start()
    r = run_wrk(args, port, "hot.bench.test", duration, args.connections)
    starter.join()
    th.join()
    busy["cpu"] = cpu_ticks(pids) - c0
    # The last edit is served (its last path answers).
    last_path = f"/e{args.edits}"
    served = wait_status(port, "hot.bench.test", 200, 30, path=last_path)
    v1 = published_version(logfile)
    rss_after = mem_kb(pids, "VmRSS") / 1024
    hwm = mem_kb(pids, "VmHWM") / 1024
    stop(pc)
    STARTED.remove(pc)
    results.append(
        {
            "routes": n,
            "startup": startup,
            "rss_loaded": rss_loaded,
            "rss_after": rss_after,
            "hwm": hwm,
            "latency": lat,
            "publishes": v1 - v0,
            "last_edit_served": served,
            "wrk": r,
            "duration": duration,
        }
    )


GATEWAY_BASE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: bench}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"""


def regex_route(k):
    """HTTPRoute of host k: ten RegularExpression paths, a distinct pattern per rule (as in a real table)."""
    rules = "".join(
        f'  - matches: [{{path: {{type: RegularExpression, value: "/r{i}/[a-z]+/[0-9]+(/h{k})?"}}}}]\n'
        f"    backendRefs: [{{name: up, port: 80}}]\n"
        for i in range(10)
    )
    return (
        f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: h{k}, namespace: bench}}\n"
        f"spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{host(k)}]\n  rules:\n{rules}"
    )


def regex_phase(args, tmp, n, results):
    """A table of n RegularExpression routes (n/10 hosts): time to serve, and memory once every rule has answered
    a request (each compiled regex has then been used)."""
    log(f"== regex table, {n} routes")
    d = f"{tmp}/regex-{n}"
    os.makedirs(d, exist_ok=True)
    port = args.port + 1
    with open(f"{d}/00-base.yaml", "w") as f:
        f.write(PORTCULLIS_BASE.format())
        f.write(GATEWAY_BASE.format(port=port))
        f.write(SERVICE.format(name="up", port=args.port))
    hosts = max(1, n // 10)
    for start_k in range(0, hosts, 300):
        with open(f"{d}/10-routes-{start_k // 300:03d}.yaml", "w") as f:
            for k in range(start_k, min(hosts, start_k + 300)):
                f.write(regex_route(k))
    logfile = f"{tmp}/regex-{n}.log"
    t0 = time.monotonic()
    pc = start(
        portcullis_argv(args, d), args.proxy_cpu, logfile, env=portcullis_env(args, "info"),
    )
    if not wait_status(port, host(hosts - 1), 200, 120, path="/r9/abc/1"):
        raise SystemExit(f"portcullis with {n} regex routes did not start (see {logfile})")
    startup = time.monotonic() - t0
    time.sleep(0.5)
    pids = pids_of(pc)
    rss_loaded = mem_kb(pids, "VmRSS") / 1024
    # Every rule answers once, on one keep-alive connection.
    ok = 0
    t1 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for k in range(hosts):
        for i in range(10):
            conn.request("GET", f"/r{i}/abc/1", headers={"Host": host(k)})
            r = conn.getresponse()
            r.read()
            ok += r.status == 200
    conn.close()
    walk = time.monotonic() - t1
    rss_used = mem_kb(pids, "VmRSS") / 1024
    hwm = mem_kb(pids, "VmHWM") / 1024
    stop(pc)
    STARTED.remove(pc)
    results.append({"routes": n, "startup": startup, "rss_loaded": rss_loaded, "rss_used": rss_used, "hwm": hwm,
                    "ok": ok, "requests": hosts * 10, "walk": walk})


def print_regex(results):
    if not results:
        return
    print()
    print("### RegularExpression routes (Portcullis, standalone; ten distinct patterns per host, then one request "
          "per rule)")
    print()
    print("| regex routes | start to serving s | RSS MB loaded | RSS MB after every rule answered | peak RSS MB | "
          "200 answers | seconds for those requests |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['routes']:,} | {r['startup']:.2f} | {r['rss_loaded']:.1f} | {r['rss_used']:.1f} | "
              f"{r['hwm']:.1f} | {r['ok']:,} / {r['requests']:,} | {r['walk']:.1f} |")


def print_reload(args, results):
    print()
    print(
        f"### Configuration changes (Portcullis, standalone file source; {args.reload_trials} new routes, then "
        f"{args.edits} edits {int(args.edit_interval * 1000)} ms apart under wrk -c{args.connections} load)"
    )
    print()
    print(
        "| routes loaded | start to serving s | RSS MB | new route 404->200 ms (median / max) | "
        "publishes during edits | requests under load | non-2xx | socket errors | p99 us under load | "
        "peak RSS MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in results:
        lat = [v for v in x["latency"] if v is not None]
        missing = len(x["latency"]) - len(lat)
        lat_s = f"{statistics.median(lat):.0f} / {max(lat):.0f}" if lat else "-"
        if missing:
            lat_s += f" ({missing} never served)"
        w = x["wrk"]
        pub = f"{x['publishes']}" + ("" if x["last_edit_served"] else " (last edit NOT served)")
        print(
            f"| {x['routes']:,} | {x['startup']:.2f} | {x['rss_loaded']:.1f} | {lat_s} | {pub} | "
            f"{w['requests']:,} | {w['non2xx']} | {w['sockerr']} | {fmt(w['p99'])} | {x['hwm']:.1f} |"
        )


# ----------------------------------------------------------------------------------------------------------------
# Profile (optional): user-space instructions per request under callgrind, and perf samples of Portcullis
# ----------------------------------------------------------------------------------------------------------------

def callgrind_total(path):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", path], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL).stdout.decode(errors="replace")
    m = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out)
    return (int(m.group(1).replace(",", "")) if m else 0), out


def profile_phase(args, tmp, n, report):
    """Runs each proxy under callgrind for a fixed number of requests (after a warm-up) and counts the user-space
    instructions per request: a figure that other work on the machine does not move. Then perf-samples
    Portcullis under wrk load, when perf works here."""
    log(f"== profile, {n} route(s)")
    count = args.profile_requests
    last = host(n - 1)
    lines = []
    pc_dir = f"{tmp}/profile-{n}"
    write_portcullis_manifests(pc_dir, args.port, n)
    peers = [
        ("portcullis", args.port + 1, portcullis_argv(args, pc_dir)),
        ("nginx", args.port + 2,
         ["nginx", "-p", tmp + "/", "-c", write_nginx_conf(tmp, args.port + 2, args.port, n), "-e",
          f"{tmp}/nginx-prof.err"]),
        ("haproxy", args.port + 3, ["haproxy", "-db", "-f", write_haproxy_conf(tmp, args.port + 3, args.port, n)]),
    ]
    totals = {}
    for name, port, argv in peers:
        out = f"{tmp}/callgrind.{name}"
        p = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv, args.proxy_cpu,
                  f"{tmp}/callgrind-{name}.log", env=portcullis_env(args, "warn") if name == "portcullis" else None)
        if not wait_status(port, last, 200, 120):
            log(f"   {name} does not start under valgrind; skipped")
            stop(p)
            STARTED.remove(p)
            continue
        h2 = ["taskset", "-c", str(args.client_cpu), "h2load", "--h1", "-c8", "-t1", "-H", f":authority: {last}",
              f"http://127.0.0.1:{port}/"]
        subprocess.run(h2 + ["-n", str(count // 5)], stdout=subprocess.DEVNULL, timeout=300)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], stdout=subprocess.DEVNULL, timeout=60)
        subprocess.run(h2 + ["-n", str(count)], stdout=subprocess.DEVNULL, timeout=600)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], stdout=subprocess.DEVNULL, timeout=60)
        time.sleep(1)
        dumps = sorted((f for f in os.listdir(tmp) if f.startswith(f"callgrind.{name}.") and f.count(".") == 3),
                       key=lambda f: os.path.getmtime(os.path.join(tmp, f)))
        stop(p)
        STARTED.remove(p)
        if not dumps:
            continue
        total, text = callgrind_total(os.path.join(tmp, dumps[-1]))
        totals[name] = total / count
        log(f"   {name}: {total / count:,.0f} instructions per request")
        if name == "portcullis":
            keep = os.path.join(args.profile_dir, f"callgrind.portcullis.{n}")
            shutil.copy(os.path.join(tmp, dumps[-1]), keep)
            # Exclusive costs; the thread entry points that callgrind lists at ~100% are left out.
            top = [line for line in text.splitlines() if re.match(r"\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", line)
                   and not re.match(r"\s*[\d,]+ \((100\.0|9\d\.\d\d)%\)", line)]
            lines.append(f"Portcullis, exclusive instructions (callgrind, top 25; whole dump: {keep}):")
            lines.append("")
            lines.append("```")
            lines.extend(x[:200] for x in top[:25])
            lines.append("```")
    report.append((n, totals, lines))

    # perf samples (cpu-clock works without hardware counters).
    if shutil.which("perf"):
        pc = start(peers[0][2], args.proxy_cpu, f"{tmp}/perf-portcullis.log", env=portcullis_env(args, "warn"))
        if wait_status(args.port + 1, last, 200, 60):
            data = os.path.join(args.profile_dir, f"perf.portcullis.{n}.data")
            rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(pc.pid),
                                    "-o", data, "--", "sleep", str(args.duration + 1)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            run_wrk(args, args.port + 1, last, args.duration, args.connections)
            rec.wait(timeout=60)
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "-g", "none",
                                  "--stdio"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
            top = [x for x in rep.stdout.decode(errors="replace").splitlines() if x.strip() and not x.startswith("#")]
            dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso", "-g", "none",
                                  "--stdio"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=120)
            lines.append("")
            lines.append(f"Portcullis under wrk -c{args.connections}, perf cpu-clock samples by library ({data}):")
            lines.append("")
            lines.append("```")
            lines.extend(x[:160] for x in dso.stdout.decode(errors="replace").splitlines()
                         if x.strip() and not x.startswith("#"))
            lines.append("```")
            lines.append("")
            lines.append("Top 25 symbols (self time):")
            lines.append("")
            lines.append("```")
            lines.extend(x[:160] for x in top[:25])
            lines.append("```")
        stop(pc)
        STARTED.remove(pc)


def print_profile(report):
    for n, totals, lines in report:
        print()
        print(f"### Profile, {n} route(s): user-space instructions per request (callgrind)")
        print()
        print("| proxy | instructions/request | vs nginx |")
        print("|---|---:|---:|")
        for name, v in totals.items():
            print(f"| {name} | {v:,.0f} | {ratio(v, totals.get('nginx'))} |")
        print()
        for line in lines:
            print(line)


# ----------------------------------------------------------------------------------------------------------------

def tool_version(argv):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=5).stdout.decode()
        return out.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def header(args):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL).stdout.decode().strip() or "?"
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
    print("## Portcullis benchmark")
    print()
    print(f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}")
    print(f"- machine: {os.cpu_count()} CPUs, {cpu}, kernel {os.uname().release}")
    print(f"- proxies pinned to CPU {args.proxy_cpu} (one worker/thread each), wrk/h2load and the upstream "
          f"pinned to CPU {args.upstream_cpu if args.upstream_cpu == args.client_cpu else args.client_cpu}"
          + ("" if args.upstream_cpu == args.client_cpu else f" (upstream on CPU {args.upstream_cpu})"))
    print(f"- {tool_version(['nginx', '-v'])}; {tool_version(['haproxy', '-v'])}; "
          f"{tool_version(['wrk', '-v'])}; {tool_version(['h2load', '--version'])}")
    print("- background load = busy CPU time of the machine that was not the target, the upstream or the client, "
          "as a share of all CPU time during the run (other work on a shared machine perturbs the figures)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--routes", default="1,1000", help="routing-table sizes for the throughput phase")
    ap.add_argument("--reload-routes", default="10,10000", help="table sizes for the configuration-change phase")
    ap.add_argument("--regex-routes", default="10000",
                    help="RegularExpression-route table sizes for the memory check of the reload phase ('' for none)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--fixed-duration", type=int, default=4)
    ap.add_argument("--reload-trials", type=int, default=5)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--edit-interval", type=float, default=0.05)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--upstream-cpu", type=int, default=None, help="default: the client CPU")
    ap.add_argument("--port", type=int, default=18080, help="first of ten consecutive loopback ports")
    ap.add_argument("--only", choices=["throughput", "reload", "profile", "wakeups"], default=None,
                    help="one phase; 'wakeups' (not in the default run) compares kernel against user time per "
                         "request with nginx made slower in user space")
    ap.add_argument("--profile", action="store_true", help="also run the profile phase (callgrind, perf)")
    ap.add_argument("--profile-requests", type=int, default=10000)
    ap.add_argument("--profile-dir", default="target/bench-profile", help="where profiles are kept")
    ap.add_argument("--portcullis-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for Portcullis only (e.g. LD_PRELOAD of another allocator, to compare)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args()
    if args.upstream_cpu is None:
        args.upstream_cpu = args.client_cpu
    for port in range(args.port, args.port + 10):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use: pass --port")

    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    began = time.monotonic()

    def on_signal(sig, frame):
        stop_all()
        raise SystemExit(130)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    throughput, reloads = [], []
    try:
        header(args)
        if args.only in (None, "throughput"):
            upstream = start(
                ["nginx", "-p", tmp + "/", "-c", write_upstream_conf(tmp, args.port), "-e", f"{tmp}/upstream.err"],
                args.upstream_cpu, f"{tmp}/upstream.log",
            )
            if not wait_status(args.port, "x", 200, 10):
                raise SystemExit("the upstream nginx does not answer")
            for n in [int(x) for x in args.routes.split(",") if x]:
                throughput_phase(args, tmp, n, upstream, throughput)
            print_throughput(args, throughput)
            sys.stdout.flush()
        if args.only in (None, "reload"):
            upstream = start(
                ["nginx", "-p", tmp + "/", "-c", write_upstream_conf(tmp, args.port), "-e", f"{tmp}/upstream.err"],
                args.upstream_cpu, f"{tmp}/upstream.log",
            ) if args.only == "reload" else None
            if upstream is not None and not wait_status(args.port, "x", 200, 10):
                raise SystemExit("the upstream nginx does not answer")
            for n in [int(x) for x in args.reload_routes.split(",") if x]:
                reload_phase(args, tmp, n, reloads)
            print_reload(args, reloads)
            regexes = []
            for n in [int(x) for x in args.regex_routes.split(",") if x]:
                regex_phase(args, tmp, n, regexes)
            print_regex(regexes)
        if args.only == "wakeups":
            upstream = start(
                ["nginx", "-p", tmp + "/", "-c", write_upstream_conf(tmp, args.port), "-e", f"{tmp}/upstream.err"],
                args.upstream_cpu, f"{tmp}/upstream.log",
            )
            if not wait_status(args.port, "x", 200, 10):
                raise SystemExit("the upstream nginx does not answer")
            print_wakeups(args, *wakeups_phase(args, tmp, upstream))
        if args.only == "profile" or args.profile:
            os.makedirs(args.profile_dir, exist_ok=True)
            if args.only == "profile":
                upstream = start(
                    ["nginx", "-p", tmp + "/", "-c", write_upstream_conf(tmp, args.port), "-e",
                     f"{tmp}/upstream.err"],
                    args.upstream_cpu, f"{tmp}/upstream.log",
                )
                if not wait_status(args.port, "x", 200, 10):
                    raise SystemExit("the upstream nginx does not answer")
            report = []
            for n in [int(x) for x in args.routes.split(",") if x][-1:]:
                profile_phase(args, tmp, n, report)
            print_profile(report)
        print()
        print(f"(whole run: {time.monotonic() - began:.0f} s)")
    finally:
        stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
