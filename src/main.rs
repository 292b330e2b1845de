//! The `relink` command: the operator (`run`), its CRDs (`crd`) and the local sandbox provider.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tracing::{error, info};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube_lease_manager::LeaseManagerBuilder;
use relink::api::parse_duration;
use relink::controller::access::SecretLabel;
use relink::controller::{self, Deps, Settings};
use relink::notify::{Notifier, NotifyConfig};
use relink::providers::{EndpointPolicy, Http, HttpConfig};
use relink::reauth::{self, Reauth, StateKey, callback::CallbackContext};
use relink::sandbox::{Sandbox, SandboxConfig};
use relink::telemetry::{self, Metrics};
use tokio::sync::watch;

mod dashboard;
mod demo;
mod reference;
mod status_cmd;

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
    Run(Box<RunArgs>),
    /// Print every CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
    /// Print the API reference as Markdown (what `docs/api.md` holds).
    #[command(hide = true)]
    ApiReference,
    /// Serve the sandbox OAuth provider used by tests and the demo.
    Sandbox(SandboxArgs),
    /// A local tour: sandbox provider, operator and four channel connections in namespace relink-demo.
    Demo(demo::DemoArgs),
    /// One line per channel connection, or one in detail with NAME (exit 1 unless all Ready; also `kubectl relink status`).
    Status(status_cmd::StatusArgs),
    /// Ask for a check of one connection now and wait for the result (also `kubectl relink check`).
    Check(status_cmd::CheckArgs),
    /// Refresh one connection's token now, even far from expiry, and wait for the verdict (also `kubectl relink refresh`).
    Refresh(status_cmd::CheckArgs),
    /// Ask for a re-authorization link for one connection, even a healthy one, and print it (also `kubectl relink reauth`).
    Reauth(status_cmd::ReauthArgs),
    /// Serve a live page of every channel connection and group on 127.0.0.1, with your own
    /// kubeconfig and RBAC (also `kubectl relink dashboard`).
    Dashboard(dashboard::DashboardArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct RunArgs {
    /// Watch only these namespaces (comma-separated; default: all namespaces). Each is watched
    /// on its own, as by several namespace-scoped installs, so no cluster-wide access to
    /// Secrets or connections is needed.
    #[arg(long, env = "RELINK_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Namespace the operator runs in (default namespace of ClusterChannelProvider client secrets).
    #[arg(long, env = "POD_NAMESPACE", default_value = "relink-system")]
    operator_namespace: String,
    /// Checks in flight at once.
    #[arg(long, env = "RELINK_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Checks in flight at once against one provider object.
    #[arg(long, env = "RELINK_PER_PROVIDER_CONCURRENCY", default_value_t = 4)]
    per_provider_concurrency: usize,
    /// Checks in flight at once for the connections of one namespace (default: three quarters
    /// of --concurrency), so one tenant cannot hold every slot.
    #[arg(long, env = "RELINK_PER_NAMESPACE_CONCURRENCY")]
    per_namespace_concurrency: Option<usize>,
    /// Least time between two checks of one connection caused by a check request or an edit;
    /// a request inside it is served when it ends.
    #[arg(long, default_value = "10s", value_parser = duration)]
    check_request_min_gap: Duration,
    /// While a provider's application is rejected (`invalid_client`), one connection asks
    /// again this often; the others wait without calling.
    #[arg(long, default_value = "5m", value_parser = duration)]
    app_probe_interval: Duration,
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
    /// Listener for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "RELINK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Listener for the OAuth callback (`GET /oauth/callback`), the only public port.
    #[arg(long, env = "RELINK_CALLBACK_ADDR", default_value = "0.0.0.0:8081")]
    callback_addr: SocketAddr,
    /// External URL of the callback listener; the redirect URL is `<public-url>/oauth/callback`.
    #[arg(
        long,
        env = "RELINK_PUBLIC_URL",
        default_value = "http://localhost:8081"
    )]
    public_url: String,
    /// Secret (operator namespace) holding the key that signs OAuth `state`; created if absent.
    #[arg(
        long,
        env = "RELINK_STATE_KEY_SECRET",
        default_value = "relink-state-key"
    )]
    state_key_secret: String,
    /// How long a re-authorization link stays valid.
    #[arg(long, default_value = reauth::DEFAULT_LINK_TTL, value_parser = duration)]
    reauth_link_ttl: Duration,
    /// Elect one active replica through a Lease in the operator namespace.
    #[arg(long, env = "RELINK_LEADER_ELECT", default_value_t = false)]
    leader_elect: bool,
    /// Name of the Lease used for leader election (one per shard).
    #[arg(long, env = "RELINK_LEASE_NAME", default_value = "relink")]
    lease_name: String,
    /// How long a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// Only reconcile connections matching this label selector (sharding).
    #[arg(long, env = "RELINK_SELECTOR")]
    selector: Option<String>,
    /// SMTP server for email notifications: `smtp://host:587` (STARTTLS required),
    /// `smtp://host:port` on another port (STARTTLS when offered), `?tls=none|opportunistic|required`
    /// to say it explicitly, `smtps://host:port` (implicit TLS).
    #[arg(long, env = "RELINK_SMTP_URL")]
    smtp_url: Option<String>,
    /// Sender address of notification emails.
    #[arg(long, env = "RELINK_SMTP_FROM")]
    smtp_from: Option<String>,
    /// Secret (operator namespace) with `username` and `password` for SMTP.
    #[arg(long, env = "RELINK_SMTP_CREDENTIALS_SECRET")]
    smtp_credentials_secret: Option<String>,
    /// Reminder interval while a connection stays broken.
    #[arg(long, default_value = "24h", value_parser = duration)]
    reminder_interval: Duration,
    /// Warn owners this long before a token that cannot be refreshed expires.
    #[arg(long, default_value = "168h", value_parser = duration)]
    expiry_warning: Duration,
    /// First retry of a failed notification delivery; doubles for each of the 5 tries.
    #[arg(long, default_value = "30s", value_parser = duration)]
    notification_retry_base: Duration,
    /// How long a problem email waits for others to the same owners about the same cause, sent
    /// as one message listing the channels; 0s sends each at once.
    #[arg(long, default_value = "60s", value_parser = duration)]
    notification_batch_window: Duration,
    /// Allow SMTP credentials over a connection without TLS (`smtp://host:port?tls=none`).
    /// Off by default: credentials are only ever sent over STARTTLS or implicit TLS.
    #[arg(
        long,
        env = "RELINK_SMTP_ALLOW_PLAINTEXT_AUTH",
        default_value_t = false
    )]
    smtp_allow_plaintext_auth: bool,
    /// Use only token Secrets carrying this label (`KEY=VALUE`, e.g. `relink.dev/token=true`);
    /// a Secret relink creates at re-authorization gets it. For clusters where people may
    /// create connections without being allowed to read Secrets.
    #[arg(long, env = "RELINK_SECRET_LABEL")]
    secret_label: Option<SecretLabel>,
    /// Email only owners in these domains (comma-separated, e.g. `example.com,example.org`);
    /// others are named on the connection's Ready condition and never sent anything.
    #[arg(long, env = "RELINK_ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    allowed_email_domains: Vec<String>,
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
    /// Revoke a token family when one of its spent refresh tokens is presented again.
    #[arg(long)]
    reuse_detection: bool,
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
        Command::ApiReference => {
            print!("{}", reference::markdown());
            ExitCode::SUCCESS
        }
        Command::Run(args) => runtime().block_on(run(*args)),
        Command::Sandbox(args) => runtime().block_on(sandbox(args)),
        Command::Demo(args) => demo::main(args),
        Command::Status(args) => status_cmd::main(args),
        Command::Check(args) => status_cmd::check(args),
        Command::Reauth(args) => status_cmd::reauth(args),
        Command::Refresh(args) => status_cmd::refresh(args),
        Command::Dashboard(args) => dashboard::main(args),
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
    log_panics();
    match run_operator(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_operator(args: RunArgs) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot configure a Kubernetes client (set KUBECONFIG or run in a cluster): {e}")
    })?;
    preflight(&client).await?;
    let http = Http::new(HttpConfig {
        connect_timeout: args.provider_connect_timeout,
        timeout: args.provider_timeout,
        max_body_bytes: args.provider_max_response_bytes,
        policy: EndpointPolicy::new(args.allow_namespaced_endpoint_hosts.clone()),
    })
    .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let notifier = Arc::new(Notifier::new(
        client.clone(),
        NotifyConfig {
            smtp_url: args.smtp_url.clone(),
            smtp_from: args.smtp_from.clone(),
            smtp_credentials_secret: args.smtp_credentials_secret.clone(),
            reminder_interval: args.reminder_interval,
            expiry_warning: args.expiry_warning,
            operator_namespace: args.operator_namespace.clone(),
            allowed_email_domains: args.allowed_email_domains.clone(),
            allow_plaintext_auth: args.smtp_allow_plaintext_auth,
            batch_window: args.notification_batch_window,
        },
        metrics.clone(),
    ));
    let deliveries = notifier.start(http.clone(), args.notification_retry_base);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on --metrics-addr {}: {e}", args.metrics_addr))?;
    info!(
        metrics = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "serving /metrics, /healthz and /readyz"
    );
    let probes = tokio::spawn(telemetry::server::serve(
        listener,
        metrics.clone(),
        ready.clone(),
        stopped(stop_rx.clone()),
    ));
    let settings = Settings {
        namespace: None,
        operator_namespace: args.operator_namespace.clone(),
        concurrency: args.concurrency,
        per_provider_concurrency: args.per_provider_concurrency,
        retry_base: args.retry_base,
        selector: args.selector.clone(),
        per_namespace_concurrency: args
            .per_namespace_concurrency
            .unwrap_or((usize::from(args.concurrency) * 3 / 4).max(1)),
        check_request_min_gap: args.check_request_min_gap,
        app_probe_interval: args.app_probe_interval,
        leading: None,
        secret_label: args.secret_label.clone(),
    };
    let key = StateKey::load_or_create(&client, &args.operator_namespace, &args.state_key_secret)
        .await
        .map_err(|e| {
            format!("{e} (the operator namespace is set by --operator-namespace / POD_NAMESPACE)")
        })?;
    let reauth = Reauth {
        key,
        public_url: args.public_url.clone(),
        ttl: args.reauth_link_ttl,
    };
    let callback_listener = tokio::net::TcpListener::bind(args.callback_addr)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on --callback-addr {}: {e}",
                args.callback_addr
            )
        })?;
    info!(
        callback = %callback_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        public_url = %args.public_url,
        "serving the OAuth callback"
    );
    let callback = tokio::spawn(reauth::callback::serve(
        callback_listener,
        Arc::new(CallbackContext::new(
            client.clone(),
            http.clone(),
            reauth.clone(),
            args.operator_namespace.clone(),
            metrics.clone(),
            args.secret_label.clone(),
        )),
        stopped(stop_rx.clone()),
    ));
    let deps = Deps {
        http,
        reauth,
        metrics,
        notifier,
        ready: ready.clone(),
    };
    info!(metrics = %args.metrics_addr, "relink {} starting", env!("CARGO_PKG_VERSION"));
    let result = if args.leader_elect {
        lead_then_run(client, deps, settings, &args, ready, stop_rx.clone()).await
    } else {
        run_controllers(
            client,
            deps,
            settings,
            &args.namespace,
            stopped(stop_rx.clone()),
        )
        .await;
        Ok(())
    };
    probes.abort();
    callback.abort();
    deliveries.abort();
    result
}

/// The controller for every namespace in `namespaces`, each on its own (as several
/// namespace-scoped installs would be), or for all namespaces when the list is empty.
async fn run_controllers(
    client: Client,
    deps: Deps,
    settings: Settings,
    namespaces: &[String],
    until: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    if namespaces.len() <= 1 {
        let settings = Settings {
            namespace: namespaces.first().cloned(),
            ..settings
        };
        return controller::run(client, deps, settings, until).await;
    }
    let until = futures::FutureExt::shared(until);
    let runs = namespaces.iter().map(|ns| {
        let settings = Settings {
            namespace: Some(ns.clone()),
            ..settings.clone()
        };
        controller::run(client.clone(), deps.clone(), settings, until.clone())
    });
    futures::future::join_all(runs).await;
}

/// Panics go to the log as one structured line (where, and the message cut short) instead of
/// the default hook's raw stderr text; reconciles catch them and retry (see the controller).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        error!(
            %location,
            message = %relink::text::truncate(&message, 200),
            "panic (a bug in relink; the check is retried)"
        );
    }));
}

/// Resolves when shutdown was asked for.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Waits for the Lease, runs the controller while leading, and releases the Lease on the way out.
/// Losing the Lease ends the process (exit 1) so a fresh start rejoins as a standby.
async fn lead_then_run(
    client: Client,
    deps: Deps,
    mut settings: Settings,
    args: &RunArgs,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "relink".into());
        format!("{host}-{}", std::process::id())
    });
    let secs = args.lease_duration.as_secs().max(3);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&args.operator_namespace)
        .with_identity(&identity)
        .with_duration(secs)
        .with_grace((secs / 3).max(1))
        .build()
        .await
        .map_err(|e| {
            format!(
                "cannot use Lease {}/{}: {e}",
                args.operator_namespace, args.lease_name
            )
        })?;
    let (mut leading, task) = manager.watch().await;
    // A standby that takes part in the election is healthy.
    ready.store(true, Ordering::Relaxed);
    info!(identity = %identity, lease = %args.lease_name, "waiting to lead");
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
    run_controllers(client, deps, settings, &args.namespace, until).await;
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

/// Fails with a message that says what to do when the cluster is unreachable or the CRDs are missing.
async fn preflight(client: &Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in relink::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match crds.get_opt(&name).await {
            Ok(Some(installed)) => {
                if let Some(field) = missing_field(&crd, &installed) {
                    return Err(format!(
                        "CRD {name} is older than this operator (it has no {field}; the API server would drop it and requests would repeat): apply this version's CRDs with `relink crd | kubectl apply --server-side -f -` (or upgrade the Helm chart with crds.enabled=true)"
                    ));
                }
            }
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

/// A spec or status field this operator writes or reads that the installed CRD lacks, if any
/// (an older CRD prunes it silently).
fn missing_field(
    ours: &CustomResourceDefinition,
    installed: &CustomResourceDefinition,
) -> Option<String> {
    let props = |crd: &CustomResourceDefinition, section: &str| -> Vec<String> {
        serde_json::to_value(crd).ok().and_then(|v| {
            v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][section]["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
        })
        .unwrap_or_default()
    };
    ["spec", "status"].into_iter().find_map(|section| {
        let have = props(installed, section);
        props(ours, section)
            .into_iter()
            .find(|f| !have.contains(f))
            .map(|f| format!("{section}.{f}"))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_installed_crd_is_named_with_the_field_it_lacks() {
        let ours = relink::api::crds().remove(0);
        assert_eq!(missing_field(&ours, &ours), None);
        let mut older = serde_json::to_value(&ours).unwrap();
        older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]
            .as_object_mut()
            .unwrap()
            .remove("lastHandledRefreshRequest");
        let older: CustomResourceDefinition = serde_json::from_value(older).unwrap();
        assert_eq!(
            missing_field(&ours, &older).as_deref(),
            Some("status.lastHandledRefreshRequest")
        );
    }
}
