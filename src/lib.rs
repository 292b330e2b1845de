//! relink: a Kubernetes operator that keeps the OAuth token connections of channels healthy.
pub mod access;
pub mod account;
pub mod api;
pub mod controller;
pub mod notify;
pub mod providers;
pub mod reauth;
pub mod sandbox;
pub mod server;
pub mod telemetry;
pub mod text;
pub mod tokens;
