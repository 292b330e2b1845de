//! Provider type `microsoft`: a check is a probe of Microsoft Graph `/me`; the scopes come from
//! the `scp` claim when the access token is a JWT (work and school accounts), else from the
//! token response, and expiry from the token response.
//! Renewal is the standard refresh (each answer carries a new refresh token to store);
//! `interaction_required` there means a person must sign in again.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::answer::{account, aliases, clip, jwt_scopes};
use super::oauth2::{challenge, common_failures, get_userinfo};
use super::{App, Grant, Http, Response, Token, Validator, Verdict};
use crate::api::Reason;

pub struct Microsoft;

impl Validator for Microsoft {
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
#[serde(rename_all = "camelCase")]
struct Me {
    id: Option<String>,
    display_name: Option<String>,
    mail: Option<String>,
    user_principal_name: Option<String>,
}

/// `{"error": {"code": "InvalidAuthenticationToken", "message": "..."}}`
#[derive(Deserialize)]
struct GraphError {
    error: GraphErrorBody,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let resp = match get_userinfo(http, app, token).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    if let Some(v) = common_failures(&resp, "Microsoft Graph") {
        return v;
    }
    if resp.status == 200 {
        return signed_in(resp.json::<Me>(), token);
    }
    refusal(&resp, token)
}

/// The verdict on Graph's `/me` answering 200.
fn signed_in(me: Option<Me>, token: &Token) -> Verdict {
    match me {
        Some(me) if me.id.is_some() => Verdict::Valid(Grant {
            target_ids: aliases([
                me.id.clone(),
                me.mail.clone(),
                me.user_principal_name.clone(),
            ]),
            account: account(
                me.id,
                me.mail.or(me.user_principal_name).or(me.display_name),
            ),
            // Work and school tokens are JWTs whose `scp` lists the delegated permissions.
            scopes: jwt_scopes(token),
            ..Grant::default()
        }),
        _ => Verdict::Transient {
            message: "Microsoft Graph answered HTTP 200 with an unreadable body".into(),
            retry_after: None,
        },
    }
}

/// The verdict on Graph's `/me` refusing the token (any status but 200, 429 and 5xx).
fn refusal(resp: &Response, token: &Token) -> Verdict {
    let challenge = challenge(resp);
    let error = resp.json::<GraphError>().map(|e| e.error);
    let what = error
        .as_ref()
        .map(|e| format!("{}: {}", e.code, clip(&e.message, &[token])))
        .unwrap_or_else(|| format!("HTTP {}", resp.status));
    let lower = what.to_lowercase();
    match resp.status {
        // Conditional Access wants more (MFA, a compliant device): only the person can satisfy it.
        401 if challenge.contains("insufficient_claims") => Verdict::Invalid {
            reason: Reason::AccountActionRequired,
            message: format!(
                "Microsoft requires the person to sign in again to satisfy a Conditional Access policy ({what})"
            ),
        },
        // A token for another resource (e.g. Outlook IMAP/SMTP) is not rejected because it is
        // dead: Graph is the wrong probe for it.
        401 if lower.contains("audience") => Verdict::Misconfigured {
            message: format!(
                "the token is not for Microsoft Graph; set spec.endpoints.userinfoUrl to an endpoint of the token's resource ({what})"
            ),
        },
        401 => Verdict::Invalid {
            reason: if lower.contains("expired") {
                Reason::Expired
            } else {
                Reason::Revoked
            },
            message: format!("Microsoft Graph rejected the token ({what})"),
        },
        403 => Verdict::Invalid {
            reason: Reason::ScopesMissing,
            message: format!(
                "the token may not read the signed-in user (User.Read missing?) ({what})"
            ),
        },
        status => Verdict::Transient {
            message: format!("Microsoft Graph answered HTTP {status} ({what})"),
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
    use crate::providers::{Renewal, Validator};

    const TOKEN: &str = "eyJ0eXAi.secret";

    fn ms(server: &TestServer) -> App {
        let endpoints = ProviderEndpoints {
            userinfo_url: Some(server.url("/v1.0/me")),
            token_url: Some(server.url("/common/oauth2/v2.0/token")),
            ..Default::default()
        };
        app(ProviderType::Microsoft, endpoints, Some("s3cret"))
    }

    async fn check_with(answer: Canned) -> Verdict {
        let server = TestServer::start(vec![("/v1.0/me", answer)]).await;
        let v = Microsoft
            .check(&http(), &ms(&server), &Token::new(TOKEN))
            .await;
        assert_no_leak(&v, TOKEN);
        v
    }

    fn graph_error(status: u16, code: &str, message: &str) -> Canned {
        Canned::json(
            status,
            json!({"error": {"code": code, "message": message,
            "innerError": {"date": "2025-01-01T00:00:00", "request-id": "r"}}}),
        )
    }

    #[tokio::test]
    async fn valid_token_names_the_mailbox() {
        let server = TestServer::start(vec![(
            "/v1.0/me",
            Canned::json(
                200,
                json!({"id": "87d349ed", "displayName": "Megan Bowen",
                "mail": "MeganB@contoso.com", "userPrincipalName": "MeganB@contoso.com"}),
            ),
        )])
        .await;
        let g = valid(
            Microsoft
                .check(&http(), &ms(&server), &Token::new(TOKEN))
                .await,
        );
        assert_eq!(
            g.account.unwrap().name.as_deref(),
            Some("MeganB@contoso.com")
        );
        assert!(
            g.target_ids
                .unwrap()
                .contains(&"meganb@contoso.com".to_owned())
        );
        let seen = server.one("/v1.0/me");
        assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
    }

    #[tokio::test]
    async fn unauthorized_variants() {
        let expired = graph_error(
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )
        .header(
            "www-authenticate",
            r#"Bearer realm="", error="invalid_token""#,
        );
        assert_eq!(invalid(&check_with(expired).await), Reason::Expired);
        let bad = graph_error(
            401,
            "InvalidAuthenticationToken",
            "IDX14100: JWT is not well formed.",
        );
        assert_eq!(invalid(&check_with(bad).await), Reason::Revoked);
        let claims = graph_error(
            401,
            "InvalidAuthenticationToken",
            "Continuous access evaluation resulted in challenge.",
        )
        .header(
            "www-authenticate",
            r#"Bearer realm="", error="insufficient_claims", claims="eyJhY2Nlc3MiOnt9fQ==""#,
        );
        assert_eq!(
            invalid(&check_with(claims).await),
            Reason::AccountActionRequired
        );
        let audience = graph_error(401, "InvalidAuthenticationToken", "Invalid audience.");
        assert!(misconfigured(&check_with(audience).await).contains("userinfoUrl"));
    }

    #[tokio::test]
    async fn forbidden_means_permission_missing() {
        let v = check_with(graph_error(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ))
        .await;
        assert_eq!(invalid(&v), Reason::ScopesMissing);
    }

    #[tokio::test]
    async fn throttling_outage_and_garbage_are_transient() {
        let v = check_with(
            graph_error(429, "TooManyRequests", "Too many requests").header("retry-after", "7"),
        )
        .await;
        assert_eq!(transient(&v), Some(Duration::from_secs(7)));
        transient(&check_with(graph_error(503, "serviceNotAvailable", "down")).await);
        transient(&check_with(Canned::text(200, "<html>")).await);
    }

    #[tokio::test]
    async fn refresh_errors_of_the_token_endpoint() {
        let aad = |error: &str, code: u32| {
            Canned::json(
                400,
                json!({"error": error,
                "error_description": format!("AADSTS{code}: something. Trace ID: t"),
                "error_codes": [code], "timestamp": "2025-01-01 00:00:00Z"}),
            )
        };
        let server = TestServer::start(vec![
            (
                "/common/oauth2/v2.0/token",
                Canned::json(
                    200,
                    json!({"token_type": "Bearer",
                "scope": "User.Read Mail.Send", "expires_in": 3599, "access_token": "new-at",
                "refresh_token": "new-rt"}),
                ),
            ),
            ("/common/oauth2/v2.0/token", aad("invalid_grant", 700_082)),
            (
                "/common/oauth2/v2.0/token",
                aad("interaction_required", 50_079),
            ),
            (
                "/common/oauth2/v2.0/token",
                aad("invalid_client", 7_000_215),
            ),
            (
                "/common/oauth2/v2.0/token",
                aad("temporarily_unavailable", 50_001),
            ),
        ])
        .await;
        let a = ms(&server);
        let (at, rt) = (Token::new(TOKEN), Token::new("old-rt"));
        match Microsoft.renew(&http(), &a, &at, Some(&rt)).await {
            Renewal::Renewed(n) => {
                assert_eq!(
                    n.refresh_token.map(|t| t.expose().to_owned()).as_deref(),
                    Some("new-rt")
                );
                assert_eq!(n.scopes.map(|s| s.len()), Some(2));
            }
            other => panic!("{other:?}"),
        }
        let form = server.one("/common/oauth2/v2.0/token").form;
        assert_eq!(form["client_id"], "app-id");
        assert_eq!(form["client_secret"], "s3cret");
        assert_eq!(form["refresh_token"], "old-rt");
        let r = Microsoft.renew(&http(), &a, &at, Some(&rt)).await;
        assert!(
            matches!(&r, Renewal::Rejected { message } if message.contains("AADSTS700082")),
            "{r:?}"
        );
        assert!(matches!(
            Microsoft.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Rejected { .. }
        ));
        assert!(matches!(
            Microsoft.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Misconfigured { .. }
        ));
        assert!(matches!(
            Microsoft.renew(&http(), &a, &at, Some(&rt)).await,
            Renewal::Transient { .. }
        ));
    }

    #[tokio::test]
    async fn suberrors_decide_not_the_aadsts_codes() {
        let sub = |error: &str, suberror: &str| {
            Canned::json(
                400,
                json!({"error": error, "suberror": suberror,
                "error_description": "AADSTS50079: something. Trace ID: t",
                "error_codes": [50_079]}),
            )
        };
        let path = "/common/oauth2/v2.0/token";
        let server = TestServer::start(vec![
            (path, sub("interaction_required", "basic_action")),
            (path, sub("invalid_grant", "additional_action")),
            (path, sub("interaction_required", "consent_required")),
            (path, sub("invalid_grant", "bad_token")),
        ])
        .await;
        let a = ms(&server);
        let (at, rt) = (Token::new(TOKEN), Token::new("old-rt"));
        for want in [
            Some(Reason::AccountActionRequired),
            Some(Reason::AccountActionRequired),
            Some(Reason::ReauthorizationRequired),
            None,
        ] {
            match (Microsoft.renew(&http(), &a, &at, Some(&rt)).await, want) {
                (Renewal::NeedsPerson { reason, message }, Some(w)) => {
                    assert_eq!(reason, w);
                    assert!(
                        message.contains("AADSTS50079"),
                        "the code stays a hint: {message}"
                    );
                }
                (Renewal::Rejected { message }, None) => {
                    assert!(message.contains("bad_token"), "{message}")
                }
                (other, w) => panic!("{other:?} for {w:?}"),
            }
        }
    }
}
