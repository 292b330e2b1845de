//! Provider type `tiktok`: a check is a probe of `/v2/user/info/`, whose answer always carries
//! `error.code` (`ok` on success); the HTTP status alone does not tell a dead token (401
//! `access_token_invalid`) from a missing scope (401 `scope_not_authorized`). Renewal is the
//! standard refresh with `client_key` (from the preset); TikTok rotates refresh tokens.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::answer::{account, aliases, clip};
use super::oauth2::{no_userinfo_url, transport};
use super::{App, Endpoint, Grant, Http, Token, Validator, Verdict};
use crate::api::Reason;

pub struct TikTok;

impl Validator for TikTok {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Data {
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    open_id: Option<String>,
    union_id: Option<String>,
    display_name: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    code: String,
    #[serde(default)]
    message: String,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let Some(url) = app.endpoint(Endpoint::Userinfo) else {
        return no_userinfo_url();
    };
    let req = http
        .request(app.trusted, Method::GET, &url)
        .query(&[("fields", "open_id,union_id,display_name")])
        .bearer_auth(token.expose());
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    let Some(a) = resp.json::<Answer>() else {
        return Verdict::Transient {
            message: format!(
                "user/info answered HTTP {} with an unreadable body",
                resp.status
            ),
            retry_after: resp.retry_after(),
        };
    };
    let (code, message) = match &a.error {
        Some(e) => (e.code.as_str(), clip(&e.message, &[token])),
        None => ("", String::new()),
    };
    let invalid = |reason, why: &str| Verdict::Invalid {
        reason,
        message: format!("TikTok: {why} ({code}: {message})"),
    };
    match code {
        "ok" if resp.status == 200 => match a.data.and_then(|d| d.user) {
            Some(u) => Verdict::Valid(Grant {
                target_ids: aliases([u.open_id.clone(), u.union_id]),
                account: account(u.open_id, u.display_name),
                ..Grant::default()
            }),
            None => Verdict::Transient {
                message: "user/info answered without a user".into(),
                retry_after: None,
            },
        },
        "access_token_invalid" => invalid(Reason::Revoked, "the token is invalid or expired"),
        "scope_not_authorized" | "scope_permission_missed" => invalid(
            Reason::ScopesMissing,
            "the person did not grant user.info.basic, which the check needs",
        ),
        _ => Verdict::Transient {
            message: format!(
                "user/info answered HTTP {} ({code}: {message}); retrying later",
                resp.status
            ),
            retry_after: resp.retry_after(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::{ProviderEndpoints, ProviderType};
    use crate::providers::testserver::{
        Canned, TestServer, app, assert_no_leak, http, invalid, transient, valid,
    };
    use crate::providers::{Renewal, Validator};

    const TOKEN: &str = "act.secret";

    fn tiktok(server: &TestServer) -> App {
        let endpoints = ProviderEndpoints {
            userinfo_url: Some(server.url("/v2/user/info/")),
            token_url: Some(server.url("/v2/oauth/token/")),
            ..Default::default()
        };
        app(ProviderType::Tiktok, endpoints, Some("s3cret"))
    }

    async fn check_with(answer: Canned) -> Verdict {
        let server = TestServer::start(vec![("/v2/user/info/", answer)]).await;
        let v = TikTok
            .check(&http(), &tiktok(&server), &Token::new(TOKEN))
            .await;
        assert_no_leak(&v, TOKEN);
        v
    }

    fn error(status: u16, code: &str) -> Canned {
        Canned::json(
            status,
            json!({"data": {}, "error": {"code": code, "message": "m", "log_id": "2023"}}),
        )
    }

    #[tokio::test]
    async fn ok_names_the_user() {
        let server = TestServer::start(vec![(
            "/v2/user/info/",
            Canned::json(200, json!({"data": {"user": {"open_id": "723f24d7", "union_id": "c9c60f44",
                "display_name": "Tik Toker"}}, "error": {"code": "ok", "message": "", "log_id": "2022"}})),
        )])
        .await;
        let g = valid(
            TikTok
                .check(&http(), &tiktok(&server), &Token::new(TOKEN))
                .await,
        );
        assert_eq!(g.account.unwrap().id.as_deref(), Some("723f24d7"));
        let seen = server.one("/v2/user/info/");
        assert_eq!(seen.query["fields"], "open_id,union_id,display_name");
        assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
    }

    #[tokio::test]
    async fn error_codes_not_statuses_decide() {
        assert_eq!(
            invalid(&check_with(error(401, "access_token_invalid")).await),
            Reason::Revoked
        );
        assert_eq!(
            invalid(&check_with(error(401, "scope_not_authorized")).await),
            Reason::ScopesMissing
        );
        let v = check_with(error(429, "rate_limit_exceeded").header("retry-after", "60")).await;
        assert_eq!(transient(&v), Some(Duration::from_secs(60)));
        transient(&check_with(error(500, "internal_error")).await);
        transient(&check_with(Canned::text(502, "<html>bad gateway</html>")).await);
        transient(&check_with(Canned::text(200, "garbage")).await);
    }

    #[tokio::test]
    async fn refresh_sends_client_key_and_reads_rotation() {
        let server = TestServer::start(vec![
            (
                "/v2/oauth/token/",
                Canned::json(
                    200,
                    json!({"access_token": "act.new", "expires_in": 86_400,
                "open_id": "723f24d7", "refresh_expires_in": 31_536_000, "refresh_token": "rft.new",
                "scope": "user.info.basic,video.list", "token_type": "Bearer"}),
                ),
            ),
            (
                "/v2/oauth/token/",
                Canned::json(
                    200,
                    json!({"error": "invalid_grant",
                "error_description": "Refresh token is invalid or expired.", "log_id": "2023"}),
                ),
            ),
            (
                "/v2/oauth/token/",
                Canned::json(
                    401,
                    json!({"error": "invalid_client",
                "error_description": "Client key or secret is incorrect.", "log_id": "2023"}),
                ),
            ),
        ])
        .await;
        let a = tiktok(&server);
        let (at, rt) = (Token::new(TOKEN), Token::new("rft.old"));
        match TikTok.renew(&http(), &a, &at, Some(&rt)).await {
            Renewal::Renewed(n) => {
                assert_eq!(n.refresh_token.unwrap().expose(), "rft.new");
                assert_eq!(n.scopes.unwrap(), ["user.info.basic", "video.list"]);
                // `refresh_expires_in` (a year): the refresh token's own deadline.
                let days = n
                    .refresh_expires_at
                    .map(|t| (t.as_second() - jiff::Timestamp::now().as_second()) / 86_400);
                assert_eq!(days, Some(365));
            }
            other => panic!("{other:?}"),
        }
        let form = server.one("/v2/oauth/token/").form;
        assert_eq!(form["client_key"], "app-id");
        assert_eq!(form["client_secret"], "s3cret");
        assert!(!form.contains_key("client_id"));
        assert!(matches!(
            TikTok.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Rejected { .. }
        ));
        assert!(matches!(
            TikTok.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Misconfigured { .. }
        ));
    }
}
