//! Owners' notifications, end to end: the operator process sends real SMTP to a sink started
//! here and POSTs to an axum receiver; status, Events and both inboxes are read back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use relink::api::{ConditionType, LocalObjectRef};
use relink::sandbox::Mode;
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::fixtures::{Scenario, ScenarioBuilder, TestConnection, Validation};
use crate::support::{self, Operator};

const OWNER: &str = "owner@example.com";
const HOOK_KEY: &str = "hook-signing-key-for-tests";

// ---------------------------------------------------------------------------------------------
// A minimal SMTP sink: enough of RFC 5321 for lettre's plain transport.

#[derive(Clone, Debug)]
pub(crate) struct Mail {
    from: String,
    pub(crate) rcpt: Vec<String>,
    /// The DATA section as received (headers and MIME body), dot-unstuffed.
    data: String,
}

impl Mail {
    /// The `Subject` header, unfolded.
    pub(crate) fn subject(&self) -> String {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned()
    }

    /// Every MIME part's body, transfer-decoded, concatenated (plus the raw headers).
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for part in self.data.split("\r\n--") {
            let (head, body) = part.split_once("\r\n\r\n").unwrap_or((part, ""));
            out.push_str(head);
            out.push('\n');
            let lower = head.to_ascii_lowercase();
            if lower.contains("content-transfer-encoding: quoted-printable") {
                out.push_str(&decode_qp(body));
            } else if lower.contains("content-transfer-encoding: base64") {
                let compact: String = body.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact.trim_end_matches('-'))
                    .unwrap_or_default();
                out.push_str(&String::from_utf8_lossy(&bytes));
            } else {
                out.push_str(body);
            }
            out.push('\n');
        }
        out
    }
}

fn decode_qp(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) struct SmtpSink {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub(crate) async fn start(addr: &str) -> SmtpSink {
        let listener = TcpListener::bind(addr).await.expect("bind SMTP sink");
        let addr = listener.local_addr().expect("sink address");
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let store = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(sock, store).await;
                });
            }
        });
        SmtpSink { addr, mails, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub(crate) fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
            b"250 sink.test\r\n"
        } else if cmd.starts_with("MAIL FROM:") {
            from = line.trim_end()[10..].trim().to_owned();
            rcpt.clear();
            b"250 OK\r\n"
        } else if cmd.starts_with("RCPT TO:") {
            rcpt.push(
                line.trim_end()[8..]
                    .trim()
                    .trim_matches(['<', '>'])
                    .to_owned(),
            );
            b"250 OK\r\n"
        } else if cmd == "DATA" {
            w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).await? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            store.lock().unwrap().push(Mail {
                from: from.clone(),
                rcpt: std::mem::take(&mut rcpt),
                data,
            });
            b"250 queued\r\n"
        } else if cmd == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"250 OK\r\n"
        };
        w.write_all(reply).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// A webhook receiver.

#[derive(Clone, Debug)]
struct Hook {
    signature: Option<String>,
    body: Vec<u8>,
}

impl Hook {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

struct Receiver {
    addr: SocketAddr,
    hooks: Arc<Mutex<Vec<Hook>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
        async fn receive(
            State(hooks): State<Arc<Mutex<Vec<Hook>>>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            hooks.lock().unwrap().push(Hook {
                signature: headers
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: body.to_vec(),
            });
            StatusCode::NO_CONTENT
        }
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(hooks.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, hooks, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------

/// A scenario whose operator mails through the SMTP server at `smtp_url`.
pub(crate) fn mailing(prefix: &str, smtp_url: &str) -> ScenarioBuilder {
    Scenario::builder(prefix)
        .flag("--smtp-url", smtp_url)
        .flag("--smtp-from", "relink@example.com")
}

/// Provider `app`, token for `page-1`, connection `chan` (owners: owner@example.com), with a
/// signed webhook when `hook` is given; waits for the first verdict, Valid.
async fn channel(sc: &mut Scenario, hook: Option<&Receiver>) -> String {
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("chan-token", &[("access_token", &t.access_token)])
        .await;
    let mut spec = TestConnection::default()
        .secret("chan-token")
        .account("page-1")
        .requires(&["read"])
        .spec();
    if let Some(r) = hook {
        sc.secret("hook", &[("address", &r.url()), ("token", HOOK_KEY)])
            .await;
        spec.notify.webhook_secret_ref = Some(LocalObjectRef {
            name: "hook".into(),
        });
    }
    sc.apply_connection("chan", spec).await;
    sc.wait_ready_reason("chan", "Valid").await;
    t.access_token
}

/// Waits until a check asked for now has been handled.
async fn check_now(sc: &Scenario, name: &str) {
    let asked = sc.request_check(name).await;
    let api = sc.connections();
    support::eventually("requested check handled", Duration::from_secs(20), || {
        let api = api.clone();
        let asked = asked.clone();
        async move {
            let s = api.get(name).await.ok()?.status?;
            (s.last_handled_check_request.as_deref() == Some(asked.as_str())).then_some(())
        }
    })
    .await;
}

async fn wait_count<T>(what: &str, n: usize, f: impl Fn() -> Vec<T>) -> Vec<T> {
    support::eventually(what, Duration::from_secs(30), || {
        let v = f();
        async move { (v.len() >= n).then_some(v) }
    })
    .await
}

fn assert_signed(h: &Hook) {
    let sig = h.signature.as_deref().expect("X-Signature header");
    let hex = sig.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(&h.body);
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, want, "the signature is the HMAC-SHA256 of the body");
}

fn assert_no_token_in(sc: &Scenario, texts: &[String]) {
    for text in texts {
        for t in &sc.tokens {
            assert!(
                !text.contains(t.as_str()),
                "a token appears in a notification"
            );
        }
        for prefix in ["sbx-at-", "sbx-rt-", "sbx-code-"] {
            assert!(
                !text.contains(prefix),
                "something token-shaped ({prefix}) in a notification"
            );
        }
        assert!(
            !text.contains(HOOK_KEY),
            "the webhook key appears in a notification"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_told_once_and_recovery_too() {
    if support::skip() {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1:0").await;
    let receiver = Receiver::start().await;
    let mut sc = mailing("notify", &sink.url()).start().await;
    let token = channel(&mut sc, Some(&receiver)).await;
    assert!(
        sink.mails().is_empty(),
        "a healthy first check tells nobody"
    );
    assert!(receiver.hooks().is_empty());

    // Revoked: one email to the owner, one signed webhook.
    sc.sandbox.revoke(&token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let mails = wait_count("the problem email", 1, || sink.mails()).await;
    let hooks = wait_count("the problem webhook", 1, || receiver.hooks()).await;
    let mail = &mails[0];
    assert_eq!(mail.rcpt, [OWNER]);
    assert_eq!(mail.from, "<relink@example.com>");
    let subject = mail.subject();
    assert!(
        subject.contains("\"page-1 display\"") && subject.contains("log in again"),
        "subject: {subject}"
    );
    let text = mail.text();
    assert!(text.contains("text/plain") && text.contains("text/html"));
    assert!(
        text.contains(&format!("{}/chan", sc.ns)),
        "names the connection"
    );
    assert!(text.contains("page-1"), "names the account");
    assert!(
        text.contains("Re-authorize instead"),
        "says to re-authorize"
    );
    assert!(text.contains("Do not delete the connection"));
    let status = sc.status("chan").await;
    if let Some(url) = &status.reauth_url {
        assert!(
            text.contains(url.as_str()),
            "the email carries the reauth link"
        );
    }

    let hook = &hooks[0];
    assert_signed(hook);
    let v = hook.json();
    assert_eq!(v["namespace"], sc.ns.as_str());
    assert_eq!(v["name"], "chan");
    assert_eq!(v["provider"], "app");
    assert_eq!(v["account"], "page-1");
    assert_eq!(v["reason"], "Revoked");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["reauthUrl"], serde_json::json!(status.reauth_url));
    assert!(v["message"].as_str().unwrap().contains("log in again"));
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));

    let record = status.last_notification.clone().expect("recorded");
    assert_eq!(record.reason, "Revoked");
    assert_eq!(record.channels.as_deref(), Some("email,webhook"));
    sc.wait_event("chan", "Normal", "NotificationSent").await;

    // Still revoked at the next check: nothing new.
    check_now(&sc, "chan").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.mails().len(), 1, "one email per change, not per check");
    assert_eq!(receiver.hooks().len(), 1);

    // A restart reads the record back from the status: still nothing new.
    let mut outputs = vec![sc.operator.output()];
    sc.operator.stop().await;
    let argv: Vec<&str> = sc.flags.iter().map(String::as_str).collect();
    sc.operator = Operator::start(&argv).await;
    check_now(&sc, "chan").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.mails().len(), 1, "a restart sends nothing twice");
    assert_eq!(receiver.hooks().len(), 1);

    // A new token in the Secret: the channel recovers, one recovery email and webhook.
    let t2 = sc.issue("page-1", &["read"]);
    sc.secret("chan-token", &[("access_token", &t2.access_token)])
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    let mails = wait_count("the recovery email", 2, || sink.mails()).await;
    let hooks = wait_count("the recovery webhook", 2, || receiver.hooks()).await;
    assert!(
        mails[1].subject().contains("works again"),
        "{}",
        mails[1].subject()
    );
    assert_eq!(mails[1].rcpt, [OWNER]);
    assert_signed(&hooks[1]);
    assert_eq!(hooks[1].json()["reason"], "Valid");
    assert_eq!(hooks[1].json()["severity"], "info");
    let s = sc.status("chan").await;
    assert_eq!(s.last_notification.expect("recorded").reason, "Valid");

    // And a later healthy check says nothing more.
    check_now(&sc, "chan").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.mails().len(), 2);
    assert_eq!(receiver.hooks().len(), 2);

    let mut texts: Vec<String> = sink
        .mails()
        .iter()
        .map(|m| m.data.clone() + &m.text())
        .collect();
    texts.extend(
        receiver
            .hooks()
            .iter()
            .map(|h| String::from_utf8_lossy(&h.body).into_owned()),
    );
    outputs.push(sc.operator.output());
    assert_no_token_in(&sc, &texts);
    for out in &outputs {
        assert!(
            !out.contains(HOOK_KEY),
            "the webhook key appears in the operator output"
        );
        for t in &sc.tokens {
            assert!(
                !out.contains(t.as_str()),
                "a token appears in the operator output"
            );
        }
    }
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_tells_nobody() {
    if support::skip() {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1:0").await;
    let receiver = Receiver::start().await;
    // Even with reminders every second, an outage is not news.
    let mut sc = mailing("notify-outage", &sink.url())
        .flag("--reminder-interval", "1s")
        .start()
        .await;
    channel(&mut sc, Some(&receiver)).await;

    sc.sandbox.set_mode(Mode::Status { code: 503 });
    sc.sandbox.clear_calls();
    sc.request_check("chan").await;
    sc.wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    // The operator retries on its own (1s, 2s, ...): wait for several failed checks, counted
    // in the status (the sandbox sees a call before its check's status write lands).
    support::eventually("several failed checks", Duration::from_secs(30), || async {
        let written = sc.status("chan").await.consecutive_failures >= 3;
        (written && sc.sandbox.calls_for("page-1").len() >= 3).then_some(())
    })
    .await;
    let s = sc.status("chan").await;
    assert!(s.consecutive_failures >= 3, "{}", s.consecutive_failures);
    assert!(sink.mails().is_empty(), "a provider outage sends no email");
    assert!(
        receiver.hooks().is_empty(),
        "a provider outage sends no webhook"
    );
    assert!(s.last_notification.is_none());
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_server_down_then_delivered_later() {
    if support::skip() {
        return;
    }
    // A port with nothing listening (yet).
    let port = crate::support::free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let mut sc = mailing("notify-down", &url).start().await;
    let token = channel(&mut sc, None).await;

    sc.sandbox.revoke(&token);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    let warning = sc.wait_event("chan", "Warning", "NotificationFailed").await;
    assert!(warning.note.unwrap_or_default().contains("email"));
    // The verdict and the record were written first; delivery retries on its own backoff
    // (1s, 2s, 4s, 8s here), off the check path.
    assert!(
        s.last_notification.is_some(),
        "the news is recorded with the verdict, so it is told once"
    );

    let sink = SmtpSink::start(&format!("127.0.0.1:{port}")).await;
    let mails = wait_count("the delayed email", 1, || sink.mails()).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].rcpt, [OWNER]);
    assert!(mails[0].subject().contains("log in again"));
    let s = sc.status("chan").await;
    let record = s.last_notification.expect("recorded once delivered");
    assert_eq!(
        (record.reason.as_str(), record.channels.as_deref()),
        ("Revoked", Some("email"))
    );
    sc.wait_event("chan", "Normal", "NotificationSent").await;
    assert_no_token_in(&sc, &[mails[0].data.clone()]);
    sc.assert_no_token_leaked().await;
}

/// A userinfo endpoint that answers every token with HTTP 200, `invalid_token` and a 400 KB
/// `error_description` that repeats the token it was sent.
async fn echoing_provider() -> (String, tokio::task::JoinHandle<()>) {
    async fn userinfo(headers: HeaderMap) -> axum::Json<serde_json::Value> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start_matches("Bearer ")
            .to_owned();
        axum::Json(serde_json::json!({
            "error": "invalid_token",
            "error_description": format!("{} token {token} is revoked", "x".repeat(400_000)),
        }))
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/userinfo", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route("/userinfo", axum::routing::get(userinfo));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_that_echoes_the_token_is_clipped_scrubbed_and_told_once() {
    if support::skip() {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1:0").await;
    let mut sc = mailing("notify-huge", &sink.url()).start().await;
    let (url, _server) = echoing_provider().await;
    sc.provider_with(
        "echo",
        relink::api::ProviderEndpoints {
            userinfo_url: Some(url),
            ..Default::default()
        },
    )
    .await;
    let token = "tok-echoed-7f3a9c2e41";
    sc.tokens.push(token.to_owned());
    sc.secret("tok", &[("access_token", token)]).await;
    let chan = TestConnection::default()
        .provider("echo")
        .account("page-1")
        .requires(&["read"]);
    sc.apply_connection("chan", chan).await;

    let s = sc.wait_ready_reason("chan", "Revoked").await;
    for c in &s.conditions {
        assert!(
            c.message.len() <= 1100,
            "{} message is bounded ({} bytes)",
            c.type_,
            c.message.len()
        );
        assert!(
            !c.message.contains(token),
            "{} message is scrubbed",
            c.type_
        );
    }
    let ready = s.condition(ConditionType::Ready).expect("Ready");
    assert!(ready.message.contains("[redacted]") || ready.message.contains('…'));
    let mails = wait_count("one email", 1, || sink.mails()).await;

    // Later checks find nothing new to tell: still exactly one mail.
    check_now(&sc, "chan").await;
    check_now(&sc, "chan").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.mails().len(), 1, "told exactly once");
    let errors = sc.operator.output();
    assert!(
        !errors.contains("reconcile error"),
        "the status write was accepted: {errors}"
    );
    assert_no_token_in(&sc, &[mails[0].data.clone()]);
    sc.assert_no_token_leaked().await;
}

/// Two channels of the same owner broken by the same cause at about the same time: with a
/// batching window the owner gets one email listing both, each with its own link (they are not
/// Facebook Pages of one app, so one login would not heal both); each connection still records
/// its own notice and gets its own `NotificationSent` Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_broken_together_are_told_in_one_email() {
    if support::skip() {
        return;
    }
    let sink = SmtpSink::start("127.0.0.1:0").await;
    let mut sc = mailing("notify-group", &sink.url())
        .flag("--notification-batch-window", "10s")
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let mut tokens = Vec::new();
    for (name, account) in [("first", "page-1"), ("second", "page-2")] {
        let t = sc.issue(account, &["read"]);
        sc.secret(
            &format!("{name}-token"),
            &[("access_token", &t.access_token)],
        )
        .await;
        let chan = TestConnection::default()
            .secret(&format!("{name}-token"))
            .account(account)
            .requires(&["read"]);
        sc.apply_connection(name, chan).await;
        sc.wait_ready_reason(name, "Valid").await;
        tokens.push(t.access_token);
    }

    for t in &tokens {
        sc.sandbox.revoke(t);
    }
    sc.request_check("first").await;
    sc.request_check("second").await;
    let first = sc.wait_ready_reason("first", "Revoked").await;
    let second = sc.wait_ready_reason("second", "Revoked").await;
    sc.wait_event("first", "Normal", "NotificationSent").await;
    sc.wait_event("second", "Normal", "NotificationSent").await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "one email for both channels");
    let mail = &mails[0];
    assert_eq!(mail.rcpt, [OWNER]);
    assert!(
        mail.subject()
            .contains("2 channels need you to log in again"),
        "{}",
        mail.subject()
    );
    let text = mail.text();
    for (name, s) in [("first", &first), ("second", &second)] {
        assert!(text.contains(&format!("{}/{name}", sc.ns)), "names {name}");
        let link = s.reauth_url.as_deref().expect("a link");
        assert!(text.contains(link), "{name}'s own link");
        let record = s.last_notification.clone().expect("recorded");
        assert_eq!(
            (record.reason.as_str(), record.channels.as_deref()),
            ("Revoked", Some("email"))
        );
    }
    let note = sc
        .wait_event("second", "Normal", "NotificationSent")
        .await
        .note
        .unwrap_or_default();
    assert!(note.contains("in one message"), "{note}");
    assert_no_token_in(&sc, &[mail.data.clone() + &text]);
}
