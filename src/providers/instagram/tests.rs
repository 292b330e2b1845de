use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{ProviderEndpoints, ProviderType, Reason};
use crate::providers::testserver::{
    Canned, TestServer, app, assert_no_leak, http, invalid, transient, valid,
};

const TOKEN: &str = "IGAAtoken-secret";

fn ig(server: &TestServer) -> App {
    let endpoints = ProviderEndpoints {
        api_base_url: Some(format!("{}/v25.0", server.base)),
        token_url: Some(server.url("/oauth/access_token")),
        ..Default::default()
    };
    app(ProviderType::Instagram, endpoints, Some("s3cret"))
}

async fn check_with(answer: Canned) -> Verdict {
    let server = TestServer::start(vec![("/v25.0/me", answer)]).await;
    let v = Instagram
        .check(&http(), &ig(&server), &Token::new(TOKEN))
        .await;
    assert_no_leak(&v, TOKEN);
    v
}

fn graph_error(status: u16, code: i64, subcode: Option<i64>) -> Canned {
    Canned::json(
        status,
        json!({"error": {"message": "Error validating access token", "type": "OAuthException",
                         "code": code, "error_subcode": subcode, "fbtrace_id": "x"}}),
    )
}

#[tokio::test]
async fn valid_token_names_the_professional_account() {
    let server = TestServer::start(vec![(
        "/v25.0/me",
        Canned::json(
            200,
            json!({"user_id": "17841400000", "username": "shop", "id": "9001"}),
        ),
    )])
    .await;
    let g = valid(
        Instagram
            .check(&http(), &ig(&server), &Token::new(TOKEN))
            .await,
    );
    let acct = g.account.unwrap();
    assert_eq!(acct.id.as_deref(), Some("17841400000"));
    assert_eq!(acct.name.as_deref(), Some("shop"));
    assert!(g.target_ids.unwrap().contains(&"9001".to_owned()));
    let seen = server.one("/v25.0/me");
    assert_eq!(seen.query["access_token"], TOKEN);
    assert_eq!(seen.query["fields"], "user_id,username");
}

#[tokio::test]
async fn graph_errors() {
    assert_eq!(
        invalid(&check_with(graph_error(400, 190, Some(460))).await),
        Reason::Revoked
    );
    assert_eq!(
        invalid(&check_with(graph_error(400, 190, Some(463))).await),
        Reason::Expired
    );
    assert_eq!(
        invalid(&check_with(graph_error(400, 190, Some(459))).await),
        Reason::AccountActionRequired
    );
    assert_eq!(
        invalid(&check_with(graph_error(403, 10, None)).await),
        Reason::ScopesMissing
    );
    transient(&check_with(graph_error(400, 4, None)).await);
    transient(&check_with(graph_error(500, 2, None)).await);
    let v = check_with(graph_error(400, 17, None).header("retry-after", "60")).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn usage_outage_and_garbage() {
    let ok = Canned::json(200, json!({"user_id": "1", "username": "u"}));
    let buc = r#"{"1":[{"type":"instagram","call_count":98,"total_cputime":1,"total_time":1,"estimated_time_to_regain_access":2}]}"#;
    let v = check_with(ok.header("x-business-use-case-usage", buc)).await;
    assert_eq!(transient(&v), Some(Duration::from_secs(120)));
    transient(&check_with(Canned::text(502, "bad gateway")).await);
    transient(&check_with(Canned::text(200, "not json")).await);
}

#[tokio::test]
async fn renew_uses_ig_refresh_token_unversioned() {
    let server = TestServer::start(vec![
        (
            "/refresh_access_token",
            Canned::json(
                200,
                json!({"access_token": "IGAAnew", "token_type": "bearer", "expires_in": 5_183_944}),
            ),
        ),
        ("/refresh_access_token", graph_error(400, 190, Some(460))),
    ])
    .await;
    let a = ig(&server);
    let t = Token::new(TOKEN);
    match Instagram.renew(&http(), &a, &t, None).await {
        Renewal::Renewed(n) => assert_eq!(n.access_token.expose(), "IGAAnew"),
        other => panic!("{other:?}"),
    }
    let seen = server.one("/refresh_access_token");
    assert_eq!(seen.query["grant_type"], "ig_refresh_token");
    assert_eq!(seen.query["access_token"], TOKEN);
    assert!(matches!(
        Instagram.renew(&http(), &a, &t, None).await,
        Renewal::Rejected { .. }
    ));
}

#[tokio::test]
async fn code_exchange_reads_both_shapes_and_goes_long_lived() {
    let server = TestServer::start(vec![
        (
            "/oauth/access_token",
            Canned::json(
                200,
                json!({"data": [{"access_token": "IGshort", "user_id": "1",
                "permissions": "instagram_business_basic,instagram_business_content_publish"}]}),
            ),
        ),
        (
            "/oauth/access_token",
            Canned::json(
                400,
                json!({"error_type": "OAuthException", "code": 400,
                                     "error_message": "This authorization code has been used"}),
            ),
        ),
        (
            "/access_token",
            Canned::json(
                200,
                json!({"access_token": "IGlong", "expires_in": 5_184_000}),
            ),
        ),
    ])
    .await;
    let a = ig(&server);
    match Instagram
        .exchange_code(&http(), &a, "c0de", "https://relink/cb", None)
        .await
    {
        Renewal::Renewed(n) => {
            assert_eq!(n.access_token.expose(), "IGlong");
            assert_eq!(n.scopes.map(|s| s.len()), Some(2));
        }
        other => panic!("{other:?}"),
    }
    let form = server.one("/oauth/access_token").form;
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["client_secret"], "s3cret");
    assert_eq!(
        server.one("/access_token").query["grant_type"],
        "ig_exchange_token"
    );
    assert!(matches!(
        Instagram
            .exchange_code(&http(), &a, "c0de", "https://relink/cb", None)
            .await,
        Renewal::Rejected { .. }
    ));
}

#[test]
fn version_is_stripped() {
    assert_eq!(
        unversioned("https://graph.instagram.com/v25.0"),
        "https://graph.instagram.com"
    );
    assert_eq!(
        unversioned("https://graph.instagram.com"),
        "https://graph.instagram.com"
    );
}
