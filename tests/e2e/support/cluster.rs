//! The control plane every e2e test shares: started once per test binary on first use (see
//! [`controlplane`](super::controlplane) for the parts the benchmark shares too), with the
//! checked-in CRDs of `crds/` installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::controlplane::{Plan, find_binaries, tail, watchdog};

const MISSING: &str = "kube-apiserver/etcd not found: run `scripts/controlplane ensure` (builds them once, ~10 min) or set KUBEBUILDER_ASSETS; set RELINK_SKIP_E2E=1 to skip e2e tests";

/// Connection data of the shared control plane; cheap to read from any test.
#[derive(Debug)]
pub struct ControlPlane {
    plan: Plan,
}

/// True when e2e tests should return early: `RELINK_SKIP_E2E=1` and no binaries available.
pub fn skip() -> bool {
    if std::env::var("RELINK_SKIP_E2E").as_deref() == Ok("1") && find_binaries().is_none() {
        eprintln!("skipped: RELINK_SKIP_E2E=1");
        return true;
    }
    false
}

/// The shared control plane, started on first use. Panics (in every caller) if it can't start.
pub fn control_plane() -> &'static ControlPlane {
    // Stores the error too, so a failed start is not retried (for 60 s) by every test.
    static CP: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let cp = CP.get_or_init(|| {
        // A fresh thread: the caller is usually inside a tokio runtime, where we can't block
        // on another runtime; start-up must not depend on any one test's runtime anyway.
        std::thread::Builder::new()
            .name("e2e-control-plane".into())
            .spawn(start)
            .expect("spawn control plane starter thread")
            .join()
            .unwrap_or_else(|_| Err("control plane starter thread panicked".into()))
    });
    match cp {
        Ok(cp) => cp,
        Err(e) => panic!("{e}"),
    }
}

impl ControlPlane {
    /// Admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.build_client(|_| {})
    }

    /// Client that impersonates `user` with `groups`, for RBAC tests.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        self.build_client(|auth| {
            auth.impersonate = Some(user.to_string());
            // No groups: let the apiserver derive them (e.g. system:serviceaccounts:<ns>).
            if !groups.is_empty() {
                auth.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
            }
        })
    }

    /// Kubeconfig (admin token, insecure TLS) for child processes such as the operator.
    pub fn kubeconfig(&self) -> &Path {
        &self.plan.kubeconfig
    }

    pub fn url(&self) -> &str {
        &self.plan.url
    }

    /// Temp dir holding logs, certs and etcd data (removed after the test binary exits
    /// unless `RELINK_E2E_KEEP=1`).
    pub fn dir(&self) -> &Path {
        &self.plan.dir
    }

    fn build_client(&self, customize: impl FnOnce(&mut kube::config::AuthInfo)) -> kube::Client {
        self.plan
            .client_with(customize)
            .expect("build kube client (must run inside a tokio runtime)")
    }
}

/// Spawns `bin args…` with output to `log` and a watchdog; the children are never reaped
/// because they live as long as the test binary.
fn spawn_daemon(
    bin: &Path,
    args: &[String],
    log: &Path,
    cleanup: Option<&Path>,
) -> Result<std::process::Child, String> {
    let file = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|e| e.to_string())?)
        .stderr(file)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    std::mem::forget(watchdog(child.id(), cleanup));
    Ok(child)
}

/// Runs on the starter thread: temp dir, etcd, kube-apiserver, readyz, kubeconfig, CRDs.
fn start() -> Result<ControlPlane, String> {
    let bin = find_binaries().ok_or(MISSING)?;
    let plan = Plan::new("e2e")?;
    let keep = std::env::var("RELINK_E2E_KEEP").as_deref() == Ok("1");
    eprintln!("[e2e] starting etcd…");
    // The etcd watchdog also removes the temp dir: it outlives everything else we spawn.
    let etcd_log = plan.dir.join("etcd.log");
    let mut etcd = spawn_daemon(
        &bin.join("etcd"),
        &plan.etcd_args(),
        &etcd_log,
        (!keep).then_some(plan.dir.as_path()),
    )?;
    eprintln!("[e2e] starting kube-apiserver…");
    let api_log = plan.dir.join("kube-apiserver.log");
    let mut apiserver = spawn_daemon(
        &bin.join("kube-apiserver"),
        &plan.apiserver_args(),
        &api_log,
        None,
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("build starter runtime: {e}"))?;
    let ready = rt.block_on(plan.wait_ready(Duration::from_secs(60), || {
        if let Ok(Some(status)) = apiserver.try_wait() {
            return Some(format!("kube-apiserver exited early: {status}"));
        }
        let status = etcd.try_wait().ok().flatten()?;
        Some(format!(
            "etcd exited early: {status}\n{}",
            tail(&etcd_log, 20)
        ))
    }));
    if let Err(e) = ready {
        let _ = apiserver.kill();
        let _ = etcd.kill();
        return Err(format!(
            "{e}; last lines of {}:\n{}",
            api_log.display(),
            tail(&api_log, 30)
        ));
    }
    let cp = ControlPlane { plan };
    let crds = checked_in_crds()?;
    // The client lives on the starter runtime: build it there.
    rt.block_on(async { relink::api::install_crds(&cp.client(), &crds, "relink-e2e").await })?;
    eprintln!("[e2e] installed {} CRD(s)", crds.len());
    Ok(cp)
}

/// Every document of `crds/*.yaml`: the tests install what users install, not what this build
/// would generate (a drift test keeps the two equal).
fn checked_in_crds() -> Result<Vec<CustomResourceDefinition>, String> {
    let crd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&crd_dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    let mut crds = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| format!("parse {}: {e}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .map_err(|e| format!("{} is not a CRD: {e}", file.display()))?;
            crds.push(crd);
        }
    }
    if crds.is_empty() {
        eprintln!("[e2e] no CRDs in {}", crd_dir.display());
    }
    Ok(crds)
}
