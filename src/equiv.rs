//! Do two routing models answer every request the same way? (`portcullis diff`, and the proof of `migrate`.)
//!
//! A request is (listener port, host, path, method, headers, query). For each listener and each class of hosts
//! (every exact hostname either model names, a fresh name under each wildcard, one and two labels deep, and a
//! name no pattern covers), both models' rules for that host are put in the order the router tries them
//! (listener isolation, then `model::precedence`). The set of requests a rule *answers* is its match language
//! minus those of the rules tried before it; two models are equivalent on a host when every request is answered
//! by rules that do the same thing.
//!
//! Paths are compared as automata: every path condition of both models (Exact, element-wise Prefix, regexes
//! with their case-insensitivity and anchoring) becomes one pattern of a single multi-pattern DFA, whose states are
//! walked breadth first, so each difference is found with a shortest path. Methods are finite sets; header and
//! query values are split into the classes their conditions distinguish (by the same automata), and every
//! combination of classes is tried. What cannot be decided (an automaton too big, too many combinations) is
//! reported as undecided, never as equivalent.
//!
//! "What a rule does" is its action (backends with their weights reduced to lowest terms, redirects), its filters
//! (header changes, rewrites, mirrors, CORS, ingress-nginx policies with their limits), timeouts and retries:
//! everything of the rule but its origin and matches, and the log label of a policy. Basic-auth users are compared
//! by the Secret they come from. TLS listeners are compared by the certificate (its Secret) each server name gets.

mod automata;

use crate::model::{HostPattern, HttpRule, Listener, Model, PathMatch, Protocol, StringMatch};
use automata::MultiDfa;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

/// Limits of one comparison.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Combinations of method, header and query classes tried per host; beyond, the host is undecided.
    pub max_contexts: usize,
    /// Counter-examples kept per host (the others are counted).
    pub max_examples_per_host: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_contexts: 4096,
            max_examples_per_host: 20,
        }
    }
}

/// A concrete request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    /// The listener address, when not the default one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The listener port (logical, before `--port-offset`).
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The Host (and, over TLS, the SNI).
    pub host: String,
    /// The path, as the router sees it (not decoded).
    pub path: String,
    /// The method.
    pub method: String,
    /// Header fields sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Query parameters (decoded values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}://{}:{}",
            self.method, self.scheme, self.host, self.port
        )?;
        f.write_str(&escape_path(&self.path))?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{}={}", percent(k), percent(v))?;
        }
        for (k, v) in &self.headers {
            write!(f, " [{k}: {}]", v.escape_debug())?;
        }
        if let Some(a) = self.address {
            write!(f, " (listener address {a})")?;
        }
        Ok(())
    }
}

/// What one configuration does with a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// The rule that answers (`Ingress ns/name rule 0`...), or `None` for 404 / a missing listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What it does.
    pub does: String,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(r) => write!(f, "{}  [{r}]", self.does),
            None => f.write_str(&self.does),
        }
    }
}

/// A request the two configurations answer differently.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The request.
    pub request: Request,
    /// What the old configuration does.
    pub old: Answer,
    /// What the new configuration does.
    pub new: Answer,
}

/// A part of the request space the comparison could not decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Undecided {
    /// The listener port.
    pub port: u16,
    /// The host class (a representative name).
    pub host: String,
    /// Why.
    pub reason: String,
}

/// The result of a comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Counter-examples, shortest first per host.
    pub differences: Vec<Difference>,
    /// Counter-examples found but not listed (beyond the per-host limit).
    pub more_differences: usize,
    /// What could not be decided.
    pub undecided: Vec<Undecided>,
    /// Host classes compared (over all listeners).
    pub hosts_compared: usize,
    /// Route rules in the old and the new model.
    pub rules: (usize, usize),
}

impl Report {
    /// Equivalent: no difference and nothing undecided.
    pub fn is_equivalent(&self) -> bool {
        self.differences.is_empty() && self.undecided.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_equivalent() {
            return writeln!(
                f,
                "equivalent ({} host classes compared; {} rules old, {} rules new)",
                self.hosts_compared, self.rules.0, self.rules.1
            );
        }
        for d in &self.differences {
            writeln!(f, "{}", d.request)?;
            writeln!(f, "  old: {}", d.old)?;
            writeln!(f, "  new: {}", d.new)?;
        }
        for u in &self.undecided {
            writeln!(
                f,
                "undecided: port {} host {}: {}",
                u.port, u.host, u.reason
            )?;
        }
        let total = self.differences.len() + self.more_differences;
        writeln!(
            f,
            "not equivalent: {total} counter-examples ({} listed), {} undecided ({} host classes compared)",
            self.differences.len(),
            self.undecided.len(),
            self.hosts_compared
        )
    }
}

/// Compares two models.
pub fn compare(old: &Model, new: &Model, limits: &Limits) -> Report {
    let mut report = Report {
        rules: (old.rule_count(), new.rule_count()),
        ..Report::default()
    };
    let mut keys: BTreeSet<(Option<IpAddr>, u16)> = BTreeSet::new();
    for l in old.listeners.iter().chain(&new.listeners) {
        keys.insert((l.address, l.port));
    }
    let mut sigs = Signatures::default();
    for (address, port) in keys {
        fn find(m: &Model, address: Option<IpAddr>, port: u16) -> Option<&Listener> {
            m.listeners
                .iter()
                .find(|l| l.address == address && l.port == port)
        }
        compare_listener(
            address,
            port,
            find(old, address, port),
            find(new, address, port),
            limits,
            &mut sigs,
            &mut report,
        );
    }
    report
}

fn scheme(p: Protocol) -> &'static str {
    match p {
        Protocol::Http => "http",
        Protocol::Https => "https",
        Protocol::Tls => "tls",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// A host name no label of `taken` uses, for representatives of wildcard classes.
fn fresh_label(taken: &BTreeSet<String>) -> String {
    let mut n = 0usize;
    loop {
        let l = if n == 0 {
            "x".to_string()
        } else {
            format!("x{n}")
        };
        if !taken.contains(&l) {
            return l;
        }
        n += 1;
    }
}

/// One name per class of hosts the patterns distinguish.
fn representatives(patterns: &BTreeSet<HostPattern>) -> Vec<String> {
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for p in patterns {
        let text = match p {
            HostPattern::Any => continue,
            HostPattern::Exact(h) => h.as_str(),
            HostPattern::Wildcard { suffix, .. } => suffix.as_str(),
        };
        labels.extend(text.split('.').map(str::to_string));
    }
    let fresh = fresh_label(&labels);
    let mut out: BTreeSet<String> = BTreeSet::new();
    for p in patterns {
        match p {
            HostPattern::Any => {}
            HostPattern::Exact(h) => {
                out.insert(h.clone());
            }
            HostPattern::Wildcard { suffix, .. } => {
                out.insert(format!("{fresh}.{suffix}"));
                out.insert(format!("{fresh}.{fresh}.{suffix}"));
            }
        }
    }
    out.insert(format!("{fresh}.invalid"));
    out.into_iter().collect()
}

fn compare_listener(
    address: Option<IpAddr>,
    port: u16,
    old: Option<&Listener>,
    new: Option<&Listener>,
    limits: &Limits,
    sigs: &mut Signatures,
    report: &mut Report,
) {
    let proto = old.or(new).map_or(Protocol::Http, |l| l.protocol());
    let mut patterns: BTreeSet<HostPattern> = BTreeSet::new();
    for l in old.iter().chain(new.iter()) {
        for vh in l.http().map_or(&[][..], |h| &h.virtual_hosts[..]) {
            patterns.insert(vh.hostname.clone());
            if let Some(lh) = &vh.listener_hostname {
                patterns.insert(lh.clone());
            }
        }
        for c in l.tls().into_iter().flat_map(|t| &t.certificates) {
            patterns.insert(c.hostname.clone());
        }
        for t in crate::equiv::tls_routes(l) {
            patterns.insert(t.hostname.clone());
            patterns.insert(t.listener_hostname.clone());
        }
    }
    let request = |host: &str, path: &str| Request {
        address,
        port,
        scheme: scheme(proto),
        host: host.to_string(),
        path: path.to_string(),
        method: "GET".into(),
        headers: vec![],
        query: vec![],
    };
    let (o, n) = match (old, new) {
        (Some(o), Some(n)) if o.protocol() == n.protocol() => (o, n),
        _ => {
            let describe = |l: Option<&Listener>| Answer {
                rule: None,
                does: match l {
                    None => "no listener on this port (connection refused)".to_string(),
                    Some(l) => format!("a {} listener", scheme(l.protocol())),
                },
            };
            report.differences.push(Difference {
                request: request("any.invalid", "/"),
                old: describe(old),
                new: describe(new),
            });
            return;
        }
    };
    if o.client_validation_json() != n.client_validation_json() {
        report.differences.push(Difference {
            request: request("any.invalid", "/"),
            old: Answer {
                rule: None,
                does: format!("client certificates: {}", o.client_validation_json()),
            },
            new: Answer {
                rule: None,
                does: format!("client certificates: {}", n.client_validation_json()),
            },
        });
    }
    let reps = representatives(&patterns);
    if proto == Protocol::Tls {
        for h in &reps {
            report.hosts_compared += 1;
            let a = tls_route_answer(o, h);
            let b = tls_route_answer(n, h);
            if a != b {
                report.differences.push(Difference {
                    request: request(h, ""),
                    old: a,
                    new: b,
                });
            }
        }
        return;
    }
    let old_index = HostLookup::new(o);
    let new_index = HostLookup::new(n);
    for h in &reps {
        report.hosts_compared += 1;
        if proto == Protocol::Https {
            let (a, b) = (certificate(o, h), certificate(n, h));
            if a != b {
                report.differences.push(Difference {
                    request: request(h, "/"),
                    old: Answer {
                        rule: None,
                        does: a,
                    },
                    new: Answer {
                        rule: None,
                        does: b,
                    },
                });
            }
        }
        let (old_rules, old_default) = old_index.rules_for(h);
        let (new_rules, new_default) = new_index.rules_for(h);
        let cx = HostCx {
            address,
            port,
            scheme: scheme(proto),
            host: h,
            old_default,
            new_default,
            limits,
        };
        if let Err(reason) = compare_host(&cx, &old_rules, &new_rules, sigs, report) {
            report.undecided.push(Undecided {
                port,
                host: h.clone(),
                reason,
            });
        }
    }
}

impl Listener {
    fn client_validation_json(&self) -> String {
        self.tls()
            .and_then(|t| t.client_validation.as_ref())
            .map_or("none".to_string(), |v| {
                serde_json::to_string(v).unwrap_or_default()
            })
    }
}

/// The certificate a TLS client asking for `host` gets (tls::SniResolver's choice: the most specific pattern that
/// covers the name, the first one among equals, else the first certificate).
fn certificate(l: &Listener, host: &str) -> String {
    let Some(tls) = l.tls() else {
        return "no certificate".into();
    };
    let best = tls
        .certificates
        .iter()
        .filter(|c| c.hostname != HostPattern::Any && c.hostname.matches(host))
        .min_by(|a, b| a.hostname.cmp(&b.hostname))
        .or_else(|| {
            tls.certificates
                .iter()
                .find(|c| c.hostname == HostPattern::Any)
        })
        .or_else(|| tls.certificates.first());
    match best {
        Some(c) => format!("certificate from {}", c.source),
        None => "no certificate".into(),
    }
}

fn tls_route_answer(l: &Listener, host: &str) -> Answer {
    let mut best: Option<&crate::model::TlsRoute> = None;
    for r in crate::equiv::tls_routes(l) {
        if r.hostname.matches(host)
            && best.is_none_or(|b| {
                (&r.listener_hostname, &r.hostname) < (&b.listener_hostname, &b.hostname)
            })
        {
            best = Some(r);
        }
    }
    match best {
        None => Answer {
            rule: None,
            does: "no TLS route (connection closed)".into(),
        },
        Some(r) => Answer {
            rule: Some(r.origin.to_string()),
            does: format!(
                "pass through to {}",
                serde_json::to_string(&r.backends).unwrap_or_default()
            ),
        },
    }
}

/// The virtual hosts of a listener, indexed for "which rules take part for this host".
struct HostLookup<'m> {
    listener: &'m Listener,
    exact: HashMap<&'m str, Vec<usize>>,
    other: Vec<usize>,
    listener_patterns: Vec<&'m HostPattern>,
    has_ingress: bool,
}

/// One (rule, match) entry of a host's ordered list.
#[derive(Clone, Copy)]
struct Entry<'m> {
    host: &'m HostPattern,
    rule: &'m HttpRule,
    index: usize,
}

impl<'m> HostLookup<'m> {
    fn new(listener: &'m Listener) -> Self {
        let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut other = Vec::new();
        let mut listener_patterns: Vec<&HostPattern> = Vec::new();
        let mut has_ingress = false;
        for (i, vh) in listener
            .http()
            .map_or(&[][..], |h| &h.virtual_hosts[..])
            .iter()
            .enumerate()
        {
            match &vh.hostname {
                HostPattern::Exact(h) => exact.entry(h.as_str()).or_default().push(i),
                _ => other.push(i),
            }
            match &vh.listener_hostname {
                Some(lh) => listener_patterns.push(lh),
                None => has_ingress = true,
            }
        }
        listener_patterns.sort();
        listener_patterns.dedup();
        HostLookup {
            listener,
            exact,
            other,
            listener_patterns,
            has_ingress,
        }
    }

    /// The entries the router tries for `host`, in its order: listener isolation (the most specific Gateway
    /// listener hostname covering the host; Ingress rules take part under every one), an ingress-nginx server's
    /// stop ([`crate::model::precedence::Server`]), then precedence; and the default backend, when it answers what
    /// none of them matches.
    fn rules_for(&self, host: &str) -> (Vec<Entry<'m>>, Option<&'m HttpRule>) {
        let default = self
            .listener
            .http()
            .and_then(|h| h.default_backend.as_ref());
        let group = self
            .listener_patterns
            .iter()
            .find(|p| p.matches(host))
            .copied();
        if group.is_none() && !self.has_ingress {
            return (Vec::new(), default);
        }
        let vhs = self
            .exact
            .get(host)
            .into_iter()
            .flatten()
            .chain(self.other.iter())
            .filter_map(|&i| self.listener.http().and_then(|h| h.virtual_hosts.get(i)))
            .filter(|vh| vh.hostname.matches(host))
            .filter(|vh| match (&vh.listener_hostname, group) {
                (None, _) => true,
                (Some(lh), Some(g)) => lh == g,
                (Some(_), None) => false,
            });
        let mut entries: Vec<Entry<'m>> = Vec::new();
        for vh in vhs {
            for rule in &vh.rules {
                for index in 0..rule.matches.len() {
                    entries.push(Entry {
                        host: &vh.hostname,
                        rule,
                        index,
                    });
                }
            }
        }
        let server = crate::model::precedence::Server::of(entries.iter().map(|e| (e.host, e.rule)));
        let default = match &server {
            Some(s) => {
                entries.retain(|e| s.includes(e.host));
                default.filter(|d| s.default_serves(d))
            }
            None => default,
        };
        entries.sort_by(|a, b| {
            crate::model::precedence::compare((a.host, a.rule, a.index), (b.host, b.rule, b.index))
        });
        (entries, default)
    }
}

/// Interned behaviours: equal ids mean "does the same".
#[derive(Default)]
struct Signatures {
    ids: HashMap<String, usize>,
    texts: Vec<String>,
    /// By rule address: a rule takes part in many host classes and listeners; its text is made once.
    by_rule: HashMap<usize, usize>,
    /// Host comparisons already made, by what they compared (see `compare_host`): equivalent ones are not redone
    /// (the HTTP and HTTPS listeners of Ingress hosts hold the same rules).
    equivalent: std::collections::HashSet<String>,
}

impl Signatures {
    fn of_rule(&mut self, rule: &HttpRule) -> usize {
        let addr = rule as *const HttpRule as usize;
        if let Some(&id) = self.by_rule.get(&addr) {
            return id;
        }
        let text = behaviour(rule);
        let id = self.intern(text);
        self.by_rule.insert(addr, id);
        id
    }

    fn intern(&mut self, text: String) -> usize {
        if let Some(&id) = self.ids.get(&text) {
            return id;
        }
        let id = self.texts.len();
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        id
    }
}

/// What a rule does, as canonical text: the rule without its origin and matches, a policy without its log label,
/// weights in lowest terms (zero weights dropped unless all are zero).
fn behaviour(rule: &HttpRule) -> String {
    let mut v = serde_json::to_value(rule).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("origin");
        m.remove("matches");
        if let Some(Value::Array(filters)) = m.get_mut("filters") {
            for f in filters {
                if let Value::Object(f) = f {
                    if f.get("type").and_then(Value::as_str) == Some("Policy") {
                        f.remove("source");
                    }
                }
            }
        }
        if let Some(Value::Object(action)) = m.get_mut("action") {
            if let Some(Value::Array(backends)) = action.get_mut("backends") {
                normalize_weights(backends);
            }
        }
    }
    v.to_string()
}

fn normalize_weights(backends: &mut Vec<Value>) {
    let weight = |b: &Value| b.get("weight").and_then(Value::as_u64).unwrap_or(0);
    if backends.iter().any(|b| weight(b) > 0) {
        backends.retain(|b| weight(b) > 0);
    }
    let g = backends.iter().map(weight).fold(0, gcd);
    if g > 1 {
        for b in backends.iter_mut() {
            let w = weight(b) / g;
            if let Value::Object(o) = b {
                o.insert("weight".into(), Value::from(w));
            }
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A short human description of a behaviour.
fn describe(rule: &HttpRule) -> String {
    let text = behaviour(rule);
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let mut out = String::new();
    match v.get("action") {
        Some(a) if a.get("type").and_then(Value::as_str) == Some("Forward") => {
            out.push_str("forward to ");
            let bs: Vec<String> = a
                .get("backends")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|b| {
                    let be = b.get("backend").cloned().unwrap_or(Value::Null);
                    let name = be
                        .get("key")
                        .map(|k| k.as_str().map_or(k.to_string(), str::to_string))
                        .unwrap_or_else(|| be.to_string());
                    let mut s = format!(
                        "{name} (weight {})",
                        b.get("weight").unwrap_or(&Value::Null)
                    );
                    if let Some(f) = b.get("filters") {
                        s.push_str(&format!(" {f}"));
                    }
                    s
                })
                .collect();
            out.push_str(&bs.join(", "));
        }
        Some(a) => {
            let mut a = a.clone();
            if let Value::Object(o) = &mut a {
                o.remove("type");
            }
            out.push_str(&format!("redirect {a}"));
        }
        None => out.push('?'),
    }
    if let Some(Value::Array(fs)) = v.get("filters") {
        for f in fs {
            out.push_str(&format!("; {f}"));
        }
    }
    for k in ["timeouts", "retry"] {
        if let Some(t) = v.get(k) {
            out.push_str(&format!("; {k} {t}"));
        }
    }
    out
}

struct HostCx<'a> {
    address: Option<IpAddr>,
    port: u16,
    scheme: &'static str,
    host: &'a str,
    old_default: Option<&'a HttpRule>,
    new_default: Option<&'a HttpRule>,
    limits: &'a Limits,
}

/// A dimension of the request besides the path: the method, one header, one query parameter.
enum Dim {
    Method,
    Header(String),
    Query(String),
}

/// One class of values of a dimension: `None` is "absent" (or, for the method, a method no rule names).
struct ValueClass {
    value: Option<String>,
    /// Condition id -> met.
    met: Vec<bool>,
}

/// The compiled non-path conditions of one host: for each dimension its conditions and value classes.
struct Conditions {
    dims: Vec<(Dim, Vec<ValueClass>)>,
    /// (dimension, condition) -> condition id within the dimension.
    ids: HashMap<(usize, String), usize>,
    dim_of: HashMap<String, usize>,
}

fn condition_key(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => format!("={v}"),
        StringMatch::RegularExpression(r) => format!("~{r}"),
    }
}

fn condition_pattern(m: &StringMatch) -> String {
    match m {
        StringMatch::Exact(v) => automata::literal(v),
        StringMatch::RegularExpression(r) => automata::anchored(r),
    }
}

impl Conditions {
    fn new(entries: &[&Entry<'_>]) -> Result<Self, String> {
        let mut methods: BTreeSet<String> = BTreeSet::new();
        let mut headers: BTreeMap<String, Vec<StringMatch>> = BTreeMap::new();
        let mut query: BTreeMap<String, Vec<StringMatch>> = BTreeMap::new();
        for e in entries {
            let m = &e.rule.matches[e.index];
            if let Some(x) = &m.method {
                methods.insert(x.clone());
            }
            for h in &m.headers {
                let v = headers.entry(h.name.clone()).or_default();
                if !v.contains(&h.value) {
                    v.push(h.value.clone());
                }
            }
            for q in &m.query_params {
                let v = query.entry(q.name.clone()).or_default();
                if !v.contains(&q.value) {
                    v.push(q.value.clone());
                }
            }
        }
        let mut c = Conditions {
            dims: Vec::new(),
            ids: HashMap::new(),
            dim_of: HashMap::new(),
        };
        if !methods.is_empty() {
            let list: Vec<String> = methods.iter().cloned().collect();
            let mut classes: Vec<ValueClass> = list
                .iter()
                .enumerate()
                .map(|(i, m)| ValueClass {
                    value: Some(m.clone()),
                    met: (0..list.len()).map(|j| j == i).collect(),
                })
                .collect();
            let other = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                .iter()
                .find(|m| !methods.contains(**m))
                .map_or("UNLISTED".to_string(), |m| m.to_string());
            classes.push(ValueClass {
                value: Some(other),
                met: vec![false; list.len()],
            });
            for (i, m) in list.iter().enumerate() {
                c.ids.insert((0, m.clone()), i);
            }
            c.dim_of.insert("method".into(), 0);
            c.dims.push((Dim::Method, classes));
        }
        // Header values as sent: visible text without surrounding whitespace (what an HTTP parser hands over).
        let header_universe =
            "(?:[^\\x00-\\x20\\x7f](?:[^\\x00-\\x08\\x0a-\\x1f\\x7f]*[^\\x00-\\x20\\x7f])?)?";
        for (name, conds) in headers {
            c.add_value_dim(
                Dim::Header(name.clone()),
                &format!("h:{name}"),
                &conds,
                header_universe,
            )?;
        }
        for (name, conds) in query {
            c.add_value_dim(
                Dim::Query(name.clone()),
                &format!("q:{name}"),
                &conds,
                "(?s:.*)",
            )?;
        }
        Ok(c)
    }

    fn add_value_dim(
        &mut self,
        dim: Dim,
        key: &str,
        conds: &[StringMatch],
        universe: &str,
    ) -> Result<(), String> {
        let d = self.dims.len();
        let mut patterns: Vec<String> = conds.iter().map(condition_pattern).collect();
        patterns.push(universe.to_string());
        let dfa = MultiDfa::new(&patterns)?;
        let mut classes: Vec<ValueClass> = vec![ValueClass {
            value: None,
            met: vec![false; conds.len()],
        }];
        for cl in dfa.classes(conds.len())? {
            let value = String::from_utf8(cl.witness)
                .map_err(|_| "a value class has no UTF-8 member".to_string())?;
            classes.push(ValueClass {
                value: Some(value),
                met: cl.met[..conds.len()].to_vec(),
            });
        }
        for (i, m) in conds.iter().enumerate() {
            self.ids.insert((d, condition_key(m)), i);
        }
        self.dim_of.insert(key.to_string(), d);
        self.dims.push((dim, classes));
        Ok(())
    }

    fn contexts(&self, limit: usize) -> Result<usize, String> {
        let mut n: usize = 1;
        for (_, classes) in &self.dims {
            n = n.saturating_mul(classes.len());
        }
        if n > limit {
            return Err(format!(
                "{n} combinations of method, header and query values (limit {limit})"
            ));
        }
        Ok(n)
    }

    /// The class of each dimension in context `i` (mixed radix).
    fn context(&self, mut i: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.dims.len());
        for (_, classes) in &self.dims {
            out.push(i % classes.len());
            i /= classes.len();
        }
        out
    }

    /// Does the entry's match (besides its path) hold in the context?
    fn holds(&self, e: &Entry<'_>, cx: &[usize]) -> bool {
        let m = &e.rule.matches[e.index];
        let met = |dkey: &str, ckey: String| -> bool {
            let Some(&d) = self.dim_of.get(dkey) else {
                return false;
            };
            let Some(&c) = self.ids.get(&(d, ckey)) else {
                return false;
            };
            self.dims[d].1[cx[d]].met[c]
        };
        if let Some(method) = &m.method {
            if !met("method", method.clone()) {
                return false;
            }
        }
        m.headers
            .iter()
            .all(|h| met(&format!("h:{}", h.name), condition_key(&h.value)))
            && m.query_params
                .iter()
                .all(|q| met(&format!("q:{}", q.name), condition_key(&q.value)))
    }

    fn fill(&self, req: &mut Request, cx: &[usize]) {
        for (d, (dim, classes)) in self.dims.iter().enumerate() {
            let Some(v) = &classes[cx[d]].value else {
                continue;
            };
            match dim {
                Dim::Method => req.method = v.clone(),
                Dim::Header(n) => req.headers.push((n.clone(), v.clone())),
                Dim::Query(n) => req.query.push((n.clone(), v.clone())),
            }
        }
    }
}

fn path_pattern(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(v) => automata::literal(v),
        PathMatch::Prefix(v) => automata::element_prefix(v),
        PathMatch::RegularExpression(r) => automata::anchored(r),
    }
}

/// Paths as a request line carries them: `/` then visible characters other than `?` and `#`, any Unicode
/// scalar beyond ASCII (the router sees the path as UTF-8 text).
const PATH_UNIVERSE: &str = "/[^\\x00-\\x20\\x7f?#]*";

fn compare_host(
    cx: &HostCx<'_>,
    old: &[Entry<'_>],
    new: &[Entry<'_>],
    sigs: &mut Signatures,
    report: &mut Report,
) -> Result<(), String> {
    // Path patterns, shared between both sides.
    let mut pattern_ids: HashMap<String, usize> = HashMap::new();
    let mut patterns: Vec<String> = Vec::new();
    let mut pid = |p: &PathMatch| -> usize {
        let text = path_pattern(p);
        *pattern_ids.entry(text.clone()).or_insert_with(|| {
            patterns.push(text);
            patterns.len() - 1
        })
    };
    let old_p: Vec<usize> = old
        .iter()
        .map(|e| pid(&e.rule.matches[e.index].path))
        .collect();
    let new_p: Vec<usize> = new
        .iter()
        .map(|e| pid(&e.rule.matches[e.index].path))
        .collect();
    let universe = patterns.len();
    patterns.push(PATH_UNIVERSE.to_string());

    let all: Vec<&Entry<'_>> = old.iter().chain(new.iter()).collect();
    let conds = Conditions::new(&all)?;
    let n_contexts = conds.contexts(cx.limits.max_contexts)?;
    let contexts: Vec<Vec<usize>> = (0..n_contexts).map(|i| conds.context(i)).collect();
    // holds[side][entry][context]
    let holds = |entries: &[Entry<'_>]| -> Vec<Vec<bool>> {
        entries
            .iter()
            .map(|e| contexts.iter().map(|c| conds.holds(e, c)).collect())
            .collect()
    };
    let old_h = holds(old);
    let new_h = holds(new);

    // Answers: Some(entry) or None (the default).
    const NOT_FOUND: &str = "404 Not Found";
    let old_sig: Vec<usize> = old.iter().map(|e| sigs.of_rule(e.rule)).collect();
    let new_sig: Vec<usize> = new.iter().map(|e| sigs.of_rule(e.rule)).collect();
    let old_def = match cx.old_default {
        Some(r) => sigs.of_rule(r),
        None => sigs.intern(NOT_FOUND.into()),
    };
    let new_def = match cx.new_default {
        Some(r) => sigs.of_rule(r),
        None => sigs.intern(NOT_FOUND.into()),
    };

    // What this comparison depends on: the patterns and conditions of both sides in order, and what they do.
    let key = {
        let side = |entries: &[Entry<'_>], p: &[usize], sig: &[usize]| -> String {
            entries
                .iter()
                .zip(p.iter().zip(sig))
                .map(|(e, (p, s))| {
                    let m = &e.rule.matches[e.index];
                    format!(
                        "{p}:{s}:{:?}:{:?}:{:?};",
                        m.method, m.headers, m.query_params
                    )
                })
                .collect()
        };
        let (a, b) = (side(old, &old_p, &old_sig), side(new, &new_p, &new_sig));
        // The same conditions, tried in the same order, doing the same things: the same answer to every request,
        // without building an automaton.
        if a == b && old_def == new_def {
            return Ok(());
        }
        format!("{}|{a}|{b}|{old_def}|{new_def}", patterns.join("\u{0}"))
    };
    if sigs.equivalent.contains(&key) {
        return Ok(());
    }
    let dfa = MultiDfa::new(&patterns)?;
    let mut seen_pairs: BTreeSet<(Option<usize>, Option<usize>)> = BTreeSet::new();
    let mut found = 0usize;
    let mut memo: HashMap<Vec<bool>, ()> = HashMap::new();
    let first = |entries_p: &[usize], h: &[Vec<bool>], met: &[bool], c: usize| -> Option<usize> {
        (0..entries_p.len()).find(|&i| met[entries_p[i]] && h[i][c])
    };
    dfa.walk(|met, witness| {
        if !met[universe] || memo.insert(met.to_vec(), ()).is_some() {
            return true;
        }
        for (ci, c) in contexts.iter().enumerate() {
            let a = first(&old_p, &old_h, met, ci);
            let b = first(&new_p, &new_h, met, ci);
            let sa = a.map_or(old_def, |i| old_sig[i]);
            let sb = b.map_or(new_def, |i| new_sig[i]);
            if sa == sb || !seen_pairs.insert((a, b)) {
                continue;
            }
            found += 1;
            if found > cx.limits.max_examples_per_host {
                report.more_differences += 1;
                continue;
            }
            let mut req = Request {
                address: cx.address,
                port: cx.port,
                scheme: cx.scheme,
                host: cx.host.to_string(),
                path: String::from_utf8_lossy(witness).into_owned(),
                method: "GET".into(),
                headers: vec![],
                query: vec![],
            };
            conds.fill(&mut req, c);
            let answer = |e: Option<&Entry<'_>>, def: Option<&HttpRule>| match (e, def) {
                (Some(e), _) => Answer {
                    rule: Some(e.rule.origin.to_string()),
                    does: describe(e.rule),
                },
                (None, Some(d)) => Answer {
                    rule: Some(d.origin.to_string()),
                    does: describe(d),
                },
                (None, None) => Answer {
                    rule: None,
                    does: NOT_FOUND.into(),
                },
            };
            report.differences.push(Difference {
                request: req,
                old: answer(a.map(|i| &old[i]), cx.old_default),
                new: answer(b.map(|i| &new[i]), cx.new_default),
            });
        }
        true
    })?;
    if found == 0 {
        sigs.equivalent.insert(key);
    }
    Ok(())
}

fn escape_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for ch in p.chars() {
        if ch.is_ascii_graphic() {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;

/// The TLS routes of a listener (empty unless it is a TLS listener).
pub(crate) fn tls_routes(l: &crate::model::Listener) -> &[crate::model::TlsRoute] {
    match &l.kind {
        crate::model::ListenerKind::Tls(t) => &t.routes,
        _ => &[],
    }
}
