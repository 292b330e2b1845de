//! The `ChannelConnection` controller: watches, caches and the shared [`Context`].
//!
//! Caches hold only what deciding "is a check due?" needs: a slim copy of each connection
//! (`cache.rs`, in a map of our own: `store.rs`), provider objects, and the `resourceVersion`
//! of each Secret from a metadata-only watch. The whole connection and its Secret's data are
//! read when a check is due. When a connection is looked at and checked is decided by the due queue (`queue.rs`),
//! the slots (`slots.rs`) and the runner (`runner.rs`), not by kube's controller.

mod cache;
mod group;
mod index;
mod provider;
mod queue;
mod reconcile;
mod refresh;
mod runner;
mod schedule;
mod secrets;
mod slots;
pub mod status;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::{
    ChannelConnection, ChannelGroup, ChannelProvider, ClusterChannelProvider, ProviderKind,
};
use crate::notify::Notifier;
use crate::providers::Http;
use crate::reauth::Reauth;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ConnectionLabels;
use crate::tokens;

pub use cache::CachedConnection;
pub use reconcile::Error;
pub use schedule::{Due, Observed, due};
pub use secrets::SecretVersions;
use store::Conn;

/// Operator settings the controller needs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Where the operator runs: default namespace of a ClusterChannelProvider's client secret.
    pub operator_namespace: String,
    /// Checks in flight at once, overall.
    pub concurrency: u16,
    /// Checks in flight at once against one provider object.
    pub per_provider_concurrency: usize,
    /// First retry delay after a transient provider failure.
    pub retry_base: Duration,
    /// Only connections matching this label selector (sharding).
    pub selector: Option<String>,
    /// Checks in flight at once for the connections of one namespace, so one tenant cannot
    /// hold every slot.
    pub per_namespace_concurrency: usize,
    /// Least time between two checks of one connection caused by a trigger (a check request,
    /// an edit); a trigger inside it is served when it ends.
    pub check_request_min_gap: Duration,
    /// While an application is rejected (`invalid_client`), one connection asks the provider
    /// again this often; the others report `ProviderNotReady` without calling.
    pub app_probe_interval: Duration,
    /// The label a token Secret must carry before it is read or written (`--secret-label`).
    pub secret_label: Option<crate::access::SecretLabel>,
    /// Whether this process still holds the leader Lease (`None`: no leader election). No
    /// refresh starts without it: two processes must never use one refresh token.
    pub leading: Option<watch::Receiver<bool>>,
}

/// The default of `--concurrency`: twice the provider slots (at least 16), so that API round
/// trips before and after a provider call do not hold a provider slot.
pub fn default_concurrency(per_provider_concurrency: usize) -> u16 {
    let twice = per_provider_concurrency.saturating_mul(2);
    u16::try_from(twice).unwrap_or(u16::MAX).max(16)
}

/// What the controller uses besides the Kubernetes client, built once by `relink run`.
#[derive(Clone)]
pub struct Deps {
    pub http: Http,
    pub reauth: Reauth,
    pub metrics: Arc<Metrics>,
    pub notifier: Arc<Notifier>,
    /// Set once the caches are synced (read by `/readyz`).
    pub ready: Arc<AtomicBool>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: crate::telemetry::Publisher,
    pub http: Http,
    pub reauth: Reauth,
    pub metrics: Arc<Metrics>,
    pub notifier: Arc<Notifier>,
    pub settings: Settings,
    /// Slim connections (see `cache.rs`, `store.rs`), read by the group controller.
    pub connections: Arc<store::Connections>,
    pub providers: Store<ChannelProvider>,
    pub cluster_providers: Store<ClusterChannelProvider>,
    pub secrets: SecretVersions,
    /// Client secrets of providers, reused while their Secret is unchanged.
    pub client_secrets: tokens::ClientSecretCache,
    /// Status writes of this process not yet seen back through the watch: a lagging cache
    /// must not make a just-checked connection look due again.
    unseen: Arc<cache::Unseen>,
    /// Checks in flight per namespace and provider, and the connections waiting for one.
    slots: Arc<slots::Slots>,
    /// When each connection is looked at next (`queue.rs`).
    queue: Arc<queue::DueQueue>,
    /// Failed reconciles in a row per connection uid, for the error backoff.
    error_streaks: Mutex<HashMap<String, u32>>,
    /// Refresh single flights, unwritten answers and Event rate limits (see `refresh.rs`).
    refresh: refresh::Shared,
    /// True once every cache has its first complete list; no check is decided before that.
    synced: watch::Sender<bool>,
    /// Application problems learned from checks, by provider label (see `provider.rs`).
    app_problems: Mutex<HashMap<String, AppProblem>>,
    provider_triggers: futures::channel::mpsc::UnboundedSender<ObjectRef<ChannelProvider>>,
    cluster_provider_triggers:
        futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterChannelProvider>>,
}

/// What a check learned about a rejected application.
#[derive(Clone, Debug)]
struct AppProblem {
    message: String,
    /// The provider's generation and its client secret's version when it was learned: a fix
    /// of either lifts it.
    inputs: (Option<i64>, Option<String>),
    /// When a connection last asked the provider despite the problem.
    last_probe: std::time::Instant,
}

/// The caches a [`Context`] reads.
struct Caches {
    connections: Arc<store::Connections>,
    providers: Store<ChannelProvider>,
    cluster_providers: Store<ClusterChannelProvider>,
    secrets: SecretVersions,
    unseen: Arc<cache::Unseen>,
    slots: Arc<slots::Slots>,
    queue: Arc<queue::DueQueue>,
}

type Triggers = (
    futures::channel::mpsc::UnboundedSender<ObjectRef<ChannelProvider>>,
    futures::channel::mpsc::UnboundedSender<ObjectRef<ClusterChannelProvider>>,
);

impl Context {
    fn new(
        client: Client,
        deps: Deps,
        settings: Settings,
        caches: Caches,
        (provider_triggers, cluster_provider_triggers): Triggers,
    ) -> Arc<Self> {
        Arc::new(Context {
            app_problems: Mutex::default(),
            provider_triggers,
            cluster_provider_triggers,
            connections: caches.connections,
            recorder: crate::telemetry::publisher(&client),
            client,
            http: deps.http,
            reauth: deps.reauth,
            metrics: deps.metrics,
            notifier: deps.notifier,
            settings,
            providers: caches.providers,
            cluster_providers: caches.cluster_providers,
            secrets: caches.secrets,
            client_secrets: tokens::ClientSecretCache::default(),
            unseen: caches.unseen,
            slots: caches.slots,
            queue: caches.queue,
            error_streaks: Mutex::default(),
            refresh: refresh::Shared::default(),
            synced: watch::channel(false).0,
        })
    }

    /// The application problem a check last reported for provider `label`, if any.
    pub fn app_problem(&self, label: &str) -> Option<String> {
        self.app_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(label)
            .map(|p| p.message.clone())
    }

    /// `Some(message)` when the application is known to be rejected and this check should not
    /// call the provider. Once per `app_probe_interval` one check goes through as the probe
    /// that finds out whether the application works again; an edit of the provider object
    /// lifts the problem at once.
    fn app_problem_blocks(&self, provider: &tokens::ResolvedProvider) -> Option<String> {
        let mut map = self
            .app_problems
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let label = provider.label();
        let inputs = self.app_inputs(provider);
        let problem = map.get_mut(&label)?;
        // After an edit this check is the probe; the problem itself stays until a check
        // reports the application working, so the provider's status hears of it.
        let edited = problem.inputs != inputs;
        if edited || problem.last_probe.elapsed() >= self.settings.app_probe_interval {
            problem.inputs = inputs;
            problem.last_probe = std::time::Instant::now();
            return None;
        }
        // The message as learned, so re-learning it from this outcome changes nothing.
        Some(problem.message.clone())
    }

    /// What a fix of an application changes: the provider's generation and the version of its
    /// client secret's Secret.
    fn app_inputs(&self, provider: &tokens::ResolvedProvider) -> (Option<i64>, Option<String>) {
        let secret = provider
            .client_secret_location()
            .and_then(|(ns, name, _)| self.secrets.version(&ns, &name));
        (provider.generation, secret)
    }

    /// A slot for one check of `conn`: one of its namespace and one of its provider object, or
    /// `None` when either is all in use. Then the connection waits in line without holding one
    /// of the controller's slots, and is reconciled again when its slot is free (`slots.rs`).
    fn take_slot(&self, conn: &ChannelConnection, provider_label: &str) -> Option<slots::Slot> {
        let key = Conn::new(&conn.namespace().unwrap_or_default(), &conn.name_any());
        self.slots.take(&key, provider_label)
    }

    /// Records what a check learned about an application; a change re-evaluates the provider's
    /// `Ready` condition at once.
    pub fn learn_about_app(&self, provider: &tokens::ResolvedProvider, problem: Option<String>) {
        let label = provider.label();
        let changed = {
            let mut map = self
                .app_problems
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = map.get(&label).map(|p| p.message.clone());
            match &problem {
                Some(message) => {
                    let inputs = self.app_inputs(provider);
                    let entry = map.entry(label).or_insert_with(|| AppProblem {
                        message: message.clone(),
                        inputs: inputs.clone(),
                        last_probe: std::time::Instant::now(),
                    });
                    entry.message = message.clone();
                    entry.inputs = inputs;
                }
                None => {
                    map.remove(&label);
                }
            };
            before != problem
        };
        if !changed {
            return;
        }
        match provider.kind {
            ProviderKind::ChannelProvider => {
                let r = ObjectRef::new(&provider.name).within(&provider.namespace);
                let _ = self.provider_triggers.unbounded_send(r);
            }
            ProviderKind::ClusterChannelProvider => {
                let _ = self
                    .cluster_provider_triggers
                    .unbounded_send(ObjectRef::new(&provider.name));
            }
        }
    }

    /// Waits until the caches are complete. (A watch channel, because kube's
    /// `Store::wait_until_ready` was seen to wake only one of several concurrent waiters.)
    pub async fn wait_synced(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }

    /// Whether the caches are complete (for readiness probes).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Whether a token refresh may start: only while leading.
    fn may_start_refresh(&self) -> bool {
        self.settings.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    /// Versions of the connection's Secret and provider, as the caches see them now.
    fn observed(&self, conn: &ChannelConnection) -> Observed {
        let ns = conn.namespace().unwrap_or_default();
        let r = &conn.spec.provider_ref;
        let provider_generation = match r.kind {
            ProviderKind::ChannelProvider => self
                .providers
                .get(&ObjectRef::new(&r.name).within(&ns))
                .and_then(|p| p.metadata.generation),
            ProviderKind::ClusterChannelProvider => self
                .cluster_providers
                .get(&ObjectRef::new(&r.name))
                .and_then(|p| p.metadata.generation),
        };
        Observed {
            secret_version: self.secrets.version(&ns, &conn.spec.secret_ref.name),
            provider_generation,
        }
    }
}

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves; in-flight checks finish first.
pub async fn run(
    client: Client,
    deps: Deps,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let wc = watcher::Config::default();
    let ns = settings.namespace.clone();

    let conn_store = Arc::new(store::Connections::default());
    // Groups are recounted when a connection of their namespace changes (or goes away).
    let group_controller = Controller::new(api_for::<ChannelGroup>(&client, &ns), wc.clone());
    let (group_tx, group_rx) = futures::channel::mpsc::unbounded::<ObjectRef<ChannelGroup>>();
    let secret_index = Arc::new(index::SecretIndex::default());
    let unseen = Arc::new(cache::Unseen::default());
    // Connections that waited for a slot are reconciled again through `wake_rx`.
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let slots = Arc::new(slots::Slots::new(
        settings.per_namespace_concurrency,
        settings.per_provider_concurrency,
        wake_tx,
    ));
    let due_queue = Arc::new(queue::DueQueue::default());
    let side = ConnectionSide {
        slots: slots.clone(),
        queue: due_queue.clone(),
        cached: conn_store.clone(),
        metrics: deps.metrics.clone(),
        index: secret_index.clone(),
        unseen: unseen.clone(),
        groups: group_controller.store(),
        group_tx,
    };
    let connections = connection_events(&client, &settings, wc.clone(), side);
    let (providers, provider_events) =
        cached_watch(api_for::<ChannelProvider>(&client, &ns), wc.clone());
    let (cluster_providers, cluster_events) = cached_watch(
        Api::<ClusterChannelProvider>::all(client.clone()),
        wc.clone(),
    );
    let secrets = SecretVersions::default();
    let secret_events = secret_events(&client, &ns, wc.clone(), &secrets);

    let (provider_triggers, provider_rx) = futures::channel::mpsc::unbounded();
    let (cluster_provider_triggers, cluster_provider_rx) = futures::channel::mpsc::unbounded();
    let ready = deps.ready.clone();
    let caches = Caches {
        connections: conn_store.clone(),
        providers,
        cluster_providers,
        secrets,
        unseen,
        slots,
        queue: due_queue.clone(),
    };
    let ctx = Context::new(
        client,
        deps,
        settings.clone(),
        caches,
        (provider_triggers, cluster_provider_triggers),
    );
    mark_synced(ctx.clone(), ready);

    let shutdown = shutdown.shared();
    let provider_ctx = ctx.clone();
    let look_ctx = ctx.clone();
    let groups = group::run(group_controller, group_rx, shutdown.clone(), ctx.clone());
    let (by_provider, by_cluster_provider) = (conn_store.clone(), conn_store.clone());
    info!(
        namespace = ns.as_deref().unwrap_or("<all>"),
        "starting the ChannelConnection controller"
    );
    // Every trigger goes to the due queue, which looks at the connection now.
    let trigger_queue = due_queue.clone();
    let triggers = futures::stream::select_all([
        connections.map_ok(|c| vec![c]).boxed(),
        secret_events
            .map_ok(move |s| {
                secret_index.connections(&s.namespace().unwrap_or_default(), &s.name_any())
            })
            .boxed(),
        provider_events
            .map_ok(move |p| using_provider(&by_provider, &p))
            .boxed(),
        cluster_events
            .map_ok(move |p| using_cluster_provider(&by_cluster_provider, &p))
            .boxed(),
    ])
    .take_until(shutdown.clone())
    .for_each(move |keys| {
        match keys {
            Ok(keys) => {
                for key in keys {
                    trigger_queue.after(&key, Duration::ZERO);
                }
            }
            Err(e) => warn!(error = %e, "watch failed, retrying"),
        }
        std::future::ready(())
    });
    let checks = runner::run(ctx.clone(), wake_rx, shutdown.clone());
    let provider_status = provider_status(
        provider_ctx,
        wc,
        provider_rx,
        cluster_provider_rx,
        shutdown.clone(),
    );
    let looks = async move {
        look_ctx.wait_synced().await;
        queue::run(due_queue, |conn| reconcile::look(&look_ctx, conn), shutdown).await;
    };
    // Each part a task of its own: joined in one task, every wake-up of any part (a watch
    // event, a due deadline, a finished check) polled all of them, the idle provider and group
    // controllers included (a profile of a 10,000-connection sweep put 6 % of the operator's
    // CPU there). The set aborts its tasks if this future is dropped, as the join did.
    let mut parts = tokio::task::JoinSet::new();
    parts.spawn(triggers);
    parts.spawn(checks);
    parts.spawn(groups);
    parts.spawn(provider_status);
    parts.spawn(looks);
    while let Some(done) = parts.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    info!("controller stopped");
}

/// Secret metadata only (never the tokens): versions kept in `secrets`, changes as triggers.
fn secret_events(
    client: &Client,
    ns: &Option<String>,
    wc: watcher::Config,
    secrets: &SecretVersions,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
{
    // Pages of 1,000: metadata is small (about 1 KiB a Secret with its managedFields), and a
    // cluster holds many more Secrets than connections.
    let wc = wc.page_size(1000);
    secrets.track(watcher(api_for::<PartialObjectMeta<Secret>>(client, ns), wc).default_backoff())
}

/// What the connection watch keeps in step besides the cache.
struct ConnectionSide {
    metrics: Arc<Metrics>,
    index: Arc<index::SecretIndex>,
    unseen: Arc<cache::Unseen>,
    slots: Arc<slots::Slots>,
    queue: Arc<queue::DueQueue>,
    /// The connection cache, filled by the watch.
    cached: Arc<store::Connections>,
    groups: Store<ChannelGroup>,
    group_tx: futures::channel::mpsc::UnboundedSender<ObjectRef<ChannelGroup>>,
}

impl ConnectionSide {
    /// Follows one watch event: the Secret index, unseen writes, the ready series of a deleted
    /// connection, the due queue, and a recount of the groups of the connection's namespace.
    fn seen(&self, event: &watcher::Event<Arc<CachedConnection>>) {
        let changed = match event {
            watcher::Event::Delete(c) => {
                self.metrics.forget_connection(&ConnectionLabels {
                    namespace: c.namespace().to_owned(),
                    name: c.name().to_owned(),
                    provider: c.provider_ref().name.clone(),
                });
                self.index.delete(c);
                self.unseen.forget(c);
                self.slots.forget(c.conn());
                self.queue.forget(c.conn());
                c
            }
            watcher::Event::Apply(c) => {
                self.index.apply(c);
                // Forgets this process's writes the cache has caught up with.
                self.unseen.behind(c.status.as_ref(), c.uid().as_deref());
                c
            }
            // The first list: index it; groups are counted once their own list is in.
            watcher::Event::InitApply(c) => {
                self.index.apply(c);
                return;
            }
            // A complete list (at start, or after the watch lost track): every connection is
            // looked at once, as the cache now has it, without a reconcile each.
            watcher::Event::InitDone => {
                for c in self.cached.state() {
                    self.queue.after(c.conn(), Duration::ZERO);
                }
                return;
            }
            _ => return,
        };
        let ns = changed.namespace();
        for g in (self.groups.state().iter()).filter(|g| g.namespace().as_deref() == Some(ns)) {
            let _ = self
                .group_tx
                .unbounded_send(ObjectRef::from_obj(g.as_ref()));
        }
    }
}

/// The connection watch: fills the slim cache through `writer`, keeps `side` in step, and
/// yields the connections whose trigger fields changed.
fn connection_events(
    client: &Client,
    settings: &Settings,
    wc: watcher::Config,
    side: ConnectionSide,
) -> impl futures::Stream<Item = Result<Conn, watcher::Error>> + Send + 'static {
    // Pages of 250: the text of a page of whole objects (about 1 MiB) is held while it is
    // decoded; smaller pages cost a list request per hundred connections and a slower start.
    let wc = match &settings.selector {
        Some(sel) => wc.labels(sel),
        None => wc,
    }
    .page_size(250);
    watcher(api_for::<cache::Watched>(client, &settings.namespace), wc)
        .default_backoff()
        .map_ok(move |event| {
            let mut event = slim(event);
            // Whether an object is news is decided against the cached copy before the cache
            // takes the new one: no map of its own beside the cache.
            if let watcher::Event::Apply(c) = &mut event {
                c.set_news(side.cached.get(c.conn()).as_deref());
            }
            let event = side.cached.apply(event);
            side.seen(&event);
            event
        })
        // Changes only: a complete list goes to the due queue (`seen`). The operator's own
        // status writes come back through the watch; they are not news.
        .try_filter_map(|event| {
            std::future::ready(Ok(match event {
                watcher::Event::Apply(c) if c.is_news() => Some(c.conn().clone()),
                _ => None,
            }))
        })
}

/// A watch event of the slim copy (the watcher's metadata dropped).
fn slim(event: watcher::Event<cache::Watched>) -> watcher::Event<CachedConnection> {
    match event {
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(w) => watcher::Event::InitApply(w.conn),
        watcher::Event::InitDone => watcher::Event::InitDone,
        watcher::Event::Apply(w) => watcher::Event::Apply(w.conn),
        watcher::Event::Delete(w) => watcher::Event::Delete(w.conn),
    }
}

/// A cache of provider objects (without managedFields) and the stream of their changes.
fn cached_watch<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let mut news = ProviderNews::default();
    let events = watcher(api, wc)
        .default_backoff()
        .modify(|p| p.managed_fields_mut().clear())
        .reflect(writer)
        .try_filter_map(move |event| std::future::ready(Ok(news.of(event))));
    (store, events)
}

/// Which provider events concern connections. A connection reads a provider's spec (its
/// generation) and nothing else of it: the provider's own status writes, and the first list
/// (every connection is looked at once the caches are complete), trigger nothing; a later list
/// (after the watch lost track) passes on the providers whose generation changed meanwhile.
struct ProviderNews<K: Resource<DynamicType = ()>> {
    generations: HashMap<ObjectRef<K>, Option<i64>>,
    listed: bool,
}

impl<K: Resource<DynamicType = ()>> Default for ProviderNews<K> {
    fn default() -> Self {
        ProviderNews {
            generations: HashMap::new(),
            listed: false,
        }
    }
}

impl<K: Resource<DynamicType = ()>> ProviderNews<K> {
    fn of(&mut self, event: watcher::Event<K>) -> Option<K> {
        match event {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let generation = p.meta().generation;
                let old = self.generations.insert(ObjectRef::from_obj(&p), generation);
                (self.listed && old != Some(generation)).then_some(p)
            }
            watcher::Event::Delete(p) => {
                self.generations.remove(&ObjectRef::from_obj(&p));
                Some(p)
            }
            watcher::Event::InitDone => {
                self.listed = true;
                None
            }
            watcher::Event::Init => None,
        }
    }
}

/// Marks the caches complete (and the process ready) once every first list is in.
fn mark_synced(ctx: Arc<Context>, ready: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let _ = ctx.providers.wait_until_ready().await;
        let _ = ctx.cluster_providers.wait_until_ready().await;
        ctx.secrets.wait_synced().await;
        ctx.synced.send_replace(true);
        ready.store(true, Ordering::Relaxed);
        info!("caches synced");
    });
}

/// The provider objects' status controllers, run when a check learns about an application.
async fn provider_status(
    ctx: Arc<Context>,
    wc: watcher::Config,
    provider_rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ChannelProvider>>,
    cluster_rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ClusterChannelProvider>>,
    shutdown: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let namespaced = Controller::new(api_for::<ChannelProvider>(&client, &ns), wc.clone())
        .reconcile_on(provider_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            provider::reconcile_namespaced,
            provider::error_policy,
            ctx.clone(),
        )
        .for_each(log_errors("ChannelProvider"));
    // ClusterChannelProviders are shared: only a cluster-wide operator reports on them, so
    // several namespace-scoped releases do not overwrite each other's view.
    let cluster = async move {
        if ns.is_none() {
            Controller::new(Api::<ClusterChannelProvider>::all(client), wc)
                .reconcile_on(cluster_rx)
                .graceful_shutdown_on(shutdown)
                .run(provider::reconcile_cluster, provider::error_policy, ctx)
                .for_each(log_errors("ClusterChannelProvider"))
                .await;
        }
    };
    futures::join!(namespaced, cluster);
}

/// Logs what a controller's run stream reports (reconcile errors are already logged by the
/// error policies; objects deleted meanwhile are not worth a line).
fn log_errors<T, E: std::fmt::Display>(
    kind: &'static str,
) -> impl FnMut(Result<T, kube::runtime::controller::Error<Error, E>>) -> std::future::Ready<()> {
    move |res| {
        match res {
            Err(kube::runtime::controller::Error::ObjectNotFound(_)) | Ok(_) => {}
            Err(other) => warn!(error = %other, kind, "reconcile failed"),
        }
        std::future::ready(())
    }
}

/// Labels of a connection's own metric series.
pub fn connection_labels(c: &ChannelConnection) -> ConnectionLabels {
    labels_of(c, &c.spec.provider_ref.name)
}

fn labels_of(c: &impl Resource, provider: &str) -> ConnectionLabels {
    ConnectionLabels {
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
        provider: provider.to_owned(),
    }
}

/// The connections that name ChannelProvider `p`.
fn using_provider(store: &store::Connections, p: &ChannelProvider) -> Vec<Conn> {
    let (ns, name) = (p.namespace().unwrap_or_default(), p.name_any());
    referencing(store, |c| {
        c.provider_ref().kind == ProviderKind::ChannelProvider
            && c.provider_ref().name == name
            && c.namespace() == ns
    })
}

/// The connections that name ClusterChannelProvider `p`.
fn using_cluster_provider(store: &store::Connections, p: &ClusterChannelProvider) -> Vec<Conn> {
    let name = p.name_any();
    referencing(store, |c| {
        c.provider_ref().kind == ProviderKind::ClusterChannelProvider
            && c.provider_ref().name == name
    })
}

fn referencing(store: &store::Connections, pred: impl Fn(&CachedConnection) -> bool) -> Vec<Conn> {
    store
        .state()
        .iter()
        .filter(|c| pred(c))
        .map(|c| c.conn().clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn provider(name: &str, generation: i64) -> ChannelProvider {
        let mut p: ChannelProvider = serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelProvider",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"type": "google", "clientId": "c"}
        }))
        .unwrap();
        p.metadata.generation = Some(generation);
        p
    }

    fn names(out: Option<ChannelProvider>) -> Option<String> {
        out.map(|p| p.name_any())
    }

    #[test]
    fn only_a_new_generation_of_a_provider_concerns_its_connections() {
        let mut news = ProviderNews::default();
        // The first list: every connection is looked at anyway.
        assert_eq!(names(news.of(Event::Init)), None);
        assert_eq!(names(news.of(Event::InitApply(provider("a", 1)))), None);
        assert_eq!(names(news.of(Event::InitApply(provider("b", 1)))), None);
        assert_eq!(names(news.of(Event::InitDone)), None);
        // A status write (same generation) is not news; a spec edit is.
        assert_eq!(names(news.of(Event::Apply(provider("a", 1)))), None);
        assert_eq!(
            names(news.of(Event::Apply(provider("a", 2)))),
            Some("a".into())
        );
        // A later list passes on what changed while the watch was away, and nothing else.
        assert_eq!(names(news.of(Event::Init)), None);
        assert_eq!(names(news.of(Event::InitApply(provider("a", 2)))), None);
        assert_eq!(
            names(news.of(Event::InitApply(provider("b", 3)))),
            Some("b".into())
        );
        assert_eq!(
            names(news.of(Event::InitApply(provider("c", 1)))),
            Some("c".into())
        );
        assert_eq!(names(news.of(Event::InitDone)), None);
        // A deleted provider concerns its connections.
        assert_eq!(
            names(news.of(Event::Delete(provider("b", 3)))),
            Some("b".into())
        );
    }
}
