//! Provider type `linkedin`: checked with LinkedIn's token introspection, which says whether a
//! token is active, expired or revoked, its comma-separated scopes and when it expires. It
//! does not name the member or organization, so `spec.account.id` is not verified here.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::answer::{clip, unix};
use super::oauth2::{ErrorBody, common_failures, transport};
use super::{App, Endpoint, Grant, Http, Token, Validator, Verdict, split_scopes};
use crate::api::Reason;

pub struct LinkedIn;

impl Validator for LinkedIn {
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
struct Introspection {
    active: bool,
    /// `active`, `expired` or `revoked`.
    status: Option<String>,
    scope: Option<String>,
    expires_at: Option<i64>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let Some(url) = app.endpoint(Endpoint::Introspection) else {
        return Verdict::Misconfigured {
            message: "the provider has no introspection URL (spec.endpoints.introspectionUrl)"
                .into(),
        };
    };
    let Some(secret) = &app.client_secret else {
        return Verdict::Misconfigured {
            message: "LinkedIn token introspection needs the client secret (spec.clientSecretRef)"
                .into(),
        };
    };
    let form = [
        ("client_id", app.settings.client_id.as_str()),
        ("client_secret", secret.expose()),
        ("token", token.expose()),
    ];
    let req = http
        .request(app.trusted, Method::POST, &url)
        .header("Accept", "application/json")
        .form(&form);
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    if let Some(v) = common_failures(&resp, "introspection") {
        return v;
    }
    let secrets = [token, secret];
    if resp.status == 200
        && let Some(i) = resp.json::<Introspection>()
    {
        return judge(i);
    }
    let error = resp.json::<ErrorBody>();
    let what = error
        .as_ref()
        .map(|e| clip(&e.describe(), &secrets))
        .unwrap_or_else(|| format!("HTTP {}", resp.status));
    match (resp.status, error.as_ref().map(|e| e.error.as_str())) {
        (_, Some("invalid_client" | "unauthorized_client")) | (401, _) => Verdict::Misconfigured {
            message: format!("LinkedIn refused the app credentials: {what}"),
        },
        (400, Some("invalid_token")) => Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!("LinkedIn rejected the token: {what}"),
        },
        _ => Verdict::Transient {
            message: format!("LinkedIn introspection failed: {what}"),
            retry_after: None,
        },
    }
}

fn judge(i: Introspection) -> Verdict {
    let status = i
        .status
        .as_deref()
        .unwrap_or(if i.active { "active" } else { "" });
    if i.active && status == "active" {
        return Verdict::Valid(Grant {
            scopes: i.scope.as_deref().map(split_scopes),
            expires_at: i.expires_at.and_then(unix),
            ..Grant::default()
        });
    }
    match status {
        "expired" => Verdict::Invalid {
            reason: Reason::Expired,
            message: "LinkedIn reports the token as expired".into(),
        },
        _ => Verdict::Invalid {
            reason: Reason::Revoked,
            message: "LinkedIn reports the token as revoked or inactive".into(),
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

    const TOKEN: &str = "AQVsecret";

    async fn check_with(answer: Canned) -> (Verdict, TestServer) {
        let server = TestServer::start(vec![("/oauth/v2/introspectToken", answer)]).await;
        let endpoints = ProviderEndpoints {
            introspection_url: Some(server.url("/oauth/v2/introspectToken")),
            ..Default::default()
        };
        let a = app(ProviderType::Linkedin, endpoints, Some("s3cret"));
        let v = LinkedIn.check(&http(), &a, &Token::new(TOKEN)).await;
        assert_no_leak(&v, TOKEN);
        assert_no_leak(&v, "s3cret");
        (v, server)
    }

    #[tokio::test]
    async fn active_token_reports_comma_separated_scopes() {
        let (v, server) = check_with(Canned::json(
            200,
            json!({"active": true, "client_id": "app-id", "authorized_at": 1_493_055_596,
                   "created_at": 1_493_055_596, "status": "active", "expires_at": 4_102_444_800_i64,
                   "scope": "r_liteprofile,r_emailaddress,w_member_social", "auth_type": "3L"}),
        ))
        .await;
        let g = valid(v);
        assert_eq!(
            g.scopes.unwrap(),
            ["r_liteprofile", "r_emailaddress", "w_member_social"]
        );
        assert_eq!(g.expires_at.map(|t| t.as_second()), Some(4_102_444_800));
        let form = server.one("/oauth/v2/introspectToken").form;
        assert_eq!(form["client_id"], "app-id");
        assert_eq!(form["client_secret"], "s3cret");
        assert_eq!(form["token"], TOKEN);
    }

    #[tokio::test]
    async fn expired_and_revoked() {
        let (v, _s) = check_with(Canned::json(
            200,
            json!({"active": false, "status": "expired"}),
        ))
        .await;
        assert_eq!(invalid(&v), Reason::Expired);
        let (v, _s) = check_with(Canned::json(
            200,
            json!({"active": false, "status": "revoked"}),
        ))
        .await;
        assert_eq!(invalid(&v), Reason::Revoked);
        let (v, _s) = check_with(Canned::json(200, json!({"active": false}))).await;
        assert_eq!(invalid(&v), Reason::Revoked);
    }

    #[tokio::test]
    async fn bad_client_credentials_are_the_providers_problem() {
        let (v, _s) = check_with(Canned::json(
            401,
            json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
        ))
        .await;
        misconfigured(&v);
    }

    #[tokio::test]
    async fn rate_limit_outage_and_garbage_are_transient() {
        let (v, _s) = check_with(Canned::text(429, "").header("retry-after", "9")).await;
        assert_eq!(transient(&v), Some(Duration::from_secs(9)));
        let (v, _s) = check_with(Canned::text(500, "oops")).await;
        transient(&v);
        let (v, _s) = check_with(Canned::text(200, "<html>")).await;
        transient(&v);
    }
}
