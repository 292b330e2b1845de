//! Reading the figures: the bare-client loop, the sandbox's call log, the operator's
//! `/metrics`, and small statistics helpers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, stream};
use relink::sandbox::Call;
use serde::Deserialize;

use crate::fixtures::{CLIENT_ID, CLIENT_SECRET, Conn};

/// The physical limit: the same introspection calls the operator makes, from a plain reqwest
/// loop with `concurrency` in flight. Returns the wall time; fails unless every token is active.
pub async fn bare_loop(
    http: &reqwest::Client,
    sandbox: &str,
    conns: &[Conn],
    concurrency: usize,
) -> Result<Duration> {
    #[derive(Deserialize)]
    struct Answer {
        active: bool,
    }
    let url = format!("{sandbox}/oauth/introspect");
    let started = Instant::now();
    let results: Vec<Result<bool>> = stream::iter(conns)
        .map(|c| {
            let req = http
                .post(&url)
                .header("Accept", "application/json")
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .form(&[
                    ("token", c.token.as_str()),
                    ("token_type_hint", "access_token"),
                ]);
            async move {
                let a: Answer = req.send().await?.error_for_status()?.json().await?;
                Ok(a.active)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let active = results.iter().filter(|r| matches!(r, Ok(true))).count();
    if active != conns.len() {
        bail!(
            "bare loop: {active}/{} introspections answered active",
            conns.len()
        );
    }
    Ok(elapsed)
}

/// The sandbox's `/oauth/introspect` calls so far.
pub async fn introspections(http: &reqwest::Client, sandbox: &str) -> Result<Vec<Call>> {
    let calls: Vec<Call> = http
        .get(format!("{sandbox}/sandbox/calls"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("sandbox call log")?;
    Ok(calls
        .into_iter()
        .filter(|c| c.path == "/oauth/introspect")
        .collect())
}

pub async fn clear_calls(http: &reqwest::Client, sandbox: &str) -> Result<()> {
    http.delete(format!("{sandbox}/sandbox/calls"))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

pub async fn revoke(http: &reqwest::Client, sandbox: &str, token: &str) -> Result<()> {
    http.post(format!("{sandbox}/sandbox/revoke"))
        .json(&serde_json::json!({ "access_token": token }))
        .send()
        .await?
        .error_for_status()
        .context("sandbox revoke")?;
    Ok(())
}

/// Sums of the operator's counters that the benchmark reads.
#[derive(Clone, Copy, Debug, Default)]
pub struct OperatorCounters {
    pub checks: f64,
    /// Checks with the verdict `Valid` (every benchmark token is valid until revoked).
    pub valid: f64,
    pub status_writes: f64,
    pub reconciles: f64,
    /// `relink_connection_ready` series: connections this process has checked at least once.
    pub checked_connections: f64,
}

pub async fn operator_counters(http: &reqwest::Client, base: &str) -> Result<OperatorCounters> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(OperatorCounters {
        checks: metric_sum(&text, "relink_checks_total", ""),
        valid: metric_sum(&text, "relink_checks_total", "result=\"Valid\""),
        status_writes: metric_sum(&text, "relink_status_writes_total", ""),
        reconciles: metric_sum(&text, "relink_reconcile_duration_seconds_count", ""),
        checked_connections: text
            .lines()
            .filter(|l| l.starts_with("relink_connection_ready{"))
            .count() as f64,
    })
}

/// How many series of the operator's `/metrics` start with `prefix`.
pub async fn series(http: &reqwest::Client, base: &str, prefix: &str) -> Result<usize> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text.lines().filter(|l| l.starts_with(prefix)).count())
}

/// Sum of the series of `name` whose labels contain `label` (`""`: all) in a
/// Prometheus/OpenMetrics text exposition.
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                let (labels, value) = rest.rsplit_once("} ")?;
                if !labels.contains(label) {
                    return None;
                }
                value
            } else if label.is_empty() {
                rest.strip_prefix(' ')?
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .fold(0.0, |sum, v| sum + v)
}

pub async fn ready(http: &reqwest::Client, base: &str) -> bool {
    match http
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// What the call log says about one sweep.
#[derive(Clone, Debug, Default)]
pub struct CallStats {
    pub total: usize,
    pub distinct_accounts: usize,
    pub max_per_account: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    /// When the last account got its first call: the end of a sweep.
    pub last_first_ms: i64,
    /// Calls answered in each whole second from the first one.
    pub per_second: Vec<usize>,
}

pub fn call_stats(calls: &[Call]) -> CallStats {
    let mut per_account: HashMap<&str, usize> = HashMap::new();
    let mut first_call: HashMap<&str, i64> = HashMap::new();
    for c in calls {
        let account = c.account_id.as_deref().unwrap_or("");
        *per_account.entry(account).or_default() += 1;
        let first = first_call.entry(account).or_insert(c.at_unix_ms);
        *first = (*first).min(c.at_unix_ms);
    }
    let first_ms = calls.iter().map(|c| c.at_unix_ms).min().unwrap_or(0);
    let last_ms = calls.iter().map(|c| c.at_unix_ms).max().unwrap_or(0);
    let mut per_second = vec![0; ((last_ms - first_ms) / 1000 + 1).max(0) as usize];
    for c in calls {
        per_second[((c.at_unix_ms - first_ms) / 1000) as usize] += 1;
    }
    CallStats {
        total: calls.len(),
        distinct_accounts: per_account.len(),
        max_per_account: per_account.values().copied().max().unwrap_or(0),
        first_ms,
        last_ms,
        last_first_ms: first_call.values().copied().max().unwrap_or(0),
        per_second,
    }
}

/// One check as the operator logged it (`checked name=… duration_ms=… next_in_s=…`).
#[derive(Clone, Debug)]
pub struct LoggedCheck {
    pub at_ms: i64,
    /// When the operator scheduled the next check (unix ms, ±1 s).
    pub next_ms: i64,
}

/// The operator's "checked" log lines by connection name, oldest first.
pub fn logged_checks(logs: &[&std::path::Path]) -> HashMap<String, Vec<LoggedCheck>> {
    let mut out: HashMap<String, Vec<LoggedCheck>> = HashMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(": checked ")) {
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(|v| v.trim_matches('"').to_owned())
            };
            let at = line
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let (Some(at), Some(name), Some(took), Some(next)) = (
                at,
                field("name="),
                field("duration_ms=").and_then(|v| v.parse::<i64>().ok()),
                field("next_in_s=").and_then(|v| v.parse::<i64>().ok()),
            ) else {
                continue;
            };
            let at_ms = at.as_millisecond();
            out.entry(name).or_default().push(LoggedCheck {
                at_ms,
                next_ms: at_ms - took + next * 1000,
            });
        }
    }
    for checks in out.values_mut() {
        checks.sort_by_key(|c| c.at_ms);
    }
    out
}

/// Provider calls that were not due: the account had been checked before (per the operator's
/// log) and the call came more than 2 s before the next check that earlier check scheduled.
/// Returns (due repeats, not due); an account's first call ever is neither.
pub fn undue_calls(
    calls: &[Call],
    checks: &HashMap<String, Vec<LoggedCheck>>,
    name_of: impl Fn(&str) -> String,
) -> (usize, usize) {
    const TOLERANCE_MS: i64 = 2000;
    let (mut due, mut undue) = (0, 0);
    for c in calls {
        let name = name_of(c.account_id.as_deref().unwrap_or(""));
        // The log line of a check is written after its provider call is answered, so the
        // previous check is the last one logged before this call.
        let previous = checks
            .get(&name)
            .and_then(|v| v.iter().rev().find(|l| l.at_ms < c.at_unix_ms));
        match previous {
            None => {}
            Some(p) if c.at_unix_ms + TOLERANCE_MS >= p.next_ms => due += 1,
            Some(_) => undue += 1,
        }
    }
    (due, undue)
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Value at quantile `q` (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s[i]
}
