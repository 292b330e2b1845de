//! `relink sandbox`: the local OAuth provider used by tests and the demo, as a process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use relink::sandbox::{Sandbox, SandboxConfig};
use tracing::error;

use super::{LogFormat, init_logging};

#[derive(Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Delay before every provider answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// OAuth client ID the sandbox accepts.
    #[arg(long, default_value = "relink-sandbox")]
    client_id: String,
    /// OAuth client secret the sandbox accepts.
    #[arg(
        long,
        env = "RELINK_SANDBOX_CLIENT_SECRET",
        default_value = "sandbox-secret"
    )]
    client_secret: String,
    /// Revoke a token family when one of its spent refresh tokens is presented again.
    #[arg(long)]
    reuse_detection: bool,
}

pub async fn main(args: SandboxArgs) -> ExitCode {
    init_logging(LogFormat::Text, "info");
    let config = SandboxConfig {
        latency: Duration::from_millis(args.latency_ms),
        client_id: args.client_id,
        client_secret: args.client_secret,
        reuse_detection: args.reuse_detection,
        ..SandboxConfig::default()
    };
    let sandbox = match Sandbox::start(args.listen, config).await {
        Ok(s) => s,
        Err(e) => {
            error!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("sandbox provider listening on {}", sandbox.base_url());
    let _ = tokio::signal::ctrl_c().await;
    sandbox.shutdown();
    ExitCode::SUCCESS
}
