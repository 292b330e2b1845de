//! The connection cache: a map of our own from each connection's namespace and name to its
//! slim copy (`cache.rs`), instead of kube's store.
//!
//! kube's store keeps each object with a whole `ObjectMeta` (360 bytes, nearly all of it
//! empty here) under an `ObjectRef` key (96 bytes and copies of the name and namespace). Here
//! a connection's key is a [`Conn`]: its namespace, one allocation shared by every connection
//! of the namespace, and its name, one allocation shared by the cache, the due queue and the
//! slots' lines.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::runtime::watcher;

use super::CachedConnection;

/// A connection: its namespace and name (see the module).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Conn {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl Conn {
    /// A key of its own (not shared with the cache's).
    pub fn new(namespace: &str, name: &str) -> Conn {
        Conn {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The slim copies of every connection the watch has seen.
#[derive(Default)]
pub struct Connections {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Conn, Arc<CachedConnection>>,
    /// Namespaces, shared by their connections' keys.
    namespaces: HashSet<Arc<str>>,
    /// A list in progress (at start, or after the watch lost track): swapped in once complete,
    /// so connections deleted meanwhile leave the cache.
    listing: Option<HashMap<Conn, Arc<CachedConnection>>>,
}

impl Connections {
    /// The cached copy of `conn`.
    pub fn get(&self, conn: &Conn) -> Option<Arc<CachedConnection>> {
        self.read().map.get(conn).cloned()
    }

    /// Every cached connection.
    pub fn state(&self) -> Vec<Arc<CachedConnection>> {
        self.read().map.values().cloned().collect()
    }

    /// How many connections are cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.read().map.len()
    }

    /// Follows one watch event, and passes it on with the copy as the cache now holds it (one
    /// allocation for the cache and whoever reads the event). A new copy takes the key of the
    /// copy it replaces (or of the namespace's connections), so a connection's name and
    /// namespace stay one allocation each however often its status is written.
    pub fn apply(
        &self,
        event: watcher::Event<CachedConnection>,
    ) -> watcher::Event<Arc<CachedConnection>> {
        let mut inner = self.write();
        match event {
            watcher::Event::Init => {
                inner.listing = Some(HashMap::new());
                watcher::Event::Init
            }
            watcher::Event::InitApply(mut c) => {
                inner.share_key(&mut c);
                let c = Arc::new(c);
                let listing = inner.listing.get_or_insert_default();
                listing.insert(c.conn().clone(), c.clone());
                watcher::Event::InitApply(c)
            }
            watcher::Event::InitDone => {
                if let Some(listed) = inner.listing.take() {
                    inner.map = listed;
                }
                watcher::Event::InitDone
            }
            watcher::Event::Apply(mut c) => {
                inner.share_key(&mut c);
                let c = Arc::new(c);
                inner.map.insert(c.conn().clone(), c.clone());
                watcher::Event::Apply(c)
            }
            watcher::Event::Delete(mut c) => {
                if let Some((key, _)) = inner.map.remove_entry(c.conn()) {
                    c.set_conn(key);
                }
                watcher::Event::Delete(Arc::new(c))
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    /// Gives `c` the key of the cached copy of the same connection, or the namespace's shared
    /// allocation.
    fn share_key(&mut self, c: &mut CachedConnection) {
        let cached = (self.listing.as_ref())
            .and_then(|l| l.get_key_value(c.conn()))
            .or_else(|| self.map.get_key_value(c.conn()));
        if let Some((key, _)) = cached {
            c.set_conn(key.clone());
            return;
        }
        let namespace = match self.namespaces.get(&c.conn().namespace) {
            Some(ns) => ns.clone(),
            None => {
                let ns = c.conn().namespace.clone();
                self.namespaces.insert(ns.clone());
                ns
            }
        };
        let name = c.conn().name.clone();
        c.set_conn(Conn { namespace, name });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str, generation: i64) -> CachedConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection",
            "metadata": {"name": name, "namespace": "ns", "generation": generation},
            "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}
        }))
        .unwrap()
    }

    #[test]
    fn a_list_replaces_the_cache_and_copies_share_their_keys() {
        let store = Connections::default();
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(conn("a", 1)));
        store.apply(watcher::Event::InitApply(conn("b", 1)));
        assert_eq!(store.len(), 0, "not before the list is complete");
        store.apply(watcher::Event::InitDone);
        assert_eq!(store.len(), 2);
        let a = store.get(&Conn::new("ns", "a")).expect("listed");
        let b = store.get(&Conn::new("ns", "b")).expect("listed");
        assert!(
            Arc::ptr_eq(&a.conn().namespace, &b.conn().namespace),
            "one namespace allocation"
        );

        // A new copy (the operator's own status write, say) keeps the name's allocation.
        let watcher::Event::Apply(passed) = store.apply(watcher::Event::Apply(conn("a", 2))) else {
            panic!("an Apply passes on as an Apply");
        };
        let a2 = store.get(&Conn::new("ns", "a")).expect("applied");
        assert!(Arc::ptr_eq(&a.conn().name, &a2.conn().name));
        assert!(
            Arc::ptr_eq(&passed, &a2),
            "the event passes on the cache's copy, not a second one"
        );

        // A re-list without b: b was deleted while the watch was away.
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(conn("a", 2)));
        store.apply(watcher::Event::InitDone);
        assert_eq!(store.len(), 1);
        store.apply(watcher::Event::Delete(conn("a", 2)));
        assert_eq!(store.len(), 0);
    }
}
