//! Publishing Kubernetes Events with a bounded memory.
//!
//! kube's `Recorder` remembers every Event it published for six minutes (to turn a repeat into
//! a series) and scans all of them on every publish: after a fleet-wide transition that is
//! thousands of Events held and scanned. [`Publisher`] keeps the same series behaviour for at
//! most [`REMEMBERED`] recent Events; a repeat of an older one simply starts a new Event.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// Recent Events kept to count repeats as a series.
pub const REMEMBERED: usize = 512;
/// How long a repeat still joins the earlier Event (kube's recorder uses the same).
const SERIES_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(6 * 60);

/// Publishes Events; a repeat within six minutes updates the earlier Event's series.
pub struct Publisher {
    client: kube::Client,
    reporter: Reporter,
    recent: Mutex<HashMap<u64, Recent>>,
}

/// What a series update needs of an Event published earlier.
struct Recent {
    name: String,
    count: i32,
    last: jiff::Timestamp,
}

impl Publisher {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            recent: Mutex::default(),
        }
    }

    /// Publishes `ev` about `regarding` (created in its namespace, `default` for cluster
    /// objects). Same contract as kube's `Recorder::publish`.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let now = jiff::Timestamp::now();
        let key = self.key(ev, regarding);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let repeat = self.repeat(key, now);
        let (name, count) = match repeat {
            Some((name, count)) => {
                let patch = serde_json::json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(now) }
                });
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                (name, count)
            }
            None => {
                let event = self.event(ev, regarding, now);
                let name = event.metadata.name.clone().unwrap_or_default();
                events.create(&PostParams::default(), &event).await?;
                (name, 1)
            }
        };
        self.remember(
            key,
            Recent {
                name,
                count,
                last: now,
            },
        );
        Ok(())
    }

    /// The earlier Event this one repeats (its name and the new count), if still remembered.
    fn repeat(&self, key: u64, now: jiff::Timestamp) -> Option<(String, i32)> {
        let recent = self.lock();
        let r = recent.get(&key).filter(|r| r.last + SERIES_WINDOW > now)?;
        Some((r.name.clone(), r.count.saturating_add(1)))
    }

    fn remember(&self, key: u64, r: Recent) {
        let mut recent = self.lock();
        if recent.len() >= REMEMBERED && !recent.contains_key(&key) {
            let now = jiff::Timestamp::now();
            recent.retain(|_, r| r.last + SERIES_WINDOW > now);
            if recent.len() >= REMEMBERED
                && let Some(oldest) = recent.iter().min_by_key(|(_, r)| r.last).map(|(k, _)| *k)
            {
                recent.remove(&oldest);
            }
        }
        recent.insert(key, r);
    }

    /// Events are the same when type, action, reason and objects are (as for kube's recorder:
    /// a repeat with another note joins the first Event's series); only a digest is kept.
    fn key(&self, ev: &Event, regarding: &ObjectReference) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        matches!(ev.type_, EventType::Warning).hash(&mut h);
        (&ev.action, &ev.reason).hash(&mut h);
        (&regarding.namespace, &regarding.name, &regarding.uid).hash(&mut h);
        (&regarding.kind, &regarding.api_version).hash(&mut h);
        ev.secondary
            .as_ref()
            .map(|s| (&s.namespace, &s.name, &s.uid))
            .hash(&mut h);
        h.finish()
    }

    fn event(&self, ev: &Event, regarding: &ObjectReference, now: jiff::Timestamp) -> K8sEvent {
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: kube::api::ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                (self.reporter.instance.clone()).unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Recent>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
