//! Provider type `instagram`: the Instagram API with Instagram Login (professional accounts).
//! Its tokens cannot be inspected with `debug_token`, so relink asks `graph.instagram.com/me`
//! with the token; errors are Graph errors. Long-lived tokens last 60 days and are refreshed
//! with `ig_refresh_token`.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::answer::{account, aliases, clip, de_string, in_secs, renewal};
use super::meta::{self, Answer};
use super::oauth2::{common_failures, transport};
use super::{App, Endpoint, Grant, Http, NewTokens, Renewal, Token, Validator, Verdict};

pub struct Instagram;

impl Validator for Instagram {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }

    /// `GET refresh_access_token?grant_type=ig_refresh_token`: the long-lived token itself is
    /// the credential (it must be at least a day old and not expired).
    fn renew<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        access_token: &'a Token,
        _refresh_token: Option<&'a Token>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let base = match meta::api_base(app) {
                Ok(b) => unversioned(&b),
                Err(message) => return Renewal::Misconfigured { message },
            };
            let query = [
                ("grant_type", "ig_refresh_token"),
                ("access_token", access_token.expose()),
            ];
            let url = format!("{base}/refresh_access_token");
            meta::token_get(http, app, &url, &query, &[access_token]).await
        }
        .boxed()
    }

    /// The code buys a short-lived token (an hour) at `api.instagram.com`, exchanged at once for
    /// a 60-day token (`ig_exchange_token`); the short one is kept if that step fails.
    fn exchange_code<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        code: &'a str,
        redirect_uri: &'a str,
        _code_verifier: Option<&'a str>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let Some(secret) = &app.client_secret else {
                return Renewal::Misconfigured {
                    message: "Instagram token calls need the app secret (spec.clientSecretRef)"
                        .into(),
                };
            };
            let short = short_lived(http, app, secret, code, redirect_uri).await;
            let Renewal::Renewed(tokens) = short else {
                return short;
            };
            let base = match meta::api_base(app) {
                Ok(b) => unversioned(&b),
                Err(_) => return Renewal::Renewed(tokens),
            };
            let query = [
                ("grant_type", "ig_exchange_token"),
                ("client_secret", secret.expose()),
                ("access_token", tokens.access_token.expose()),
            ];
            let url = format!("{base}/access_token");
            let secrets = [secret, &tokens.access_token];
            match meta::token_get(http, app, &url, &query, &secrets).await {
                Renewal::Renewed(long) => Renewal::Renewed(NewTokens {
                    scopes: tokens.scopes.clone(),
                    ..long
                }),
                _ => Renewal::Renewed(tokens),
            }
        }
        .boxed()
    }
}

/// The API base without its version segment: Meta documents the token endpoints of
/// `graph.instagram.com` unversioned.
fn unversioned(base: &str) -> String {
    match base.rsplit_once('/') {
        Some((head, last))
            if last.starts_with('v')
                && last.len() > 1
                && last[1..].chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            head.to_owned()
        }
        _ => base.to_owned(),
    }
}

#[derive(Deserialize)]
struct Me {
    /// The professional account's ID, used in API calls and webhooks.
    #[serde(default, deserialize_with = "de_string")]
    user_id: Option<String>,
    /// The app-scoped ID.
    #[serde(default, deserialize_with = "de_string")]
    id: Option<String>,
    username: Option<String>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let url = match app.settings.endpoints.userinfo_url.clone() {
        Some(u) => u,
        None => match meta::api_base(app) {
            Ok(b) => format!("{b}/me"),
            Err(message) => return Verdict::Misconfigured { message },
        },
    };
    let query = [
        ("fields", "user_id,username"),
        ("access_token", token.expose()),
    ];
    match meta::get(http, app, &url, &query).await {
        Answer::Failed(v) => v,
        Answer::Error(e, resp) => e.verdict(Some(&resp), &[token]),
        Answer::Ok(resp) => match resp.json::<Me>() {
            Some(me) if resp.status == 200 && (me.user_id.is_some() || me.id.is_some()) => {
                let grant = Grant {
                    target_ids: aliases([me.user_id.clone(), me.id.clone()]),
                    account: account(me.user_id.or(me.id), me.username),
                    ..Grant::default()
                };
                meta::throttle(&resp, Verdict::Valid(grant))
            }
            _ => Verdict::Transient {
                message: format!(
                    "Instagram /me answered HTTP {} with an unreadable body",
                    resp.status
                ),
                retry_after: None,
            },
        },
    }
}

/// `POST api.instagram.com/oauth/access_token`. Meta documents the answer both flat and wrapped
/// in `data: [...]`, and its errors in the old Instagram shape (`error_type`, `error_message`).
async fn short_lived(
    http: &Http,
    app: &App,
    secret: &Token,
    code: &str,
    redirect_uri: &str,
) -> Renewal {
    let Some(url) = app.endpoint(Endpoint::Token) else {
        return Renewal::Misconfigured {
            message: "the provider has no token endpoint (spec.endpoints.tokenUrl)".into(),
        };
    };
    let form = [
        ("client_id", app.settings.client_id.as_str()),
        ("client_secret", secret.expose()),
        ("grant_type", "authorization_code"),
        ("redirect_uri", redirect_uri),
        ("code", code),
    ];
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
    let body: Value = resp.json().unwrap_or(Value::Null);
    let entry = body
        .get("data")
        .and_then(|d| d.get(0))
        .unwrap_or(&body)
        .clone();
    if resp.status == 200
        && let Some(at) = entry.get("access_token").and_then(Value::as_str)
    {
        return Renewal::Renewed(short_lived_tokens(&entry, at));
    }
    refusal(resp.status, &body, secret)
}

/// The tokens of a successful exchange (`entry`: the flat answer or its `data[0]`).
fn short_lived_tokens(entry: &Value, at: &str) -> NewTokens {
    let scopes = match entry.get("permissions") {
        Some(Value::String(s)) => Some(super::split_scopes(s)),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    };
    NewTokens {
        access_token: Token::new(at),
        refresh_token: None,
        expires_at: entry
            .get("expires_in")
            .and_then(Value::as_i64)
            .and_then(in_secs),
        scopes,
        refresh_expires_at: None,
    }
}

/// A code exchange that issued no token, by Instagram's error message.
fn refusal(status: u16, body: &Value, secret: &Token) -> Renewal {
    let message = body
        .get("error_message")
        .or_else(|| body.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(|m| clip(m, &[secret]))
        .unwrap_or_else(|| format!("HTTP {status}"));
    match status {
        400 | 401 if message.contains("redirect_uri") || message.contains("client") => {
            Renewal::Misconfigured {
                message: format!("Instagram refused the token request: {message}"),
            }
        }
        400 | 401 => Renewal::Rejected {
            message: format!("Instagram refused the authorization code: {message}"),
        },
        _ => Renewal::Transient {
            message: format!("Instagram's token endpoint failed: {message}"),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests;
