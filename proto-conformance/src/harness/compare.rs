//! The upstream comparison rules (`conformance/utils/http/http.go` `CompareRoundTrip`, as described in the
//! conformance README "Comparison rules"), the redirect defaults, and the statistics of the weighted and
//! percentage-mirror checks. Pure functions: no I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::Captured;
use super::data::ExpectedRedirect;

/// The JSON body of echo-basic (only the fields the suite reads).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EchoBody {
    /// Raw request URI.
    pub path: String,
    /// Host header or `:authority`.
    pub host: String,
    /// Method.
    pub method: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub proto: String,
    /// Canonical header names, all values.
    pub headers: BTreeMap<String, Vec<String>>,
    /// `NAMESPACE`.
    pub namespace: String,
    /// `POD_NAME`.
    pub pod: String,
    /// On TLS connections.
    pub tls: Option<EchoTlsBody>,
}

/// The `tls` object of the echo body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EchoTlsBody {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// Client certificates, PEM.
    pub peer_certificates: Vec<String>,
    /// SNI.
    pub server_name: String,
    /// ALPN.
    pub negotiated_protocol: String,
}

impl EchoBody {
    /// The values of a request header as the backend saw it (any case), joined with `,`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.join(","))
    }
}

/// Parses the echo body when the suite would: `Content-Type` exactly `application/json`. `Ok(None)` when the
/// body is not an echo body (then every captured field is empty, as in Go).
pub fn parse_echo(res: &Captured) -> Result<Option<EchoBody>, String> {
    let ct = res.header_values("content-type");
    if ct.first().copied() != Some("application/json") {
        return Ok(None);
    }
    serde_json::from_slice(&res.body)
        .map(Some)
        .map_err(|e| format!("unexpected error reading response: {e}"))
}

/// What the backend must have seen.
#[derive(Clone, Debug, Default)]
pub struct ResolvedRequest {
    /// Checked when non-empty.
    pub host: Option<String>,
    /// Default GET.
    pub method: String,
    /// Raw request URI.
    pub path_and_query: String,
    /// `(name, value)`: present with exactly this value (several values joined by `,`).
    pub headers: Vec<(String, String)>,
    /// Must be absent.
    pub absent_headers: Vec<String>,
    /// Backend TLS: the SNI the backend saw.
    pub sni: Option<String>,
    /// Backend TLS: a client certificate the backend saw (PEM).
    pub client_cert_pem: Option<String>,
}

/// Everything one response is checked against.
#[derive(Clone, Debug, Default)]
pub struct Expectation {
    /// Acceptable statuses.
    pub statuses: Vec<u16>,
    /// The request the backend must see.
    pub expected: ResolvedRequest,
    /// Pod name prefix (`""`: any).
    pub backend: String,
    /// Echo namespace (`""`: must not be an echo body).
    pub namespace: String,
    /// Exact response header values.
    pub response_headers: Vec<(String, String)>,
    /// Response header must be one of.
    pub valid_header_values: Vec<(String, Vec<String>)>,
    /// Response headers that must be absent.
    pub response_absent: Vec<String>,
    /// Compare header values without spaces.
    pub ignore_whitespace: bool,
    /// Expected response protocol (`HTTP/2.0`).
    pub protocol: Option<String>,
    /// Redirect checks.
    pub redirect: Option<ExpectedRedirect>,
}

/// The URL the Go client used (for resolving a relative `Location` and for the redirect defaults).
#[derive(Clone, Debug)]
pub struct SentRequest {
    /// `http` / `https`.
    pub scheme: String,
    /// `host[:port]` of the URL (Go's `CalculateHost`: no port when it is the scheme's default).
    pub url_host: String,
    /// Path without query.
    pub path: String,
}

/// `roundtripper.IsTimeoutError`.
pub fn is_timeout_status(code: u16) -> bool {
    code == 408 || code == 504
}

/// `roundtripper.IsRedirect`.
pub fn is_redirect_status(code: u16) -> bool {
    matches!(code, 300..=305 | 307 | 308)
}

fn norm(v: &str, ignore_ws: bool) -> String {
    if ignore_ws {
        v.chars().filter(|c| *c != ' ').collect()
    } else {
        v.to_string()
    }
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// Checks one response. `Err` describes the first mismatch the way the Go suite words it.
pub fn check_response(exp: &Expectation, sent: &SentRequest, res: &Captured) -> Result<(), String> {
    if is_timeout_status(res.status) && exp.statuses.iter().any(|s| is_timeout_status(*s)) {
        return Ok(());
    }
    if !exp.statuses.contains(&res.status) {
        return Err(format!(
            "expected status code to be one of {:?}, got {}",
            exp.statuses, res.status
        ));
    }
    if let Some(proto) = &exp.protocol {
        if &res.version != proto {
            return Err(format!(
                "expected response protocol {proto}, got {}",
                res.version
            ));
        }
    }
    if res.status == 200 || res.status == 204 {
        return check_echo(exp, res);
    }
    if is_redirect_status(res.status) {
        if let Some(redirect) = &exp.redirect {
            return check_redirect(redirect, sent, res);
        }
    }
    Ok(())
}

fn check_echo(exp: &Expectation, res: &Captured) -> Result<(), String> {
    let echo = parse_echo(res)?.unwrap_or_default();
    let e = &exp.expected;
    if let Some(host) = e.host.as_deref().filter(|h| !h.is_empty()) {
        if host != echo.host {
            return Err(format!(
                "expected host to be {host}, got {}",
                show(&echo.host)
            ));
        }
    }
    if e.path_and_query != echo.path {
        return Err(format!(
            "expected path to be {}, got {}",
            show(&e.path_and_query),
            show(&echo.path)
        ));
    }
    // An expected request without a path stands for "the gateway answers itself" (CORS preflight); then the
    // method cannot be seen either (upstream works around the same thing: httproute-cors.go).
    if !e.path_and_query.is_empty() && e.method != echo.method {
        return Err(format!(
            "expected method to be {}, got {}",
            e.method,
            show(&echo.method)
        ));
    }
    if exp.namespace != echo.namespace {
        return Err(format!(
            "expected namespace to be {}, got {}",
            show(&exp.namespace),
            show(&echo.namespace)
        ));
    }
    for (name, want) in &e.headers {
        match echo.header(name) {
            None => {
                return Err(format!(
                    "expected {name} header to be set, actual headers: {}",
                    fmt_headers(&echo.headers)
                ))
            }
            Some(got) if &got != want => {
                return Err(format!(
                    "expected {name} header to be set to {want}, got {got}"
                ))
            }
            Some(_) => {}
        }
    }
    for (name, want) in &exp.response_headers {
        match res.header(name) {
            None => {
                return Err(format!(
                    "expected {name} response header to be set, actual headers: {}",
                    fmt_pairs(&res.headers)
                ))
            }
            Some(got) => {
                if norm(&got, exp.ignore_whitespace) != norm(want, exp.ignore_whitespace) {
                    return Err(format!(
                        "expected {name} response header to be set to {want}, got {got}"
                    ));
                }
            }
        }
    }
    for (name, valid) in &exp.valid_header_values {
        match res.header(name) {
            None => {
                return Err(format!(
                "expected {name} response header to be set (one of {valid:?}), actual headers: {}",
                fmt_pairs(&res.headers)
            ))
            }
            Some(got) => {
                let got_n = norm(&got, exp.ignore_whitespace);
                if !valid
                    .iter()
                    .any(|v| norm(v, exp.ignore_whitespace) == got_n)
                {
                    return Err(format!(
                        "expected {name} response header to be one of {valid:?}, got {got}"
                    ));
                }
            }
        }
    }
    for name in &exp.response_absent {
        if let Some(got) = res.header(name) {
            return Err(format!(
                "expected {name} response header to not be set, got {got}"
            ));
        }
    }
    for name in &e.absent_headers {
        if let Some(got) = echo.header(name) {
            return Err(format!("expected {name} header to not be set, got {got}"));
        }
    }
    if !echo.pod.starts_with(&exp.backend) {
        return Err(format!(
            "expected pod name to start with {}, got {}",
            exp.backend,
            show(&echo.pod)
        ));
    }
    if let Some(sni) = &e.sni {
        match &echo.tls {
            None => {
                return Err(format!(
                    "expected the backend to see a TLS connection with SNI {sni}, got a cleartext request"
                ))
            }
            Some(t) if &t.server_name != sni => {
                return Err(format!(
                    "expected backend SNI {sni}, got {}",
                    show(&t.server_name)
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(cert) = &e.client_cert_pem {
        let want = pem_body(cert);
        let seen = echo
            .tls
            .as_ref()
            .map(|t| {
                t.peer_certificates
                    .iter()
                    .map(|c| pem_body(c))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !seen.contains(&want) {
            return Err(format!(
                "expected the backend to see the Gateway's client certificate, it saw {} certificate(s)",
                seen.len()
            ));
        }
    }
    Ok(())
}

fn show(s: &str) -> String {
    if s.is_empty() {
        "\"\" (no echo body)".to_string()
    } else {
        s.to_string()
    }
}

fn fmt_headers(h: &BTreeMap<String, Vec<String>>) -> String {
    let parts: Vec<String> = h
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.join(",")))
        .collect();
    format!("{{{}}}", parts.join("; "))
}

fn fmt_pairs(h: &[(String, String)]) -> String {
    let parts: Vec<String> = h.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", parts.join("; "))
}

/// The parts of a redirect target the suite compares (Go's `url.URL` after `resp.Location()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Scheme.
    pub scheme: String,
    /// Host name without port (`URL.Hostname()`).
    pub hostname: String,
    /// Port, `""` if none (`URL.Port()`).
    pub port: String,
    /// Decoded path (`URL.Path`).
    pub path: String,
}

fn split_host_port(authority: &str) -> (String, String) {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some(rest) = host_port.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').unwrap_or("");
            return (h.to_string(), port.to_string());
        }
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h.to_string(), p.to_string()),
        _ => (host_port.to_string(), String::new()),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Resolves a `Location` header against the request URL (`scheme://base_host/base_path`), like Go's
/// `resp.Location()`.
pub fn resolve_location(
    base_scheme: &str,
    base_host: &str,
    base_path: &str,
    location: &str,
) -> Result<Location, String> {
    let loc = location.trim();
    if loc.is_empty() {
        return Err("empty Location header".to_string());
    }
    let loc = loc.split('#').next().unwrap_or("");
    let scheme_end = loc.find(':').filter(|&i| {
        i > 0
            && loc[..i].bytes().enumerate().all(|(j, b)| {
                b.is_ascii_alphabetic() || (j > 0 && (b.is_ascii_digit() || b"+-.".contains(&b)))
            })
    });
    let (scheme, rest) = match scheme_end {
        Some(i) => (loc[..i].to_ascii_lowercase(), &loc[i + 1..]),
        None => (base_scheme.to_string(), loc),
    };
    let (authority, path_query) = if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        (after[..end].to_string(), &after[end..])
    } else {
        (base_host.to_string(), rest)
    };
    let raw_path = path_query.split('?').next().unwrap_or("");
    let path = if raw_path.starts_with('/') || raw_path.is_empty() && rest.starts_with("//") {
        raw_path.to_string()
    } else if raw_path.is_empty() {
        base_path.to_string()
    } else {
        // A relative reference: merge with the base path's directory.
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{raw_path}")
    };
    let (hostname, port) = split_host_port(&authority);
    Ok(Location {
        scheme,
        hostname,
        port,
        path: percent_decode(&path),
    })
}

fn check_redirect(
    exp: &ExpectedRedirect,
    sent: &SentRequest,
    res: &Captured,
) -> Result<(), String> {
    let Some(location) = res.header_values("location").first().map(|s| s.to_string()) else {
        return Err(format!("{} redirect without a Location header", res.status));
    };
    let got = resolve_location(&sent.scheme, &sent.url_host, &sent.path, &location)?;
    check_location(exp, sent, &got).map_err(|e| format!("{e} (Location: {location})"))
}

/// Compares a resolved `Location` with the expected redirect, filling the defaults the suite fills
/// (`setRedirectRequestDefaults`): no expected host → not checked; no expected scheme → the request's; no
/// expected path → the request's path; no expected port → absent or the scheme's default.
pub fn check_location(
    exp: &ExpectedRedirect,
    sent: &SentRequest,
    got: &Location,
) -> Result<(), String> {
    let want_host = exp.hostname.clone().unwrap_or_else(|| got.hostname.clone());
    if want_host != got.hostname {
        return Err(format!(
            "expected redirected hostname to be {want_host:?}, got {:?}",
            got.hostname
        ));
    }
    match exp.port.as_deref().filter(|p| !p.is_empty()) {
        None => {
            let scheme = got.scheme.to_ascii_lowercase();
            if scheme == "http" && !matches!(got.port.as_str(), "" | "80") {
                return Err(format!(
                    "for http scheme, expected redirected port to be 80 or not set, got {:?}",
                    got.port
                ));
            }
            if scheme == "https" && !matches!(got.port.as_str(), "" | "443") {
                return Err(format!(
                    "for https scheme, expected redirected port to be 443 or not set, got {:?}",
                    got.port
                ));
            }
        }
        Some(port) => {
            if port != got.port {
                return Err(format!(
                    "expected redirected port to be {port:?}, got {:?}",
                    got.port
                ));
            }
        }
    }
    let want_scheme = exp.scheme.clone().unwrap_or_else(|| sent.scheme.clone());
    if want_scheme != got.scheme {
        return Err(format!(
            "expected redirected scheme to be {want_scheme:?}, got {:?}",
            got.scheme
        ));
    }
    let want_path = exp.path.clone().unwrap_or_else(|| sent.path.clone());
    if want_path != got.path {
        return Err(format!(
            "expected redirected path to be {want_path:?}, got {:?}",
            got.path
        ));
    }
    Ok(())
}

/// The backend (Deployment) of a pod name: the name without its last two `-` parts (upstream
/// `extractBackendName`; names with fewer than three parts are returned whole).
pub fn backend_of_pod(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() < 3 {
        pod.to_string()
    } else {
        parts[..parts.len() - 2].join("-")
    }
}

/// Absolute tolerance of the weighted-distribution check.
pub const WEIGHT_TOLERANCE: f64 = 0.05;

/// Upstream `TestWeightedDistribution` on observed counts: exactly the backends with weight > 0 received
/// traffic, and each backend's share is within ±0.05 of its weight. Unexpected backends must be rejected by
/// the caller as they are seen (upstream fails the whole run on the first one).
pub fn check_weights(
    seen: &BTreeMap<String, usize>,
    total: usize,
    expected: &BTreeMap<String, f64>,
) -> Result<(), String> {
    let mut errs = Vec::new();
    if let Some(unexpected) = seen.keys().find(|b| !expected.contains_key(*b)) {
        errs.push(format!(
            "request was handled by an unexpected backend {unexpected:?}"
        ));
    }
    let active = expected.values().filter(|w| **w > 0.0).count();
    let seen_expected = seen.keys().filter(|b| expected.contains_key(*b)).count();
    if seen_expected != active {
        errs.push(format!(
            "expected {active} backends to receive traffic, but got {seen_expected}"
        ));
    }
    for (backend, want) in expected {
        let got = seen.get(backend).copied();
        if got.is_none() && *want != 0.0 {
            errs.push(format!(
                "expect traffic to hit backend {backend:?} - but none was received"
            ));
            continue;
        }
        let share = got.unwrap_or(0) as f64 / total.max(1) as f64;
        if (share - want).abs() > WEIGHT_TOLERANCE {
            errs.push(format!(
                "backend {backend:?} weighted traffic of {share:.3} not within tolerance {want} (+/-{WEIGHT_TOLERANCE})"
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        errs.sort();
        Err(errs.join("; "))
    }
}

/// The accepted range of mirrored requests out of `n` for a mirror percentage: expected ± 3 standard
/// deviations of Binomial(n, percent/100), clamped to `0..=n`.
pub fn mirror_count_bounds(n: usize, percent: f64) -> (f64, f64) {
    let p = (percent / 100.0).clamp(0.0, 1.0);
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    ((mean - 3.0 * sd).max(0.0), (mean + 3.0 * sd).min(n as f64))
}
