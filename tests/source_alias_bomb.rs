//! The YAML file source against a hostile file that is cheap to write and expensive to read: alias expansion.
//! (Kept apart from `prop_source.rs`: it costs 20-30 s in a debug build, where the property files keep to a
//! budget.)

use portcullis::source::file::parse_str;
use portcullis::translate::Severity;
use std::path::Path;
use std::time::{Duration, Instant};

/// Alias expansion ("billion laughs"): nine levels of nine aliases would expand to 387 million nodes; the parser's
/// budget must refuse the file with a located error, without building it.
#[test]
fn alias_bombs_are_refused_quickly() {
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n  l0: &l0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let prev = format!("*l{}", i - 1);
        text.push_str(&format!(
            "  l{i}: &l{i} [{}]\n",
            [prev.as_str(); 9].join(", ")
        ));
    }
    let start = Instant::now();
    let parsed = parse_str(&text, Path::new("bomb.yaml"));
    let took = start.elapsed();
    eprintln!("alias bomb refused after {took:?}");
    // The parser stops after a million replayed alias events. That takes a while in a debug build on a busy
    // two-core machine (20-30 s measured; see docs/fuzzing.md), so the bound here only catches a budget that is
    // gone (the whole expansion would take hours and gigabytes).
    assert!(took < Duration::from_secs(120), "took {took:?}");
    assert!(parsed.objects.is_empty(), "the bomb was read");
    assert!(
        parsed
            .problems
            .iter()
            .any(|p| p.severity == Severity::Error && p.location.line > 0),
        "{:?}",
        parsed
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    );
}
