//! Provider type `x`: OAuth 2.0 with PKCE; a check is a probe of `/2/users/me`. X's token
//! endpoint wants HTTP Basic for confidential clients and `client_id` in the form for public
//! ones, so relink sends both; X answers 429 with `x-rate-limit-reset` (Unix seconds).

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::answer::{account, aliases, clip, wait_until_header};
use super::oauth2::{common_failures, get_userinfo};
use super::token::{code_form, refresh_form, token_request};
use super::{App, Grant, Http, Renewal, Token, Validator, Verdict};
use crate::api::Reason;

pub struct X;

impl Validator for X {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }

    fn renew<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        _access_token: &'a Token,
        refresh_token: Option<&'a Token>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let Some(refresh) = refresh_token else {
                return Renewal::Unsupported {
                    message: "no refresh token is stored (X issues one only with the offline.access scope)".into(),
                };
            };
            let mut form = refresh_form(refresh);
            form.push(("client_id", app.settings.client_id.clone()));
            dead_value(token_request(http, app, form).await)
        }
        .boxed()
    }

    fn exchange_code<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let mut form = code_form(code, redirect_uri, code_verifier);
            form.push(("client_id", app.settings.client_id.clone()));
            dead_value(token_request(http, app, form).await)
        }
        .boxed()
    }
}

/// X reports a used, expired or revoked code or refresh token as `invalid_request` ("Value
/// passed for the token was invalid."), not `invalid_grant`: that is a dead grant, not a
/// misconfigured app.
fn dead_value(r: Renewal) -> Renewal {
    match r {
        Renewal::Misconfigured { message }
            if message.contains("invalid_request") && message.contains("was invalid") =>
        {
            Renewal::Rejected { message }
        }
        other => other,
    }
}

#[derive(Deserialize)]
struct Me {
    data: Option<User>,
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: Option<String>,
}

/// X's RFC 7807-style error body.
#[derive(Deserialize, Default)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    reason: String,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let resp = match get_userinfo(http, app, token).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    if resp.status == 429 {
        return Verdict::Transient {
            message: "X is rate limiting /2/users/me (HTTP 429)".into(),
            retry_after: resp
                .retry_after()
                .or_else(|| wait_until_header(&resp, "x-rate-limit-reset")),
        };
    }
    if let Some(v) = common_failures(&resp, "X API") {
        return v;
    }
    let p = resp.json::<Problem>().unwrap_or_default();
    let what = clip(
        &[&p.title, &p.detail, &p.reason]
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(": "),
        &[token],
    );
    match resp.status {
        200 => match resp.json::<Me>().and_then(|m| m.data) {
            Some(u) => Verdict::Valid(Grant {
                target_ids: aliases([Some(u.id.clone()), u.username.clone()]),
                account: account(Some(u.id), u.username),
                ..Grant::default()
            }),
            None => Verdict::Transient {
                message: "X answered HTTP 200 without a user".into(),
                retry_after: None,
            },
        },
        401 => Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!("X rejected the token as expired or revoked ({what})"),
        },
        // The app is not attached to a project, or uses the wrong kind of authentication.
        403 if p.kind.contains("client-forbidden")
            || p.kind.contains("unsupported-authentication")
            || p.reason.contains("client-not-enrolled") =>
        {
            Verdict::Misconfigured {
                message: format!("X refused the app ({what})"),
            }
        }
        403 if what.to_lowercase().contains("suspend") || what.to_lowercase().contains("lock") => {
            Verdict::Invalid {
                reason: Reason::AccountActionRequired,
                message: format!("X restricted the account; its owner must act on X ({what})"),
            }
        }
        403 => Verdict::Invalid {
            reason: Reason::ScopesMissing,
            message: format!(
                "X refused /2/users/me; the token needs tweet.read and users.read ({what})"
            ),
        },
        status => Verdict::Transient {
            message: format!("X answered HTTP {status} ({what})"),
            retry_after: None,
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
        Canned, TestServer, app, assert_no_leak, http, invalid, misconfigured, transient, valid,
    };

    const TOKEN: &str = "bWRWa3gzdnk3secret";

    fn x(server: &TestServer, secret: Option<&str>) -> App {
        let endpoints = ProviderEndpoints {
            userinfo_url: Some(server.url("/2/users/me")),
            token_url: Some(server.url("/2/oauth2/token")),
            ..Default::default()
        };
        app(ProviderType::X, endpoints, secret)
    }

    async fn check_with(answer: Canned) -> Verdict {
        let server = TestServer::start(vec![("/2/users/me", answer)]).await;
        let v = X
            .check(&http(), &x(&server, Some("s3cret")), &Token::new(TOKEN))
            .await;
        assert_no_leak(&v, TOKEN);
        v
    }

    #[tokio::test]
    async fn valid_token_names_the_user() {
        let g = valid(
            check_with(Canned::json(
                200,
                json!({"data": {"id": "2244994945", "name": "X Dev", "username": "XDevelopers"}}),
            ))
            .await,
        );
        let ids = g.target_ids.unwrap();
        assert!(ids.contains(&"2244994945".to_owned()) && ids.contains(&"xdevelopers".to_owned()));
    }

    #[tokio::test]
    async fn unauthorized_and_forbidden() {
        let unauthorized = json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"});
        assert_eq!(
            invalid(&check_with(Canned::json(401, unauthorized)).await),
            Reason::Revoked
        );
        let enrolled = json!({"client_id": "1", "required_enrollment": "Appropriate Level of API Access",
            "registration_url": "https://developer.x.com", "title": "Client Forbidden",
            "reason": "client-not-enrolled", "detail": "When authenticating requests...",
            "type": "https://api.twitter.com/2/problems/client-forbidden"});
        misconfigured(&check_with(Canned::json(403, enrolled)).await);
        let forbidden = json!({"title": "Forbidden", "type": "about:blank", "status": 403, "detail": "Forbidden"});
        assert_eq!(
            invalid(&check_with(Canned::json(403, forbidden)).await),
            Reason::ScopesMissing
        );
    }

    #[tokio::test]
    async fn rate_limit_reset_header() {
        let reset = (jiff::Timestamp::now().as_second() + 120).to_string();
        let v = check_with(
            Canned::json(429, json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}))
                .header("x-rate-limit-reset", &reset),
        )
        .await;
        let wait = transient(&v).unwrap();
        assert!(
            wait <= Duration::from_secs(120) && wait >= Duration::from_secs(110),
            "{wait:?}"
        );
        transient(&check_with(Canned::text(503, "over capacity")).await);
        transient(&check_with(Canned::text(200, "<html>")).await);
    }

    #[tokio::test]
    async fn refresh_sends_basic_auth_and_client_id() {
        let server = TestServer::start(vec![
            ("/2/oauth2/token", Canned::json(200, json!({"token_type": "bearer", "expires_in": 7200,
                "access_token": "new-at", "scope": "tweet.read users.read offline.access", "refresh_token": "new-rt"}))),
            ("/2/oauth2/token", Canned::json(400, json!({"error": "invalid_request",
                "error_description": "Value passed for the token was invalid."}))),
        ])
        .await;
        let a = x(&server, Some("s3cret"));
        let (at, rt) = (Token::new(TOKEN), Token::new("old-rt"));
        assert!(matches!(X.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Renewed(n) if n.refresh_token.is_some()));
        let seen = server.one("/2/oauth2/token");
        assert!(
            seen.headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("Basic ")
        );
        assert_eq!(seen.form["client_id"], "app-id");
        assert_eq!(seen.form["refresh_token"], "old-rt");
        assert!(matches!(
            X.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Rejected { .. }
        ));
        assert!(matches!(
            X.renew(&http(), &a, &at, None).await,
            Renewal::Unsupported { .. }
        ));
    }
}
