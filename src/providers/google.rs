//! Provider type `google`: checked with the `tokeninfo` endpoint, which reports the granted
//! scopes (with granular consent a person may have granted only some), the audience, the expiry
//! and, with the `email` scope, the mailbox. Renewal is the standard refresh.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::answer::{account, aliases, clip, de_string, in_secs, unix};
use super::oauth2::{ErrorBody, common_failures, transport};
use super::{App, Endpoint, Grant, Http, Token, Validator, Verdict, split_scopes};
use crate::api::Reason;

pub struct Google;

impl Validator for Google {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }
}

/// The tokeninfo answer. Google sends `exp` and `expires_in` as strings.
#[derive(Deserialize)]
struct TokenInfo {
    aud: Option<String>,
    azp: Option<String>,
    sub: Option<String>,
    email: Option<String>,
    scope: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    exp: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    expires_in: Option<String>,
    error: Option<String>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let Some(url) = app.endpoint(Endpoint::Introspection) else {
        return Verdict::Misconfigured {
            message: "the provider has no tokeninfo URL (spec.endpoints.introspectionUrl)".into(),
        };
    };
    // POST, so the token is in the body and never in a URL that proxies and logs keep.
    let req = http
        .request(app.trusted, Method::POST, &url)
        .header("Accept", "application/json")
        .form(&[("access_token", token.expose())]);
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    if let Some(v) = common_failures(&resp, "tokeninfo") {
        return v;
    }
    match resp.status {
        200 => match resp.json::<TokenInfo>() {
            Some(info) if info.error.is_none() => grant(app, info),
            _ => Verdict::Transient {
                message: "tokeninfo answered HTTP 200 with an unreadable body".into(),
                retry_after: None,
            },
        },
        // `{"error":"invalid_token","error_description":"Invalid Value"}`: expired or revoked;
        // Google does not say which (the controller calls it Expired once the recorded expiry
        // has passed). A refresh token, if stored, can still bring the connection back.
        400 | 401 => match resp.json::<ErrorBody>() {
            Some(e) if e.error == "invalid_request" => Verdict::Transient {
                message: format!(
                    "tokeninfo refused the request: {}",
                    clip(&e.describe(), &[token])
                ),
                retry_after: None,
            },
            e => Verdict::Invalid {
                reason: Reason::Revoked,
                message: format!(
                    "Google rejected the access token as expired or revoked ({})",
                    e.map(|e| clip(&e.describe(), &[token]))
                        .unwrap_or_else(|| format!("HTTP {}", resp.status))
                ),
            },
        },
        status => Verdict::Transient {
            message: format!("tokeninfo answered HTTP {status}"),
            retry_after: None,
        },
    }
}

fn grant(app: &App, info: TokenInfo) -> Verdict {
    let client = &app.settings.client_id;
    let aud = info.aud.as_ref().or(info.azp.as_ref());
    if let Some(aud) = aud
        && aud != client
    {
        // Such a token works, but relink cannot renew it with this app's credentials.
        return Verdict::Misconfigured {
            message: format!(
                "the token was issued to OAuth client {aud}, not to spec.clientId {client}"
            ),
        };
    }
    let expires_at = info
        .exp
        .and_then(|s| s.parse().ok())
        .and_then(unix)
        .or_else(|| {
            info.expires_in
                .and_then(|s| s.parse().ok())
                .and_then(in_secs)
        });
    Verdict::Valid(Grant {
        target_ids: aliases([info.sub.clone(), info.email.clone()]),
        account: account(info.email.clone().or(info.sub), info.email),
        scopes: info.scope.as_deref().map(split_scopes),
        expires_at,
        ..Grant::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::{ProviderEndpoints, ProviderType};
    use crate::providers::Renewal;
    use crate::providers::testserver::{
        Canned, TestServer, app, assert_no_leak, http, invalid, misconfigured, transient, valid,
    };

    const TOKEN: &str = "ya29.secret";

    async fn check_with(answer: Canned) -> (Verdict, TestServer) {
        let server = TestServer::start(vec![("/tokeninfo", answer)]).await;
        let endpoints = ProviderEndpoints {
            introspection_url: Some(server.url("/tokeninfo")),
            ..Default::default()
        };
        let a = app(ProviderType::Google, endpoints, Some("s3cret"));
        let v = Google.check(&http(), &a, &Token::new(TOKEN)).await;
        assert_no_leak(&v, TOKEN);
        (v, server)
    }

    #[tokio::test]
    async fn testing_apps_refresh_tokens_end_by_the_documented_lifetime() {
        let issued = Canned::json(
            200,
            json!({"access_token": "ya29.new", "expires_in": 3599, "refresh_token": "1//0new",
                   "scope": "https://www.googleapis.com/auth/gmail.send", "token_type": "Bearer"}),
        );
        let refreshed = Canned::json(
            200,
            json!({"access_token": "ya29.next", "expires_in": 3599, "token_type": "Bearer",
                   "scope": "https://www.googleapis.com/auth/gmail.send"}),
        );
        let server = TestServer::start(vec![("/token", issued), ("/token", refreshed)]).await;
        let endpoints = ProviderEndpoints {
            token_url: Some(server.url("/token")),
            ..Default::default()
        };
        let mut a = app(ProviderType::Google, endpoints, Some("s3cret"));
        a.settings.refresh_token_lifetime = Some("168h".into());
        let end = |r: Renewal| match r {
            Renewal::Renewed(n) => n
                .refresh_expires_at
                .map(|t| (t.as_second() - jiff::Timestamp::now().as_second() + 60) / 3600),
            other => panic!("{other:?}"),
        };
        // A new refresh token (the login): it ends 7 days after it was issued.
        let code = Google
            .exchange_code(&http(), &a, "4/0code", "https://relink/cb", None)
            .await;
        assert_eq!(end(code), Some(168));
        // A refresh that keeps the refresh token does not move its end.
        let (at, rt) = (Token::new(TOKEN), Token::new("1//0new"));
        assert_eq!(end(Google.renew(&http(), &a, &at, Some(&rt)).await), None);
        // Out of range: the provider is not ready, the field named.
        a.settings.refresh_token_lifetime = Some("9000h".into());
        let e = a.settings.refresh_token_lifetime().unwrap_err();
        assert!(e.contains("spec.refreshTokenLifetime"), "{e}");
    }

    #[tokio::test]
    async fn valid_token_reports_scopes_mailbox_and_expiry() {
        let (v, server) = check_with(Canned::json(
            200,
            json!({"azp": "app-id", "aud": "app-id", "sub": "1057", "exp": "4102444800",
                   "expires_in": "3599", "email": "Ann@example.com", "email_verified": "true",
                   "access_type": "offline",
                   "scope": "openid https://www.googleapis.com/auth/gmail.send https://www.googleapis.com/auth/userinfo.email"}),
        ))
        .await;
        let g = valid(v);
        assert_eq!(g.scopes.map(|s| s.len()), Some(3));
        assert_eq!(g.expires_at.map(|t| t.as_second()), Some(4_102_444_800));
        let ids = g.target_ids.unwrap();
        assert!(ids.contains(&"ann@example.com".to_owned()) && ids.contains(&"1057".to_owned()));
        let call = server.one("/tokeninfo");
        assert_eq!(call.form["access_token"], TOKEN);
        assert!(call.query.is_empty(), "the token never travels in the URL");
    }

    #[tokio::test]
    async fn invalid_token_is_dead() {
        let (v, _s) = check_with(Canned::json(
            400,
            json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        ))
        .await;
        assert_eq!(invalid(&v), Reason::Revoked);
    }

    #[tokio::test]
    async fn token_of_another_client_is_a_setup_problem() {
        let (v, _s) = check_with(Canned::json(
            200,
            json!({"aud": "other-app", "scope": "openid", "expires_in": 100}),
        ))
        .await;
        assert!(misconfigured(&v).contains("other-app"));
    }

    #[tokio::test]
    async fn rate_limit_outage_and_garbage_are_transient() {
        let (v, _s) = check_with(Canned::text(429, "").header("retry-after", "12")).await;
        assert_eq!(transient(&v), Some(Duration::from_secs(12)));
        let (v, _s) = check_with(Canned::text(503, "unavailable")).await;
        transient(&v);
        let (v, _s) = check_with(Canned::text(200, "<html>")).await;
        transient(&v);
        let (v, _s) = check_with(Canned::text(404, "not found")).await;
        transient(&v);
    }
}
