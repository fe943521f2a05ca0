//! Scale measurement (ignored by default; `scripts/kube-bench` runs it in release mode):
//! 5,000 Services + 5,000 EndpointSlices + 5,000 HTTPRoutes loaded through the fake API server into the real
//! binary; reports the time to ready, the proxy's memory (VmRSS / VmHWM from /proc/<pid>/status) and the time from
//! an HTTPRoute change to the new route serving, over 200 changes.
//!
//! `KUBE_SCALE_N` changes the object count per kind, `KUBE_SCALE_CHANGES` the number of changes measured,
//! `KUBE_BENCH_OUT` names a file the figures are written to as JSON.

mod common;
mod kube;

use anyhow::{Context, Result};
use common::{echo, free_port};
use kube::{FakeApiServer, KubeProxy, CLASSES};
use serde_json::json;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS, VmHWM) of `pid` in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Durations of the translation rounds in a debug log (`... round objects=N elapsed=12.3ms outcome=...`).
fn round_times(log: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| l.contains(" round ") || l.ends_with(" round"))
        .filter_map(|l| {
            let plain: String = strip_ansi(l);
            let v = plain.split("elapsed=").nth(1)?.split_whitespace().next()?;
            parse_duration(v)
        })
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `12.3ms`, `1.2s`, `800µs` (Debug of a Duration).
fn parse_duration(v: &str) -> Option<Duration> {
    let (num, unit) = v
        .find(|c: char| c.is_alphabetic() || c == 'µ')
        .map(|i| v.split_at(i))?;
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn route(ns: &str, i: usize, path: &str) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("route-{i}"), "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "public", "namespace": "infra"}],
            "hostnames": [format!("svc-{i}.example.com")],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": format!("svc-{i}"), "port": 80}]
            }]
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with scripts/kube-bench (release build)"]
async fn kube_scale() -> Result<()> {
    let n = env_usize("KUBE_SCALE_N", 5000);
    let changes = env_usize("KUBE_SCALE_CHANGES", 200);
    let namespaces = 50;
    let backend = echo("backend-0", "scale").await?;
    let port = backend.http_addr().port();
    let fake = FakeApiServer::start(true);
    let http = free_port();
    fake.apply_yaml(CLASSES);
    fake.apply_yaml(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: infra}}\n---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: public, namespace: infra}}
spec:
  gatewayClassName: portcullis
  listeners:
  - {{name: http, port: {http}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
"
    ));
    let load = Instant::now();
    for k in 0..namespaces {
        fake.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{k}")}}));
    }
    for i in 0..n {
        let ns = format!("ns-{}", i % namespaces);
        fake.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": ns, "labels": {"app": format!("app-{i}")}},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                     "selector": {"app": format!("app-{i}")}}
        }));
        fake.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{i}-abcde"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.0.0.1"], "conditions": {"ready": true}, "nodeName": "node-1"},
                {"addresses": ["127.0.0.2"], "conditions": {"ready": false}, "nodeName": "node-2"}
            ]
        }));
        fake.apply(route(&ns, i, "/v0"));
    }
    let loaded_in = load.elapsed();

    let started = Instant::now();
    let binary = std::env::var("PORTCULLIS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").to_string());
    // Debug logs of the source: one line per translation round, with its duration.
    let mut p = KubeProxy::spawn_with_binary(
        &binary,
        &fake.kubeconfig(None),
        http,
        &[],
        "info,portcullis::source::kube=debug",
    )?;
    p.wait_ready(Duration::from_secs(120))?;
    let ready_in = started.elapsed();
    let (rss_ready, _) = memory_kib(p.pid())?;
    // The last route is served (the whole table is in).
    let last = n - 1;
    p.wait_for(Duration::from_secs(30), || {
        p.get(&format!("svc-{last}.example.com"), "/v0/x")
            .is_ok_and(|r| r.status == 200)
    })?;
    // Let the leader's first status writes (one per route) finish before measuring.
    let status_start = Instant::now();
    p.wait_for(Duration::from_secs(180), || {
        fake.status_patches()
            .iter()
            .filter(|s| s.kind == "HTTPRoute")
            .count()
            >= n
    })?;
    let status_in = status_start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (rss_synced, _) = memory_kib(p.pid())?;

    // Propagation: change one route at a time; time until the new path answers 200 through the proxy.
    let rounds_before = round_times(&p.log_text()).len();
    let mut samples = Vec::with_capacity(changes);
    for c in 0..changes {
        let i = (c * 7919) % n;
        let ns = format!("ns-{}", i % namespaces);
        let path = format!("/v{}", c + 1);
        let host = format!("svc-{i}.example.com");
        let t0 = Instant::now();
        fake.apply(route(&ns, i, &path));
        loop {
            if p.get(&host, &format!("{path}/x"))
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("change {c} not served after 10 s:\n{}", p.log_text());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        samples.push(t0.elapsed());
        // Changes arrive spaced out a little, as edits do.
        std::thread::sleep(Duration::from_millis(20 + (c % 5) as u64 * 10));
    }
    let (rss_end, hwm_end) = memory_kib(p.pid())?;
    // How long translation rounds (collect + translate + compile + publish) took during the changes.
    let mut rounds: Vec<Duration> = round_times(&p.log_text())
        .into_iter()
        .skip(rounds_before)
        .collect();
    rounds.sort();
    let mut sorted = samples.clone();
    sorted.sort();
    let figures = json!({
        "objects": {"services": n, "endpointSlices": n, "httpRoutes": n, "namespaces": namespaces + 2},
        "fakeApiServerLoadSeconds": loaded_in.as_secs_f64(),
        "timeToReadySeconds": ready_in.as_secs_f64(),
        "firstStatusWriteSeconds": status_in.as_secs_f64(),
        "memoryKiB": {"rssAtReady": rss_ready, "rssAfterStatusWritten": rss_synced, "rssAtEnd": rss_end, "peakHWM": hwm_end},
        "propagationMs": {
            "changes": samples.len(),
            "p50": ms(percentile(&sorted, 50.0)), "p90": ms(percentile(&sorted, 90.0)),
            "p99": ms(percentile(&sorted, 99.0)), "max": ms(*sorted.last().unwrap_or(&Duration::ZERO)),
            "mean": ms(samples.iter().sum::<Duration>() / samples.len().max(1) as u32),
        },
        "translationRoundMs": {
            "rounds": rounds.len(),
            "p50": ms(percentile(&rounds, 50.0)), "p99": ms(percentile(&rounds, 99.0)),
            "max": ms(*rounds.last().unwrap_or(&Duration::ZERO)),
        },
    });
    println!(
        "KUBE_SCALE_RESULT {}",
        serde_json::to_string_pretty(&figures)?
    );
    if let Ok(out) = std::env::var("KUBE_BENCH_OUT") {
        std::fs::write(out, serde_json::to_string_pretty(&figures)?)?;
    }
    p.terminate()?;
    Ok(())
}
