//! Which connections name a Secret, kept up to date from the connection watch, so a Secret
//! event finds its connections by lookup instead of a scan of every connection (10,000 Secret
//! events at start-up times 10,000 connections would be 10^8 comparisons).

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::ChannelConnection;

/// Namespace and name of a Secret.
type SecretKey = (String, String);

#[derive(Default)]
pub struct SecretIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_secret: HashMap<SecretKey, HashSet<ObjectRef<ChannelConnection>>>,
    /// What each connection named last, to move it when `spec.secretRef` changes.
    by_connection: HashMap<ObjectRef<ChannelConnection>, SecretKey>,
}

impl SecretIndex {
    /// Records (or moves) the Secret `conn` names.
    pub fn apply(&self, conn: &ChannelConnection) {
        let r = ObjectRef::from_obj(conn);
        let key = (
            conn.namespace().unwrap_or_default(),
            conn.spec.secret_ref.name.clone(),
        );
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.by_connection.get(&r) == Some(&key) {
            return;
        }
        inner.forget(&r);
        inner
            .by_secret
            .entry(key.clone())
            .or_default()
            .insert(r.clone());
        inner.by_connection.insert(r, key);
    }

    /// Forgets a deleted connection.
    pub fn delete(&self, conn: &ChannelConnection) {
        let r = ObjectRef::from_obj(conn);
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .forget(&r);
    }

    /// The connections that name Secret `namespace/name`.
    pub fn connections(&self, namespace: &str, name: &str) -> Vec<ObjectRef<ChannelConnection>> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .by_secret
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Inner {
    fn forget(&mut self, r: &ObjectRef<ChannelConnection>) {
        let Some(old) = self.by_connection.remove(r) else {
            return;
        };
        if let Some(set) = self.by_secret.get_mut(&old) {
            set.remove(r);
            if set.is_empty() {
                self.by_secret.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, secret: &str) -> ChannelConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": secret}}
        }))
        .unwrap()
    }

    #[test]
    fn follows_secret_ref_changes_and_deletes() {
        let index = SecretIndex::default();
        index.apply(&conn("a", "s1"));
        index.apply(&conn("b", "s1"));
        assert_eq!(index.connections("ns", "s1").len(), 2);
        assert!(index.connections("other", "s1").is_empty());
        index.apply(&conn("a", "s2"));
        assert_eq!(index.connections("ns", "s1").len(), 1);
        assert_eq!(index.connections("ns", "s2")[0].name, "a");
        index.delete(&conn("b", "s1"));
        assert!(index.connections("ns", "s1").is_empty());
        assert!(index.inner.read().unwrap().by_secret.len() == 1);
    }
}
