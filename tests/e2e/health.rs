//! The health-check controller, end to end: operator process, CRDs, sandbox provider; status
//! and Events read back through the API.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use relink::api::{ConditionType, ProviderEndpoints};
use relink::sandbox::Mode;
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

/// A scenario with provider `app` and a valid, fully scoped connection `chan` reaching `page-1`.
async fn healthy(prefix: &str, validation: Validation) -> Scenario {
    let mut sc = Scenario::builder(prefix).start().await;
    sc.provider("app", validation).await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret("chan-token", &[("access_token", &t.access_token)])
        .await;
    sc.apply_connection(
        "chan",
        TestConnection::default()
            .secret("chan-token")
            .account("page-1")
            .requires(&["read", "write"]),
    )
    .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc
}

fn cond(s: &relink::api::ChannelConnectionStatus, t: ConditionType) -> (String, String) {
    let c = s.condition(t).expect("condition present");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_turns_connection_ready() {
    if support::skip() {
        return;
    }
    let sc = healthy("valid", Validation::Introspection).await;
    let s = sc.status("chan").await;
    assert_eq!(
        cond(&s, ConditionType::Ready),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("False".into(), "Valid".into())
    );
    assert_eq!(cond(&s, ConditionType::Reconciling).0, "False");
    let account = s.account.clone().expect("account reported");
    assert_eq!(account.id.as_deref(), Some("page-1"));
    assert_eq!(account.name.as_deref(), Some("page-1 name"));
    assert_eq!(s.granted_scopes, ["read", "write"]);
    assert!(s.missing_scopes.is_empty());
    assert!(s.last_check_time.is_some() && s.last_valid_time.is_some());
    let next = s.next_check_time.expect("next check scheduled").0;
    let in_secs = next.duration_since(jiff::Timestamp::now()).as_secs();
    // After the first check the next one comes one 15m interval plus a random phase later
    // (fleets spread out, and no connection is checked twice in one interval).
    assert!(
        (895..=1800).contains(&in_secs),
        "next check in {in_secs}s, expected between one and two 15m intervals"
    );
    assert_eq!(s.observed_generation, Some(1));
    assert!(
        sc.events("chan")
            .await
            .iter()
            .all(|e| e.reason.as_deref() != Some("Valid")),
        "a new connection found working publishes no Event"
    );
    assert_eq!(
        sc.sandbox.calls_for("page-1").len(),
        1,
        "one check, one provider call"
    );
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_turns_connection_stalled() {
    if support::skip() {
        return;
    }
    let mut sc = healthy("revoked", Validation::Introspection).await;
    let t = sc.issue("page-2", &["read", "write"]);
    sc.secret("other-token", &[("access_token", &t.access_token)])
        .await;
    sc.apply_connection(
        "other",
        TestConnection::default()
            .secret("other-token")
            .account("page-2")
            .requires(&["read", "write"]),
    )
    .await;
    sc.wait_ready_reason("other", "Valid").await;

    let token = sc.tokens[0].clone();
    sc.sandbox.revoke(&token);
    let asked = sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "False");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "Revoked".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "Revoked".into())
    );
    assert_eq!(
        s.last_handled_check_request.as_deref(),
        Some(asked.as_str())
    );
    let warning = sc.wait_event("chan", "Warning", "Revoked").await;
    assert!(warning.note.unwrap_or_default().contains("re-authorize"));

    // The other connection was not checked again: one call for it, from its first check.
    assert_eq!(sc.sandbox.calls_for("page-2").len(), 1);

    // A second check of a still-dead token publishes no second Warning.
    sc.request_check("chan").await;
    support::eventually("second check handled", Duration::from_secs(20), || async {
        (sc.sandbox.calls_for("page-1").len() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let warnings = sc
        .events("chan")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Revoked"))
        .count();
    assert_eq!(warnings, 1, "one Event per transition, not per check");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_reported_apart_from_expiry() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("scopes").start().await;
    sc.provider("app", Validation::Userinfo).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read", "publish"]))
        .await;
    let s = sc.wait_ready_reason("chan", "ScopesMissing").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("False".into(), "ScopesMissing".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(s.missing_scopes, ["publish"]);
    sc.wait_event("chan", "Warning", "ScopesMissing").await;

    // Granting the scope and asking for a check brings it back.
    sc.sandbox.set_scopes(&t.access_token, &["read", "publish"]);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.missing_scopes.is_empty());
    sc.wait_event("chan", "Normal", "Valid").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_is_reported_and_recovers_when_created() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("nosecret").start().await;
    sc.provider("app", Validation::Introspection).await;
    sc.apply_connection(
        "chan",
        TestConnection::default()
            .secret("later-token")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    let s = sc.wait_ready_reason("chan", "SecretNotFound").await;
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "SecretNotFound".into())
    );
    assert!(
        s.condition(ConditionType::Ready)
            .unwrap()
            .message
            .contains("later-token")
    );
    sc.wait_event("chan", "Warning", "SecretNotFound").await;

    // Creating the Secret triggers a check at once (no annotation, no waiting for the interval).
    let t = sc.issue("page-1", &["read"]);
    sc.secret("later-token", &[("access_token", &t.access_token)])
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_missing_provider_are_named() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("wrongkey").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = sc.wait_ready_reason("chan", "SecretKeyMissing").await;
    assert!(
        s.condition(ConditionType::Ready)
            .unwrap()
            .message
            .contains("access_token")
    );

    sc.apply_connection(
        "orphan",
        TestConnection::default()
            .provider("no-such-app")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    let s = sc.wait_ready_reason("orphan", "ProviderNotFound").await;
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert!(
        s.condition(ConditionType::Ready)
            .unwrap()
            .message
            .contains("no-such-app")
    );

    // Creating the provider triggers the check; the Secret still has the wrong key.
    sc.provider("no-such-app", Validation::Introspection).await;
    sc.wait_ready_reason("orphan", "SecretKeyMissing").await;
    assert!(
        sc.sandbox.calls().is_empty(),
        "no provider call without a token"
    );
    sc.assert_no_token_leaked().await;
}

/// Calls to the sandbox about `account`, as milliseconds since the first one.
fn call_offsets(sc: &Scenario, account: &str) -> Vec<i64> {
    let calls = sc.sandbox.calls_for(account);
    let first = calls.first().map(|c| c.at_unix_ms).unwrap_or_default();
    calls.iter().map(|c| c.at_unix_ms - first).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_keeps_the_verdict_and_backs_off() {
    if support::skip() {
        return;
    }
    for (i, mode) in [
        Mode::Status { code: 503 },
        Mode::Garbage,
        Mode::ErrorBody,
        Mode::Hang,
        Mode::Huge,
    ]
    .into_iter()
    .enumerate()
    {
        let sc = healthy(&format!("outage{i}"), Validation::Introspection).await;
        sc.sandbox.clear_calls();
        sc.sandbox.set_mode(mode.clone());
        sc.request_check("chan").await;
        let s = sc
            .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
            .await;
        assert_eq!(
            cond(&s, ConditionType::Ready),
            ("True".into(), "Valid".into()),
            "{mode:?}: verdict kept"
        );
        assert_eq!(
            cond(&s, ConditionType::Stalled).0,
            "False",
            "{mode:?}: nobody is asked to act"
        );
        assert!(s.consecutive_failures >= 1);
        if i == 0 {
            // Retries come at growing intervals (1s, 2s, 4s with ±20 % jitter).
            support::eventually(
                "four calls during the outage",
                Duration::from_secs(30),
                || async { (sc.sandbox.calls_for("page-1").len() >= 4).then_some(()) },
            )
            .await;
            let at = call_offsets(&sc, "page-1");
            let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(
                gaps[1] > gaps[0] && gaps[2] > gaps[1],
                "backoff grows: gaps {gaps:?} ms"
            );
            assert!(gaps[0] >= 700, "no hammering: gaps {gaps:?} ms");
            let s = sc.status("chan").await;
            assert!(
                s.consecutive_failures >= 3,
                "failures counted: {}",
                s.consecutive_failures
            );
            sc.wait_event("chan", "Warning", "ProviderUnavailable")
                .await;
            // Recovery clears the failure count without a Ready transition.
            sc.sandbox.set_mode(Mode::Normal);
            sc.wait_condition("chan", ConditionType::Reconciling, "Valid")
                .await;
            assert_eq!(sc.status("chan").await.consecutive_failures, 0);
        }
        sc.assert_no_token_leaked().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    if support::skip() {
        return;
    }
    let sc = healthy("retryafter", Validation::Userinfo).await;
    sc.sandbox.clear_calls();
    sc.sandbox.set_mode(Mode::RetryAfter { seconds: 5 });
    sc.request_check("chan").await;
    sc.wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    support::eventually("a retry after the 429", Duration::from_secs(20), || async {
        (sc.sandbox.calls_for("page-1").len() >= 2).then_some(())
    })
    .await;
    let at = call_offsets(&sc, "page-1");
    assert!(
        at[1] >= 5000,
        "second call {} ms after the 429 that said Retry-After: 5",
        at[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_makes_no_calls_for_connections_not_due() {
    if support::skip() {
        return;
    }
    let mut sc = healthy("restart", Validation::Introspection).await;
    let before = sc.status("chan").await;
    sc.operator.stop().await;
    sc.sandbox.clear_calls();
    let args = crate::fixtures::operator_args(&sc.ns);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sc.operator = support::Operator::start(&args).await;
    sc.operator
        .wait_for_output(
            "starting the ChannelConnection controller",
            Duration::from_secs(20),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        sc.sandbox.calls().is_empty(),
        "a restart must not re-check connections that are not due"
    );
    let after = sc.status("chan").await;
    assert_eq!(
        before.last_check_time, after.last_check_time,
        "no status write either"
    );

    // The restarted operator still acts on a check request.
    sc.request_check("chan").await;
    support::eventually("check after restart", Duration::from_secs(20), || async {
        (!sc.sandbox.calls().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_connection_is_not_checked() {
    if support::skip() {
        return;
    }
    let sc = healthy("suspend", Validation::Introspection).await;
    sc.sandbox.clear_calls();
    sc.connections()
        .patch(
            "chan",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    let s = sc.wait_ready_reason("chan", "Suspended").await;
    assert_eq!(cond(&s, ConditionType::Stalled).0, "False");
    sc.request_check("chan").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        sc.sandbox.calls().is_empty(),
        "no provider call while suspended"
    );

    sc.connections()
        .patch(
            "chan",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(sc.sandbox.calls().len(), 1, "resuming checks once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_provider_cannot_target_internal_addresses() {
    if support::skip() {
        return;
    }
    // No --allow-namespaced-endpoint-hosts: the default policy.
    let mut sc = Scenario::builder("ssrf")
        .without("--allow-namespaced-endpoint-hosts")
        .start()
        .await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    let base = sc.sandbox.base_url();
    sc.provider_with(
        "loopback",
        ProviderEndpoints {
            introspection_url: Some(format!("{base}/oauth/introspect")),
            ..Default::default()
        },
    )
    .await;
    sc.provider_with(
        "metadata",
        ProviderEndpoints {
            userinfo_url: Some("https://169.254.169.254/latest/meta-data/".into()),
            ..Default::default()
        },
    )
    .await;
    sc.apply_connection(
        "via-loopback",
        TestConnection::default()
            .provider("loopback")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    sc.apply_connection(
        "via-metadata",
        TestConnection::default()
            .provider("metadata")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    for name in ["via-loopback", "via-metadata"] {
        let s = sc.wait_ready_reason(name, "ProviderNotReady").await;
        let msg = &s.condition(ConditionType::Ready).unwrap().message;
        assert!(
            msg.contains("--allow-namespaced-endpoint-hosts"),
            "{name}: {msg}"
        );
    }
    assert!(
        sc.sandbox.calls().is_empty(),
        "no call reached the loopback sandbox"
    );
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_application_is_reported_on_the_provider_not_as_a_relogin() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("badclient").start().await;
    sc.provider("app", Validation::Introspection).await;
    let providers: kube::Api<relink::api::ChannelProvider> =
        kube::Api::namespaced(sc.client.clone(), &sc.ns);
    let provider_ready = |want: &'static str| {
        let providers = providers.clone();
        async move {
            support::eventually(
                &format!("provider Ready={want}"),
                Duration::from_secs(30),
                || {
                    let providers = providers.clone();
                    async move {
                        let s = providers.get("app").await.ok()?.status?;
                        let c = s.conditions.iter().find(|c| c.type_ == "Ready")?.clone();
                        (c.status == want).then_some(c)
                    }
                },
            )
            .await
        }
    };
    provider_ready("True").await;

    // The app's secret is wrong: the provider object says so; the connection is not asked to log in.
    sc.secret("app-client", &[("client_secret", "wrong")]).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = sc.wait_ready_reason("chan", "ProviderNotReady").await;
    assert_eq!(
        s.reauth_url, None,
        "an application problem is not a re-login request"
    );
    let c = provider_ready("False").await;
    assert_eq!(c.reason, "ProviderNotReady");
    assert!(c.message.contains("client credentials"), "{}", c.message);

    // Fixed: the next check clears both.
    sc.secret("app-client", &[("client_secret", "sandbox-secret")])
        .await;
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Valid").await;
    provider_ready("True").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_asks_for_a_fresh_login_before_the_consent_gets_too_old() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("maxage").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    // Consent counted from the connection's creation; the deadline (1h) is inside
    // refresh.before (24h): Expiring now, with a link, while the token works.
    let mut spec = TestConnection::on("page-1", &["read"]).spec();
    spec.refresh.max_age = Some("1h".into());
    sc.apply_connection("chan", spec).await;
    let s = sc.wait_ready_reason("chan", "Expiring").await;
    let ready = s.condition(ConditionType::Ready).expect("Ready");
    assert_eq!(ready.status, "True");
    assert!(
        ready.message.contains("spec.refresh.maxAge"),
        "{}",
        ready.message
    );
    assert!(s.reauth_url.is_some(), "a link before the deadline");
    sc.assert_no_token_leaked().await;
}
