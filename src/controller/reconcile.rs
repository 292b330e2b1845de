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
use super::schedule::{self, Due};
use super::status::{CheckContext, Outcome, next_status};
use crate::api::{
    ChannelConnection, ChannelConnectionStatus, FIELD_MANAGER, ProviderKind, ProviderSettings,
};
use crate::providers::{App, Token, Verdict, validator_for};
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
    let conn = with_latest_status(&ctx, &uid, conn);
    let now = jiff::Timestamp::now();
    let observed = ctx.observed(&conn);
    let why = match schedule::due(&conn, &observed, now) {
        Due::Idle => return Ok(Action::await_change()),
        Due::Later(wait) => return Ok(Action::requeue(wait)),
        Due::Now(why) => why,
    };
    let ns = conn.namespace().unwrap_or_default();
    let name = conn.name_any();
    debug!(namespace = %ns, name = %name, why, "check due");

    let started = Instant::now();
    let (outcome, observed) = if conn.spec.suspend {
        (Outcome::Suspended, observed)
    } else {
        gather_and_check(&conn, ctx, &ns).await?
    };
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

    let interval = schedule::interval(&conn);
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
            _ => Some(schedule::next_regular(interval, &mut rng)),
        }
    };
    status.next_check_time = wait.map(|w| Time(now + w));
    ctx.notifier.on_check(&conn, &old, &mut status, now).await;

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
    match &status.expires_at {
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

/// Finds the provider, its client secret and the token, then asks the provider. Returns the
/// outcome and the input versions it was based on.
async fn gather_and_check(
    conn: &ChannelConnection,
    ctx: &Context,
    ns: &str,
) -> Result<(Outcome, super::Observed), Error> {
    let mut observed = super::Observed::default();
    let r = &conn.spec.provider_ref;
    let (settings, trusted, label, provider_ns) = match r.kind {
        ProviderKind::ChannelProvider => {
            match ctx.providers.get(&ObjectRef::new(&r.name).within(ns)) {
                Some(p) => {
                    observed.provider_generation = p.metadata.generation;
                    (
                        ProviderSettings::from(p.spec.clone()),
                        false,
                        format!("{ns}/{}", r.name),
                        ns.to_owned(),
                    )
                }
                None => return Ok(not_found(conn, ctx, ns, r.kind.as_str(), &r.name)),
            }
        }
        ProviderKind::ClusterChannelProvider => {
            match ctx.cluster_providers.get(&ObjectRef::new(&r.name)) {
                Some(p) => {
                    observed.provider_generation = p.metadata.generation;
                    (
                        ProviderSettings::from(p.spec.clone()),
                        true,
                        r.name.clone(),
                        ctx.settings.operator_namespace.clone(),
                    )
                }
                None => return Ok(not_found(conn, ctx, ns, r.kind.as_str(), &r.name)),
            }
        }
    };

    // The token Secret first: its version is part of what the verdict is based on.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let sref = &conn.spec.secret_ref;
    let secret = match secrets.get_opt(&sref.name).await? {
        Some(s) => s,
        None => {
            return Ok((
                Outcome::SecretNotFound {
                    secret: sref.name.clone(),
                },
                observed,
            ));
        }
    };
    observed.secret_version = secret.resource_version();
    let Some(token) = read_key(&secret, &sref.access_token_key) else {
        let outcome = Outcome::SecretKeyMissing {
            secret: sref.name.clone(),
            key: sref.access_token_key.clone(),
        };
        return Ok((outcome, observed));
    };
    let secret_expires_at =
        read_key(&secret, &sref.expires_at_key).and_then(|v| parse_expiry(v.expose()));

    if !trusted {
        let e = &settings.endpoints;
        for url in [
            &e.authorization_url,
            &e.token_url,
            &e.introspection_url,
            &e.userinfo_url,
            &e.api_base_url,
        ]
        .into_iter()
        .flatten()
        {
            if let Err(message) = ctx.http.policy().check_url(url) {
                return Ok((Outcome::ProviderNotReady { message }, observed));
            }
        }
    }
    let client_secret = match &settings.client_secret_ref {
        None => None,
        Some(cs) => {
            let cs_ns = if trusted {
                cs.namespace.clone().unwrap_or(provider_ns)
            } else {
                provider_ns
            };
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &cs_ns);
            match api
                .get_opt(&cs.name)
                .await?
                .and_then(|s| read_key(&s, &cs.key))
            {
                Some(v) => Some(v),
                None => {
                    let message = format!(
                        "{} {label}: client secret not found (Secret {cs_ns}/{}, key {:?} in spec.clientSecretRef)",
                        r.kind.as_str(),
                        cs.name,
                        cs.key
                    );
                    return Ok((Outcome::ProviderNotReady { message }, observed));
                }
            }
        }
    };

    let app = App {
        settings,
        client_secret,
        trusted,
        label: format!("{}/{label}", r.kind.as_str()),
    };
    let slot = ctx.provider_slot(&app.label);
    let _permit = slot
        .acquire()
        .await
        .expect("provider semaphore is never closed");
    let started = Instant::now();
    let verdict = validator_for(app.settings.type_)
        .check(&ctx.http, &app, &token)
        .await;
    ctx.metrics
        .provider_request_duration
        .get_or_create(&EndpointLabels {
            provider: conn.spec.provider_ref.name.clone(),
            endpoint: "check".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    Ok((
        Outcome::Checked {
            verdict,
            secret_expires_at,
        },
        observed,
    ))
}

fn not_found(
    conn: &ChannelConnection,
    ctx: &Context,
    ns: &str,
    kind: &'static str,
    name: &str,
) -> (Outcome, super::Observed) {
    let observed = super::Observed {
        secret_version: ctx.secrets.version(ns, &conn.spec.secret_ref.name),
        provider_generation: None,
    };
    let outcome = Outcome::ProviderNotFound {
        kind,
        name: name.to_owned(),
    };
    (outcome, observed)
}

/// A Secret value as a token: UTF-8, surrounding whitespace trimmed (files often end in a
/// newline), non-empty and without inner whitespace.
fn read_key(secret: &Secret, key: &str) -> Option<Token> {
    let raw = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&raw.0).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return None;
    }
    Some(Token::new(text))
}

/// `expires_at` as RFC 3339 or Unix seconds.
fn parse_expiry(v: &str) -> Option<jiff::Timestamp> {
    if let Ok(secs) = v.parse::<i64>() {
        return jiff::Timestamp::from_second(secs).ok();
    }
    v.parse().ok()
}
