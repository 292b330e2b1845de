use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{ProviderEndpoints, ProviderType};
use crate::providers::testserver::{
    Canned, TestServer, app, assert_no_leak, http, invalid, misconfigured, transient, valid,
};

const TOKEN: &str = "xoxb-secret";

fn slack(server: &TestServer) -> App {
    let endpoints = ProviderEndpoints {
        api_base_url: Some(format!("{}/api", server.base)),
        token_url: Some(server.url("/api/oauth.v2.access")),
        ..Default::default()
    };
    app(ProviderType::Slack, endpoints, Some("s3cret"))
}

async fn check_with(answer: Canned) -> Verdict {
    let server = TestServer::start(vec![("/api/auth.test", answer)]).await;
    let v = Slack
        .check(&http(), &slack(&server), &Token::new(TOKEN))
        .await;
    assert_no_leak(&v, TOKEN);
    v
}

fn not_ok(error: &str) -> Canned {
    Canned::json(200, json!({"ok": false, "error": error}))
}

#[tokio::test]
async fn ok_reports_workspace_and_scopes_header() {
    let server = TestServer::start(vec![(
        "/api/auth.test",
        Canned::json(
            200,
            json!({"ok": true, "url": "https://subarachnoid.slack.com/",
            "team": "Subarachnoid Workspace", "user": "grace", "team_id": "T12345678",
            "user_id": "W12345678", "bot_id": "B0123", "is_enterprise_install": false,
            "expires_in": 43_200}),
        )
        .header("x-oauth-scopes", "chat:write,channels:read,users:read"),
    )])
    .await;
    let g = valid(
        Slack
            .check(&http(), &slack(&server), &Token::new(TOKEN))
            .await,
    );
    assert_eq!(
        g.scopes.unwrap(),
        ["chat:write", "channels:read", "users:read"]
    );
    assert_eq!(g.account.unwrap().id.as_deref(), Some("T12345678"));
    let ids = g.target_ids.unwrap();
    assert!(ids.contains(&"T12345678".to_owned()) && ids.contains(&"W12345678".to_owned()));
    assert!(g.expires_at.is_some());
    let seen = server.one("/api/auth.test");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
}

#[tokio::test]
async fn ok_false_errors() {
    for (error, want) in [
        ("token_revoked", Reason::Revoked),
        ("invalid_auth", Reason::Revoked),
        ("account_inactive", Reason::Revoked),
        ("not_authed", Reason::Revoked),
        ("token_expired", Reason::Expired),
        ("two_factor_setup_required", Reason::AccountActionRequired),
        ("missing_scope", Reason::ScopesMissing),
    ] {
        assert_eq!(invalid(&check_with(not_ok(error)).await), want, "{error}");
    }
    misconfigured(&check_with(not_ok("not_allowed_token_type")).await);
    transient(&check_with(not_ok("internal_error")).await);
    transient(&check_with(not_ok("fatal_error")).await);
}

#[tokio::test]
async fn ratelimited_outage_and_garbage_are_transient() {
    let v = check_with(not_ok("ratelimited").header("retry-after", "20")).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(20)));
    let v = check_with(Canned::text(429, "").header("retry-after", "5")).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(5)));
    transient(&check_with(Canned::text(503, "down")).await);
    transient(&check_with(Canned::text(200, "<html>")).await);
}

#[tokio::test]
async fn rotation_refresh_and_its_errors() {
    let server = TestServer::start(vec![
        (
            "/api/oauth.v2.access",
            Canned::json(
                200,
                json!({"ok": true, "app_id": "A0K",
            "scope": "chat:write", "token_type": "bot", "access_token": "xoxe.xoxb-new",
            "bot_user_id": "U1", "team": {"id": "T1", "name": "T"}, "expires_in": 43_200,
            "refresh_token": "xoxe-1-new"}),
            ),
        ),
        ("/api/oauth.v2.access", not_ok("invalid_refresh_token")),
        ("/api/oauth.v2.access", not_ok("bad_client_secret")),
        ("/api/oauth.v2.access", not_ok("ratelimited")),
    ])
    .await;
    let a = slack(&server);
    let (at, rt) = (Token::new(TOKEN), Token::new("xoxe-1-old"));
    match Slack.renew(&http(), &a, &at, Some(&rt)).await {
        Renewal::Renewed(n) => {
            assert_eq!(n.access_token.expose(), "xoxe.xoxb-new");
            assert_eq!(n.refresh_token.unwrap().expose(), "xoxe-1-new");
        }
        other => panic!("{other:?}"),
    }
    let form = server.one("/api/oauth.v2.access").form;
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], "xoxe-1-old");
    assert_eq!(form["client_id"], "app-id");
    assert_eq!(form["client_secret"], "s3cret");
    assert!(matches!(
        Slack.renew(&http(), &a, &at, Some(&rt)).await,
        Renewal::Rejected { .. }
    ));
    assert!(matches!(
        Slack.renew(&http(), &a, &at, Some(&rt)).await,
        Renewal::Misconfigured { .. }
    ));
    assert!(matches!(
        Slack.renew(&http(), &a, &at, Some(&rt)).await,
        Renewal::Transient { .. }
    ));
    assert!(matches!(
        Slack.renew(&http(), &a, &at, None).await,
        Renewal::Unsupported { .. }
    ));
}

#[tokio::test]
async fn user_token_install_comes_from_authed_user() {
    let server = TestServer::start(vec![(
        "/api/oauth.v2.access",
        Canned::json(
            200,
            json!({"ok": true, "app_id": "A0K", "team": {"id": "T1"},
            "authed_user": {"id": "U1", "scope": "chat:write", "access_token": "xoxp-user",
                            "token_type": "user"}}),
        ),
    )])
    .await;
    match Slack
        .exchange_code(&http(), &slack(&server), "c", "https://relink/cb", None)
        .await
    {
        Renewal::Renewed(n) => assert_eq!(n.access_token.expose(), "xoxp-user"),
        other => panic!("{other:?}"),
    }
}
