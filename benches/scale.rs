//! Scale benchmark for the relink operator (issue 9): for each size N it starts a fresh local
//! control plane and the sandbox provider, creates N connections plus unrelated Secrets, runs
//! the operator binary, and measures in one run the sweep against a bare HTTP loop, CPU per
//! check, peak RSS, API traffic per check, provider calls before and after a restart, and
//! revocation latency. See docs/performance.md.
//!
//! ```sh
//! cargo bench --bench scale -- --connections 1000,5000,10000 --latency-ms 50
//! cargo bench --bench scale -- --connections 50 --unrelated-secrets 100 --strict   # CI smoke
//! ```

#[path = "scale/apicost.rs"]
mod apicost;
#[path = "scale/controlplane.rs"]
mod controlplane;
#[path = "scale/fixtures.rs"]
mod fixtures;
#[path = "scale/measure.rs"]
mod measure;
#[path = "scale/procs.rs"]
mod procs;
#[path = "scale/refresh.rs"]
mod refresh;
#[path = "scale/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use kube::api::{Api, ListParams, Patch, PatchParams};
use relink::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnection, ConditionType};

use controlplane::{ControlPlane, free_port};
use fixtures::{Conn, NS, OPERATOR_NS};
use measure::{OperatorCounters, call_stats};
use procs::{Daemon, cpu_time, memory_kib};

/// The check interval of every benchmark connection (`spec.checkInterval: 15m`).
pub const INTERVAL_SECS: f64 = 900.0;

#[derive(Parser, Clone, Debug)]
#[command(about = "relink scale benchmark (issue 9); see docs/performance.md")]
pub struct Args {
    /// Sizes to measure, each on a fresh control plane.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,25000")]
    pub connections: Vec<usize>,
    /// Sandbox answer delay for every provider call, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Provider calls in flight: the bare loop's and the minimal loop's concurrency and the
    /// operator's `--per-provider-concurrency` (its `--concurrency` keeps its default, twice
    /// that, so API round trips do not hold a provider slot).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Set the operator's overall `--concurrency` (reconciles in flight) instead of its default,
    /// keeping `--per-provider-concurrency` at `--concurrency`.
    #[arg(long)]
    pub operator_concurrency: Option<u16>,
    /// Secrets in other namespaces that have nothing to do with relink.
    #[arg(long, default_value_t = 10_000)]
    pub unrelated_secrets: usize,
    /// Measure 10,000 connections (else the largest size) once more with this many unrelated
    /// Secrets (0: skip), to see what Secrets relink does not use cost it.
    #[arg(long, default_value_t = 0)]
    pub heavy_secrets: usize,
    /// Revocations timed (median reported).
    #[arg(long, default_value_t = 10)]
    pub revocations: usize,
    /// Secrets in the refresh scenario (two connections each, all due for refresh at once,
    /// rotating refresh tokens with reuse detection); 0 skips it.
    #[arg(long, default_value_t = 100)]
    pub refresh_secrets: usize,
    /// Seconds to watch provider calls after the restarted operator has looked at everything.
    #[arg(long, default_value_t = 15)]
    pub restart_window_secs: u64,
    /// Requests of each kind sent to measure their control-plane cost after the run (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub api_probe_ops: usize,
    /// Objects created at once while setting up.
    #[arg(long, default_value_t = 32)]
    pub create_concurrency: usize,
    /// Operator log level (`relink run --log-level`).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Also write the Markdown report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Exit non-zero when a correctness invariant fails (every connection checked exactly once,
    /// no call and no write after the restart, every revocation seen). Timing targets never fail.
    #[arg(long)]
    pub strict: bool,
    /// Keep each control plane's folder (logs, etcd data) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// The relink binary (default: the one cargo built alongside this benchmark).
    #[arg(long)]
    pub relink_bin: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub n: usize,
    /// Unrelated Secrets in the cluster.
    pub unrelated: usize,
    pub create_secs: f64,
    pub bare_secs: f64,
    /// The minimal-operator loop after the run (GET Secret + provider call + status apply).
    pub minimal_secs: f64,
    /// This process's CPU per iteration of the minimal-operator loop.
    pub minimal_cpu_ms: f64,
    /// Operator start to the first provider answer.
    pub startup_secs: f64,
    /// Operator start to the last provider answer of the sweep.
    pub sweep_secs: f64,
    /// First provider call sent (first answer minus the latency) to the last answer.
    pub checking_secs: f64,
    pub cpu_total_secs: f64,
    /// CPU before the first check: start-up, cache lists, waiting for the sync.
    pub cpu_startup_secs: f64,
    /// CPU from the last sample before the first check to the end of the sweep, scrapes removed.
    pub cpu_checking_secs: f64,
    pub scrape_cost_ms: f64,
    /// CPU of this process's bare loop, per call.
    pub bare_client_cpu_ms: f64,
    /// kube-apiserver + etcd CPU during the sweep, per check.
    pub controlplane_cpu_ms: f64,
    /// Sandbox CPU per call, during the bare loop and during the sweep.
    pub sandbox_cpu_bare_ms: f64,
    pub sandbox_cpu_sweep_ms: f64,
    pub scrapes: usize,
    pub hwm_kib: u64,
    pub rss_end_kib: u64,
    pub counters: OperatorCounters,
    pub api_sweep: BTreeMap<String, f64>,
    pub calls: measure::CallStats,
    /// Calls in the sweep beyond an account's first that were due by the operator's own
    /// schedule, and calls that were not due.
    pub sweep_repeats: usize,
    pub sweep_undue: usize,
    pub restart: Restart,
    pub revocation_ms: Vec<f64>,
    pub next_round: NextRound,
    pub refresh: Option<refresh::RefreshRun>,
    pub failures: Vec<String>,
    /// 1-minute load average of the machine when the size started (other work on the box).
    pub load_before: f64,
    pub api_costs: apicost::ApiCosts,
}

#[derive(Clone, Debug, Default)]
pub struct Restart {
    pub ready_secs: f64,
    pub reconciled_secs: f64,
    pub observed_secs: f64,
    pub calls: usize,
    /// Of `calls`: due by the schedule the operator logged before, and not due.
    pub due_calls: usize,
    pub undue_calls: usize,
    pub counters: OperatorCounters,
    pub api: BTreeMap<String, f64>,
    pub cpu_secs: f64,
    pub hwm_kib: u64,
    /// Peak RSS of the restarted operator at the end: after the refresh scenario, the
    /// revocations and the Events both publish.
    pub hwm_after_kib: u64,
    /// `relink_connection_ready` series the restarted operator exports (one per connection
    /// before the restart).
    pub ready_series: usize,
}

/// When the next round of checks is due, from `status.nextCheckTime` after the sweep.
#[derive(Clone, Debug, Default)]
pub struct NextRound {
    /// Seconds between the 1st and 99th percentile of `nextCheckTime`.
    pub spread_secs: f64,
    /// Busiest 10-second bin, in checks per second.
    pub peak_per_sec: f64,
    /// N / interval: the rate if checks were spread evenly over the interval.
    pub flat_per_sec: f64,
    /// Provider calls a connection gets in its first interval: its first check, plus one if the
    /// check after it is scheduled less than an interval later (from `nextCheckTime - lastCheckTime`).
    pub first_interval_calls: f64,
    /// Interval / mean gap after a later (not first) check, from requested checks on a sample:
    /// provider calls per connection per interval once a connection is established.
    pub later_calls_per_interval: f64,
    /// Mean JSON size of a checked connection without `managedFields` (what the operator caches).
    pub object_bytes: f64,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn relink_bin(args: &Args) -> PathBuf {
    args.relink_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_relink")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let machine = report::machine();
    // Read now: the binaries were just built from this tree.
    let revision = report::revision();
    eprintln!("[bench] machine: {machine}");
    let mut runs = Vec::new();
    let mut sizes: Vec<(usize, usize)> = (args.connections.iter())
        .map(|&n| (n, args.unrelated_secrets))
        .collect();
    // At 10,000 connections when that size is measured (the issue's figure), else the largest.
    let heavy_at = (args.connections.iter())
        .find(|&&n| n == 10_000)
        .or(args.connections.iter().max());
    if let Some(&n) = heavy_at
        && args.heavy_secrets > 0
    {
        sizes.push((n, args.heavy_secrets));
    }
    for (n, unrelated) in sizes {
        eprintln!(
            "\n[bench] === {n} connections, {unrelated} unrelated Secrets, latency {} ms, concurrency {} ===",
            args.latency_ms, args.concurrency
        );
        match run_size(&args, n, unrelated).await {
            Ok(run) => {
                eprintln!("{}", report::details(&args, &run));
                runs.push(run);
            }
            Err(e) => {
                eprintln!("[bench] {n} connections failed: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let text = report::markdown(&args, &machine, &revision, &runs);
    println!("{text}");
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("[bench] cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("[bench] report written to {}", path.display());
    }
    let failures: Vec<&String> = runs.iter().flat_map(|r| &r.failures).collect();
    for f in &failures {
        eprintln!("[bench] invariant failed: {f}");
    }
    if args.strict && !failures.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One size on its own control plane; every process it starts is stopped before it returns.
async fn run_size(args: &Args, n: usize, unrelated: usize) -> Result<Run> {
    let cp = ControlPlane::start(args.keep).await?;
    let mut sandbox = None;
    let result = measure_size(args, (n, unrelated), &cp, &mut sandbox).await;
    if let Some(mut s) = sandbox {
        Daemon::stop(&mut s, Duration::from_secs(5)).await;
    }
    cp.stop().await;
    result
}

async fn measure_size(
    args: &Args,
    (n, unrelated): (usize, usize),
    cp: &ControlPlane,
    sandbox_proc: &mut Option<Daemon>,
) -> Result<Run> {
    let mut run = Run {
        n,
        unrelated,
        load_before: report::load_average(),
        ..Default::default()
    };
    let client = cp.client()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;

    let port = free_port()?;
    let sandbox = format!("http://127.0.0.1:{port}");
    *sandbox_proc = Some(Daemon::spawn(
        "sandbox",
        &relink_bin(args),
        &[
            "sandbox".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--latency-ms".into(),
            args.latency_ms.to_string(),
            "--reuse-detection".into(),
        ],
        &[],
        &cp.dir.join("sandbox.log"),
        None,
    )?);
    wait_until("the sandbox", Duration::from_secs(20), || async {
        http.get(format!("{sandbox}/sandbox/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await?;

    let created = Instant::now();
    fixtures::namespaces(&client).await?;
    fixtures::provider(&client, &sandbox).await?;
    fixtures::unrelated_secrets(&client, unrelated, args.create_concurrency).await?;
    let conns = fixtures::connections(&client, &http, &sandbox, n, args.create_concurrency).await?;
    run.create_secs = created.elapsed().as_secs_f64();

    eprintln!(
        "[bench] bare loop: {n} introspections, {} in flight",
        args.concurrency
    );
    let bare_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let sandbox_pid = sandbox_proc.as_ref().map_or(0, Daemon::pid);
    let (me0, sb0) = (cpu_time(std::process::id())?, cpu_time(sandbox_pid)?);
    run.bare_secs = measure::bare_loop(&bare_http, &sandbox, &conns, args.concurrency as usize)
        .await?
        .as_secs_f64();
    drop(bare_http);
    let (me1, sb1) = (cpu_time(std::process::id())?, cpu_time(sandbox_pid)?);
    run.bare_client_cpu_ms = (me1 - me0).as_secs_f64() * 1000.0 / n as f64;
    run.sandbox_cpu_bare_ms = (sb1 - sb0).as_secs_f64() * 1000.0 / n as f64;
    eprintln!("[bench] bare loop took {:.2} s", run.bare_secs);
    measure::clear_calls(&http, &sandbox).await?;

    let api_before = cp.request_counts(&client).await?;
    let (cp0, sb0) = (cp.cpu_time()?, cpu_time(sandbox_pid)?);
    let metrics_port = free_port()?;
    let metrics = format!("http://127.0.0.1:{metrics_port}");
    let spawned_ms = now_ms();
    let spawned = Instant::now();
    let mut op = start_operator(args, cp, metrics_port, "operator-1")?;
    eprintln!("[bench] operator started (pid {})", op.pid());

    // The sweep: operator CPU every 100 ms (a cheap /proc read), its counters once a second,
    // until every connection is checked and written.
    let deadline = Duration::from_secs(180) + Duration::from_secs_f64(run.bare_secs * 20.0);
    let mut cpu_samples: Vec<(i64, Duration)> = vec![(spawned_ms, Duration::ZERO)];
    let mut scrapes_at: Vec<i64> = Vec::new();
    let mut counters = OperatorCounters::default();
    let mut last_report = Instant::now();
    for tick in 1u64.. {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(s) = op.exited() {
            bail!("the operator exited ({s}):\n{}", op.tail(30));
        }
        cpu_samples.push((now_ms(), cpu_time(op.pid())?));
        if !tick.is_multiple_of(10) {
            continue;
        }
        scrapes_at.push(now_ms());
        counters = measure::operator_counters(&http, &metrics)
            .await
            .unwrap_or_default();
        if counters.checked_connections >= n as f64 && counters.status_writes >= n as f64 {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "[bench] checked {}/{n} ({:.0} s)",
                counters.checked_connections,
                spawned.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if spawned.elapsed() > deadline {
            bail!(
                "sweep not finished after {:.0} s: {} of {n} checked",
                deadline.as_secs_f64(),
                counters.checked_connections
            );
        }
    }
    let cpu_end = cpu_time(op.pid())?;
    run.controlplane_cpu_ms = (cp.cpu_time()? - cp0).as_secs_f64() * 1000.0 / n as f64;
    run.sandbox_cpu_sweep_ms = (cpu_time(sandbox_pid)? - sb0).as_secs_f64() * 1000.0 / n as f64;
    let api_after = cp.request_counts(&client).await?;
    run.api_sweep = delta(&api_before, &api_after);
    run.counters = counters;
    run.cpu_total_secs = cpu_end.as_secs_f64();
    eprintln!(
        "[bench] sweep done: {} checks, {} status writes",
        counters.checks, counters.status_writes
    );

    let calls = measure::introspections(&http, &sandbox).await?;
    run.calls = call_stats(&calls);
    run.startup_secs = (run.calls.first_ms - spawned_ms) as f64 / 1000.0;
    run.sweep_secs = (run.calls.last_first_ms - spawned_ms) as f64 / 1000.0;
    run.checking_secs = (run.calls.last_first_ms - run.calls.first_ms) as f64 / 1000.0
        + args.latency_ms as f64 / 1000.0;
    let op1_log = op.log.clone();
    let name_of = |account: &str| account.replacen("acct-", "chan-", 1);
    (run.sweep_repeats, run.sweep_undue) =
        measure::undue_calls(&calls, &measure::logged_checks(&[&op1_log]), name_of);
    if counters.valid != counters.checks {
        run.failures.push(format!(
            "{n}: {} of {} checks found the token valid",
            counters.valid, counters.checks
        ));
    }
    // A connection waiting for its provider waits in the due queue or a line, not in a
    // reconcile of its own: one reconcile per check, bar a few (a trigger, a lagging cache).
    if counters.reconciles > counters.checks * 1.1 {
        run.failures.push(format!(
            "{n}: {} reconciles for {} checks in the sweep",
            counters.reconciles, counters.checks
        ));
    }
    if run.calls.distinct_accounts != n || run.sweep_undue != 0 {
        run.failures.push(format!(
            "{n}: the sweep reached {} of {n} accounts and made {} calls that were not due",
            run.calls.distinct_accounts, run.sweep_undue
        ));
    }

    // CPU of the checking phase: from the last sample before the first provider call was sent.
    run.scrape_cost_ms = scrape_cost(&op, &http, &metrics).await?;
    let first_sent_ms = run.calls.first_ms - args.latency_ms as i64;
    let cpu_at_first = cpu_samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= first_sent_ms)
        .map_or(Duration::ZERO, |(_, cpu)| *cpu);
    run.scrapes = scrapes_at.iter().filter(|t| **t > first_sent_ms).count();
    run.cpu_startup_secs = cpu_at_first.as_secs_f64();
    run.cpu_checking_secs =
        (cpu_end - cpu_at_first).as_secs_f64() - run.scrapes as f64 * run.scrape_cost_ms / 1000.0;
    let (rss, hwm) = memory_kib(op.pid())?;
    run.rss_end_kib = rss;
    run.hwm_kib = hwm;

    run.next_round = next_round(&client, n).await?;

    // Restart: no provider call and no write may follow from a restart.
    measure::clear_calls(&http, &sandbox).await?;
    let api_before = cp.request_counts(&client).await?;
    op.stop(Duration::from_secs(30)).await;
    let restarted = Instant::now();
    let mut op = start_operator(args, cp, metrics_port, "operator-2")?;
    eprintln!("[bench] operator restarted (pid {})", op.pid());
    wait_until(
        "the restarted operator's /readyz",
        Duration::from_secs(180),
        || measure::ready(&http, &metrics),
    )
    .await?;
    run.restart.ready_secs = restarted.elapsed().as_secs_f64();
    // Every connection looked at: its ready gauge is exported (by the look that finds it not
    // due, or the check of one that is).
    let reconciled = wait_until(
        "the restarted operator to look at every connection",
        Duration::from_secs(300),
        || async {
            measure::series(&http, &metrics, "relink_connection_ready{")
                .await
                .is_ok_and(|c| c >= n)
        },
    )
    .await;
    if let Err(e) = reconciled {
        run.failures.push(format!("{n}: {e}"));
    }
    run.restart.reconciled_secs = restarted.elapsed().as_secs_f64();
    eprintln!(
        "[bench] restarted operator looked at everything in {:.1} s; watching provider calls for {} s",
        run.restart.reconciled_secs, args.restart_window_secs
    );
    tokio::time::sleep(Duration::from_secs(args.restart_window_secs)).await;
    run.restart.observed_secs = restarted.elapsed().as_secs_f64();
    let restart_calls = measure::introspections(&http, &sandbox).await?;
    run.restart.calls = restart_calls.len();
    (run.restart.due_calls, run.restart.undue_calls) = measure::undue_calls(
        &restart_calls,
        &measure::logged_checks(&[&op1_log, &op.log]),
        name_of,
    );
    run.restart.counters = measure::operator_counters(&http, &metrics).await?;
    run.restart.ready_series = measure::series(&http, &metrics, "relink_connection_ready{").await?;
    run.restart.api = delta(&api_before, &cp.request_counts(&client).await?);
    run.restart.cpu_secs = cpu_time(op.pid())?.as_secs_f64();
    run.restart.hwm_kib = memory_kib(op.pid())?.1;
    let due = run.restart.due_calls as f64;
    let extra_writes = (run.restart.counters.status_writes - due).max(0.0);
    let extra_api = (writes(&run.restart.api) - due).max(0.0);
    if run.restart.undue_calls != 0 || extra_writes != 0.0 || extra_api != 0.0 {
        run.failures.push(format!(
            "{n}: after the restart: {} provider calls that were not due, {extra_writes} status writes and {extra_api} API writes beyond scheduled checks",
            run.restart.undue_calls
        ));
    }

    run.next_round.later_calls_per_interval = later_gaps(&client, n).await?;
    if args.refresh_secrets > 0 {
        let f = refresh::run(
            &client,
            &http,
            &sandbox,
            args.refresh_secrets,
            args.create_concurrency,
        )
        .await?;
        if f.calls != f.secrets || f.refused != 0 || f.refreshed_ready != f.connections {
            run.failures.push(format!(
                "{n}: refresh scenario: {} refresh calls for {} Secrets, {} refused, {}/{} refreshed and Ready",
                f.calls, f.secrets, f.refused, f.refreshed_ready, f.connections
            ));
        }
        run.refresh = Some(f);
    }
    let (times, failed) = revocations(args, &client, &http, &sandbox, &conns).await?;
    run.revocation_ms = times;
    run.failures
        .extend(failed.into_iter().map(|e| format!("{n}: {e}")));
    run.restart.hwm_after_kib = memory_kib(op.pid())?.1;
    op.stop(Duration::from_secs(30)).await;
    eprintln!(
        "[bench] minimal-operator loop: GET Secret + introspection + status apply, {n} times, {} in flight",
        args.concurrency
    );
    let me0 = cpu_time(std::process::id())?;
    run.minimal_secs =
        apicost::minimal_loop(&client, &sandbox, &conns, args.concurrency as usize).await?;
    run.minimal_cpu_ms = (cpu_time(std::process::id())? - me0).as_secs_f64() * 1000.0 / n as f64;
    eprintln!(
        "[bench] minimal-operator loop took {:.2} s",
        run.minimal_secs
    );
    if args.api_probe_ops > 0 {
        eprintln!(
            "[bench] API cost probe: {} requests of each kind",
            args.api_probe_ops.min(n)
        );
        run.api_costs = apicost::measure(
            cp,
            &client,
            &conns,
            args.api_probe_ops,
            args.concurrency as usize,
        )
        .await?;
    }
    Ok(run)
}

fn start_operator(args: &Args, cp: &ControlPlane, metrics_port: u16, name: &str) -> Result<Daemon> {
    let c = args.concurrency.to_string();
    // The operator's default overall concurrency unless asked otherwise: what users run.
    let overall = args
        .operator_concurrency
        .map(|o| ["--concurrency".to_owned(), o.to_string()]);
    let run_args: Vec<String> = [
        "run",
        "--operator-namespace",
        OPERATOR_NS,
        "--allow-namespaced-endpoint-hosts",
        "127.0.0.1",
        "--per-provider-concurrency",
        &c,
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
        "--callback-addr",
        "127.0.0.1:0",
        "--log-level",
        &args.log_level,
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(overall.into_iter().flatten())
    .collect();
    Daemon::spawn(
        name,
        &relink_bin(args),
        &run_args,
        &[("KUBECONFIG", cp.kubeconfig.as_path())],
        &cp.dir.join(format!("{name}.log")),
        None,
    )
}

/// Polls `f` every 200 ms until it is true; fails after `timeout`.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_every(what, timeout, Duration::from_millis(200), f).await
}

async fn wait_until_every<F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(every).await;
    }
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// Requests that change something (anything but GET, LIST, WATCH).
pub fn writes(api: &BTreeMap<String, f64>) -> f64 {
    api.iter()
        .filter(|(k, _)| {
            let verb = k.split(' ').next().unwrap_or("");
            !matches!(verb, "GET" | "LIST" | "WATCH")
        })
        .fold(0.0, |sum, (_, v)| sum + v)
}

/// Operator CPU for one `/metrics` scrape, measured on the idle operator after the sweep and
/// taken out of the per-check figure (the benchmark scrapes once a second).
async fn scrape_cost(op: &Daemon, http: &reqwest::Client, metrics: &str) -> Result<f64> {
    const SCRAPES: u32 = 20;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_from = (Instant::now(), cpu_time(op.pid())?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c1 = cpu_time(op.pid())?;
    let idle_per_sec = (c1 - idle_from.1).as_secs_f64() / idle_from.0.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..SCRAPES {
        measure::operator_counters(http, metrics).await?;
    }
    let c2 = cpu_time(op.pid())?;
    let busy = (c2 - c1).as_secs_f64() - idle_per_sec * started.elapsed().as_secs_f64();
    Ok((busy / SCRAPES as f64 * 1000.0).max(0.0))
}

/// The next round as scheduled: `status.nextCheckTime` of every connection, in 10 s bins.
async fn next_round(client: &kube::Client, n: usize) -> Result<NextRound> {
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let mut next: Vec<f64> = Vec::with_capacity(n);
    let mut token: Option<String> = None;
    let mut bytes = 0usize;
    let mut gaps: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..1000 {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let mut page = api.list(&lp).await.context("list connections")?;
        for c in &mut page.items {
            c.metadata.managed_fields = None;
            bytes += serde_json::to_vec(c).map_or(0, |v| v.len());
        }
        gaps.extend(page.items.iter().filter_map(|c| {
            let s = c.status.as_ref()?;
            let (last, next) = (s.last_check_time.as_ref()?, s.next_check_time.as_ref()?);
            Some(next.0.duration_since(last.0).as_secs_f64() / INTERVAL_SECS)
        }));
        next.extend(page.items.iter().filter_map(|c| {
            let t = c.status.as_ref()?.next_check_time.as_ref()?;
            Some(t.0.as_millisecond() as f64 / 1000.0)
        }));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    let (lo, hi) = (
        measure::quantile(&next, 0.01),
        measure::quantile(&next, 0.99),
    );
    let min = next.iter().copied().fold(f64::INFINITY, f64::min);
    let mut bins: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &next {
        *bins.entry(((t - min) / 10.0) as i64).or_default() += 1;
    }
    Ok(NextRound {
        spread_secs: hi - lo,
        peak_per_sec: bins.values().copied().max().unwrap_or(0) as f64 / 10.0,
        flat_per_sec: n as f64 / INTERVAL_SECS,
        object_bytes: bytes as f64 / next.len().max(1) as f64,
        first_interval_calls: 1.0
            + gaps.iter().filter(|g| **g < 0.999).count() as f64 / gaps.len().max(1) as f64,
        later_calls_per_interval: f64::NAN,
    })
}

/// Requests a check on a sample of established connections (not the ones revoked later) and
/// returns interval / mean(nextCheckTime - lastCheckTime) after it.
async fn later_gaps(client: &kube::Client, n: usize) -> Result<f64> {
    const SAMPLE: usize = 20;
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let count = SAMPLE.min(n / 2).max(1);
    let value = now_ms().to_string();
    let names: Vec<String> = (0..count)
        .map(|j| fixtures::connection_name((2 * j + 1) * n / (2 * count)))
        .collect();
    let patch = serde_json::json!({"metadata": {"annotations": {
        CHECK_REQUESTED_ANNOTATION: value
    }}});
    for name in &names {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotate {name}"))?;
    }
    let mut gaps = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in &names {
        loop {
            let status = api.get(name).await?.status.unwrap_or_default();
            if status.last_handled_check_request.as_deref() == Some(value.as_str()) {
                if let (Some(last), Some(next)) = (status.last_check_time, status.next_check_time) {
                    gaps.push(next.0.duration_since(last.0).as_secs_f64() / INTERVAL_SECS);
                }
                break;
            }
            if Instant::now() > deadline {
                bail!("requested checks not handled after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(gaps.len() as f64 / gaps.iter().sum::<f64>())
}

/// Revokes a token at the sandbox, sets the check-request annotation, and times until
/// `Ready=False` can be read back through the API; one connection at a time.
async fn revocations(
    args: &Args,
    client: &kube::Client,
    http: &reqwest::Client,
    sandbox: &str,
    conns: &[Conn],
) -> Result<(Vec<f64>, Vec<String>)> {
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let count = args.revocations.min(conns.len());
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    for k in 0..count {
        let c = &conns[k * conns.len() / count];
        measure::revoke(http, sandbox, &c.token).await?;
        let started = Instant::now();
        let patch = serde_json::json!({"metadata": {"annotations": {
            CHECK_REQUESTED_ANNOTATION: now_ms().to_string()
        }}});
        api.patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("annotate {}", c.name))?;
        let seen = wait_until_every(
            &format!("Ready=False on {}", c.name),
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async {
                api.get(&c.name).await.ok().is_some_and(|o| {
                    o.status
                        .and_then(|s| s.condition(ConditionType::Ready).map(|c| c.status.clone()))
                        .as_deref()
                        == Some("False")
                })
            },
        )
        .await;
        match seen {
            Ok(()) => out.push(started.elapsed().as_secs_f64() * 1000.0),
            Err(e) => failed.push(e.to_string()),
        }
    }
    eprintln!(
        "[bench] revocation visible after {:.0} ms (median of {})",
        measure::median(&out),
        out.len()
    );
    Ok((out, failed))
}
