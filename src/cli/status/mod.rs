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

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use relink::api::{
    CHECK_REQUESTED_ANNOTATION, ChannelConnection, ChannelConnectionStatus, ConditionType,
    REAUTHORIZE_REQUESTED_ANNOTATION, REFRESH_REQUESTED_ANNOTATION, Reason,
};

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
    name: Option<String>,
    /// Only connections in this namespace (default: every namespace, or the kubeconfig's
    /// namespace when NAME is given).
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace (the default without --namespace; as in kubectl).
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Only connections whose labels match this selector (e.g. `team=marketing`).
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Only connections that are not Ready.
    #[arg(long)]
    only_broken: bool,
    /// Output format: a table for people, or JSON (one object per connection) for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
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
    name: String,
    /// Its namespace (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
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
    wait: bool,
    /// Only ask for the check; same as --wait=false.
    #[arg(long, conflicts_with = "wait")]
    no_wait: bool,
    /// How long to wait for the operator (e.g. `30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    timeout: Duration,
}

#[derive(Args)]
#[command(after_help = PLUGIN_HELP)]
pub struct ReauthArgs {
    /// The connection to re-authorize (renewal before a deadline, or handing the channel to
    /// another admin); it may be healthy.
    name: String,
    /// Its namespace (default: the kubeconfig's namespace).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How long to wait for the operator to publish the link (e.g. `30s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = super::duration)]
    timeout: Duration,
}

/// `relink reauth NAME`: asks for a re-authorization link and prints it once published.
pub fn reauth(args: ReauthArgs) -> ExitCode {
    block_on(run_reauth(&args))
}

async fn run_reauth(args: &ReauthArgs) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    let (api, ns) = connections_in(&client, args.namespace.as_deref());
    let name = args.name.as_str();
    get_connection(&api, name, &ns).await?;
    let value = jiff::Timestamp::now().as_nanosecond().to_string();
    let patch = serde_json::json!({
        "metadata": {"annotations": {REAUTHORIZE_REQUESTED_ANNOTATION: value}}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("cannot annotate channelconnection {ns}/{name}: {e}"))?;
    println!("Re-authorization requested: {ns}/{name} {REAUTHORIZE_REQUESTED_ANNOTATION}={value}");
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let conn = get_connection(&api, name, &ns).await?;
        let status = conn.status.clone().unwrap_or_default();
        let ours = status
            .pending_reauthorization
            .as_ref()
            .is_some_and(|p| p.value == value);
        if let (true, Some(link)) = (ours, &status.reauth_url) {
            println!(
                "Open this link in a browser and log in as the channel's account; the link works once:\n  {link}"
            );
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the operator did not publish a link within {}s: is relink running and watching namespace {ns}, and does the provider have an authorization URL? See `relink status {name} -n {ns}`",
                args.timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many Events the detailed view shows.
const EVENTS_SHOWN: usize = 5;

/// `relink status`.
pub fn main(args: StatusArgs) -> ExitCode {
    block_on(run(&args))
}

/// `relink check`.
pub fn check(args: CheckArgs) -> ExitCode {
    block_on(run_check(&args, false))
}

/// `relink refresh NAME`: a refresh now (even far from expiry), then the check's verdict, in
/// the spirit of `cmctl renew`.
pub fn refresh(args: CheckArgs) -> ExitCode {
    block_on(run_check(&args, true))
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

/// The configuration in `kubeconfig`, or in the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster).
pub(crate) async fn config_for(kubeconfig: Option<&Path>) -> Result<Config, String> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("cannot use kubeconfig {}: {e}", path.display()))
        }
        None => Config::infer().await.map_err(|e| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            if std::env::var_os("KUBECONFIG").is_none() && !home.join(".kube/config").exists() {
                "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)".to_owned()
            } else {
                let e = e.to_string().replace('\n', " ");
                format!("cannot load the kubeconfig (set KUBECONFIG or pass --kubeconfig): {e}")
            }
        }),
    }
}

/// A client for [`config_for`].
pub(crate) async fn client_for(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = config_for(kubeconfig).await?;
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// The connections API of `namespace` (default: the kubeconfig's) and that namespace's name.
fn connections_in(client: &Client, namespace: Option<&str>) -> (Api<ChannelConnection>, String) {
    let ns = namespace.unwrap_or(client.default_namespace()).to_owned();
    (Api::namespaced(client.clone(), &ns), ns)
}

/// One connection, or an error naming what was not found.
async fn get_connection(
    api: &Api<ChannelConnection>,
    name: &str,
    ns: &str,
) -> Result<ChannelConnection, String> {
    api.get_opt(name)
        .await
        .map_err(api_error)?
        .ok_or_else(|| format!("channelconnection {name} not found in namespace {ns}"))
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

/// Sets the check-request annotation and, with `--wait`, waits for the operator to echo it.
async fn run_check(args: &CheckArgs, refresh: bool) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    let (api, ns) = connections_in(&client, args.namespace.as_deref());
    let name = args.name.as_str();
    let before = get_connection(&api, name, &ns).await?;
    let requested = jiff::Timestamp::now();
    if refresh {
        // Asked before the check it rides on, so that check refreshes first.
        let patch = serde_json::json!({"metadata": {"annotations": {
            REFRESH_REQUESTED_ANNOTATION: requested.as_nanosecond().to_string()
        }}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("cannot annotate channelconnection {ns}/{name}: {e}"))?;
        println!("Refresh requested: {ns}/{name} {REFRESH_REQUESTED_ANNOTATION}");
    }
    let value = request_check(&api, &ns, name, requested).await?;
    println!("Check requested: {ns}/{name} {CHECK_REQUESTED_ANNOTATION}={value}");
    if !args.wait || args.no_wait {
        println!(
            "Not waiting. `relink status {name} -n {ns}` shows the result once status.lastHandledCheckRequest is {value}."
        );
        return Ok(true);
    }
    if before.spec.suspend {
        println!(
            "The connection is suspended (spec.suspend: true): relink does not check it until it is resumed."
        );
        let events = events_about(&client, &before).await;
        let now = jiff::Timestamp::now();
        print!("\n{}", render_detail(&before, &events, now));
        return Ok(false);
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let after = loop {
        let conn =
            api.get_opt(name).await.map_err(api_error)?.ok_or_else(|| {
                format!("channelconnection {ns}/{name} was deleted while waiting")
            })?;
        if handled(&conn, &value) {
            break conn;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the operator did not handle the check request within {}s (status.lastHandledCheckRequest is still {}): \
                 is relink running and watching namespace {ns}? See the operator's logs",
                args.timeout.as_secs(),
                conn.status
                    .as_ref()
                    .and_then(|s| s.last_handled_check_request.as_deref())
                    .unwrap_or("unset"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("Handled by the operator: status.lastHandledCheckRequest={value}\n");
    let old = before.status.clone().unwrap_or_default();
    let new = after.status.clone().unwrap_or_default();
    let mut events = events_about(&client, &after).await;
    if publishes_event(&old, &new) {
        // The operator publishes the Event just after writing the status: give it a moment.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until
            && !events
                .as_ref()
                .is_ok_and(|list| list.iter().any(|e| event_time(e) >= Some(requested)))
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            events = events_about(&client, &after).await;
        }
    }
    let now = jiff::Timestamp::now();
    print!("{}", render_detail(&after, &events, now));
    Ok(summarize(&after, now).ready)
}

/// Sets the check-request annotation of `ns/name` to `requested` (in nanoseconds) with the
/// caller's credentials; returns the value the operator will echo in
/// `status.lastHandledCheckRequest`. Used by `relink check` and the dashboard's Check now.
pub(crate) async fn request_check(
    api: &Api<ChannelConnection>,
    ns: &str,
    name: &str,
    requested: jiff::Timestamp,
) -> Result<String, String> {
    let value = requested.as_nanosecond().to_string();
    let patch = serde_json::json!({
        "metadata": {"annotations": {CHECK_REQUESTED_ANNOTATION: value}}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("cannot annotate channelconnection {ns}/{name}: {e}"))?;
    Ok(value)
}

/// Whether the operator has acted on the check request `value`.
fn handled(conn: &ChannelConnection, value: &str) -> bool {
    conn.status
        .as_ref()
        .and_then(|s| s.last_handled_check_request.as_deref())
        == Some(value)
}

/// Whether going from `old` to `new` makes the operator publish an Event (as it does: one per
/// change of `Ready`, and one when provider trouble starts).
fn publishes_event(old: &ChannelConnectionStatus, new: &ChannelConnectionStatus) -> bool {
    relink::controller::status::transition(old, new).is_some()
}

/// The last Events about `conn` (oldest first), or why they could not be listed.
pub(crate) async fn events_about(
    client: &Client,
    conn: &ChannelConnection,
) -> Result<Vec<Event>, String> {
    let ns = conn.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let name = conn.name_any();
    let by_name = ListParams::default().fields(&format!("regarding.name={name}"));
    let items = match api.list(&by_name).await {
        Ok(list) => list.items,
        // An API server that does not know the field selector: filter here instead.
        Err(kube::Error::Api(e)) if e.code == 400 => {
            api.list(&ListParams::default())
                .await
                .map_err(|e| format!("cannot list Events in namespace {ns}: {e}"))?
                .items
        }
        Err(e) => return Err(format!("cannot list Events in namespace {ns}: {e}")),
    };
    Ok(select_events(items, conn, EVENTS_SHOWN))
}

/// The `last` newest Events about `conn` (by name and kind, and uid when both carry one),
/// oldest first.
fn select_events(items: Vec<Event>, conn: &ChannelConnection, last: usize) -> Vec<Event> {
    let name = conn.name_any();
    let uid = conn.uid();
    let mut list: Vec<Event> = items
        .into_iter()
        .filter(|e| {
            let Some(r) = &e.regarding else { return false };
            r.name.as_deref() == Some(name.as_str())
                && r.kind.as_deref() == Some("ChannelConnection")
                && match (&r.uid, &uid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
        .collect();
    list.sort_by_key(event_time);
    let skip = list.len().saturating_sub(last);
    list.split_off(skip)
}

/// When an Event last happened: its series' last time, else its own time.
pub(crate) fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            "the ChannelConnection CRD is not installed: run `relink crd | kubectl apply --server-side -f -`".to_owned()
        }
        other => format!("cannot read ChannelConnections: {other}"),
    }
}

/// What one line says about a connection.
pub(crate) struct Summary {
    pub mark: &'static str,
    pub ready: bool,
    pub id: String,
    pub provider: String,
    pub account: String,
    pub reason: String,
    pub expiry: String,
    pub checked: String,
    /// Lines under the summary (the condition message, the link, what to do).
    pub notes: Vec<String>,
}

pub(crate) fn summarize(c: &ChannelConnection, now: jiff::Timestamp) -> Summary {
    let status = c.status.clone().unwrap_or_default();
    let ready_cond = status.condition(ConditionType::Ready);
    let (mark, ready, reason) = match ready_cond {
        Some(r) if r.reason == "Checking" => ("…", false, "Checking".to_owned()),
        Some(r) if r.status == "True" => ("✔", true, r.reason.clone()),
        Some(r) if r.status == "False" => ("✖", false, r.reason.clone()),
        Some(r) => ("…", false, r.reason.clone()),
        None => ("…", false, "NotCheckedYet".to_owned()),
    };
    let account = status
        .account
        .as_ref()
        .and_then(|a| a.name.clone().or_else(|| a.id.clone()))
        .or_else(|| c.spec.account.as_ref().map(|a| a.label().to_owned()))
        .unwrap_or_else(|| "-".to_owned());
    let expiry = match &status.expires_at {
        Some(t) if t.0 > now => format!(
            "expires in {}",
            human_duration(t.0.as_second() - now.as_second())
        ),
        Some(t) => format!(
            "expired {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None if ready => "no expiry".to_owned(),
        None => "-".to_owned(),
    };
    let checked = match &status.last_check_time {
        Some(t) => format!(
            "checked {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None => "not checked yet".to_owned(),
    };
    let mut notes = Vec::new();
    let show_message = !ready || reason != "Valid";
    if show_message && let Some(r) = ready_cond {
        notes.push(r.message.clone());
    }
    if let Some(rec) = status.condition(ConditionType::Reconciling)
        && rec.status == "True"
        && rec.reason == "ProviderUnavailable"
    {
        notes.push(format!(
            "the provider did not answer; relink keeps the last verdict and retries ({})",
            rec.message
        ));
    }
    if !status.missing_scopes.is_empty() {
        notes.push(format!(
            "missing permissions: {}",
            status.missing_scopes.join(", ")
        ));
    }
    if let Some(url) = &status.reauth_url {
        let who = c
            .spec
            .account
            .as_ref()
            .map(|a| format!(" as the owner of {}", a.label()))
            .unwrap_or_default();
        notes.push(format!(
            "what to do: open this link in a browser and log in{who} (do not delete the connection):"
        ));
        notes.push(format!("  {url}"));
    } else if !ready && reason != "Checking" {
        notes.push(what_to_do(&reason).to_owned());
    }
    Summary {
        mark,
        ready,
        id: format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        provider: c.spec.provider_ref.name.clone(),
        account,
        reason,
        expiry,
        checked,
        notes,
    }
}

/// One hint per reason that has no re-authorization link (see docs/troubleshooting.md): what
/// `Reason::advice` says; the CLI's own "not checked yet" reads like `Checking`.
pub(crate) fn what_to_do(reason: &str) -> &'static str {
    Reason::parse(reason).unwrap_or(Reason::Checking).advice()
}

/// The whole summary as text: a header, one aligned line per connection, notes, a total.
pub(crate) fn render(list: &[ChannelConnection], now: jiff::Timestamp) -> String {
    let rows: Vec<Summary> = list.iter().map(|c| summarize(c, now)).collect();
    let header = ["CONNECTION", "PROVIDER", "ACCOUNT", "STATUS", "EXPIRY"];
    let width = |f: &dyn Fn(&Summary) -> usize, h: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(h.chars().count())
    };
    let w = [
        width(&|s| s.id.chars().count(), header[0]),
        width(&|s| s.provider.chars().count(), header[1]),
        width(&|s| s.account.chars().count(), header[2]),
        width(&|s| s.reason.chars().count(), header[3]),
        width(&|s| s.expiry.chars().count(), header[4]),
    ];
    let line = |mark: &str, cells: [&str; 5], last: &str| {
        let mut out = format!("{mark} ");
        for (cell, width) in cells.iter().zip(w) {
            out.push_str(&pad(cell, width));
            out.push_str("  ");
        }
        out.push_str(last);
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(" ", header, "LAST CHECK");
    for s in &rows {
        out.push_str(&line(
            s.mark,
            [&s.id, &s.provider, &s.account, &s.reason, &s.expiry],
            &s.checked,
        ));
        for note in &s.notes {
            out.push_str(&format!("    {note}\n"));
        }
    }
    let ready = rows.iter().filter(|s| s.ready).count();
    out.push_str(&format!(
        "\n{ready} of {} connection{} Ready.",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    if ready < rows.len() {
        out.push_str(&format!(
            " To check one again now: kubectl annotate channelconnection NAME -n NAMESPACE {CHECK_REQUESTED_ANNOTATION}=$(date +%s) --overwrite"
        ));
    }
    out.push('\n');
    out
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// `seconds` the way kubectl prints ages (`45s`, `3m20s`, `5h`, `12d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let days = hours / 24;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        };
    }
    format!("{}y", days / 365)
}

/// Condition types in the order the detailed view lists them (others follow, as written).
const CONDITION_ORDER: [ConditionType; 5] = [
    ConditionType::Ready,
    ConditionType::TokenValid,
    ConditionType::ScopesGranted,
    ConditionType::Stalled,
    ConditionType::Reconciling,
];

/// Everything about one connection, for `relink status NAME` and `relink check NAME`.
/// `events` are the last Events about it, oldest first, or why they could not be listed.
pub(crate) fn render_detail(
    c: &ChannelConnection,
    events: &Result<Vec<Event>, String>,
    now: jiff::Timestamp,
) -> String {
    let status = c.status.clone().unwrap_or_default();
    let summary = summarize(c, now);
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        out.push_str(&format!("{}{value}\n", pad(&format!("{label}:"), 22)));
    };
    field("Name", c.name_any());
    field("Namespace", c.namespace().unwrap_or_default());
    field(
        "Provider",
        format!(
            "{}/{}",
            c.spec.provider_ref.kind.as_str(),
            c.spec.provider_ref.name
        ),
    );
    field("Secret", c.spec.secret_ref.name.clone());
    let verdict = match status.condition(ConditionType::Ready) {
        Some(r) => format!(
            "{} {} (Ready {} since {})",
            summary.mark,
            summary.reason,
            r.status,
            when(Some(&r.last_transition_time), now)
        ),
        None => format!("{} not checked yet", summary.mark),
    };
    field("Status", verdict);
    if let (Some(seen), Some(generation)) = (status.observed_generation, c.metadata.generation)
        && seen != generation
    {
        field(
            "Spec",
            format!("changed (generation {generation}); the last check saw generation {seen}"),
        );
    }
    field(
        "Account",
        match &status.account {
            Some(a) => account_text(a.name.as_deref(), a.id.as_deref()),
            None => "- (not reported yet)".to_owned(),
        },
    );
    if let Some(a) = &c.spec.account {
        field(
            "Expected account",
            account_text(a.display_name.as_deref(), Some(&a.id)),
        );
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    field("Scopes required", list(&c.spec.required_scopes));
    field("Scopes granted", list(&status.granted_scopes));
    field("Scopes missing", list(&status.missing_scopes));
    field("Expires", when(status.expires_at.as_ref(), now));
    field(
        "Data access expires",
        when(status.data_access_expires_at.as_ref(), now),
    );
    field("Last check", when(status.last_check_time.as_ref(), now));
    field("Next check", when(status.next_check_time.as_ref(), now));
    field("Last valid", when(status.last_valid_time.as_ref(), now));
    field("Last refresh", when(status.last_refresh_time.as_ref(), now));
    field(
        "Consecutive failures",
        status.consecutive_failures.to_string(),
    );
    let asked = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHECK_REQUESTED_ANNOTATION));
    let handled = status.last_handled_check_request.as_ref();
    match (asked, handled) {
        (Some(a), Some(h)) if a == h => field("Check request", format!("{h} (handled)")),
        (Some(a), _) => field("Check request", format!("{a} (pending)")),
        (None, Some(h)) => field("Check request", format!("{h} (handled)")),
        (None, None) => {}
    }

    out.push_str("\nConditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  none yet: the connection has not been checked\n");
    } else {
        let mut conditions: Vec<_> = status.conditions.iter().collect();
        conditions.sort_by_key(|k| {
            CONDITION_ORDER
                .iter()
                .position(|t| t.as_str() == k.type_)
                .unwrap_or(CONDITION_ORDER.len())
        });
        let rows: Vec<Vec<String>> = conditions
            .iter()
            .map(|k| {
                vec![
                    k.type_.clone(),
                    k.status.clone(),
                    k.reason.clone(),
                    ago(k.last_transition_time.0, now),
                    one_line(&k.message),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"],
            &rows,
        ));
    }

    match events {
        Ok(list) if list.is_empty() => out.push_str("\nEvents: none\n"),
        Ok(list) => {
            out.push_str(&format!("\nEvents (last {}, newest last):\n", list.len()));
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|e| {
                    let mut age = event_time(e)
                        .map(|t| ago(t, now))
                        .unwrap_or_else(|| "-".to_owned());
                    if let Some(s) = e.series.as_ref().filter(|s| s.count > 1) {
                        age.push_str(&format!(" (x{})", s.count));
                    }
                    vec![
                        e.type_.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        age,
                        one_line(e.note.as_deref().unwrap_or_default()),
                    ]
                })
                .collect();
            out.push_str(&table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows));
        }
        Err(e) => out.push_str(&format!("\nEvents: {e}\n")),
    }

    if let Some(url) = &status.reauth_url {
        out.push_str(&format!("\nRe-authorization link:\n  {url}\n"));
    }
    out.push_str(&format!("\n{}\n", advice(c, &summary, &status)));
    out
}

/// The one line saying what to do about `c`.
fn advice(c: &ChannelConnection, summary: &Summary, status: &ChannelConnectionStatus) -> String {
    if status.reauth_url.is_some() {
        let who = c
            .spec
            .account
            .as_ref()
            .map(|a| format!(" as someone who manages {}", a.label()))
            .unwrap_or_default();
        let first = if summary.reason == "AccountActionRequired" {
            "finish what the provider's website asks of the account, then "
        } else {
            ""
        };
        return format!(
            "what to do: {first}open the link above in a browser and log in{who}, granting every permission asked (do not delete the connection)"
        );
    }
    let trouble = status
        .condition(ConditionType::Reconciling)
        .is_some_and(|r| r.status == "True" && r.reason == "ProviderUnavailable");
    if trouble {
        return what_to_do("ProviderUnavailable").to_owned();
    }
    if summary.ready {
        return "nothing to do: the channel works".to_owned();
    }
    what_to_do(&summary.reason).to_owned()
}

/// `name (id ID)`, or whichever of the two is known.
fn account_text(name: Option<&str>, id: Option<&str>) -> String {
    match (name, id) {
        (Some(n), Some(i)) if n != i => format!("{n} (id {i})"),
        (Some(n), _) => n.to_owned(),
        (None, Some(i)) => format!("id {i}"),
        (None, None) => "-".to_owned(),
    }
}

/// A time as RFC 3339 (whole seconds, UTC) with how long ago or ahead it is; `-` when unset.
fn when(t: Option<&Time>, now: jiff::Timestamp) -> String {
    let Some(Time(t)) = t else {
        return "-".to_owned();
    };
    let exact = t.strftime("%Y-%m-%dT%H:%M:%SZ");
    if *t > now {
        format!(
            "{exact} (in {})",
            human_duration(t.as_second() - now.as_second())
        )
    } else {
        format!("{exact} ({})", ago(*t, now))
    }
}

/// `3m20s ago`.
fn ago(t: jiff::Timestamp, now: jiff::Timestamp) -> String {
    format!("{} ago", human_duration(now.as_second() - t.as_second()))
}

/// Provider text on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An aligned table indented by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = "  ".to_owned();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&pad(cell, widths[i]));
                out.push_str("  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use relink::api::{AccountRef, ChannelConnectionSpec, ChannelConnectionStatus};

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(12 * 3600), "12h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(60 * 86_400), "60d");
    }

    fn connection(reason: &str, status: &str, reauth: Option<&str>) -> ChannelConnection {
        let now = jiff::Timestamp::now();
        let mut c = ChannelConnection::new(
            "chan",
            ChannelConnectionSpec {
                account: Some(AccountRef {
                    id: "page-1".into(),
                    display_name: Some("Page One".into()),
                }),
                ..ChannelConnectionSpec::new("app", "tok")
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.status = Some(ChannelConnectionStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: format!("{reason} message"),
                last_transition_time: Time(now),
                observed_generation: None,
            }],
            reauth_url: reauth.map(str::to_owned),
            last_check_time: Some(Time(now)),
            ..Default::default()
        });
        c
    }

    #[test]
    fn broken_connections_say_what_to_do() {
        let now = jiff::Timestamp::now();
        let ok = connection("Valid", "True", None);
        let revoked = connection("Revoked", "False", Some("https://example.test/auth?x=1"));
        let text = render(&[ok.clone(), revoked.clone()], now);
        assert!(text.contains("✔ ns/chan"), "{text}");
        assert!(text.contains("✖ ns/chan"), "{text}");
        assert!(text.contains("Revoked message"), "{text}");
        assert!(text.contains("  https://example.test/auth?x=1"), "{text}");
        assert!(text.contains("1 of 2 connections Ready."), "{text}");
        assert!(summarize(&ok, now).ready);
        assert!(!summarize(&revoked, now).ready);
        let missing = connection("SecretNotFound", "False", None);
        assert!(
            summarize(&missing, now)
                .notes
                .iter()
                .any(|n| n.contains("create the Secret"))
        );
        let pending = ChannelConnection { status: None, ..ok };
        let s = summarize(&pending, now);
        assert_eq!((s.mark, s.ready), ("…", false));
    }

    fn cond(type_: &str, status: &str, reason: &str, at: jiff::Timestamp) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} says\n{reason}"),
            last_transition_time: Time(at),
            observed_generation: Some(1),
        }
    }

    fn event(
        name: &str,
        kind: &str,
        type_: &str,
        reason: &str,
        at: jiff::Timestamp,
        count: Option<i32>,
    ) -> Event {
        use k8s_openapi::api::core::v1::ObjectReference;
        use k8s_openapi::api::events::v1::EventSeries;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        Event {
            regarding: Some(ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            }),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            note: Some(format!("{reason} note")),
            event_time: Some(MicroTime(at)),
            series: count.map(|count| EventSeries {
                count,
                last_observed_time: MicroTime(at),
            }),
            ..Default::default()
        }
    }

    /// A revoked connection as the operator leaves it, checked 200 s before `now`.
    fn revoked(now: jiff::Timestamp) -> ChannelConnection {
        let mut c = connection(
            "Revoked",
            "False",
            Some("https://example.test/auth?state=s1"),
        );
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c.spec.required_scopes = vec!["read".into(), "write".into()];
        let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let s = c.status.as_mut().unwrap();
        s.observed_generation = Some(1);
        s.conditions = vec![
            cond("Reconciling", "False", "Revoked", t(200)),
            cond("Stalled", "True", "Revoked", t(200)),
            cond("Ready", "False", "Revoked", t(200)),
            cond("ScopesGranted", "Unknown", "Revoked", t(200)),
            cond("TokenValid", "False", "Revoked", t(200)),
        ];
        s.account = Some(relink::api::ReportedAccount {
            id: Some("page-1".into()),
            name: Some("page-1 name".into()),
        });
        s.granted_scopes = vec!["read".into()];
        s.missing_scopes = vec!["write".into()];
        s.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(50)));
        s.last_check_time = Some(Time(t(200)));
        s.next_check_time = Some(Time(now + jiff::SignedDuration::from_secs(700)));
        s.last_valid_time = Some(Time(t(3600)));
        s.consecutive_failures = 0;
        s.last_handled_check_request = Some("42".into());
        c.metadata.annotations =
            Some([(CHECK_REQUESTED_ANNOTATION.to_owned(), "42".to_owned())].into());
        c
    }

    #[test]
    fn detail_shows_conditions_scopes_events_link_and_what_to_do() {
        let now: jiff::Timestamp = "2026-11-22T02:00:00Z".parse().unwrap();
        let c = revoked(now);
        let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let events = select_events(
            vec![
                event(
                    "chan",
                    "ChannelConnection",
                    "Warning",
                    "Revoked",
                    t(200),
                    Some(3),
                ),
                event(
                    "chan",
                    "ChannelConnection",
                    "Normal",
                    "Valid",
                    t(3600),
                    None,
                ),
                event(
                    "other",
                    "ChannelConnection",
                    "Warning",
                    "Expired",
                    t(10),
                    None,
                ),
                event("chan", "ChannelGroup", "Warning", "Down", t(10), None),
            ],
            &c,
            5,
        );
        assert_eq!(events.len(), 2, "only Events about this connection");
        let text = render_detail(&c, &Ok(events), now);
        for want in [
            "Name:                 chan\n",
            "Namespace:            ns\n",
            "Provider:             ChannelProvider/app\n",
            "Status:               ✖ Revoked (Ready False since 2026-11-22T01:56:40Z (3m20s ago))\n",
            "Account:              page-1 name (id page-1)\n",
            "Expected account:     Page One (id page-1)\n",
            "Scopes required:      read, write\n",
            "Scopes granted:       read\n",
            "Scopes missing:       write\n",
            "Expires:              2026-11-24T04:00:00Z (in 2d2h)\n",
            "Data access expires:  -\n",
            "Last check:           2026-11-22T01:56:40Z (3m20s ago)\n",
            "Next check:           2026-11-22T02:11:40Z (in 11m)\n",
            "Last valid:           2026-11-22T01:00:00Z (60m ago)\n",
            "Last refresh:         -\n",
            "Consecutive failures: 0\n",
            "Check request:        42 (handled)\n",
            "  TYPE           STATUS   REASON   LAST TRANSITION  MESSAGE\n",
            "  Ready          False    Revoked  3m20s ago        Ready says Revoked\n",
            "Events (last 2, newest last):\n",
            "  TYPE     REASON   AGE             MESSAGE\n",
            "  Normal   Valid    60m ago         Valid note\n",
            "  Warning  Revoked  3m20s ago (x3)  Revoked note\n",
            "Re-authorization link:\n  https://example.test/auth?state=s1\n",
            "what to do: open the link above in a browser and log in as someone who manages Page One",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Conditions in the documented order, whatever order the status holds them in.
        let order: Vec<usize> = [
            "  Ready ",
            "  TokenValid ",
            "  ScopesGranted ",
            "  Stalled ",
            "  Reconciling ",
        ]
        .iter()
        .map(|t| text.find(t).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(!summarize(&c, now).ready);
    }

    #[test]
    fn detail_of_a_healthy_connection() {
        let now = jiff::Timestamp::now();
        let mut c = connection("Valid", "True", None);
        c.metadata.annotations =
            Some([(CHECK_REQUESTED_ANNOTATION.to_owned(), "7".to_owned())].into());
        let text = render_detail(&c, &Ok(vec![]), now);
        assert!(
            text.contains("Status:               ✔ Valid (Ready True since"),
            "{text}"
        );
        assert!(text.contains("Events: none\n"), "{text}");
        assert!(
            text.contains("Check request:        7 (pending)\n"),
            "{text}"
        );
        assert!(
            text.contains("Account:              - (not reported yet)\n"),
            "{text}"
        );
        assert!(!text.contains("Re-authorization link"), "{text}");
        assert!(
            text.ends_with("\nnothing to do: the channel works\n"),
            "{text}"
        );
        assert!(summarize(&c, now).ready);

        // Provider trouble keeps the verdict and says so; an Event list error is shown, not fatal.
        let s = c.status.as_mut().unwrap();
        s.conditions
            .push(cond("Reconciling", "True", "ProviderUnavailable", now));
        s.consecutive_failures = 3;
        let text = render_detail(
            &c,
            &Err("cannot list Events in namespace ns: forbidden".into()),
            now,
        );
        assert!(text.contains("Consecutive failures: 3\n"), "{text}");
        assert!(
            text.contains("Events: cannot list Events in namespace ns: forbidden\n"),
            "{text}"
        );
        assert!(
            text.contains("nothing to do: the provider is unreachable; relink retries"),
            "{text}"
        );

        // Never checked: no conditions, and a hint.
        let pending = ChannelConnection { status: None, ..c };
        let text = render_detail(&pending, &Ok(vec![]), now);
        assert!(
            text.contains("Status:               … not checked yet\n"),
            "{text}"
        );
        assert!(
            text.contains("none yet: the connection has not been checked"),
            "{text}"
        );
        assert!(
            text.contains("nothing to do yet: the first check has not happened"),
            "{text}"
        );

        // A missing Secret has no link, but a hint.
        let missing = connection("SecretNotFound", "False", None);
        let text = render_detail(&missing, &Ok(vec![]), now);
        assert!(
            text.contains("what to do: create the Secret named in spec.secretRef"),
            "{text}"
        );
    }

    #[test]
    fn newest_events_are_kept_oldest_first() {
        let now = jiff::Timestamp::now();
        let c = revoked(now);
        let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let mut stale = event("chan", "ChannelConnection", "Warning", "Gone", t(1), None);
        stale.regarding.as_mut().unwrap().uid = Some("uid-of-a-deleted-object".into());
        let items = (0..8)
            .map(|i| {
                event(
                    "chan",
                    "ChannelConnection",
                    "Normal",
                    &format!("R{i}"),
                    t(100 - i),
                    None,
                )
            })
            .chain([stale])
            .collect();
        let reasons: Vec<String> = select_events(items, &c, 5)
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert_eq!(reasons, ["R3", "R4", "R5", "R6", "R7"]);
    }

    #[test]
    fn events_are_expected_on_ready_changes_and_new_trouble_only() {
        let now = jiff::Timestamp::now();
        let status = |conds: Vec<Condition>| ChannelConnectionStatus {
            conditions: conds,
            ..Default::default()
        };
        let valid = status(vec![cond("Ready", "True", "Valid", now)]);
        let revoked = status(vec![cond("Ready", "False", "Revoked", now)]);
        let trouble = status(vec![
            cond("Ready", "True", "Valid", now),
            cond("Reconciling", "True", "ProviderUnavailable", now),
        ]);
        let first_trouble = status(vec![cond("Ready", "Unknown", "ProviderUnavailable", now)]);
        assert!(!publishes_event(&valid, &valid));
        assert!(publishes_event(&valid, &revoked));
        assert!(!publishes_event(
            &ChannelConnectionStatus::default(),
            &valid
        ));
        assert!(publishes_event(&valid, &trouble));
        assert!(!publishes_event(&trouble, &trouble));
        assert!(!publishes_event(
            &ChannelConnectionStatus::default(),
            &first_trouble
        ));
    }

    #[test]
    fn check_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            check: CheckArgs,
        }
        let parse =
            |args: &[&str]| Cli::try_parse_from([&["check"], args].concat()).map(|c| c.check);
        let a = parse(&["chan"]).unwrap();
        assert!(a.wait && !a.no_wait);
        assert_eq!(a.timeout, Duration::from_secs(60));
        assert_eq!(a.name, "chan");
        let a = parse(&["chan", "-n", "ns", "--wait", "--timeout", "1m30s"]).unwrap();
        assert!(a.wait);
        assert_eq!(a.namespace.as_deref(), Some("ns"));
        assert_eq!(a.timeout, Duration::from_secs(90));
        assert!(!parse(&["chan", "--wait=false"]).unwrap().wait);
        assert!(parse(&["chan", "--no-wait"]).unwrap().no_wait);
        assert!(parse(&["chan", "--timeout", "soon"]).is_err());
        assert!(parse(&[]).is_err(), "NAME is required");
    }

    #[test]
    fn times_read_both_ways() {
        let now: jiff::Timestamp = "2026-11-22T02:00:00.5Z".parse().unwrap();
        let t = |s: i64| Time(now + jiff::SignedDuration::from_secs(s));
        assert_eq!(when(None, now), "-");
        assert_eq!(when(Some(&t(-30)), now), "2026-11-22T01:59:30Z (30s ago)");
        assert_eq!(
            when(Some(&t(3 * 3600)), now),
            "2026-11-22T05:00:00Z (in 3h)"
        );
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        assert_eq!(account_text(Some("x"), Some("x")), "x");
        assert_eq!(account_text(None, Some("1")), "id 1");
    }
}
