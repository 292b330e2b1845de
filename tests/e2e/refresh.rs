//! Refresh under concurrency, conflicts and crashes, against a sandbox that rotates refresh
//! tokens and (where the test says) revokes the whole token family when a spent refresh token
//! is presented again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use relink::api::ConditionType;
use relink::sandbox::{Grant, SandboxConfig};

use crate::fixtures::TestConnection;
use crate::fixtures::{self, Scenario, Validation, operator_args};
use crate::support::{self, Operator};

/// A sandbox with rotation and reuse detection, as X, TikTok or Microsoft Entra behave.
fn rotating() -> SandboxConfig {
    SandboxConfig {
        reuse_detection: true,
        ..SandboxConfig::default()
    }
}

async fn start(prefix: &str, config: SandboxConfig, args: &[(&str, &str)]) -> Scenario {
    // Long enough for the answers the tests hold back at the provider.
    let builder = Scenario::builder(prefix)
        .flag("--provider-timeout", "10s")
        .sandbox(config);
    let sc = args
        .iter()
        .fold(builder, |b, (flag, value)| b.flag(flag, value))
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    sc
}

/// A token for `account` whose Secret says it expires in 10 minutes: due for refresh at once.
async fn due_secret(sc: &mut Scenario, secret: &str, account: &str) -> (String, String) {
    let t = sc.sandbox.issue(Grant {
        account_id: account.into(),
        account_name: format!("{account} name"),
        scopes: vec!["read".into()],
        expires_in_secs: None,
        refreshable: true,
    });
    let rt = t.refresh_token.clone().expect("refreshable");
    sc.tokens.extend([t.access_token.clone(), rt.clone()]);
    let soon = (jiff::Timestamp::now().as_second() + 600).to_string();
    sc.secret(
        secret,
        &[
            ("access_token", &t.access_token),
            ("refresh_token", &rt),
            ("expires_at", &soon),
            ("other", "x"),
        ],
    )
    .await;
    (t.access_token, rt)
}

async fn secret_data(sc: &Scenario, name: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get(name)
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// Changes only an unrelated key of the Secret, as another tool writing it would.
async fn touch_other_key(sc: &Scenario, name: &str, value: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"data": {"other": b64}})),
        )
        .await
        .expect("patch other key");
}

/// Refreshes with `rt` at the sandbox as another client would; returns the answer's status and
/// its (access, refresh) tokens.
async fn refresh_at_sandbox(sc: &Scenario, rt: &str) -> (u16, Option<(String, String)>) {
    let resp = fixtures::browser()
        .post(format!("{}/oauth/token", sc.sandbox.base_url()))
        .basic_auth("relink-sandbox", Some("sandbox-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)])
        .send()
        .await
        .expect("sandbox answers");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let pair = body["access_token"]
        .as_str()
        .zip(body["refresh_token"].as_str());
    (status, pair.map(|(a, r)| (a.to_owned(), r.to_owned())))
}

/// The refresh token now in the Secret is the live one: a refresh with it is accepted.
async fn assert_secret_refresh_token_works(sc: &mut Scenario, secret: &str) {
    let data = secret_data(sc, secret).await;
    sc.tokens
        .extend([data["access_token"].clone(), data["refresh_token"].clone()]);
    let (status, pair) = refresh_at_sandbox(sc, &data["refresh_token"]).await;
    assert_eq!(status, 200, "the Secret's refresh token is the current one");
    let (a, r) = pair.expect("tokens");
    sc.tokens.extend([a, r]);
}

async fn wait_held(sc: &Scenario, n: usize) {
    support::eventually(
        &format!("{n} refresh answer(s) held at the provider"),
        Duration::from_secs(30),
        || async { (sc.sandbox.held_refreshes() >= n).then_some(()) },
    )
    .await;
}

async fn wait_refreshed(sc: &Scenario, name: &str) -> relink::api::ChannelConnectionStatus {
    support::eventually(
        &format!("{name} refreshed and Valid"),
        Duration::from_secs(40),
        || async {
            let s = sc.status(name).await;
            let valid = s
                .condition(ConditionType::Ready)
                .is_some_and(|c| c.reason == "Valid");
            (valid && s.last_refresh_time.is_some()).then_some(s)
        },
    )
    .await
}

fn reasons(events: &[k8s_openapi::api::events::v1::Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_on_one_secret_refresh_it_once() {
    if support::skip() {
        return;
    }
    let mut sc = start("shared", rotating(), &[]).await;
    let (_, rt) = due_secret(&mut sc, "tok", "page-1").await;
    // The provider holds its answer, so both connections are due while the refresh is open.
    sc.sandbox.hold_refreshes();
    sc.apply_connection("page", TestConnection::on("page-1", &["read"]))
        .await;
    sc.apply_connection("insta", TestConnection::on("page-1", &["read"]))
        .await;
    wait_held(&sc, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sc.sandbox.held_refreshes(), 1, "the other connection waits");
    sc.sandbox.release_refreshes();

    let a = wait_refreshed(&sc, "page").await;
    let b = wait_refreshed(&sc, "insta").await;
    assert!(a.last_refresh_time.is_some() && b.last_refresh_time.is_some());
    assert_eq!(
        sc.sandbox.refresh_calls_for("page-1"),
        1,
        "exactly one refresh call for the Secret"
    );
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);
    let data = secret_data(&sc, "tok").await;
    assert_ne!(
        data["refresh_token"], rt,
        "the rotated refresh token is stored"
    );
    assert_eq!(data["other"], "x", "other keys untouched");
    // The connection that refreshed says so; the other one used its result.
    let refreshed_events = [
        reasons(&sc.events("page").await),
        reasons(&sc.events("insta").await),
    ]
    .iter()
    .map(|r| r.iter().filter(|r| *r == "TokenRefreshed").count())
    .sum::<usize>();
    assert_eq!(refreshed_events, 1, "one TokenRefreshed Event");
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_conflict_after_the_answer_keeps_the_rotated_tokens() {
    if support::skip() {
        return;
    }
    let mut sc = start("conflict", rotating(), &[]).await;
    let (at, rt) = due_secret(&mut sc, "tok", "page-1").await;
    sc.sandbox.hold_refreshes();
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    // The provider has rotated and holds the answer; meanwhile another tool changes the Secret.
    wait_held(&sc, 1).await;
    touch_other_key(&sc, "tok", "y").await;
    sc.sandbox.release_refreshes();

    wait_refreshed(&sc, "chan").await;
    let data = secret_data(&sc, "tok").await;
    assert_ne!(data["access_token"], at, "new access token written");
    assert_ne!(data["refresh_token"], rt, "rotated refresh token written");
    assert_eq!(data["other"], "y", "the other writer's change is kept");
    assert!(
        sc.operator
            .output()
            .contains("the Secret changed while refreshing"),
        "the conflict was met and handled"
    );
    assert_eq!(sc.sandbox.refresh_calls_for("page-1"), 1);
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_provider_answered_recovers_within_the_reuse_grace() {
    if support::skip() {
        return;
    }
    // Like Okta's grace period or Auth0's reuse interval: a spent refresh token still works
    // for a while, so a crash between the provider's answer and the write is survivable.
    let config = SandboxConfig {
        reuse_grace: Duration::from_secs(120),
        ..rotating()
    };
    let mut sc = start("sigkill", config, &[]).await;
    let (_, rt) = due_secret(&mut sc, "tok", "page-1").await;
    sc.sandbox.hold_refreshes();
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    wait_held(&sc, 1).await;
    // The provider has rotated the refresh token; the operator dies before writing the answer.
    sc.operator.kill().await;
    sc.sandbox.release_refreshes();
    assert_eq!(
        secret_data(&sc, "tok").await["refresh_token"],
        rt,
        "what is left: the Secret holds the spent refresh token"
    );

    let args = fixtures::with_flag(operator_args(&sc.ns), "--provider-timeout", "10s");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sc.operator = Operator::start(&refs).await;
    let s = wait_refreshed(&sc, "chan").await;
    assert_eq!(s.condition(ConditionType::Stalled).unwrap().status, "False");
    assert_eq!(sc.sandbox.refresh_calls_for("page-1"), 2);
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_handover_during_a_refresh_storm_revokes_no_token_family() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("handover")
        .flag("--provider-timeout", "10s")
        .switch("--leader-elect")
        .flag("--lease-duration", "4s")
        .sandbox(rotating())
        .start()
        .await;
    let refs: Vec<&str> = sc.flags.iter().map(String::as_str).collect();
    let mut other = Operator::start(&refs).await;
    const LEADING: &str = "leading: starting the controller";
    support::eventually("one leader", Duration::from_secs(30), || async {
        [sc.operator.output(), other.output()]
            .iter()
            .any(|o| o.contains(LEADING))
            .then_some(())
    })
    .await;
    sc.provider("app", Validation::Introspection).await;
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    for n in &names {
        due_secret(&mut sc, &format!("{n}-tok"), &format!("acct-{n}")).await;
    }
    // The storm: every connection due at once, the provider holding its answers.
    sc.sandbox.hold_refreshes();
    for n in &names {
        sc.apply_connection(
            n,
            TestConnection::default()
                .secret(&format!("{n}-tok"))
                .account(&format!("acct-{n}"))
                .requires(&["read"]),
        )
        .await;
    }
    wait_held(&sc, 1).await;
    let first_leads = sc.operator.output().contains(LEADING);
    let (leader, standby) = if first_leads {
        (&mut sc.operator, &mut other)
    } else {
        (&mut other, &mut sc.operator)
    };
    // A rolling update: SIGTERM to the leader while answers are in flight.
    let sandbox = sc.sandbox.clone();
    let (status, ()) = tokio::join!(leader.terminate(), async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sandbox.release_refreshes();
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    standby
        .wait_for_output(LEADING, Duration::from_secs(30))
        .await;

    for n in &names {
        wait_refreshed(&sc, n).await;
    }
    assert_eq!(
        sc.sandbox.families_revoked_for_reuse(),
        0,
        "no refresh token was used twice"
    );
    for n in &names {
        assert_eq!(
            sc.sandbox.refresh_calls_for(&format!("acct-{n}")),
            1,
            "{n}: one refresh across both operators"
        );
        assert_secret_refresh_token_works(&mut sc, &format!("{n}-tok")).await;
    }
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_racing_a_concurrent_refresh_is_no_false_alarm() {
    if support::skip() {
        return;
    }
    // Any connection attempt to this "SMTP server" would be a mail.
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_url = format!("smtp://{}", smtp.local_addr().unwrap());
    let mails = Arc::new(AtomicUsize::new(0));
    let counter = mails.clone();
    let sink = tokio::spawn(async move {
        while smtp.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // No reuse detection here: the other client's refresh leaves the family alive.
    let mut sc = start(
        "racing",
        SandboxConfig::default(),
        &[
            ("--smtp-url", &smtp_url),
            ("--smtp-from", "relink@example.com"),
        ],
    )
    .await;
    let (_, rt1) = due_secret(&mut sc, "tok", "page-1").await;
    // Another client has just refreshed with the same refresh token; its write lands late.
    let (status, pair) = refresh_at_sandbox(&sc, &rt1).await;
    assert_eq!(status, 200);
    let (at2, rt2) = pair.expect("rotated pair");
    sc.tokens.extend([at2.clone(), rt2.clone()]);
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    support::eventually(
        "the operator's refresh refused",
        Duration::from_secs(30),
        || async {
            sc.sandbox
                .calls_for("page-1")
                .iter()
                .any(|c| c.path == "/oauth/token" && c.status == 400)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let soon = (jiff::Timestamp::now().as_second() + 3600).to_string();
    sc.secret(
        "tok",
        &[
            ("access_token", &at2),
            ("refresh_token", &rt2),
            ("expires_at", &soon),
            ("other", "x"),
        ],
    )
    .await;

    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.condition(ConditionType::Stalled).unwrap().status, "False");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let history = reasons(&sc.events("chan").await);
    assert!(
        !history
            .iter()
            .any(|r| r == "RefreshFailed" || r == "NotificationSent" || r == "NotificationFailed"),
        "{history:?}"
    );
    assert_eq!(mails.load(Ordering::Relaxed), 0, "no mail");
    assert_eq!(sc.status("chan").await.reauth_url, None);
    sink.abort();
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_newer_token_from_another_writer_is_kept() {
    if support::skip() {
        return;
    }
    let mut sc = start("theirs", rotating(), &[]).await;
    let hour = |account: &str, secs: u64| Grant {
        account_id: account.into(),
        account_name: format!("{account} name"),
        scopes: vec!["read".into()],
        expires_in_secs: Some(secs),
        refreshable: true,
    };
    let t = sc.sandbox.issue(hour("page-1", 3600));
    let rt = t.refresh_token.clone().unwrap();
    sc.tokens.extend([t.access_token.clone(), rt.clone()]);
    let soon = (jiff::Timestamp::now().as_second() + 600).to_string();
    sc.secret(
        "tok",
        &[
            ("access_token", &t.access_token),
            ("refresh_token", &rt),
            ("expires_at", &soon),
        ],
    )
    .await;
    sc.sandbox.hold_refreshes();
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    wait_held(&sc, 1).await;
    // Meanwhile a person logs in again elsewhere: a new grant, valid for longer than the
    // answer relink is about to get.
    let theirs = sc.sandbox.issue(hour("page-1", 7200));
    let their_rt = theirs.refresh_token.clone().unwrap();
    sc.tokens
        .extend([theirs.access_token.clone(), their_rt.clone()]);
    let their_exp = theirs.expires_at.unwrap().to_string();
    sc.secret(
        "tok",
        &[
            ("access_token", &theirs.access_token),
            ("refresh_token", &their_rt),
            ("expires_at", &their_exp),
        ],
    )
    .await;
    sc.sandbox.release_refreshes();

    let e = sc.wait_event("chan", "Normal", "TokenWriteConflict").await;
    assert!(
        e.note
            .as_deref()
            .unwrap_or_default()
            .contains("their tokens"),
        "{e:?}"
    );
    sc.wait_ready_reason("chan", "Valid").await;
    let data = secret_data(&sc, "tok").await;
    assert_eq!(
        data["access_token"], theirs.access_token,
        "the newer tokens stay"
    );
    assert_eq!(data["refresh_token"], their_rt);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_failing_while_the_token_works_is_reported_and_backs_off() {
    if support::skip() {
        return;
    }
    let port = support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut sc = start("failing", rotating(), &[("--metrics-addr", &metrics)]).await;
    let (at, rt) = due_secret(&mut sc, "tok", "page-1").await;
    // First a healthy connection with nothing to refresh (no expiry recorded).
    sc.secret("tok", &[("access_token", &at), ("refresh_token", &rt)])
        .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;

    // Then the token nears its expiry while the token endpoint is down (checks still work).
    sc.sandbox
        .set_refresh_mode(Some(relink::sandbox::Mode::Status { code: 503 }));
    let soon = (jiff::Timestamp::now().as_second() + 600).to_string();
    sc.secret(
        "tok",
        &[
            ("access_token", &at),
            ("refresh_token", &rt),
            ("expires_at", &soon),
        ],
    )
    .await;
    let s = sc
        .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    let message = &s.condition(ConditionType::Reconciling).unwrap().message;
    assert!(
        message.contains("refreshing it has failed for"),
        "{message}"
    );
    assert_eq!(
        s.condition(ConditionType::Ready).unwrap().reason,
        "Valid",
        "a token that works stays Ready"
    );
    let (_, text) = fixtures::open(&format!("http://{metrics}/metrics")).await;
    assert!(
        text.contains("relink_refresh_failing_since_timestamp_seconds{"),
        "{text}"
    );

    // Backoff: tries spread out (1 s, 2 s, 4 s, ... from --retry-base 1s), never a storm.
    let before = sc.sandbox.refresh_calls_for("page-1");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let tries = sc.sandbox.refresh_calls_for("page-1") - before;
    assert!(tries <= 4, "{tries} refresh attempts in 6 s");
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);

    // The provider recovers: refreshed, the report and the series go away.
    sc.sandbox.set_refresh_mode(None);
    wait_refreshed(&sc, "chan").await;
    sc.wait_condition("chan", ConditionType::Reconciling, "Valid")
        .await;
    let (_, text) = fixtures::open(&format!("http://{metrics}/metrics")).await;
    assert!(
        !text.contains("relink_refresh_failing_since_timestamp_seconds{"),
        "{text}"
    );
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_refreshes_an_idle_refresh_token() {
    if support::skip() {
        return;
    }
    let mut sc = start("keepalive", rotating(), &[]).await;
    let (at, rt) = due_secret(&mut sc, "tok", "page-1").await;
    // No expiry recorded: the access token never needs a refresh.
    sc.secret("tok", &[("access_token", &at), ("refresh_token", &rt)])
        .await;
    let mut spec = TestConnection::on("page-1", &["read"]).spec();
    spec.refresh.keep_alive = Some("720h".into());
    sc.apply_connection("chan", spec).await;
    sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(
        sc.sandbox.refresh_calls_for("page-1"),
        0,
        "a new connection is not refreshed at once"
    );

    // 31 days since the last refresh: the next check refreshes to keep the grant alive. (The
    // check time moves too: the operator trusts the status it wrote itself until the cache
    // shows a later check.)
    let now = jiff::Timestamp::now();
    let month_ago = now - jiff::SignedDuration::from_hours(31 * 24);
    let status = serde_json::json!({"status": {
        "lastRefreshTime": month_ago.to_string(),
        "lastCheckTime": now.to_string(),
    }});
    sc.connections()
        .patch_status("chan", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    sc.request_check("chan").await;
    let s = support::eventually("a keep-alive refresh", Duration::from_secs(30), || async {
        let s = sc.status("chan").await;
        s.last_refresh_time
            .as_ref()
            .is_some_and(|t| t.0 > month_ago + jiff::SignedDuration::from_hours(24))
            .then_some(s)
    })
    .await;
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "Valid");
    assert_eq!(sc.sandbox.refresh_calls_for("page-1"), 1);
    let data = secret_data(&sc, "tok").await;
    assert_ne!(data["refresh_token"], rt, "rotated and stored");
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_a_refresh_that_got_its_answer_before_exiting() {
    if support::skip() {
        return;
    }
    let mut sc = start("sigterm", rotating(), &[]).await;
    let (at, rt) = due_secret(&mut sc, "tok", "page-1").await;
    sc.sandbox.hold_refreshes();
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    wait_held(&sc, 1).await;
    // SIGTERM arrives while the answer is on its way; it arrives a moment later.
    let sandbox = sc.sandbox.clone();
    let (status, ()) = tokio::join!(sc.operator.terminate(), async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sandbox.release_refreshes();
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}"
    );
    let data = secret_data(&sc, "tok").await;
    assert_ne!(
        data["access_token"], at,
        "written before the process exited"
    );
    assert_ne!(data["refresh_token"], rt);
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_provider_answered_without_a_grace_period_needs_a_login() {
    if support::skip() {
        return;
    }
    // What docs/refresh.md says a hard crash leaves with a provider that revokes the family on
    // reuse and allows no grace: the spent refresh token, then a login.
    let mut sc = start("sigkill-nograce", rotating(), &[]).await;
    let (_, rt) = due_secret(&mut sc, "tok", "page-1").await;
    sc.sandbox.hold_refreshes();
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    wait_held(&sc, 1).await;
    sc.operator.kill().await;
    sc.sandbox.release_refreshes();
    assert_eq!(secret_data(&sc, "tok").await["refresh_token"], rt);

    let args = fixtures::with_flag(operator_args(&sc.ns), "--provider-timeout", "10s");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sc.operator = Operator::start(&refs).await;
    // The spent refresh token presented again: the provider revokes the grant (its access
    // tokens too), and a person is asked to log in.
    let s = support::eventually("a login asked for", Duration::from_secs(40), || async {
        let s = sc.status("chan").await;
        let stalled = s.condition(ConditionType::Stalled)?.status == "True";
        (stalled && s.reauth_url.is_some()).then_some(s.clone())
    })
    .await;
    assert_eq!(
        s.condition(ConditionType::Ready).unwrap().reason,
        "RefreshFailed"
    );
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 1);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_whose_refresh_meets_an_outage_is_no_alarm() {
    if support::skip() {
        return;
    }
    let mut sc = start("expired-outage", rotating(), &[]).await;
    let (at, rt) = due_secret(&mut sc, "tok", "page-1").await;
    // The access token is dead and the token endpoint is down: nobody must be told to log in.
    let past = jiff::Timestamp::now().as_second() - 60;
    sc.sandbox.set_expires_at(&at, Some(past));
    sc.sandbox
        .set_refresh_mode(Some(relink::sandbox::Mode::Status { code: 503 }));
    sc.secret(
        "tok",
        &[
            ("access_token", &at),
            ("refresh_token", &rt),
            ("expires_at", &past.to_string()),
        ],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = sc
        .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    assert_ne!(
        s.condition(ConditionType::Stalled)
            .map(|c| c.status.as_str()),
        Some("True")
    );
    let history = reasons(&sc.events("chan").await);
    assert!(
        !history.iter().any(|r| r == "Expired" || r == "Revoked"),
        "{history:?}"
    );

    // The endpoint is back: renewed without anyone.
    sc.sandbox.set_refresh_mode(None);
    wait_refreshed(&sc, "chan").await;
    assert_eq!(sc.sandbox.families_revoked_for_reuse(), 0);
    assert_secret_refresh_token_works(&mut sc, "tok").await;
    sc.assert_no_token_leaked().await;
}
