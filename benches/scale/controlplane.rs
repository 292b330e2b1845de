//! A throw-away etcd + kube-apiserver on loopback, a simplified copy of the e2e harness
//! (`tests/e2e/support/mod.rs`): one per benchmark size, so every size starts from an empty etcd.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use rand::Rng;

use crate::procs::{Daemon, free_port};

pub struct ControlPlane {
    pub url: String,
    token: String,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    keep: bool,
    apiserver: Daemon,
    etcd: Daemon,
}

/// Folder holding `kube-apiserver` and `etcd`: `$KUBEBUILDER_ASSETS`, else `scripts/controlplane path`.
pub fn find_binaries() -> Result<PathBuf> {
    let has_both = |d: &Path| d.join("kube-apiserver").is_file() && d.join("etcd").is_file();
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from)
        && has_both(&dir)
    {
        return Ok(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/controlplane");
    let out = Command::new(script)
        .arg("path")
        .stderr(Stdio::null())
        .output()
        .context("run scripts/controlplane path")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && has_both(&dir) {
        Ok(dir)
    } else {
        bail!(
            "kube-apiserver/etcd not found: run `scripts/controlplane ensure` (or scripts/bench, which does) or set KUBEBUILDER_ASSETS"
        )
    }
}

fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits for `/readyz`, writes a kubeconfig and installs the CRDs.
    pub async fn start(keep: bool) -> Result<ControlPlane> {
        let bin = find_binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "relink-bench-{}-{}",
            std::process::id(),
            random_string(4)
        ));
        std::fs::create_dir_all(dir.join("certs"))?;
        eprintln!("[bench] control plane dir: {}", dir.display());
        let token = random_string(32);
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )?;
        let sa_key = dir.join("sa.key");
        let ok = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&sa_key)
            .arg("2048")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("run openssl (is the openssl CLI installed?)")?
            .success();
        if !ok {
            bail!("openssl genrsa failed");
        }

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
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
        // etcd's watchdog also removes the folder: it outlives everything else we start.
        let etcd = Daemon::spawn(
            "etcd",
            &bin.join("etcd"),
            &etcd_args,
            &[],
            &dir.join("etcd.log"),
            (!keep).then_some(dir.as_path()),
        )?;
        let sa = sa_key.display().to_string();
        let api_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={sa}"),
            format!("--service-account-signing-key-file={sa}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        let apiserver = Daemon::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &api_args,
            &[],
            &dir.join("kube-apiserver.log"),
            None,
        )?;
        let mut cp = ControlPlane {
            url: format!("https://127.0.0.1:{api_port}"),
            token,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            keep,
            apiserver,
            etcd,
        };
        cp.write_kubeconfig()?;
        cp.wait_ready().await?;
        cp.install_crds().await?;
        Ok(cp)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client()?;
        let started = Instant::now();
        loop {
            if let Some(s) = self.apiserver.exited() {
                bail!(
                    "kube-apiserver exited early ({s}):\n{}",
                    self.apiserver.tail(30)
                );
            }
            if let Some(s) = self.etcd.exited() {
                bail!("etcd exited early ({s}):\n{}", self.etcd.tail(30));
            }
            if get_text(&client, "/readyz").await.is_ok() {
                eprintln!(
                    "[bench] kube-apiserver ready in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "kube-apiserver not ready after 90 s:\n{}",
                    self.apiserver.tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = kube::Config::new(self.url.parse()?);
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.token.clone().into());
        Ok(kube::Client::try_from(config)?)
    }

    /// Kubeconfig for the operator process: admin token, insecure TLS (loopback only).
    fn write_kubeconfig(&self) -> Result<()> {
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: {url}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {token}
contexts:
- name: bench
  context:
    cluster: bench
    user: admin
current-context: bench
",
            url = self.url,
            token = self.token
        );
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.kubeconfig)
            .and_then(|mut f| f.write_all(yaml.as_bytes()))
            .context("write kubeconfig")
    }

    async fn install_crds(&self) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client()?);
        let pp = PatchParams::apply("relink-bench").force();
        let crds = relink::api::crds();
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &pp, &Patch::Apply(crd))
                .await
                .with_context(|| format!("apply CRD {name}"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for crd in &crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            loop {
                let established = api.get(&name).await.ok().is_some_and(|c| {
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
                    bail!("CRD {name} not Established after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// `apiserver_request_total` summed by `verb resource[/subresource]`, non-resource paths
    /// (such as the `/metrics` scrape itself) left out.
    pub async fn request_counts(&self, client: &kube::Client) -> Result<BTreeMap<String, f64>> {
        let text = get_text(client, "/metrics")
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

/// `GET path` as text. `http` is not a direct dependency, so this borrows kube's request
/// builder and swaps in the URI.
async fn get_text(client: &kube::Client, path: &str) -> kube::Result<String> {
    let mut req = kube::core::Request::new("/")
        .get("x", &Default::default())
        .map_err(kube::Error::BuildRequest)?;
    *req.uri_mut() = path.parse().expect("a valid URI path");
    client.request_text(req).await
}
