//! The conformance material in `shared/conformance/gateway-api/` (see its README): the derived cases, the test
//! list, the status-only tests and the feature table, as typed values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// One HTTP/HTTPS/WebSocket case of `cases.jsonl` (schema: the README's "`gateway-api/cases.jsonl` schema").
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    /// `<test>/<NNN>`, in execution order within the test.
    pub id: String,
    /// The ConformanceTest `ShortName`.
    pub test: String,
    /// The `t.Run` path.
    #[serde(default, deserialize_with = "null_default")]
    pub subtest: String,
    /// All YAML files of the test, relative to `gateway-api/`.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<String>,
    /// The test's SupportedFeature names.
    #[serde(default, deserialize_with = "null_default")]
    pub features: Vec<String>,
    /// The test is marked Provisional upstream.
    #[serde(default, deserialize_with = "null_default")]
    pub provisional: bool,
    /// `http` (also for https) or `websocket`.
    #[serde(default, deserialize_with = "null_default")]
    pub kind: String,
    /// `namespace/name` of the Gateway whose address the Go test used.
    pub gateway: String,
    /// Listener names passed to `NewGatewayRef`.
    #[serde(default, deserialize_with = "null_default")]
    pub gateway_listeners: Vec<String>,
    /// The port the Go test put in the gateway address (`None`: an address without port).
    pub gateway_port: Option<u16>,
    /// `http` or `https`.
    pub scheme: String,
    /// The (logical, manifest) port to dial.
    pub connect_port: u16,
    /// For https: SNI and the trusted / presented certificates.
    #[serde(default)]
    pub tls: Option<CaseTls>,
    /// The request to send.
    pub request: CaseRequest,
    /// What the backend must see (`None`: the request itself).
    #[serde(default)]
    pub expected_request: Option<ExpectedRequest>,
    /// Prefix of the answering pod name.
    #[serde(default)]
    pub backend: Option<String>,
    /// The echo `namespace` (only checked on 200/204).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Acceptable statuses and response header checks (`None` for `expect_failure` cases).
    #[serde(default)]
    pub response: Option<ExpectedResponse>,
    /// Redirect checks on `Location`.
    #[serde(default)]
    pub redirect: Option<ExpectedRedirect>,
    /// Response headers the echo server is asked to add.
    #[serde(default)]
    pub backend_set_response_headers: Option<BTreeMap<String, String>>,
    /// Backends that must receive a copy of the request.
    #[serde(default)]
    pub mirrored_to: Option<Vec<MirrorTarget>>,
    /// Expected traffic share per backend.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// The request must not succeed (see `expect_failure_mode`).
    #[serde(default, deserialize_with = "null_default")]
    pub expect_failure: bool,
    /// `http_non_200` or `tls`.
    #[serde(default)]
    pub expect_failure_mode: Option<String>,
    /// Go appended a request id query parameter.
    #[serde(default, deserialize_with = "null_default")]
    pub adds_request_id_query: bool,
    /// World changes to make before this case.
    #[serde(default, deserialize_with = "null_default")]
    pub after_state_changes: Vec<String>,
    /// Hand-written semantics.
    #[serde(default)]
    pub notes: Option<String>,
    /// `CompareRoundTrip` when the case came from a custom loop.
    #[serde(default)]
    pub via: Option<String>,
    /// The WebSocket exchange (kind `websocket`).
    #[serde(default)]
    pub websocket: Option<WebsocketSpec>,
    /// Go file:line of the assertion.
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
}

/// `tls` of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseTls {
    /// SNI.
    pub server_name: String,
    /// `secret:ns/name:key` or `configmap:ns/name:key` of the PEM the client trusts.
    pub trust_ca: String,
    /// `secret:ns/name:tls.crt` of the client certificate to present.
    #[serde(default)]
    pub client_certificate: Option<String>,
}

/// `request` of a case.
#[derive(Clone, Debug, Deserialize)]
pub struct CaseRequest {
    /// The Host header (`None`: the gateway address).
    #[serde(default)]
    pub host: Option<String>,
    /// Default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// Sent verbatim.
    pub path_and_query: String,
    /// `{name: value}`, one value each.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// `HTTPS`, `H2`, `H2C_PRIOR_KNOWLEDGE`, `WebSocket`; absent = HTTP/1.1.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Do not follow redirects (the harness never follows them).
    #[serde(default, deserialize_with = "null_default")]
    pub unfollow_redirect: bool,
    /// Request body, rarely used.
    #[serde(default)]
    pub body: Option<String>,
    /// For backend-TLS cases: the SNI the backend must see when `expected_request` is `None`.
    #[serde(default)]
    pub sni: Option<String>,
}

/// `expected_request` of a case.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExpectedRequest {
    /// `None`/empty: not checked.
    #[serde(default)]
    pub host: Option<String>,
    /// Default GET.
    #[serde(default)]
    pub method: Option<String>,
    /// The echoed `path` (raw request URI).
    #[serde(default, deserialize_with = "null_default")]
    pub path_and_query: String,
    /// Headers the backend must see with exactly these values.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Headers the backend must not see.
    #[serde(default)]
    pub absent_headers: Option<Vec<String>>,
    /// SNI the backend must see (backend TLS).
    #[serde(default)]
    pub sni: Option<String>,
    /// Reference of the client certificate the backend must see.
    #[serde(default)]
    pub client_cert: Option<String>,
}

/// `response` of a case.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExpectedResponse {
    /// Acceptable status codes.
    #[serde(default, deserialize_with = "null_default")]
    pub status: Vec<u16>,
    /// Exact header values.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Header must equal one of the values.
    #[serde(default)]
    pub valid_header_values: Option<BTreeMap<String, Vec<String>>>,
    /// Headers that must be absent.
    #[serde(default)]
    pub absent_headers: Option<Vec<String>>,
    /// Strip spaces before comparing header values.
    #[serde(default, deserialize_with = "null_default")]
    pub ignore_whitespace: bool,
    /// Expected response protocol, e.g. `HTTP/2.0`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// `redirect` of a case.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExpectedRedirect {
    /// `None`: must equal the request scheme.
    #[serde(default)]
    pub scheme: Option<String>,
    /// `None`: not checked.
    #[serde(default)]
    pub hostname: Option<String>,
    /// `None`: absent or the scheme's default port.
    #[serde(default)]
    pub port: Option<String>,
    /// `None`: must equal the request path without query.
    #[serde(default)]
    pub path: Option<String>,
    /// The redirect status (same as `response.status`).
    #[serde(default, deserialize_with = "null_default")]
    pub status: Vec<u16>,
}

/// One entry of `mirrored_to`.
#[derive(Clone, Debug, Deserialize)]
pub struct MirrorTarget {
    /// Service (= Deployment) name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Percentage mirrors: the share of requests to mirror.
    #[serde(default)]
    pub percent: Option<f64>,
}

/// `websocket` of a case.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WebsocketSpec {
    /// Text message to send.
    #[serde(default)]
    pub send_text: Option<String>,
    /// Text expected back.
    #[serde(default)]
    pub expect_text_echo: Option<String>,
    /// Binary message to send, hex.
    #[serde(default)]
    pub send_binary_hex: Option<String>,
    /// Binary expected back, hex.
    #[serde(default)]
    pub expect_binary_echo_hex: Option<String>,
}

/// One entry of `tests.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct TestInfo {
    /// ShortName.
    pub test: String,
    /// Upstream Go file.
    #[serde(default, deserialize_with = "null_default")]
    pub file: String,
    /// Manifests, relative to `gateway-api/`.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<String>,
    /// SupportedFeatures.
    #[serde(default, deserialize_with = "null_default")]
    pub features: Vec<String>,
    /// Provisional upstream.
    #[serde(default, deserialize_with = "null_default")]
    pub provisional: bool,
    /// Upstream description.
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    /// Number of HTTP cases.
    #[serde(default, deserialize_with = "null_default")]
    pub cases: usize,
    /// Number of gRPC cases.
    #[serde(default, deserialize_with = "null_default")]
    pub grpc_cases: usize,
    /// Number of L4 cases.
    #[serde(default, deserialize_with = "null_default")]
    pub l4_cases: usize,
}

/// A GRPCRoute case of `grpc_cases.jsonl` (README "`grpc_cases.jsonl`").
#[derive(Clone, Debug, Deserialize)]
pub struct GrpcCase {
    /// `<test>/<NNN>`.
    pub id: String,
    /// The ConformanceTest `ShortName`.
    pub test: String,
    /// The `t.Run` path.
    #[serde(default, deserialize_with = "null_default")]
    pub subtest: String,
    /// All YAML files of the test, relative to `gateway-api/`.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<String>,
    /// The test's SupportedFeature names.
    #[serde(default, deserialize_with = "null_default")]
    pub features: Vec<String>,
    /// `namespace/name` of the Gateway whose address the Go test used.
    pub gateway: String,
    /// The port in the Go test's gateway address (its `:authority` when the case sets none).
    pub gateway_port: Option<u16>,
    /// The (manifest) port to dial.
    pub connect_port: u16,
    /// The RPC.
    pub grpc: GrpcSpec,
    /// Prefix of the answering pod name (checked when the code is OK).
    #[serde(default)]
    pub backend: Option<String>,
    /// The answering pod's namespace (checked when non-empty and the code is OK).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Expected traffic share per backend.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// Any non-OK status is expected.
    #[serde(default, deserialize_with = "null_default")]
    pub expect_failure: bool,
    /// World changes to make before this case.
    #[serde(default, deserialize_with = "null_default")]
    pub after_state_changes: Vec<String>,
    /// Go file:line of the assertion.
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
}

/// `grpc` of a gRPC case.
#[derive(Clone, Debug, Deserialize)]
pub struct GrpcSpec {
    /// The full method path, e.g. `/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo`.
    pub method: String,
    /// `:authority` (`None`: the gateway address, as the Go client dials it).
    #[serde(default)]
    pub authority: Option<String>,
    /// Request metadata (Go's `metadata.New` lower-cases the keys).
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The expected gRPC status code (`None` for `expect_failure` cases).
    #[serde(default)]
    pub expected_code: Option<i32>,
    /// Its name, for reports.
    #[serde(default, deserialize_with = "null_default")]
    pub expected_code_name: String,
}

/// An L4 case of `l4_cases.jsonl` (README "`l4_cases.jsonl`").
#[derive(Clone, Debug, Deserialize)]
pub struct L4Case {
    /// `<test>/<NNN>`.
    pub id: String,
    /// The ConformanceTest `ShortName`.
    pub test: String,
    /// The `t.Run` path.
    #[serde(default, deserialize_with = "null_default")]
    pub subtest: String,
    /// All YAML files of the test, relative to `gateway-api/`.
    #[serde(default, deserialize_with = "null_default")]
    pub manifests: Vec<String>,
    /// The test's SupportedFeature names.
    #[serde(default, deserialize_with = "null_default")]
    pub features: Vec<String>,
    /// `tcp`, `tcp_echo`, `udp_echo`, `udp_dns` or `tls_connection_rejected`.
    pub kind: String,
    /// `namespace/name` of the Gateway whose address the Go test used.
    pub gateway: String,
    /// The (manifest) port to dial.
    pub connect_port: u16,
    /// What to check (`None`: any answer).
    #[serde(default)]
    pub l4: Option<L4Expect>,
    /// `tcp`: dial with TLS.
    #[serde(default, deserialize_with = "null_default")]
    pub use_tls: bool,
    /// `tcp` with TLS: the SNI.
    #[serde(default)]
    pub server_name: Option<String>,
    /// `tcp` with TLS: `configmap:ns/name:key` or `secret:ns/name:key` of the PEM the client trusts.
    #[serde(default)]
    pub trust_ca: Option<String>,
    /// `tls_connection_rejected`: the SNI.
    #[serde(default)]
    pub tls: Option<L4Tls>,
    /// Expected traffic share per backend.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// Hand-written semantics.
    #[serde(default)]
    pub notes: Option<String>,
    /// World changes to make before this case.
    #[serde(default, deserialize_with = "null_default")]
    pub after_state_changes: Vec<String>,
    /// Go file:line of the assertion.
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
}

/// `l4` of an L4 case: the upstream `tcp.ExpectedResponse` / `udp.ExpectedResponse` fields, and the DNS name.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct L4Expect {
    /// `tcp`: the answer to `IS_TLS` (the backend saw TLS).
    #[serde(rename = "BackendIsTLS", default, deserialize_with = "null_default")]
    pub backend_is_tls: bool,
    /// `tcp`: the pod name must start with `<Backend>-`.
    #[serde(rename = "Backend", default)]
    pub backend: Option<String>,
    /// The namespace the backend reports.
    #[serde(rename = "Namespace", default)]
    pub namespace: Option<String>,
    /// `tcp`: the SNI the backend saw (checked when non-empty).
    #[serde(rename = "Hostname", default)]
    pub hostname: Option<String>,
    /// `udp_echo`: the `service` the backend reports (checked when non-empty).
    #[serde(rename = "Service", default)]
    pub service: Option<String>,
    /// `udp_dns`: the name of the `A` query.
    #[serde(rename = "dns_query_A", default)]
    pub dns_query_a: Option<String>,
}

/// `tls` of a `tls_connection_rejected` case.
#[derive(Clone, Debug, Deserialize)]
pub struct L4Tls {
    /// SNI.
    pub server_name: String,
}

/// The case files a run covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suite {
    /// `cases.jsonl`: HTTP, HTTPS and WebSocket.
    Http,
    /// `grpc_cases.jsonl`.
    Grpc,
    /// `l4_cases.jsonl`: TCP, TLS over TCP, UDP, DNS.
    L4,
}

impl Suite {
    /// Every suite.
    pub const ALL: [Suite; 3] = [Suite::Http, Suite::Grpc, Suite::L4];

    /// `http`, `grpc` or `l4`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::Http => "http",
            Suite::Grpc => "grpc",
            Suite::L4 => "l4",
        }
    }

    /// Parses a comma-separated list (`http,grpc,l4`; `all` = every suite), without duplicates, in
    /// [`Suite::ALL`] order.
    pub fn parse_list(s: &str) -> Result<Vec<Suite>, String> {
        let mut out = Vec::new();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let add: &[Suite] = match word {
                "http" => &[Suite::Http],
                "grpc" => &[Suite::Grpc],
                "l4" => &[Suite::L4],
                "all" => &Suite::ALL,
                other => {
                    return Err(format!(
                        "unknown suite {other:?} (expected http, grpc, l4 or all)"
                    ))
                }
            };
            out.extend_from_slice(add);
        }
        if out.is_empty() {
            return Err("no suite given (expected http, grpc, l4 or all)".to_string());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// A case of any of the three files.
#[derive(Clone, Debug)]
pub enum AnyCase {
    /// From `cases.jsonl`.
    Http(Box<Case>),
    /// From `grpc_cases.jsonl`.
    Grpc(Box<GrpcCase>),
    /// From `l4_cases.jsonl`.
    L4(Box<L4Case>),
}

impl AnyCase {
    /// Case id.
    pub fn id(&self) -> &str {
        match self {
            AnyCase::Http(c) => &c.id,
            AnyCase::Grpc(c) => &c.id,
            AnyCase::L4(c) => &c.id,
        }
    }

    /// Test ShortName.
    pub fn test(&self) -> &str {
        match self {
            AnyCase::Http(c) => &c.test,
            AnyCase::Grpc(c) => &c.test,
            AnyCase::L4(c) => &c.test,
        }
    }

    /// SupportedFeatures.
    pub fn features(&self) -> &[String] {
        match self {
            AnyCase::Http(c) => &c.features,
            AnyCase::Grpc(c) => &c.features,
            AnyCase::L4(c) => &c.features,
        }
    }

    /// World changes to make before the case.
    pub fn after_state_changes(&self) -> &[String] {
        match self {
            AnyCase::Http(c) => &c.after_state_changes,
            AnyCase::Grpc(c) => &c.after_state_changes,
            AnyCase::L4(c) => &c.after_state_changes,
        }
    }

    /// Expected traffic shares, if the case checks a distribution.
    pub fn weights(&self) -> Option<&BTreeMap<String, f64>> {
        match self {
            AnyCase::Http(c) => c.weights.as_ref(),
            AnyCase::Grpc(c) => c.weights.as_ref(),
            AnyCase::L4(c) => c.weights.as_ref(),
        }
    }

    /// The file it comes from.
    pub fn suite(&self) -> Suite {
        match self {
            AnyCase::Http(_) => Suite::Http,
            AnyCase::Grpc(_) => Suite::Grpc,
            AnyCase::L4(_) => Suite::L4,
        }
    }
}

/// Level and channel of a SupportedFeature (`features.json` → `per_feature`).
#[derive(Clone, Debug, Deserialize)]
pub struct FeatureInfo {
    /// Core / Extended.
    #[serde(default, deserialize_with = "null_default")]
    pub level: String,
    /// standard / experimental.
    #[serde(default, deserialize_with = "null_default")]
    pub channel: String,
}

#[derive(Deserialize)]
struct FeaturesFile {
    per_feature: BTreeMap<String, FeatureInfo>,
}

#[derive(Clone, Debug, Deserialize)]
struct SkippedEntry {
    test: String,
}

/// Everything the harness reads from the conformance folder.
#[derive(Clone, Debug)]
pub struct Conformance {
    /// The `gateway-api/` folder.
    pub root: PathBuf,
    /// The 400 HTTP cases, file order.
    pub cases: Vec<Case>,
    /// The gRPC cases, file order.
    pub grpc_cases: Vec<GrpcCase>,
    /// The L4 cases, file order.
    pub l4_cases: Vec<L4Case>,
    /// All tests.
    pub tests: Vec<TestInfo>,
    /// ShortNames of the status-only tests (`skipped.json`).
    pub status_only: Vec<String>,
    /// Level/channel per feature.
    pub features: BTreeMap<String, FeatureInfo>,
}

impl Conformance {
    /// Reads the folder (`.../shared/conformance/gateway-api`).
    pub fn load(root: &Path) -> anyhow::Result<Conformance> {
        let read = |name: &str| -> anyhow::Result<String> {
            let path = root.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let cases: Vec<Case> = parse_jsonl(&read("cases.jsonl")?, "cases.jsonl")?;
        let grpc_cases = parse_jsonl(&read("grpc_cases.jsonl")?, "grpc_cases.jsonl")?;
        let l4_cases = parse_jsonl(&read("l4_cases.jsonl")?, "l4_cases.jsonl")?;
        let tests: Vec<TestInfo> =
            serde_json::from_str(&read("tests.json")?).context("parsing tests.json")?;
        let skipped: Vec<SkippedEntry> =
            serde_json::from_str(&read("skipped.json")?).context("parsing skipped.json")?;
        let features: FeaturesFile =
            serde_json::from_str(&read("features.json")?).context("parsing features.json")?;
        if cases.is_empty() || tests.is_empty() {
            bail!("{}: no cases or no tests", root.display());
        }
        Ok(Conformance {
            root: root.to_path_buf(),
            cases,
            grpc_cases,
            l4_cases,
            tests,
            status_only: skipped.into_iter().map(|s| s.test).collect(),
            features: features.per_feature,
        })
    }

    /// The test entry with this ShortName.
    pub fn test(&self, name: &str) -> Option<&TestInfo> {
        self.tests.iter().find(|t| t.test == name)
    }

    /// The HTTP cases of a test, in id order.
    pub fn cases_of(&self, test: &str) -> Vec<&Case> {
        let mut cases: Vec<&Case> = self.cases.iter().filter(|c| c.test == test).collect();
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        cases
    }

    /// The cases of a test from the given suites, in id order.
    pub fn all_cases_of(&self, test: &str, suites: &[Suite]) -> Vec<AnyCase> {
        let mut out: Vec<AnyCase> = Vec::new();
        if suites.contains(&Suite::Http) {
            out.extend(
                self.cases
                    .iter()
                    .filter(|c| c.test == test)
                    .cloned()
                    .map(|c| AnyCase::Http(Box::new(c))),
            );
        }
        if suites.contains(&Suite::Grpc) {
            out.extend(
                self.grpc_cases
                    .iter()
                    .filter(|c| c.test == test)
                    .cloned()
                    .map(|c| AnyCase::Grpc(Box::new(c))),
            );
        }
        if suites.contains(&Suite::L4) {
            out.extend(
                self.l4_cases
                    .iter()
                    .filter(|c| c.test == test)
                    .cloned()
                    .map(|c| AnyCase::L4(Box::new(c))),
            );
        }
        out.sort_by(|a, b| a.id().cmp(b.id()));
        out
    }

    /// The number of cases of a suite.
    pub fn count(&self, suite: Suite) -> usize {
        match suite {
            Suite::Http => self.cases.len(),
            Suite::Grpc => self.grpc_cases.len(),
            Suite::L4 => self.l4_cases.len(),
        }
    }

    /// The SupportedFeatures of every case of a suite, one entry per case.
    pub fn features_of(&self, suite: Suite) -> Vec<&[String]> {
        match suite {
            Suite::Http => self.cases.iter().map(|c| c.features.as_slice()).collect(),
            Suite::Grpc => self
                .grpc_cases
                .iter()
                .map(|c| c.features.as_slice())
                .collect(),
            Suite::L4 => self
                .l4_cases
                .iter()
                .map(|c| c.features.as_slice())
                .collect(),
        }
    }
}

/// `null` reads as the type's default (the derived files use `null` for absent values).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn parse_jsonl<T: for<'de> Deserialize<'de>>(text: &str, name: &str) -> anyhow::Result<Vec<T>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{name}:{}", i + 1)))
        .collect()
}
