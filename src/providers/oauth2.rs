//! Provider type `oauth2`: any RFC 6749 server, checked by RFC 7662 introspection when
//! `introspectionUrl` is set, else by a bearer probe of `userinfoUrl`.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use reqwest::header::WWW_AUTHENTICATE;
use serde::Deserialize;

use super::answer::account;
use super::{App, Endpoint, Grant, Http, Response, Token, Validator, Verdict, split_scopes};
use crate::api::Reason;

pub struct OAuth2;

impl Validator for OAuth2 {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        async move {
            if let Some(url) = app.endpoint(Endpoint::Introspection) {
                introspect(http, app, &url, token).await
            } else if let Some(url) = app.endpoint(Endpoint::Userinfo) {
                probe(http, app, &url, token).await
            } else {
                Verdict::Misconfigured {
                    message: "provider type oauth2 needs spec.endpoints.introspectionUrl or spec.endpoints.userinfoUrl".into(),
                }
            }
        }
        .boxed()
    }
}

/// RFC 7662 answer. Extra members are ignored.
#[derive(Deserialize)]
struct Introspection {
    active: bool,
    scope: Option<String>,
    exp: Option<i64>,
    sub: Option<String>,
    username: Option<String>,
}

/// RFC 6749 §5.2 error body.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    pub error: String,
    pub error_description: Option<String>,
    /// Microsoft's finer classification of `invalid_grant` / `interaction_required`
    /// (`basic_action`, `additional_action`, `consent_required`, `bad_token`, ...): documented
    /// as stable, unlike the `AADSTS` codes in the description.
    #[serde(default)]
    pub suberror: Option<String>,
}

impl ErrorBody {
    pub fn describe(&self) -> String {
        let error = match &self.suberror {
            Some(sub) => format!("{} ({sub})", self.error),
            None => self.error.clone(),
        };
        match &self.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error,
        }
    }
}

async fn introspect(http: &Http, app: &App, url: &str, token: &Token) -> Verdict {
    let mut req = http
        .request(app.trusted, Method::POST, url)
        .header("Accept", "application/json")
        .form(&[
            ("token", token.expose()),
            ("token_type_hint", "access_token"),
        ]);
    req = req.basic_auth(
        &app.settings.client_id,
        app.client_secret.as_ref().map(Token::expose),
    );
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    if let Some(v) = common_failures(&resp, "introspection") {
        return v;
    }
    if resp.status == 401 || resp.status == 403 {
        return Verdict::Misconfigured {
            message: format!(
                "the introspection endpoint refused the client credentials (HTTP {}{})",
                resp.status,
                error_suffix(&resp)
            ),
        };
    }
    if resp.status != 200 {
        return Verdict::Misconfigured {
            message: format!(
                "the introspection endpoint answered HTTP {}{}",
                resp.status,
                error_suffix(&resp)
            ),
        };
    }
    match resp.json::<Introspection>() {
        Some(i) if i.active => Verdict::Valid(Grant {
            account: account(i.sub, i.username),
            scopes: i.scope.as_deref().map(split_scopes),
            expires_at: i.exp.and_then(|s| jiff::Timestamp::from_second(s).ok()),
            ..Grant::default()
        }),
        Some(_) => Verdict::Invalid {
            reason: Reason::Revoked,
            message: "the provider reports the token as inactive (revoked or expired)".into(),
        },
        None => error_in_ok_body(&resp),
    }
}

/// OIDC userinfo (or any probe URL) answer; only the members relink reports.
#[derive(Deserialize, Default)]
struct UserInfo {
    sub: Option<String>,
    id: Option<String>,
    name: Option<String>,
    username: Option<String>,
    email: Option<String>,
    scope: Option<String>,
    error: Option<String>,
}

/// The verdict on a provider checked by reading the signed-in account without a probe URL.
pub(super) fn no_userinfo_url() -> Verdict {
    Verdict::Misconfigured {
        message: "the provider has no probe URL (spec.endpoints.userinfoUrl)".into(),
    }
}

/// `GET url` with the token as bearer, asking for JSON: the answer, or the verdict on a call
/// that got none.
pub(super) async fn get_as_bearer(
    http: &Http,
    app: &App,
    url: &str,
    token: &Token,
) -> Result<Response, Verdict> {
    let req = http
        .request(app.trusted, Method::GET, url)
        .header("Accept", "application/json")
        .bearer_auth(token.expose());
    http.send(req).await.map_err(transport)
}

/// `GET userinfoUrl` with the token as bearer ([`get_as_bearer`]).
pub(super) async fn get_userinfo(
    http: &Http,
    app: &App,
    token: &Token,
) -> Result<Response, Verdict> {
    let Some(url) = app.endpoint(Endpoint::Userinfo) else {
        return Err(no_userinfo_url());
    };
    get_as_bearer(http, app, &url, token).await
}

/// The answer's `WWW-Authenticate` challenge; empty when none.
pub(super) fn challenge(resp: &Response) -> String {
    resp.headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub(super) async fn probe(http: &Http, app: &App, url: &str, token: &Token) -> Verdict {
    let resp = match get_as_bearer(http, app, url, token).await {
        Ok(r) => r,
        Err(v) => return v,
    };
    if let Some(v) = common_failures(&resp, "userinfo") {
        return v;
    }
    let challenge = challenge(&resp);
    match resp.status {
        200 => match resp.json::<UserInfo>() {
            Some(u) if u.error.is_none() => Verdict::Valid(Grant {
                account: account(u.sub.or(u.id), u.name.or(u.username).or(u.email)),
                scopes: u.scope.as_deref().map(split_scopes),
                ..Grant::default()
            }),
            _ => error_in_ok_body(&resp),
        },
        401 => Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!(
                "the provider rejected the token (HTTP 401{})",
                if challenge.is_empty() {
                    String::new()
                } else {
                    format!(", {challenge}")
                }
            ),
        },
        403 if challenge.contains("insufficient_scope") => Verdict::Invalid {
            reason: Reason::ScopesMissing,
            message: "the provider says the token lacks a required scope (insufficient_scope)"
                .into(),
        },
        status => Verdict::Transient {
            message: format!(
                "the userinfo endpoint answered HTTP {status}{}",
                error_suffix(&resp)
            ),
            retry_after: None,
        },
    }
}

/// 429 and 5xx mean "try later" at any endpoint.
pub(super) fn common_failures(resp: &Response, endpoint: &str) -> Option<Verdict> {
    match resp.status {
        429 => Some(Verdict::Transient {
            message: format!("the {endpoint} endpoint is rate limiting (HTTP 429)"),
            retry_after: resp.retry_after(),
        }),
        500..=599 => Some(Verdict::Transient {
            message: format!("the {endpoint} endpoint answered HTTP {}", resp.status),
            retry_after: resp.retry_after(),
        }),
        _ => None,
    }
}

/// HTTP 200 whose body is not the expected JSON: an error body or garbage.
fn error_in_ok_body(resp: &Response) -> Verdict {
    match resp.json::<ErrorBody>() {
        Some(e) if matches!(e.error.as_str(), "invalid_client" | "unauthorized_client") => {
            Verdict::Misconfigured {
                message: format!("the provider rejected the application: {}", e.describe()),
            }
        }
        Some(e) if e.error == "invalid_token" => Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!("the provider rejected the token: {}", e.describe()),
        },
        Some(e) => Verdict::Transient {
            message: format!(
                "the provider answered HTTP 200 with an error: {}",
                e.describe()
            ),
            retry_after: None,
        },
        None => Verdict::Transient {
            message: format!(
                "the provider answered HTTP 200 with an unreadable body ({} bytes)",
                resp.body.len()
            ),
            retry_after: None,
        },
    }
}

fn error_suffix(resp: &Response) -> String {
    resp.json::<ErrorBody>()
        .map(|e| format!(": {}", e.describe()))
        .unwrap_or_default()
}

pub(super) fn transport(e: super::TransportError) -> Verdict {
    match e {
        super::TransportError::Policy(message) => Verdict::Misconfigured { message },
        other => Verdict::Transient {
            message: other.to_string(),
            retry_after: None,
        },
    }
}
