//! A throw-away etcd + kube-apiserver on loopback: the one harness behind the e2e tests
//! (`tests/e2e/support`) and the benchmark (`benches/scale/controlplane.rs`), which both include
//! this file with `#[path]`. Each caller spawns the two processes its own way (the e2e tests
//! for the life of the test binary, the benchmark once per size); what they share is here: the
//! binaries, the ports, the folder with its token, key and kubeconfig, the flags, waiting for
//! `/readyz` (CRDs are installed with `relink::api::install_crds`).
//!
//! Ports are picked below Linux's ephemeral range ([`free_port`]): a port the kernel handed out
//! for `127.0.0.1:0` can be handed out again before the process that should bind it does.
#![allow(dead_code)] // each includer uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

/// Folder holding both `kube-apiserver` and `etcd`: `$KUBEBUILDER_ASSETS`, else
/// `scripts/controlplane path`.
pub fn find_binaries() -> Option<PathBuf> {
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

pub fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Spawns a `sh` that SIGKILLs `pid` once this process is gone, then optionally removes
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

/// Last `lines` lines of a log, preceded by its klog error/fatal lines (a Go panic's
/// goroutine dump would otherwise push the real cause out of view).
pub fn tail(path: &Path, lines: usize) -> String {
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

/// Where and how a control plane runs: a fresh folder (admin token, service-account key,
/// kubeconfig, logs, etcd data) and three free ports. Only plain data, cheap to share.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tag of the folder, the kubeconfig's context and log lines (`e2e`, `bench`).
    pub what: &'static str,
    pub url: String,
    pub token: String,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    etcd_url: String,
    peer_url: String,
    api_port: u16,
}

impl Plan {
    /// Creates `$TMPDIR/relink-{what}-{pid}-{random}` with what the processes need.
    pub fn new(what: &'static str) -> Result<Plan, String> {
        let dir = std::env::temp_dir().join(format!(
            "relink-{what}-{}-{}",
            std::process::id(),
            random_string(4)
        ));
        std::fs::create_dir_all(dir.join("certs")).map_err(|e| format!("create temp dir: {e}"))?;
        eprintln!("[{what}] control plane dir: {}", dir.display());
        let token = random_string(32);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .map_err(|e| format!("write tokens.csv: {e}"))?;
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("run openssl (is the openssl CLI installed?): {e}"))?;
        if !status.success() {
            return Err(format!("openssl genrsa failed: {status}"));
        }
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let plan = Plan {
            what,
            url: format!("https://127.0.0.1:{api_port}"),
            token,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            etcd_url: format!("http://127.0.0.1:{etcd_port}"),
            peer_url: format!("http://127.0.0.1:{peer_port}"),
            api_port,
        };
        plan.write_kubeconfig()?;
        Ok(plan)
    }

    /// etcd's flags: data in the folder, client and peer URLs on loopback.
    pub fn etcd_args(&self) -> Vec<String> {
        let (etcd_url, peer_url) = (&self.etcd_url, &self.peer_url);
        vec![
            "--data-dir".into(),
            self.dir.join("etcd").display().to_string(),
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
        ]
    }

    /// kube-apiserver's flags: loopback, the admin token, RBAC, service-account tokens.
    pub fn apiserver_args(&self) -> Vec<String> {
        let sa_key = self.dir.join("sa.key").display().to_string();
        vec![
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", self.api_port),
            format!("--cert-dir={}", self.dir.join("certs").display()),
            format!(
                "--token-auth-file={}",
                self.dir.join("tokens.csv").display()
            ),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={sa_key}"),
            format!("--service-account-signing-key-file={sa_key}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
        ]
    }

    /// Admin client (`system:masters`), changed by `customize` (e.g. to impersonate).
    pub fn client_with(
        &self,
        customize: impl FnOnce(&mut kube::config::AuthInfo),
    ) -> Result<kube::Client, String> {
        // reqwest and kube are built without a default rustls provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = self
            .url
            .parse()
            .map_err(|e| format!("control plane URL: {e}"))?;
        let mut config = kube::Config::new(url);
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        customize(&mut config.auth_info);
        kube::Client::try_from(config).map_err(|e| format!("build kube client: {e}"))
    }

    /// Kubeconfig for child processes (the operator, kubectl, helm): admin token, insecure TLS
    /// (loopback only), namespace `default`; readable only by this user.
    fn write_kubeconfig(&self) -> Result<(), String> {
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: {what}
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {token}
contexts:
- name: {what}
  context:
    cluster: {what}
    user: admin
    namespace: default
current-context: {what}
",
            what = self.what,
            url = self.url,
            token = self.token
        );
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.kubeconfig)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .map_err(|e| format!("write kubeconfig: {e}"))
    }

    /// Waits until kube-apiserver answers `/readyz`, for at most `timeout`; `exited` says why
    /// waiting is pointless (a process ended).
    pub async fn wait_ready(
        &self,
        timeout: Duration,
        mut exited: impl FnMut() -> Option<String>,
    ) -> Result<(), String> {
        let client = self.client_with(|_| {})?;
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            if let Some(why) = exited() {
                return Err(why);
            }
            if get_text(&client, "/readyz", None).await.is_ok() {
                eprintln!(
                    "[{}] kube-apiserver ready in {} s at {}",
                    self.what,
                    started.elapsed().as_secs(),
                    self.url
                );
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "kube-apiserver not ready after {} s",
                    timeout.as_secs()
                ));
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "[{}] waiting for kube-apiserver ({} s)…",
                    self.what,
                    started.elapsed().as_secs()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `GET path` with an optional Accept header. `http` is not a direct dependency, so this
/// borrows kube's request builder and swaps in the URI.
pub async fn get_text(
    client: &kube::Client,
    path: &str,
    accept: Option<&'static str>,
) -> kube::Result<String> {
    let mut req = kube::core::Request::new("/")
        .get("x", &Default::default())
        .map_err(kube::Error::BuildRequest)?;
    *req.uri_mut() = path.parse().expect("path is a valid URI");
    if let Some(accept) = accept {
        req.headers_mut().insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static(accept),
        );
    }
    client.request_text(req).await
}
