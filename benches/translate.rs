//! What a configuration change costs the control plane, for 100, 1k and 10k rules (ten per host, one Ingress or
//! HTTPRoute and one Service per host):
//!
//! - `translate/rebuild`: `Input` → model → compiled router (`translate` + `Router::compile_reusing` the previous
//!   router, as a publish does): the rebuild every change costs once the objects are read;
//! - `translate/model`: `translate` alone; `translate/compile`: `Router::compile` alone, from scratch (what the
//!   first publish costs: no regex to reuse);
//!
//! Regex checks are remembered by pattern across translations (`src/translate/httproute.rs`), so `model` and
//! `rebuild` are measured with that memo warm, as every change after the first finds it.
//! - `translate/parse`: YAML text → `Input` (standalone mode re-reads the manifests on every change).
//!
//! Groups: `translate/ingress` (Prefix paths), `translate/httproute` (Exact paths), `translate/httproute_regex`
//! (RegularExpression paths, which the translator validates and the router compiles) and
//! `translate/httproute_header_regex` (RegularExpression header values, likewise).
//!
//! `BENCH_RULES=100,1000` limits the sizes (default 100,1000,10000; run as a test, 100,1000).

mod common;

use common::Shape;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use portcullis::router::Router;
use portcullis::translate::{translate, Options};
use std::hint::black_box;
use std::time::Duration;

fn sizes() -> Vec<usize> {
    common::sizes("BENCH_RULES", &[100, 1_000, 10_000], &[100, 1_000])
}

fn bench(c: &mut Criterion) {
    let opts = Options::default();
    for (api, shape) in [
        ("ingress", Shape::IngressPrefix),
        ("httproute", Shape::RouteExact),
        ("httproute_regex", Shape::RouteRegex),
        ("httproute_header_regex", Shape::RouteHeaderRegex),
    ] {
        let mut group = c.benchmark_group(format!("translate/{api}"));
        group
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10);
        for rules in sizes() {
            let files = common::manifests(shape, rules);
            let input = common::input(&files);
            let model = common::model(&input);
            assert_eq!(model.rule_count(), rules);
            group.throughput(Throughput::Elements(rules as u64));
            // What publishing a change costs: the previous router lends its compiled regexes.
            let previous = Router::compile(&model).expect("compiles");
            group.bench_with_input(BenchmarkId::new("rebuild", rules), &input, |b, input| {
                b.iter(|| {
                    let out = translate(black_box(input), &opts);
                    Router::compile_reusing(&out.model, Some(&previous)).expect("compiles")
                })
            });
            group.bench_with_input(BenchmarkId::new("model", rules), &input, |b, input| {
                b.iter(|| translate(black_box(input), &opts))
            });
            group.bench_with_input(BenchmarkId::new("compile", rules), &model, |b, model| {
                b.iter(|| Router::compile(black_box(model)).expect("compiles"))
            });
            group.bench_with_input(BenchmarkId::new("parse", rules), &files, |b, files| {
                b.iter(|| common::input(black_box(files)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
