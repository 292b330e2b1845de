//! `relink dashboard`: a local web page showing every channel connection and group the user
//! can read, live, in the model of `kubectl proxy` / `linkerd viz dashboard`: it listens on
//! 127.0.0.1 only, uses the user's own kubeconfig (so exactly their RBAC) and adds nothing to
//! the cluster.
//!
//! Watches on connections, groups and provider objects keep an in-memory picture; the page
//! long-polls `/api/state` (it answers at once when something changed since the version the
//! page has, else after a change or 25 s) and renders it. "Check now" sets the check-request
//! annotation with the user's credentials, exactly like `relink check --no-wait`.
//! No Secret is ever read, so no token can be shown; the re-authorization link appears only
//! as the target of the Reconnect link.

#[cfg(test)]
mod metric_names;
mod server;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use relink::api::{
    ChannelConnection, ChannelGroup, ChannelProvider, ClusterChannelProvider, ProviderKind,
};
use serde::Serialize;
use tokio::sync::watch;

use view::{ConnectionRow, Counts, GroupRow, Permission, ProviderTypes};

/// Default port of the page.
const DEFAULT_PORT: u16 = 8097;
/// How long a "may I patch?" answer is trusted before the API server is asked again.
const PERMISSION_TTL: Duration = Duration::from_secs(60);
/// How often a failing watch's API is asked whether it answers again.
const RECOVERY_PROBE: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct DashboardArgs {
    /// Only connections and groups in this namespace (default: the kubeconfig's namespace).
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Connections and groups in every namespace (needs permission to list them cluster-wide,
    /// like `kubectl get -A`).
    #[arg(long, short = 'A')]
    all_namespaces: bool,
    /// Only connections matching this label selector (e.g. `team=marketing`).
    #[arg(long, short = 'l')]
    selector: Option<String>,
    /// Port on 127.0.0.1 to serve the page on (0: any free port). The page is never served on
    /// another address.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

/// Which namespaces the dashboard watches.
#[derive(Clone, Debug)]
enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Scope::All => Api::all(client.clone()),
        }
    }

    fn contains(&self, ns: &str) -> bool {
        match self {
            Scope::Namespace(n) => n == ns,
            Scope::All => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Namespace(ns) => format!("namespace {ns}"),
            Scope::All => "all namespaces".to_owned(),
        }
    }
}

/// How one watch is doing.
#[derive(Clone, Debug, Default, Serialize)]
struct WatchHealth {
    /// The first complete list has arrived.
    synced: bool,
    /// The last error, until the watch works again.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The watches' picture and what the server needs to answer.
pub(crate) struct Dashboard {
    client: Client,
    scope: Scope,
    selector: Option<String>,
    connections: Store<ChannelConnection>,
    groups: Store<ChannelGroup>,
    providers: Store<ChannelProvider>,
    cluster_providers: Store<ClusterChannelProvider>,
    connections_health: Arc<Mutex<WatchHealth>>,
    groups_health: Arc<Mutex<WatchHealth>>,
    /// Bumped on every watch event; the page asks "anything newer than N?".
    version: watch::Sender<u64>,
    permissions: tokio::sync::Mutex<HashMap<String, (Instant, Permission)>>,
}

/// Everything the page shows at one moment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    version: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<String>,
    /// The connections watch: synced, or the error that stops it.
    api: WatchHealth,
    counts: Counts,
    connections: Vec<ConnectionRow>,
    groups: Vec<GroupRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups_error: Option<String>,
}

/// `relink dashboard`.
pub fn main(args: DashboardArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: DashboardArgs) -> Result<(), String> {
    let client = crate::cli::status::client_for(args.kubeconfig.as_deref()).await?;
    let scope = match (&args.namespace, args.all_namespaces) {
        (_, true) => Scope::All,
        (Some(ns), false) => Scope::Namespace(ns.clone()),
        (None, false) => Scope::Namespace(client.default_namespace().to_owned()),
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            format!(
                "cannot listen on 127.0.0.1:{}: {e} (pick another with --port, or --port 0)",
                args.port
            )
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?
        .port();
    let dashboard = Arc::new(start_watches(client, scope.clone(), args.selector.clone()));
    println!(
        "relink dashboard for {}{}: http://127.0.0.1:{port}/",
        scope.describe(),
        args.selector
            .as_deref()
            .map(|s| format!(" (connections matching {s})"))
            .unwrap_or_default()
    );
    println!("Open it in a browser; it uses your kubeconfig's credentials. Ctrl-C stops it.");
    server::serve(listener, port, dashboard).await
}

/// Starts the watches that keep `Dashboard`'s stores current.
fn start_watches(client: Client, scope: Scope, selector: Option<String>) -> Dashboard {
    let (connections, conn_writer) = reflector::store();
    let (groups, group_writer) = reflector::store();
    let (providers, provider_writer) = reflector::store();
    let (cluster_providers, cluster_writer) = reflector::store();
    let (version, _) = watch::channel(0);
    let dashboard = Dashboard {
        client: client.clone(),
        scope: scope.clone(),
        selector: selector.clone(),
        connections,
        groups,
        providers,
        cluster_providers,
        connections_health: Arc::default(),
        groups_health: Arc::default(),
        version,
        permissions: tokio::sync::Mutex::new(HashMap::new()),
    };
    let bump = dashboard.version.clone();
    let mut config = watcher::Config::default();
    if let Some(s) = &selector {
        config = config.labels(s);
    }
    let conn_api: Api<ChannelConnection> = scope.api(&client);
    let group_api: Api<ChannelGroup> = scope.api(&client);
    let provider_api: Api<ChannelProvider> = scope.api(&client);
    let cluster_api: Api<ClusterChannelProvider> = Api::all(client);
    // The tasks end with the process.
    tokio::spawn(recover(
        conn_api.clone(),
        dashboard.connections_health.clone(),
        bump.clone(),
    ));
    tokio::spawn(recover(
        group_api.clone(),
        dashboard.groups_health.clone(),
        bump.clone(),
    ));
    tokio::spawn(follow(
        reflect(conn_api, config, conn_writer),
        bump.clone(),
        Some(dashboard.connections_health.clone()),
    ));
    tokio::spawn(follow(
        reflect(group_api, watcher::Config::default(), group_writer),
        bump.clone(),
        Some(dashboard.groups_health.clone()),
    ));
    // Provider objects only name the provider type; a user who cannot read them sees names.
    tokio::spawn(follow(
        reflect(provider_api, watcher::Config::default(), provider_writer),
        bump.clone(),
        None,
    ));
    tokio::spawn(follow(
        reflect(cluster_api, watcher::Config::default(), cluster_writer),
        bump,
        None,
    ));
    dashboard
}

/// A watch of `api` kept in `writer`'s store, retried with backoff, without `managedFields`
/// (nothing here reads them; they are often the larger half of an object).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear());
    reflector::reflector(writer, stream)
}

/// Runs one reflector stream, recording its health in `health` (when given) and bumping the
/// version on every event so the page hears of it.
async fn follow<S, K>(
    stream: S,
    version: watch::Sender<u64>,
    health: Option<Arc<Mutex<WatchHealth>>>,
) where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Some(health) = &health {
            let mut h = health.lock().unwrap_or_else(|p| p.into_inner());
            let was = h.error.take();
            match &item {
                Ok(watcher::Event::InitDone) => h.synced = true,
                Ok(_) => {}
                Err(e) => h.error = Some(watch_error(e)),
            }
            // Said once per change on the terminal too, for whoever looks there.
            match (&was, &h.error) {
                (None, Some(e)) => eprintln!("{e}"),
                (Some(_), None) => eprintln!("the API server answers again"),
                _ => {}
            }
        }
        version.send_modify(|v| *v += 1);
    }
}

/// While `health` holds an error, asks the API server for one object of `api` every few
/// seconds and clears the error once it answers: a watch that resumes from where it stopped
/// says nothing until an object changes, so its silence cannot tell that it works again.
async fn recover<K>(api: Api<K>, health: Arc<Mutex<WatchHealth>>, version: watch::Sender<u64>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let failing = || {
        health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .is_some()
    };
    loop {
        tokio::time::sleep(RECOVERY_PROBE).await;
        if !failing() || api.list(&ListParams::default().limit(1)).await.is_err() {
            continue;
        }
        let cleared = health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .take()
            .is_some();
        if cleared {
            eprintln!("the API server answers again");
            version.send_modify(|v| *v += 1);
        }
    }
}

/// A watch error in words: what failed and what kube said.
fn watch_error(e: &watcher::Error) -> String {
    let text = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => kube_error(e),
        other => format!("The watch failed: {other}"),
    };
    crate::cli::status::one_line(&text)
}

/// A sentence for the page's banner: what went wrong between the dashboard and the API server.
fn kube_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!("Forbidden: {}", s.message),
        kube::Error::Api(s) if s.code == 404 => {
            "Not found: are the relink CRDs installed? (`relink crd | kubectl apply --server-side -f -`)"
                .to_owned()
        }
        kube::Error::Api(s) => format!("The API server answered {}: {}", s.code, s.message),
        other => format!("Lost the API server ({other})"),
    }
}

impl Dashboard {
    /// Everything the page shows now.
    async fn snapshot(&self, version: u64) -> Snapshot {
        let mut types = ProviderTypes::new();
        for p in self.providers.state() {
            types.insert(
                (
                    ProviderKind::ChannelProvider.as_str(),
                    p.namespace().unwrap_or_default(),
                    p.name_any(),
                ),
                p.spec.type_,
            );
        }
        for p in self.cluster_providers.state() {
            types.insert(
                (
                    ProviderKind::ClusterChannelProvider.as_str(),
                    String::new(),
                    p.name_any(),
                ),
                p.spec.type_,
            );
        }
        let mut conns = self.connections.state();
        conns.sort_by_key(|c| (c.namespace(), c.name_any()));
        let mut rows = Vec::with_capacity(conns.len());
        for c in &conns {
            let ns = c.namespace().unwrap_or_default();
            let check = self.may_patch(&ns).await;
            rows.push(view::connection_row(
                c,
                view::provider_type_of(c, &types),
                check,
            ));
        }
        let mut groups = self.groups.state();
        groups.sort_by_key(|g| (g.namespace(), g.name_any()));
        let plain: Vec<&ChannelConnection> = conns.iter().map(|c| c.as_ref()).collect();
        let group_rows = groups
            .iter()
            .map(|g| view::group_row(g, &plain, &rows))
            .collect();
        let health = |h: &Mutex<WatchHealth>| h.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let api = health(&self.connections_health);
        let groups_health = health(&self.groups_health);
        Snapshot {
            version,
            scope: self.scope.describe(),
            selector: self.selector.clone(),
            counts: view::counts(&rows),
            api,
            connections: rows,
            groups: group_rows,
            groups_error: groups_health.error,
        }
    }

    /// Whether the user may patch connections in `ns` (asked with a SelfSubjectAccessReview,
    /// remembered for a minute), and if not, why.
    async fn may_patch(&self, ns: &str) -> Permission {
        let mut cache = self.permissions.lock().await;
        if let Some((at, p)) = cache.get(ns)
            && at.elapsed() < PERMISSION_TTL
        {
            return p.clone();
        }
        let (p, definitive) = self.ask_may_patch(ns).await;
        // A failed question is asked again next time (the API server may be back).
        if definitive {
            cache.insert(ns.to_owned(), (Instant::now(), p.clone()));
        }
        p
    }

    /// The answer, and whether the API server gave it (rather than an error).
    async fn ask_may_patch(&self, ns: &str) -> (Permission, bool) {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(relink::api::GROUP.to_owned()),
                    resource: Some("channelconnections".to_owned()),
                    verb: Some("patch".to_owned()),
                    namespace: Some(ns.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(r) => {
                let status = r.status.unwrap_or_default();
                let p = if status.allowed {
                    Permission {
                        allowed: true,
                        why: None,
                    }
                } else {
                    let detail = status
                        .reason
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default();
                    Permission {
                        allowed: false,
                        why: Some(format!(
                            "You may not patch channelconnections in namespace {ns}{detail}; ask for the relink editor role there."
                        )),
                    }
                };
                (p, true)
            }
            Err(e) => (
                Permission {
                    allowed: false,
                    why: Some(format!(
                        "Cannot ask whether you may patch channelconnections in namespace {ns}: {}",
                        kube_error(&e)
                    )),
                },
                false,
            ),
        }
    }
}
