//! `relink demo`: a local tour for newcomers. Installs the CRDs, starts the sandbox provider
//! ("Sandbox Social") and the operator in this process, creates four channel connections in
//! different states, prints them the way `kubectl get channelconnections -o wide` does, and
//! walks the user through re-authorizing the broken one in a browser. Ctrl-C stops everything.
//!
//! `relink demo --probe` only tells (exit code) whether the Kubernetes API answers within 5 s;
//! `scripts/demo` uses it to decide between the current kube context and a local control plane.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use relink::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnection, ConditionType};
use relink::sandbox::{Sandbox, SandboxConfig};

use super::run::OperatorConfig;
use super::status::config_for;

#[derive(Args)]
pub struct DemoArgs {
    /// Only check that the Kubernetes API answers within 5 s: exit 0 if it does, 1 if not.
    #[arg(long)]
    probe: bool,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace for the demo's objects (created if absent).
    #[arg(long, short = 'n', default_value = "relink-demo")]
    namespace: String,
    /// Where the sandbox provider listens (a free port is used when this one is taken).
    #[arg(long, default_value = "127.0.0.1:8090")]
    sandbox_addr: SocketAddr,
    /// Where the operator's OAuth callback listens (a free port is used when this one is taken).
    #[arg(long, default_value = "127.0.0.1:8081")]
    callback_addr: SocketAddr,
    /// The cluster goes away with the demo (scripts/demo's local control plane).
    #[arg(long, hide = true)]
    throwaway_cluster: bool,
}

pub fn main(args: DemoArgs) -> ExitCode {
    if args.probe {
        return probe_main(args.kubeconfig.as_deref());
    }
    if let Some(path) = &args.kubeconfig {
        // The in-process operator builds its client from the environment, like `relink run`.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
        // SAFETY: no other thread exists yet (the async runtime starts below), so nothing can
        // read the environment while it changes.
        unsafe { std::env::set_var("KUBECONFIG", &path) };
    }
    match super::runtime().block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe_main(kubeconfig: Option<&Path>) -> ExitCode {
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(async {
                let config = config_for(kubeconfig).await?;
                let url = config.cluster_url.to_string();
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await
                {
                    Ok(Ok(v)) => Ok(format!("{url} answers (Kubernetes {})", version(&v))),
                    Ok(Err(e)) => Err(format!("{url} does not answer: {e}")),
                    Err(_) => Err(format!("{url} does not answer within 5 s")),
                }
            })
        });
    match answer {
        Ok(msg) => {
            eprintln!("{msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Why the demo stops.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// Ctrl-C or SIGTERM: the operator got it too and shuts down on its own.
    Signal,
    /// SIGHUP (terminal closed) or whoever started us is gone.
    Gone,
}

async fn stop_requested() -> Stop {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn recv(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        let mut hup = signal(SignalKind::hangup()).ok();
        let parent = std::os::unix::process::parent_id();
        let orphaned = async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if std::os::unix::process::parent_id() != parent {
                    return;
                }
            }
        };
        tokio::select! {
            _ = recv(&mut int) => Stop::Signal,
            _ = recv(&mut term) => Stop::Signal,
            _ = recv(&mut hup) => Stop::Gone,
            _ = orphaned => Stop::Gone,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Signal
    }
}

mod objects;
mod table;

use objects::{BROKEN, CHANNELS, MANAGER, PROVIDER, create_objects};
use table::print_table;

/// What `prepare` set up.
struct Stage {
    sandbox: Sandbox,
    callback: SocketAddr,
    metrics: SocketAddr,
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let mut stop = pin!(stop_requested());
    let config = config_for(args.kubeconfig.as_deref()).await?;
    let api_url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let ns = args.namespace.clone();
    say(&format!(
        "relink demo: a sandbox social network, the relink operator and four channel \
         connections in namespace {ns}.\nStop it with Ctrl-C.\n"
    ));

    let stage = tokio::select! {
        r = prepare(&client, &args, &api_url) => r?,
        _ = &mut stop => {
            say("\nStopped.");
            return Ok(());
        }
    };

    let config = operator_config(&ns, stage.callback, stage.metrics, stage.sandbox.addr());
    super::init_logging(config.log_format, &config.log_level);
    say(&format!(
        "[5/6] Starting the relink operator (watching namespace {ns}; OAuth callback on \
         http://{})",
        stage.callback
    ));
    let mut operator = pin!(super::run::run(config));
    let flow = show(&client, &args, &stage);
    let mut operator_done = false;
    let why = tokio::select! {
        r = &mut operator => {
            // The operator returns cleanly only on SIGINT/SIGTERM, which the demo's own handler
            // may not have seen yet: that is the user's Ctrl-C, not a failure.
            r.map_err(|e| format!("the operator stopped: {e}"))?;
            operator_done = true;
            Stop::Signal
        }
        r = flow => {
            r?;
            Stop::Gone
        }
        why = &mut stop => why,
    };
    say("\nStopping the operator and the sandbox provider…");
    if why == Stop::Signal && !operator_done {
        // The operator saw the same signal and finishes the checks in flight.
        let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    }
    stage.sandbox.shutdown();
    if args.throwaway_cluster {
        say("Stopped.");
    } else {
        say(&format!(
            "Stopped. The demo's objects stay in namespace {ns} of this cluster \
             (`kubectl delete namespace {ns}` removes them)."
        ));
    }
    Ok(())
}

fn say(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// Prints without a newline (a step whose result follows on the same line).
fn start(s: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{s}");
    let _ = out.flush();
}

/// Steps 1–4: the API, the CRDs, the namespace, the sandbox; picks the operator's ports.
async fn prepare(client: &Client, args: &DemoArgs, api_url: &str) -> Result<Stage, String> {
    start(&format!(
        "[1/6] Connecting to the Kubernetes API at {api_url} … "
    ));
    let version = wait_for_api(client).await?;
    say(&format!("ok (Kubernetes {version})"));

    start("[2/6] Installing the relink CRDs (server-side apply) … ");
    relink::api::install_crds(client, &relink::api::crds(), MANAGER).await?;
    say("ok");

    start(&format!("[3/6] Creating namespace {} … ", args.namespace));
    let created = ensure_namespace(client, &args.namespace).await?;
    say(if created {
        "ok"
    } else {
        "ok (it already exists)"
    });

    start("[4/6] Starting the sandbox provider \"Sandbox Social\" (plays a social network) … ");
    let (sandbox, moved) = match Sandbox::start(args.sandbox_addr, SandboxConfig::default()).await {
        Ok(s) => (s, false),
        Err(_) => {
            let any = SocketAddr::new(args.sandbox_addr.ip(), 0);
            let s = Sandbox::start(any, SandboxConfig::default())
                .await
                .map_err(|e| format!("cannot start the sandbox provider on {any}: {e}"))?;
            (s, true)
        }
    };
    say(&format!(
        "ok: {}{}",
        sandbox.base_url(),
        if moved {
            format!(" ({} was taken)", args.sandbox_addr)
        } else {
            String::new()
        }
    ));

    let callback = free_or_fallback(args.callback_addr)?;
    let metrics = free_or_fallback(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))?;
    Ok(Stage {
        sandbox,
        callback,
        metrics,
    })
}

/// `addr` when it can be bound now, else a free port on the same address.
fn free_or_fallback(addr: SocketAddr) -> Result<SocketAddr, String> {
    let bound = std::net::TcpListener::bind(addr)
        .or_else(|_| std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port on {}: {e}", addr.ip()))?;
    Ok(bound)
}

/// Retries for up to 60 s; returns the server's version.
async fn wait_for_api(client: &Client) -> Result<String, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        match tokio::time::timeout(Duration::from_secs(5), client.apiserver_version()).await {
            Ok(Ok(v)) => return Ok(version(&v)),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer within 5 s".to_owned(),
        }
        start(".");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!(
        "the Kubernetes API did not answer for 60 s ({last}); check the kube context (or run \
         scripts/demo, which starts a local control plane)"
    ))
}

/// Creates the namespace; `Ok(false)` when it was already there.
async fn ensure_namespace(client: &Client, name: &str) -> Result<bool, String> {
    let api: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read namespace {name}: {e}"))?
    {
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "namespace {name} is being deleted; wait until it is gone or pass --namespace"
            ));
        }
        return Ok(false);
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(format!("cannot create namespace {name}: {e}")),
    }
}

/// `1.20`, or the build's version string when the server does not say.
fn version(v: &k8s_openapi::apimachinery::pkg::version::Info) -> String {
    if v.major.is_empty() {
        v.git_version.clone()
    } else {
        format!("{}.{}", v.major, v.minor)
    }
}

/// The configuration of the in-process operator: watching only `ns`, calling the sandbox,
/// listening on the demo's ports.
fn operator_config(
    ns: &str,
    callback: SocketAddr,
    metrics: SocketAddr,
    sandbox: SocketAddr,
) -> OperatorConfig {
    OperatorConfig {
        namespace: vec![ns.to_owned()],
        operator_namespace: ns.to_owned(),
        allow_namespaced_endpoint_hosts: vec![sandbox.ip().to_string()],
        callback_addr: callback,
        public_url: format!("http://{}", public_addr(callback)),
        metrics_addr: metrics,
        // Quiet: the demo's own output is what the user reads. (A local control plane has a
        // self-signed certificate, which kube warns about on every connection.)
        log_level: "warn,kube_client::client::tls=error".to_owned(),
        ..OperatorConfig::default()
    }
}

/// Where a browser on this machine reaches a listener bound to `addr`.
fn public_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// Step 6 and the rest: the objects, the first verdicts, the table, the instructions, then a
/// new table whenever a verdict changes. Returns only on error.
async fn show(client: &Client, args: &DemoArgs, stage: &Stage) -> Result<(), String> {
    let ns = &args.namespace;
    say(&format!(
        "[6/6] Creating the provider {PROVIDER} and four channel connections:"
    ));
    create_objects(client, ns, &stage.sandbox).await?;
    for c in &CHANNELS {
        say(&format!("        {:<20} {}", c.name, c.story));
    }

    start("\nWaiting for relink to check each connection … ");
    let started = Instant::now();
    let conns: Api<ChannelConnection> = Api::namespaced(client.clone(), ns);
    let seen = first_verdicts(&conns, stage).await?;
    say(&format!("done ({} s).\n", started.elapsed().as_secs()));
    print_table(client, ns).await?;
    let link = conns
        .get(BROKEN)
        .await
        .ok()
        .and_then(|c| c.status?.reauth_url)
        .unwrap_or_default();
    say(&guide(args, &link, stage.callback));

    follow(client, ns, &conns, seen).await
}

/// Every channel's first verdict, waiting up to 90 s.
async fn first_verdicts(api: &Api<ChannelConnection>, stage: &Stage) -> Result<Verdicts, String> {
    let started = Instant::now();
    loop {
        let verdicts = verdicts(api).await;
        let done = CHANNELS.iter().all(|c| {
            verdicts
                .get(c.name)
                .is_some_and(|(_, reason)| !reason.is_empty() && reason != "Checking")
        });
        if done {
            return Ok(verdicts);
        }
        if started.elapsed() > Duration::from_secs(90) {
            return Err(format!(
                "no verdict for every connection after 90 s (so far: {verdicts:?}); is the operator \
                 able to reach the sandbox at {}?",
                stage.sandbox.base_url()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A new table whenever a verdict changes, and the news once the revoked channel is healed.
/// Returns only on error.
async fn follow(
    client: &Client,
    ns: &str,
    conns: &Api<ChannelConnection>,
    mut seen: Verdicts,
) -> Result<(), String> {
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = verdicts(conns).await;
        if now.is_empty() {
            if !warned {
                say("(cannot read the connections right now; retrying)");
                warned = true;
            }
            continue;
        }
        warned = false;
        if now == seen {
            continue;
        }
        let mut changes = Vec::new();
        for (name, (status, reason)) in &now {
            match seen.get(name) {
                Some((s, r)) if s == status && r == reason => {}
                Some((_, r)) if !r.is_empty() => changes.push(format!("{name}: {r} → {reason}")),
                _ => changes.push(format!("{name}: {reason}")),
            }
        }
        seen = now;
        let clock = jiff::Zoned::now().strftime("%H:%M:%S").to_string();
        say(&format!("\n[{clock}] {}\n", changes.join(", ")));
        print_table(client, ns).await?;
        if let Some((status, reason)) = seen.get(BROKEN)
            && status == "True"
            && reason == "Valid"
        {
            say(&format!(
                "\n{BROKEN} is Ready again: relink stored the new token in Secret \
                 {BROKEN}-token (other keys untouched) and checked it at once.\n\
                 The other broken one, acme-instagram, heals the same way: its link is in \
                 `relink status -n {ns}`. Ctrl-C stops the demo."
            ));
        }
    }
}

/// `name → (Ready status, Ready reason)`.
type Verdicts = BTreeMap<String, (String, String)>;

/// `name → (Ready status, Ready reason)`; empty when the list failed.
async fn verdicts(api: &Api<ChannelConnection>) -> Verdicts {
    let Ok(list) = api.list(&ListParams::default()).await else {
        return BTreeMap::new();
    };
    list.items
        .into_iter()
        .map(|c| {
            let ready = c
                .status
                .as_ref()
                .and_then(|s| s.condition(ConditionType::Ready))
                .map(|r| (r.status.clone(), r.reason.clone()))
                .unwrap_or_default();
            (c.metadata.name.unwrap_or_default(), ready)
        })
        .collect()
}

/// What the user does next, in plain words.
fn guide(args: &DemoArgs, link: &str, callback: SocketAddr) -> String {
    let ns = &args.namespace;
    let kubectl = match &args.kubeconfig {
        Some(p) => {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            format!("  export KUBECONFIG={}\n", p.display())
        }
        None => String::new(),
    };
    let relink = relink_command();
    let open = if link.is_empty() {
        format!("  (the link is not published yet: run `{relink} status -n {ns}` in a moment)\n")
    } else {
        format!("\n  {link}\n\n")
    };
    format!(
        "\nWhat you see: relink checked every token with the provider.\n\
         \x20 acme-facebook-page  Valid          works, reaches the page, has every permission.\n\
         \x20 acme-support-inbox  Revoked        access was removed at the provider: someone must log in again.\n\
         \x20 acme-instagram      ScopesMissing  works, but lacks instagram_content_publish: log in again and grant it.\n\
         \x20 acme-linkedin       Expiring       works today, expires within 12 h and cannot be refreshed: log in before then.\n\
         \n\
         Heal the revoked channel the way its owner would:\n\
         \x20 1. Open its re-authorization link (status.reauthUrl) in a browser:\n\
         {open}\
         \x20 2. \"Sandbox Social\" asks for consent; keep the page id support@acme-coffee.example and click Allow.\n\
         \x20 3. You land on relink's page \"Channel connected again\": relink wrote the new token into the\n\
         \x20    Secret and checked it. The table below is printed again with acme-support-inbox Ready.\n\
         \x20 (Browser on another machine? Forward the two ports first:\n\
         \x20  ssh -L {sb}:127.0.0.1:{sb} -L {cb}:127.0.0.1:{cb} this-host)\n\
         \n\
         Never delete and re-create a broken connection: re-authorize it. Its Secret, history and\n\
         link stay, and the same link keeps working until it is used.\n\
         \n\
         Watch from another terminal:\n\
         {kubectl}\
         \x20 kubectl get channelconnections -n {ns} -o wide --watch\n\
         \x20 {relink} status -n {ns}\n\
         \x20 kubectl annotate channelconnection {BROKEN} -n {ns} {CHECK_REQUESTED_ANNOTATION}=$(date +%s) --overwrite   # check now\n\
         \n\
         The table is printed again whenever a verdict changes. Ctrl-C stops the demo.",
        sb = port_of(link),
        cb = callback.port(),
    )
}

fn port_of(link: &str) -> String {
    url::Url::parse(link)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .map(|p| p.to_string())
        .unwrap_or_else(|| "8090".to_owned())
}

/// How the user runs this binary again: a path relative to the working directory when short.
fn relink_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "relink".to_owned();
    };
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = exe.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    exe.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_watches_the_demo_namespace_and_calls_the_sandbox() {
        let cb: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let m: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let sb: SocketAddr = "127.0.0.1:8090".parse().expect("addr");
        let args = operator_config("relink-demo", cb, m, sb);
        assert_eq!(args.namespace, ["relink-demo"]);
        assert_eq!(args.operator_namespace, "relink-demo");
        assert_eq!(args.public_url, "http://127.0.0.1:8081");
        assert_eq!(args.allow_namespaced_endpoint_hosts, vec!["127.0.0.1"]);
        assert!(args.log_level.starts_with("warn"));
        let any: SocketAddr = "0.0.0.0:8081".parse().expect("addr");
        assert_eq!(public_addr(any), cb);
    }
}
