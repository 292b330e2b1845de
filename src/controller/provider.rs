//! Status of `ChannelProvider` and `ClusterChannelProvider`: `Ready` when the client credentials
//! are present, the endpoints pass the policy, and (where the provider can tell) the application
//! is accepted. An application problem is reported here once instead of on every connection.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{Context, Error};
use crate::api::{
    ChannelProvider, ChannelProviderStatus, ClusterChannelProvider, ConditionType, Reason,
    set_condition,
};
use crate::providers::Endpoint;
use crate::tokens::{ResolvedProvider, load_app};

pub async fn reconcile_namespaced(
    p: Arc<ChannelProvider>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api =
        Api::<ChannelProvider>::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
    let resolved = ResolvedProvider::from_namespaced(&p);
    reconcile_any(p.as_ref(), p.status.clone(), resolved, api, &ctx).await
}

pub async fn reconcile_cluster(
    p: Arc<ClusterChannelProvider>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api = Api::<ClusterChannelProvider>::all(ctx.client.clone());
    let resolved = ResolvedProvider::from_cluster(&p, &ctx.settings.operator_namespace);
    reconcile_any(p.as_ref(), p.status.clone(), resolved, api, &ctx).await
}

async fn reconcile_any<K>(
    obj: &K,
    old: Option<ChannelProviderStatus>,
    resolved: ResolvedProvider,
    api: Api<K>,
    ctx: &Context,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let label = resolved.label();
    let problem = problem(&resolved, ctx).await?;
    let old = old.unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = obj.meta().generation;
    let now = jiff::Timestamp::now();
    let (ready, reason, message) = match &problem {
        None => (
            true,
            Reason::Valid,
            "the client credentials are present and were accepted".to_owned(),
        ),
        Some(m) => (false, Reason::ProviderNotReady, m.clone()),
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        Some(ready),
        reason,
        &message,
        obj.meta().generation,
        now,
    );
    if status != old {
        crate::api::write::apply_other(&api, &obj.name_any(), &status).await?;
        let was_ready = old
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status == "True");
        if was_ready != Some(ready) {
            let event = Event {
                type_: if ready {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason: reason.as_str().into(),
                note: Some(crate::text::truncate(&message, crate::text::MAX_MESSAGE)),
                action: "Validate".into(),
                secondary: None,
            };
            if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
                warn!(provider = %label, error = %e, "cannot publish event");
            }
        }
    }
    // Connection checks trigger re-evaluation when they learn something; this is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Why the provider cannot serve checks, if it cannot: its application does not load, has no
/// endpoint to check tokens with, or was refused by the provider lately.
async fn problem(resolved: &ResolvedProvider, ctx: &Context) -> Result<Option<String>, Error> {
    let label = resolved.label();
    Ok(
        match load_app(&ctx.client, ctx.http.policy(), resolved, None).await? {
            Err(message) => Some(message),
            Ok(app)
                if app.endpoint(Endpoint::Introspection).is_none()
                    && app.endpoint(Endpoint::Userinfo).is_none()
                    && app.endpoint(Endpoint::ApiBase).is_none() =>
            {
                Some(format!(
                    "{label}: set spec.endpoints.introspectionUrl or spec.endpoints.userinfoUrl so tokens can be checked"
                ))
            }
            Ok(_) => ctx.app_problem(&label),
        },
    )
}

pub fn error_policy<K: ResourceExt>(p: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(name = %p.name_any(), error = %err, "provider status update failed, retrying");
    Action::requeue(Duration::from_secs(15))
}
