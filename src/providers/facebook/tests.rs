use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{ProviderEndpoints, ProviderType};
use crate::providers::testserver::{
    Canned, TestServer, app, assert_no_leak, http, invalid, misconfigured, transient, valid,
};

const TOKEN: &str = "EAAtoken-secret";
const FUTURE: i64 = 4_102_444_800; // 2100-01-01

fn fb(server: &TestServer, secret: Option<&str>) -> App {
    let endpoints = ProviderEndpoints {
        api_base_url: Some(server.base.clone()),
        ..Default::default()
    };
    app(ProviderType::Facebook, endpoints, secret)
}

async fn check_with(answer: Canned) -> (Verdict, TestServer) {
    let server = TestServer::start(vec![("/debug_token", answer)]).await;
    let v = Facebook
        .check(&http(), &fb(&server, Some("s3cret")), &Token::new(TOKEN))
        .await;
    assert_no_leak(&v, TOKEN);
    assert_no_leak(&v, "s3cret");
    (v, server)
}

fn dead(code: i64, subcode: i64) -> Canned {
    Canned::json(
        200,
        json!({"data": {
            "app_id": "app-id", "type": "USER", "is_valid": false, "scopes": [],
            "error": {"code": code, "message": "Error validating access token", "subcode": subcode},
            "user_id": "10215241773831025"
        }}),
    )
}

fn graph_error(status: u16, code: i64, transient: bool) -> Canned {
    Canned::json(
        status,
        json!({"error": {"message": "Please retry", "type": "OAuthException", "code": code,
                         "is_transient": transient, "fbtrace_id": "Abc"}}),
    )
}

#[tokio::test]
async fn valid_user_token_reports_scopes_clocks_and_page_targets() {
    let (v, server) = check_with(Canned::json(
        200,
        json!({"data": {
            "app_id": "app-id", "type": "USER", "application": "Relink",
            "data_access_expires_at": FUTURE, "expires_at": FUTURE, "is_valid": true,
            "scopes": ["pages_show_list", "pages_manage_posts", "public_profile"],
            "granular_scopes": [
                {"scope": "pages_show_list", "target_ids": ["111", "222"]},
                {"scope": "pages_manage_posts", "target_ids": ["111"]},
                {"scope": "public_profile"}
            ],
            "user_id": "10215241773831025"
        }}),
    ))
    .await;
    let g = valid(v);
    assert_eq!(g.scopes.as_ref().map(Vec::len), Some(3));
    assert_eq!(g.expires_at.map(|t| t.as_second()), Some(FUTURE));
    assert_eq!(
        g.data_access_expires_at.map(|t| t.as_second()),
        Some(FUTURE)
    );
    assert_eq!(
        g.account.and_then(|a| a.id).as_deref(),
        Some("10215241773831025")
    );
    // Page 333 was not picked at login: the controller turns this into AccountMismatch.
    let targets = g.target_ids.unwrap();
    assert!(targets.contains(&"111".to_owned()) && targets.contains(&"222".to_owned()));
    assert!(!targets.contains(&"333".to_owned()));
    let seen = server.one("/debug_token");
    assert_eq!(seen.query["input_token"], TOKEN);
    assert_eq!(seen.query["access_token"], "app-id|s3cret");
}

#[tokio::test]
async fn never_expiring_page_token_reaches_its_page() {
    let (v, _s) = check_with(Canned::json(
        200,
        json!({"data": {"app_id": "app-id", "type": "PAGE", "is_valid": true, "expires_at": 0,
                        "data_access_expires_at": 0, "profile_id": "111",
                        "scopes": ["pages_manage_posts"], "user_id": "42"}}),
    ))
    .await;
    let g = valid(v);
    assert_eq!(g.expires_at, None);
    assert_eq!(g.data_access_expires_at, None);
    assert_eq!(g.account.and_then(|a| a.id).as_deref(), Some("111"));
    assert_eq!(g.target_ids, None);
}

#[tokio::test]
async fn page_permission_without_targets_claims_no_account() {
    let (v, _s) = check_with(Canned::json(
        200,
        json!({"data": {"app_id": "app-id", "type": "USER", "is_valid": true, "expires_at": FUTURE,
                        "scopes": ["pages_show_list"],
                        "granular_scopes": [{"scope": "pages_show_list"}], "user_id": "42"}}),
    ))
    .await;
    let g = valid(v);
    assert_eq!(g.account, None);
    assert_eq!(g.target_ids, None);
}

#[tokio::test]
async fn dead_token_subcodes() {
    for (sub, want) in [
        (460, Reason::Revoked),
        (463, Reason::Expired),
        (458, Reason::Revoked),
        (467, Reason::Revoked),
        (459, Reason::AccountActionRequired),
        (464, Reason::AccountActionRequired),
    ] {
        let (v, _s) = check_with(dead(190, sub)).await;
        assert_eq!(invalid(&v), want, "subcode {sub}: {v:?}");
    }
}

#[tokio::test]
async fn invalid_without_error_uses_expiry() {
    let (v, _s) = check_with(Canned::json(
        200,
        json!({"data": {"app_id": "app-id", "is_valid": false, "expires_at": 1_600_000_000}}),
    ))
    .await;
    assert_eq!(invalid(&v), Reason::Expired);
}

#[tokio::test]
async fn lapsed_data_access_needs_a_new_login() {
    let lapsed = jiff::Timestamp::now().as_second() - 3600;
    let (v, _s) = check_with(Canned::json(
        200,
        json!({"data": {"app_id": "app-id", "type": "USER", "is_valid": true,
                        "expires_at": FUTURE, "data_access_expires_at": lapsed,
                        "scopes": ["pages_manage_posts"], "user_id": "42"}}),
    ))
    .await;
    assert_eq!(invalid(&v), Reason::ReauthorizationRequired);
}

#[tokio::test]
async fn wrong_app_secret_is_the_providers_problem() {
    let (v, _s) = check_with(Canned::json(
        400,
        json!({"error": {"message": "Invalid OAuth access token signature.", "type": "OAuthException", "code": 190}}),
    ))
    .await;
    assert!(misconfigured(&v).contains("debug_token"));
}

#[tokio::test]
async fn transient_codes_and_is_transient() {
    for code in [1, 2, 4, 17, 341] {
        let (v, _s) = check_with(graph_error(400, code, false)).await;
        transient(&v);
    }
    let (v, _s) = check_with(graph_error(500, 190, true)).await;
    transient(&v);
}

#[tokio::test]
async fn high_usage_slows_down_without_losing_dead_verdicts() {
    let ok = json!({"data": {"app_id": "app-id", "type": "USER", "is_valid": true,
                             "expires_at": FUTURE, "scopes": [], "user_id": "42"}});
    let (v, _s) = check_with(Canned::json(200, ok.clone()).header(
        "x-app-usage",
        r#"{"call_count":96,"total_time":10,"total_cputime":5}"#,
    ))
    .await;
    assert_eq!(transient(&v), Some(Duration::from_secs(600)));

    let buc = r#"{"111":[{"type":"pages","call_count":20,"total_cputime":97,"total_time":3,"estimated_time_to_regain_access":5}]}"#;
    let (v, _s) =
        check_with(Canned::json(200, ok.clone()).header("x-business-use-case-usage", buc)).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(300)));

    let (v, _s) =
        check_with(Canned::json(200, ok).header("x-app-usage", r#"{"call_count":50}"#)).await;
    valid(v);

    let (v, _s) = check_with(dead(190, 460).header("x-app-usage", r#"{"call_count":99}"#)).await;
    assert_eq!(invalid(&v), Reason::Revoked);
}

#[tokio::test]
async fn rate_limit_outage_and_garbage_are_transient() {
    let (v, _s) = check_with(Canned::text(429, "slow down").header("retry-after", "30")).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(30)));
    let (v, _s) = check_with(Canned::text(503, "<html>down</html>")).await;
    transient(&v);
    let (v, _s) = check_with(Canned::text(200, "<html>login</html>")).await;
    transient(&v);
}

#[tokio::test]
async fn echoed_token_is_redacted() {
    let (v, _s) = check_with(Canned::json(
        200,
        json!({"data": {"is_valid": false,
                        "error": {"code": 190, "message": format!("Malformed access token {TOKEN}")}}}),
    ))
    .await;
    assert_eq!(invalid(&v), Reason::Revoked);
}

#[tokio::test]
async fn without_secret_the_token_is_asked_directly() {
    let server = TestServer::start(vec![
        ("/me", Canned::json(200, json!({"id": "42", "name": "Ann"}))),
        (
            "/me",
            Canned::json(
                403,
                json!({"error": {"message": "(#200) Permissions error", "type": "OAuthException", "code": 200}}),
            ),
        ),
        (
            "/me",
            Canned::json(
                400,
                json!({"error": {"message": "Error validating access token: password changed",
                                 "type": "OAuthException", "code": 190, "error_subcode": 460}}),
            ),
        ),
    ])
    .await;
    let a = fb(&server, None);
    let t = Token::new(TOKEN);
    let g = valid(Facebook.check(&http(), &a, &t).await);
    assert_eq!(g.account.and_then(|a| a.name).as_deref(), Some("Ann"));
    assert_eq!(
        invalid(&Facebook.check(&http(), &a, &t).await),
        Reason::ScopesMissing
    );
    assert_eq!(
        invalid(&Facebook.check(&http(), &a, &t).await),
        Reason::Revoked
    );
}

#[tokio::test]
async fn renew_exchanges_the_long_lived_token() {
    let server = TestServer::start(vec![
        (
            "/oauth/access_token",
            Canned::json(200, json!({"access_token": "EAAnew", "token_type": "bearer", "expires_in": 5_183_944})),
        ),
        ("/oauth/access_token", dead(190, 460)),
        (
            "/oauth/access_token",
            Canned::json(400, json!({"error": {"message": "Error validating access token", "code": 190, "error_subcode": 460}})),
        ),
        (
            "/oauth/access_token",
            Canned::json(400, json!({"error": {"message": "Error validating client secret.", "type": "OAuthException", "code": 1}})),
        ),
        ("/oauth/access_token", graph_error(400, 4, false)),
    ])
    .await;
    let a = fb(&server, Some("s3cret"));
    let t = Token::new(TOKEN);
    match Facebook.renew(&http(), &a, &t, None).await {
        Renewal::Renewed(n) => {
            assert_eq!(n.access_token.expose(), "EAAnew");
            assert!(n.expires_at.is_some() && n.refresh_token.is_none());
        }
        other => panic!("{other:?}"),
    }
    let seen = server.one("/oauth/access_token");
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.query["grant_type"], "fb_exchange_token");
    assert_eq!(seen.query["client_id"], "app-id");
    assert_eq!(seen.query["client_secret"], "s3cret");
    assert_eq!(seen.query["fb_exchange_token"], TOKEN);
    // A 200 without a token is not a token.
    assert!(matches!(
        Facebook.renew(&http(), &a, &t, None).await,
        Renewal::Transient { .. }
    ));
    assert!(matches!(
        Facebook.renew(&http(), &a, &t, None).await,
        Renewal::Rejected { .. }
    ));
    assert!(matches!(
        Facebook.renew(&http(), &a, &t, None).await,
        Renewal::Misconfigured { .. }
    ));
    assert!(matches!(
        Facebook.renew(&http(), &a, &t, None).await,
        Renewal::Transient { .. }
    ));
}

#[tokio::test]
async fn code_exchange_ends_with_a_long_lived_token() {
    let server = TestServer::start(vec![
        (
            "/oauth/access_token",
            Canned::json(200, json!({"access_token": "EAAshort", "expires_in": 3600})),
        ),
        (
            "/oauth/access_token",
            Canned::json(
                200,
                json!({"access_token": "EAAlong", "expires_in": 5_184_000}),
            ),
        ),
        (
            "/oauth/access_token",
            Canned::json(
                200,
                json!({"access_token": "EAAshort2", "expires_in": 3600}),
            ),
        ),
        ("/oauth/access_token", Canned::text(502, "bad gateway")),
    ])
    .await;
    let a = fb(&server, Some("s3cret"));
    let first = Facebook
        .exchange_code(&http(), &a, "the-code", "https://relink/cb", None)
        .await;
    assert!(matches!(&first, Renewal::Renewed(n) if n.access_token.expose() == "EAAlong"));
    let seen = server.seen();
    assert_eq!(seen[0].query["code"], "the-code");
    assert_eq!(seen[0].query["redirect_uri"], "https://relink/cb");
    assert_eq!(seen[1].query["fb_exchange_token"], "EAAshort");
    let second = Facebook
        .exchange_code(&http(), &a, "code-2", "https://relink/cb", None)
        .await;
    assert!(matches!(&second, Renewal::Renewed(n) if n.access_token.expose() == "EAAshort2"));
}
