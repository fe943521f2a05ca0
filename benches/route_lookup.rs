//! Router lookup: what the proxy does per request to find its rule (normalize the Host header, pick the
//! listener, walk the host's precedence-sorted list), for 10 to 100k routes spread over hosts.
//!
//! Every iteration looks up the next of up to 256 requests for different hosts (chosen evenly over the whole
//! table), so a large table is not measured with one hot host in cache. `first` matches the host's first rule,
//! `last` its last rule (the whole list is walked), `none` no rule of a known host (404 after the walk).
//!
//! `BENCH_ROUTES=10,1000` limits the table sizes (default 10,100,1000,10000,100000; run as a test, 10,1000).

mod common;

use common::{Shape, PER_HOST};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::router::{normalize_host, Lookup, RequestParts, Router};
use std::hint::black_box;
use std::time::Duration;

/// A request as it arrives: raw Host header bytes, path, headers.
struct Req {
    host: Vec<u8>,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

#[derive(Clone, Copy)]
enum Position {
    First,
    Last,
    None,
}

impl Position {
    const ALL: [Position; 3] = [Position::First, Position::Last, Position::None];

    fn name(self) -> &'static str {
        match self {
            Position::First => "first",
            Position::Last => "last",
            Position::None => "none",
        }
    }
}

fn requests(shape: Shape, routes: usize, pos: Position) -> Vec<Req> {
    let hosts = common::hosts(routes);
    // The last host may have fewer than PER_HOST rules; only use full hosts (there is one when routes >= 10).
    let full = if routes >= PER_HOST {
        routes / PER_HOST
    } else {
        1
    };
    let last_rule = if routes >= PER_HOST {
        PER_HOST - 1
    } else {
        routes - 1
    };
    let n = full.min(256);
    (0..n)
        .map(|j| {
            // Spread evenly over the table (a prime stride so that neighbours in the sample are far apart).
            let k = (j * 7919 + 13) % full;
            debug_assert!(k < hosts);
            let host = match shape {
                Shape::IngressWildcard => format!("Www.H{k}.bench.test:8080"),
                _ => format!("H{k}.Bench.Test:8080"),
            };
            let rule = match pos {
                Position::First => Some(0),
                Position::Last => Some(last_rule),
                Position::None => None,
            };
            let mut headers = HeaderMap::new();
            headers.insert("user-agent", HeaderValue::from_static("wrk"));
            headers.insert("accept", HeaderValue::from_static("*/*"));
            let path = match (shape, rule) {
                (Shape::RouteHeader, Some(i)) => {
                    headers.insert("x-route", HeaderValue::from_str(&format!("r{i}")).unwrap());
                    "/api/items".to_string()
                }
                (Shape::RouteHeaderRegex, Some(i)) => {
                    let v = format!("r{i}-items");
                    headers.insert("x-route", HeaderValue::from_str(&v).unwrap());
                    "/api/items".to_string()
                }
                (Shape::RouteHeader | Shape::RouteHeaderRegex, None) => {
                    headers.insert("x-route", HeaderValue::from_static("nope"));
                    "/api/items".to_string()
                }
                (Shape::RouteExact, Some(i)) => format!("/r{i}"),
                (Shape::RouteRegex, Some(i)) => format!("/r{i}/items/42"),
                (_, Some(i)) => format!("/r{i}/items/42"),
                (_, None) => "/nothing/here".to_string(),
            };
            Req {
                host: host.into_bytes(),
                path,
                query: Some("page=2".to_string()),
                headers,
            }
        })
        .collect()
}

/// The per-request work of `HttpApp::request_filter` up to the matched entry.
#[inline]
fn lookup(router: &Router, method: &Method, r: &Req) -> bool {
    let mut buf = [0u8; 256];
    let host = normalize_host(&r.host, &mut buf).unwrap_or("");
    let parts = RequestParts {
        method,
        path: &r.path,
        query: r.query.as_deref(),
        headers: &r.headers,
    };
    match router.listener_at(None, 80) {
        Some(l) => matches!(l.lookup(host, None, &parts), Lookup::Route(_)),
        None => false,
    }
}

fn sizes() -> Vec<usize> {
    common::sizes(
        "BENCH_ROUTES",
        &[10, 100, 1_000, 10_000, 100_000],
        &[10, 1_000],
    )
}

fn route_lookup(c: &mut Criterion) {
    let method = Method::GET;
    for shape in Shape::ALL {
        let mut group = c.benchmark_group(format!("route_lookup/{}", shape.name()));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(700))
            .sample_size(30)
            .throughput(Throughput::Elements(1));
        for routes in sizes() {
            let (router, rules) = common::router(shape, routes);
            assert_eq!(rules, routes, "{} routes generated", shape.name());
            for pos in Position::ALL {
                let reqs = requests(shape, routes, pos);
                // The requests find what they are meant to find.
                for r in &reqs {
                    let found = lookup(&router, &method, r);
                    assert_eq!(
                        found,
                        !matches!(pos, Position::None),
                        "{} {routes} {}: {:?} {}",
                        shape.name(),
                        pos.name(),
                        String::from_utf8_lossy(&r.host),
                        r.path
                    );
                }
                let mut i = 0usize;
                group.bench_with_input(BenchmarkId::new(pos.name(), routes), &reqs, |b, reqs| {
                    b.iter(|| {
                        i = (i + 1) % reqs.len();
                        black_box(lookup(&router, &method, black_box(&reqs[i])))
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, route_lookup);
criterion_main!(benches);
