//! Human and JSON presentations: diagnostics with file locations, and the routing table of `portcullis routes`.

use crate::model::{
    precedence, Action, Backend, BackendGroup, Filter, HostPattern, HttpRule, ListenerKind, Model,
    PathModifier,
};
use crate::source::file::Location;
use crate::source::ObjectRef;
use crate::translate::{Diagnostic, Severity};
use serde::Serialize;
use std::collections::HashMap;

/// `file:line: error: Kind ns/name: message` (the location part only when the object's file is known).
pub fn diagnostic_line(d: &Diagnostic, locations: &HashMap<ObjectRef, Location>) -> String {
    diagnostic_line_at(d, locations, &HashMap::new())
}

/// [`diagnostic_line`], with the line of the annotation a diagnostic is about when `field_lines` knows it.
pub fn diagnostic_line_at(
    d: &Diagnostic,
    locations: &HashMap<ObjectRef, Location>,
    field_lines: &HashMap<ObjectRef, HashMap<String, usize>>,
) -> String {
    let at = d.annotation.as_ref().and_then(|a| {
        let line = *field_lines.get(&d.object)?.get(a)?;
        let file = &locations.get(&d.object)?.file;
        Some(Location {
            file: file.clone(),
            line,
        })
    });
    match at.as_ref().or_else(|| locations.get(&d.object)) {
        Some(loc) => {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{loc}: {sev}: {}: {}", d.object, d.message)
        }
        None => d.to_string(),
    }
}

/// File contents read for [`diagnostic_line_at_field`], each file read once.
#[derive(Debug, Default)]
pub struct SourceTexts(HashMap<std::path::PathBuf, Vec<String>>);

impl SourceTexts {
    fn lines(&mut self, file: &std::path::Path) -> &[String] {
        self.0
            .entry(file.to_path_buf())
            .or_insert_with(|| {
                std::fs::read_to_string(file)
                    .map(|t| t.lines().map(str::to_string).collect())
                    .unwrap_or_default()
            })
            .as_slice()
    }
}

/// [`diagnostic_line_at`], pointing at the line of the field the message starts with (`spec.rules[0]...: `)
/// when it can be found in the object's document, else at the object's first line.
pub fn diagnostic_line_at_field(
    d: &Diagnostic,
    locations: &HashMap<ObjectRef, Location>,
    field_lines: &HashMap<ObjectRef, HashMap<String, usize>>,
    texts: &mut SourceTexts,
) -> String {
    let path = d
        .message
        .split_once(": ")
        .map(|(p, _)| p)
        .filter(|p| (p.starts_with("spec.") || p.starts_with("metadata.")) && !p.contains(' '));
    let found = match (d.annotation.is_none(), path, locations.get(&d.object)) {
        (true, Some(path), Some(loc)) if loc.line > 0 => {
            field_line(texts.lines(&loc.file), loc.line, path).map(|line| Location {
                file: loc.file.clone(),
                line,
            })
        }
        _ => None,
    };
    match found {
        Some(at) => {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!("{at}: {sev}: {}: {}", d.object, d.message)
        }
        None => diagnostic_line_at(d, locations, field_lines),
    }
}

/// The 1-based line of `path` (`spec.rules[0].matches[1].path.value`) in the block-style YAML document that
/// starts at line `start` of `lines`: the deepest part of the path that could be followed (flow mappings and
/// sequences stop the walk at the line that holds them). `None` when not even the first key is found.
pub fn field_line(lines: &[String], start: usize, path: &str) -> Option<usize> {
    enum Seg<'a> {
        Key(&'a str),
        Index(usize),
    }
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            segs.push(Seg::Key(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                segs.push(Seg::Index(i));
            }
        }
    }
    let indent = |l: &str| l.len() - l.trim_start().len();
    let skip = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let end = lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, l)| l.starts_with("---"))
        .map_or(lines.len(), |(i, _)| i);
    let doc = start.saturating_sub(1);
    // `cur`: index of the line where the current node starts; `parent`: indentation its children exceed;
    // `inline`: the current line's own content may hold the next key (an item's first key after `- `).
    let (mut cur, mut parent, mut inline) = (doc, -1i64, true);
    let mut best = None;
    for seg in segs {
        match seg {
            Seg::Key(name) => {
                let from = if inline { cur } else { cur + 1 };
                let mut hit = None;
                for (i, l) in lines.iter().enumerate().take(end).skip(from) {
                    if skip(l) || l.starts_with("---") {
                        continue;
                    }
                    let ind = indent(l) as i64;
                    if i > from && ind <= parent {
                        break;
                    }
                    let t = l.trim_start();
                    let (t, col) = match t.strip_prefix("- ") {
                        Some(rest) if i == cur && inline => (rest.trim_start(), ind + 2),
                        _ => (t, ind),
                    };
                    if col <= parent {
                        continue;
                    }
                    let key = t.trim_start_matches(['"', '\'']);
                    if key
                        .strip_prefix(name)
                        .is_some_and(|r| r.trim_start_matches(['"', '\'']).starts_with(':'))
                    {
                        hit = Some((i, col, t));
                        break;
                    }
                }
                let Some((i, col, t)) = hit else {
                    return best.or(Some(start));
                };
                best = Some(i + 1);
                let value = t.split_once(':').map_or("", |(_, v)| v.trim());
                if value.starts_with('{') || value.starts_with('[') {
                    return best;
                }
                cur = i;
                parent = col;
                inline = false;
            }
            Seg::Index(n) => {
                let mut seen = 0;
                let mut item_indent = None;
                let mut hit = None;
                for (i, l) in lines.iter().enumerate().take(end).skip(cur + 1) {
                    if skip(l) {
                        continue;
                    }
                    let ind = indent(l) as i64;
                    if ind < parent || (ind == parent && !l.trim_start().starts_with("- ")) {
                        break;
                    }
                    if !l.trim_start().starts_with("- ") && l.trim_start() != "-" {
                        continue;
                    }
                    match item_indent {
                        None => item_indent = Some(ind),
                        Some(x) if x != ind => continue,
                        _ => {}
                    }
                    if seen == n {
                        hit = Some((i, ind));
                        break;
                    }
                    seen += 1;
                }
                let Some((i, ind)) = hit else {
                    return best.or(Some(start));
                };
                best = Some(i + 1);
                cur = i;
                parent = ind;
                inline = true;
            }
        }
    }
    best.or(Some(start))
}

/// One row of the routing table: one match of one rule on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRow {
    /// Logical listener port.
    pub port: u16,
    /// Hostname pattern the row answers.
    pub host: String,
    /// The Gateway listener hostname it was attached through (absent for Ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_hostname: Option<String>,
    /// The match, e.g. `/api*` (prefix), `=/exact`, `~regex`, plus method/header/query conditions.
    #[serde(rename = "match")]
    pub matches: String,
    /// Filters in order.
    pub filters: Vec<String>,
    /// Weighted backends (`weight x target`) or the redirect.
    pub backends: Vec<String>,
    /// `Kind ns/name rule N`.
    pub origin: String,
}

fn filter_text(f: &Filter) -> String {
    match f {
        Filter::RequestHeaderModifier(m) => format!("request-headers({})", modifier_text(m)),
        Filter::ResponseHeaderModifier(m) => format!("response-headers({})", modifier_text(m)),
        Filter::UrlRewrite { hostname, path } => {
            let mut parts = Vec::new();
            if let Some(h) = hostname {
                parts.push(format!("host={h}"));
            }
            if let Some(p) = path {
                parts.push(path_text(p));
            }
            format!("rewrite({})", parts.join(" "))
        }
        Filter::RequestMirror(m) => {
            let share = if m.per_million >= 1_000_000 {
                String::new()
            } else {
                format!(" {}%", f64::from(m.per_million) / 10_000.0)
            };
            format!("mirror({}{share})", m.backend)
        }
        Filter::Cors(c) => format!("cors(origins={})", c.allow_origins.join(",")),
        Filter::RequestRedirect(r) => format!("redirect({})", r.status),
        Filter::Policy(p) => format!("ingress-nginx({})", p.source),
        Filter::CustomErrors(c) => {
            let codes: Vec<String> = c.codes.iter().map(u16::to_string).collect();
            format!("custom-errors({} -> {})", codes.join(","), c.backend)
        }
    }
}

fn path_text(p: &PathModifier) -> String {
    match p {
        PathModifier::ReplaceFullPath(v) => format!("path={v}"),
        PathModifier::ReplacePrefixMatch(v) => format!("prefix->{v}"),
    }
}

fn modifier_text(m: &crate::model::HeaderModifier) -> String {
    let mut parts = Vec::new();
    for (k, v) in &m.set {
        parts.push(format!("set {k}={v}"));
    }
    for (k, v) in &m.add {
        parts.push(format!("add {k}={v}"));
    }
    for k in &m.remove {
        parts.push(format!("remove {k}"));
    }
    parts.join(", ")
}

/// A backend with its endpoints: `ns/name:port [ip:port ...]`, or the status an invalid one answers.
fn backend_text(model: &Model, b: &Backend) -> String {
    match b {
        Backend::Service(key) => {
            let endpoints = model.backends.get(key).map_or_else(
                || "missing".to_string(),
                |s| {
                    s.endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            );
            format!("{key} [{endpoints}]")
        }
        Backend::Invalid { .. } => b.to_string(),
    }
}

fn group_text(model: &Model, g: &BackendGroup) -> Vec<String> {
    g.backends
        .iter()
        .map(|b| {
            let mut s = format!("{}x {}", b.weight, backend_text(model, &b.backend));
            for f in &b.filters {
                s.push(' ');
                s.push_str(&filter_text(f));
            }
            s
        })
        .collect()
}

fn action_text(model: &Model, rule: &HttpRule) -> Vec<String> {
    match &rule.action {
        Action::Forward(g) => group_text(model, g),
        Action::Redirect(r) => {
            let mut s = format!("redirect {}", r.status);
            if let Some(v) = &r.scheme {
                s.push_str(&format!(" scheme={v}"));
            }
            if let Some(v) = &r.hostname {
                s.push_str(&format!(" host={v}"));
            }
            if let Some(v) = r.port {
                s.push_str(&format!(" port={v}"));
            }
            if let Some(p) = &r.path {
                s.push(' ');
                s.push_str(&path_text(p));
            }
            vec![s]
        }
    }
}

/// The routing table: per port, per hostname, rows in the order the router tries them (precedence order, Ingress
/// and Gateway API rules merged), then the default backend.
pub fn route_rows(model: &Model) -> Vec<RouteRow> {
    let mut rows = Vec::new();
    for l in &model.listeners {
        match &l.kind {
            ListenerKind::Tls(t) => {
                for r in &t.routes {
                    rows.push(RouteRow {
                        port: l.port,
                        host: r.hostname.to_string(),
                        listener_hostname: Some(r.listener_hostname.to_string()),
                        matches: format!("(TLS {:?})", r.mode),
                        filters: vec![],
                        backends: group_text(model, &r.backends),
                        origin: r.origin.to_string(),
                    });
                }
                continue;
            }
            ListenerKind::Tcp(t) | ListenerKind::Udp(t) => {
                // Only the first (oldest) route takes the port's traffic.
                if let Some(r) = t.routes.first() {
                    rows.push(RouteRow {
                        port: l.port,
                        host: "*".into(),
                        listener_hostname: None,
                        matches: format!("({:?})", l.protocol()).to_uppercase(),
                        filters: vec![],
                        backends: group_text(model, &r.backends),
                        origin: r.origin.to_string(),
                    });
                }
                continue;
            }
            ListenerKind::Http(_) | ListenerKind::Https(_) => {}
        }
        let Some(h) = l.http() else { continue };
        let mut hosts: Vec<&HostPattern> = h.virtual_hosts.iter().map(|v| &v.hostname).collect();
        hosts.sort();
        hosts.dedup();
        for host in hosts {
            let mut entries: Vec<(Option<&HostPattern>, &HttpRule, usize)> = h
                .virtual_hosts
                .iter()
                .filter(|vh| &vh.hostname == host)
                .flat_map(|vh| {
                    vh.rules.iter().flat_map(move |r| {
                        (0..r.matches.len()).map(move |i| (vh.listener_hostname.as_ref(), r, i))
                    })
                })
                .collect();
            entries.sort_by(|a, b| precedence::compare((host, a.1, a.2), (host, b.1, b.2)));
            for (listener, rule, i) in entries {
                rows.push(RouteRow {
                    port: l.port,
                    host: host.to_string(),
                    listener_hostname: listener.map(HostPattern::to_string),
                    matches: rule.matches[i].to_string(),
                    filters: rule.filters.iter().map(filter_text).collect(),
                    backends: action_text(model, rule),
                    origin: rule.origin.to_string(),
                });
            }
        }
        if let Some(d) = &h.default_backend {
            rows.push(RouteRow {
                port: l.port,
                host: "*".into(),
                listener_hostname: None,
                matches: "(default)".into(),
                filters: vec![],
                backends: action_text(model, d),
                origin: d.origin.to_string(),
            });
        }
    }
    rows
}

/// The routing table as aligned text columns.
pub fn route_table(rows: &[RouteRow]) -> String {
    let header = ["PORT", "HOST", "MATCH", "FILTERS", "BACKENDS", "ORIGIN"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let host = match &r.listener_hostname {
                Some(l) if *l != r.host && l != "*" => format!("{} (via listener {l})", r.host),
                _ => r.host.clone(),
            };
            [
                r.port.to_string(),
                host,
                r.matches.clone(),
                if r.filters.is_empty() {
                    "-".into()
                } else {
                    r.filters.join("; ")
                },
                r.backends.join(", "),
                r.origin.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&header);
    for c in &cells {
        let refs: Vec<&str> = c.iter().map(String::as_str).collect();
        line(&refs);
    }
    out
}

#[cfg(test)]
mod field_line_tests {
    use super::field_line;

    fn doc() -> Vec<String> {
        "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  hostnames: [a.example.com]
  rules:
  - matches:
    - path:
        type: Exact
        value: /a
    - headers: [{name: x, value: y}]
    backendRefs:
    - name: web
      weight: 3
  # a comment
  - backendRefs:
      - name: other
        weight: -1
---
kind: Other
spec:
  rules:
  - x: 1
"
        .lines()
        .map(str::to_string)
        .collect()
    }

    #[test]
    fn follows_block_paths() {
        let d = doc();
        assert_eq!(
            field_line(&d, 2, "spec.rules[0].matches[0].path.value"),
            Some(11)
        );
        assert_eq!(
            field_line(&d, 2, "spec.rules[0].matches[1].headers[0].name"),
            Some(12)
        );
        assert_eq!(
            field_line(&d, 2, "spec.rules[0].backendRefs[0].weight"),
            Some(15)
        );
        assert_eq!(
            field_line(&d, 2, "spec.rules[1].backendRefs[0].weight"),
            Some(19)
        );
        assert_eq!(field_line(&d, 2, "spec.hostnames[0]"), Some(6));
        // Past the end of what exists: the deepest part found.
        assert_eq!(field_line(&d, 2, "spec.rules[5].matches"), Some(7));
        assert_eq!(field_line(&d, 2, "spec.nothing"), Some(5));
        assert_eq!(field_line(&d, 2, "status.x"), Some(2));
        // The walk stays in its document.
        assert_eq!(field_line(&d, 2, "spec.rules[2]"), Some(7));
    }
}
