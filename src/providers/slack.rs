//! Provider type `slack`: `auth.test` checks any Slack token. Slack answers HTTP 200 with
//! `{"ok": false, "error": "..."}` on failure, so the verdict comes from `error`, and the
//! granted scopes from the `x-oauth-scopes` header. The token endpoint (`oauth.v2.access`)
//! answers the same way, which is why renewal is read here rather than as RFC 6749.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::answer::{account, aliases, clip, in_secs, renewal};
use super::oauth2::{common_failures, transport};
use super::{
    App, Endpoint, Grant, Http, NewTokens, Renewal, Response, Token, Validator, Verdict,
    split_scopes,
};
use crate::api::Reason;

pub struct Slack;

impl Validator for Slack {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }

    /// Only apps with token rotation have refresh tokens; a rotated refresh token replaces the
    /// stored one.
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
                    message: "no refresh token is stored (Slack issues one only when the app has token rotation on)".into(),
                };
            };
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
            ];
            token_call(http, app, &form, &[refresh]).await
        }
        .boxed()
    }

    fn exchange_code<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        code: &'a str,
        redirect_uri: &'a str,
        _code_verifier: Option<&'a str>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
            ];
            token_call(http, app, &form, &[]).await
        }
        .boxed()
    }
}

#[derive(Deserialize)]
struct AuthTest {
    ok: bool,
    error: Option<String>,
    team: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    bot_id: Option<String>,
    enterprise_id: Option<String>,
    /// Seconds left, for rotating tokens.
    expires_in: Option<i64>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let url = match app.endpoint(Endpoint::ApiBase) {
        Some(base) => format!("{}/auth.test", base.trim_end_matches('/')),
        None => {
            return Verdict::Misconfigured {
                message: "the provider has no API base URL (spec.endpoints.apiBaseUrl)".into(),
            };
        }
    };
    let req = http
        .request(app.trusted, Method::POST, &url)
        .bearer_auth(token.expose());
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    if let Some(v) = common_failures(&resp, "auth.test") {
        return v;
    }
    match resp.json::<AuthTest>() {
        Some(a) if resp.status == 200 && a.ok => {
            let scopes = resp
                .headers
                .get("x-oauth-scopes")
                .and_then(|v| v.to_str().ok())
                .map(split_scopes);
            Verdict::Valid(Grant {
                target_ids: aliases([a.team_id.clone(), a.user_id, a.bot_id, a.enterprise_id]),
                account: account(a.team_id, a.team),
                scopes,
                expires_at: a.expires_in.and_then(in_secs),
                ..Grant::default()
            })
        }
        Some(a) => error_verdict(a.error.as_deref().unwrap_or("unknown"), &resp, token),
        None => Verdict::Transient {
            message: format!(
                "auth.test answered HTTP {} with an unreadable body",
                resp.status
            ),
            retry_after: None,
        },
    }
}

/// Slack's documented `auth.test` errors. Anything else is not a reason to call a token dead.
fn error_verdict(error: &str, resp: &Response, token: &Token) -> Verdict {
    let error = clip(error, &[token]);
    let invalid = |reason, why: &str| Verdict::Invalid {
        reason,
        message: format!("Slack: {why} ({error})"),
    };
    match error.as_str() {
        "token_revoked" => invalid(
            Reason::Revoked,
            "the token was revoked or the app uninstalled",
        ),
        "invalid_auth" | "not_authed" => invalid(Reason::Revoked, "the token is not valid"),
        "account_inactive" => invalid(Reason::Revoked, "the user or workspace was deactivated"),
        "token_expired" => invalid(Reason::Expired, "the rotating token expired"),
        "two_factor_setup_required" => invalid(
            Reason::AccountActionRequired,
            "the workspace requires its user to set up two-factor authentication",
        ),
        "ekm_access_denied" => invalid(
            Reason::AccountActionRequired,
            "workspace administrators suspended access (Enterprise Key Management)",
        ),
        "missing_scope" | "no_permission" => {
            invalid(Reason::ScopesMissing, "the token lacks a required scope")
        }
        "not_allowed_token_type" => Verdict::Misconfigured {
            message: format!("Slack refuses this kind of token for auth.test ({error})"),
        },
        _ => Verdict::Transient {
            message: format!("Slack answered auth.test with {error}; retrying later"),
            retry_after: resp.retry_after(),
        },
    }
}

/// `oauth.v2.access` answer. A user token comes under `authed_user` when no bot token was
/// requested.
#[derive(Deserialize)]
struct Access {
    ok: bool,
    error: Option<String>,
    #[serde(flatten)]
    tokens: Tokens,
    authed_user: Option<Tokens>,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
    scope: Option<String>,
}

async fn token_call(http: &Http, app: &App, form: &[(&str, &str)], secrets: &[&Token]) -> Renewal {
    let Some(url) = app.endpoint(Endpoint::Token) else {
        return Renewal::Misconfigured {
            message: "the provider has no token endpoint (spec.endpoints.tokenUrl)".into(),
        };
    };
    let mut form = form.to_vec();
    form.push(("client_id", app.settings.client_id.as_str()));
    if let Some(s) = &app.client_secret {
        form.push(("client_secret", s.expose()));
    }
    let req = http
        .request(app.trusted, Method::POST, &url)
        .header("Accept", "application/json")
        .form(&form);
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return renewal(transport(e)),
    };
    if let Some(v) = common_failures(&resp, "token") {
        return renewal(v);
    }
    let Some(a) = resp.json::<Access>() else {
        return Renewal::Transient {
            message: format!(
                "oauth.v2.access answered HTTP {} with an unreadable body",
                resp.status
            ),
            retry_after: None,
        };
    };
    if a.ok {
        let t = match (a.tokens.access_token.is_some(), a.authed_user) {
            (false, Some(user)) => user,
            _ => a.tokens,
        };
        if let Some(at) = t.access_token {
            return Renewal::Renewed(NewTokens {
                access_token: Token::new(at),
                refresh_token: t.refresh_token.map(Token::new),
                expires_at: t.expires_in.and_then(in_secs),
                scopes: t.scope.as_deref().map(split_scopes),
                refresh_expires_at: None,
            });
        }
    }
    let mut all = secrets.to_vec();
    all.extend(app.client_secret.as_ref());
    let error = clip(a.error.as_deref().unwrap_or("no token in the answer"), &all);
    let message = format!("oauth.v2.access refused: {error}");
    match error.as_str() {
        "invalid_refresh_token"
        | "invalid_grant"
        | "invalid_code"
        | "code_already_used"
        | "code_expired"
        | "token_revoked"
        | "token_expired"
        | "authorization_not_found" => Renewal::Rejected { message },
        "invalid_client_id"
        | "bad_client_secret"
        | "invalid_client"
        | "bad_redirect_uri"
        | "oauth_authorization_url_mismatch"
        | "token_rotation_not_enabled" => Renewal::Misconfigured { message },
        _ => Renewal::Transient {
            message,
            retry_after: resp.retry_after(),
        },
    }
}

#[cfg(test)]
mod tests;
