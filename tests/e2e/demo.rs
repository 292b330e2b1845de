//! The newcomer path: `relink demo` run as a user would (its own process, a kubeconfig), the
//! broken channel healed through its link, and `relink status` exit codes.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Api;
use relink::api::{ChannelConnection, ConditionType};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::fixtures::{browser, open};
use crate::support;

const RELINK: &str = env!("CARGO_BIN_EXE_relink");

/// A running `relink demo`, its stdout as lines.
struct Demo {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr_log: std::path::PathBuf,
    watchdog: std::process::Child,
}

impl Demo {
    fn start(kubeconfig: &Path, ns: &str, log_dir: &Path) -> Demo {
        let stderr_log = log_dir.join(format!("demo-{ns}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_log).expect("create demo stderr log");
        let mut child = tokio::process::Command::new(RELINK)
            .arg("demo")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns])
            .args([
                "--sandbox-addr",
                "127.0.0.1:0",
                "--callback-addr",
                "127.0.0.1:0",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn relink demo");
        let pid = child.id().expect("demo pid");
        // No demo may outlive the test binary, even when it is killed outright.
        let watchdog = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    "trap '' INT TERM HUP; while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null",
                    me = std::process::id()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let all = stdout.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
        });
        Demo {
            child,
            lines,
            stdout,
            stderr_log,
            watchdog,
        }
    }

    fn output(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        format!(
            "--- stdout\n{}--- stderr\n{stderr}",
            self.stdout.lock().unwrap()
        )
    }

    /// The next line that `pred` accepts (lines before it are skipped).
    async fn line_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("relink demo ended before {what}\n{}", self.output()),
                Err(_) => panic!("no {what} from relink demo in 90 s\n{}", self.output()),
            }
        }
    }

    /// Reads the next printed table (`kubectl get -o wide` layout): `name → STATUS`.
    async fn table(&mut self) -> Vec<(String, String)> {
        let header = self
            .line_where("a table header", |l| {
                l.starts_with("NAME ") && l.contains("REAUTH URL")
            })
            .await;
        let at = header.find("STATUS").expect("a STATUS column");
        let mut rows = Vec::new();
        loop {
            let line = self.line_where("a table row", |_| true).await;
            if line.trim().is_empty() || line.len() <= at {
                return rows;
            }
            let name = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let status = line[at..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            rows.push((name, status));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

/// `relink status ARGS…`: exit code and stdout.
async fn status(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(RELINK)
        .arg("status")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run relink status");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Plays the owner at the sandbox consent page: Allow, with the prefilled page id.
async fn allow(link: &str) -> String {
    let url = url::Url::parse(link).expect("reauthUrl is a URL");
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let account = form
        .iter()
        .find(|(k, _)| k == "login_hint")
        .map(|(_, v)| v.clone())
        .expect("the link names the account (login_hint)");
    form.push(("account_id".into(), account));
    form.push(("account_name".into(), "Acme Coffee Support".into()));
    form.push(("decision".into(), "allow".into()));
    let origin = url.origin().ascii_serialization();
    let resp = browser()
        .post(format!("{origin}/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .expect("the consent page answers");
    assert_eq!(resp.status().as_u16(), 303, "consent redirects back");
    resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_four_verdicts_and_the_revoked_channel_heals_through_its_link() {
    if support::skip() {
        return;
    }
    let cp = support::control_plane();
    let client = cp.client();
    let ns = support::test_namespace(&client, "demo").await;
    let kubeconfig = cp.kubeconfig();
    let mut demo = Demo::start(kubeconfig, &ns, cp.dir());

    let rows = demo.table().await;
    let verdict = |name: &str| {
        rows.iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
            .unwrap_or("(missing)")
            .to_owned()
    };
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(verdict("acme-facebook-page"), "Valid", "{rows:?}");
    assert_eq!(verdict("acme-support-inbox"), "Revoked", "{rows:?}");
    assert_eq!(verdict("acme-instagram"), "ScopesMissing", "{rows:?}");
    assert_eq!(verdict("acme-linkedin"), "Expiring", "{rows:?}");

    // The demo tells the user which link to open: the revoked connection's reauthUrl.
    demo.line_where("the end of the instructions", |l| {
        l.contains("Ctrl-C stops the demo")
    })
    .await;
    let conns: Api<ChannelConnection> = Api::namespaced(client.clone(), &ns);
    let link = conns
        .get("acme-support-inbox")
        .await
        .expect("connection")
        .status
        .and_then(|s| s.reauth_url)
        .expect("a reauthUrl on the revoked connection");
    assert!(
        demo.output().contains(&format!("  {link}\n")),
        "the link is printed on a line of its own\n{}",
        demo.output()
    );

    // `relink status`: 1 while something is broken, with the link; 0 for a healthy one.
    let (code, text) = status(kubeconfig, &["--namespace", &ns]).await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("✖ {ns}/acme-support-inbox")),
        "{text}"
    );
    assert!(
        text.contains(&format!("✔ {ns}/acme-facebook-page")),
        "{text}"
    );
    assert!(text.contains(&link), "{text}");
    assert!(text.contains("2 of 4 connections Ready."), "{text}");
    let (code, text) = status(kubeconfig, &["acme-facebook-page", "-n", &ns]).await;
    assert_eq!(code, 0, "{text}");
    let (code, text) = status(kubeconfig, &["acme-support-inbox", "-n", &ns]).await;
    assert_eq!(code, 1, "{text}");
    let (code, text) = status(kubeconfig, &["no-such-connection", "-n", &ns]).await;
    assert_eq!(code, 2, "{text}");

    // The person opens the link, clicks Allow, and lands on the operator's callback page.
    let (code, page) = open(&link).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Allow"), "the sandbox consent page: {page}");
    let callback = allow(&link).await;
    let (code, page) = open(&callback).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("connected again"), "{page}");

    // The demo notices and prints the table again with the connection Ready.
    demo.line_where("the verdict change", |l| {
        l.contains("acme-support-inbox: Revoked → Valid")
    })
    .await;
    let rows = demo.table().await;
    assert!(
        rows.contains(&("acme-support-inbox".to_owned(), "Valid".to_owned())),
        "{rows:?}"
    );
    let s = conns
        .get("acme-support-inbox")
        .await
        .expect("connection")
        .status
        .expect("status");
    let ready = s.condition(ConditionType::Ready).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Valid")
    );
    assert_eq!(s.reauth_url, None, "the link is withdrawn once healthy");
    let (code, text) = status(kubeconfig, &["acme-support-inbox", "-n", &ns]).await;
    assert_eq!(code, 0, "{text}");

    // Ctrl-C stops everything the demo started.
    let pid = demo.child.id().expect("demo still running");
    let sent = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await
        .expect("kill -INT");
    assert!(sent.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), demo.child.wait())
        .await
        .unwrap_or_else(|_| panic!("relink demo ignored Ctrl-C for 20 s\n{}", demo.output()))
        .expect("wait for relink demo");
    assert!(exit.success(), "{exit:?}\n{}", demo.output());
    // Give the reader task a moment to drain the last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output = demo.output();
    assert!(output.contains("Stopped."), "{output}");
    for prefix in ["sbx-at-", "sbx-rt-", "sbx-code-"] {
        assert!(
            !output.contains(prefix),
            "a token ({prefix}…) was printed\n{output}"
        );
    }
    // The callback port is closed again.
    let port = url::Url::parse(&callback)
        .ok()
        .and_then(|u| u.port())
        .expect("callback port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the callback listener is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_probe_tells_whether_the_api_answers() {
    if support::skip() {
        return;
    }
    let cp = support::control_plane();
    let probe = |kubeconfig: std::path::PathBuf| async move {
        tokio::process::Command::new(RELINK)
            .args(["demo", "--probe", "--kubeconfig"])
            .arg(kubeconfig)
            .output()
            .await
            .expect("run relink demo --probe")
    };
    let out = probe(cp.kubeconfig().to_owned()).await;
    assert!(out.status.success(), "{out:?}");

    // A cluster nobody listens on: a fast, clear no.
    let closed = crate::support::free_port();
    let text = std::fs::read_to_string(cp.kubeconfig()).expect("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server line")
        .to_owned();
    let dead = cp.dir().join("dead-kubeconfig");
    std::fs::write(
        &dead,
        text.replace(&server, &format!("https://127.0.0.1:{closed}")),
    )
    .expect("write kubeconfig");
    let started = std::time::Instant::now();
    let out = probe(dead).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not answer"), "{stderr}");
}
