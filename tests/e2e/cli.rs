//! `relink status NAME` and `relink check NAME` as a person runs them: the built binary with a
//! kubeconfig, against a valid and a revoked connection; and the same binary as a kubectl
//! plugin (`kubectl relink ...`) when a kubectl is installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

const RELINK: &str = env!("CARGO_BIN_EXE_relink");

/// What one run printed.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `program args…` with the control plane's kubeconfig (and `path_prefix` first on PATH).
async fn run(program: &Path, args: &[&str], path_prefix: Option<&Path>) -> Run {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("KUBECONFIG", support::control_plane().kubeconfig())
        .kill_on_drop(true);
    if let Some(dir) = path_prefix {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    }
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish in 90 s", program.display()))
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn relink(args: &[&str]) -> Run {
    run(Path::new(RELINK), args, None).await
}

/// A kubectl to try the plugin with: `$RELINK_KUBECTL`, else kubectl 1.27 of the Cloud SDK
/// (the one `scripts/demo` documents), else `kubectl` on PATH.
fn kubectl() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("RELINK_KUBECTL") {
        return Some(PathBuf::from(k));
    }
    let sdk = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.27");
    if sdk.is_file() {
        return Some(sdk.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

/// Whether a line of `text` starts with the words `words` (table rows, whatever the widths).
fn has_row(text: &str, words: &[&str]) -> bool {
    text.lines().any(|l| {
        l.split_whitespace()
            .take(words.len())
            .eq(words.iter().copied())
    })
}

/// Every value that follows `key=` in `text`.
fn values_after<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.match_indices(key)
        .map(|(i, _)| {
            text[i + key.len()..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_check_explain_one_connection() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("cli").start().await;
    sc.provider("app", Validation::Introspection).await;
    let good = sc.issue("page-1", &["read", "write"]);
    sc.secret("good-token", &[("access_token", &good.access_token)])
        .await;
    sc.apply_connection(
        "good",
        TestConnection::default()
            .secret("good-token")
            .account("page-1")
            .requires(&["read", "write"]),
    )
    .await;
    let bad = sc.issue("page-2", &["read", "write"]);
    sc.sandbox.revoke(&bad.access_token);
    sc.secret("bad-token", &[("access_token", &bad.access_token)])
        .await;
    sc.apply_connection(
        "bad",
        TestConnection::default()
            .secret("bad-token")
            .account("page-2")
            .requires(&["read", "write"]),
    )
    .await;
    sc.wait_ready_reason("good", "Valid").await;
    let link = sc
        .wait_ready_reason("bad", "Revoked")
        .await
        .reauth_url
        .expect("a re-authorization link for the revoked connection");
    sc.wait_event("bad", "Warning", "Revoked").await;
    let ns = sc.ns.clone();
    let mut printed = String::new();

    // The revoked one: every condition, the scopes, the Event, the link and what to do; exit 1.
    let out = relink(&["status", "bad", "-n", &ns]).await;
    assert_eq!(out.code, 1, "{out}");
    for want in [
        "Name:                 bad\n",
        &format!("Namespace:            {ns}\n"),
        "Status:               ✖ Revoked (Ready False since ",
        "Expected account:     page-2 display (id page-2)\n",
        "Scopes required:      read, write\n",
        "Events (last ",
        "re-authorize the channel",
        &format!("Re-authorization link:\n  {link}\n"),
        "what to do: open the link above in a browser and log in as someone who manages page-2 display",
    ] {
        assert!(out.stdout.contains(want), "missing {want:?}: {out}");
    }
    for row in [
        &["Ready", "False", "Revoked"][..],
        &["TokenValid", "False", "Revoked"],
        &["ScopesGranted"],
        &["Stalled", "True", "Revoked"],
        &["Reconciling", "False"],
        &["Warning", "Revoked"],
    ] {
        assert!(has_row(&out.stdout, row), "missing row {row:?}: {out}");
    }
    printed.push_str(&out.stdout);

    // The valid one: exit 0, the account and scopes the provider reported, nothing to do.
    let out = relink(&["status", "good", "-n", &ns]).await;
    assert_eq!(out.code, 0, "{out}");
    for want in [
        "Status:               ✔ Valid (Ready True since ",
        "Account:              page-1 name (id page-1)\n",
        "Scopes granted:       read, write\n",
        "Scopes missing:       -\n",
        "\nnothing to do: the channel works\n",
    ] {
        assert!(out.stdout.contains(want), "missing {want:?}: {out}");
    }
    assert!(has_row(&out.stdout, &["Ready", "True", "Valid"]), "{out}");
    assert!(!out.stdout.contains("Re-authorization link"), "{out}");
    printed.push_str(&out.stdout);

    // Without NAME the one-line summary is unchanged: one of two Ready, exit 1.
    let out = relink(&["status", "-n", &ns]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("1 of 2 connections Ready."), "{out}");
    printed.push_str(&out.stdout);

    // Only the broken ones, as JSON for scripts; a label selector narrows the list.
    let out = relink(&["status", "-n", &ns, "--only-broken", "-o", "json"]).await;
    assert_eq!(out.code, 1, "{out}");
    let items: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let items = items.as_array().expect("an array");
    assert_eq!(items.len(), 1, "{out}");
    assert_eq!(items[0]["name"], "bad");
    assert_eq!(items[0]["reason"], "Revoked");
    assert_eq!(items[0]["ready"], false);
    assert_eq!(items[0]["reauthUrl"], link.as_str());
    let out = relink(&["status", "-n", &ns, "-l", "team=nobody"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("No ChannelConnections"), "{out}");
    let out = relink(&["status", "-A", "--only-broken", "-l", "team=nobody"]).await;
    assert_eq!(out.code, 0, "{out}");

    // A name that does not exist: cannot tell, exit 2.
    let out = relink(&["status", "nope", "-n", &ns]).await;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "channelconnection nope not found in namespace {ns}"
        )),
        "{out}"
    );

    // `check`: exactly one more provider call, the request echoed, the fresh status, exit 0.
    let calls = sc.sandbox.calls_for("page-1").len();
    let out = relink(&["check", "good", "-n", &ns, "--timeout", "30s"]).await;
    assert_eq!(out.code, 0, "{out}");
    let asked = values_after(&out.stdout, "relink.dev/check-requested-at=");
    let echoed = values_after(&out.stdout, "status.lastHandledCheckRequest=");
    assert_eq!(asked.len(), 1, "{out}");
    assert_eq!(asked, echoed, "{out}");
    let status = sc.status("good").await;
    assert_eq!(
        status.last_handled_check_request.as_deref(),
        Some(asked[0]),
        "the operator echoed the request"
    );
    assert!(
        out.stdout
            .contains(&format!("Check request:        {} (handled)\n", asked[0])),
        "{out}"
    );
    assert!(out.stdout.contains("✔ Valid"), "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sc.sandbox.calls_for("page-1").len(),
        calls + 1,
        "one check, one provider call"
    );
    printed.push_str(&out.stdout);

    // `check` of the revoked one: checked again, still revoked, exit 1.
    let calls = sc.sandbox.calls_for("page-2").len();
    let out = relink(&["check", "bad", "-n", &ns]).await;
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("✖ Revoked"), "{out}");
    assert!(out.stdout.contains(&link), "the link is unchanged: {out}");
    assert_eq!(sc.sandbox.calls_for("page-2").len(), calls + 1);
    printed.push_str(&out.stdout);

    // `--no-wait` only asks.
    let out = relink(&["check", "good", "-n", &ns, "--no-wait"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Not waiting."), "{out}");

    for t in &sc.tokens {
        assert!(!printed.contains(t.as_str()), "a token was printed");
    }
    assert!(!printed.contains("sbx-at-") && !printed.contains("sbx-rt-"));
    sc.assert_no_token_leaked().await;

    // The same binary as a kubectl plugin.
    let Some(kubectl) = kubectl() else {
        eprintln!("[e2e] no kubectl found: the kubectl plugin path was not tried");
        return;
    };
    let dir = support::control_plane().dir().join(&ns).join("plugins");
    std::fs::create_dir_all(&dir).expect("create plugin dir");
    std::os::unix::fs::symlink(RELINK, dir.join("kubectl-relink")).expect("symlink the plugin");
    let out = run(
        &kubectl,
        &["relink", "status", "bad", "-n", &ns],
        Some(&dir),
    )
    .await;
    assert_eq!(out.code, 1, "kubectl relink status: {out}");
    assert!(out.stdout.contains(&link), "{out}");
    let out = run(
        &kubectl,
        &["relink", "check", "good", "-n", &ns, "--timeout", "30s"],
        Some(&dir),
    )
    .await;
    assert_eq!(out.code, 0, "kubectl relink check: {out}");
    assert!(
        out.stdout.contains("status.lastHandledCheckRequest="),
        "{out}"
    );
    eprintln!("[e2e] kubectl plugin works with {}", kubectl.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauth_publishes_a_link_for_a_healthy_connection_until_someone_logs_in() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("cli-reauth").callback().start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "a healthy connection has no link");
    let ns = sc.ns.clone();

    let out = relink(&["reauth", "chan", "-n", &ns, "--timeout", "30s"]).await;
    assert_eq!(out.code, 0, "{out}");
    let s = sc.status("chan").await;
    let link = s
        .reauth_url
        .clone()
        .expect("a link while the request is pending");
    assert!(out.stdout.contains(&link), "the link is printed: {out}");
    let ready = s.condition(relink::api::ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Valid")
    );
    sc.wait_event("chan", "Normal", "ReauthorizationRequested")
        .await;

    // The link stays across checks until someone logs in.
    sc.request_check("chan").await;
    let asked = s.pending_reauthorization.clone().expect("pending").value;
    support::eventually(
        "a later check keeps the link",
        Duration::from_secs(20),
        || async {
            let s = sc.status("chan").await;
            (s.last_handled_check_request.is_some()
                && s.reauth_url.as_deref() == Some(link.as_str()))
            .then_some(())
        },
    )
    .await;

    // The admin logs in: the token changes, the request is done and the link withdrawn.
    let callback = sc.consent(&link, "page-1", true).await;
    let (status, page) = crate::fixtures::open(&callback).await;
    assert_eq!(status, 200, "{page}");
    let s = support::eventually("the request completed", Duration::from_secs(30), || async {
        let s = sc.status("chan").await;
        (s.last_handled_reauthorize_request.as_deref() == Some(asked.as_str())).then_some(s)
    })
    .await;
    assert_eq!(s.reauth_url, None, "the link is withdrawn after the login");
    assert_eq!(s.pending_reauthorization, None);
    let secret: k8s_openapi::api::core::v1::Secret = kube::Api::namespaced(sc.client.clone(), &ns)
        .get("tok")
        .await
        .unwrap();
    let now_token = String::from_utf8_lossy(&secret.data.unwrap()["access_token"].0).into_owned();
    assert_ne!(now_token, t.access_token, "the login wrote a new token");
    sc.tokens.push(now_token);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_renews_a_token_far_from_expiry_and_shows_the_verdict() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("cli-refresh").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    let refresh = t
        .refresh_token
        .clone()
        .expect("the sandbox issues a refresh token");
    sc.secret(
        "tok",
        &[
            ("access_token", &t.access_token),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    let ns = sc.ns.clone();

    let out = relink(&["refresh", "chan", "-n", &ns, "--timeout", "30s"]).await;
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("Refresh requested"), "{out}");
    assert!(out.stdout.contains("✔ Valid"), "{out}");
    let s = sc.status("chan").await;
    assert!(
        s.last_handled_refresh_request.is_some(),
        "the request is echoed"
    );
    assert!(s.last_refresh_time.is_some(), "the token was refreshed");
    let secret: k8s_openapi::api::core::v1::Secret = kube::Api::namespaced(sc.client.clone(), &ns)
        .get("tok")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    let now_token = String::from_utf8_lossy(&data["access_token"].0).into_owned();
    assert_ne!(now_token, t.access_token, "a new access token was written");
    sc.tokens.push(now_token);
    sc.tokens
        .push(String::from_utf8_lossy(&data["refresh_token"].0).into_owned());
    sc.assert_no_token_leaked().await;
}
