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

/// relink's Event publisher (controller, notifications, callback): kube's recorder behaviour
/// with a bounded memory.
pub fn publisher(client: &kube::Client) -> Publisher {
    Publisher::new(client.clone(), reporter())
}
