//! One tenant's objects or one provider's answers never stop, flood or starve the operator:
//! out-of-range specs, huge waits from providers, a hanging provider next to a healthy one,
//! and a rejected application with many connections.

use std::time::Duration;

use kube::api::{Patch, PatchParams, PostParams};
use relink::api::{ChannelConnection, ConditionType, ProviderEndpoints};
use relink::sandbox::Mode;
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

/// The object from the issue: an interval no timestamp can hold.
const HUGE: &str = "99999999999h";

fn seconds_between(a: &jiff::Timestamp, b: &jiff::Timestamp) -> i64 {
    b.as_second() - a.as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_durations_are_refused_and_everyone_else_keeps_being_checked() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("hostile-spec").start().await;
    sc.provider("app", Validation::Introspection).await;
    let good = sc.issue("page-1", &["read"]);
    sc.secret("good-token", &[("access_token", &good.access_token)])
        .await;
    sc.apply_connection(
        "good",
        TestConnection::default()
            .secret("good-token")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    sc.wait_ready_reason("good", "Valid").await;

    let bad = sc.issue("page-2", &["read"]);
    sc.secret("bad-token", &[("access_token", &bad.access_token)])
        .await;
    sc.sandbox.clear_calls();
    // Each out of range in its own field, one just past the documented maximum.
    let cases = [
        (
            "huge",
            HUGE,
            "24h",
            None,
            "spec.checkInterval",
            "1m to 168h",
        ),
        (
            "past-max",
            "168h1m",
            "24h",
            None,
            "spec.checkInterval",
            "1m to 168h",
        ),
        (
            "before",
            "15m",
            "2161h",
            None,
            "spec.refresh.before",
            "0s to 2160h",
        ),
        (
            "max-age",
            "15m",
            "24h",
            Some("9000h"),
            "spec.refresh.maxAge",
            "1h to 8784h",
        ),
    ];
    for (name, interval, before, max_age, _, _) in &cases {
        let mut spec = TestConnection::default()
            .secret("bad-token")
            .account("page-2")
            .requires(&["read"])
            .spec();
        spec.check_interval = (*interval).into();
        spec.refresh.before = (*before).into();
        spec.refresh.max_age = max_age.map(str::to_owned);
        sc.apply_connection(name, spec).await;
    }
    for (name, _, _, _, field, range) in &cases {
        let s = sc.wait_ready_reason(name, "InvalidSpec").await;
        let ready = s.condition(ConditionType::Ready).expect("Ready");
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains(field) && ready.message.contains(range),
            "{name}: the message names the field and the range: {}",
            ready.message
        );
        let stalled = s.condition(ConditionType::Stalled).expect("Stalled");
        assert_eq!(stalled.status, "True", "a person must fix the object");
        assert_eq!(
            s.next_check_time, None,
            "nothing scheduled until it is fixed"
        );
    }
    sc.wait_event("huge", "Warning", "InvalidSpec").await;

    // The operator is alive and serves the healthy connection.
    let asked = sc.request_check("good").await;
    support::eventually(
        "the healthy connection checked",
        Duration::from_secs(20),
        || async {
            let s = sc.status("good").await;
            (s.last_handled_check_request.as_deref() == Some(asked.as_str())).then_some(())
        },
    )
    .await;
    assert!(
        sc.sandbox.calls_for("page-2").is_empty(),
        "no provider call for an invalid object"
    );
    assert!(
        !sc.operator.output().contains("panicked"),
        "{}",
        sc.operator.output()
    );

    // Fixing the object checks it.
    let api = sc.connections();
    api.patch(
        "huge",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"checkInterval": "1h"}})),
    )
    .await
    .expect("fix applies");
    sc.wait_ready_reason("huge", "Valid").await;

    // What the schema can refuse, the API server refuses (no operator involved).
    let mut spec = TestConnection::default()
        .secret("bad-token")
        .account("page-2")
        .requires(&["read"])
        .spec();
    spec.check_interval = "99999999999999999h".into();
    let err = api
        .create(
            &PostParams::default(),
            &ChannelConnection::new("longer", spec),
        )
        .await
        .expect_err("a duration longer than the schema allows is refused");
    assert!(err.to_string().contains("checkInterval"), "{err}");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_clamped_to_an_hour() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("hostile-wait").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.set_mode(Mode::RetryAfter {
        seconds: 999_999_999_999,
    });
    sc.request_check("chan").await;
    let s = sc
        .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    let last = s.last_check_time.expect("checked").0;
    let next = s.next_check_time.expect("a retry is scheduled").0;
    let wait = seconds_between(&last, &next);
    assert!(
        (3590..=3601).contains(&wait),
        "Retry-After: 999999999999 waits the documented maximum (1h), not {wait} s"
    );
    assert!(!sc.operator.output().contains("panicked"));
    sc.assert_no_token_leaked().await;
}

/// Accepts connections and never answers: a provider that hangs.
async fn hanging_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_does_not_delay_checks_of_other_providers() {
    if support::skip() {
        return;
    }
    // Few slots and a long provider timeout: before the fix, the hanging provider's checks
    // took every controller slot for 30 s at a time.
    let mut sc = Scenario::builder("hostile-hang")
        .flag("--provider-timeout", "30s")
        .flag("--concurrency", "4")
        .flag("--per-provider-concurrency", "2")
        .flag("--per-namespace-concurrency", "4")
        .start()
        .await;
    let (hang_url, _hang) = hanging_server().await;

    sc.provider("app", Validation::Introspection).await;
    sc.provider_with(
        "stuck",
        ProviderEndpoints {
            introspection_url: Some(format!("{hang_url}/introspect")),
            ..Default::default()
        },
    )
    .await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    for i in 0..8 {
        sc.apply_connection(
            &format!("stuck-{i}"),
            TestConnection::default()
                .provider("stuck")
                .account("page-1")
                .requires(&["read"]),
        )
        .await;
    }
    sc.apply_connection("healthy", TestConnection::on("page-1", &["read"]))
        .await;
    let first = sc.wait_ready_reason("healthy", "Valid").await;
    assert!(first.last_check_time.is_some());

    // While eight checks hang, requested checks of the healthy connection are served within
    // the minimum gap and a round trip, every time.
    for round in 0..3 {
        let asked = sc.request_check("healthy").await;
        let started = std::time::Instant::now();
        support::eventually(
            &format!("healthy check {round} served"),
            Duration::from_secs(10),
            || async {
                let s = sc.status("healthy").await;
                (s.last_handled_check_request.as_deref() == Some(asked.as_str())).then_some(())
            },
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "served while the other provider hangs"
        );
    }
    let hung = sc.status("stuck-0").await;
    assert!(
        hung.condition(ConditionType::Ready)
            .is_none_or(|c| c.reason != "Valid"),
        "the hanging provider gave no verdict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_application_is_asked_once_not_by_every_connection() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("hostile-client").start().await;
    sc.provider("app", Validation::Introspection).await;
    // The client secret is wrong: the sandbox answers 401 invalid_client.
    sc.secret("app-client", &[("client_secret", "wrong")]).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.sandbox.clear_calls();
    for i in 0..20 {
        sc.apply_connection(
            &format!("chan-{i}"),
            TestConnection::on("page-1", &["read"]),
        )
        .await;
    }
    for i in 0..20 {
        let s = sc
            .wait_ready_reason(&format!("chan-{i}"), "ProviderNotReady")
            .await;
        assert_eq!(s.reauth_url, None, "not a re-login request");
    }
    let calls = sc.sandbox.calls().len();
    // At most the provider's slots (4) can be in flight before the first answer is known.
    assert!(
        (1..=4).contains(&calls),
        "20 connections of a rejected app made {calls} provider calls"
    );
    let providers: kube::Api<relink::api::ChannelProvider> =
        kube::Api::namespaced(sc.client.clone(), &sc.ns);
    let ready = support::eventually("provider Ready=False", Duration::from_secs(20), || {
        let providers = providers.clone();
        async move {
            let s = providers.get("app").await.ok()?.status?;
            let c = s.conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some(c)
        }
    })
    .await;
    assert_eq!(ready.reason, "ProviderNotReady");
    // No connection raised its own alarm: Events are about the provider's trouble only.
    for i in 0..20 {
        let events = sc.events(&format!("chan-{i}")).await;
        assert!(
            events
                .iter()
                .all(|e| e.reason.as_deref() == Some("ProviderNotReady")),
            "{events:?}"
        );
    }

    // Fixed: the next check of each connection goes through again.
    sc.secret("app-client", &[("client_secret", "sandbox-secret")])
        .await;
    sc.request_check("chan-0").await;
    sc.wait_ready_reason("chan-0", "Valid").await;
    sc.assert_no_token_leaked().await;
}
