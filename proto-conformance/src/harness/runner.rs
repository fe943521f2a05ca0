//! Runs test worlds: writes the manifests, starts the pods and the proxy, replays the cases with the upstream
//! eventual-consistency rules (or checks the status expectations), and tears everything down.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::certs::CertStore;
use super::client::{
    self, decode_hex, round_trip, Captured, ClientContext, Proto, RequestSpec, RtError, TlsSpec,
    WebsocketCheck,
};
use super::compare::{
    backend_of_pod, check_response, check_weights, is_timeout_status, mirror_count_bounds,
    parse_echo, Expectation, ResolvedRequest, SentRequest,
};
use super::data::{AnyCase, Case, Conformance, Suite, TestInfo};
use super::pods::{pods_of, start_pods, RunningPod};
use super::proxy::{Proxy, StatusFetch};
use super::status::{self, Action, StatusTestSpec, StatusView};
use super::util::{canonical_header_key, excerpt, uuid_v4, Rng};
use super::world::{build_world, WorldOptions, WorldPlan, CLASS_NAME};
use super::yaml::{self, at, str_at};

/// Harness settings.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `portcullis` binary.
    pub binary: PathBuf,
    /// `shared/conformance/gateway-api`.
    pub data_root: PathBuf,
    /// `proto-conformance/expected/status`.
    pub status_dir: PathBuf,
    /// Where world directories are made.
    pub work_dir: PathBuf,
    /// Worlds run at once.
    pub jobs: usize,
    /// Cases of one world run at once (tests with retries, timeouts, mirrors or weights run one at a time).
    pub case_concurrency: usize,
    /// `MaxTimeToConsistency` (30 s upstream).
    pub max_time_to_consistency: Duration,
    /// `RequiredConsecutiveSuccesses` (3 upstream).
    pub consecutive: usize,
    /// One request's time limit (`RequestTimeout`, 10 s upstream).
    pub request_timeout: Duration,
    /// First `--port-offset` to try.
    pub port_offset: u16,
    /// Give every Gateway its own loopback address (the proxy contract); off = everything on 127.0.0.1.
    pub inject_addresses: bool,
    /// The case files to run (`cases.jsonl`, `grpc_cases.jsonl`, `l4_cases.jsonl`).
    pub suites: Vec<Suite>,
    /// Only these tests (ShortNames); empty = all.
    pub tests: Vec<String>,
    /// Only these case ids; empty = all.
    pub cases: Vec<String>,
    /// Print every case as it finishes.
    pub verbose: bool,
    /// Keep world directories (manifests, proxy log).
    pub keep: bool,
}

/// How a case or status test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Pass,
    /// Failed: a one-line reason, then the details (what was sent, what came back, what was expected).
    Fail {
        /// One line.
        reason: String,
        /// Everything else.
        detail: String,
    },
    /// Not run, and why.
    Skip(String),
    /// Run as upstream would, which checks nothing: the test's body returns at once given the features the
    /// implementation claims (upstream counts it passed). Why.
    NotApplicable(String),
}

impl Outcome {
    pub(crate) fn fail(reason: impl Into<String>, detail: impl Into<String>) -> Outcome {
        Outcome::Fail {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// The result of one HTTP case.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Test ShortName.
    pub test: String,
    /// The case file it comes from.
    pub suite: Suite,
    /// Its SupportedFeatures.
    pub features: Vec<String>,
    /// What happened.
    pub outcome: Outcome,
    /// Time spent.
    pub duration: Duration,
}

impl CaseResult {
    /// A result for `case`.
    pub fn of(case: &AnyCase, outcome: Outcome, duration: Duration) -> CaseResult {
        CaseResult {
            id: case.id().to_string(),
            test: case.test().to_string(),
            suite: case.suite(),
            features: case.features().to_vec(),
            outcome,
            duration,
        }
    }
}

/// The result of one status-only test.
#[derive(Clone, Debug)]
pub struct StatusResult {
    /// ShortName.
    pub test: String,
    /// Its SupportedFeatures.
    pub features: Vec<String>,
    /// Upstream Go file.
    pub source: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default)]
pub struct RunResults {
    /// Cases of every suite run, in id order.
    pub cases: Vec<CaseResult>,
    /// Status-only tests.
    pub status: Vec<StatusResult>,
}

enum Work {
    Cases(Vec<AnyCase>),
    Status(StatusTestSpec),
}

/// Runs every selected test.
pub async fn run_all(conf: &Conformance, opts: &RunOptions) -> anyhow::Result<RunResults> {
    let certs = Arc::new(CertStore::generate().context("generating the suite's certificates")?);
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
    let mut results = RunResults::default();
    let mut work: Vec<(usize, TestInfo, Work)> = Vec::new();
    for (index, test) in conf.tests.iter().enumerate() {
        if !opts.tests.is_empty() && !opts.tests.contains(&test.test) {
            continue;
        }
        let cases: Vec<AnyCase> = conf
            .all_cases_of(&test.test, &opts.suites)
            .into_iter()
            .filter(|c| opts.cases.is_empty() || opts.cases.iter().any(|id| id == c.id()))
            .collect();
        if !cases.is_empty() {
            work.push((index, test.clone(), Work::Cases(cases)));
            continue;
        }
        if !opts.cases.is_empty() || !conf.status_only.contains(&test.test) {
            continue;
        }
        let skip = |reason: String| StatusResult {
            test: test.test.clone(),
            features: test.features.clone(),
            source: test.file.clone(),
            outcome: Outcome::Skip(reason),
        };
        let path = opts.status_dir.join(format!("{}.yaml", test.test));
        match std::fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| status::parse_spec(&t))
        {
            Ok(spec) => match &spec.skip {
                Some(reason) => results.status.push(skip(reason.clone())),
                None => work.push((index, test.clone(), Work::Status(spec))),
            },
            Err(e) => results.status.push(StatusResult {
                test: test.test.clone(),
                features: test.features.clone(),
                source: test.file.clone(),
                outcome: Outcome::fail(
                    "expectation file unreadable",
                    format!("{}: {e:#}", path.display()),
                ),
            }),
        }
    }

    let total = work.len();
    let done = Arc::new(AtomicUsize::new(0));
    let limit = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (index, test, item) in work {
        let permit_source = limit.clone();
        let certs = certs.clone();
        let opts = opts.clone();
        let conf_root = conf.root.clone();
        let done = done.clone();
        set.spawn(async move {
            let _permit = permit_source.acquire_owned().await;
            let start = Instant::now();
            let out = run_world(index, &test, item, &certs, &opts, &conf_root).await;
            let n = done.fetch_add(1, Ordering::SeqCst) + 1;
            print_progress(n, total, &test.test, &out, start.elapsed());
            out
        });
    }
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((cases, status)) => {
                results.cases.extend(cases);
                results.status.extend(status);
            }
            Err(e) => anyhow::bail!("a world task failed: {e}"),
        }
    }
    results.cases.sort_by(|a, b| a.id.cmp(&b.id));
    results.status.sort_by(|a, b| a.test.cmp(&b.test));
    Ok(results)
}

fn print_progress(
    n: usize,
    total: usize,
    test: &str,
    out: &(Vec<CaseResult>, Vec<StatusResult>),
    took: Duration,
) {
    let (cases, status) = out;
    let line = if !cases.is_empty() {
        let pass = cases.iter().filter(|c| c.outcome == Outcome::Pass).count();
        format!("{pass}/{} cases passed", cases.len())
    } else {
        match status.first().map(|s| &s.outcome) {
            Some(Outcome::Pass) => "status: pass".to_string(),
            Some(Outcome::Fail { reason, .. }) => {
                format!("status: FAIL ({})", excerpt(reason, 100))
            }
            Some(Outcome::Skip(r)) => format!("status: skip ({r})"),
            Some(Outcome::NotApplicable(r)) => format!("status: not applicable ({r})"),
            None => String::new(),
        }
    };
    eprintln!(
        "[{n:>3}/{total}] {test}: {line} ({:.1}s)",
        took.as_secs_f32()
    );
}

/// The live parts of a world, shared by its concurrent cases.
pub(crate) struct WorldRuntime {
    pub(crate) plan: Mutex<WorldPlan>,
    pub(crate) dir: PathBuf,
    pub(crate) offset: u16,
    pub(crate) pods: Vec<RunningPod>,
    pub(crate) certs: Arc<CertStore>,
    pub(crate) client: ClientContext,
    pub(crate) opts: RunOptions,
}

impl WorldRuntime {
    pub(crate) fn plan(&self) -> std::sync::MutexGuard<'_, WorldPlan> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes the world's files (atomically: temporary name, then rename, so the watcher never sees half a file).
pub fn write_world(dir: &Path, plan: &WorldPlan) -> anyhow::Result<()> {
    let mut files: Vec<(String, String)> = Vec::new();
    for f in &plan.files {
        files.push((f.file_name.clone(), yaml::to_yaml(&f.docs)?));
    }
    files.push((
        "generated.yaml".to_string(),
        yaml::to_yaml(&plan.generated)?,
    ));
    for (name, text) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        let dst = dir.join(&name);
        if std::fs::read_to_string(&dst).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    }
    Ok(())
}

fn port_free(ip: IpAddr, port: u16, offset: u16) -> bool {
    port.checked_add(offset)
        .is_some_and(|p| TcpListener::bind(SocketAddr::new(ip, p)).is_ok())
}

fn udp_port_free(ip: IpAddr, port: u16, offset: u16) -> bool {
    port.checked_add(offset)
        .is_some_and(|p| std::net::UdpSocket::bind(SocketAddr::new(ip, p)).is_ok())
}

/// Whether every port the proxy will bind is free: the listener ports of every Gateway on its address, and the
/// Ingress ports (80, 443) on `--bind-address`, which the proxy binds even without Ingresses.
fn ports_free(plan: &WorldPlan, offset: u16) -> bool {
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    [80u16, 443].iter().all(|p| port_free(local, *p, offset))
        && plan.gateways.values().all(|gw| {
            !gw.ip.is_loopback()
                || (gw.ports.iter().all(|p| port_free(gw.ip, *p, offset))
                    && gw
                        .udp_ports
                        .iter()
                        .all(|p| udp_port_free(gw.ip, *p, offset)))
        })
}

/// A `--port-offset` whose ports are free. Worlds running at the same time share 127.0.0.1 (the Ingress
/// ports), so each world starts from its own offset: `first + 100 * (index % 35)`, which keeps every port
/// (manifest ports go up to 9321) below the ephemeral range (32768).
fn choose_offset(plan: &WorldPlan, first: u16, index: usize) -> Option<u16> {
    let slots = 35usize;
    (0..slots)
        .map(|k| (index + k) % slots)
        .filter_map(|slot| first.checked_add(u16::try_from(slot * 100).ok()?))
        .find(|o| ports_free(plan, *o))
}

fn free_admin_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free admin port")?;
    l.local_addr().context("admin port")
}

async fn run_world(
    index: usize,
    test: &TestInfo,
    work: Work,
    certs: &Arc<CertStore>,
    opts: &RunOptions,
    data_root: &Path,
) -> (Vec<CaseResult>, Vec<StatusResult>) {
    let fail_all = |reason: &str, detail: String| -> (Vec<CaseResult>, Vec<StatusResult>) {
        match &work {
            Work::Cases(cases) => (
                cases
                    .iter()
                    .map(|c| {
                        CaseResult::of(c, Outcome::fail(reason, detail.clone()), Duration::ZERO)
                    })
                    .collect(),
                Vec::new(),
            ),
            Work::Status(spec) => (
                Vec::new(),
                vec![StatusResult {
                    test: test.test.clone(),
                    features: test.features.clone(),
                    source: spec.source.clone(),
                    outcome: Outcome::fail(reason, detail),
                }],
            ),
        }
    };
    let world_opts = WorldOptions {
        index,
        inject_addresses: opts.inject_addresses,
        bind_address: Ipv4Addr::LOCALHOST,
    };
    let plan = match build_world(data_root, &test.manifests, certs, &world_opts) {
        Ok(p) => p,
        Err(e) => return fail_all("harness: cannot build the world", format!("{e:#}")),
    };
    let dir = opts.work_dir.join(format!("{index:03}-{}", test.test));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| write_world(&dir, &plan))
    {
        return fail_all("harness: cannot write the world", format!("{e:#}"));
    }
    let pods = match start_pods(&plan.pods).await {
        Ok(p) => p,
        Err(e) => return fail_all("harness: cannot start the echo pods", format!("{e:#}")),
    };
    // Ports found free a moment ago can be taken by another process before the proxy binds them (other worlds,
    // other tests on the machine); a proxy that exits on a bind error is started again on other ports.
    let mut started = None;
    let mut last_error = String::new();
    for attempt in 0..3usize {
        let Some(offset) = choose_offset(&plan, opts.port_offset, index + attempt * 11) else {
            return fail_all(
                "harness: no free port offset",
                "every candidate --port-offset collides with a bound port".to_string(),
            );
        };
        let admin = match free_admin_port() {
            Ok(a) => a,
            Err(e) => return fail_all("harness: no admin port", format!("{e:#}")),
        };
        let mut proxy = match Proxy::start(
            &opts.binary,
            &dir,
            offset,
            admin,
            &dir.join("portcullis.log"),
        ) {
            Ok(p) => p,
            Err(e) => return fail_all("harness: cannot start portcullis", format!("{e:#}")),
        };
        match proxy.wait_ready(Duration::from_secs(30)).await {
            Ok(()) => {
                started = Some((proxy, offset));
                break;
            }
            Err(e) => {
                last_error = format!("{e:#}\nlast log lines:\n{}", proxy.log_tail(15));
                proxy.stop().await;
            }
        }
    }
    let Some((mut proxy, offset)) = started else {
        return fail_all("proxy did not become ready", last_error);
    };
    let rt = Arc::new(WorldRuntime {
        plan: Mutex::new(plan),
        dir: dir.clone(),
        offset,
        pods,
        certs: certs.clone(),
        client: ClientContext {
            known_sans: Arc::new(certs.dns_sans.clone()),
        },
        opts: opts.clone(),
    });
    let out = match work {
        Work::Cases(cases) => (run_cases(&rt, test, cases).await, Vec::new()),
        Work::Status(spec) => {
            let outcome = run_status(&rt, &proxy, &spec, &test.features).await;
            (
                Vec::new(),
                vec![StatusResult {
                    test: test.test.clone(),
                    features: test.features.clone(),
                    source: spec.source.clone(),
                    outcome,
                }],
            )
        }
    };
    let alive = proxy.alive();
    let tail = proxy.log_tail(10);
    proxy.stop().await;
    drop(rt);
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !alive {
        // The proxy died during the test: say so in every failure.
        let add = |o: Outcome| match o {
            Outcome::Fail { reason, detail } => Outcome::Fail {
                reason,
                detail: format!(
                    "{detail}\n(portcullis exited during the test; last log lines:\n{tail})"
                ),
            },
            other => other,
        };
        let (cases, status) = out;
        return (
            cases
                .into_iter()
                .map(|mut c| {
                    c.outcome = add(c.outcome);
                    c
                })
                .collect(),
            status
                .into_iter()
                .map(|mut s| {
                    s.outcome = add(s.outcome);
                    s
                })
                .collect(),
        );
    }
    out
}

/// Tests whose cases share backend state (retry counters, timing, mirror counts, traffic shares) run one case
/// at a time.
fn sequential_test(test: &str, cases: &[AnyCase]) -> bool {
    ["Retry", "Timeout", "Mirror", "Weight"]
        .iter()
        .any(|k| test.contains(k))
        || cases.iter().any(|c| {
            c.weights().is_some() || matches!(c, AnyCase::Http(h) if h.mirrored_to.is_some())
        })
}

async fn run_cases(
    rt: &Arc<WorldRuntime>,
    test: &TestInfo,
    cases: Vec<AnyCase>,
) -> Vec<CaseResult> {
    let concurrency = if sequential_test(&test.test, &cases) {
        1
    } else {
        rt.opts.case_concurrency.max(1)
    };
    // Segments: a case with state changes starts a new segment, run after everything before it; consecutive
    // cases after the same changes share one segment (the changes are made once).
    let mut segments: Vec<Vec<AnyCase>> = Vec::new();
    for c in cases {
        let same_changes = segments
            .last()
            .and_then(|seg| seg.last())
            .is_some_and(|prev| prev.after_state_changes() == c.after_state_changes());
        if segments.is_empty() || (!c.after_state_changes().is_empty() && !same_changes) {
            segments.push(Vec::new());
        }
        if let Some(last) = segments.last_mut() {
            last.push(c);
        }
    }
    let mut results = Vec::new();
    let mut broken_state: Option<String> = None;
    for segment in segments {
        if let Some(first) = segment.first() {
            if broken_state.is_none() && !first.after_state_changes().is_empty() {
                if let Err(e) = apply_state_changes(rt, first.after_state_changes()) {
                    broken_state = Some(e);
                }
            }
        }
        if let Some(reason) = &broken_state {
            results.extend(segment.iter().map(|c| {
                CaseResult::of(
                    c,
                    Outcome::Skip(format!("state change not supported: {reason}")),
                    Duration::ZERO,
                )
            }));
            continue;
        }
        let limit = Arc::new(Semaphore::new(concurrency));
        let mut set = tokio::task::JoinSet::new();
        for case in segment {
            let rt = rt.clone();
            let limit = limit.clone();
            set.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let start = Instant::now();
                let outcome = match &case {
                    AnyCase::Http(c) => run_case(&rt, c).await,
                    AnyCase::Grpc(c) => super::protocases::run_grpc_case(&rt, c).await,
                    AnyCase::L4(c) => super::protocases::run_l4_case(&rt, c).await,
                };
                let result = CaseResult::of(&case, outcome, start.elapsed());
                if rt.opts.verbose {
                    print_case(&result);
                }
                result
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => results.push(CaseResult {
                    id: format!("{}/?", test.test),
                    test: test.test.clone(),
                    suite: Suite::Http,
                    features: test.features.clone(),
                    outcome: Outcome::fail("harness: case task failed", e.to_string()),
                    duration: Duration::ZERO,
                }),
            }
        }
    }
    results.sort_by(|a, b| a.id.cmp(&b.id));
    results
}

pub(crate) fn print_case(r: &CaseResult) {
    match &r.outcome {
        Outcome::Pass => eprintln!("  PASS {} ({:.1}s)", r.id, r.duration.as_secs_f32()),
        Outcome::Skip(why) => eprintln!("  SKIP {}: {why}", r.id),
        Outcome::NotApplicable(why) => eprintln!("  N/A {}: {why}", r.id),
        Outcome::Fail { reason, detail } => {
            eprintln!(
                "  FAIL {} ({:.1}s): {reason}",
                r.id,
                r.duration.as_secs_f32()
            );
            for line in detail.lines() {
                eprintln!("       {line}");
            }
        }
    }
}

/// Applies `after_state_changes`: deletions (`Delete <Kind> <ns/name>`) and the objects the Go tests create at
/// run time (`MustApplyObjectsWithCleanup [<Kind> <ns/name>]`, built by `runtime_objects`).
fn apply_state_changes(rt: &WorldRuntime, changes: &[String]) -> Result<(), String> {
    let mut plan = rt.plan();
    for change in changes {
        let words: Vec<&str> = change
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '[' || c == ']'))
            .collect();
        match words.as_slice() {
            ["Delete", kind, ns_name, ..] => {
                if !plan.remove(kind, ns_name) {
                    return Err(format!("{change}: no such object in the world"));
                }
            }
            ["MustApplyObjectsWithCleanup", kind, ns_name, ..] => {
                let obj = super::runtime_objects::build(kind, ns_name)
                    .ok_or_else(|| format!("{change}: the harness cannot build this object"))?;
                super::runtime_objects::add_newer(&mut plan, obj, std::time::SystemTime::now());
            }
            _ => return Err(change.clone()),
        }
    }
    write_world(&rt.dir, &plan).map_err(|e| format!("rewriting the world: {e:#}"))
}

/// Go's `CalculateHost`: the gateway address without the port when it is the scheme's default.
pub fn calculate_host(ip: IpAddr, port: Option<u16>, scheme: &str) -> String {
    let host = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    match port {
        None => host,
        Some(80) if scheme == "http" => host,
        Some(443) if scheme == "https" => host,
        Some(p) => format!("{host}:{p}"),
    }
}

/// One prepared attempt: the request, what to check, and the URL Go would have used.
struct Attempt {
    spec: RequestSpec,
    exp: Expectation,
    sent: SentRequest,
}

struct CaseTarget {
    connect: SocketAddr,
    url_host: String,
}

/// The address to dial for a Gateway's (manifest) port, and the Gateway's IP.
pub(crate) fn gateway_target(
    rt: &WorldRuntime,
    gateway: &str,
    connect_port: u16,
) -> Result<(SocketAddr, IpAddr), String> {
    let plan = rt.plan();
    let gw = plan
        .gateways
        .get(gateway)
        .ok_or_else(|| format!("Gateway {gateway} is not in the test's manifests"))?;
    let port = connect_port
        .checked_add(rt.offset)
        .ok_or_else(|| format!("port {connect_port} + offset {} overflows", rt.offset))?;
    Ok((SocketAddr::new(gw.ip, port), gw.ip))
}

fn case_target(rt: &WorldRuntime, case: &Case) -> Result<CaseTarget, String> {
    let (connect, ip) = gateway_target(rt, &case.gateway, case.connect_port)?;
    Ok(CaseTarget {
        connect,
        url_host: calculate_host(ip, case.gateway_port, &case.scheme),
    })
}

fn tls_spec(rt: &WorldRuntime, case: &Case) -> Result<Option<TlsSpec>, String> {
    if case.scheme != "https" {
        return Ok(None);
    }
    let tls = case
        .tls
        .as_ref()
        .ok_or_else(|| "https case without a tls block".to_string())?;
    let trust = rt
        .certs
        .lookup(&tls.trust_ca)
        .ok_or_else(|| format!("harness has no PEM for {}", tls.trust_ca))?
        .to_string();
    let client_cert = match &tls.client_certificate {
        None => None,
        Some(r) => {
            let cert = rt
                .certs
                .lookup(r)
                .ok_or_else(|| format!("harness has no PEM for {r}"))?;
            let key_ref = r.replace(":tls.crt", ":tls.key");
            let key = rt
                .certs
                .lookup(&key_ref)
                .ok_or_else(|| format!("harness has no PEM for {key_ref}"))?;
            Some((cert.to_string(), key.to_string()))
        }
    };
    Ok(Some(TlsSpec {
        server_name: tls.server_name.clone(),
        trust_pems: vec![trust],
        client_cert,
        cert_requested: Arc::new(AtomicBool::new(false)),
    }))
}

/// Data gaps of the derived cases, filled from the upstream Go test (documented in the report).
fn expected_client_cert(case: &Case) -> Option<&'static str> {
    // gateway-tls-backend-client-certificate.go: the backend must see the Gateway's client certificate
    // (`ClientCert: tls-checks-client-certificate`); cases.jsonl lost that expectation.
    (case.test == "GatewayTLSBackendClientCertificate")
        .then_some("secret:gateway-conformance-infra/tls-checks-client-certificate:tls.crt")
}

fn make_attempt(
    rt: &WorldRuntime,
    case: &Case,
    target: &CaseTarget,
    rng: &mut Rng,
) -> Result<Attempt, String> {
    let uuid = uuid_v4(rng);
    let sub = |s: &str| s.replace("{{uuid}}", &uuid);
    let req = &case.request;
    let path_and_query = sub(&req.path_and_query);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .flatten()
        .map(|(k, v)| (canonical_header_key(k), sub(v)))
        .collect();
    let echo_set: Vec<String> = case
        .backend_set_response_headers
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    headers.push(("X-Echo-Set-Header".to_string(), echo_set.join(",")));
    let proto = match req.protocol.as_deref() {
        Some("H2") => Proto::H2,
        Some("H2C_PRIOR_KNOWLEDGE") => Proto::H2cPriorKnowledge,
        _ => Proto::Http1,
    };
    let spec = RequestSpec {
        connect: target.connect,
        tls: tls_spec(rt, case)?,
        proto,
        method: req.method.clone().unwrap_or_else(|| "GET".to_string()),
        authority: req.host.clone().unwrap_or_else(|| target.url_host.clone()),
        path_and_query: path_and_query.clone(),
        headers,
        body: req.body.as_ref().map(|b| b.as_bytes().to_vec()),
        timeout: rt.opts.request_timeout,
    };
    let expected = match &case.expected_request {
        Some(e) => ResolvedRequest {
            host: e.host.clone(),
            method: e.method.clone().unwrap_or_else(|| "GET".to_string()),
            path_and_query: sub(&e.path_and_query),
            headers: e
                .headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), sub(v)))
                .collect(),
            absent_headers: e.absent_headers.clone().unwrap_or_default(),
            sni: e.sni.clone(),
            client_cert_pem: None,
        },
        None => ResolvedRequest {
            host: req.host.clone(),
            method: req.method.clone().unwrap_or_else(|| "GET".to_string()),
            path_and_query,
            headers: req
                .headers
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), sub(v)))
                .collect(),
            absent_headers: Vec::new(),
            sni: req.sni.clone(),
            client_cert_pem: None,
        },
    };
    let client_cert_ref = case
        .expected_request
        .as_ref()
        .and_then(|e| e.client_cert.clone())
        .or_else(|| expected_client_cert(case).map(str::to_string));
    let client_cert_pem = match client_cert_ref {
        None => None,
        Some(r) => Some(
            rt.certs
                .lookup(&r)
                .ok_or_else(|| format!("harness has no PEM for {r}"))?
                .to_string(),
        ),
    };
    let response = case.response.clone().unwrap_or_default();
    let exp = Expectation {
        statuses: if response.status.is_empty() {
            vec![200]
        } else {
            response.status.clone()
        },
        expected: ResolvedRequest {
            client_cert_pem,
            ..expected
        },
        backend: case.backend.clone().unwrap_or_default(),
        namespace: case.namespace.clone().unwrap_or_default(),
        response_headers: response
            .headers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        valid_header_values: response
            .valid_header_values
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        response_absent: response.absent_headers.clone().unwrap_or_default(),
        ignore_whitespace: response.ignore_whitespace,
        protocol: response.protocol.clone(),
        redirect: case.redirect.clone(),
    };
    let sent = SentRequest {
        scheme: case.scheme.clone(),
        url_host: target.url_host.clone(),
        path: req
            .path_and_query
            .split('?')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    Ok(Attempt { spec, exp, sent })
}

fn describe_request(spec: &RequestSpec) -> String {
    let scheme = if spec.tls.is_some() { "https" } else { "http" };
    let proto = match spec.proto {
        Proto::Http1 => "HTTP/1.1",
        Proto::H2 => "HTTP/2 (ALPN h2)",
        Proto::H2cPriorKnowledge => "h2c prior knowledge",
    };
    let mut s = format!(
        "{} {scheme}://{}{} [{proto}] Host: {}",
        spec.method, spec.connect, spec.path_and_query, spec.authority
    );
    if let Some(t) = &spec.tls {
        s.push_str(&format!(", SNI: {}", t.server_name));
        if t.client_cert.is_some() {
            s.push_str(", with client certificate");
        }
    }
    let hs: Vec<String> = spec
        .headers
        .iter()
        .filter(|(k, v)| !(k == "X-Echo-Set-Header" && v.is_empty()))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if !hs.is_empty() {
        s.push_str(&format!(", headers {{{}}}", hs.join("; ")));
    }
    s
}

fn describe_response(res: &Captured) -> String {
    let mut s = format!("{} {}", res.version, res.status);
    if let Some(loc) = res.header("location") {
        s.push_str(&format!(", Location: {loc}"));
    }
    match parse_echo(res) {
        Ok(Some(echo)) => {
            s.push_str(&format!(
                ", echo from pod {} (namespace {}): {} {} host {}",
                echo.pod, echo.namespace, echo.method, echo.path, echo.host
            ));
            if let Some(t) = &echo.tls {
                s.push_str(&format!(", backend TLS SNI {:?}", t.server_name));
            }
        }
        _ => {
            let ct = res.header("content-type").unwrap_or_default();
            let body = String::from_utf8_lossy(&res.body);
            s.push_str(&format!(
                ", content-type {ct:?}, body {:?}",
                excerpt(body.trim(), 160)
            ));
        }
    }
    s
}

fn describe_expectation(exp: &Expectation) -> String {
    let mut s = format!("status {:?}", exp.statuses);
    if !exp.backend.is_empty() {
        s.push_str(&format!(", pod {}*", exp.backend));
    }
    if !exp.namespace.is_empty() {
        s.push_str(&format!(", namespace {}", exp.namespace));
    }
    if !exp.expected.path_and_query.is_empty() {
        s.push_str(&format!(
            ", backend sees {} {}",
            exp.expected.method, exp.expected.path_and_query
        ));
    }
    if let Some(h) = &exp.expected.host {
        s.push_str(&format!(" host {h}"));
    }
    if !exp.expected.headers.is_empty() {
        let hs: Vec<String> = exp
            .expected
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s.push_str(&format!(", request headers {{{}}}", hs.join("; ")));
    }
    if !exp.expected.absent_headers.is_empty() {
        s.push_str(&format!(", without {:?}", exp.expected.absent_headers));
    }
    if !exp.response_headers.is_empty() || !exp.valid_header_values.is_empty() {
        s.push_str(", response headers checked");
    }
    if let Some(r) = &exp.redirect {
        s.push_str(&format!(
            ", redirect scheme {:?} host {:?} port {:?} path {:?}",
            r.scheme, r.hostname, r.port, r.path
        ));
    }
    if let Some(sni) = &exp.expected.sni {
        s.push_str(&format!(", backend SNI {sni}"));
    }
    s
}

/// A failure with what was sent and received on the last attempt.
pub(crate) struct LastFailure {
    pub(crate) reason: String,
    pub(crate) request: String,
    pub(crate) response: String,
}

struct Passed {
    last_path: String,
}

/// Upstream `AwaitConvergence`: repeat until `consecutive` passes in a row, 1 s pause after a failure, bounded
/// by `max_time_to_consistency`.
async fn eventually<F, Fut>(
    rt: &WorldRuntime,
    attempt: F,
) -> Result<(usize, Duration), (LastFailure, usize, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LastFailure>>,
{
    eventually_n(rt, rt.opts.consecutive, attempt).await
}

/// [`eventually`] with `needed` passes in a row (upstream's TCP, UDP and TLS-rejection helpers poll until the
/// first pass: `needed` = 1).
pub(crate) async fn eventually_n<F, Fut>(
    rt: &WorldRuntime,
    needed: usize,
    mut attempt: F,
) -> Result<(usize, Duration), (LastFailure, usize, Duration)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LastFailure>>,
{
    let start = Instant::now();
    let deadline = start + rt.opts.max_time_to_consistency;
    let mut successes = 0;
    let mut attempts = 0;
    let mut last = LastFailure {
        reason: "no attempt made".to_string(),
        request: String::new(),
        response: String::new(),
    };
    // Bounded: every iteration either returns, or sleeps until at most the deadline, or counts a success
    // (at most `consecutive` in a row before returning).
    while Instant::now() < deadline {
        attempts += 1;
        match attempt().await {
            Ok(()) => {
                successes += 1;
                if successes >= needed.max(1) {
                    return Ok((attempts, start.elapsed()));
                }
                continue;
            }
            Err(f) => {
                successes = 0;
                last = f;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_secs(1))).await;
    }
    Err((last, attempts, start.elapsed()))
}

pub(crate) fn failure_outcome(
    f: LastFailure,
    attempts: usize,
    took: Duration,
    expected: &str,
) -> Outcome {
    Outcome::fail(
        f.reason.clone(),
        format!(
            "sent:     {}\ngot:      {}\nexpected: {expected}\nmismatch: {}\n({attempts} attempts over {:.1}s)",
            f.request,
            f.response,
            f.reason,
            took.as_secs_f32()
        ),
    )
}

async fn run_case(rt: &Arc<WorldRuntime>, case: &Case) -> Outcome {
    let target = match case_target(rt, case) {
        Ok(t) => t,
        Err(e) => return Outcome::fail(format!("harness: {e}"), String::new()),
    };
    if case.kind == "websocket" {
        return run_websocket(rt, case, &target).await;
    }
    if case.expect_failure {
        return run_expect_failure(rt, case, &target).await;
    }
    let mut rng = Rng::from_entropy();
    // Describe the expectation once (with a placeholder uuid) for the report.
    let expected_text = match make_attempt(rt, case, &target, &mut Rng::new(0)) {
        Ok(a) => describe_expectation(&a.exp),
        Err(e) => return Outcome::fail(format!("harness: {e}"), String::new()),
    };
    let last_path = Arc::new(Mutex::new(String::new()));
    let result = eventually(rt, || {
        let attempt = make_attempt(rt, case, &target, &mut rng);
        let last_path = last_path.clone();
        async move {
            let a = attempt.map_err(|e| LastFailure {
                reason: format!("harness: {e}"),
                request: String::new(),
                response: String::new(),
            })?;
            let request = describe_request(&a.spec);
            match round_trip(&a.spec, &rt.client).await {
                Err(e) => Err(LastFailure {
                    reason: short_rt_error(&e),
                    request,
                    response: e.to_string(),
                }),
                Ok(res) => match check_response(&a.exp, &a.sent, &res) {
                    Ok(()) => {
                        if let Ok(mut p) = last_path.lock() {
                            *p = a.exp.expected.path_and_query.clone();
                        }
                        Ok(())
                    }
                    Err(mismatch) => Err(LastFailure {
                        reason: mismatch,
                        request,
                        response: describe_response(&res),
                    }),
                },
            }
        }
    })
    .await;
    let passed = match result {
        Ok(_) => Passed {
            last_path: last_path.lock().map(|p| p.clone()).unwrap_or_default(),
        },
        Err((f, attempts, took)) => return failure_outcome(f, attempts, took, &expected_text),
    };
    if let Some(weights) = &case.weights {
        if let Err(e) = check_distribution(rt, case, &target, weights).await {
            return Outcome::fail(format!("weighted distribution: {}", excerpt(&e, 120)), e);
        }
    }
    if let Some(mirrors) = &case.mirrored_to {
        let percent = mirrors.iter().any(|m| m.percent.is_some());
        let r = if percent {
            check_percentage_mirrors(rt, case, &target).await
        } else {
            check_mirrors(rt, case, &passed.last_path).await
        };
        if let Err(e) = r {
            return Outcome::fail(format!("mirror: {}", excerpt(&e, 120)), e);
        }
    }
    if case.test == "HTTPRouteRequestHeaderModifierBackendWeights" {
        if let Err(e) = check_backend_header(rt, case, &target).await {
            return Outcome::fail(format!("backend header: {}", excerpt(&e, 120)), e);
        }
    }
    Outcome::Pass
}

fn short_rt_error(e: &RtError) -> String {
    match e {
        RtError::Connect(m) if m.contains("refused") => {
            "connection refused (nothing listening)".to_string()
        }
        RtError::Connect(m) => format!("connect failed: {}", excerpt(m, 80)),
        RtError::Tls(m) => format!("TLS handshake failed: {}", excerpt(m, 100)),
        RtError::Protocol(m) => format!("HTTP exchange failed: {}", excerpt(m, 100)),
        RtError::Timeout(d) => format!("no response within {}s", d.as_secs()),
        RtError::Setup(m) => format!("harness: {m}"),
    }
}

async fn run_expect_failure(rt: &WorldRuntime, case: &Case, target: &CaseTarget) -> Outcome {
    let mode = case
        .expect_failure_mode
        .as_deref()
        .unwrap_or("http_non_200");
    let mut rng = Rng::from_entropy();
    let expected = match mode {
        "tls" => {
            "the TLS round trip fails (and, with a client certificate, the server asked for one)"
        }
        _ => "any response other than 200 (408/504 count as not yet)",
    };
    let result = eventually(rt, || {
        let attempt = make_attempt(rt, case, target, &mut rng);
        async move {
            let a = attempt.map_err(|e| LastFailure {
                reason: format!("harness: {e}"),
                request: String::new(),
                response: String::new(),
            })?;
            let request = describe_request(&a.spec);
            let res = round_trip(&a.spec, &rt.client).await;
            let requested = a
                .spec
                .tls
                .as_ref()
                .is_some_and(|t| t.cert_requested.load(Ordering::SeqCst));
            match (mode, res) {
                ("tls", Ok(res)) => Err(LastFailure {
                    reason: format!("expected the TLS round trip to fail, got HTTP {}", res.status),
                    request,
                    response: describe_response(&res),
                }),
                ("tls", Err(e)) => {
                    let has_cert = a.spec.tls.as_ref().is_some_and(|t| t.client_cert.is_some());
                    if has_cert && !requested {
                        Err(LastFailure {
                            reason: "the round trip failed, but the server never asked for a client certificate"
                                .to_string(),
                            request,
                            response: e.to_string(),
                        })
                    } else {
                        Ok(())
                    }
                }
                (_, Err(e)) => Err(LastFailure {
                    reason: format!("not yet: {}", short_rt_error(&e)),
                    request,
                    response: e.to_string(),
                }),
                (_, Ok(res)) if res.status == 200 => Err(LastFailure {
                    reason: "expected a response other than 200, got 200".to_string(),
                    request,
                    response: describe_response(&res),
                }),
                (_, Ok(res)) if is_timeout_status(res.status) => Err(LastFailure {
                    reason: format!("not yet: {}", res.status),
                    request,
                    response: describe_response(&res),
                }),
                (_, Ok(_)) => Ok(()),
            }
        }
    })
    .await;
    match result {
        Ok(_) => Outcome::Pass,
        Err((f, attempts, took)) => failure_outcome(f, attempts, took, expected),
    }
}

async fn run_websocket(rt: &WorldRuntime, case: &Case, target: &CaseTarget) -> Outcome {
    let ws = case.websocket.clone().unwrap_or_default();
    let text = ws
        .send_text
        .clone()
        .map(|s| (s.clone(), ws.expect_text_echo.clone().unwrap_or(s)));
    let binary = match (&ws.send_binary_hex, &ws.expect_binary_echo_hex) {
        (Some(s), e) => {
            let send = decode_hex(s);
            let expect = e.as_deref().and_then(decode_hex).or_else(|| send.clone());
            send.zip(expect)
        }
        _ => None,
    };
    let check = WebsocketCheck {
        connect: target.connect,
        authority: case
            .request
            .host
            .clone()
            .unwrap_or_else(|| target.url_host.clone()),
        path: case.request.path_and_query.clone(),
        headers: case
            .request
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (canonical_header_key(k), v.clone()))
            .collect(),
        text,
        binary,
        timeout: rt.opts.request_timeout,
    };
    let request = format!(
        "WebSocket ws://{}{} Host: {} {:?}",
        check.connect, check.path, check.authority, check.headers
    );
    let result = eventually(rt, || {
        let check = check.clone();
        let request = request.clone();
        async move {
            client::websocket_round_trip(&check)
                .await
                .map_err(|e| LastFailure {
                    reason: excerpt(&e, 120),
                    request,
                    response: e,
                })
        }
    })
    .await;
    match result {
        Ok(_) => Outcome::Pass,
        Err((f, attempts, took)) => {
            failure_outcome(f, attempts, took, "text and binary messages echoed back")
        }
    }
}

/// Sends `n` requests, 10 at a time, and returns the answering pods (an error on the first non-200 or
/// non-echo response, as upstream's sender does).
async fn sample_pods(
    rt: &WorldRuntime,
    case: &Case,
    target: &CaseTarget,
    n: usize,
) -> Result<Vec<Captured>, String> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Captured>> = Mutex::new(Vec::with_capacity(n));
    let worker = || async {
        let mut rng = Rng::from_entropy();
        // Bounded: each worker takes indices until `n` are taken.
        while next.fetch_add(1, Ordering::SeqCst) < n {
            let a = make_attempt(rt, case, target, &mut rng)?;
            let res = round_trip(&a.spec, &rt.client)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if res.status != 200 {
                return Err(format!("got {} ({})", res.status, describe_response(&res)));
            }
            if let Ok(mut r) = results.lock() {
                r.push(res);
            }
        }
        Ok::<(), String>(())
    };
    let workers: Vec<_> = (0..10).map(|_| worker()).collect();
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
}

async fn check_distribution(
    rt: &WorldRuntime,
    case: &Case,
    target: &CaseTarget,
    weights: &BTreeMap<String, f64>,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    let mut last = String::new();
    for attempt in 1..=10 {
        let responses = match sample_pods(rt, case, target, TOTAL).await {
            Ok(r) => r,
            Err(e) => {
                last = format!("attempt {attempt}: {e}");
                continue;
            }
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for res in &responses {
            let pod = parse_echo(res)
                .ok()
                .flatten()
                .map(|e| e.pod)
                .unwrap_or_default();
            *seen.entry(backend_of_pod(&pod)).or_default() += 1;
        }
        match check_weights(&seen, TOTAL, weights) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("attempt {attempt}: {e} (seen {seen:?} of {TOTAL})"),
        }
    }
    Err(format!("after 10 attempts of {TOTAL} requests: {last}"))
}

fn count_received(rt: &WorldRuntime, ns: &str, backend: &str, path: &str) -> usize {
    pods_of(&rt.pods, ns, backend)
        .iter()
        .map(|p| {
            p.http()
                .map(|s| s.received().iter().filter(|r| r.path == path).count())
                .unwrap_or(0)
        })
        .sum()
}

async fn check_mirrors(rt: &WorldRuntime, case: &Case, path: &str) -> Result<(), String> {
    let Some(targets) = &case.mirrored_to else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in targets {
        let pods = pods_of(&rt.pods, &m.namespace, &m.name);
        if pods.is_empty() {
            return Err(format!(
                "no running pods for mirror backend {}/{}",
                m.namespace, m.name
            ));
        }
        // Bounded by the deadline.
        loop {
            if count_received(rt, &m.namespace, &m.name, path) > 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mirror backend {}/{} never received {path} (within 10s of the request)",
                    m.namespace, m.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn check_percentage_mirrors(
    rt: &WorldRuntime,
    case: &Case,
    target: &CaseTarget,
) -> Result<(), String> {
    const TOTAL: usize = 500;
    let Some(targets) = &case.mirrored_to else {
        return Ok(());
    };
    let path = case.request.path_and_query.clone();
    let mut last = String::new();
    for attempt in 1..=5 {
        let before: Vec<usize> = targets
            .iter()
            .map(|m| count_received(rt, &m.namespace, &m.name, &path))
            .collect();
        if let Err(e) = sample_pods(rt, case, target, TOTAL).await {
            last = format!("attempt {attempt}: {e}");
            continue;
        }
        // Mirrors are fire-and-forget: give the copies a moment to arrive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut ok = true;
        let mut report = Vec::new();
        for (m, before) in targets.iter().zip(before) {
            let got = count_received(rt, &m.namespace, &m.name, &path).saturating_sub(before);
            let (lo, hi) = mirror_count_bounds(TOTAL, m.percent.unwrap_or(100.0));
            if (got as f64) < lo || (got as f64) > hi {
                ok = false;
            }
            report.push(format!(
                "{}: {got} of {TOTAL} mirrored, expected {lo:.0}..={hi:.0} ({}%)",
                m.name,
                m.percent.unwrap_or(100.0)
            ));
        }
        if ok {
            return Ok(());
        }
        last = format!("attempt {attempt}: {}", report.join("; "));
    }
    Err(format!("after 5 checks of {TOTAL} requests: {last}"))
}

async fn check_backend_header(
    rt: &WorldRuntime,
    case: &Case,
    target: &CaseTarget,
) -> Result<(), String> {
    let responses = sample_pods(rt, case, target, 100).await?;
    for res in responses {
        let echo = parse_echo(&res)?.ok_or("response is not an echo body")?;
        let values: Vec<String> = echo
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("Backend"))
            .flat_map(|(_, v)| v.clone())
            .collect();
        if values.len() != 1 {
            return Err(format!(
                "expected exactly one Backend request header at the backend, got {values:?} (pod {})",
                echo.pod
            ));
        }
        if !echo.pod.starts_with(&values[0]) {
            return Err(format!(
                "pod {} does not start with its Backend header {}",
                echo.pod, values[0]
            ));
        }
    }
    Ok(())
}

/// The SupportedFeatures the proxy's GatewayClass lists in its status (GEP-2162), as upstream infers them: polled
/// until the class has some, within the consistency deadline.
async fn claimed_features(rt: &WorldRuntime, proxy: &Proxy) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + rt.opts.max_time_to_consistency;
    loop {
        let problem = match proxy.status().await {
            StatusFetch::Ok(doc) => {
                let features: Vec<String> = doc
                    .get("gatewayClasses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| str_at(c, &["name"]) == Some(CLASS_NAME))
                    .filter_map(|c| at(c, &["status", "supportedFeatures"]))
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter_map(|f| str_at(f, &["name"]).map(str::to_string))
                    .collect();
                if !features.is_empty() {
                    return Ok(features);
                }
                format!("GatewayClass {CLASS_NAME} lists no supportedFeatures")
            }
            StatusFetch::Missing => return Err("GET /status: 404".to_string()),
            StatusFetch::Error(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(problem);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a status-only test. As upstream, it runs only when the GatewayClass claims every feature it lists, and
/// some test bodies return before any check given what is claimed (`NotApplicable`).
async fn run_status(
    rt: &WorldRuntime,
    proxy: &Proxy,
    spec: &StatusTestSpec,
    features: &[String],
) -> Outcome {
    let claimed = match claimed_features(rt, proxy).await {
        Ok(c) => c,
        Err(e) => return Outcome::fail("no supportedFeatures in the GatewayClass status", e),
    };
    let claims = |f: &str| claimed.iter().any(|c| c == f);
    if let Some(f) = features.iter().find(|f| !claims(f)) {
        return Outcome::Skip(format!(
            "needs {f}, which the GatewayClass does not list in supportedFeatures"
        ));
    }
    if let Some(why) = spec.gated_off(claims) {
        return Outcome::NotApplicable(why);
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let step_name = if step.name.is_empty() {
            format!("step {}", i + 1)
        } else {
            step.name.clone()
        };
        if let Err(e) = apply_actions(rt, &step.actions) {
            return Outcome::fail(format!("harness: {step_name}: {e}"), String::new());
        }
        let start = Instant::now();
        let deadline = start + rt.opts.max_time_to_consistency;
        let mut consecutive = 0;
        let mut failures: Vec<String>;
        // Bounded by the deadline; a pass needs two consecutive good polls.
        loop {
            failures = Vec::new();
            match proxy.status().await {
                StatusFetch::Missing => {
                    return Outcome::fail(
                        "GET /status: 404 (the proxy has no status endpoint)",
                        format!("{step_name}: nothing to check"),
                    )
                }
                StatusFetch::Error(e) => failures.push(e),
                StatusFetch::Ok(doc) => {
                    let plan = rt.plan();
                    let view = StatusView {
                        status: &doc,
                        world: &plan,
                    };
                    for a in &step.expect {
                        if let Err(e) = view.check(a) {
                            failures.push(format!("{}: {e}", a.label()));
                        }
                    }
                }
            }
            if failures.is_empty() {
                consecutive += 1;
                if consecutive >= 2 {
                    break;
                }
            } else {
                consecutive = 0;
            }
            let now = Instant::now();
            if now >= deadline {
                let reason = format!(
                    "{step_name}: {}",
                    failures
                        .first()
                        .map(|f| excerpt(f, 140))
                        .unwrap_or_default()
                );
                return Outcome::fail(
                    reason,
                    format!(
                        "{step_name} did not hold within {}s; failing assertions:\n  {}",
                        rt.opts.max_time_to_consistency.as_secs(),
                        failures.join("\n  ")
                    ),
                );
            }
            tokio::time::sleep((deadline - now).min(Duration::from_secs(1))).await;
        }
    }
    Outcome::Pass
}

fn apply_actions(rt: &WorldRuntime, actions: &[Action]) -> Result<(), String> {
    if actions.is_empty() {
        return Ok(());
    }
    let mut plan = rt.plan();
    for action in actions {
        match action {
            Action::Delete { kind, name } => {
                if !plan.remove(kind, name) {
                    return Err(format!("delete {kind} {name}: not in the world"));
                }
            }
            Action::Patch { kind, name, merge } => {
                let patch = status::substitute_tokens(merge, &plan);
                let obj = plan
                    .find_mut(kind, name)
                    .ok_or_else(|| format!("patch {kind} {name}: not in the world"))?;
                let mut before = obj.clone();
                yaml::merge_patch(obj, &patch);
                let mut after = obj.clone();
                if let (Some(b), Some(a)) = (before.as_object_mut(), after.as_object_mut()) {
                    b.remove("metadata");
                    a.remove("metadata");
                }
                if before != after {
                    let generation = yaml::at_mut(obj, &["metadata", "generation"]);
                    let next = generation.as_i64().unwrap_or(1) + 1;
                    *generation = Value::from(next);
                }
            }
        }
    }
    write_world(&rt.dir, &plan).map_err(|e| format!("rewriting the world: {e:#}"))
}
