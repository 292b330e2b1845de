//! Metrics, logging, Events and the probe/metrics HTTP server.

pub mod events;
pub mod metrics;
pub mod server;

pub use events::Publisher;
pub use metrics::Metrics;

/// Who publishes relink's Events: reporting controller `relink`, instance the pod's name.
fn reporter() -> kube::runtime::events::Reporter {
    kube::runtime::events::Reporter {
        controller: "relink".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// kube's Event recorder, as relink's reporter (it remembers every Event for minutes; the
/// controller uses [`publisher`]).
pub fn recorder(client: &kube::Client) -> kube::runtime::events::Recorder {
    kube::runtime::events::Recorder::new(client.clone(), reporter())
}

/// The Event publisher of the controller: as [`recorder`], with a bounded memory.
pub fn publisher(client: &kube::Client) -> Publisher {
    Publisher::new(client.clone(), reporter())
}
