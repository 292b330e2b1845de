//! The Meta side of the fake: tokens and what `debug_token` says of them, Graph nodes, the login
//! dialog and the code and long-lived exchanges.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use relink::api::{ProviderEndpoints, ProviderType};
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{Scenario, TestConnection};

/// The Meta app (`spec.clientId`) and the Graph API version path it is served under.
pub(crate) const FB_APP: &str = "1865302133672045";
pub(crate) const GRAPH: &str = "/graph/v25.0";
pub(crate) const FB_DIALOG: &str = "/www/v25.0/dialog/oauth";
/// The person logging in, the Page the channel posts to, and another Page of theirs.
pub(crate) const FB_USER: &str = "10215241773831025";
pub(crate) const PAGE: &str = "104857600123456";
pub(crate) const OTHER_PAGE: &str = "104857600999999";
pub(crate) const FB_SCOPES: [&str; 4] = [
    "pages_show_list",
    "pages_manage_posts",
    "pages_read_engagement",
    "public_profile",
];
pub(crate) const FB_REQUIRED: [&str; 2] = ["pages_manage_posts", "pages_read_engagement"];
/// The Instagram business account linked to [`PAGE`], and what publishing to it needs.
pub(crate) const IG_ACCOUNT: &str = "17841400008460056";
pub(crate) const IG_USERNAME: &str = "acmebakery";
pub(crate) const IG_SCOPES: [&str; 5] = [
    "pages_show_list",
    "pages_manage_posts",
    "pages_read_engagement",
    "instagram_basic",
    "instagram_content_publish",
];
pub(crate) const IG_REQUIRED: [&str; 2] = ["instagram_basic", "instagram_content_publish"];

/// The Instagram business account a Page is linked to.
pub(crate) fn linked_instagram(page: &str) -> Option<&'static str> {
    (page == PAGE).then_some(IG_ACCOUNT)
}

/// What `debug_token` says about one token.
#[derive(Clone, Debug)]
pub(crate) enum MetaAnswer {
    /// `is_valid: true` with the token's facts.
    Valid,
    /// `is_valid: false` and the error about the inspected token inside `data`, as
    /// `debug_token` reports a dead token (`subcode`, not `error_subcode`, there).
    Dead {
        code: i64,
        subcode: Option<i64>,
        message: &'static str,
    },
    /// App-level throttling: HTTP 400, Graph error code 4 with `is_transient`, and
    /// `X-App-Usage` at 100 %.
    RateLimited,
    /// HTTP 503 from Meta's edge.
    Unavailable,
    /// HTTP 200 with an HTML page.
    Garbage,
}

impl MetaAnswer {
    pub(crate) fn password_changed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(460),
            message: "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
        }
    }
    pub(crate) fn logged_out() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(467),
            message: "Error validating access token: The user has not authorized application 1865302133672045.",
        }
    }
    pub(crate) fn checkpointed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(459),
            message: "Error validating access token: You cannot access the app till you log in to www.facebook.com and follow the instructions given.",
        }
    }
    pub(crate) fn unconfirmed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(464),
            message: "Error validating access token: Sessions for the user are not allowed because the user is not a confirmed user.",
        }
    }
}

/// A Meta token the fake issued.
#[derive(Clone, Debug)]
pub(crate) struct MetaToken {
    /// `USER` or `PAGE`.
    pub(crate) kind: &'static str,
    pub(crate) user_id: String,
    /// Pages picked at login: the `target_ids` of every `pages_*` permission; for a Page
    /// token, the first is the Page it acts as.
    pub(crate) pages: Vec<String>,
    pub(crate) scopes: Vec<String>,
    /// Unix seconds; 0 = never (Page tokens from a long-lived user token).
    pub(crate) expires_at: i64,
    pub(crate) data_access_expires_at: i64,
    pub(crate) issued_at: i64,
    pub(crate) answer: MetaAnswer,
    /// Page permissions granted for every Page the person manages: Meta then lists no
    /// `target_ids`, and only asking a Page tells whether the token reaches it.
    pub(crate) all_pages: bool,
}

impl MetaToken {
    pub(crate) fn user(user: &str, pages: &[&str], scopes: &[&str], lifetime_secs: i64) -> Self {
        let now = now();
        Self {
            kind: "USER",
            user_id: user.into(),
            pages: strings(pages),
            scopes: strings(scopes),
            expires_at: now + lifetime_secs,
            data_access_expires_at: now + 90 * 86_400,
            issued_at: now,
            answer: MetaAnswer::Valid,
            all_pages: false,
        }
    }

    /// The `data` object of `debug_token`, shaped like Meta's documentation.
    pub(crate) fn data(&self) -> Value {
        let granular: Vec<Value> = self
            .scopes
            .iter()
            .filter(|s| s.starts_with("pages_") || s.starts_with("instagram_"))
            .map(|s| match self.all_pages {
                true => json!({"scope": s}),
                // Instagram permissions are granted on the Instagram accounts of the Pages.
                false if s.starts_with("instagram_") => {
                    let ig: Vec<&str> = self
                        .pages
                        .iter()
                        .filter_map(|p| linked_instagram(p))
                        .collect();
                    json!({"scope": s, "target_ids": ig})
                }
                false => json!({"scope": s, "target_ids": self.pages}),
            })
            .collect();
        let mut d = json!({
            "app_id": FB_APP,
            "type": self.kind,
            "application": "Relink E2E",
            "data_access_expires_at": self.data_access_expires_at,
            "expires_at": self.expires_at,
            "is_valid": true,
            "issued_at": self.issued_at,
            "scopes": self.scopes,
            "granular_scopes": granular,
            "user_id": self.user_id,
        });
        if self.kind == "PAGE" {
            d["profile_id"] = json!(self.pages[0]);
        }
        d
    }
}

impl Fake {
    /// Issues a Meta token with `facts`; returns it.
    pub(crate) fn meta_token(&self, facts: MetaToken) -> String {
        let token = mint("EAAaRe");
        let mut w = self.world();
        w.issued.push(token.clone());
        w.meta.insert(token.clone(), facts);
        token
    }

    /// A 60-day user token granted on `pages` with `scopes`.
    pub(crate) fn facebook_user_token(&self, pages: &[&str], scopes: &[&str]) -> String {
        self.meta_token(MetaToken::user(FB_USER, pages, scopes, 60 * 86_400))
    }

    /// A Page token of a long-lived user token: acts as `page`, never expires.
    pub(crate) fn facebook_page_token(&self, page: &str, scopes: &[&str]) -> String {
        let mut facts = MetaToken::user(FB_USER, &[page], scopes, 0);
        facts.kind = "PAGE";
        facts.expires_at = 0;
        self.meta_token(facts)
    }

    pub(crate) fn edit_meta(&self, token: &str, edit: impl FnOnce(&mut MetaToken)) {
        let mut w = self.world();
        edit(w.meta.get_mut(token).expect("a token the fake issued"));
    }

    pub(crate) fn set_meta(&self, token: &str, answer: MetaAnswer) {
        self.edit_meta(token, |t| t.answer = answer);
    }

    pub(crate) fn meta_facts(&self, token: &str) -> Option<MetaToken> {
        self.world().meta.get(token).cloned()
    }

    pub(crate) fn set_app_usage(&self, percent: u32) {
        self.world().app_usage = percent;
    }

    /// What the next person to pass the Facebook login dialog grants.
    pub(crate) fn next_facebook_login(&self, pages: &[&str], scopes: &[&str]) {
        self.world().next_login = Some(MetaToken::user(FB_USER, pages, scopes, 2 * 3600));
    }

    /// The next login grants the Page permissions for every Page the person manages
    /// (`managed`): `debug_token` then names no Page.
    pub(crate) fn next_facebook_login_for_all_pages(&self, managed: &[&str], scopes: &[&str]) {
        let mut login = MetaToken::user(FB_USER, managed, scopes, 2 * 3600);
        login.all_pages = true;
        self.world().next_login = Some(login);
    }
}

impl World {
    pub(crate) fn mint_meta(&mut self, facts: MetaToken) -> String {
        let token = mint("EAAaRe");
        self.issued.push(token.clone());
        self.meta.insert(token.clone(), facts);
        token
    }

    /// `X-App-Usage` as Meta sends it on every Graph answer.
    pub(crate) fn usage(&self) -> String {
        let p = self.app_usage;
        json!({"call_count": p, "total_cputime": p / 2, "total_time": p / 2}).to_string()
    }
}

pub(crate) fn with_usage(mut resp: Response, usage: &str) -> Response {
    resp.headers_mut().insert(
        "x-app-usage",
        HeaderValue::from_str(usage).expect("header value"),
    );
    resp
}

/// Meta's error object, HTTP 400.
pub(crate) fn graph_error(
    code: i64,
    subcode: Option<i64>,
    transient: bool,
    message: &str,
) -> Response {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEfGhIjK",
    });
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    if transient {
        error["is_transient"] = json!(true);
    }
    json_status(400, json!({ "error": error }))
}

/// `GET {apiBase}/debug_token?input_token=…&access_token={app-id}|{app-secret}`.
pub(crate) async fn debug_token(
    State(world): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/debug_token", &q);
    let usage = w.usage();
    let app_token = format!("{FB_APP}|{}", w.app_secret);
    if q.get("access_token") != Some(&app_token) {
        let e = graph_error(190, None, false, "Invalid OAuth access token signature.");
        return with_usage(e, &usage);
    }
    let input = q.get("input_token").cloned().unwrap_or_default();
    let Some(t) = w.meta.get(&input).cloned() else {
        let body = json!({"data": {
            "error": {"code": 190, "message": "Invalid OAuth access token."},
            "is_valid": false,
            "scopes": [],
        }});
        return with_usage(json_status(200, body), &usage);
    };
    let resp = match t.answer {
        MetaAnswer::Valid => json_status(200, json!({ "data": t.data() })),
        MetaAnswer::Dead {
            code,
            subcode,
            message,
        } => {
            let mut data = t.data();
            data["is_valid"] = json!(false);
            data["error"] = json!({"code": code, "message": message, "subcode": subcode});
            json_status(200, json!({ "data": data }))
        }
        MetaAnswer::RateLimited => {
            let full = json!({"call_count": 100, "total_cputime": 41, "total_time": 57});
            return with_usage(
                graph_error(4, None, true, "(#4) Application request limit reached"),
                &full.to_string(),
            );
        }
        MetaAnswer::Unavailable => unavailable(),
        MetaAnswer::Garbage => garbage(),
    };
    with_usage(resp, &usage)
}

/// The names of the Graph nodes the tokens reach.
pub(crate) const PAGE_NAME: &str = "Acme Bakery";
pub(crate) const FB_USER_NAME: &str = "Ann Example";
pub(crate) const OTHER_PAGE_NAME: &str = "Acme Outlet";

/// `GET {apiBase}/{id}?fields=name&access_token=…`: a Page or User node, readable with a valid
/// token that reaches it.
pub(crate) async fn graph_node(
    State(world): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/node", &q);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let reaches = w.meta.get(&token).is_some_and(|t| {
        matches!(t.answer, MetaAnswer::Valid) && (t.user_id == id || t.pages.contains(&id))
    });
    let name = match id.as_str() {
        PAGE => PAGE_NAME,
        OTHER_PAGE => OTHER_PAGE_NAME,
        FB_USER => FB_USER_NAME,
        _ => "",
    };
    // An Instagram business account: readable with a token of its Page's manager or the Page.
    if id == IG_ACCOUNT
        && w.meta.get(&token).is_some_and(|t| {
            matches!(t.answer, MetaAnswer::Valid) && t.pages.iter().any(|p| p == PAGE)
        })
    {
        return json_status(200, json!({"id": id, "username": IG_USERNAME}));
    }
    if !reaches || name.is_empty() {
        return graph_error(100, Some(33), false, "Unsupported get request.");
    }
    let mut node = json!({"id": id, "name": name});
    let fields = q.get("fields").cloned().unwrap_or_default();
    if fields.split(',').any(|f| f == "instagram_business_account")
        && let Some(ig) = linked_instagram(&id)
    {
        node["instagram_business_account"] = json!({"id": ig});
    }
    // A Page's own token, returned only to a person with a task on the Page.
    let managed = w
        .meta
        .get(&token)
        .filter(|t| t.kind == "USER" && t.pages.contains(&id))
        .cloned();
    if q.get("fields")
        .is_some_and(|f| f.split(',').any(|f| f == "access_token"))
        && let Some(user) = managed
    {
        // The Page's token, with the person's permissions; it never expires.
        let mut facts = MetaToken::user(&user.user_id, &[id.as_str()], &[], 0);
        facts.scopes = user.scopes.clone();
        facts.kind = "PAGE";
        facts.expires_at = 0;
        node["access_token"] = json!(w.mint_meta(facts));
    }
    json_status(200, node)
}

/// `GET {apiBase}/me/accounts?fields=id,name,access_token,instagram_business_account`: the
/// Pages the person manages, each with its own token and its linked Instagram account.
pub(crate) async fn managed_pages(
    State(world): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/me/accounts", &q);
    let token = q.get("access_token").cloned().unwrap_or_default();
    let Some(user) = w
        .meta
        .get(&token)
        .filter(|t| t.kind == "USER" && matches!(t.answer, MetaAnswer::Valid))
        .cloned()
    else {
        return graph_error(190, None, false, "Invalid OAuth access token.");
    };
    let mut data = Vec::new();
    for page in &user.pages {
        let mut facts = MetaToken::user(&user.user_id, &[page.as_str()], &[], 0);
        facts.scopes = user.scopes.clone();
        facts.kind = "PAGE";
        let mut entry = json!({
            "id": page,
            "name": if page == PAGE { PAGE_NAME } else { OTHER_PAGE_NAME },
            "access_token": w.mint_meta(facts),
            "category": "Bakery",
            "tasks": ["ANALYZE", "ADVERTISE", "MODERATE", "CREATE_CONTENT", "MANAGE"],
        });
        if let Some(ig) = linked_instagram(page) {
            entry["instagram_business_account"] = json!({"id": ig});
        }
        data.push(entry);
    }
    json_status(
        200,
        json!({"data": data, "paging": {"cursors": {"before": "QVFIUk1", "after": "QVFIUkx"}}}),
    )
}

/// `GET {apiBase}/oauth/access_token`: the code exchange (`code`, `redirect_uri`) and the
/// long-lived exchange (`grant_type=fb_exchange_token`), both with the app secret.
pub(crate) async fn meta_access_token(
    State(world): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/oauth/access_token", &q);
    let param = |k: &str| q.get(k).cloned().unwrap_or_default();
    if param("client_id") != FB_APP || param("client_secret") != w.app_secret {
        return graph_error(1, None, false, "Error validating client secret.");
    }
    let (facts, expires_in) = if param("grant_type") == "fb_exchange_token" {
        match w.meta.get(&param("fb_exchange_token")).cloned() {
            Some(t) => match t.answer {
                MetaAnswer::Valid => {
                    let mut long = t.clone();
                    long.expires_at = now() + 5_183_944;
                    long.issued_at = now();
                    (long, 5_183_944)
                }
                MetaAnswer::Dead {
                    code,
                    subcode,
                    message,
                } => return graph_error(code, subcode, false, message),
                MetaAnswer::RateLimited => {
                    return graph_error(4, None, true, "(#4) Application request limit reached");
                }
                MetaAnswer::Unavailable => return unavailable(),
                MetaAnswer::Garbage => return garbage(),
            },
            None => return graph_error(190, None, false, "Invalid OAuth access token."),
        }
    } else {
        match w.codes.remove(&param("code")) {
            Some((facts, redirect)) if redirect == param("redirect_uri") => (facts, 7200),
            Some(_) => {
                return graph_error(
                    100,
                    Some(36008),
                    false,
                    "Error validating verification code. Please make sure your redirect_uri is identical to the one you used in the OAuth dialog request",
                );
            }
            None => {
                return graph_error(
                    100,
                    Some(36009),
                    false,
                    "This authorization code has been used.",
                );
            }
        }
    };
    let token = w.mint_meta(facts);
    json_status(
        200,
        json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in}),
    )
}

/// The Facebook login dialog: the person configured with [`Fake::next_facebook_login`] logs
/// in and consents; Meta redirects back with a code and the state.
pub(crate) async fn facebook_dialog(
    State(world): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record(FB_DIALOG, &q);
    let param = |k: &str| q.get(k).cloned().unwrap_or_default();
    let Some(login) = w.next_login.clone() else {
        return (StatusCode::BAD_REQUEST, "nobody is logging in").into_response();
    };
    if param("client_id") != FB_APP || param("response_type") != "code" {
        return (StatusCode::BAD_REQUEST, "Invalid App ID").into_response();
    }
    let code = mint("AQD");
    w.issued.push(code.clone());
    w.codes.insert(code.clone(), (login, param("redirect_uri")));
    let mut back = url::Url::parse(&param("redirect_uri")).expect("redirect_uri is a URL");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &param("state"));
    back.set_fragment(Some("_=_"));
    (
        StatusCode::FOUND,
        [(header::LOCATION, back.to_string())],
        "",
    )
        .into_response()
}

/// Provider `facebook`: the Graph API base and the login dialog moved to the fake; the token
/// endpoint follows the API base.
pub(crate) async fn facebook_provider(sc: &Scenario, fake: &Fake) {
    let endpoints = ProviderEndpoints {
        authorization_url: Some(fake.url(FB_DIALOG)),
        api_base_url: Some(fake.url(GRAPH)),
        ..Default::default()
    };
    let secret = fake.app_secret();
    apply_provider(
        sc,
        "facebook",
        ProviderType::Facebook,
        FB_APP,
        &secret,
        &["pages_show_list"],
        endpoints,
    )
    .await;
}

/// A scenario with the fake and provider `facebook` pointing at it.
pub(crate) async fn facebook_scenario(prefix: &str) -> (Scenario, Fake) {
    let sc = Scenario::builder(prefix).start().await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    (sc, fake)
}

/// Connection `name` of provider `facebook` for [`PAGE`], its Secret `<name>-token` holding
/// `data`.
pub(crate) async fn facebook_connection(sc: &Scenario, name: &str, data: &[(&str, &str)]) {
    let secret = format!("{name}-token");
    sc.secret(&secret, data).await;
    sc.apply_connection(name, facebook_page(&secret, PAGE))
        .await;
}

/// A connection of provider `facebook` for `page`, its token in Secret `secret`.
pub(crate) fn facebook_page(secret: &str, page: &str) -> TestConnection {
    TestConnection::default()
        .provider("facebook")
        .secret(secret)
        .account(page)
        .requires(&FB_REQUIRED)
}
