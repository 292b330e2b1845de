//! The `resourceVersion` of every Secret in scope, from a metadata-only watch: enough to tell
//! "the token Secret changed" without caching any Secret data.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio::sync::watch;

type Key = (String, String);

/// Shared map namespace/name → resourceVersion, complete once the first list is done.
#[derive(Clone)]
pub struct SecretVersions {
    versions: Arc<RwLock<HashMap<Key, String>>>,
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
        map.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Records a version this process just wrote, ahead of the watch.
    pub fn record(&self, namespace: &str, name: &str, version: String) {
        let mut map = self
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert((namespace.to_owned(), name.to_owned()), version);
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
        let mut relist: Option<HashMap<Key, String>> = None;
        events.filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Init) => {
                    relist = Some(HashMap::new());
                    None
                }
                Ok(watcher::Event::InitApply(s)) => {
                    if let Some(buf) = relist.as_mut() {
                        buf.insert(key(&s), s.resource_version().unwrap_or_default());
                    }
                    Some(Ok(s))
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
                        .remove(&key(&s));
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

fn key(s: &PartialObjectMeta<Secret>) -> Key {
    (s.namespace().unwrap_or_default(), s.name_any())
}
