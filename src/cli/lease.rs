//! `relink run --leader-elect`: one active replica, chosen through a Lease.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use relink::controller::{Deps, Settings};
use tokio::sync::watch;
use tracing::{error, info};

use super::run::{OperatorConfig, run_controllers, stopped};

/// Waits for the Lease, runs the controller while leading, and releases the Lease on the way out.
/// Losing the Lease ends the process (exit 1) so a fresh start rejoins as a standby.
pub async fn lead_then_run(
    client: Client,
    deps: Deps,
    mut settings: Settings,
    config: &OperatorConfig,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relink".into());
        format!("{host}-{}", std::process::id())
    });
    let manager = lease_manager(&client, config, &identity).await?;
    let (mut leading, task) = manager.watch().await;
    // A standby that takes part in the election is healthy.
    ready.store(true, Ordering::Relaxed);
    info!(identity = %identity, lease = %config.lease_name, "waiting to lead");
    let mut stop_wait = stop.clone();
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return Err("leader election stopped".into());
            },
            _ = stop_wait.wait_for(|s| *s) => {
                drop(leading);
                let _ = task.await;
                return Ok(());
            }
        }
    }
    info!(identity = %identity, "leading: starting the controller");
    ready.store(false, Ordering::Relaxed);
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let mut lease_rx = leading.clone();
    settings.leading = Some(leading.clone());
    let until = async move {
        tokio::select! {
            _ = stopped(stop) => {},
            _ = lease_rx.wait_for(|l| !*l) => { lost_flag.store(true, Ordering::Relaxed); },
        }
    };
    run_controllers(client, deps, settings, &config.namespace, until).await;
    drop(leading);
    match task.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => error!("cannot release the lease: {e}"),
        Err(e) => error!("lease task failed: {e}"),
    }
    if lost.load(Ordering::Relaxed) {
        return Err(
            "lost the lease to another replica; exiting so a fresh start can stand by".into(),
        );
    }
    Ok(())
}

/// The Lease `--lease-name` in the operator namespace, held for `--lease-duration`.
async fn lease_manager(
    client: &Client,
    config: &OperatorConfig,
    identity: &str,
) -> Result<LeaseManager, String> {
    let secs = config.lease_duration.as_secs().max(3);
    LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.operator_namespace)
        .with_identity(identity)
        .with_duration(secs)
        .with_grace((secs / 3).max(1))
        .build()
        .await
        .map_err(|e| {
            format!(
                "cannot use Lease {}/{}: {e}",
                config.operator_namespace, config.lease_name
            )
        })
}
