//! Memory stays flat under configuration churn (issue 12): the control plane of the file source (load, translate,
//! compile, publish, metrics) runs in this process with a global allocator that counts live bytes, on 1,000
//! Ingresses, and the bytes still allocated after each of 60 edits of one Ingress are compared. Live bytes, not
//! RSS: a leak shows as growth however the allocator keeps its pages (RSS under churn is in
//! docs/benchmarks.md, scripts/bench's `edits` phase).

use anyhow::{ensure, Result};
use portcullis::control::{Control, Outcome};
use portcullis::metrics::request::{LabelMode, RequestMetrics};
use portcullis::metrics::Metrics;
use portcullis::snapshot::Store;
use portcullis::source::file::FileLoader;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const ROUTES: usize = 1_000;
const EDITS: usize = 60;

fn ingress(out: &mut String, name: &str, host: &str, service: &str, path: &str) {
    let _ = write!(
        out,
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench}}\n\
         spec:\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: {path}, pathType: Prefix, backend: \
         {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}\n"
    );
}

fn service(out: &mut String, name: &str, port: u16) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: bench}}\nspec: {{ports: \
         [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, \
         namespace: bench, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: \
         [{{port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n"
    );
}

/// The edited Ingress after edit `i`: another Service and another path each time, so every publish replaces
/// a route, a backend reference and the metric series of the route's backend.
fn hot(i: usize) -> String {
    let mut s = String::new();
    ingress(
        &mut s,
        "hot",
        "hot.bench.test",
        if i % 2 == 0 { "up" } else { "up2" },
        &format!("/edit-{i}"),
    );
    s
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn live_memory_is_flat_over_edits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut base = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\n  annotations: \
         {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: portcullis.dev/ingress-controller}\n",
    );
    service(&mut base, "up", 18080);
    service(&mut base, "up2", 18081);
    std::fs::write(dir.path().join("00-base.yaml"), base)?;
    for file in 0..ROUTES / 500 {
        let mut s = String::new();
        for k in file * 500..(file + 1) * 500 {
            ingress(
                &mut s,
                &format!("h{k}"),
                &format!("h{k}.bench.test"),
                "up",
                "/",
            );
        }
        std::fs::write(dir.path().join(format!("10-routes-{file}.yaml")), s)?;
    }
    let hot_file = dir.path().join("20-hot.yaml");
    std::fs::write(&hot_file, hot(0))?;

    let store = Arc::new(Store::new());
    let metrics = Arc::new(Metrics::new()?);
    store.set_request_metrics(Arc::new(RequestMetrics::new(
        metrics.registry(),
        LabelMode::RouteBackend,
    )?));
    let mut control = Control::new(store.clone(), Default::default());
    control.set_metrics(metrics);
    let mut loader = FileLoader::new(vec![dir.path().to_path_buf()]);

    let mut after = Vec::new();
    for i in 0..=EDITS {
        if i > 0 {
            std::fs::write(&hot_file, hot(i))?;
        }
        let loaded = loader.load();
        let outcome = control.apply(&loaded);
        drop(loaded);
        ensure!(
            outcome == Outcome::Published(i as u64 + 1),
            "edit {i} was not published: {outcome:?}"
        );
        after.push(live());
    }

    // The first rounds settle what is kept for good (metric families, caches of the first edits' shapes); from
    // the tenth on, nothing more may accumulate.
    let settled = after[10];
    let last = after[EDITS];
    let most = *after[10..].iter().max().unwrap_or(&last);
    eprintln!(
        "live bytes: first publish {}, after edit 10 {settled}, after edit {EDITS} {last}, most {most}",
        after[0]
    );
    // A route, a backend and a few metric series per edit are about 10 kB: 50 edits leaking them would be
    // 500 kB. Allow 64 kB of noise (buffers sized by the longest line read so far, and the like).
    ensure!(
        last - settled < 64 * 1024,
        "live memory grew by {} bytes over {} edits: {after:?}",
        last - settled,
        EDITS - 10
    );
    ensure!(
        most - settled < 256 * 1024,
        "live memory rose by {} bytes over the edits: {after:?}",
        most - settled
    );
    Ok(())
}
