//! The Markdown report: one column per size, one row per figure, targets from issues 9 and 17.

use std::fmt::Write as _;

use crate::{Args, INTERVAL_SECS, Run, writes};

/// CPU model, cores, memory and kernel of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// The commit the operator was built from, marked when `src/` has uncommitted changes.
pub fn revision() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => match git(&["status", "--porcelain", "--", "src", "Cargo.lock"]) {
            Some(changes) if !changes.is_empty() => format!("{rev} + uncommitted changes in src/"),
            _ => rev,
        },
        None => "unknown revision".into(),
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The higher of the two peaks measured right after the sweep and after the restart.
fn peak(r: &Run) -> u64 {
    r.hwm_kib
        .max(r.restart.hwm_kib)
        .max(r.restart.hwm_after_kib)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn per_check_ms(r: &Run) -> f64 {
    r.cpu_checking_secs / r.counters.checks.max(1.0) * 1000.0
}

fn api_total(r: &Run) -> f64 {
    r.api_sweep.values().sum()
}

/// `value`, marked when it misses its target.
fn mark(value: String, ok: bool) -> String {
    if ok { value } else { format!("{value} ✗") }
}

/// The per-size block printed as each size finishes.
pub fn details(args: &Args, r: &Run) -> String {
    let mut out = String::new();
    let n = r.n as f64;
    let _ = writeln!(out, "[bench] --- {} connections ---", r.n);
    let _ = writeln!(
        out,
        "  set-up {:.0} s; bare loop {:.2} s; operator: first check after {:.2} s, sweep {:.2} s (ratio {:.2}), checking phase {:.2} s (ratio {:.2})",
        r.create_secs,
        r.bare_secs,
        r.startup_secs,
        r.sweep_secs,
        r.sweep_secs / r.bare_secs,
        r.checking_secs,
        r.checking_secs / r.bare_secs
    );
    let _ = writeln!(
        out,
        "  minimal-operator loop (GET Secret, call, status apply) {:.2} s: sweep / minimal {:.2}; its client CPU {:.3} ms per check",
        r.minimal_secs,
        r.sweep_secs / r.minimal_secs,
        r.minimal_cpu_ms
    );
    let _ = writeln!(
        out,
        "  CPU: {:.2} s in all, {:.2} s before the first check, {:.2} s checking = {:.3} ms/check ({} scrapes at {:.1} ms removed)",
        r.cpu_total_secs,
        r.cpu_startup_secs,
        r.cpu_checking_secs,
        per_check_ms(r),
        r.scrapes,
        r.scrape_cost_ms
    );
    let _ = writeln!(
        out,
        "  other CPU per call/check: bare client {:.3} ms; kube-apiserver+etcd {:.3} ms during the sweep; sandbox {:.3} ms (bare loop) / {:.3} ms (sweep)",
        r.bare_client_cpu_ms, r.controlplane_cpu_ms, r.sandbox_cpu_bare_ms, r.sandbox_cpu_sweep_ms
    );
    let _ = writeln!(
        out,
        "  memory: VmHWM {:.1} MiB (VmRSS at end {:.1} MiB); after restart VmHWM {:.1} MiB, {:.1} MiB after refreshes, revocations and Events",
        mib(r.hwm_kib),
        mib(r.rss_end_kib),
        mib(r.restart.hwm_kib),
        mib(r.restart.hwm_after_kib)
    );
    let _ = writeln!(
        out,
        "  operator counters: {} checks, {} status writes, {} reconciles",
        r.counters.checks, r.counters.status_writes, r.counters.reconciles
    );
    let _ = writeln!(
        out,
        "  apiserver requests during the sweep: {:.0} ({:.2} per check):",
        api_total(r),
        api_total(r) / n
    );
    for (k, v) in &r.api_sweep {
        let _ = writeln!(out, "    {k:<40} {v:>8.0}  {:>6.3}/check", v / n);
    }
    let peak = r.calls.per_second.iter().copied().max().unwrap_or(0);
    let _ = writeln!(
        out,
        "  provider calls: {} for {} accounts (max {} per account; {} repeats due by the schedule, {} not due); calls/s peak {peak}, mean {:.0}; per second: {:?}",
        r.calls.total,
        r.calls.distinct_accounts,
        r.calls.max_per_account,
        r.sweep_repeats,
        r.sweep_undue,
        r.calls.total as f64 / r.checking_secs.max(0.001),
        r.calls.per_second
    );
    let _ = writeln!(
        out,
        "  next round (status.nextCheckTime): spread over {:.0} s, peak {:.1} checks/s vs {:.1}/s if flat over {INTERVAL_SECS:.0} s",
        r.next_round.spread_secs, r.next_round.peak_per_sec, r.next_round.flat_per_sec
    );
    let _ = writeln!(
        out,
        "  provider calls per connection: {:.2} in its first interval, {:.3} per later interval (from the scheduled gaps)",
        r.next_round.first_interval_calls, r.next_round.later_calls_per_interval
    );
    let _ = writeln!(
        out,
        "  restart: relink_connection_ready series after the restart: {} (before: {})",
        r.restart.ready_series, r.n
    );
    let _ = writeln!(
        out,
        "  restart: ready after {:.1} s, everything looked at after {:.1} s; in {:.0} s: {} provider calls ({} due by the schedule, {} not due), {} status writes, {} API writes, {} requests in all; CPU {:.2} s",
        r.restart.ready_secs,
        r.restart.reconciled_secs,
        r.restart.observed_secs,
        r.restart.calls,
        r.restart.due_calls,
        r.restart.undue_calls,
        r.restart.counters.status_writes,
        writes(&r.restart.api),
        r.restart.api.values().sum::<f64>(),
        r.restart.cpu_secs
    );
    for (kind, cpu, wall) in &r.api_costs.kinds {
        let _ = writeln!(
            out,
            "  API cost probe: {kind:<28} {cpu:>6.2} ms kube-apiserver+etcd CPU, {:>5.0} requests/s",
            1000.0 / wall
        );
    }
    let _ = writeln!(
        out,
        "  revocation -> Ready=False: {:?} ms (latency {} ms)",
        r.revocation_ms
            .iter()
            .map(|v| v.round() as i64)
            .collect::<Vec<_>>(),
        args.latency_ms
    );
    if let Some(f) = &r.refresh {
        let _ = writeln!(
            out,
            "  refresh scenario: {} Secrets x {} connections: {} refresh calls ({:.2} per connection, at most {} per Secret), {} refused, {}/{} refreshed and Ready in {:.1} s",
            f.secrets,
            crate::refresh::PER_SECRET,
            f.calls,
            f.per_connection(),
            f.max_per_secret,
            f.refused,
            f.refreshed_ready,
            f.connections,
            f.secs
        );
    }
    out
}

/// The results section of docs/performance.md.
pub fn markdown(args: &Args, machine: &str, revision: &str, runs: &[Run]) -> String {
    let mut out = String::new();
    let date = jiff::Zoned::now().strftime("%Y-%m-%d").to_string();
    let _ = writeln!(
        out,
        "Measured {date} on {machine}; operator built from {revision}.\n"
    );
    let overall = match args.operator_concurrency {
        Some(c) => format!(
            "`--concurrency {c} --per-provider-concurrency {}`",
            args.concurrency
        ),
        None => format!(
            "`--per-provider-concurrency {}` and its default `--concurrency`, {}",
            args.concurrency,
            relink::controller::default_concurrency(usize::from(args.concurrency))
        ),
    };
    let _ = writeln!(
        out,
        "Command: `cargo bench --bench scale -- --connections {} --latency-ms {} --concurrency {} --unrelated-secrets {}{}{}`  ",
        args.connections
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.latency_ms,
        args.concurrency,
        args.unrelated_secrets,
        args.operator_concurrency
            .map(|c| format!(" --operator-concurrency {c}"))
            .unwrap_or_default(),
        if args.heavy_secrets > 0 {
            format!(" --heavy-secrets {}", args.heavy_secrets)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "Provider latency {} ms; bare loop, minimal-operator loop and operator all at {} provider calls in flight (operator {overall}); \
         {} unrelated Secrets of 2-4 KiB in 20 other namespaces; `checkInterval: 15m`. \
         ✗ marks a missed target.\n",
        args.latency_ms, args.concurrency, args.unrelated_secrets
    );

    let mut header = "| Figure | Target |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for r in runs {
        if r.unrelated == args.unrelated_secrets {
            let _ = write!(header, " {} |", thousands(r.n));
        } else {
            let _ = write!(
                header,
                " {} + {} Secrets |",
                thousands(r.n),
                thousands(r.unrelated)
            );
        }
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let mut row = |name: &str, target: &str, cell: &dyn Fn(usize, &Run) -> String| {
        let mut line = format!("| {name} | {target} |");
        for (i, r) in runs.iter().enumerate() {
            let _ = write!(line, " {} |", cell(i, r));
        }
        let _ = writeln!(out, "{line}");
    };
    row("Load average when the size started (1 min)", "", &|_, r| {
        format!("{:.1}", r.load_before)
    });
    row("Set-up: objects created (s)", "", &|_, r| {
        format!("{:.0}", r.create_secs)
    });
    row("Bare-client loop, N calls (s)", "", &|_, r| {
        format!("{:.2}", r.bare_secs)
    });
    row(
        "Minimal-operator loop, N × (GET Secret, call, status apply) (s)",
        "",
        &|_, r| format!("{:.2}", r.minimal_secs),
    );
    row("Operator sweep from process start (s)", "", &|_, r| {
        format!("{:.2}", r.sweep_secs)
    });
    row(
        "… of which start-up until the first check (s)",
        "",
        &|_, r| format!("{:.2}", r.startup_secs),
    );
    row("**Sweep / bare loop**", "≤ 1.1×", &|_, r| {
        let v = r.sweep_secs / r.bare_secs;
        mark(format!("{v:.2}×"), v <= 1.1)
    });
    row("Checking phase / bare loop", "≤ 1.1×", &|_, r| {
        let v = r.checking_secs / r.bare_secs;
        mark(format!("{v:.2}×"), v <= 1.1)
    });
    row("**Sweep / minimal-operator loop**", "≤ 1.1×", &|_, r| {
        let v = r.sweep_secs / r.minimal_secs;
        mark(format!("{v:.2}×"), v <= 1.1)
    });
    row("Operator CPU per check (ms)", "", &|_, r| {
        format!("{:.3}", per_check_ms(r))
    });
    row(
        "**Operator CPU per check / minimal-operator loop's**",
        "≤ 1.1×",
        &|_, r| {
            let v = per_check_ms(r) / r.minimal_cpu_ms;
            mark(format!("{v:.2}×"), v <= 1.1)
        },
    );
    row(
        "Bare client CPU per call (ms), for comparison",
        "",
        &|_, r| format!("{:.3}", r.bare_client_cpu_ms),
    );
    row(
        "Minimal-operator loop CPU per check (ms), for comparison",
        "",
        &|_, r| format!("{:.3}", r.minimal_cpu_ms),
    );
    row("Operator CPU before the first check (s)", "", &|_, r| {
        format!("{:.2}", r.cpu_startup_secs)
    });
    row("kube-apiserver + etcd CPU per check (ms)", "", &|_, r| {
        format!("{:.2}", r.controlplane_cpu_ms)
    });
    row(
        "… per request: GET Secret / status SSA / status merge patch / POST Event (ms)",
        "",
        &|_, r| {
            let k = &r.api_costs.kinds;
            if k.is_empty() {
                return "–".into();
            }
            k.iter()
                .map(|(_, cpu, _)| format!("{cpu:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        },
    );
    row(
        "**Peak RSS**, first sweep (MiB)",
        "≤ 48 at 10k",
        &|_, r| {
            let v = mib(r.hwm_kib);
            mark(format!("{v:.1}"), r.n != 10_000 || v <= 48.0)
        },
    );
    row(
        "Peak RSS, restart on the checked fleet (MiB)",
        "≤ 48 at 10k",
        &|_, r| {
            let v = mib(r.restart.hwm_kib);
            mark(format!("{v:.1}"), r.n != 10_000 || v <= 48.0)
        },
    );
    row(
        "Peak RSS, restarted operator after refreshes, revocations and their Events (MiB)",
        "≤ 48 at 10k",
        &|_, r| {
            let v = mib(r.restart.hwm_after_kib);
            mark(format!("{v:.1}"), r.n != 10_000 || v <= 48.0)
        },
    );
    row(
        "Peak RSS over the same size with fewer unrelated Secrets (MiB)",
        "≤ 8",
        &|i, r| match runs[..i]
            .iter()
            .find(|p| p.n == r.n && p.unrelated < r.unrelated)
        {
            Some(p) => {
                let v = mib(peak(r)) - mib(peak(p));
                mark(format!("{v:+.1}"), v <= 8.0)
            }
            None => "–".into(),
        },
    );
    row(
        "Connection object, JSON without managedFields (KiB)",
        "",
        &|_, r| format!("{:.1}", r.next_round.object_bytes / 1024.0),
    );
    row("Peak RSS per connection (KiB)", "", &|_, r| {
        format!("{:.1}", peak(r) as f64 / r.n as f64)
    });
    row(
        "**Marginal RSS per added connection** (KiB)",
        "≤ 2",
        &|i, r| match i.checked_sub(1).map(|p| &runs[p]) {
            Some(p) if r.n > p.n && r.unrelated == p.unrelated => {
                let v = (peak(r) as f64 - peak(p) as f64) / (r.n - p.n) as f64;
                mark(format!("{v:.1}"), v <= 2.0)
            }
            _ => "–".into(),
        },
    );
    row("Reconciles per check in the sweep", "", &|_, r| {
        format!("{:.2}", r.counters.reconciles / r.counters.checks.max(1.0))
    });
    row("**Status writes per check**", "≤ 1", &|_, r| {
        let v = r.counters.status_writes / r.counters.checks.max(1.0);
        mark(format!("{v:.2}"), v <= 1.0)
    });
    row(
        "**API requests per check** (apiserver, whole first sweep)",
        "≤ 2.05",
        &|_, r| {
            let v = api_total(r) / r.n as f64;
            mark(format!("{v:.2}"), v <= 2.05)
        },
    );
    row(
        "… GET secrets / GET connections / status apply / POST events",
        "",
        &|_, r| {
            let per = |k: &str| r.api_sweep.get(k).copied().unwrap_or(0.0) / r.n as f64;
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                per("GET secrets"),
                per("GET channelconnections"),
                per("APPLY channelconnections/status"),
                per("POST events")
            )
        },
    );
    row(
        "Provider calls per connection in the sweep (repeats due by the schedule / not due)",
        "1, none not due",
        &|_, r| {
            let v = r.calls.total as f64 / r.n as f64;
            mark(
                format!("{v:.2} ({} / {})", r.sweep_repeats, r.sweep_undue),
                r.calls.distinct_accounts == r.n && r.sweep_undue == 0,
            )
        },
    );
    row(
        "Provider calls per connection in its first interval (from the schedule)",
        "exactly 1",
        &|_, r| {
            let v = r.next_round.first_interval_calls;
            mark(format!("{v:.2}"), (v - 1.0).abs() < 0.005)
        },
    );
    row(
        "Provider calls per connection per later interval (from the schedule)",
        "exactly 1",
        &|_, r| {
            let v = r.next_round.later_calls_per_interval;
            mark(format!("{v:.3}"), (v - 1.0).abs() < 0.005)
        },
    );
    row(
        "Provider calls after restart: not due (due by the schedule)",
        "0",
        &|_, r| {
            mark(
                format!(
                    "{} ({}) in {:.0} s",
                    r.restart.undue_calls, r.restart.due_calls, r.restart.observed_secs
                ),
                r.restart.undue_calls == 0,
            )
        },
    );
    row(
        "Writes after restart beyond scheduled checks (status / API)",
        "0",
        &|_, r| {
            let due = r.restart.due_calls as f64;
            let status = (r.restart.counters.status_writes - due).max(0.0);
            let api = (writes(&r.restart.api) - due).max(0.0);
            mark(format!("{status} / {api}"), status == 0.0 && api == 0.0)
        },
    );
    row(
        "`relink_connection_ready` series after restart",
        "N",
        &|_, r| {
            mark(
                r.restart.ready_series.to_string(),
                r.restart.ready_series == r.n,
            )
        },
    );
    row("Restart: ready / all looked at (s)", "", &|_, r| {
        format!(
            "{:.1} / {:.1}",
            r.restart.ready_secs, r.restart.reconciled_secs
        )
    });
    row(
        "**Revoked → `Ready=False` visible**, median (max) ms",
        "≤ 2000",
        &|_, r| {
            let m = crate::measure::median(&r.revocation_ms);
            let max = r.revocation_ms.iter().copied().fold(0.0, f64::max);
            mark(format!("{m:.0} ({max:.0})"), m <= 2000.0 && max <= 2000.0)
        },
    );
    row("Sweep: provider calls/s, peak (mean)", "", &|_, r| {
        let peak = r.calls.per_second.iter().copied().max().unwrap_or(0);
        format!(
            "{peak} ({:.0})",
            r.calls.total as f64 / r.checking_secs.max(0.001)
        )
    });
    row(
        "Next round: checks/s, busiest 10 s vs flat",
        "flat",
        &|_, r| {
            let nr = &r.next_round;
            mark(
                format!("{:.1} vs {:.1}", nr.peak_per_sec, nr.flat_per_sec),
                nr.peak_per_sec <= 2.0 * nr.flat_per_sec.max(1.0),
            )
        },
    );
    row("Next round spread over (s)", "≈ 900", &|_, r| {
        format!("{:.0}", r.next_round.spread_secs)
    });
    row(
        "Refresh scenario: refresh calls per connection (2 connections per Secret)",
        "0.5",
        &|_, r| match &r.refresh {
            Some(f) => mark(
                format!("{:.2} ({} Secrets)", f.per_connection(), f.secrets),
                f.calls == f.secrets,
            ),
            None => "–".into(),
        },
    );
    row(
        "Refresh scenario: refused refreshes / families revoked",
        "0",
        &|_, r| match &r.refresh {
            Some(f) => mark(f.refused.to_string(), f.refused == 0),
            None => "–".into(),
        },
    );
    out
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
