//! What the connection cache keeps of each object, and the status writes it has not seen yet.
//!
//! The cache decides only whether a check is due (`schedule::due`), which connections a
//! Secret or provider event concerns, group membership and the ready gauge. It keeps the spec
//! and labels, the request annotations and the few status fields those read; everything else
//! (condition messages, account, scopes, the link, notification records, `managedFields`,
//! other annotations) is dropped. A check that is due reads the whole object from the API
//! server, unless the cached object never had a status (a new connection: the cache then
//! holds all of it that a check reads).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::{ChannelConnection, ChannelConnectionStatus, ConditionType};

/// Strips `c` down to what the cache needs (used in the watch's `modify`).
pub fn slim(c: &mut ChannelConnection) {
    let m = &mut c.metadata;
    m.managed_fields = None;
    m.owner_references = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| crate::api::ANNOTATIONS.iter().any(|(key, _)| key == k));
    }
    if let Some(s) = c.status.as_mut() {
        *s = slim_status(s);
    }
}

/// The status fields `schedule::due`, the ready gauge and group counts read; conditions keep
/// their type, status and reason without the message.
fn slim_status(s: &ChannelConnectionStatus) -> ChannelConnectionStatus {
    let kept = [
        ConditionType::Ready.as_str(),
        ConditionType::Stalled.as_str(),
    ];
    ChannelConnectionStatus {
        observed_generation: s.observed_generation,
        conditions: (s.conditions.iter())
            .filter(|c| kept.contains(&c.type_.as_str()))
            .map(
                |c| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                    message: String::new(),
                    ..c.clone()
                },
            )
            .collect(),
        last_check_time: s.last_check_time.clone(),
        next_check_time: s.next_check_time.clone(),
        observed_secret_version: s.observed_secret_version.clone(),
        observed_provider_generation: s.observed_provider_generation,
        last_handled_check_request: s.last_handled_check_request.clone(),
        last_handled_refresh_request: s.last_handled_refresh_request.clone(),
        last_handled_reauthorize_request: s.last_handled_reauthorize_request.clone(),
        pending_reauthorization: s.pending_reauthorization.clone(),
        ..Default::default()
    }
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
    /// Records a status write with this `lastCheckTime`.
    pub fn wrote(&self, uid: String, checked: jiff::Timestamp) {
        self.lock().insert(uid, checked);
    }

    /// Whether the cached object is behind a write of this process (and forgets writes it has
    /// caught up with).
    pub fn behind(&self, conn: &ChannelConnection) -> bool {
        let Some(uid) = conn.metadata.uid.as_deref() else {
            return false;
        };
        let mut writes = self.lock();
        let Some(written) = writes.get(uid) else {
            return false;
        };
        let cached = (conn.status.as_ref()).and_then(|s| s.last_check_time.as_ref());
        if cached.is_some_and(|c| c.0 >= *written) {
            writes.remove(uid);
            return false;
        }
        true
    }

    /// Forgets a deleted connection.
    pub fn forget(&self, conn: &ChannelConnection) {
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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
    fn slim_keeps_what_due_reads_and_drops_the_rest() {
        let now = jiff::Timestamp::now();
        let mut c = checked(now);
        slim(&mut c);
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
    }

    #[test]
    fn unseen_write_makes_the_cache_behind_until_it_catches_up() {
        let now = jiff::Timestamp::now();
        let unseen = Unseen::default();
        let old = checked(now - jiff::SignedDuration::from_secs(60));
        assert!(!unseen.behind(&old));
        unseen.wrote("u1".into(), now);
        assert!(unseen.behind(&old));
        assert!(!unseen.behind(&checked(now)));
        // Caught up: forgotten, so an older cached copy is trusted again.
        assert!(!unseen.behind(&old));
    }
}
