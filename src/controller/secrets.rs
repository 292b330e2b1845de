//! The `resourceVersion` of every Secret in scope, from a metadata-only watch: enough to tell
//! "the token Secret changed" without caching any Secret data.
//!
//! A cluster may hold far more Secrets than relink reads (Helm releases, certificates, service
//! account tokens), so each one costs a few dozen bytes: a 128-bit digest of its namespace and
//! name, and its version as a number (etcd's versions are decimal integers; any other version
//! is kept as text).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// Digest of an object's namespace and name.
pub type Key = u128;

/// The versions, compact.
#[derive(Default)]
struct Versions {
    numbers: HashMap<Key, u64>,
    /// Versions that are not a plain decimal number (not seen with etcd; kept for other stores).
    texts: HashMap<Key, String>,
}

impl Versions {
    fn get(&self, key: Key) -> Option<String> {
        match self.numbers.get(&key) {
            Some(n) => Some(n.to_string()),
            None => self.texts.get(&key).cloned(),
        }
    }

    fn insert(&mut self, key: Key, version: String) {
        match version.parse::<u64>() {
            Ok(n) if n.to_string() == version => {
                self.texts.remove(&key);
                self.numbers.insert(key, n);
            }
            _ => {
                self.numbers.remove(&key);
                self.texts.insert(key, version);
            }
        }
    }

    fn remove(&mut self, key: Key) {
        self.numbers.remove(&key);
        self.texts.remove(&key);
    }
}

/// Shared map namespace/name → resourceVersion, complete once the first list is done.
#[derive(Clone)]
pub struct SecretVersions {
    versions: Arc<RwLock<Versions>>,
    synced: watch::Sender<bool>,
}

impl Default for SecretVersions {
    fn default() -> Self {
        Self {
            versions: Arc::default(),
            synced: watch::channel(false).0,
        }
    }
}

impl SecretVersions {
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        let map = self
            .versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(key(namespace, name))
    }

    /// Records a version this process just wrote, ahead of the watch.
    pub fn record(&self, namespace: &str, name: &str, version: String) {
        let mut map = self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(key(namespace, name), version);
    }

    /// Resolves once the first complete list has been seen.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Keeps the map in step with a metadata watch and passes changed Secrets on as triggers.
    pub fn track(
        &self,
        events: impl Stream<Item = Result<watcher::Event<PartialObjectMeta<Secret>>, watcher::Error>>
        + Send
        + 'static,
    ) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static
    {
        let this = self.clone();
        let mut relist: Option<Versions> = None;
        events.filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Init) => {
                    relist = Some(Versions::default());
                    None
                }
                Ok(watcher::Event::InitApply(s)) => {
                    let (k, version) = (key_of(&s), s.resource_version().unwrap_or_default());
                    // The first list triggers nothing: every connection is looked at once the
                    // caches are complete. A list after the watch lost track passes on the
                    // Secrets that changed meanwhile.
                    let changed = *this.synced.borrow()
                        && this
                            .versions
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get(k)
                            .is_none_or(|v| v != version);
                    if let Some(buf) = relist.as_mut() {
                        buf.insert(k, version);
                    }
                    changed.then_some(Ok(s))
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(buf) = relist.take() {
                        *this
                            .versions
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = buf;
                    }
                    this.synced.send_replace(true);
                    None
                }
                Ok(watcher::Event::Apply(s)) => {
                    this.record(
                        &s.namespace().unwrap_or_default(),
                        &s.name_any(),
                        s.resource_version().unwrap_or_default(),
                    );
                    Some(Ok(s))
                }
                Ok(watcher::Event::Delete(s)) => {
                    this.versions
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(key_of(&s));
                    Some(Ok(s))
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(out)
        })
    }
}

impl crate::tokens::KnownVersions for SecretVersions {
    fn version(&self, namespace: &str, name: &str) -> Option<String> {
        SecretVersions::version(self, namespace, name)
    }
}

fn key_of(s: &PartialObjectMeta<Secret>) -> Key {
    key(&s.namespace().unwrap_or_default(), &s.name_any())
}

/// The digest of namespace and name (128 bits of SHA-256: no two names meet in practice).
pub fn key(namespace: &str, name: &str) -> Key {
    let digest = Sha256::new()
        .chain_update(namespace)
        .chain_update([0u8])
        .chain_update(name)
        .finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_numbers_and_text() {
        let v = SecretVersions::default();
        v.record("ns", "a", "12345".into());
        v.record("ns", "b", "v-7".into());
        v.record("ns", "c", "007".into());
        assert_eq!(v.version("ns", "a").as_deref(), Some("12345"));
        assert_eq!(v.version("ns", "b").as_deref(), Some("v-7"));
        assert_eq!(v.version("ns", "c").as_deref(), Some("007"));
        assert_eq!(v.version("n", "sa"), None);
        v.record("ns", "b", "8".into());
        assert_eq!(v.version("ns", "b").as_deref(), Some("8"));
    }

    fn meta(name: &str, version: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        m.metadata.resource_version = Some(version.into());
        m
    }

    #[tokio::test]
    async fn only_a_later_list_passes_on_the_secrets_that_changed() {
        use watcher::Event::{Apply, Init, InitApply, InitDone};
        let v = SecretVersions::default();
        let events = vec![
            Init,
            InitApply(meta("a", "1")),
            InitApply(meta("b", "1")),
            InitDone,
            Apply(meta("a", "2")),
            // The watch lost track: b changed and c appeared meanwhile; a did not change.
            Init,
            InitApply(meta("a", "2")),
            InitApply(meta("b", "5")),
            InitApply(meta("c", "1")),
            InitDone,
        ];
        let passed: Vec<String> = v
            .track(futures::stream::iter(events.into_iter().map(Ok)))
            .map(|s| s.expect("no error").name_any())
            .collect()
            .await;
        assert_eq!(
            passed,
            ["a", "b", "c"],
            "the first list passes nothing; the change after it and what changed in the gap pass"
        );
        assert_eq!(v.version("ns", "b").as_deref(), Some("5"));
    }
}
