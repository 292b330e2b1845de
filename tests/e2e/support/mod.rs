//! End-to-end harness: one local etcd + kube-apiserver per test binary, shared by all tests.
//!
//! Only plain data (URL, token, paths) is shared; every test builds its own `kube::Client`
//! because a client's background tasks die with the tokio runtime that created it, and each
//! `#[tokio::test]` has its own runtime.
//!
//! No child process may outlive the test binary (panic, Ctrl-C, `process::exit`): each one is
//! paired with a small `sh` watchdog that polls our pid and SIGKILLs the child once we are gone.
//!
//! - [`controlplane`]: etcd + kube-apiserver, shared with the benchmark (`#[path]`);
//! - [`cluster`]: the one control plane of the test binary;
//! - [`operator`]: `relink run` as a process;
//! - here: namespaces, waiting, tables.
#![allow(dead_code)] // not every test module uses every helper

mod cluster;
pub mod controlplane;
mod operator;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

pub use cluster::{control_plane, skip};
use controlplane::get_text;
pub use controlplane::{free_port, random_string, watchdog};
pub use operator::Operator;

/// Creates a fresh namespace `{prefix}-{6 random}` and returns its name.
///
/// There is no kube-controller-manager, so deleting a namespace would leave it Terminating
/// forever; namespaces are simply left behind (the whole etcd is discarded at exit).
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> String {
    let name = format!("{prefix}-{}", random_string(6));
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Polls `f` every 200 ms until it yields `Some`; panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GETs `path` as a server-side `meta.k8s.io/v1` Table (what `kubectl get` prints).
pub async fn table(client: &kube::Client, path: &str) -> serde_json::Value {
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let text = get_text(client, path, Some(accept))
        .await
        .unwrap_or_else(|e| panic!("GET {path} as Table: {e}"));
    serde_json::from_str(&text).expect("Table JSON")
}
