//! Golden translation tests: one behaviour per fixture.
//!
//! For every `tests/fixtures/translate/<behaviour>.yaml` this reads the YAML with the production file source,
//! runs the production translator with default options (plus the ingress-nginx profile when the fixture's comment
//! says `# ingress-nginx-class: NAME`), and compares
//!
//! ```json
//! { "model": <Model>, "statuses": <Gateway API status>, "diagnostics": ["<Diagnostic as Display>", ...],
//!   "load_problems": ["<LoadProblem>", ...] }
//! ```
//!
//! (pretty JSON) with `tests/fixtures/translate/<behaviour>.snap.json`.
//!
//! - `UPDATE_GOLDEN=1 cargo test --test translate_golden` (re)writes the snapshots instead of comparing. Read
//!   every snapshot it writes: a snapshot that records wrong output is worse than none.
//! - A fixture without a snapshot fails, a snapshot without a fixture fails, and a fixture that does not start
//!   with a `#` comment block (the behaviour under test and the expected outcome, in words) fails.
//! - Every mismatch is reported (with a line diff), not just the first.

use portcullis::model::Model;
use portcullis::source::file::input_from_str;
use portcullis::translate::{translate, Options};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The folder must hold at least this many fixtures, so a broken glob or a deleted folder cannot pass.
const MIN_FIXTURES: usize = 25;

/// What a snapshot file holds. A struct (not `json!`) so the key order never depends on serde_json features.
#[derive(Serialize)]
struct Snapshot<'a> {
    model: &'a Model,
    statuses: &'a portcullis::translate::status::Statuses,
    diagnostics: Vec<String>,
    load_problems: Vec<String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate")
}

/// The translation options of a fixture: the defaults, plus `# ingress-nginx-class: NAME` and
/// `# ingress-nginx-configmap: NS/NAME` lines of its leading comment (the ingress-nginx profile).
fn options(yaml: &str) -> Options {
    let mut opts = Options::default();
    for line in yaml
        .lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
    {
        let line = line.trim_start_matches('#').trim();
        if let Some(v) = line.strip_prefix("ingress-nginx-class:") {
            opts.nginx.classes.push(v.trim().to_string());
        }
        if let Some(v) = line.strip_prefix("ingress-nginx-configmap:") {
            opts.nginx.config_map = Some(v.trim().to_string());
        }
    }
    opts
}

/// The snapshot text for one fixture's YAML (pretty JSON, ending in a newline).
fn render(yaml: &str) -> String {
    let (input, load_problems) = input_from_str(yaml);
    let out = translate(&input, &options(yaml));
    // The supported-features list is the same in every fixture; it is tested once, not 87 times.
    let mut statuses = out.statuses.clone();
    for c in &mut statuses.gateway_classes {
        c.status.supported_features.clear();
    }
    let snap = Snapshot {
        model: &out.model,
        statuses: &statuses,
        diagnostics: out.diagnostics.iter().map(ToString::to_string).collect(),
        load_problems: load_problems.iter().map(ToString::to_string).collect(),
    };
    let mut text = serde_json::to_string_pretty(&snap).expect("a snapshot serializes");
    text.push('\n');
    text
}

/// Files in `dir` whose names end in `suffix`, sorted by name.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    v.sort();
    v
}

fn behaviour_name(path: &Path, suffix: &str) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_suffix(suffix).unwrap_or(name).to_string()
}

/// Does the fixture open with a comment block (after optional blank lines)?
fn has_leading_comment(yaml: &str) -> bool {
    yaml.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with('#'))
}

/// A unified-style line diff (`-` expected, `+` actual) with a few lines of context, from a longest common
/// subsequence. Snapshots are small, so the quadratic table is fine.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (tag, line) with tag ' ', '-' or '+'.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (k, (tag, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
        if !near {
            continue;
        }
        if last_printed.is_some_and(|p| p + 1 != k) || (last_printed.is_none() && k > 0) {
            out.push_str("   ...\n");
        }
        let _ = writeln!(out, "{tag}  {line}");
        last_printed = Some(k);
    }
    if last_printed.is_some_and(|p| p + 1 < ops.len()) {
        out.push_str("   ...\n");
    }
    out
}

#[test]
fn golden_translations() {
    let dir = fixture_dir();
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let fixtures = files_ending(&dir, ".yaml");
    let snapshots = files_ending(&dir, ".snap.json");

    let mut failures: Vec<String> = Vec::new();
    let mut ran: Vec<String> = Vec::new();
    let mut written: Vec<String> = Vec::new();

    if fixtures.len() < MIN_FIXTURES {
        failures.push(format!(
            "{} holds {} fixtures; at least {MIN_FIXTURES} are required",
            dir.display(),
            fixtures.len()
        ));
    }

    for fixture in &fixtures {
        let name = behaviour_name(fixture, ".yaml");
        ran.push(name.clone());
        let yaml = std::fs::read_to_string(fixture)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", fixture.display()));
        if !has_leading_comment(&yaml) {
            failures.push(format!(
                "{name}: the fixture must start with a comment block that states the behaviour and the \
                 expected outcome"
            ));
        }
        let actual = render(&yaml);
        let snap_path = dir.join(format!("{name}.snap.json"));
        if update {
            let unchanged = std::fs::read_to_string(&snap_path).is_ok_and(|old| old == actual);
            if !unchanged {
                std::fs::write(&snap_path, &actual)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", snap_path.display()));
                written.push(name.clone());
            }
            continue;
        }
        match std::fs::read_to_string(&snap_path) {
            Err(e) => failures.push(format!(
                "{name}: no snapshot at {} ({e}); run with UPDATE_GOLDEN=1 to write it, then read it \
                 and check it against the spec",
                snap_path.display()
            )),
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: translation differs from {} (- expected, + actual):\n{}",
                snap_path.display(),
                line_diff(&expected, &actual)
            )),
        }
    }

    // A snapshot whose fixture was renamed or deleted would otherwise rot unnoticed.
    for snap in &snapshots {
        let name = behaviour_name(snap, ".snap.json");
        if !dir.join(format!("{name}.yaml")).is_file() {
            failures.push(format!(
                "{name}: snapshot {} has no fixture {name}.yaml; delete it or restore the fixture",
                snap.display()
            ));
        }
    }

    // Straight to the process's stderr, not through `eprintln!`, which the test harness captures: the list of
    // fixtures that ran is shown on every run, passing or not.
    let mut list = format!("translate_golden: ran {} fixtures:\n", ran.len());
    for name in &ran {
        let note = if written.contains(name) {
            " (snapshot written: read it and check it against the spec)"
        } else {
            ""
        };
        let _ = writeln!(list, "  {name}{note}");
    }
    let _ = std::io::stderr().write_all(list.as_bytes());

    assert!(
        failures.is_empty(),
        "{} golden failure(s) out of {} fixture(s):\n\n{}",
        failures.len(),
        ran.len(),
        failures.join("\n\n")
    );
}

#[test]
fn line_diff_marks_changes() {
    let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
    assert!(d.contains("-  b"), "{d}");
    assert!(d.contains("+  x"), "{d}");
    assert!(d.contains("   a"), "{d}");
    assert_eq!(line_diff("same\n", "same\n"), "");
}
