//! A throw-away etcd + kube-apiserver on loopback, one per benchmark size so every size starts
//! from an empty etcd. The folder, ports, flags, readiness and CRDs come from the e2e harness's
//! [`harness`] (one piece of code for both); the processes are [`Daemon`]s, stopped and measured
//! by the benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::procs::Daemon;

#[path = "../../tests/e2e/support/controlplane.rs"]
pub mod harness;

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    plan: harness::Plan,
    keep: bool,
    apiserver: Daemon,
    etcd: Daemon,
}

/// A loopback port free now, below the ephemeral range (see [`harness::free_port`]).
pub fn free_port() -> Result<u16> {
    Ok(harness::free_port())
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits for `/readyz` and installs the CRDs.
    pub async fn start(keep: bool) -> Result<ControlPlane> {
        let bin = harness::find_binaries().ok_or_else(|| {
            anyhow!(
                "kube-apiserver/etcd not found: run `scripts/controlplane ensure` (or scripts/bench, which does) or set KUBEBUILDER_ASSETS"
            )
        })?;
        let plan = harness::Plan::new("bench").map_err(|e| anyhow!(e))?;
        let dir = plan.dir.clone();
        // etcd's watchdog also removes the folder: it outlives everything else we start.
        let mut etcd = Daemon::spawn(
            "etcd",
            &bin.join("etcd"),
            &plan.etcd_args(),
            &[],
            &dir.join("etcd.log"),
            (!keep).then_some(dir.as_path()),
        )?;
        let mut apiserver = Daemon::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &plan.apiserver_args(),
            &[],
            &dir.join("kube-apiserver.log"),
            None,
        )?;
        plan.wait_ready(Duration::from_secs(90), || {
            if let Some(s) = apiserver.exited() {
                return Some(format!(
                    "kube-apiserver exited early ({s}):\n{}",
                    apiserver.tail(30)
                ));
            }
            let s = etcd.exited()?;
            Some(format!("etcd exited early ({s}):\n{}", etcd.tail(30)))
        })
        .await
        .map_err(|e| anyhow!("{e}:\n{}", apiserver.tail(30)))?;
        let cp = ControlPlane {
            kubeconfig: plan.kubeconfig.clone(),
            dir,
            plan,
            keep,
            apiserver,
            etcd,
        };
        relink::api::install_crds(&cp.client()?, &relink::api::crds(), "relink-bench")
            .await
            .map_err(|e| anyhow!(e))?;
        Ok(cp)
    }

    /// CPU used so far by kube-apiserver and etcd together.
    pub fn cpu_time(&self) -> Result<Duration> {
        Ok(
            crate::procs::cpu_time(self.apiserver.pid())?
                + crate::procs::cpu_time(self.etcd.pid())?,
        )
    }

    /// Admin client (`system:masters`).
    pub fn client(&self) -> Result<kube::Client> {
        self.plan.client_with(|_| {}).map_err(|e| anyhow!(e))
    }

    /// `apiserver_request_total` summed by `verb resource[/subresource]`, non-resource paths
    /// (such as the `/metrics` scrape itself) left out.
    pub async fn request_counts(&self, client: &kube::Client) -> Result<BTreeMap<String, f64>> {
        let text = harness::get_text(client, "/metrics", None)
            .await
            .map_err(|e| anyhow!("GET apiserver /metrics: {e}"))?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |k: &str| -> String {
                let needle = format!("{k}=\"");
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&needle))
                    .map(|v| v.trim_end_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let resource = label("resource");
            if resource.is_empty() {
                continue;
            }
            let sub = label("subresource");
            let key = if sub.is_empty() {
                format!("{} {resource}", label("verb"))
            } else {
                format!("{} {resource}/{sub}", label("verb"))
            };
            *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
        }
        Ok(out)
    }

    /// Stops both processes and removes the folder (unless `--keep`).
    pub async fn stop(mut self) {
        self.apiserver.stop(Duration::from_secs(10)).await;
        self.etcd.stop(Duration::from_secs(10)).await;
        if self.keep {
            eprintln!("[bench] kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
