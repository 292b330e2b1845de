//! Metrics, logging and the probe/metrics HTTP server.

pub mod metrics;
pub mod server;

pub use metrics::Metrics;

/// The Event recorder every part of the operator publishes with: reporting controller
/// `relink`, instance the pod's name.
pub fn recorder(client: &kube::Client) -> kube::runtime::events::Recorder {
    let reporter = kube::runtime::events::Reporter {
        controller: "relink".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    kube::runtime::events::Recorder::new(client.clone(), reporter)
}
