//! Provider type `facebook`: user and Page tokens, checked with the Graph API's `debug_token`
//! (validity, expiry, the 90-day data access clock, scopes and the Pages each permission was
//! granted on), renewed by exchanging the long-lived user token.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::answer::{account, clip, de_string, unix};
use super::meta::{self, Answer, Class};
use super::{App, Grant, Http, Renewal, Token, Validator, Verdict, Wanted};
use crate::api::{AccountKind, Reason, ReportedAccount};

pub(super) mod pages;

/// Whether the grant names `id` as its account or among its targets.
fn reaches(grant: &Grant, id: &str) -> bool {
    grant.target_ids.as_ref().map_or_else(
        || grant.account.as_ref().and_then(|a| a.id.as_deref()) == Some(id),
        |t| t.iter().any(|x| x == id),
    )
}

pub struct Facebook;

impl Validator for Facebook {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }

    /// `GET /{id}?fields=name` (Graph API, Page or User node) with the token itself.
    fn account_name<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
        id: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        async move {
            let base = meta::api_base(app).ok()?;
            // An ID is digits; anything else is not put into a URL path.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let url = format!("{base}/{id}");
            let query = [("fields", "name"), ("access_token", token.expose())];
            match meta::get(http, app, &url, &query).await {
                Answer::Ok(resp) if resp.status == 200 => resp.json::<Me>()?.name,
                _ => None,
            }
        }
        .boxed()
    }

    /// A Page token kept for an Instagram business account (`spec.account.kind`) reaches the
    /// account while its Page is linked to it; then every account named by ID gets its name.
    fn complete<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
        verdict: &'a mut Verdict,
        wanted: Option<Wanted<'a>>,
        known: Option<&'a ReportedAccount>,
    ) -> BoxFuture<'a, ()> {
        async move {
            if let (Verdict::Valid(grant), Some(w)) = (&mut *verdict, wanted)
                && w.kind == Some(AccountKind::InstagramBusiness)
                && !reaches(grant, w.id)
                && let Err(v) =
                    pages::reach_linked_instagram(http, app, token, grant, w.id, known).await
            {
                *verdict = v;
                return;
            }
            super::name_by_id(self, http, app, token, verdict, known).await
        }
        .boxed()
    }

    /// Facebook has no refresh tokens: a long-lived user token is exchanged for a fresh one.
    fn renew<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        access_token: &'a Token,
        _refresh_token: Option<&'a Token>,
    ) -> BoxFuture<'a, Renewal> {
        exchange_long_lived(http, app, access_token).boxed()
    }

    /// The code buys a short-lived token (an hour or two), which is exchanged at once for a
    /// long-lived one; if that second step fails the short-lived token is still returned,
    /// since the code cannot be used twice.
    fn exchange_code<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    ) -> BoxFuture<'a, Renewal> {
        async move {
            let Some(secret) = &app.client_secret else {
                return no_secret();
            };
            let url = match token_url(app) {
                Ok(u) => u,
                Err(message) => return Renewal::Misconfigured { message },
            };
            let mut query = vec![
                ("client_id", app.settings.client_id.as_str()),
                ("client_secret", secret.expose()),
                ("redirect_uri", redirect_uri),
                ("code", code),
            ];
            if let Some(v) = code_verifier {
                query.push(("code_verifier", v));
            }
            let short = meta::token_get(http, app, &url, &query, &[secret]).await;
            let Renewal::Renewed(tokens) = short else {
                return short;
            };
            match exchange_long_lived(http, app, &tokens.access_token).await {
                long @ Renewal::Renewed(_) => long,
                _ => Renewal::Renewed(tokens),
            }
        }
        .boxed()
    }
}

/// `spec.endpoints.tokenUrl`, else `{apiBase}/oauth/access_token`, so overriding the API base
/// alone moves every call.
fn token_url(app: &App) -> Result<String, String> {
    match &app.settings.endpoints.token_url {
        Some(u) => Ok(u.clone()),
        None => meta::api_base(app).map(|b| format!("{b}/oauth/access_token")),
    }
}

fn no_secret() -> Renewal {
    Renewal::Misconfigured {
        message: "Facebook token calls need the app secret (spec.clientSecretRef)".into(),
    }
}

/// `GET oauth/access_token?grant_type=fb_exchange_token`: a new long-lived user token. It does
/// not move the 90-day data access expiry; only a person logging in does.
async fn exchange_long_lived(http: &Http, app: &App, access_token: &Token) -> Renewal {
    let Some(secret) = &app.client_secret else {
        return no_secret();
    };
    let url = match token_url(app) {
        Ok(u) => u,
        Err(message) => return Renewal::Misconfigured { message },
    };
    let query = [
        ("grant_type", "fb_exchange_token"),
        ("client_id", app.settings.client_id.as_str()),
        ("client_secret", secret.expose()),
        ("fb_exchange_token", access_token.expose()),
    ];
    meta::token_get(http, app, &url, &query, &[secret, access_token]).await
}

#[derive(Deserialize)]
struct Debug {
    data: DebugData,
}

#[derive(Deserialize, Default)]
struct DebugData {
    #[serde(default)]
    is_valid: bool,
    #[serde(default, deserialize_with = "de_string")]
    app_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "de_string")]
    user_id: Option<String>,
    /// The Page a Page token acts as.
    #[serde(default, deserialize_with = "de_string")]
    profile_id: Option<String>,
    expires_at: Option<i64>,
    data_access_expires_at: Option<i64>,
    scopes: Option<Vec<String>>,
    granular_scopes: Option<Vec<GranularScope>>,
    error: Option<meta::GraphError>,
}

#[derive(Deserialize)]
struct GranularScope {
    scope: String,
    target_ids: Option<Vec<String>>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let base = match meta::api_base(app) {
        Ok(b) => b,
        Err(message) => return Verdict::Misconfigured { message },
    };
    let Some(secret) = &app.client_secret else {
        return probe_me(http, app, &base, token).await;
    };
    // The app access token, `{app-id}|{app-secret}`, may inspect any token of the app.
    let app_token = Token::new(format!("{}|{}", app.settings.client_id, secret.expose()));
    let secrets = [token, secret, &app_token];
    let url = format!("{base}/debug_token");
    let query = [
        ("input_token", token.expose()),
        ("access_token", app_token.expose()),
    ];
    match meta::get(http, app, &url, &query).await {
        Answer::Failed(v) => v,
        // Errors about the inspected token come inside `data`; a top-level error is about the
        // request, i.e. the app credentials or a token of another app.
        Answer::Error(e, resp) => match e.class() {
            Class::Later => e.verdict(Some(&resp), &secrets),
            Class::Unknown if e.code != Some(100) => e.verdict(Some(&resp), &secrets),
            _ => Verdict::Misconfigured {
                message: format!(
                    "Meta refused debug_token for this app (check spec.clientId, the app secret, and that the token belongs to this app): {}",
                    e.describe(&secrets)
                ),
            },
        },
        Answer::Ok(resp) => match resp.json::<Debug>() {
            Some(d) => meta::throttle(&resp, judge(app, d.data, &secrets)),
            None => Verdict::Transient {
                message: format!(
                    "debug_token answered HTTP {} with an unreadable body ({} bytes)",
                    resp.status,
                    resp.body.len()
                ),
                retry_after: None,
            },
        },
    }
}

fn judge(app: &App, d: DebugData, secrets: &[&Token]) -> Verdict {
    if !d.is_valid {
        return match &d.error {
            Some(e) => match e.class() {
                // `is_valid: false` is itself the explicit signal, whatever the code.
                Class::Unknown | Class::App => Verdict::Invalid {
                    reason: Reason::Revoked,
                    message: format!("Meta reports the token as invalid: {}", e.describe(secrets)),
                },
                _ => e.verdict(None, secrets),
            },
            None if d
                .expires_at
                .and_then(unix)
                .is_some_and(|t| t <= jiff::Timestamp::now()) =>
            {
                Verdict::Invalid {
                    reason: Reason::Expired,
                    message: "Meta reports the token as expired".into(),
                }
            }
            None => Verdict::Invalid {
                reason: Reason::Revoked,
                message: "Meta reports the token as invalid".into(),
            },
        };
    }
    if let Some(id) = &d.app_id
        && *id != app.settings.client_id
    {
        return Verdict::Misconfigured {
            message: format!(
                "the token belongs to Meta app {}, not to spec.clientId {}",
                clip(id, secrets),
                app.settings.client_id
            ),
        };
    }
    // Once the 90-day data access lapses Meta still authenticates the person (`is_valid`
    // stays true), but the app can no longer read or act on their data until they log in
    // again; exchanging the token does not renew it.
    if let Some(lapsed) = d
        .data_access_expires_at
        .and_then(unix)
        .filter(|t| *t <= jiff::Timestamp::now())
    {
        return Verdict::Invalid {
            reason: Reason::ReauthorizationRequired,
            message: format!(
                "Meta reports that the app's access to the account's data expired at {lapsed} (data access lasts 90 days from the person's last login to the app)"
            ),
        };
    }
    let page = d.kind.as_deref() == Some("PAGE");
    let (account_id, target_ids) = if page {
        (d.profile_id.clone(), None)
    } else {
        user_targets(d.user_id.clone(), d.granular_scopes.as_deref())
    };
    Verdict::Valid(Grant {
        account: account(account_id, None),
        scopes: d.scopes,
        expires_at: d.expires_at.and_then(unix),
        data_access_expires_at: d.data_access_expires_at.and_then(unix),
        target_ids,
    })
}

/// Whether a permission is granted per asset (Page, Instagram or WhatsApp account, ad account,
/// business) rather than for the person.
fn asset_scope(scope: &str) -> bool {
    [
        "pages_",
        "instagram_",
        "whatsapp_",
        "ads_",
        "business_management",
        "read_insights",
        "leads_retrieval",
        "catalog_management",
    ]
    .iter()
    .any(|p| scope.starts_with(p))
}

/// The account and targets of a user token. With granular scopes a person picks the Pages
/// (and other assets) an app may use; the user and every picked asset count as reached, so a
/// connection whose `spec.account.id` is a Page that was not picked shows `AccountMismatch`.
/// When an asset permission carries no `target_ids` it covers every asset, and neither the
/// targets nor the user ID can rule out the Page: nothing is reported then, so relink does not
/// claim a mismatch it cannot see.
fn user_targets(
    user_id: Option<String>,
    granular: Option<&[GranularScope]>,
) -> (Option<String>, Option<Vec<String>>) {
    let assets: Vec<&GranularScope> = granular
        .unwrap_or_default()
        .iter()
        .filter(|g| asset_scope(&g.scope) || g.target_ids.is_some())
        .collect();
    if assets.is_empty() {
        return (user_id, None);
    }
    if assets.iter().any(|g| g.target_ids.is_none()) {
        return (None, None);
    }
    let mut targets: Vec<String> = user_id.iter().cloned().collect();
    for id in assets.iter().flat_map(|g| g.target_ids.iter().flatten()) {
        if !targets.contains(id) {
            targets.push(id.clone());
        }
    }
    (user_id, Some(targets))
}

#[derive(Deserialize)]
struct Me {
    #[serde(default, deserialize_with = "de_string")]
    id: Option<String>,
    name: Option<String>,
}

/// Without the app secret `debug_token` is out of reach: ask the token itself who it is.
async fn probe_me(http: &Http, app: &App, base: &str, token: &Token) -> Verdict {
    let url = app
        .settings
        .endpoints
        .userinfo_url
        .clone()
        .unwrap_or_else(|| format!("{base}/me"));
    let query = [("fields", "id,name"), ("access_token", token.expose())];
    match meta::get(http, app, &url, &query).await {
        Answer::Failed(v) => v,
        Answer::Error(e, resp) => e.verdict(Some(&resp), &[token]),
        Answer::Ok(resp) => match resp.json::<Me>() {
            Some(me) if resp.status == 200 && me.id.is_some() => meta::throttle(
                &resp,
                Verdict::Valid(Grant {
                    account: account(me.id, me.name),
                    ..Grant::default()
                }),
            ),
            _ => Verdict::Transient {
                message: format!("/me answered HTTP {} with an unreadable body", resp.status),
                retry_after: None,
            },
        },
    }
}

#[cfg(test)]
mod tests;
