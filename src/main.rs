//! The `portcullis` binary: command-line wiring only; the logic lives in the library.

use anyhow::{Context, Result};
use clap::Parser;
use portcullis::admin::Admin;
use portcullis::config::{Cli, Command, RoutesArgs, RunArgs, ValidateArgs};
use portcullis::control::Control;
use portcullis::proxy::edge::ListenerEdge;
use portcullis::proxy::{accept_loop, bind, Connections, Handshake, ListenerManager};
use portcullis::report;
use portcullis::snapshot::Store;
use portcullis::source::file::{self, FileLoader};
use portcullis::source::kube::status::StatusSource;
use portcullis::source::kube::KubeSource;
use portcullis::translate::{self, Severity};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    portcullis::telemetry::init();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Validate(args) => validate(&args),
        Command::Routes(args) => routes(&args),
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
    for d in &out.diagnostics {
        println!("{}", report::diagnostic_line(d, &loaded.locations));
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
        eprintln!("{}", report::diagnostic_line(d, &loaded.locations));
    }
    let rows = report::route_rows(&out.model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", report::route_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where configuration comes from.
enum Source {
    /// Manifest files, watched.
    Files(FileLoader, file::Watcher),
    /// The Kubernetes API.
    Kube(Box<KubeSource>),
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let store = Arc::new(Store::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

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
        control.apply(&loader.load());
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
    let mut listeners = ListenerManager::new(
        store.clone(),
        args.bind_address,
        args.port_offset,
        shutdown_rx.clone(),
    )
    .with_edge(edge);
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
    data_rt.spawn(listeners.run(stop_rx.clone()));

    // Admin API and file watching on the control-plane runtime.
    let admin = Arc::new(Admin::new(
        store.clone(),
        control.diagnostics(),
        control.statuses(),
        listener_states,
    ));
    let status_source: StatusSource = {
        let admin = admin.clone();
        Arc::new(move || admin.status())
    };
    let admin_listener = control_rt
        .block_on(async { bind(args.admin_addr) })
        .with_context(|| format!("cannot bind the admin address {}", args.admin_addr))?;
    tracing::info!(addr = %args.admin_addr, "admin API listening");
    let control_thread = std::thread::Builder::new()
        .name("portcullis-control".into())
        .spawn({
            let stop_rx = stop_rx.clone();
            move || {
                control_rt.block_on(async move {
                    tokio::spawn(accept_loop(
                        admin_listener,
                        admin,
                        Handshake::Plain,
                        stop_rx.clone(),
                        shutdown_rx,
                        Connections::default(),
                        ListenerEdge::none(),
                    ));
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
                });
            }
        })
        .context("cannot start the control-plane thread")?;

    // Wait for SIGINT/SIGTERM, then stop accepting and give open connections time to finish.
    data_rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
        let _ = shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.shutdown_grace);
        while connections.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok::<(), std::io::Error>(())
    })?;
    let _ = control_thread.join();
    data_rt.shutdown_timeout(Duration::from_millis(100));
    Ok(ExitCode::SUCCESS)
}
