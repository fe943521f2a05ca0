//! The printed report (a table per SupportedFeature, the status-only tests, the failures, the final line) and
//! the expected-results file CI compares against.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::data::{Conformance, Suite};
use super::runner::{Outcome, RunResults};
use super::util::excerpt;

/// Counts of outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Passed.
    pub pass: usize,
    /// Failed.
    pub fail: usize,
    /// Skipped.
    pub skip: usize,
    /// Not applicable: upstream's test body checks nothing given what Portcullis claims.
    pub not_applicable: usize,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Fail { .. } => self.fail += 1,
            Outcome::Skip(_) => self.skip += 1,
            Outcome::NotApplicable(_) => self.not_applicable += 1,
        }
    }
}

/// The headline: `conformance: P passed, F failed, S skipped` over every case the run was asked to run (all
/// selected suites) and every status-only test, except the not-applicable ones (listed in the report: upstream
/// runs them and checks nothing).
pub fn headline(results: &RunResults) -> String {
    let mut t = Tally::default();
    for c in &results.cases {
        t.add(&c.outcome);
    }
    for s in &results.status {
        t.add(&s.outcome);
    }
    format!(
        "conformance: {} passed, {} failed, {} skipped",
        t.pass, t.fail, t.skip
    )
}

/// The whole report (everything but the headline) of a run of the given suites.
pub fn render(
    conf: &Conformance,
    results: &RunResults,
    full_details: bool,
    suites: &[Suite],
) -> String {
    let mut out = String::new();
    let mut per_feature: BTreeMap<String, (Tally, Tally)> = BTreeMap::new();
    for c in &results.cases {
        for f in &c.features {
            per_feature.entry(f.clone()).or_default().0.add(&c.outcome);
        }
    }
    for s in &results.status {
        for f in &s.features {
            per_feature.entry(f.clone()).or_default().1.add(&s.outcome);
        }
    }
    // Cases of the suites not selected, per feature.
    let not_selected: Vec<Suite> = Suite::ALL
        .iter()
        .copied()
        .filter(|s| !suites.contains(s))
        .collect();
    let mut not_run: BTreeMap<String, usize> = BTreeMap::new();
    for suite in &not_selected {
        for features in conf.features_of(*suite) {
            for f in features {
                *not_run.entry(f.clone()).or_default() += 1;
            }
        }
    }
    // Features of the tests this suite has (features.json also lists mesh features, not processed here).
    let mut names: BTreeSet<String> = conf
        .tests
        .iter()
        .flat_map(|t| t.features.iter().cloned())
        .collect();
    names.extend(per_feature.keys().cloned());
    let rank = |n: &str| match conf.features.get(n).map(|f| f.level.as_str()) {
        Some("Core") => 0,
        Some("Extended") => 1,
        _ => 2,
    };
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));

    let names_of =
        |list: &[Suite]| -> String { list.iter().map(|s| s.name()).collect::<Vec<_>>().join(",") };
    let _ = writeln!(
        out,
        "\nCases ({}) and status-only tests per SupportedFeature:",
        names_of(suites)
    );
    let _ = writeln!(
        out,
        "{:<58} {:<9} {:<5} {:>6} {:>6} {:>6} {:>6}   {:<14} {:>9}",
        "feature", "level", "chan", "cases", "pass", "fail", "skip", "status p/f/s", "not run"
    );
    for n in &names {
        let (cases, status) = per_feature.get(n).copied().unwrap_or_default();
        let info = conf.features.get(n);
        let total = cases.pass + cases.fail + cases.skip;
        let st = if status.pass + status.fail + status.skip == 0 {
            "-".to_string()
        } else {
            format!("{}/{}/{}", status.pass, status.fail, status.skip)
        };
        let other = not_run.get(n).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<58} {:<9} {:<5} {:>6} {:>6} {:>6} {:>6}   {:<14} {:>9}",
            n,
            info.map(|i| i.level.as_str()).unwrap_or("?"),
            info.map(|i| if i.channel == "experimental" {
                "exp"
            } else {
                "std"
            })
            .unwrap_or("?"),
            total,
            cases.pass,
            cases.fail,
            cases.skip,
            st,
            if other == 0 {
                "-".to_string()
            } else {
                other.to_string()
            }
        );
    }
    let mut per_suite = String::new();
    for suite in suites {
        let mut t = Tally::default();
        for c in results.cases.iter().filter(|c| c.suite == *suite) {
            t.add(&c.outcome);
        }
        let _ = write!(
            per_suite,
            "\n  {:<5} {} passed, {} failed, {} skipped",
            suite.name(),
            t.pass,
            t.fail,
            t.skip
        );
    }
    let _ = writeln!(out, "\nCases per suite:{per_suite}");
    if !not_selected.is_empty() {
        let counts: Vec<String> = not_selected
            .iter()
            .map(|s| format!("{} {} cases", conf.count(*s), s.name()))
            .collect();
        let _ = writeln!(
            out,
            "Not run (suites not selected; --suites {}): {} (counted under \"not run\" above).",
            names_of(&Suite::ALL),
            counts.join(", ")
        );
    }

    let mut st = Tally::default();
    for s in &results.status {
        st.add(&s.outcome);
    }
    let _ = writeln!(
        out,
        "\nStatus-only tests: {} passed, {} failed, {} skipped; {} not applicable (checks nothing given the \
         features Portcullis claims; upstream reports these passed)",
        st.pass, st.fail, st.skip, st.not_applicable
    );
    for s in &results.status {
        let line = match &s.outcome {
            Outcome::Pass => "pass".to_string(),
            Outcome::Fail { reason, .. } => format!("FAIL {}", excerpt(reason, 150)),
            Outcome::Skip(r) => format!("skip ({r})"),
            Outcome::NotApplicable(r) => format!("not applicable ({r})"),
        };
        let _ = writeln!(out, "  {:<52} {line}", s.test);
        if full_details {
            if let Outcome::Fail { detail, .. } = &s.outcome {
                for l in detail.lines() {
                    let _ = writeln!(out, "      {l}");
                }
            }
        }
    }

    let failed: Vec<_> = results
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Fail { .. }))
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nFailed cases ({}):", failed.len());
        for c in failed {
            if let Outcome::Fail { reason, detail } = &c.outcome {
                let _ = writeln!(out, "  {:<58} {}", c.id, excerpt(reason, 140));
                if full_details {
                    for l in detail.lines() {
                        let _ = writeln!(out, "      {l}");
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "\nFailure causes (cases):");
    for (cause, ids) in failure_causes(results) {
        let _ = writeln!(out, "  {:>4}  {cause}", ids.len());
    }
    out
}

/// Groups failed cases by a normalized reason (numbers and addresses removed).
pub fn failure_causes(results: &RunResults) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &results.cases {
        if let Outcome::Fail { reason, .. } = &c.outcome {
            groups
                .entry(normalize_reason(reason))
                .or_default()
                .push(c.id.clone());
        }
    }
    let mut v: Vec<_> = groups.into_iter().collect();
    v.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    v
}

/// A reason without the parts that differ between cases (addresses, uuids, pod names).
pub fn normalize_reason(reason: &str) -> String {
    let mut out = String::new();
    for word in reason.split_whitespace() {
        let w = if word.contains("127.") || word.len() > 40 {
            "…"
        } else if word.chars().filter(|c| c.is_ascii_digit()).count() > 4 {
            "#"
        } else {
            word
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    excerpt(&out, 110)
}

/// One line of the expected-results file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Must pass.
    Pass,
    /// Not expected to pass yet, with the reason.
    Skip(String),
}

/// Parses `<case id> pass` / `<case id> skip <reason>` lines (`#` comments and blank lines ignored).
pub fn parse_expected(text: &str) -> Result<BTreeMap<String, Expected>, String> {
    let mut map = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let id = parts.next().unwrap_or("");
        let verdict = parts.next().unwrap_or("");
        let rest = parts.next().unwrap_or("").trim();
        let e = match verdict {
            "pass" => Expected::Pass,
            "skip" if !rest.is_empty() => Expected::Skip(rest.to_string()),
            "skip" => return Err(format!("line {}: `skip` needs a reason", i + 1)),
            other => {
                return Err(format!(
                    "line {}: expected `pass` or `skip <reason>`, got {other:?}",
                    i + 1
                ))
            }
        };
        if map.insert(id.to_string(), e).is_some() {
            return Err(format!("line {}: {id} listed twice", i + 1));
        }
    }
    Ok(map)
}

/// Writes the expected-results file from a run: `pass` for passing cases, `skip <why>` for the others.
pub fn write_expected(results: &RunResults) -> String {
    let mut out = String::from(
        "# Expected results of conformance cases (proto-conformance --check).\n\
         # `pass`: must pass (a failure is a regression); `skip <reason>`: does not pass yet, and why.\n\
         # Regenerate after a run of one suite with: proto-conformance --suites <suite> --write-expected \\\n\
         #   proto-conformance/expected/<suite>-cases.txt\n",
    );
    for c in &results.cases {
        let line = match &c.outcome {
            Outcome::Pass => format!("{} pass", c.id),
            Outcome::Fail { reason, .. } => {
                format!(
                    "{} skip fails: {}",
                    c.id,
                    one_line(&normalize_reason(reason))
                )
            }
            Outcome::Skip(r) | Outcome::NotApplicable(r) => {
                format!("{} skip {}", c.id, one_line(r))
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The comparison with the expected file.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Expected to pass, did not.
    pub regressions: Vec<(String, String)>,
    /// Expected to skip (or unlisted), passed.
    pub newly_passing: Vec<String>,
    /// Cases the run had that the file does not list.
    pub unlisted: Vec<String>,
}

/// Compares a run with the expected file (only the cases the run contains).
pub fn check(results: &RunResults, expected: &BTreeMap<String, Expected>) -> CheckReport {
    let mut r = CheckReport::default();
    for c in &results.cases {
        match (expected.get(&c.id), &c.outcome) {
            (Some(Expected::Pass), Outcome::Pass) => {}
            (Some(Expected::Pass), Outcome::Fail { reason, .. }) => {
                r.regressions.push((c.id.clone(), reason.clone()))
            }
            (Some(Expected::Pass), Outcome::Skip(why) | Outcome::NotApplicable(why)) => r
                .regressions
                .push((c.id.clone(), format!("skipped: {why}"))),
            (Some(Expected::Skip(_)), Outcome::Pass) => r.newly_passing.push(c.id.clone()),
            (Some(Expected::Skip(_)), _) => {}
            (None, Outcome::Pass) => {
                r.unlisted.push(c.id.clone());
                r.newly_passing.push(c.id.clone());
            }
            (None, _) => r.unlisted.push(c.id.clone()),
        }
    }
    r
}
