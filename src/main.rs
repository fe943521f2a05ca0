//! The `portcullis` binary: command-line wiring only; the logic lives in the library.

use anyhow::{Context, Result};
use clap::Parser;
use portcullis::admin::{Admin, Draining};
use portcullis::config::{Cli, Command, DiffArgs, MigrateArgs, RoutesArgs, RunArgs, ValidateArgs};
use portcullis::control::Control;
use portcullis::metrics::request::{LabelMode, RequestMetrics};
use portcullis::metrics::Metrics;
use portcullis::proxy::edge::ListenerEdge;
use portcullis::proxy::{accept_loop, bind, Connections, Handshake, L4Settings, ListenerManager};
use portcullis::report;
use portcullis::snapshot::Store;
use portcullis::source::file::{self, FileLoader};
use portcullis::source::kube::status::StatusSource;
use portcullis::source::kube::KubeSource;
use portcullis::translate::{self, Severity};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// mimalloc: per-thread free lists suit Pingora's many small per-request allocations (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the memory a configuration round freed (its temporaries, the previous model once the data plane let
/// go of it) to the operating system at once, instead of when mimalloc next gets round to purging. Measured with
/// 5,000 routes under churn (docs/kubernetes.md): mimalloc v3 peaked at 185 MB, 162 MB with this; v2 (the one
/// used) 140 MB with this. Purging on every free instead (`MIMALLOC_PURGE_DELAY=0`) cost the data plane about
/// 15% more CPU per request; one forced collection per round costs only the control plane.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; any thread may call it at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// The nice value of the control-plane thread (see [`yield_to_data_plane`]).
const CONTROL_PLANE_NICE: libc::c_int = 10;

/// Lowers the calling thread's scheduling priority to [`CONTROL_PLANE_NICE`]. Called on the control-plane thread:
/// parsing, translating and compiling a routing table (tens of milliseconds at 10,000 routes) then yields the CPU
/// to a data-plane worker that has a request to serve, instead of sharing it equally, so configuration churn does
/// not show in request latency. It still runs when the workers are busy: against one busy nice-0 thread, a nice-10
/// thread gets about a tenth of the CPU. Failure (a seccomp profile that forbids it) is logged and ignored.
fn yield_to_data_plane() {
    // SAFETY: gettid and setpriority take and return plain integers; no memory is shared with the kernel.
    let (tid, r) = unsafe {
        let tid = libc::gettid();
        // Linux keeps a nice value per thread: PRIO_PROCESS with a thread id sets this thread's alone.
        let r = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, CONTROL_PLANE_NICE);
        (tid, r)
    };
    if r != 0 {
        tracing::warn!(
            tid,
            error = %std::io::Error::last_os_error(),
            "cannot lower the control-plane thread's priority; configuration work competes with requests"
        );
        return;
    }
    request_short_slice(tid);
}

/// The time slice the control-plane thread asks for: the kernel's minimum (0.1 ms).
const CONTROL_PLANE_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` (linux/sched/types.h, size 56: SCHED_ATTR_SIZE_VER1).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Asks the scheduler for a short slice for thread `tid` (`sched_runtime` of a SCHED_OTHER thread, Linux 6.12+;
/// older kernels accept and ignore it). Nice alone lets a woken worker wait until the control thread's slice
/// ends: under configuration churn at 1,000 routes that showed as +1.8 ms on the p99 of requests on the same
/// core (docs/benchmarks.md, "A client that can see a stall"). With a short slice a woken worker preempts the
/// rebuild within about 0.1 ms, and the control thread keeps its share of a busy core.
fn request_short_slice(tid: libc::pid_t) {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: CONTROL_PLANE_NICE,
        sched_priority: 0,
        sched_runtime: CONTROL_PLANE_SLICE_NS,
        sched_deadline: 0,
        sched_period: 0,
        sched_util_min: 0,
        sched_util_max: 0,
    };
    // SAFETY: sched_setattr reads `size` bytes of `attr`, a live, fully initialized repr(C) struct of that size,
    // during the call only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid,
            &attr as *const SchedAttr,
            0 as libc::c_uint,
        )
    };
    if r != 0 {
        tracing::debug!(
            tid,
            error = %std::io::Error::last_os_error(),
            "cannot ask for a short time slice for the control-plane thread"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    portcullis::telemetry::init();
    portcullis::tls::install_provider();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Validate(args) => validate(&args),
        Command::Routes(args) => routes(&args),
        Command::Diff(args) => diff(&args),
        Command::Migrate(args) => migrate(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let loaded = FileLoader::new(args.paths.clone()).load();
    let out = translate::translate(&loaded.input, &args.translate.options());
    let mut errors = 0;
    let mut warnings = 0;
    for p in &loaded.problems {
        println!("{p}");
        match p.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
    }
    let not_served =
        translate::served::not_served(&loaded.input, &args.translate.options(), &out.statuses);
    let mut texts = report::SourceTexts::default();
    for d in out.diagnostics.iter().chain(&not_served) {
        println!(
            "{}",
            report::diagnostic_line_at_field(d, &loaded.locations, &loaded.field_lines, &mut texts)
        );
        match d.severity {
            Severity::Error => errors += 1,
            Severity::Warning => warnings += 1,
        }
    }
    println!(
        "{} objects read, {} rules; {errors} errors, {warnings} warnings",
        loaded.input.len(),
        out.model.rule_count()
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn routes(args: &RoutesArgs) -> Result<ExitCode> {
    let loaded = FileLoader::new(args.paths.clone()).load();
    let out = translate::translate(&loaded.input, &args.translate.options());
    for p in &loaded.problems {
        eprintln!("{p}");
    }
    for d in &out.diagnostics {
        eprintln!(
            "{}",
            report::diagnostic_line_at(d, &loaded.locations, &loaded.field_lines)
        );
    }
    let rows = report::route_rows(&out.model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", report::route_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads and translates manifests, printing load problems and translation errors to stderr (warnings are
/// `validate`'s business).
fn load_model(paths: &[std::path::PathBuf], opts: &translate::Options) -> portcullis::model::Model {
    let loaded = FileLoader::new(paths.to_vec()).load();
    let out = translate::translate(&loaded.input, opts);
    for p in loaded
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
    {
        eprintln!("{p}");
    }
    for d in out
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
    {
        eprintln!(
            "{}",
            report::diagnostic_line_at(d, &loaded.locations, &loaded.field_lines)
        );
    }
    out.model
}

fn diff(args: &DiffArgs) -> Result<ExitCode> {
    let opts = args.translate.options();
    let old = load_model(&args.old, &opts);
    let new = load_model(&args.new, &opts);
    let limits = portcullis::equiv::Limits {
        max_examples_per_host: args.max_examples,
        ..Default::default()
    };
    let r = portcullis::equiv::compare(&old, &new, &limits);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{r}");
    }
    Ok(if r.is_equivalent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn migrate(args: &MigrateArgs) -> Result<ExitCode> {
    use portcullis::migrate;
    let loaded = FileLoader::new(args.paths.clone()).load();
    for p in loaded
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
    {
        eprintln!("{p}");
    }
    let (gns, gname) = args
        .gateway
        .split_once('/')
        .context("--gateway: expected NAMESPACE/NAME")?;
    let only = args
        .only
        .iter()
        .map(|s| migrate::Selector::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let opts = migrate::Options {
        gateway: (gns.to_string(), gname.to_string()),
        only,
        translate: args.translate.options(),
    };
    let out = migrate::migrate(&loaded.input, &opts);
    let files = migrate::files(&out, &loaded.input).map_err(anyhow::Error::msg)?;
    let proof = migrate::prove(&loaded.input, &files, &opts.translate);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, text) in &files {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    if args.json {
        let v = serde_json::json!({
            "paths": out.report,
            "proof": proof.report,
            "errors": proof.errors,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{out}");
        for e in &proof.errors {
            println!("error in the generated configuration: {e}");
        }
        print!("proof: {}", proof.report);
        if let Some(dir) = &args.out {
            println!("written to {}", dir.display());
        }
    }
    Ok(if proof.report.is_equivalent() && proof.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Where configuration comes from.
enum Source {
    /// Manifest files, watched.
    Files(FileLoader, file::Watcher),
    /// The Kubernetes API.
    Kube(Box<KubeSource>),
}

/// After the listeners close, how long busy HTTP/1.1 connections get to receive a `Connection: close` answer
/// before idle keep-alive connections are closed (docs/deploy.md, "Drain").
const IDLE_LINGER: Duration = Duration::from_secs(1);

fn run(args: RunArgs) -> Result<ExitCode> {
    let store = Arc::new(Store::new());
    let metrics = Arc::new(Metrics::new()?);
    let request_metrics = Arc::new(RequestMetrics::new(
        metrics.registry(),
        args.observe.metrics_labels,
    )?);
    if args.observe.metrics_labels != LabelMode::Off {
        store.set_request_metrics(request_metrics.clone());
    }
    portcullis::proxy::observe::set_server_header(&args.observe.server_header)?;
    portcullis::tls::set_resumption(args.tls_resumption);
    portcullis::proxy::observe::start_access_log(
        args.observe.access_log,
        args.observe.access_log_query,
        args.observe.access_log_buffer,
        Some(request_metrics.access_log_dropped()),
    )
    .context("cannot start the access log")?;
    let draining = Draining::default();
    // stop: listeners stop accepting, the source stops (and releases the leader Lease).
    let (stop_tx, stop_rx) = watch::channel(false);
    // shutdown: HTTP/1.1 answers carry `Connection: close`, HTTP/2 connections get GOAWAY.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // exit: the admin API and health port close (they answer until the drain is over).
    let (exit_tx, exit_rx) = watch::channel(false);

    // Control plane: its own single-threaded runtime, so configuration work never competes with requests.
    let control_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("portcullis-control")
        .build()
        .context("cannot start the control-plane runtime")?;
    let mut options = args.translate.options();
    if !args.bind_address.is_unspecified() {
        // Gateways without addresses of their own are reachable at the bind address.
        options.default_addresses = vec![args.bind_address.to_string()];
    }
    let mut control = Control::new(store.clone(), options);
    control.set_after_round(release_freed_memory);
    control.set_metrics(metrics.clone());
    let source = if args.kube.kubernetes {
        let settings = args
            .kube
            .settings(&args.translate)
            .map_err(anyhow::Error::msg)?;
        let kube = control_rt
            .block_on(KubeSource::connect(settings))
            .context("cannot configure the Kubernetes client")?;
        Source::Kube(Box::new(kube))
    } else {
        let mut loader = FileLoader::new(args.manifests.clone());
        let watcher = file::watch(&args.manifests).context("cannot watch the manifests")?;
        control.load_and_apply(&mut loader);
        Source::Files(loader, watcher)
    };

    // Data plane.
    let mut data_rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        data_rt.worker_threads(n.max(1));
    }
    let data_rt = data_rt
        .enable_all()
        .thread_name("portcullis-worker")
        .build()
        .context("cannot start the data-plane runtime")?;
    let edge = args.edge.settings().map_err(anyhow::Error::msg)?;
    // The admin API and the health port get the same edge (header and idle timeouts, the strict head check, the
    // connection limit) as the listeners that serve traffic: the health port is on the pod IP.
    let admin_edge = Arc::new(edge.clone());
    let mut listeners = ListenerManager::new(
        store.clone(),
        args.bind_address,
        args.port_offset,
        shutdown_rx.clone(),
    )
    .with_edge(edge)
    .with_l4(L4Settings {
        tcp_idle_timeout: Duration::from_secs(args.tcp_idle_timeout),
        udp_idle_timeout: Duration::from_secs(args.udp_idle_timeout),
        udp_max_flows: usize::try_from(args.udp_max_flows).unwrap_or(usize::MAX),
    });
    let listener_states = listeners.states();
    let connections = listeners.connections();
    data_rt.block_on(async { listeners.reconcile() });
    // The HTTP port must be bound at startup (a port in use or not permitted is a configuration mistake to fail
    // on); other listeners, such as a Gateway's own address, are reported in status and retried.
    let http_port = args.translate.http_port;
    let states = listener_states
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    if let Some(s) = states
        .iter()
        .find(|s| !s.bound && s.model_address.is_none() && s.port == http_port)
    {
        anyhow::bail!(
            "cannot bind the HTTP port on {}: {}",
            s.address,
            s.error.as_deref().unwrap_or("unknown error")
        );
    }
    let listeners_task = data_rt.spawn(listeners.run(stop_rx.clone()));
    data_rt.spawn(portcullis::proxy::upstream::run_active_checks(
        store.clone(),
        stop_rx.clone(),
    ));

    // Admin API and file watching on the control-plane runtime.
    let admin = Arc::new(
        Admin::new(
            store.clone(),
            control.diagnostics(),
            control.statuses(),
            listener_states,
        )
        .with_metrics(metrics)
        .with_draining(draining.clone()),
    );
    let status_source: StatusSource = {
        let admin = admin.clone();
        Arc::new(move || admin.status())
    };
    let admin_listener = control_rt
        .block_on(async { bind(args.admin_addr) })
        .with_context(|| format!("cannot bind the admin address {}", args.admin_addr))?;
    tracing::info!(addr = %args.admin_addr, "admin API listening");
    let health_listener = match args.health_addr {
        Some(addr) => {
            let l = control_rt
                .block_on(async { bind(addr) })
                .with_context(|| format!("cannot bind the health address {addr}"))?;
            tracing::info!(%addr, "health port listening (/healthz, /readyz, /metrics)");
            Some((l, Arc::new(admin.probes_only())))
        }
        None => None,
    };
    let control_thread = std::thread::Builder::new()
        .name("portcullis-control".into())
        .spawn({
            let stop_rx = stop_rx.clone();
            move || {
                yield_to_data_plane();
                control_rt.block_on(async move {
                    tokio::spawn(accept_loop(
                        admin_listener,
                        admin,
                        Handshake::Plain,
                        exit_rx.clone(),
                        shutdown_rx.clone(),
                        Connections::default(),
                        ListenerEdge::new(admin_edge.clone(), false),
                    ));
                    if let Some((listener, health)) = health_listener {
                        tokio::spawn(accept_loop(
                            listener,
                            health,
                            Handshake::Plain,
                            exit_rx.clone(),
                            shutdown_rx,
                            Connections::default(),
                            ListenerEdge::new(admin_edge, false),
                        ));
                    }
                    match source {
                        Source::Files(loader, watcher) => {
                            let mut stop = stop_rx;
                            tokio::select! {
                                _ = control.watch_files(loader, watcher) => {}
                                _ = stop.wait_for(|s| *s) => {}
                            }
                        }
                        // Returns after stop, having released the leader Lease.
                        Source::Kube(kube) => kube.run(control, status_source, stop_rx).await,
                    }
                    // Keep answering probes and scrapes until the drain is over.
                    let mut exit = exit_rx;
                    let _ = exit.wait_for(|e| *e).await;
                });
            }
        })
        .context("cannot start the control-plane thread")?;

    // Wait for SIGTERM (or SIGINT), then drain: see docs/deploy.md, "Drain".
    data_rt.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // SIGINT is someone at a terminal: no load balancer to wait for.
        let delay = tokio::select! {
            _ = term.recv() => Duration::from_secs(args.shutdown_delay),
            _ = int.recv() => Duration::ZERO,
        };
        draining.start();
        tracing::info!(
            ?delay,
            "shutting down: /readyz answers 503; listeners keep accepting until the delay is over"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = term.recv() => tracing::info!("second signal: shutdown delay cut short"),
            _ = int.recv() => tracing::info!("second signal: shutdown delay cut short"),
        }
        let _ = stop_tx.send(true);
        let _ = shutdown_tx.send(true);
        let grace = Duration::from_secs(args.shutdown_grace);
        tracing::info!(
            open = connections.open(),
            ?grace,
            "listeners closed; waiting for open connections"
        );
        let deadline = tokio::time::Instant::now() + grace;
        let stopped = listeners_task.await.ok();
        // Busy keep-alive connections get their `Connection: close` (or GOAWAY) and end on their own ...
        wait_for_connections(
            &connections,
            (tokio::time::Instant::now() + IDLE_LINGER).min(deadline),
        )
        .await;
        // ... then idle ones are closed, and requests still in progress finish.
        if let Some(stopped) = &stopped {
            stopped.close_idle().await;
        }
        wait_for_connections(&connections, deadline).await;
        match connections.open() {
            0 => tracing::info!("all connections closed"),
            n => tracing::warn!(
                open = n,
                "shutdown grace over; closing the remaining connections"
            ),
        }
        Ok::<(), std::io::Error>(())
    })?;
    let _ = exit_tx.send(true);
    let _ = control_thread.join();
    data_rt.shutdown_timeout(Duration::from_millis(100));
    portcullis::proxy::observe::finish_access_log();
    Ok(ExitCode::SUCCESS)
}

/// Waits until no connection is open or `deadline` passes.
async fn wait_for_connections(connections: &Connections, deadline: tokio::time::Instant) {
    while connections.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
