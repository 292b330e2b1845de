//! One reconcile: decide whether a check is due; if so gather the inputs, ask the provider,
//! and write the verdict once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Context;
use super::refresh::{RefreshResult, Refresher};
use super::schedule::{self, Due};
use super::status::needs_login;
use super::status::{CheckContext, Outcome, next_status};
use super::tokens::{ResolvedProvider, load_app, read_key};
use crate::api::{ChannelConnection, ChannelConnectionStatus, FIELD_MANAGER, ProviderKind, Reason};
use crate::providers::{App, RenewStyle, Token, Verdict, validator_for};
use crate::telemetry::metrics::{EndpointLabels, ErrorLabels, ResultLabels};

/// Failures of the operator itself (not of the provider): retried by [`error_policy`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
        }
    }
}

pub async fn reconcile(conn: Arc<ChannelConnection>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.wait_synced().await;
    let started = Instant::now();
    let result = check_if_due(conn, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn check_if_due(conn: Arc<ChannelConnection>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let uid = conn.uid().unwrap_or_default();
    let conn = with_latest_status(ctx, &uid, conn);
    let now = jiff::Timestamp::now();
    let observed = ctx.observed(&conn);
    let why = match schedule::due(&conn, &observed, now) {
        Due::Idle => {
            export_ready(ctx, &conn);
            return Ok(Action::await_change());
        }
        Due::Later(wait) => {
            // After a restart the gauge is there at once, without waiting for the next check.
            export_ready(ctx, &conn);
            return Ok(Action::requeue(wait));
        }
        Due::Now(why) => why,
    };
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    debug!(namespace = %ns, name = %name, why, "check due");

    let started = Instant::now();
    let g = if conn.spec.suspend {
        Gathered {
            outcome: Outcome::Suspended,
            observed,
            app: None,
            provider: None,
            refreshed: None,
        }
    } else {
        gather_and_check(&conn, ctx, &ns, observed).await?
    };
    let (outcome, observed) = (g.outcome, g.observed);
    if let Some(provider) = &g.provider {
        match &outcome {
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
    let old = conn.status.clone().unwrap_or_default();
    let cx = CheckContext {
        spec: &conn.spec,
        generation: conn.metadata.generation,
        now,
        check_request: schedule::check_request(&conn).map(str::to_owned),
        observed_secret_version: observed.secret_version,
        observed_provider_generation: observed.provider_generation,
    };
    let (mut status, transition) = next_status(&old, &outcome, &cx);
    if let Some(at) = g.refreshed {
        status.last_refresh_time = Some(Time(at));
    }
    set_reauth_url(ctx, &conn, &outcome, g.app.as_ref(), &mut status, now);

    let interval = schedule::interval(&conn);
    let first_check = old.last_check_time.is_none();
    let wait = {
        let mut rng = rand::rng();
        match &outcome {
            Outcome::Suspended => None,
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
    };
    status.next_check_time = wait.map(|w| Time(now + w));
    ctx.notifier
        .on_check(&conn, &old, &mut status, now, &ctx.http)
        .await;

    write_status(ctx, &conn, &status).await?;
    record_metrics(ctx, &conn, &status, &outcome);
    ctx.written
        .lock()
        .expect("written lock")
        .insert(uid, status.clone());
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
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.as_str().to_owned(),
            note: Some(truncate(&t.note, 1000)),
            action: "Check".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &conn.object_ref(&())).await {
            warn!(namespace = %ns, name = %name, error = %e, "cannot publish event");
        }
    }
    Ok(match wait {
        Some(w) => Action::requeue(w),
        None => Action::await_change(),
    })
}

pub fn error_policy(conn: Arc<ChannelConnection>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: err.metric_label().to_owned(),
        })
        .inc();
    warn!(namespace = ?conn.namespace(), name = %conn.name_any(), error = %err, kind = err.metric_label(), "reconcile error, retrying");
    Action::requeue(Duration::from_secs(10))
}

/// `relink_connection_ready` from the status as it stands.
fn export_ready(ctx: &Context, conn: &ChannelConnection) {
    use crate::api::ConditionType;
    let ready = conn
        .status
        .as_ref()
        .and_then(|s| s.condition(ConditionType::Ready))
        .is_some_and(|c| c.status == "True");
    ctx.metrics
        .connection_ready
        .get_or_create(&super::connection_labels(conn))
        .set(i64::from(ready));
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
    // The expiry a person must act on: a token relink renews itself never needs anyone.
    let refreshable = matches!(
        outcome,
        Outcome::Checked {
            refreshable: true,
            ..
        }
    );
    match status.expires_at.as_ref().filter(|_| !refreshable) {
        Some(t) => {
            m.token_expiration
                .get_or_create(&labels)
                .set(t.0.as_second() as f64);
        }
        None => {
            m.token_expiration.remove(&labels);
        }
    }
    if !matches!(outcome, Outcome::Suspended) {
        m.checks
            .get_or_create(&ResultLabels {
                provider: labels.provider.clone(),
                result: verdict_label(status),
            })
            .inc();
    }
}

/// The cached object, with the status this process wrote if the cache has not caught up yet.
fn with_latest_status(
    ctx: &Context,
    uid: &str,
    conn: Arc<ChannelConnection>,
) -> Arc<ChannelConnection> {
    let mut written = ctx.written.lock().expect("written lock");
    let Some(mine) = written.get(uid) else {
        return conn;
    };
    let cached = conn.status.as_ref().and_then(|s| s.last_check_time.clone());
    let cached_is_newer = match (&cached, &mine.last_check_time) {
        (Some(c), Some(m)) => c.0 >= m.0,
        (_, None) => true,
        (None, Some(_)) => false,
    };
    if cached_is_newer
        && conn.status.as_ref().map(|s| &s.observed_generation) == Some(&mine.observed_generation)
    {
        written.remove(uid);
        return conn;
    }
    let mut merged = (*conn).clone();
    merged.status = Some(mine.clone());
    Arc::new(merged)
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

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

async fn write_status(
    ctx: &Context,
    conn: &ChannelConnection,
    status: &ChannelConnectionStatus,
) -> Result<(), Error> {
    let api: Api<ChannelConnection> =
        Api::namespaced(ctx.client.clone(), &conn.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": ChannelConnection::api_version(&()),
        "kind": ChannelConnection::kind(&()),
        "status": status,
    });
    api.patch_status(
        &conn.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
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
}

/// Finds the provider, its client secret and the token; refreshes the token when it is about
/// to expire (or already dead) and a refresh is possible; then asks the provider.
async fn gather_and_check(
    conn: &ChannelConnection,
    ctx: &Context,
    ns: &str,
    cached: super::Observed,
) -> Result<Gathered, Error> {
    let mut observed = super::Observed {
        secret_version: cached.secret_version,
        provider_generation: None,
    };
    let done = |outcome, observed, app, provider| Gathered {
        outcome,
        observed,
        app,
        provider,
        refreshed: None,
    };
    let r = &conn.spec.provider_ref;
    let provider = match r.kind {
        ProviderKind::ChannelProvider => ctx
            .providers
            .get(&ObjectRef::new(&r.name).within(ns))
            .map(|p| ResolvedProvider::from_namespaced(&p)),
        ProviderKind::ClusterChannelProvider => ctx
            .cluster_providers
            .get(&ObjectRef::new(&r.name))
            .map(|p| ResolvedProvider::from_cluster(&p, &ctx.settings.operator_namespace)),
    };
    let Some(provider) = provider else {
        let outcome = Outcome::ProviderNotFound {
            kind: r.kind.as_str(),
            name: r.name.clone(),
        };
        return Ok(done(outcome, observed, None, None));
    };
    observed.provider_generation = provider.generation;
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

    let sref = &conn.spec.secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let Some(secret) = secrets.get_opt(&sref.name).await? else {
        observed.secret_version = None;
        let outcome = Outcome::SecretNotFound {
            secret: sref.name.clone(),
        };
        return Ok(done(outcome, observed, Some(app), Some(provider)));
    };
    observed.secret_version = secret.resource_version();
    let Some(mut token) = read_key(&secret, &sref.access_token_key) else {
        let outcome = Outcome::SecretKeyMissing {
            secret: sref.name.clone(),
            key: sref.access_token_key.clone(),
        };
        return Ok(done(outcome, observed, Some(app), Some(provider)));
    };
    let validator = validator_for(app.settings.type_);
    let slot = ctx.provider_slot(&app.label);
    let _permit = slot
        .acquire()
        .await
        .expect("provider semaphore is never closed");
    let mut refresh = Refresher::new(ctx, conn, ns, &app, &secret);
    let mut expires_at = refresh.started.expires_at;

    // Ahead of expiry (or to keep an idle refresh token alive): renew first, then check.
    let refreshable = conn.spec.refresh.enabled
        && (refresh.refresh_token.is_some()
            || matches!(
                app.preset().renew,
                RenewStyle::MetaExchange | RenewStyle::InstagramRefresh
            ));
    let status = conn.status.clone().unwrap_or_default();
    let known_expiry = expires_at.or(status.expires_at.as_ref().map(|t| t.0));
    let mut refresh_failure = None;
    if refreshable && refresh.due(&status, known_expiry, jiff::Timestamp::now()) {
        match refresh.run(&token).await {
            RefreshResult::Renewed(t, at) => {
                token = t;
                expires_at = at;
            }
            RefreshResult::Failed(verdict) if matches!(verdict, Verdict::Misconfigured { .. }) => {
                let outcome = Outcome::Checked {
                    verdict,
                    secret_expires_at: expires_at,
                    refreshable,
                };
                return Ok(done(
                    outcome,
                    refresh.observed(observed),
                    Some(app),
                    Some(provider),
                ));
            }
            RefreshResult::Failed(verdict) => refresh_failure = Some(verdict),
            RefreshResult::NotPossible => {}
        }
    }

    let mut verdict = timed_check(ctx, conn, validator, &app, &token).await;

    // Dead token but a refresh token: one renewal before telling a person.
    if let Verdict::Invalid {
        reason: Reason::Expired | Reason::Revoked,
        ..
    } = &verdict
        && conn.spec.refresh.enabled
        && refresh.refresh_token.is_some()
        && !refresh.attempted
    {
        verdict = match refresh.run(&token).await {
            RefreshResult::Renewed(t, at) => {
                expires_at = at;
                timed_check(ctx, conn, validator, &app, &t).await
            }
            RefreshResult::Failed(v) => v,
            RefreshResult::NotPossible => verdict,
        };
    }
    if let Some(failed) = refresh_failure {
        verdict = refresh.settle(verdict, failed, expires_at);
    }
    let refreshed = refresh.renewed_since(&status);
    let observed = refresh.observed(observed);
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
    })
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
    app: Option<&App>,
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
    if !needs_login(status) {
        return;
    }
    let Some(app) = app else { return };
    match ctx.reauth.link(app, conn, old.as_deref(), now) {
        Ok(url) => status.reauth_url = Some(url),
        Err(message) => {
            warn!(namespace = ?conn.namespace(), name = %conn.name_any(), %message, "no re-authorization link")
        }
    }
}
