//! What the connection cache keeps of each object, and the status writes it has not seen yet.
//!
//! The cache decides only whether a check is due (`schedule::due`), which connections a
//! Secret or provider event concerns, group membership and the ready gauge. It keeps the spec
//! and labels, the request annotations and the few status fields those read; everything else
//! (condition messages, account, scopes, the link, notification records, `managedFields`,
//! other annotations) is dropped. A check that is due reads the whole object from the API
//! server, unless the cached object never had a status (a new connection: the cache then
//! holds all of it that a check reads).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Deserializer};

use crate::api::{
    ChannelConnection, ChannelConnectionSpec, ChannelConnectionStatus, ConditionType,
    PendingReauthorization,
};

/// A connection as the cache holds it, decoded straight from the watch: `managedFields`,
/// other annotations and most of the status are skipped while decoding, so they cost neither
/// memory nor the work of building them.
#[derive(Clone, Debug, Deserialize)]
pub struct CachedConnection {
    #[serde(deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    pub spec: ChannelConnectionSpec,
    #[serde(default)]
    pub status: Option<SlimStatus>,
}

/// The status fields `schedule::due`, the ready gauge and group counts read.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimStatus {
    observed_generation: Option<i64>,
    /// `Ready` and `Stalled`: type, status and reason.
    #[serde(default, deserialize_with = "kept_conditions")]
    conditions: Vec<SlimCondition>,
    last_check_time: Option<Time>,
    next_check_time: Option<Time>,
    observed_secret_version: Option<String>,
    observed_provider_generation: Option<i64>,
    last_handled_check_request: Option<String>,
    last_handled_refresh_request: Option<String>,
    last_handled_reauthorize_request: Option<String>,
    pending_reauthorization: Option<PendingReauthorization>,
}

#[derive(Clone, Debug, Deserialize)]
struct SlimCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
}

impl CachedConnection {
    /// The connection as the rest of the operator reads it: what the cache kept, every other
    /// status field empty and condition messages blank.
    pub fn view(&self) -> ChannelConnection {
        let mut c = ChannelConnection::new(&self.name_any(), self.spec.clone());
        c.metadata = self.metadata.clone();
        c.status = self.status.as_ref().map(SlimStatus::view);
        c
    }
}

impl SlimStatus {
    fn view(&self) -> ChannelConnectionStatus {
        let condition = |c: &SlimCondition| Condition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        ChannelConnectionStatus {
            observed_generation: self.observed_generation,
            conditions: self.conditions.iter().map(condition).collect(),
            last_check_time: self.last_check_time.clone(),
            next_check_time: self.next_check_time.clone(),
            observed_secret_version: self.observed_secret_version.clone(),
            observed_provider_generation: self.observed_provider_generation,
            last_handled_check_request: self.last_handled_check_request.clone(),
            last_handled_refresh_request: self.last_handled_refresh_request.clone(),
            last_handled_reauthorize_request: self.last_handled_reauthorize_request.clone(),
            pending_reauthorization: self.pending_reauthorization.clone(),
            ..Default::default()
        }
    }
}

impl Resource for CachedConnection {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ChannelConnection::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ChannelConnection::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ChannelConnection::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ChannelConnection::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields the operator reads; annotations only those relink reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "relink_annotations")]
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        generation: m.generation,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
        labels: m.labels,
        annotations: m.annotations,
        ..Default::default()
    })
}

fn relink_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let mut all = Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default();
    all.retain(|k, _| crate::api::ANNOTATIONS.iter().any(|(key, _)| key == k));
    Ok((!all.is_empty()).then_some(all))
}

fn kept_conditions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SlimCondition>, D::Error> {
    let kept = [
        ConditionType::Ready.as_str(),
        ConditionType::Stalled.as_str(),
    ];
    let mut all = Option::<Vec<SlimCondition>>::deserialize(d)?.unwrap_or_default();
    all.retain(|c| kept.contains(&c.type_.as_str()));
    Ok(all)
}

/// `lastCheckTime` of status writes this process made and has not seen back through the
/// watch yet, by connection uid. While an entry is here the cached object is behind, and a
/// check that looks due reads the object instead of trusting the cache. Entries leave as soon
/// as the watch delivers the write, so the map stays small.
#[derive(Default)]
pub struct Unseen {
    writes: Mutex<HashMap<String, jiff::Timestamp>>,
}

impl Unseen {
    /// Records a status write with this `lastCheckTime` (kept in whole seconds, as the API
    /// server stores it).
    pub fn wrote(&self, uid: String, checked: jiff::Timestamp) {
        let seconds = jiff::Timestamp::from_second(checked.as_second()).unwrap_or(checked);
        self.lock().insert(uid, seconds);
    }

    /// Whether the cached object is behind a write of this process (and forgets writes it has
    /// caught up with).
    pub fn behind(&self, status: Option<&SlimStatus>, uid: Option<&str>) -> bool {
        let Some(uid) = uid else {
            return false;
        };
        let mut writes = self.lock();
        let Some(written) = writes.get(uid) else {
            return false;
        };
        let cached = status.and_then(|s| s.last_check_time.as_ref());
        if cached.is_some_and(|c| c.0 >= *written) {
            writes.remove(uid);
            return false;
        }
        true
    }

    /// Forgets a deleted connection.
    pub fn forget(&self, conn: &CachedConnection) {
        if let Some(uid) = conn.metadata.uid.as_deref() {
            self.lock().remove(uid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, jiff::Timestamp>> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(at: jiff::Timestamp) -> ChannelConnection {
        let mut c: ChannelConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1"},
            "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}
        }))
        .unwrap();
        c.metadata.annotations = Some(
            [
                ("relink.dev/check-requested-at".to_owned(), "1".to_owned()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{}".into(),
                ),
            ]
            .into(),
        );
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "a long message".into(),
            last_transition_time: Time(at),
            observed_generation: Some(1),
        };
        c.status = Some(ChannelConnectionStatus {
            conditions: vec![condition("Ready"), condition("TokenValid")],
            last_check_time: Some(Time(at)),
            reauth_url: Some("https://example.test/login".into()),
            granted_scopes: vec!["a".into()],
            ..Default::default()
        });
        c
    }

    #[test]
    fn the_cache_keeps_what_due_reads_and_drops_the_rest() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let json = serde_json::to_value(checked(now)).unwrap();
        let cached: CachedConnection = serde_json::from_value(json).unwrap();
        let c = cached.view();
        let s = c.status.as_ref().unwrap();
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].reason, "Valid");
        assert!(s.conditions[0].message.is_empty());
        assert_eq!(s.last_check_time, Some(Time(now)));
        assert!(s.reauth_url.is_none() && s.granted_scopes.is_empty());
        let annotations = c.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["relink.dev/check-requested-at"]
        );
        assert_eq!(c.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(c.spec.secret_ref.name, "s");
    }

    #[test]
    fn unseen_write_makes_the_cache_behind_until_it_catches_up() {
        let now = jiff::Timestamp::now();
        let unseen = Unseen::default();
        let cached = |at: jiff::Timestamp| -> CachedConnection {
            serde_json::from_value(serde_json::to_value(checked(at)).unwrap()).unwrap()
        };
        let behind = |c: &CachedConnection| unseen.behind(c.status.as_ref(), Some("u1"));
        let old = cached(now - jiff::SignedDuration::from_secs(60));
        assert!(!behind(&old));
        unseen.wrote("u1".into(), now);
        assert!(behind(&old));
        assert!(!behind(&cached(now)));
        // Caught up: forgotten, so an older cached copy is trusted again.
        assert!(!behind(&old));
    }
}
