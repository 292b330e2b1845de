//! Metrics, logging and the probe/metrics HTTP server.

pub mod metrics;
pub mod server;

pub use metrics::Metrics;
