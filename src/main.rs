//! The `relink` command: the operator (`run`), its CRDs (`crd`) and the local sandbox provider.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tracing::{error, info};

use relink::api::parse_duration;
use relink::controller::{self, Settings};
use relink::providers::{EndpointPolicy, Http, HttpConfig};
use relink::sandbox::{Sandbox, SandboxConfig};

/// relink keeps the OAuth token connections of social-media and email channels healthy.
#[derive(Parser)]
#[command(name = "relink", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the current kube context (or in-cluster config).
    Run(RunArgs),
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
    /// Serve the sandbox OAuth provider used by tests and the demo.
    Sandbox(SandboxArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "RELINK_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace the operator runs in (default namespace of ClusterChannelProvider client secrets).
    #[arg(long, env = "POD_NAMESPACE", default_value = "relink-system")]
    operator_namespace: String,
    /// Checks in flight at once.
    #[arg(long, env = "RELINK_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Checks in flight at once against one provider object.
    #[arg(long, env = "RELINK_PER_PROVIDER_CONCURRENCY", default_value_t = 4)]
    per_provider_concurrency: usize,
    /// Time allowed to connect to a provider.
    #[arg(long, default_value = "5s", value_parser = duration)]
    provider_connect_timeout: Duration,
    /// Time allowed for a whole provider call.
    #[arg(long, default_value = "15s", value_parser = duration)]
    provider_timeout: Duration,
    /// Largest provider answer read, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    provider_max_response_bytes: usize,
    /// First retry delay after a provider failure; doubles up to the check interval.
    #[arg(long, default_value = "5s", value_parser = duration)]
    retry_base: Duration,
    /// Hosts that namespaced ChannelProviders may call even over http or on private addresses
    /// (comma-separated, e.g. `sandbox.relink.svc,127.0.0.1`).
    #[arg(
        long,
        env = "RELINK_ALLOW_NAMESPACED_ENDPOINT_HOSTS",
        value_delimiter = ','
    )]
    allow_namespaced_endpoint_hosts: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "RELINK_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info", env = "RELINK_LOG_LEVEL")]
    log_level: String,
}

#[derive(Args)]
struct SandboxArgs {
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
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match relink::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot render the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => runtime().block_on(run(args)),
        Command::Sandbox(args) => runtime().block_on(sandbox(args)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

async fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format, &args.log_level);
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!(
                "cannot configure a Kubernetes client (set KUBECONFIG or run in a cluster): {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    if let Err(message) = preflight(&client).await {
        error!("{message}");
        return ExitCode::FAILURE;
    }
    let http = match Http::new(HttpConfig {
        connect_timeout: args.provider_connect_timeout,
        timeout: args.provider_timeout,
        max_body_bytes: args.provider_max_response_bytes,
        policy: EndpointPolicy::new(args.allow_namespaced_endpoint_hosts),
    }) {
        Ok(h) => h,
        Err(e) => {
            error!("cannot set up the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = Settings {
        namespace: args.namespace,
        operator_namespace: args.operator_namespace,
        concurrency: args.concurrency,
        per_provider_concurrency: args.per_provider_concurrency,
        retry_base: args.retry_base,
    };
    controller::run(client, http, settings, shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// Fails with a message that says what to do when the cluster is unreachable or the CRDs are missing.
async fn preflight(client: &Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in relink::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        match crds.get_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "CRD {name} is not installed: run `relink crd | kubectl apply --server-side -f -` (or install the Helm chart)"
                ));
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                info!("cannot read CRDs (forbidden); assuming they are installed");
                return Ok(());
            }
            Err(e) => return Err(format!("cannot reach the Kubernetes API: {e}")),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested; finishing checks in flight");
}

async fn sandbox(args: SandboxArgs) -> ExitCode {
    init_logging(LogFormat::Text, "info");
    let config = SandboxConfig {
        latency: Duration::from_millis(args.latency_ms),
        client_id: args.client_id,
        client_secret: args.client_secret,
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
