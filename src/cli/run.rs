//! `relink run`: the operator. [`OperatorConfig`] is its typed configuration: the flags of
//! `relink run` (names, defaults and help text are the API reference's), which `relink demo`
//! builds directly from [`OperatorConfig::default`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

use relink::access::SecretLabel;
use relink::controller::{self, Deps, Settings};
use relink::notify::{Notifier, NotifyConfig};
use relink::providers::{EndpointPolicy, Http, HttpConfig};
use relink::reauth::{self, Reauth, StateKey, callback::CallbackContext};
use relink::telemetry::{self, Metrics};

use super::{LogFormat, duration, init_logging};
/// The operator's configuration, one field per `relink run` flag.
#[derive(Args, Clone, Debug)]
pub struct OperatorConfig {
    /// Watch only these namespaces (comma-separated; default: all namespaces). Each is watched
    /// on its own, as by several namespace-scoped installs, so no cluster-wide access to
    /// Secrets or connections is needed.
    #[arg(long, env = "RELINK_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Namespace the operator runs in (default namespace of ClusterChannelProvider client secrets).
    #[arg(long, env = "POD_NAMESPACE", default_value = "relink-system")]
    pub operator_namespace: String,
    /// Reconciles in flight at once (default: twice --per-provider-concurrency, at least 16), so
    /// that API round trips before and after a provider call do not hold a provider slot.
    #[arg(long, env = "RELINK_CONCURRENCY")]
    pub concurrency: Option<u16>,
    /// Threads that run the operator's tasks. Checks wait on the network, not the CPU: one
    /// thread spends less CPU per check than several handing tasks to each other
    /// (docs/performance.md); raise it only when the operator keeps one core busy.
    #[arg(long, env = "RELINK_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// Checks in flight at once against one provider object.
    #[arg(long, env = "RELINK_PER_PROVIDER_CONCURRENCY", default_value_t = 4)]
    pub per_provider_concurrency: usize,
    /// Checks in flight at once for the connections of one namespace (default: three quarters
    /// of --concurrency), so one tenant cannot hold every slot.
    #[arg(long, env = "RELINK_PER_NAMESPACE_CONCURRENCY")]
    pub per_namespace_concurrency: Option<usize>,
    /// Least time between two checks of one connection caused by a check request or an edit;
    /// a request inside it is served when it ends.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub check_request_min_gap: Duration,
    /// While a provider's application is rejected (`invalid_client`), one connection asks
    /// again this often; the others wait without calling.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub app_probe_interval: Duration,
    /// Time allowed to connect to a provider.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub provider_connect_timeout: Duration,
    /// Time allowed for a whole provider call.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub provider_timeout: Duration,
    /// Largest provider answer read, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub provider_max_response_bytes: usize,
    /// First retry delay after a provider failure; doubles up to the check interval.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub retry_base: Duration,
    /// Hosts that namespaced ChannelProviders may call even over http or on private addresses
    /// (comma-separated, e.g. `sandbox.relink.svc,127.0.0.1`).
    #[arg(
        long,
        env = "RELINK_ALLOW_NAMESPACED_ENDPOINT_HOSTS",
        value_delimiter = ','
    )]
    pub allow_namespaced_endpoint_hosts: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "RELINK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level or filter (RUST_LOG syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info", env = "RELINK_LOG_LEVEL")]
    pub log_level: String,
    /// Listener for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "RELINK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Listener for the OAuth callback (`GET /oauth/callback`), the only public port.
    #[arg(long, env = "RELINK_CALLBACK_ADDR", default_value = "0.0.0.0:8081")]
    pub callback_addr: SocketAddr,
    /// External URL of the callback listener; the redirect URL is `<public-url>/oauth/callback`.
    #[arg(
        long,
        env = "RELINK_PUBLIC_URL",
        default_value = "http://localhost:8081"
    )]
    pub public_url: String,
    /// Secret (operator namespace) holding the key that signs OAuth `state`; created if absent.
    #[arg(
        long,
        env = "RELINK_STATE_KEY_SECRET",
        default_value = "relink-state-key"
    )]
    pub state_key_secret: String,
    /// How long a re-authorization link stays valid.
    #[arg(long, default_value = reauth::DEFAULT_LINK_TTL, value_parser = duration)]
    pub reauth_link_ttl: Duration,
    /// Elect one active replica through a Lease in the operator namespace.
    #[arg(long, env = "RELINK_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Name of the Lease used for leader election (one per shard).
    #[arg(long, env = "RELINK_LEASE_NAME", default_value = "relink")]
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// Only reconcile connections matching this label selector (sharding).
    #[arg(long, env = "RELINK_SELECTOR")]
    pub selector: Option<String>,
    /// SMTP server for email notifications: `smtp://host:587` (STARTTLS required),
    /// `smtp://host:port` on another port (STARTTLS when offered), `?tls=none|opportunistic|required`
    /// to say it explicitly, `smtps://host:port` (implicit TLS).
    #[arg(long, env = "RELINK_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender address of notification emails.
    #[arg(long, env = "RELINK_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Secret (operator namespace) with `username` and `password` for SMTP.
    #[arg(long, env = "RELINK_SMTP_CREDENTIALS_SECRET")]
    pub smtp_credentials_secret: Option<String>,
    /// Reminder interval while a connection stays broken.
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub reminder_interval: Duration,
    /// Warn owners this long before a token that cannot be refreshed expires.
    #[arg(long, default_value = "168h", value_parser = duration)]
    pub expiry_warning: Duration,
    /// First retry of a failed notification delivery; doubles for each of the 5 tries.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub notification_retry_base: Duration,
    /// How long a problem email waits for others to the same owners about the same cause, sent
    /// as one message listing the channels; 0s sends each at once.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub notification_batch_window: Duration,
    /// Allow SMTP credentials over a connection without TLS (`smtp://host:port?tls=none`).
    /// Off by default: credentials are only ever sent over STARTTLS or implicit TLS.
    #[arg(
        long,
        env = "RELINK_SMTP_ALLOW_PLAINTEXT_AUTH",
        default_value_t = false
    )]
    pub smtp_allow_plaintext_auth: bool,
    /// Use only token Secrets carrying this label (`KEY=VALUE`, e.g. `relink.dev/token=true`);
    /// a Secret relink creates at re-authorization gets it. For clusters where people may
    /// create connections without being allowed to read Secrets.
    #[arg(long, env = "RELINK_SECRET_LABEL")]
    pub secret_label: Option<SecretLabel>,
    /// Email only owners in these domains (comma-separated, e.g. `example.com,example.org`);
    /// others are named on the connection's Ready condition and never sent anything.
    #[arg(long, env = "RELINK_ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    pub allowed_email_domains: Vec<String>,
}

impl Default for OperatorConfig {
    /// Every flag at its default, as `relink run` without flags or environment would have it:
    /// the defaults are declared once, on the flags above.
    fn default() -> Self {
        let command = Self::augment_args(clap::Command::new("run"))
            .mut_args(|arg| arg.env(None::<&'static str>))
            .no_binary_name(true);
        let matches = command
            .try_get_matches_from(std::iter::empty::<&str>())
            .expect("every `relink run` flag has a valid default");
        Self::from_arg_matches(&matches).expect("every `relink run` flag has a valid default")
    }
}

impl OperatorConfig {
    fn http(&self) -> HttpConfig {
        HttpConfig {
            connect_timeout: self.provider_connect_timeout,
            timeout: self.provider_timeout,
            max_body_bytes: self.provider_max_response_bytes,
            policy: EndpointPolicy::new(self.allow_namespaced_endpoint_hosts.clone()),
        }
    }

    fn notify(&self) -> NotifyConfig {
        NotifyConfig {
            smtp_url: self.smtp_url.clone(),
            smtp_from: self.smtp_from.clone(),
            smtp_credentials_secret: self.smtp_credentials_secret.clone(),
            reminder_interval: self.reminder_interval,
            expiry_warning: self.expiry_warning,
            operator_namespace: self.operator_namespace.clone(),
            allowed_email_domains: self.allowed_email_domains.clone(),
            allow_plaintext_auth: self.smtp_allow_plaintext_auth,
            batch_window: self.notification_batch_window,
        }
    }

    /// `--concurrency`, or its default derived from `--per-provider-concurrency`.
    pub fn concurrency(&self) -> u16 {
        self.concurrency
            .unwrap_or_else(|| controller::default_concurrency(self.per_provider_concurrency))
    }

    /// The controller's settings (namespace and leadership are set per run).
    fn settings(&self) -> Settings {
        let concurrency = self.concurrency();
        Settings {
            namespace: None,
            operator_namespace: self.operator_namespace.clone(),
            concurrency,
            per_provider_concurrency: self.per_provider_concurrency,
            retry_base: self.retry_base,
            selector: self.selector.clone(),
            per_namespace_concurrency: self
                .per_namespace_concurrency
                .unwrap_or((usize::from(concurrency) * 3 / 4).max(1)),
            check_request_min_gap: self.check_request_min_gap,
            app_probe_interval: self.app_probe_interval,
            leading: None,
            secret_label: self.secret_label.clone(),
        }
    }
}

/// `relink run`.
pub async fn main(config: OperatorConfig) -> ExitCode {
    init_logging(config.log_format, &config.log_level);
    log_panics();
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// The operator until shutdown (SIGINT/SIGTERM) or a fatal error (the message says what to do).
pub async fn run(config: OperatorConfig) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| {
        format!("cannot configure a Kubernetes client (set KUBECONFIG or run in a cluster): {e}")
    })?;
    super::preflight::preflight(&client).await?;
    let http =
        Http::new(config.http()).map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let notifier = Arc::new(Notifier::new(
        client.clone(),
        config.notify(),
        metrics.clone(),
    ));
    let deliveries = notifier.start(http.clone(), config.notification_retry_base);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let probes = serve_probes(&config, metrics.clone(), ready.clone(), &stop_rx).await?;
    let key = StateKey::load_or_create(
        &client,
        &config.operator_namespace,
        &config.state_key_secret,
    )
    .await
    .map_err(|e| {
        format!("{e} (the operator namespace is set by --operator-namespace / POD_NAMESPACE)")
    })?;
    let reauth = Reauth {
        key,
        public_url: config.public_url.clone(),
        ttl: config.reauth_link_ttl,
    };
    let context = CallbackContext::new(
        client.clone(),
        http.clone(),
        reauth.clone(),
        config.operator_namespace.clone(),
        metrics.clone(),
        config.secret_label.clone(),
    );
    let callback = serve_callback(&config, context, &stop_rx).await?;
    let deps = Deps {
        http,
        reauth,
        metrics,
        notifier,
        ready: ready.clone(),
    };
    info!(metrics = %config.metrics_addr, "relink {} starting", env!("CARGO_PKG_VERSION"));
    let settings = config.settings();
    let result = if config.leader_elect {
        super::lease::lead_then_run(client, deps, settings, &config, ready, stop_rx).await
    } else {
        run_controllers(client, deps, settings, &config.namespace, stopped(stop_rx)).await;
        Ok(())
    };
    probes.abort();
    callback.abort();
    deliveries.abort();
    result
}

/// `/metrics`, `/healthz` and `/readyz` on `--metrics-addr`.
async fn serve_probes(
    config: &OperatorConfig,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: &watch::Receiver<bool>,
) -> Result<JoinHandle<std::io::Result<()>>, String> {
    let (listener, addr) = bind("--metrics-addr", config.metrics_addr).await?;
    info!(metrics = %addr, "serving /metrics, /healthz and /readyz");
    Ok(tokio::spawn(telemetry::server::serve(
        listener,
        metrics,
        ready,
        stopped(stop.clone()),
    )))
}

/// A listener on `addr` (given by `flag`) and the address it got.
async fn bind(flag: &str, addr: SocketAddr) -> Result<(tokio::net::TcpListener, String), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {flag} {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok((listener, bound))
}

/// The OAuth callback on `--callback-addr`.
async fn serve_callback(
    config: &OperatorConfig,
    context: CallbackContext,
    stop: &watch::Receiver<bool>,
) -> Result<JoinHandle<std::io::Result<()>>, String> {
    let (listener, addr) = bind("--callback-addr", config.callback_addr).await?;
    info!(callback = %addr, public_url = %config.public_url, "serving the OAuth callback");
    Ok(tokio::spawn(reauth::callback::serve(
        listener,
        Arc::new(context),
        stopped(stop.clone()),
    )))
}

/// The controller for every namespace in `namespaces`, each on its own (as several
/// namespace-scoped installs would be), or for all namespaces when the list is empty.
pub(super) async fn run_controllers(
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
pub(super) async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_the_flags_defaults() {
        let config = OperatorConfig::default();
        assert!(config.namespace.is_empty());
        assert_eq!(config.operator_namespace, "relink-system");
        assert_eq!(config.concurrency(), 16);
        assert_eq!(config.check_request_min_gap, Duration::from_secs(10));
        assert_eq!(config.reminder_interval, Duration::from_secs(24 * 3600));
        assert_eq!(config.public_url, "http://localhost:8081");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.worker_threads, 1);
        assert_eq!(config.settings().per_namespace_concurrency, 12);
    }

    #[test]
    fn concurrency_follows_the_provider_slots_unless_set() {
        let mut config = OperatorConfig {
            per_provider_concurrency: 32,
            ..OperatorConfig::default()
        };
        assert_eq!(config.concurrency(), 64);
        assert_eq!(config.settings().per_namespace_concurrency, 48);
        config.concurrency = Some(8);
        assert_eq!(config.concurrency(), 8);
        assert_eq!(config.settings().concurrency, 8);
    }
}
