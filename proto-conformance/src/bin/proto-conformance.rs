//! `proto-conformance`: replays the upstream Gateway API conformance suite against the real `portcullis` binary,
//! without a cluster. See `proto_conformance::harness` and `proto-conformance/README.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use proto_conformance::harness::data::{Conformance, Suite};
use proto_conformance::harness::report;
use proto_conformance::harness::runner::{run_all, RunOptions};

const USAGE: &str = "\
proto-conformance: the Gateway API conformance suite against portcullis, without a cluster

USAGE: proto-conformance [OPTIONS]

OPTIONS:
  --suites LIST           the case files to run, comma-separated: http (cases.jsonl), grpc (grpc_cases.jsonl),
                          l4 (l4_cases.jsonl), or all (default: http; the last --suites wins)
  --check FILE            compare with an expected-results file (repeatable: the files are merged); exit 1
                          when a case expected to pass fails or an in-scope status-only test fails
  --write-expected FILE   write the expected-results file from this run
  --test NAME             only this test (ShortName); repeatable
  --case ID               only this case (e.g. HTTPRouteMatching/003); repeatable
  --jobs N                test worlds run at once (default 1)
  --case-concurrency N    cases of one world run at once (default 8)
  --verbose               print every case, with the details of failures
  --details               print the details of every failure in the final report
  --keep                  keep the world directories (manifests, portcullis.log)
  --portcullis PATH       the proxy binary (default: $PORTCULLIS_BIN, else target/release, else target/debug)
  --data DIR              the conformance folder (default: <workspace>/../shared/conformance/gateway-api)
  --status-dir DIR        status expectations (default: proto-conformance/expected/status)
  --work-dir DIR          where worlds are written (default: a temporary directory)
  --port-offset N         first --port-offset to try (default 20000)
  --timeout SECS          MaxTimeToConsistency (default 30)
  --no-gateway-addresses  do not give Gateways their own loopback addresses (everything on 127.0.0.1)
  -h, --help              this text
";

struct Cli {
    suites: Vec<Suite>,
    check: Vec<PathBuf>,
    write_expected: Option<PathBuf>,
    details: bool,
    data: Option<PathBuf>,
    status_dir: Option<PathBuf>,
    work_dir: Option<PathBuf>,
    binary: Option<PathBuf>,
    opts_jobs: usize,
    case_concurrency: usize,
    tests: Vec<String>,
    cases: Vec<String>,
    verbose: bool,
    keep: bool,
    port_offset: u16,
    timeout: u64,
    inject: bool,
}

fn parse_args() -> Result<Cli, String> {
    let mut cli = Cli {
        suites: vec![Suite::Http],
        check: Vec::new(),
        write_expected: None,
        details: false,
        data: None,
        status_dir: None,
        work_dir: None,
        binary: None,
        opts_jobs: 1,
        case_concurrency: 8,
        tests: Vec::new(),
        cases: Vec::new(),
        verbose: false,
        keep: false,
        port_offset: 20000,
        timeout: 30,
        inject: true,
    };
    let mut args = std::env::args().skip(1);
    // Bounded by the number of arguments.
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--check" => cli.check.push(PathBuf::from(value("--check")?)),
            "--suites" => {
                cli.suites =
                    Suite::parse_list(&value("--suites")?).map_err(|e| format!("--suites: {e}"))?
            }
            "--write-expected" => {
                cli.write_expected = Some(PathBuf::from(value("--write-expected")?))
            }
            "--test" => cli.tests.push(value("--test")?),
            "--case" => cli.cases.push(value("--case")?),
            "--jobs" => {
                cli.opts_jobs = value("--jobs")?
                    .parse()
                    .map_err(|e| format!("--jobs: {e}"))?
            }
            "--case-concurrency" => {
                cli.case_concurrency = value("--case-concurrency")?
                    .parse()
                    .map_err(|e| format!("--case-concurrency: {e}"))?
            }
            "--verbose" | "-v" => cli.verbose = true,
            "--details" => cli.details = true,
            "--keep" => cli.keep = true,
            "--portcullis" => cli.binary = Some(PathBuf::from(value("--portcullis")?)),
            "--data" => cli.data = Some(PathBuf::from(value("--data")?)),
            "--status-dir" => cli.status_dir = Some(PathBuf::from(value("--status-dir")?)),
            "--work-dir" => cli.work_dir = Some(PathBuf::from(value("--work-dir")?)),
            "--port-offset" => {
                cli.port_offset = value("--port-offset")?
                    .parse()
                    .map_err(|e| format!("--port-offset: {e}"))?
            }
            "--timeout" => {
                cli.timeout = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?
            }
            "--no-gateway-addresses" => cli.inject = false,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for case in &cli.cases {
        if let Some((test, _)) = case.split_once('/') {
            if !cli.tests.is_empty() && !cli.tests.iter().any(|t| t == test) {
                cli.tests.push(test.to_string());
            }
        }
    }
    Ok(cli)
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("proto-conformance: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("proto-conformance: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("proto-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = cli.data.clone().unwrap_or_else(|| {
        std::env::var_os("PORTCULLIS_CONFORMANCE_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir().join("../../shared/conformance/gateway-api"))
    });
    let conf = Conformance::load(&data)?;
    for t in &cli.tests {
        if conf.test(t).is_none() {
            anyhow::bail!("no test named {t:?} in {}", data.display());
        }
    }
    let expected = if cli.check.is_empty() {
        None
    } else {
        let mut merged = std::collections::BTreeMap::new();
        for path in &cli.check {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let parsed = report::parse_expected(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for (id, e) in parsed {
                if merged.insert(id.clone(), e).is_some() {
                    anyhow::bail!(
                        "{}: {id} is listed in another --check file too",
                        path.display()
                    );
                }
            }
        }
        Some(merged)
    };
    let binary = proto_conformance::harness::proxy::find_binary(cli.binary.as_deref())?;
    let temp_work = cli.work_dir.is_none();
    let work_dir = cli.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("proto-conformance-{}", std::process::id()))
    });
    let opts = RunOptions {
        binary,
        data_root: data,
        status_dir: cli
            .status_dir
            .clone()
            .unwrap_or_else(|| manifest_dir().join("expected/status")),
        work_dir: work_dir.clone(),
        jobs: cli.opts_jobs.max(1),
        case_concurrency: cli.case_concurrency.max(1),
        max_time_to_consistency: Duration::from_secs(cli.timeout.max(1)),
        consecutive: 3,
        request_timeout: Duration::from_secs(10),
        port_offset: cli.port_offset,
        inject_addresses: cli.inject,
        suites: cli.suites.clone(),
        tests: cli.tests.clone(),
        cases: cli.cases.clone(),
        verbose: cli.verbose,
        keep: cli.keep,
    };
    eprintln!(
        "proto-conformance: {} with {} job(s), suites {}; worlds in {}",
        opts.binary.display(),
        opts.jobs,
        cli.suites
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(","),
        work_dir.display()
    );
    let results = run_all(&conf, &opts).await?;
    if temp_work && !cli.keep {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    print!(
        "{}",
        report::render(&conf, &results, cli.details || cli.verbose, &cli.suites)
    );
    if let Some(path) = &cli.write_expected {
        std::fs::write(path, report::write_expected(&results))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(expected) = &expected {
        let check = report::check(&results, expected);
        if !check.newly_passing.is_empty() {
            println!(
                "\nNewly passing ({}; update the expected file):",
                check.newly_passing.len()
            );
            for id in &check.newly_passing {
                println!("  {id}");
            }
        }
        if !check.unlisted.is_empty() {
            println!("\nNot in the expected file: {}", check.unlisted.len());
        }
        if !check.regressions.is_empty() {
            println!(
                "\nREGRESSIONS ({}): expected to pass, did not:",
                check.regressions.len()
            );
            for (id, why) in &check.regressions {
                println!("  {id}: {why}");
            }
            code = ExitCode::from(1);
        } else {
            println!("\ncheck: no regressions against the expected file");
        }
        // Every in-scope status-only test must pass too (skips are the out-of-scope ones, with their reason).
        let status_failures: Vec<&str> = results
            .status
            .iter()
            .filter(|s| {
                matches!(
                    s.outcome,
                    proto_conformance::harness::runner::Outcome::Fail { .. }
                )
            })
            .map(|s| s.test.as_str())
            .collect();
        if !status_failures.is_empty() {
            println!(
                "\nSTATUS-ONLY FAILURES ({}): {}",
                status_failures.len(),
                status_failures.join(", ")
            );
            code = ExitCode::from(1);
        }
    }
    println!("\n{}", report::headline(&results));
    Ok(code)
}
