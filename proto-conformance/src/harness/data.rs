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

/// A gRPC or L4 case: only what the report needs (they are out of scope).
#[derive(Clone, Debug, Deserialize)]
pub struct OtherCase {
    /// Case id.
    pub id: String,
    /// Test ShortName.
    pub test: String,
    /// SupportedFeatures.
    #[serde(default, deserialize_with = "null_default")]
    pub features: Vec<String>,
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
    /// gRPC cases (out of scope, reported as skipped).
    pub grpc_cases: Vec<OtherCase>,
    /// L4 cases (out of scope, reported as skipped).
    pub l4_cases: Vec<OtherCase>,
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

/// The GATEWAY-HTTP scope of status-only tests: everything except the TLSRoute/TCPRoute/UDPRoute/GRPCRoute
/// tests (their status checks are about route kinds this harness does not exercise yet).
pub fn status_test_in_scope(test: &TestInfo) -> bool {
    let out = ["TLSRoute", "TCPRoute", "UDPRoute", "GRPCRoute"];
    !out.iter().any(|p| test.test.starts_with(p))
}
