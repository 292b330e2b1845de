//! The operator as a process (`relink run …`) against the shared control plane.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{control_plane, eventually, watchdog};

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
        let log = cp.dir().join(format!(
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
