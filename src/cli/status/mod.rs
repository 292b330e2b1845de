//! `relink status` and `relink check`: what relink found out about channel connections, for
//! people at a terminal.
//!
//! - `relink status` (no NAME): one line per connection, with what to do under every connection
//!   that needs a person.
//! - `relink status NAME`: everything about one connection, like `cmctl status certificate`:
//!   conditions, account, scopes, expiry, schedule, the last Events, the re-authorization link
//!   and one line saying what to do.
//! - `relink check NAME`: asks for a check now (the `relink.dev/check-requested-at` annotation),
//!   waits until the operator has handled it, then prints the same detailed view.
//!
//! Exit code 0 when every connection shown is Ready, 1 when one is not (or none was checked
//! yet), 2 when relink could not tell. Installed as `kubectl-relink`, both work as a kubectl
//! plugin (`kubectl relink status NAME`), since the subcommand does not depend on argv\[0\].
//! Nothing here reads a Secret, so no token can be printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use relink::api::{ChannelConnection, ConditionType};

mod actions;
mod cluster;
mod render;
#[cfg(test)]
mod tests;

use cluster::{api_error, connections_in, get_connection};
pub(crate) use cluster::{client_for, config_for, event_time, events_about, request_check};
pub(crate) use render::{as_manager, human_duration, one_line, what_to_do};
use render::{render, render_detail, summarize};

/// Shown under `relink status --help` and `relink check --help`.
const PLUGIN_HELP: &str = "\
Exit code: 0 when every connection shown is Ready, 1 when one is not, 2 when relink cannot tell.

As a kubectl plugin: install (or symlink) the binary as `kubectl-relink` anywhere on PATH, then
  kubectl relink status [NAME] [-n NAMESPACE]
  kubectl relink check NAME [-n NAMESPACE]
work the same way (KUBECONFIG is honoured; pass flags after the subcommand).";

#[derive(Args)]
#[command(after_help = PLUGIN_HELP)]
pub struct StatusArgs {
    /// Only this connection, in detail: conditions, account, scopes, expiry, schedule, the last
    /// Events, the re-authorization link and what to do (needs --namespace unless it is in the
    /// kubeconfig's default namespace).
    pub(super) name: Option<String>,
    /// Only connections in this namespace (default: every namespace, or the kubeconfig's
    /// namespace when NAME is given).
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    pub(super) namespace: Option<String>,
    /// Every namespace (the default without --namespace; as in kubectl).
    #[arg(long, short = 'A')]
    pub(super) all_namespaces: bool,
    /// Only connections whose labels match this selector (e.g. `team=marketing`).
    #[arg(long, short = 'l')]
    pub(super) selector: Option<String>,
    /// Only connections that are not Ready.
    #[arg(long)]
    pub(super) only_broken: bool,
    /// Output format: a table for people, or JSON (one object per connection) for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub(super) output: Output,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    pub(super) kubeconfig: Option<PathBuf>,
}

/// How `relink status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
#[command(after_help = PLUGIN_HELP)]
pub struct CheckArgs {
    /// The connection to check now.
    pub(super) name: String,
    /// Its namespace (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    pub(super) namespace: Option<String>,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    pub(super) kubeconfig: Option<PathBuf>,
    /// Wait until the operator has handled the request (`status.lastHandledCheckRequest`), then
    /// print the connection's status and exit like `relink status NAME`. On by default;
    /// `--wait=false` (or `--no-wait`) only asks and exits 0.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set
    )]
    pub(super) wait: bool,
    /// Only ask for the check; same as --wait=false.
    #[arg(long, conflicts_with = "wait")]
    pub(super) no_wait: bool,
    /// How long to wait for the operator (e.g. `30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    pub(super) timeout: Duration,
}

#[derive(Args)]
#[command(after_help = PLUGIN_HELP)]
pub struct ReauthArgs {
    /// The connection to re-authorize (renewal before a deadline, or handing the channel to
    /// another admin); it may be healthy.
    pub(super) name: String,
    /// Its namespace (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    pub(super) namespace: Option<String>,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    pub(super) kubeconfig: Option<PathBuf>,
    /// How long to wait for the operator to publish the link (e.g. `30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    pub(super) timeout: Duration,
}

/// `relink reauth NAME`: asks for a re-authorization link and prints it once published.
pub fn reauth(args: ReauthArgs) -> ExitCode {
    block_on(actions::reauth(&args))
}

/// `relink status`.
pub fn main(args: StatusArgs) -> ExitCode {
    block_on(run(&args))
}

/// `relink check`.
pub fn check(args: CheckArgs) -> ExitCode {
    block_on(actions::check(&args, false))
}

/// `relink refresh NAME`: a refresh now (even far from expiry), then the check's verdict, in
/// the spirit of `cmctl renew`.
pub fn refresh(args: CheckArgs) -> ExitCode {
    block_on(actions::check(&args, true))
}

/// Runs `f` on a small runtime; `Ok(true)` → 0, `Ok(false)` → 1, an error → 2.
fn block_on(f: impl std::future::Future<Output = Result<bool, String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(f) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints the summary, or the detailed view of NAME; `Ok(true)` when everything shown is Ready.
async fn run(args: &StatusArgs) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    if let Some(name) = &args.name {
        let (api, ns) = connections_in(&client, args.namespace.as_deref());
        let conn = get_connection(&api, name, &ns).await?;
        let events = events_about(&client, &conn).await;
        let now = jiff::Timestamp::now();
        match args.output {
            Output::Table => print!("{}", render_detail(&conn, &events, now)),
            Output::Json => println!("{}", as_json(std::slice::from_ref(&conn), now)),
        }
        return Ok(summarize(&conn, now).ready);
    }
    let mut params = ListParams::default();
    if let Some(sel) = &args.selector {
        params = params.labels(sel);
    }
    let api = match &args.namespace {
        Some(ns) => Api::<ChannelConnection>::namespaced(client, ns),
        None => Api::<ChannelConnection>::all(client),
    };
    let mut list = api.list(&params).await.map_err(api_error)?.items;
    let now = jiff::Timestamp::now();
    if args.only_broken {
        list.retain(|c| !summarize(c, now).ready);
    }
    if args.output == Output::Json {
        println!("{}", as_json(&list, now));
        return Ok(list.iter().all(|c| summarize(c, now).ready));
    }
    if list.is_empty() && args.only_broken {
        println!("Every ChannelConnection shown is Ready.");
        return Ok(true);
    }
    if list.is_empty() {
        let r#where = args
            .namespace
            .as_deref()
            .map(|ns| format!("namespace {ns}"))
            .unwrap_or_else(|| "any namespace".to_owned());
        println!("No ChannelConnections in {where}.");
        return Ok(true);
    }
    print!("{}", render(&list, now));
    Ok(list.iter().all(|c| summarize(c, now).ready))
}

/// The connections as a JSON array: what the table shows, with the fields scripts need.
fn as_json(list: &[ChannelConnection], now: jiff::Timestamp) -> String {
    let items: Vec<serde_json::Value> = list
        .iter()
        .map(|c| {
            let summary = summarize(c, now);
            let status = c.status.clone().unwrap_or_default();
            let ready = status.condition(ConditionType::Ready);
            serde_json::json!({
                "namespace": c.namespace(),
                "name": c.name_any(),
                "provider": c.spec.provider_ref.name,
                "account": status.account,
                "ready": summary.ready,
                "reason": summary.reason,
                "message": ready.map(|r| r.message.clone()),
                "missingScopes": status.missing_scopes,
                "expiresAt": status.expires_at,
                "lastCheckTime": status.last_check_time,
                "reauthUrl": status.reauth_url,
            })
        })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_owned())
}
