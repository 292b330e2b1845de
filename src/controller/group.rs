//! The `ChannelGroup` controller: recounts a group whenever one of its namespace's connections
//! changes. It reads only the connection cache and never calls a provider.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::core::{Selector, SelectorExt};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::{CachedConnection, Context, Error};
use crate::api::{
    ChannelConnection, ChannelGroup, ChannelGroupSpec, ChannelGroupStatus, ConditionType,
    GroupMember, set_condition_reason,
};
use crate::telemetry::metrics::GroupLabels;

/// Green, orange, red.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Degraded,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Down => "Down",
        }
    }
}

/// Whether `conn` belongs to the group described by `spec`.
pub fn is_member(spec: &ChannelGroupSpec, conn: &CachedConnection) -> bool {
    if spec.connections.iter().any(|n| n == conn.name()) {
        return true;
    }
    let Some(sel) = &spec.selector else {
        return false;
    };
    match Selector::try_from(sel.clone()) {
        Ok(s) => s.matches(&conn.label_map()),
        Err(_) => false,
    }
}

/// The members counted: how many are ready, which are not (and why), whether every failing
/// one needs a person.
struct Tally {
    ready: i32,
    not_ready: Vec<GroupMember>,
    all_failing_need_a_person: bool,
}

impl Tally {
    /// Members (found in the cache) plus the connections the spec names that do not exist.
    fn total(&self, members: usize) -> i32 {
        (members
            + self
                .not_ready
                .iter()
                .filter(|m| m.reason == "Missing")
                .count()) as i32
    }
}

/// Counts the members (in name order) and the named connections that are missing.
fn tally(spec: &ChannelGroupSpec, members: &[Arc<ChannelConnection>]) -> Tally {
    let mut t = Tally {
        ready: 0,
        not_ready: Vec::new(),
        all_failing_need_a_person: true,
    };
    let mut seen = BTreeSet::new();
    for m in members {
        seen.insert(m.name_any());
        let status = m.status.clone().unwrap_or_default();
        let r = status.condition(ConditionType::Ready);
        if r.is_some_and(|c| c.status == "True") {
            t.ready += 1;
            continue;
        }
        let stalled = status
            .condition(ConditionType::Stalled)
            .is_some_and(|c| c.status == "True");
        t.all_failing_need_a_person &= stalled;
        t.not_ready.push(GroupMember {
            name: m.name_any(),
            reason: r
                .map(|c| c.reason.clone())
                .unwrap_or_else(|| "Pending".into()),
        });
    }
    for name in spec.connections.iter().filter(|n| !seen.contains(*n)) {
        t.not_ready.push(GroupMember {
            name: name.clone(),
            reason: "Missing".into(),
        });
    }
    t
}

/// Healthy when all are ready, down when none (or fewer than `spec.minReady`), else degraded.
fn health_of(spec: &ChannelGroupSpec, ready: i32, total: i32, min_ready: i32) -> Health {
    if total > 0 && ready == total {
        Health::Healthy
    } else if ready == 0 || (spec.min_ready.is_some() && ready < min_ready) {
        Health::Down
    } else {
        Health::Degraded
    }
}

/// The group's new status from its members (in name order) and the old status.
pub fn group_status(
    spec: &ChannelGroupSpec,
    generation: Option<i64>,
    members: &[Arc<ChannelConnection>],
    old: &ChannelGroupStatus,
    now: jiff::Timestamp,
) -> (ChannelGroupStatus, Health) {
    let tally = tally(spec, members);
    let total = tally.total(members.len());
    let ready = tally.ready;
    let min_ready = spec.min_ready.unwrap_or(total).min(total.max(1));
    let health = health_of(spec, ready, total, min_ready);

    let mut s = old.clone();
    s.observed_generation = generation;
    s.total = total;
    s.ready = ready;
    s.not_ready = tally.not_ready;
    s.ready_summary = Some(format!("{ready}/{total}"));
    s.health = Some(health.as_str().into());
    let summary = match health {
        Health::Healthy => format!("all {total} connections are ready"),
        _ if total == 0 => "no connection matches spec.selector or spec.connections".into(),
        _ => format!(
            "{ready}/{total} ready (at least {min_ready} needed); not ready: {}",
            s.not_ready
                .iter()
                .map(|m| format!("{} ({})", m.name, m.reason))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let is_ready = total > 0 && ready >= min_ready;
    let mut set = |t, ok: bool, reason: &str, msg: &str| {
        set_condition_reason(&mut s.conditions, t, Some(ok), reason, msg, generation, now);
    };
    set(ConditionType::Ready, is_ready, health.as_str(), &summary);
    set(
        ConditionType::Degraded,
        health == Health::Degraded,
        health.as_str(),
        &summary,
    );
    let stalled = health == Health::Down && (total == 0 || tally.all_failing_need_a_person);
    let stalled_msg = if stalled {
        "a person must act on the members listed in status.notReady"
    } else {
        "nothing to do or still retrying"
    };
    set(
        ConditionType::Stalled,
        stalled,
        health.as_str(),
        stalled_msg,
    );
    (s, health)
}

/// Runs the group controller until `shutdown` resolves, recounting the groups sent on
/// `triggers` (by the connection watch) as well as those that change themselves.
pub async fn run(
    controller: Controller<ChannelGroup>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<ChannelGroup>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ctx: Arc<Context>,
) {
    controller
        .reconcile_on(triggers)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(super::log_errors("ChannelGroup"))
        .await;
}

pub async fn reconcile(group: Arc<ChannelGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.wait_synced().await;
    let ns = group.namespace().unwrap_or_default();
    let mut members: Vec<Arc<ChannelConnection>> = ctx
        .connections
        .state()
        .into_iter()
        .filter(|c| c.namespace() == ns && is_member(&group.spec, c))
        .map(|c| Arc::new(c.view()))
        .collect();
    members.sort_by_key(|c| c.name_any());
    let old = group.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let (status, health) =
        group_status(&group.spec, group.metadata.generation, &members, &old, now);

    let labels = GroupLabels {
        namespace: ns.clone(),
        name: group.name_any(),
    };
    ctx.metrics
        .group_members
        .get_or_create(&labels)
        .set(i64::from(status.total));
    ctx.metrics
        .group_ready_members
        .get_or_create(&labels)
        .set(i64::from(status.ready));

    if status != old {
        let api: Api<ChannelGroup> = Api::namespaced(ctx.client.clone(), &ns);
        crate::api::write::apply_other(&api, &group.name_any(), &status).await?;
    }
    if old.health.as_deref() != Some(health.as_str()) {
        let ready = status.condition_message(ConditionType::Ready);
        let event = Event {
            type_: if health == Health::Healthy {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: health.as_str().into(),
            note: Some(ready),
            action: "Recount".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &group.object_ref(&())).await {
            warn!(namespace = %ns, name = %group.name_any(), error = %e, "cannot publish event");
        }
    }
    // Members trigger recounts; the requeue is only a safety net.
    Ok(Action::requeue(Duration::from_secs(600)))
}

pub fn error_policy(group: Arc<ChannelGroup>, err: &Error, _ctx: Arc<Context>) -> Action {
    warn!(namespace = ?group.namespace(), name = %group.name_any(), error = %err, "group reconcile failed, retrying");
    Action::requeue(Duration::from_secs(10))
}

impl ChannelGroupStatus {
    fn condition_message(&self, t: ConditionType) -> String {
        self.conditions
            .iter()
            .find(|c| c.type_ == t.as_str())
            .map(|c| c.message.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Reason, set_condition};
    use serde_json::json;

    fn status_of<'a>(s: &'a ChannelGroupStatus, type_: &str) -> &'a str {
        let c = s.conditions.iter().find(|c| c.type_ == type_);
        c.expect("condition is set").status.as_str()
    }

    fn member(name: &str, ready: bool, stalled: bool) -> Arc<ChannelConnection> {
        let spec = serde_json::from_value(
            json!({"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}),
        )
        .unwrap();
        let mut c = ChannelConnection::new(name, spec);
        let mut st = crate::api::ChannelConnectionStatus::default();
        let now = jiff::Timestamp::now();
        let reason = if ready {
            Reason::Valid
        } else {
            Reason::Revoked
        };
        set_condition(
            &mut st.conditions,
            ConditionType::Ready,
            Some(ready),
            reason,
            "",
            None,
            now,
        );
        set_condition(
            &mut st.conditions,
            ConditionType::Stalled,
            Some(stalled),
            reason,
            "",
            None,
            now,
        );
        c.status = Some(st);
        Arc::new(c)
    }

    fn spec(min: Option<i32>) -> ChannelGroupSpec {
        ChannelGroupSpec {
            selector: None,
            connections: vec![],
            min_ready: min,
        }
    }

    #[test]
    fn green_orange_red() {
        let now = jiff::Timestamp::now();
        let old = ChannelGroupStatus::default();
        let all = [
            member("a", true, false),
            member("b", true, false),
            member("c", true, false),
        ];
        let (s, h) = group_status(&spec(None), Some(1), &all, &old, now);
        assert_eq!(
            (h, s.ready_summary.as_deref()),
            (Health::Healthy, Some("3/3"))
        );

        let one_down = [
            member("a", true, false),
            member("b", false, true),
            member("c", true, false),
        ];
        let (s, h) = group_status(&spec(None), Some(1), &one_down, &old, now);
        assert_eq!(h, Health::Degraded);
        assert_eq!(
            s.not_ready,
            [GroupMember {
                name: "b".into(),
                reason: "Revoked".into()
            }]
        );
        assert_eq!(status_of(&s, "Ready"), "False");

        let (s, h) = group_status(&spec(Some(2)), Some(1), &one_down, &old, now);
        assert_eq!(h, Health::Degraded);
        assert_eq!(status_of(&s, "Ready"), "True", "minReady met");

        let none = [member("a", false, true), member("b", false, true)];
        let (s, h) = group_status(&spec(None), Some(1), &none, &old, now);
        assert_eq!(h, Health::Down);
        assert_eq!(status_of(&s, "Stalled"), "True");

        // Down but one member is only retrying: not Stalled.
        let retrying = [member("a", false, true), member("b", false, false)];
        let (s, _) = group_status(&spec(None), Some(1), &retrying, &old, now);
        assert_eq!(status_of(&s, "Stalled"), "False");
    }

    #[test]
    fn named_members_that_do_not_exist_count_as_missing() {
        let mut sp = spec(None);
        sp.connections = vec!["a".into(), "ghost".into()];
        let (s, h) = group_status(
            &sp,
            None,
            &[member("a", true, false)],
            &Default::default(),
            jiff::Timestamp::now(),
        );
        assert_eq!((s.total, s.ready, h), (2, 1, Health::Degraded));
        assert_eq!(s.not_ready[0].reason, "Missing");
    }

    #[test]
    fn members_are_found_in_the_cache_by_selector_and_by_name() {
        let cached = |name: &str, app: &str| -> CachedConnection {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "labels": {"app": app, "tier": "x"}},
                "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}
            }))
            .unwrap()
        };
        let mut sp: ChannelGroupSpec = serde_json::from_value(serde_json::json!({
            "selector": {"matchLabels": {"app": "campaign"}}
        }))
        .unwrap();
        assert!(is_member(&sp, &cached("a", "campaign")));
        assert!(!is_member(&sp, &cached("b", "other")));
        sp.connections = vec!["b".into()];
        assert!(is_member(&sp, &cached("b", "other")));
    }
}
