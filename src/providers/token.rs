//! The RFC 6749 token endpoint: code exchange and refresh, and how its answers are read.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::oauth2::{ErrorBody, common_failures, transport};
use super::{App, ClientAuth, Endpoint, Http, RenewStyle, Token, split_scopes};

/// Tokens the provider issued.
#[derive(Clone, Debug)]
pub struct NewTokens {
    pub access_token: Token,
    /// A new refresh token, when the provider rotated it (keep the old one otherwise).
    pub refresh_token: Option<Token>,
    pub expires_at: Option<jiff::Timestamp>,
    pub scopes: Option<Vec<String>>,
    /// When the refresh token itself stops working, where the provider says so
    /// (`refresh_token_expires_in`, `refresh_expires_in`): a hard limit no refresh extends.
    pub refresh_expires_at: Option<jiff::Timestamp>,
}

/// The answer to a refresh or a code exchange.
#[derive(Clone, Debug)]
pub enum Renewal {
    Renewed(NewTokens),
    /// The grant is dead (`invalid_grant`): a person must log in again.
    Rejected {
        message: String,
    },
    /// The grant is alive but the provider wants the person first (`reason` is
    /// `AccountActionRequired`: accept terms, enrol MFA, change an expired password; or
    /// `ReauthorizationRequired`: consent again).
    NeedsPerson {
        reason: crate::api::Reason,
        message: String,
    },
    /// Try again later.
    Transient {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// The application is refused (`invalid_client`) or the provider object is incomplete.
    Misconfigured {
        message: String,
    },
    /// Nothing to renew with (no refresh token, or the provider cannot renew).
    Unsupported {
        message: String,
    },
}

/// RFC 6749 §6 refresh, for providers whose preset says [`RenewStyle::RefreshToken`].
pub fn renew_standard<'a>(
    http: &'a Http,
    app: &'a App,
    _access_token: &'a Token,
    refresh_token: Option<&'a Token>,
) -> BoxFuture<'a, Renewal> {
    async move {
        if app.preset().renew != RenewStyle::RefreshToken {
            return Renewal::Unsupported {
                message: format!(
                    "provider type {} has no standard refresh",
                    app.settings.type_.as_str()
                ),
            };
        }
        let Some(refresh) = refresh_token else {
            return Renewal::Unsupported {
                message: "no refresh token is stored".into(),
            };
        };
        token_request(http, app, refresh_form(refresh)).await
    }
    .boxed()
}

/// RFC 6749 §4.1.3 authorization code exchange (with the PKCE verifier when one was used).
pub fn exchange_code_standard<'a>(
    http: &'a Http,
    app: &'a App,
    code: &'a str,
    redirect_uri: &'a str,
    code_verifier: Option<&'a str>,
) -> BoxFuture<'a, Renewal> {
    async move {
        let form = code_form(code, redirect_uri, code_verifier);
        token_request(http, app, form).await
    }
    .boxed()
}

/// The form of an RFC 6749 §6 refresh.
pub(super) fn refresh_form(refresh: &Token) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "refresh_token".to_owned()),
        ("refresh_token", refresh.expose().to_owned()),
    ]
}

/// The form of an RFC 6749 §4.1.3 code exchange (with the PKCE verifier when one was used).
pub(super) fn code_form(
    code: &str,
    redirect_uri: &str,
    code_verifier: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
    ];
    if let Some(v) = code_verifier {
        form.push(("code_verifier", v.to_owned()));
    }
    form
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
    scope: Option<String>,
    /// LinkedIn, Google (time-limited access), Microsoft's SPA tokens.
    refresh_token_expires_in: Option<i64>,
    /// TikTok.
    refresh_expires_in: Option<i64>,
}

/// The end of a new refresh token by the provider's documented lifetime
/// (`spec.refreshTokenLifetime`, e.g. Google's 7 days for apps in "Testing"), when the answer
/// carried a refresh token but not its lifetime.
fn documented_end(
    app: &App,
    new_refresh_token: bool,
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let lifetime = app.settings.refresh_token_lifetime().ok().flatten()?;
    let lifetime = jiff::SignedDuration::try_from(lifetime).ok()?;
    new_refresh_token
        .then(|| now.checked_add(lifetime).ok())
        .flatten()
}

/// POSTs `form` to the token endpoint with the preset's client authentication.
pub(super) async fn token_request(
    http: &Http,
    app: &App,
    mut form: Vec<(&'static str, String)>,
) -> Renewal {
    let Some(url) = app.endpoint(Endpoint::Token) else {
        return Renewal::Misconfigured {
            message: "the provider has no token endpoint (spec.endpoints.tokenUrl)".into(),
        };
    };
    let preset = app.preset();
    let secret = app.client_secret.as_ref().map(Token::expose);
    let mut req = http
        .request(app.trusted, Method::POST, &url)
        .header("Accept", "application/json");
    match preset.client_auth {
        ClientAuth::Basic => req = req.basic_auth(&app.settings.client_id, secret),
        ClientAuth::Form => {
            form.push((preset.client_id_param, app.settings.client_id.clone()));
            if let Some(s) = secret {
                form.push(("client_secret", s.to_owned()));
            }
        }
    }
    let resp = match http.send(req.form(&form)).await {
        Ok(r) => r,
        Err(e) => return super::answer::renewal(transport(e)),
    };
    if let Some(v) = common_failures(&resp, "token") {
        return super::answer::renewal(v);
    }
    if resp.status == 200
        && let Some(t) = resp.json::<TokenAnswer>()
    {
        let now = jiff::Timestamp::now();
        let rotated = t.refresh_token.is_some();
        return Renewal::Renewed(NewTokens {
            access_token: Token::new(t.access_token),
            refresh_token: t.refresh_token.map(Token::new),
            expires_at: t
                .expires_in
                .filter(|s| *s > 0)
                .and_then(|s| now.checked_add(jiff::SignedDuration::from_secs(s)).ok()),
            scopes: t.scope.as_deref().map(split_scopes),
            refresh_expires_at: t
                .refresh_token_expires_in
                .or(t.refresh_expires_in)
                .and_then(super::answer::in_secs)
                .or_else(|| documented_end(app, rotated, now)),
        });
    }
    match resp.json::<ErrorBody>() {
        Some(e) => classify_error(&e),
        None => Renewal::Transient {
            message: format!(
                "the token endpoint answered HTTP {} with an unreadable body",
                resp.status
            ),
            retry_after: None,
        },
    }
}

/// RFC 6749 §5.2 errors: a dead grant, a refused application, or something to retry.
pub(super) fn classify_error(e: &ErrorBody) -> Renewal {
    let message = format!("the token endpoint refused: {}", e.describe());
    // Microsoft's suberror says why a grant needs the person; the AADSTS code stays in the
    // message as a hint only.
    match e.suberror.as_deref() {
        Some(
            "basic_action"
            | "additional_action"
            | "user_password_expired"
            | "protection_policy_required"
            | "device_authentication_failed",
        ) => {
            return Renewal::NeedsPerson {
                reason: crate::api::Reason::AccountActionRequired,
                message,
            };
        }
        Some("consent_required") => {
            return Renewal::NeedsPerson {
                reason: crate::api::Reason::ReauthorizationRequired,
                message,
            };
        }
        _ => {}
    }
    match e.error.as_str() {
        // OpenID Connect (and Microsoft's token endpoint): the grant needs a person again.
        "invalid_grant" | "interaction_required" | "login_required" | "consent_required" => {
            Renewal::Rejected { message }
        }
        "invalid_client"
        | "unauthorized_client"
        | "unsupported_grant_type"
        | "invalid_request"
        | "invalid_scope" => Renewal::Misconfigured { message },
        _ => Renewal::Transient {
            message,
            retry_after: None,
        },
    }
}
