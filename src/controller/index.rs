//! Which connections name a Secret, kept up to date from the connection watch, so a Secret
//! event finds its connections by lookup instead of a scan of every connection (10,000 Secret
//! events at start-up times 10,000 connections would be 10^8 comparisons).
//!
//! A connection and its Secret share a namespace, so the index keeps, per Secret digest, the
//! keys of the connections naming it (shared with the cache, see `store.rs`), and per
//! connection digest the Secret it names: about a hundred bytes per connection.

use std::collections::HashMap;
use std::sync::RwLock;

use super::CachedConnection;
use super::secrets::{Key, key};
use super::store::Conn;

#[derive(Default)]
pub struct SecretIndex {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Secret digest → the connections (of its namespace) that name it, keys shared with the
    /// cache.
    by_secret: HashMap<Key, Vec<Conn>>,
    /// Connection digest → digest of the Secret it named last, to move it when
    /// `spec.secretRef` changes.
    by_connection: HashMap<Key, Key>,
}

impl SecretIndex {
    /// Records (or moves) the Secret `conn` names.
    pub fn apply(&self, conn: &CachedConnection) {
        let (ns, name) = (conn.namespace(), conn.name());
        let secret = key(ns, conn.secret_name());
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let me = key(ns, name);
        if inner.by_connection.get(&me) == Some(&secret) {
            return;
        }
        inner.forget(me, conn.conn());
        inner
            .by_secret
            .entry(secret)
            .or_default()
            .push(conn.conn().clone());
        inner.by_connection.insert(me, secret);
    }

    /// Forgets a deleted connection.
    pub fn delete(&self, conn: &CachedConnection) {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .forget(key(conn.namespace(), conn.name()), conn.conn());
    }

    /// The connections that name Secret `namespace/name`.
    pub fn connections(&self, namespace: &str, name: &str) -> Vec<Conn> {
        let inner = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .by_secret
            .get(&key(namespace, name))
            .cloned()
            .unwrap_or_default()
    }
}

impl Inner {
    fn forget(&mut self, me: Key, conn: &Conn) {
        let Some(old) = self.by_connection.remove(&me) else {
            return;
        };
        if let Some(names) = self.by_secret.get_mut(&old) {
            names.retain(|n| n != conn);
            if names.is_empty() {
                self.by_secret.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, secret: &str) -> CachedConnection {
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
        assert_eq!(&*index.connections("ns", "s2")[0].name, "a");
        index.delete(&conn("b", "s1"));
        assert!(index.connections("ns", "s1").is_empty());
        assert!(index.inner.read().unwrap().by_secret.len() == 1);
    }
}
