//! Closing the loop: the re-authorization link, the OAuth callback, and automatic refresh.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use relink::api::ConditionType;

use crate::fixtures::{Scenario, TestConnection, Validation, open};
use crate::support;

async fn secret_data(sc: &Scenario, name: &str) -> BTreeMap<String, String> {
    let s = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get(name)
        .await
        .expect("secret");
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_connection_is_restored_through_the_reauth_link() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("reauth").callback().start().await;
    let public = sc.public_url.clone().expect("callback served");
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret(
        "tok",
        &[
            ("access_token", &t.access_token),
            ("note", "kept by relink"),
        ],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read", "write"]))
        .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "no link while healthy");

    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    let link = s
        .reauth_url
        .clone()
        .expect("a re-authorization link while a person must log in");
    let q: BTreeMap<String, String> = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert!(link.starts_with(&format!("{}/oauth/authorize?", sc.sandbox.base_url())));
    assert_eq!(q["client_id"], "relink-sandbox");
    assert_eq!(q["redirect_uri"], format!("{public}/oauth/callback"));
    assert_eq!(q["scope"], "read write");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("state") && q.contains_key("code_challenge"));
    assert!(
        !link.contains("sandbox-secret"),
        "no client secret in the link"
    );

    // The link stays the same across checks (so an emailed link keeps working).
    sc.request_check("chan").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sc.status("chan").await.reauth_url.as_deref(),
        Some(link.as_str())
    );

    // The person logs in with the right page and is sent back to the operator.
    let callback = sc.consent(&link, "page-1", true).await;
    assert!(
        callback.starts_with(&format!("{public}/oauth/callback?")),
        "{callback}"
    );
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("connected again"), "{page}");

    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "link withdrawn once healthy");
    let data = secret_data(&sc, "tok").await;
    assert_ne!(data["access_token"], t.access_token, "new token written");
    assert!(data["access_token"].starts_with("sbx-at-"));
    assert!(data.contains_key("refresh_token") && data.contains_key("expires_at"));
    assert_eq!(data["note"], "kept by relink", "other keys untouched");
    sc.wait_event("chan", "Normal", "Valid").await;

    // The same callback again: single use.
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already used"), "{page}");
    sc.tokens.push(data["access_token"].clone());
    sc.tokens.push(data["refresh_token"].clone());
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_wrong_account_callbacks_change_nothing() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("forged").callback().start().await;
    let public = sc.public_url.clone().expect("callback served");
    sc.provider("app", Validation::Userinfo).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    let link = sc
        .wait_ready_reason("chan", "Revoked")
        .await
        .reauth_url
        .expect("link");
    let before = secret_data(&sc, "tok").await;

    // A forged state: signature does not match.
    let callback = sc.consent(&link, "page-1", true).await;
    let forged = callback.replace("state=", "state=x");
    let (status, page) = open(&forged).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("cannot be used"), "{page}");
    // No state at all, garbage parameters.
    let (status, _) = open(&format!("{public}/oauth/callback?code=abc")).await;
    assert_eq!(status, 400);

    // Deny at the provider: nothing was exchanged, the link stays.
    let denied = sc.consent(&link, "page-1", false).await;
    let (status, page) = open(&denied).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("access_denied"), "{page}");
    assert_eq!(
        sc.status("chan").await.reauth_url.as_deref(),
        Some(link.as_str())
    );

    // Logging in with another page: refused before anything is written.
    let wrong = sc.consent(&link, "page-2", true).await;
    let (status, page) = open(&wrong).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("page-2") && page.contains("page-1"), "{page}");

    assert_eq!(
        secret_data(&sc, "tok").await,
        before,
        "the Secret is unchanged"
    );
    let s = sc.status("chan").await;
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "Revoked");
    // The link was used up by that login; a fresh one took its place for the right person.
    let fresh = s.reauth_url.expect("a fresh link");
    assert_ne!(fresh, link);
    let again = sc.consent(&link, "page-1", true).await;
    let (status, page) = open(&again).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already used"), "{page}");

    let ok = sc.consent(&fresh, "page-1", true).await;
    assert_eq!(open(&ok).await.0, 200);
    sc.wait_ready_reason("chan", "Valid").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_token_is_refreshed_ahead_of_time() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("refresh").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    let soon = jiff::Timestamp::now().as_second() + 1800;
    sc.sandbox.set_expires_at(&t.access_token, Some(soon));
    let rt = t.refresh_token.clone().expect("refreshable grant");
    sc.secret(
        "tok",
        &[
            ("access_token", &t.access_token),
            ("refresh_token", &rt),
            ("expires_at", &soon.to_string()),
            ("other", "x"),
        ],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = support::eventually("a refresh", Duration::from_secs(30), || async {
        let s = sc.status("chan").await;
        (s.last_refresh_time.is_some() && s.condition(ConditionType::Ready).is_some()).then_some(s)
    })
    .await;
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "Valid");
    let data = secret_data(&sc, "tok").await;
    assert_ne!(data["access_token"], t.access_token, "access token renewed");
    assert_ne!(data["refresh_token"], rt, "rotated refresh token stored");
    assert_eq!(data["other"], "x");
    let new_expiry: jiff::Timestamp = data["expires_at"].parse().expect("RFC 3339 expiry");
    assert!(new_expiry.as_second() > soon, "later expiry");
    assert!(sc.sandbox.calls().iter().any(|c| c.path == "/oauth/token"));
    sc.tokens.push(data["access_token"].clone());
    sc.tokens.push(data["refresh_token"].clone());
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_renewed_and_a_dead_refresh_token_asks_for_login() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("renew").start().await;
    sc.provider("app", Validation::Introspection).await;
    // Expired access token, working refresh token: relink renews without waking anyone.
    let t = sc.issue("page-1", &["read"]);
    let past = jiff::Timestamp::now().as_second() - 60;
    sc.sandbox.set_expires_at(&t.access_token, Some(past));
    let rt = t.refresh_token.clone().unwrap();
    sc.secret(
        "tok",
        &[("access_token", &t.access_token), ("refresh_token", &rt)],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.last_refresh_time.is_some());

    // A revoked grant: the refresh is refused, a person must log in.
    let t2 = sc.issue("page-2", &["read"]);
    sc.sandbox.set_expires_at(&t2.access_token, Some(past));
    sc.sandbox.revoke(&t2.access_token);
    let rt2 = t2.refresh_token.clone().unwrap();
    sc.secret(
        "tok2",
        &[("access_token", &t2.access_token), ("refresh_token", &rt2)],
    )
    .await;
    sc.apply_connection(
        "dead",
        TestConnection::default()
            .secret("tok2")
            .account("page-2")
            .requires(&["read"]),
    )
    .await;
    let s = sc.wait_ready_reason("dead", "RefreshFailed").await;
    assert_eq!(s.condition(ConditionType::Stalled).unwrap().status, "True");
    assert!(s.reauth_url.is_some(), "a link to log in again");
    sc.wait_event("dead", "Warning", "RefreshFailed").await;
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_links_and_logins_with_fewer_scopes_change_nothing() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("linkttl")
        .callback()
        .flag("--reauth-link-ttl", "3s")
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read", "write"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    let link = sc
        .wait_ready_reason("chan", "Revoked")
        .await
        .reauth_url
        .expect("link");
    let before = secret_data(&sc, "tok").await;

    // Fewer scopes granted than the connection requires: refused with a clear page.
    let narrowed = {
        let mut url = url::Url::parse(&link).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "scope" {
                    (k, "read".to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        url.to_string()
    };
    let callback = sc.consent(&narrowed, "page-1", true).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("required scopes") && page.contains("write"),
        "{page}"
    );
    assert_eq!(secret_data(&sc, "tok").await, before);

    // After the link's lifetime, it no longer works.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = sc.consent(&link, "page-1", true).await;
    let (status, page) = open(&late).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expired"), "{page}");
    assert_eq!(secret_data(&sc, "tok").await, before, "nothing written");

    // The refused login used the link up and left a new one, which has expired by now too;
    // the next check publishes a fresh link, which works.
    let replaced = sc
        .status("chan")
        .await
        .reauth_url
        .expect("a replacement link");
    assert_ne!(replaced, link);
    sc.request_check("chan").await;
    let fresh = support::eventually("a fresh link", Duration::from_secs(20), || async {
        sc.status("chan")
            .await
            .reauth_url
            .filter(|u| *u != link && *u != replaced)
    })
    .await;
    let ok = sc.consent(&fresh, "page-1", true).await;
    assert_eq!(open(&ok).await.0, 200);
    sc.wait_ready_reason("chan", "Valid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_rotated_elsewhere_is_not_a_dead_one() {
    if support::skip() {
        return;
    }
    // Slow provider answers leave time for "another client" to rotate the refresh token first.
    let config = relink::sandbox::SandboxConfig {
        latency: Duration::from_secs(3),
        ..Default::default()
    };
    let mut sc = Scenario::builder("rotated")
        .flag("--provider-timeout", "10s")
        .sandbox(config)
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    let past = jiff::Timestamp::now().as_second() - 60;
    sc.sandbox.set_expires_at(&t.access_token, Some(past));
    let rt1 = t.refresh_token.clone().unwrap();
    sc.secret(
        "tok",
        &[("access_token", &t.access_token), ("refresh_token", &rt1)],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;

    // While the operator waits for its (slow) check of the expired token, another client
    // refreshes with the same refresh token and stores the rotated pair. The operator's own
    // refresh then gets invalid_grant, re-reads the Secret and must not declare the channel dead.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resp = crate::fixtures::browser()
        .post(format!("{}/oauth/token", sc.sandbox.base_url()))
        .basic_auth("relink-sandbox", Some("sandbox-secret"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt1.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let (at2, rt2) = (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    );
    sc.tokens.extend([at2.clone(), rt2.clone()]);
    sc.secret("tok", &[("access_token", &at2), ("refresh_token", &rt2)])
        .await;

    let s = sc.wait_ready_reason("chan", "Valid").await;
    let history: Vec<String> = sc
        .events("chan")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        !history
            .iter()
            .any(|r| r == "RefreshFailed" || r == "Revoked" || r == "Expired"),
        "{history:?}"
    );
    assert_eq!(s.condition(ConditionType::Stalled).unwrap().status, "False");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_during_refresh_is_not_a_dead_token() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("refreshdown").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    let rt = t.refresh_token.clone().unwrap();
    sc.secret(
        "tok",
        &[("access_token", &t.access_token), ("refresh_token", &rt)],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;

    // The token is now due for refresh, and the provider is down.
    sc.sandbox
        .set_mode(relink::sandbox::Mode::Status { code: 503 });
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
    let s = sc
        .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    assert_eq!(
        s.condition(ConditionType::Ready).unwrap().reason,
        "Valid",
        "verdict kept"
    );
    assert!(
        sc.sandbox
            .calls()
            .iter()
            .any(|c| c.path == "/oauth/token" && c.status == 503),
        "a refresh was tried"
    );
    let data = secret_data(&sc, "tok").await;
    assert_eq!(data["refresh_token"], rt, "nothing overwritten");

    // Back up: the refresh goes through.
    sc.sandbox.set_mode(relink::sandbox::Mode::Normal);
    let s = support::eventually(
        "refreshed after the outage",
        Duration::from_secs(30),
        || async {
            let s = sc.status("chan").await;
            s.last_refresh_time.is_some().then_some(s)
        },
    )
    .await;
    assert_eq!(s.condition(ConditionType::Ready).unwrap().reason, "Valid");
    let data = secret_data(&sc, "tok").await;
    sc.tokens
        .extend([data["access_token"].clone(), data["refresh_token"].clone()]);
    sc.assert_no_token_leaked().await;
}
