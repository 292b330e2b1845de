//! End-to-end harness: one local etcd + kube-apiserver per test binary, shared by all tests.
//!
//! Only plain data (URL, token, paths) is shared; every test builds its own `kube::Client`
//! because a client's background tasks die with the tokio runtime that created it, and each
//! `#[tokio::test]` has its own runtime.
//!
//! No child process may outlive the test binary (panic, Ctrl-C, `process::exit`): each one is
//! paired with a small `sh` watchdog that polls our pid and SIGKILLs the child once we are gone.
#![allow(dead_code)] // not every test module uses every helper

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rand::Rng;

const MISSING: &str = "kube-apiserver/etcd not found: run `scripts/controlplane ensure` (builds them once, ~10 min) or set KUBEBUILDER_ASSETS; set RELINK_SKIP_E2E=1 to skip e2e tests";

/// Connection data of the shared control plane; cheap to read from any test.
#[derive(Debug)]
pub struct ControlPlane {
    url: String,
    token: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
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
        &self.kubeconfig
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Temp dir holding logs, certs and etcd data (removed after the test binary exits
    /// unless `RELINK_E2E_KEEP=1`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn build_client(&self, customize: impl FnOnce(&mut kube::config::AuthInfo)) -> kube::Client {
        install_crypto_provider();
        let mut config = kube::Config::new(self.url.parse().expect("control plane URL"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        customize(&mut config.auth_info);
        kube::Client::try_from(config).expect("build kube client (must run inside a tokio runtime)")
    }
}

/// reqwest and kube are built without a default rustls provider.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Folder holding both `kube-apiserver` and `etcd`: `$KUBEBUILDER_ASSETS`, else `scripts/controlplane path`.
fn find_binaries() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("kube-apiserver").is_file() && d.join("etcd").is_file();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from)
        && has_both(&dir)
    {
        return Some(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/controlplane");
    let out = Command::new(script)
        .arg("path")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && has_both(&dir)).then_some(dir)
}

/// A loopback port that is free now, for a process to bind later. Picked below Linux's
/// ephemeral range (32768-60999): a port the kernel handed out for `:0` can be handed out
/// again, or used by an outgoing connection, before the process binds it.
pub fn free_port() -> u16 {
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000")
}

fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Spawns a `sh` that SIGKILLs `pid` once this test process is gone, then optionally removes
/// `cleanup`. Ignores INT/TERM/HUP so a Ctrl-C to the process group can't kill it first.
/// Kill (and reap) the returned child once `pid` has been stopped normally, so a recycled pid
/// is never hit.
pub fn watchdog(pid: u32, cleanup: Option<&Path>) -> std::process::Child {
    let rm = cleanup
        .map(|d| format!("; rm -rf '{}'", d.display()))
        .unwrap_or_default();
    let script = format!(
        "trap '' INT TERM HUP; while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null{rm}",
        me = std::process::id(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watchdog sh")
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

/// Last `lines` lines of a log, preceded by its klog error/fatal lines (a Go panic's
/// goroutine dump would otherwise push the real cause out of view).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let is_error = |l: &&&str| {
        l.starts_with('E') || l.starts_with('F') || l.starts_with("Error") || l.starts_with("panic")
    };
    let errors: Vec<&str> = all.iter().filter(is_error).copied().collect();
    let mut out = String::new();
    if !errors.is_empty() {
        out.push_str("error lines:\n");
        out.push_str(&errors[errors.len().saturating_sub(15)..].join("\n"));
        out.push_str("\nlast lines:\n");
    }
    out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
    out
}

/// Runs on the starter thread: temp dir, etcd, kube-apiserver, readyz, kubeconfig, CRDs.
fn start() -> Result<ControlPlane, String> {
    let bin = find_binaries().ok_or(MISSING)?;
    let dir = std::env::temp_dir().join(format!(
        "relink-e2e-{}-{}",
        std::process::id(),
        random_string(4)
    ));
    std::fs::create_dir_all(dir.join("certs")).map_err(|e| format!("create temp dir: {e}"))?;
    eprintln!("[e2e] control plane dir: {}", dir.display());
    let keep = std::env::var("RELINK_E2E_KEEP").as_deref() == Ok("1");

    let token = random_string(32);
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{token},admin,admin,system:masters\n"),
    )
    .map_err(|e| format!("write tokens.csv: {e}"))?;

    let sa_key = dir.join("sa.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&sa_key)
        .arg("2048")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("run openssl (is the openssl CLI installed?): {e}"))?;
    if !status.success() {
        return Err(format!("openssl genrsa failed: {status}"));
    }

    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    eprintln!("[e2e] starting etcd…");
    let etcd_args: Vec<String> = vec![
        "--data-dir".into(),
        dir.join("etcd").display().to_string(),
        "--listen-client-urls".into(),
        etcd_url.clone(),
        "--advertise-client-urls".into(),
        etcd_url.clone(),
        "--listen-peer-urls".into(),
        peer_url.clone(),
        "--initial-advertise-peer-urls".into(),
        peer_url.clone(),
        "--initial-cluster".into(),
        format!("default={peer_url}"),
    ];
    // The etcd watchdog also removes the temp dir: it outlives everything else we spawn.
    let etcd_log = dir.join("etcd.log");
    let mut etcd = spawn_daemon(
        &bin.join("etcd"),
        &etcd_args,
        &etcd_log,
        (!keep).then_some(dir.as_path()),
    )?;

    eprintln!("[e2e] starting kube-apiserver…");
    let sa_key_arg = sa_key.display().to_string();
    let api_args: Vec<String> = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={api_port}"),
        format!("--cert-dir={}", dir.join("certs").display()),
        format!("--token-auth-file={}", dir.join("tokens.csv").display()),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-key-file={sa_key_arg}"),
        format!("--service-account-signing-key-file={sa_key_arg}"),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
    ];
    let api_log = dir.join("kube-apiserver.log");
    let mut apiserver = spawn_daemon(&bin.join("kube-apiserver"), &api_args, &api_log, None)?;

    let cp = ControlPlane {
        url: format!("https://127.0.0.1:{api_port}"),
        token,
        kubeconfig: dir.join("kubeconfig"),
        dir: dir.clone(),
    };
    write_kubeconfig(&cp)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("build starter runtime: {e}"))?;
    let started = Instant::now();
    let ready = rt.block_on(async {
        let client = cp.client();
        let mut last_report = Instant::now();
        loop {
            if let Ok(Some(status)) = apiserver.try_wait() {
                return Err(format!("kube-apiserver exited early: {status}"));
            }
            if let Ok(Some(status)) = etcd.try_wait() {
                return Err(format!(
                    "etcd exited early: {status}\n{}",
                    tail(&etcd_log, 20)
                ));
            }
            if get_text(&client, "/readyz", None).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err("kube-apiserver not ready after 60 s".to_string());
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "[e2e] waiting for kube-apiserver ({} s)…",
                    started.elapsed().as_secs()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    if let Err(e) = ready {
        let _ = apiserver.kill();
        let _ = etcd.kill();
        return Err(format!(
            "{e}; last lines of {}:\n{}",
            api_log.display(),
            tail(&api_log, 30)
        ));
    }
    eprintln!(
        "[e2e] kube-apiserver ready in {} s at {}",
        started.elapsed().as_secs(),
        cp.url
    );

    rt.block_on(install_crds(&cp))?;
    Ok(cp)
}

fn write_kubeconfig(cp: &ControlPlane) -> Result<(), String> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {token}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
    namespace: default
current-context: e2e
",
        url = cp.url,
        token = cp.token
    );
    std::fs::write(&cp.kubeconfig, yaml).map_err(|e| format!("write kubeconfig: {e}"))
}

/// Server-side applies every document of `crds/*.yaml` and waits until each is Established.
async fn install_crds(cp: &ControlPlane) -> Result<(), String> {
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
        return Ok(());
    }

    let api: Api<CustomResourceDefinition> = Api::all(cp.client());
    let pp = PatchParams::apply("relink-e2e").force();
    for crd in &crds {
        let name = crd.metadata.name.as_deref().ok_or("CRD without a name")?;
        api.patch(name, &pp, &Patch::Apply(crd))
            .await
            .map_err(|e| format!("apply CRD {name}: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in &crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        loop {
            let established = api.get(name).await.ok().is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("CRD {name} not Established after 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("[e2e] installed {} CRD(s)", crds.len());
    Ok(())
}

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

/// `GET path` with an optional Accept header. `http` is not a direct dependency, so this
/// borrows kube's request builder and swaps in the URI.
async fn get_text(
    client: &kube::Client,
    path: &str,
    accept: Option<&'static str>,
) -> kube::Result<String> {
    let mut req = kube::core::Request::new("/")
        .get("x", &Default::default())
        .expect("build GET request");
    *req.uri_mut() = path.parse().expect("path is a valid URI");
    if let Some(accept) = accept {
        req.headers_mut().insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static(accept),
        );
    }
    client.request_text(req).await
}

/// GETs `path` as a server-side `meta.k8s.io/v1` Table (what `kubectl get` prints).
pub async fn table(client: &kube::Client, path: &str) -> serde_json::Value {
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let text = get_text(client, path, Some(accept))
        .await
        .unwrap_or_else(|e| panic!("GET {path} as Table: {e}"));
    serde_json::from_str(&text).expect("Table JSON")
}

/// A running `relink run …` process; killed when dropped and when the test binary exits.
pub struct Operator {
    child: Option<tokio::process::Child>,
    watchdog: Option<std::process::Child>,
    log: PathBuf,
}

impl Operator {
    /// Starts `relink run <args>` against the shared control plane.
    pub async fn start(args: &[&str]) -> Operator {
        Self::start_with_env(args, &[]).await
    }

    /// Like [`Operator::start`], with more environment variables, set last so they win (e.g. a
    /// `KUBECONFIG` that impersonates a ServiceAccount).
    pub async fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Operator {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let cp = control_plane();
        let log = cp.dir.join(format!(
            "operator-{}.log",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open operator log");
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,relink=debug".into());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relink"))
            .arg("run")
            .args(args)
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", rust_log)
            // Plain text, so tests can match on `output()`.
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn relink binary");
        let pid = child.id().expect("operator pid");
        eprintln!(
            "[e2e] started relink run {} (pid {pid}, log {})",
            args.join(" "),
            log.display()
        );
        Operator {
            child: Some(child),
            watchdog: Some(watchdog(pid, None)),
            log,
        }
    }

    /// SIGTERM, then SIGKILL if it hasn't exited within 10 s.
    pub async fn stop(&mut self) {
        self.terminate().await;
    }

    /// SIGTERM; returns the exit status when the process ended on its own within 10 s,
    /// `None` when it had to be killed.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut status = None;
        if let Some(mut child) = self.child.take()
            && let Some(pid) = child.id()
        {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(s) => status = s.ok(),
                Err(_) => {
                    eprintln!("[e2e] relink (pid {pid}) ignored SIGTERM for 10 s; killing");
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
        }
        self.stop_watchdog();
        status
    }

    /// SIGKILL at once, as a crashed node or `kill -9` would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.stop_watchdog();
    }

    /// Everything the operator printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the output contains `needle`.
    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) {
        eventually(&format!("operator output {needle:?}"), timeout, || async {
            self.output().contains(needle).then_some(())
        })
        .await
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn stop_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if std::thread::panicking() {
                let out = self.output();
                let lines: Vec<&str> = out.lines().collect();
                let start = lines.len().saturating_sub(50);
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "[e2e] last operator output ({}):", self.log.display());
                for l in &lines[start..] {
                    let _ = writeln!(err, "  {l}");
                }
            }
        }
        self.stop_watchdog();
    }
}
