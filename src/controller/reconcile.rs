//! One reconcile: decide whether a check is due; if so gather the inputs, ask the provider,
//! and write the verdict once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::refresh::{RefreshResult, Refresher};
use super::schedule::{self, Due};
use super::status::track_reauthorization;
use super::status::{CheckContext, Outcome, next_status};
use super::{CachedConnection, Context};
use crate::account::needs_login;
use crate::api::{ChannelConnection, ChannelConnectionStatus, ProviderKind, Reason, Timings};
use crate::providers::{App, RenewStyle, Token, Verdict, validator_for};
use crate::telemetry::metrics::{EndpointLabels, ErrorLabels, ResultLabels};
use crate::tokens::{ResolvedProvider, load_app, read_key};

/// Failures of the operator itself (not of the provider): retried by [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A bug: the check panicked. Caught so that one object cannot stop the operator.
    #[error("the check panicked (a bug; see the operator log)")]
    Panic,
}

impl Error {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Panic => "panic",
        }
    }
}

/// First retry after a failed reconcile; doubles per failure in a row up to [`ERROR_BACKOFF_MAX`].
const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(5);
const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// When a connection waiting for a slot is looked at again if no slot freed before (it keeps
/// its place in line; see `slots.rs`). A safety net: slots are handed on as they free.
const WAITING_FALLBACK: Duration = Duration::from_secs(300);

/// What a reconcile asks for next: to be looked at again after a while (the due queue keeps
/// it, see `queue.rs`), or only when the connection changes.
#[derive(Debug)]
enum Next {
    After(Duration),
    Change,
}

/// Runs one reconcile of a connection handed over by the due queue (`runner.rs`), and gives
/// the due queue its next time: the one the check asks for, or the backoff after a failure.
pub(super) async fn run_one(ctx: &Arc<Context>, key: &super::store::Conn) {
    use futures::FutureExt;
    let Some(conn) = ctx.connections.get(key) else {
        // Deleted meanwhile: slots taken for it go to the next in line.
        ctx.slots.settle(key);
        return;
    };
    ctx.wait_synced().await;
    let started = Instant::now();
    // The last line of defence: a panic in one check is this connection's error, retried
    // with backoff, never the end of the process (the panic hook logs where it happened).
    // The controller's locks ignore poisoning, so a panic while one is held cannot turn into
    // a panic of every later check.
    // Boxed: the check's state is large, and the task that runs this future is moved whole
    // when it starts and finishes.
    let result = std::panic::AssertUnwindSafe(Box::pin(check_if_due(&conn, ctx)))
        .catch_unwind()
        .await
        .unwrap_or(Err(Error::Panic));
    ctx.slots.settle(key);
    match &result {
        Ok(Next::After(wait)) => ctx.queue.after(key, *wait),
        Ok(Next::Change) => ctx.queue.forget(key),
        Err(e) => ctx.queue.after(key, error_policy(&conn, e, ctx)),
    }
    if result.is_ok() {
        ctx.error_streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&conn.uid().unwrap_or_default());
    }
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
}

async fn check_if_due(cached: &Arc<CachedConnection>, ctx: &Arc<Context>) -> Result<Next, Error> {
    let now = jiff::Timestamp::now();
    let (conn, observed) = match due_object(ctx, cached, now).await? {
        Ok(due) => due,
        Err(action) => return Ok(action),
    };
    let (ns, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    let started = Instant::now();
    let timings = conn.spec.validate();
    let Some(g) = gather(ctx, &conn, &ns, observed, timings.as_ref()).await? else {
        // The provider (or this namespace) has every slot busy: the connection waits in line
        // and is woken when its slot is free; the requeue is only a safety net.
        return Ok(Next::After(WAITING_FALLBACK));
    };
    let old = conn.status.clone().unwrap_or_default();
    let (mut status, transition) = next_status(&old, &g.outcome, &check_context(&conn, &g, now));
    if let Some(at) = g.refreshed {
        status.last_refresh_time = Some(Time(at));
    }
    let requested = track_reauthorization(&mut status, schedule::reauthorize_request(&conn));
    let newly_requested =
        requested && old.pending_reauthorization != status.pending_reauthorization;
    let setup = g.app.as_ref().zip(g.provider.as_ref());
    set_reauth_url(ctx, &conn, &g.outcome, setup, requested, &mut status, now);
    let interval = timings.map(|t| t.check_interval).unwrap_or_default();
    let wait = next_wait(
        ctx,
        &g.outcome,
        &status,
        interval,
        old.last_check_time.is_none(),
        now,
    );
    status.next_check_time = wait.map(|w| Time(schedule::after(now, w)));
    let delivery = ctx.notifier.plan(&conn, &mut status, now).await;

    write_status(ctx, &conn, &status).await?;
    if let Some(d) = delivery {
        ctx.notifier.enqueue(d);
    }
    record_metrics(ctx, &conn, &status, &g.outcome);
    if let (Some(uid), Some(checked)) = (conn.uid(), &status.last_check_time) {
        ctx.unseen.wrote(uid, checked.0);
    }
    info!(
        namespace = %ns,
        name = %name,
        provider = %conn.spec.provider_ref.name,
        verdict = %verdict_label(&status),
        duration_ms = started.elapsed().as_millis() as u64,
        next_in_s = wait.map(|w| w.as_secs()).unwrap_or(0),
        "checked"
    );
    if let Some(t) = transition {
        let type_ = if t.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, &conn, type_, t.reason.as_str(), &t.note).await;
    }
    if newly_requested && status.reauth_url.is_some() {
        let note = "A re-authorization was asked for (relink.dev/reauthorize-requested-at): the link is in status.reauthUrl until someone logs in";
        publish(
            ctx,
            &conn,
            EventType::Normal,
            "ReauthorizationRequested",
            note,
        )
        .await;
    }
    Ok(match wait {
        Some(w) => Next::After(w),
        None => Next::Change,
    })
}

/// The whole connection and its observed inputs when a check is due, else what to do instead.
///
/// The cache holds a slim copy (see `cache.rs`): once it says "due", the object is read from
/// the API server, unless the cached copy never had a status (then it holds everything a check
/// reads) and is not behind a write of this process. The read copy decides again, so a cache
/// that lags behind this process's own write never causes a second check.
async fn due_object(
    ctx: &Context,
    handed: &Arc<CachedConnection>,
    now: jiff::Timestamp,
) -> Result<Result<(Arc<ChannelConnection>, super::Observed), Next>, Error> {
    let decide = |conn: &ChannelConnection| {
        let observed = ctx.observed(conn);
        let due = schedule::due(conn, &observed, now, ctx.settings.check_request_min_gap);
        match due {
            // After a restart the gauge is there at once, without waiting for the next check.
            Due::Idle => Err(Next::Change),
            Due::Later(wait) => Err(Next::After(wait)),
            Due::Now(why) => Ok((observed, why)),
        }
    };
    let (cached, behind) = ctx.unseen.current(&ctx.connections, handed);
    let fresh = cached.status.is_none() && !behind;
    // A first check reads the whole spec kept in the cache; else deciding needs no more of
    // it than the slim view holds.
    let view = if fresh {
        cached.view()
    } else {
        cached.slim_view()
    };
    let (conn, (observed, why)) = match decide(&view) {
        Err(action) => {
            export_ready(ctx, &view);
            return Ok(Err(action));
        }
        Ok(due) if fresh => (Arc::new(view), due),
        Ok(_) => {
            let api: Api<ChannelConnection> =
                Api::namespaced(ctx.client.clone(), cached.namespace());
            let Some(mut full) = api.get_opt(cached.name()).await? else {
                return Ok(Err(Next::Change));
            };
            full.metadata.managed_fields = None;
            match decide(&full) {
                Err(action) => return Ok(Err(action)),
                Ok(due) => (Arc::new(full), due),
            }
        }
    };
    debug!(namespace = ?conn.namespace(), name = %conn.name_any(), why, "check due");
    Ok(Ok((conn, observed)))
}

/// Looks at a connection whose deadline in the due queue has passed: not due yet, it gets its
/// new deadline; due, it takes its slots and goes to the controller, or waits in line (no
/// reconcile is spent on it until its check can start). The reconcile decides again on the
/// newest copy, so a look that is wrong costs a reconcile, never a check.
pub(super) fn look(ctx: &Context, conn: super::store::Conn) {
    // The newest copy, just read. Whether a write of this process is still unseen does not
    // matter here: a look that is wrong costs a reconcile, and the reconcile asks.
    let Some(cached) = ctx.connections.get(&conn) else {
        return; // deleted meanwhile
    };
    let view = cached.slim_view();
    let observed = ctx.observed(&view);
    let now = jiff::Timestamp::now();
    match schedule::due(&view, &observed, now, ctx.settings.check_request_min_gap) {
        Due::Idle => export_ready(ctx, &view),
        Due::Later(wait) => {
            export_ready(ctx, &view);
            ctx.queue.put(conn, wait);
        }
        Due::Now(_) => {
            // As `gather`: only a check that calls a provider needs slots.
            let calls = cached.calls_provider();
            match calls
                .then(|| resolve_provider(ctx, &view, &conn.namespace))
                .flatten()
            {
                Some(p) => ctx.slots.start(&conn, &p.label()),
                None => ctx.slots.run_now(&conn),
            }
            // A safety net: the reconcile sets the real next time.
            ctx.queue.put(conn, WAITING_FALLBACK);
        }
    }
}

/// The inputs a check needs (provider, slots, Secret, provider answer), or `None` when the
/// provider or the namespace has no free slot.
async fn gather(
    ctx: &Context,
    conn: &ChannelConnection,
    ns: &str,
    observed: super::Observed,
    timings: Result<&Timings, &String>,
) -> Result<Option<Gathered>, Error> {
    let nothing_called = |outcome| Gathered {
        outcome,
        observed: observed.clone(),
        app: None,
        provider: None,
        refreshed: None,
        refresh_expires_at: None,
    };
    Ok(Some(match timings {
        _ if conn.spec.suspend => nothing_called(Outcome::Suspended),
        Err(message) => nothing_called(Outcome::InvalidSpec {
            message: message.clone(),
        }),
        Ok(t) => {
            let provider = resolve_provider(ctx, conn, ns);
            // Held through the check, until what it learned about the application is recorded.
            let slots = match &provider {
                Some(p) => match ctx.take_slot(conn, &p.label()) {
                    Some(slots) => Some(slots),
                    None => return Ok(None),
                },
                None => None,
            };
            let g = gather_and_check(conn, ctx, ns, observed.clone(), t, provider).await?;
            learn_about_app(ctx, &g);
            drop(slots);
            g
        }
    }))
}

/// What `next_status` needs besides the old status and the outcome.
fn check_context<'a>(
    conn: &'a ChannelConnection,
    g: &Gathered,
    now: jiff::Timestamp,
) -> CheckContext<'a> {
    let timings = conn.spec.timings();
    CheckContext {
        spec: &conn.spec,
        generation: conn.metadata.generation,
        now,
        check_request: schedule::check_request(conn).map(str::to_owned),
        refresh_request: schedule::refresh_request(conn).map(str::to_owned),
        observed_secret_version: g.observed.secret_version.clone(),
        observed_provider_generation: g.observed.provider_generation,
        refresh_before: timings
            .as_ref()
            .map(|t| t.refresh_before)
            .unwrap_or_default(),
        refresh_expires_at: g.refresh_expires_at,
        consent_deadline: consent_deadline(conn, timings.as_ref().ok()),
    }
}

/// When to check next after this outcome: a retry with backoff after a transient failure, the
/// regular interval (earlier if the token expires first), or never for a spec that cannot be
/// checked until it changes.
fn next_wait(
    ctx: &Context,
    outcome: &Outcome,
    status: &ChannelConnectionStatus,
    interval: Duration,
    first_check: bool,
    now: jiff::Timestamp,
) -> Option<Duration> {
    let mut rng = rand::rng();
    match outcome {
        Outcome::Suspended | Outcome::InvalidSpec { .. } => None,
        Outcome::Checked {
            verdict: Verdict::Transient { retry_after, .. },
            ..
        } => Some(schedule::next_retry(
            ctx.settings.retry_base,
            interval,
            status.consecutive_failures,
            *retry_after,
            &mut rng,
        )),
        Outcome::Checked {
            refreshable: true, ..
        } => Some(schedule::before_expiry(
            schedule::next_regular(interval, first_check, &mut rng),
            status.expires_at.as_ref().map(|t| t.0),
            now,
        )),
        _ => Some(schedule::next_regular(interval, first_check, &mut rng)),
    }
}

/// `spec.refresh.maxAge` after the last consent: the last re-authorization through relink, else
/// the connection's creation (when its token was set up).
fn consent_deadline(
    conn: &ChannelConnection,
    timings: Option<&Timings>,
) -> Option<jiff::Timestamp> {
    let max_age = timings?.max_age?;
    let consent = conn
        .status
        .as_ref()
        .and_then(|s| s.last_reauthorization.as_ref())
        .map(|r| r.time.0)
        .or_else(|| conn.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    Some(schedule::after(consent, max_age))
}

/// Publishes one Event about the connection; a failure is logged, never the check's failure.
async fn publish(
    ctx: &Context,
    conn: &ChannelConnection,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(crate::text::truncate(note, crate::text::MAX_MESSAGE)),
        action: "Check".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &conn.object_ref(&())).await {
        warn!(namespace = ?conn.namespace(), name = %conn.name_any(), error = %e, "cannot publish event");
    }
}

/// When to look again at a connection whose reconcile failed (an API error, a rejected status
/// write, a panic): exponential backoff per connection and jitter, so one broken object
/// retries ever more slowly instead of every few seconds.
fn error_policy(conn: &CachedConnection, err: &Error, ctx: &Context) -> Duration {
    use rand::Rng;
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: err.metric_label().to_owned(),
        })
        .inc();
    let streak = {
        let mut streaks = ctx
            .error_streaks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = streaks.entry(conn.uid().unwrap_or_default()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let wait = ERROR_BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(streak.min(16) - 1))
        .min(ERROR_BACKOFF_MAX)
        .mul_f64(rand::rng().random_range(0.8..1.2));
    warn!(namespace = conn.namespace(), name = conn.name(), error = %err, kind = err.metric_label(), streak, retry_in_s = wait.as_secs(), "reconcile error, retrying");
    wait
}

/// `relink_connection_ready` and `relink_token_expiration_timestamp_seconds` from the status
/// as it stands (after a restart, before the connection's next check).
fn export_ready(ctx: &Context, conn: &ChannelConnection) {
    use crate::api::ConditionType;
    let none = ChannelConnectionStatus::default();
    let status = conn.status.as_ref().unwrap_or(&none);
    let ready = status
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.status == "True");
    let labels = super::connection_labels(conn);
    ctx.metrics
        .connection_ready
        .get_or_create(&labels)
        .set(i64::from(ready));
    export_expiry(ctx, &labels, status);
}

/// The expiry a person must act on: a token relink renews itself never needs anyone.
fn export_expiry(
    ctx: &Context,
    labels: &crate::telemetry::metrics::ConnectionLabels,
    status: &ChannelConnectionStatus,
) {
    let m = &ctx.metrics.token_expiration;
    match status
        .expires_at
        .as_ref()
        .filter(|_| status.refreshable == Some(false))
    {
        Some(t) => {
            m.get_or_create(labels).set(t.0.as_second() as f64);
        }
        None => {
            m.remove(labels);
        }
    }
}

fn record_metrics(
    ctx: &Context,
    conn: &ChannelConnection,
    status: &ChannelConnectionStatus,
    outcome: &Outcome,
) {
    use crate::api::ConditionType;
    let m = &ctx.metrics;
    m.status_writes.inc();
    let labels = super::connection_labels(conn);
    let ready = status
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.status == "True");
    m.connection_ready
        .get_or_create(&labels)
        .set(i64::from(ready));
    export_expiry(ctx, &labels, status);
    if !matches!(outcome, Outcome::Suspended) {
        m.checks
            .get_or_create(&ResultLabels {
                provider: labels.provider.clone(),
                result: verdict_label(status),
            })
            .inc();
    }
}

fn verdict_label(status: &ChannelConnectionStatus) -> String {
    use crate::api::ConditionType;
    if let Some(r) = status
        .condition(ConditionType::Reconciling)
        .filter(|c| c.status == "True")
    {
        return r.reason.clone();
    }
    status
        .condition(ConditionType::Ready)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

async fn write_status(
    ctx: &Context,
    conn: &ChannelConnection,
    status: &ChannelConnectionStatus,
) -> Result<(), Error> {
    // Re-publishing the link this check read: only if nobody (the OAuth callback consuming it)
    // changed the object since, so a used link never comes back.
    let old_link = conn.status.as_ref().and_then(|s| s.reauth_url.as_ref());
    let version = conn
        .resource_version()
        .filter(|_| status.reauth_url.is_some() && status.reauth_url.as_ref() == old_link);
    let ns = conn.namespace().unwrap_or_default();
    crate::api::write::apply(
        &ctx.client,
        &ns,
        &conn.name_any(),
        status,
        version.as_deref(),
    )
    .await?;
    Ok(())
}

/// The provider object a connection names, from the caches.
fn resolve_provider(ctx: &Context, conn: &ChannelConnection, ns: &str) -> Option<ResolvedProvider> {
    let r = &conn.spec.provider_ref;
    match r.kind {
        ProviderKind::ChannelProvider => ctx
            .providers
            .get(&ObjectRef::new(&r.name).within(ns))
            .map(|p| ResolvedProvider::from_namespaced(&p)),
        ProviderKind::ClusterChannelProvider => ctx
            .cluster_providers
            .get(&ObjectRef::new(&r.name))
            .map(|p| ResolvedProvider::from_cluster(&p, &ctx.settings.operator_namespace)),
    }
}

/// Records what a check found out about the application (rejected, or working again).
fn learn_about_app(ctx: &Context, g: &Gathered) {
    let Some(provider) = &g.provider else { return };
    match &g.outcome {
        Outcome::ProviderNotReady { message }
        | Outcome::Checked {
            verdict: Verdict::Misconfigured { message },
            ..
        } => ctx.learn_about_app(provider, Some(message.clone())),
        Outcome::Checked {
            verdict: Verdict::Valid(_) | Verdict::Invalid { .. },
            ..
        } => ctx.learn_about_app(provider, None),
        _ => {}
    }
}

impl Gathered {
    /// What a check that stopped before asking the provider found.
    fn before_the_call(
        outcome: Outcome,
        observed: super::Observed,
        app: Option<App>,
        provider: Option<ResolvedProvider>,
    ) -> Self {
        Self {
            outcome,
            observed,
            app,
            provider,
            refreshed: None,
            refresh_expires_at: None,
        }
    }
}

/// What gathering the inputs found.
struct Gathered {
    outcome: Outcome,
    /// Input versions the outcome is based on.
    observed: super::Observed,
    /// The application, when it could be loaded (needed for a re-authorization link).
    app: Option<App>,
    /// The provider object, when found (its status learns from this check).
    provider: Option<ResolvedProvider>,
    /// When the tokens in the Secret were last renewed, if newer than the status says.
    refreshed: Option<jiff::Timestamp>,
    /// When the Secret's refresh token stops working, if the provider said so.
    refresh_expires_at: Option<jiff::Timestamp>,
}

/// The provider object and its application (client secret loaded), or the outcome that
/// stops the check before any token is read.
async fn provider_and_app(
    conn: &ChannelConnection,
    ctx: &Context,
    provider: Option<ResolvedProvider>,
    observed: &mut super::Observed,
) -> Result<Result<(ResolvedProvider, App), Box<Gathered>>, Error> {
    let done = |outcome, observed: &mut super::Observed, app, provider| {
        Err(Box::new(Gathered::before_the_call(
            outcome,
            observed.clone(),
            app,
            provider,
        )))
    };
    let Some(provider) = provider else {
        let r = &conn.spec.provider_ref;
        let outcome = Outcome::ProviderNotFound {
            kind: r.kind.as_str(),
            name: r.name.clone(),
        };
        return Ok(done(outcome, observed, None, None));
    };
    observed.provider_generation = provider.generation;
    let r = &conn.spec.provider_ref;
    if let Some(p) = (r.kind == ProviderKind::ClusterChannelProvider)
        .then(|| ctx.cluster_providers.get(&ObjectRef::new(&r.name)))
        .flatten()
        && let Some(message) = crate::access::refusal(&ctx.client, &p, conn).await?
    {
        let outcome = Outcome::ProviderNotAllowed { message };
        return Ok(done(outcome, observed, None, Some(provider)));
    }
    let app = match load_app(
        &ctx.client,
        ctx.http.policy(),
        &provider,
        Some((&ctx.client_secrets, &ctx.secrets)),
    )
    .await?
    {
        Ok(app) => app,
        Err(message) => {
            let outcome = Outcome::ProviderNotReady { message };
            return Ok(done(outcome, observed, None, Some(provider)));
        }
    };

    // An application the provider rejected is not asked again by every connection: one probe
    // per interval, the others report the provider's problem without a call.
    if let Some(message) = ctx.app_problem_blocks(&provider) {
        let outcome = Outcome::ProviderNotReady { message };
        return Ok(done(outcome, observed, Some(app), Some(provider)));
    }

    Ok(Ok((provider, app)))
}

/// Finds the provider, its client secret and the token; refreshes the token when it is about
/// to expire (or already dead) and a refresh is possible; then asks the provider.
async fn gather_and_check(
    conn: &ChannelConnection,
    ctx: &Context,
    ns: &str,
    cached: super::Observed,
    timings: &Timings,
    provider: Option<ResolvedProvider>,
) -> Result<Gathered, Error> {
    let mut observed = super::Observed {
        secret_version: cached.secret_version,
        provider_generation: None,
    };
    let (provider, app) = match provider_and_app(conn, ctx, provider, &mut observed).await? {
        Ok(found) => found,
        Err(g) => return Ok(*g),
    };
    let done = Gathered::before_the_call;
    let (secret, mut token) = match secret_and_token(conn, ctx, ns, &mut observed).await? {
        Ok(read) => read,
        Err(outcome) => {
            // A Secret relink may not use gets no re-authorization link either.
            let app = (!matches!(outcome, Outcome::InvalidSpec { .. })).then_some(app);
            return Ok(done(outcome, observed, app, Some(provider)));
        }
    };
    let validator = validator_for(app.settings.type_);
    let mut refresh = Refresher::new(ctx, conn, ns, &app, &secret);
    let refresh_expires_at = crate::tokens::refresh_expires_at(&secret);
    let mut expires_at = refresh.started.expires_at;
    // Every secret this check handles: provider text is scrubbed of all of them.
    let read_tokens = [
        Some(token.clone()),
        refresh.refresh_token.clone(),
        app.client_secret.clone(),
    ];

    let refreshable = can_refresh(conn, &app, &refresh);
    let status = conn.status.clone().unwrap_or_default();
    let mut failed = None;
    if refreshable {
        match renew_ahead(&mut refresh, &status, timings, &mut token, &mut expires_at).await {
            Ok(failure) => failed = failure,
            Err(verdict) => {
                let outcome = Outcome::Checked {
                    verdict: scrubbed(verdict, &read_tokens, &[&refresh.refresh_token]),
                    secret_expires_at: expires_at,
                    refreshable,
                };
                let observed = refresh.observed(observed);
                return Ok(done(outcome, observed, Some(app), Some(provider)));
            }
        }
    }

    let verdict = ask_provider(&mut refresh, validator, &mut token, &mut expires_at).await;
    let verdict = complete(&mut refresh, validator, &token, verdict, failed, expires_at).await;
    let refreshed = refresh.renewed_since(&status);
    let observed = refresh.observed(observed);
    let verdict = scrubbed(
        verdict,
        &read_tokens,
        &[&refresh.refresh_token, &Some(token)],
    );
    Ok(Gathered {
        outcome: Outcome::Checked {
            verdict,
            secret_expires_at: expires_at,
            refreshable,
        },
        observed,
        app: Some(app),
        provider: Some(provider),
        refreshed,
        refresh_expires_at,
    })
}

/// Reads the token Secret (recording its version in `observed`) and the access token in it;
/// else the outcome that stops the check (a Secret refused by `--secret-label` is
/// `InvalidSpec`).
async fn secret_and_token(
    conn: &ChannelConnection,
    ctx: &Context,
    ns: &str,
    observed: &mut super::Observed,
) -> Result<Result<(Secret, Token), Outcome>, Error> {
    let sref = &conn.spec.secret_ref;
    let Some(secret) = crate::tokens::secret::get(&ctx.client, ns, &sref.name).await? else {
        observed.secret_version = None;
        return Ok(Err(Outcome::SecretNotFound {
            secret: sref.name.clone(),
        }));
    };
    observed.secret_version = secret.resource_version();
    if let Some(message) =
        (ctx.settings.secret_label.as_ref()).and_then(|l| l.refusal(&sref.name, secret.labels()))
    {
        return Ok(Err(Outcome::InvalidSpec { message }));
    }
    let Some(token) = read_key(&secret, &sref.access_token_key) else {
        return Ok(Err(Outcome::SecretKeyMissing {
            secret: sref.name.clone(),
            key: sref.access_token_key.clone(),
        }));
    };
    Ok(Ok((secret, token)))
}

/// relink can renew this token itself: refreshing is on and there is a refresh token (or the
/// provider renews the access token itself).
fn can_refresh(conn: &ChannelConnection, app: &App, refresh: &Refresher<'_>) -> bool {
    conn.spec.refresh.enabled
        && (refresh.refresh_token.is_some()
            || matches!(
                app.preset().renew,
                RenewStyle::MetaExchange | RenewStyle::InstagramRefresh
            ))
}

/// Ahead of expiry (or to keep an idle refresh token alive, or when asked): renews the token
/// before the check. `Ok` carries a failed refresh to weigh against the check's verdict; `Err`
/// a misconfiguration to report instead of checking.
async fn renew_ahead(
    refresh: &mut Refresher<'_>,
    status: &ChannelConnectionStatus,
    timings: &Timings,
    token: &mut Token,
    expires_at: &mut Option<jiff::Timestamp>,
) -> Result<Option<Verdict>, Verdict> {
    let known_expiry = expires_at.or(status.expires_at.as_ref().map(|t| t.0));
    let asked = schedule::refresh_requested(refresh.conn);
    if !(asked || refresh.due(status, timings, known_expiry, jiff::Timestamp::now())) {
        return Ok(None);
    }
    match refresh.run(token).await {
        RefreshResult::Renewed(t, at) => {
            *token = t;
            *expires_at = at;
            Ok(None)
        }
        RefreshResult::Failed(verdict) if matches!(verdict, Verdict::Misconfigured { .. }) => {
            Err(verdict)
        }
        RefreshResult::Failed(verdict) => Ok(Some(verdict)),
        RefreshResult::NotPossible => Ok(None),
    }
}

/// Asks the provider. A dead token with a refresh token gets one renewal, and the provider is
/// asked again, before a person is told.
async fn ask_provider(
    refresh: &mut Refresher<'_>,
    validator: &dyn crate::providers::Validator,
    token: &mut Token,
    expires_at: &mut Option<jiff::Timestamp>,
) -> Verdict {
    let (ctx, conn, app) = (refresh.ctx, refresh.conn, refresh.app);
    let verdict = timed_check(ctx, conn, validator, app, token).await;
    let dead = matches!(
        verdict,
        Verdict::Invalid {
            reason: Reason::Expired | Reason::Revoked,
            ..
        }
    );
    if !dead
        || !refresh.conn.spec.refresh.enabled
        || refresh.refresh_token.is_none()
        || refresh.attempted
    {
        return verdict;
    }
    match refresh.run(token).await {
        RefreshResult::Renewed(t, at) => {
            *expires_at = at;
            *token = t;
            timed_check(ctx, conn, validator, app, token).await
        }
        RefreshResult::Failed(v) => v,
        RefreshResult::NotPossible => verdict,
    }
}

/// The check's verdict completed: the account named, the scopes a refresh granted where the
/// check cannot tell (kept in status), a failed refresh weighed against it.
async fn complete(
    refresh: &mut Refresher<'_>,
    validator: &dyn crate::providers::Validator,
    token: &Token,
    mut verdict: Verdict,
    refresh_failure: Option<Verdict>,
    expires_at: Option<jiff::Timestamp>,
) -> Verdict {
    let (ctx, conn, app) = (refresh.ctx, refresh.conn, refresh.app);
    name_the_account(ctx, conn, validator, app, token, &mut verdict).await;
    if let Verdict::Valid(grant) = &mut verdict
        && grant.scopes.is_none()
    {
        grant.scopes = refresh.granted.take();
    }
    match refresh_failure {
        Some(failed) => refresh.settle(verdict, failed, expires_at),
        None => verdict,
    }
}

/// Completes the verdict with the connection's account where the check alone does not name it
/// (the provider asks once per account: the account in status is reused).
async fn name_the_account(
    ctx: &Context,
    conn: &ChannelConnection,
    validator: &dyn crate::providers::Validator,
    app: &App,
    token: &Token,
    verdict: &mut Verdict,
) {
    let status = conn.status.as_ref();
    let expected = crate::account::expected_account(&conn.spec, status).and_then(|a| a.id);
    let wanted = expected.as_deref().map(|id| crate::providers::Wanted {
        id,
        kind: conn.spec.account.as_ref().and_then(|a| a.kind),
    });
    let known = status.and_then(|s| s.account.as_ref());
    validator
        .complete(&ctx.http, app, token, verdict, wanted, known)
        .await;
}

/// The verdict with provider text bounded and every token this check read or received removed.
fn scrubbed(verdict: Verdict, read: &[Option<Token>], received: &[&Option<Token>]) -> Verdict {
    let secrets: Vec<&Token> = read
        .iter()
        .chain(received.iter().copied())
        .flatten()
        .collect();
    verdict.scrubbed(&secrets)
}

async fn timed_check(
    ctx: &Context,
    conn: &ChannelConnection,
    validator: &dyn crate::providers::Validator,
    app: &App,
    token: &Token,
) -> Verdict {
    let started = Instant::now();
    let verdict = validator.check(&ctx.http, app, token).await;
    ctx.metrics
        .provider_request_duration
        .get_or_create(&EndpointLabels {
            provider: conn.spec.provider_ref.name.clone(),
            endpoint: "check".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    verdict
}

/// Sets `status.reauthUrl` while a person must log in (kept stable across checks so the link
/// in an email keeps working), clears it once healthy, keeps it through provider outages.
fn set_reauth_url(
    ctx: &Context,
    conn: &ChannelConnection,
    outcome: &Outcome,
    setup: Option<(&App, &ResolvedProvider)>,
    requested: bool,
    status: &mut ChannelConnectionStatus,
    now: jiff::Timestamp,
) {
    if matches!(
        outcome,
        Outcome::Checked {
            verdict: Verdict::Transient { .. },
            ..
        }
    ) {
        return;
    }
    let old = status.reauth_url.take();
    if !needs_login(status) && !requested {
        return;
    }
    let Some((app, provider)) = setup else { return };
    let binding = ctx.reauth.binding(provider, app);
    match ctx.reauth.link(app, &binding, conn, old.as_deref(), now) {
        Ok(url) => status.reauth_url = Some(url),
        Err(message) => {
            warn!(namespace = ?conn.namespace(), name = %conn.name_any(), %message, "no re-authorization link")
        }
    }
}
