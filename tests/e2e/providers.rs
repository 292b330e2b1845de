//! The built-in `facebook` and `google` providers end to end: the operator process checks
//! tokens against a local server that answers as Meta's Graph API and Google's OAuth endpoints
//! document (bodies, status codes, usage headers), with `spec.endpoints` pointing at it; the
//! verdicts are read back through the API as conditions, Events, re-authorization links and
//! Secret contents.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use rand::Rng;
use relink::api::{
    AccountKind, ChannelConnectionStatus, ChannelProvider, ChannelProviderSpec, ClientSecretRef,
    ConditionType, ProviderEndpoints, ProviderType,
};
use serde_json::{Value, json};

use crate::fixtures::{Scenario, browser, connection_spec, open};
use crate::support;

// ---------------------------------------------------------------------------------------------
// A local Meta Graph API and Google OAuth server.
// ---------------------------------------------------------------------------------------------

/// The Meta app (`spec.clientId`) and the Graph API version path it is served under.
const FB_APP: &str = "1865302133672045";
const GRAPH: &str = "/graph/v25.0";
const FB_DIALOG: &str = "/www/v25.0/dialog/oauth";
/// The person logging in, the Page the channel posts to, and another Page of theirs.
const FB_USER: &str = "10215241773831025";
const PAGE: &str = "104857600123456";
const OTHER_PAGE: &str = "104857600999999";
const FB_SCOPES: [&str; 4] = [
    "pages_show_list",
    "pages_manage_posts",
    "pages_read_engagement",
    "public_profile",
];
const FB_REQUIRED: [&str; 2] = ["pages_manage_posts", "pages_read_engagement"];
/// The Instagram business account linked to [`PAGE`], and what publishing to it needs.
const IG_ACCOUNT: &str = "17841400008460056";
const IG_USERNAME: &str = "acmebakery";
const IG_SCOPES: [&str; 5] = [
    "pages_show_list",
    "pages_manage_posts",
    "pages_read_engagement",
    "instagram_basic",
    "instagram_content_publish",
];
const IG_REQUIRED: [&str; 2] = ["instagram_basic", "instagram_content_publish"];

/// The Instagram business account a Page is linked to.
fn linked_instagram(page: &str) -> Option<&'static str> {
    (page == PAGE).then_some(IG_ACCOUNT)
}

const GOOGLE_CLIENT: &str = "418230118870-relinke2e.apps.googleusercontent.com";
const MAILBOX: &str = "ann@example.com";
const GOOGLE_SUB: &str = "110248495921238986420";
const GMAIL_READ: &str = "https://www.googleapis.com/auth/gmail.readonly";
const GMAIL_SEND: &str = "https://www.googleapis.com/auth/gmail.send";
/// What Google's tokeninfo lists for a consent to `openid email <gmail>`.
const USERINFO_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";

/// The redirect URI of an operator started without `--public-url`.
const DEFAULT_CALLBACK: &str = "http://localhost:8081/oauth/callback";

/// What `debug_token` says about one token.
#[derive(Clone, Debug)]
enum MetaAnswer {
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
    fn password_changed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(460),
            message: "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
        }
    }
    fn logged_out() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(467),
            message: "Error validating access token: The user has not authorized application 1865302133672045.",
        }
    }
    fn checkpointed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(459),
            message: "Error validating access token: You cannot access the app till you log in to www.facebook.com and follow the instructions given.",
        }
    }
    fn unconfirmed() -> Self {
        Self::Dead {
            code: 190,
            subcode: Some(464),
            message: "Error validating access token: Sessions for the user are not allowed because the user is not a confirmed user.",
        }
    }
}

/// A Meta token the fake issued.
#[derive(Clone, Debug)]
struct MetaToken {
    /// `USER` or `PAGE`.
    kind: &'static str,
    user_id: String,
    /// Pages picked at login: the `target_ids` of every `pages_*` permission; for a Page
    /// token, the first is the Page it acts as.
    pages: Vec<String>,
    scopes: Vec<String>,
    /// Unix seconds; 0 = never (Page tokens from a long-lived user token).
    expires_at: i64,
    data_access_expires_at: i64,
    issued_at: i64,
    answer: MetaAnswer,
    /// Page permissions granted for every Page the person manages: Meta then lists no
    /// `target_ids`, and only asking a Page tells whether the token reaches it.
    all_pages: bool,
}

impl MetaToken {
    fn user(user: &str, pages: &[&str], scopes: &[&str], lifetime_secs: i64) -> Self {
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
    fn data(&self) -> Value {
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

/// What Google's tokeninfo says about one access token.
#[derive(Clone, Copy, Debug, PartialEq)]
enum GoogleAnswer {
    Valid,
    /// Revoked (or expired): HTTP 400 `invalid_token`.
    Revoked,
    Unavailable,
    Garbage,
}

#[derive(Clone, Debug)]
struct GoogleToken {
    email: String,
    sub: String,
    scopes: Vec<String>,
    exp: i64,
    answer: GoogleAnswer,
}

/// A refresh token and what it grants.
#[derive(Clone, Debug)]
struct GoogleGrant {
    email: String,
    sub: String,
    scopes: Vec<String>,
    revoked: bool,
}

/// One request the fake received: path and parameters (query or form). Holds tokens: compare,
/// never print.
#[derive(Clone)]
struct Call {
    path: &'static str,
    params: HashMap<String, String>,
}

#[derive(Default)]
struct World {
    app_secret: String,
    google_secret: String,
    meta: HashMap<String, MetaToken>,
    /// Authorization code → (the grant the login produced, redirect_uri it was issued for).
    codes: HashMap<String, (MetaToken, String)>,
    /// What the next person at the Facebook login dialog picks.
    next_login: Option<MetaToken>,
    /// Share of the app's rate limit reported in `X-App-Usage`.
    app_usage: u32,
    google: HashMap<String, GoogleToken>,
    refresh: HashMap<String, GoogleGrant>,
    /// Every token, code and secret the fake made, for the leak check.
    issued: Vec<String>,
    calls: Vec<Call>,
}

type Shared = Arc<Mutex<World>>;

/// Handle to the fake provider server; it lives as long as the test's runtime.
struct Fake {
    base: String,
    world: Shared,
}

impl Fake {
    async fn start() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake provider");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let app_secret = mint("fbsecret");
        let google_secret = mint("GOCSPX-");
        let world = Arc::new(Mutex::new(World {
            issued: vec![app_secret.clone(), google_secret.clone()],
            app_secret,
            google_secret,
            app_usage: 4,
            ..Default::default()
        }));
        let app = Router::new()
            .route(&format!("{GRAPH}/debug_token"), get(debug_token))
            .route(
                &format!("{GRAPH}/oauth/access_token"),
                get(meta_access_token),
            )
            .route(FB_DIALOG, get(facebook_dialog))
            .route(&format!("{GRAPH}/{{id}}"), get(graph_node))
            .route(&format!("{GRAPH}/me/accounts"), get(managed_pages))
            .route("/google/tokeninfo", post(tokeninfo))
            .route("/google/token", post(google_token))
            .with_state(world.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { base, world }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("fake world lock")
    }

    fn app_secret(&self) -> String {
        self.world().app_secret.clone()
    }

    fn google_secret(&self) -> String {
        self.world().google_secret.clone()
    }

    /// Issues a Meta token with `facts`; returns it.
    fn meta_token(&self, facts: MetaToken) -> String {
        let token = mint("EAAaRe");
        let mut w = self.world();
        w.issued.push(token.clone());
        w.meta.insert(token.clone(), facts);
        token
    }

    /// A 60-day user token granted on `pages` with `scopes`.
    fn facebook_user_token(&self, pages: &[&str], scopes: &[&str]) -> String {
        self.meta_token(MetaToken::user(FB_USER, pages, scopes, 60 * 86_400))
    }

    /// A Page token of a long-lived user token: acts as `page`, never expires.
    fn facebook_page_token(&self, page: &str, scopes: &[&str]) -> String {
        let mut facts = MetaToken::user(FB_USER, &[page], scopes, 0);
        facts.kind = "PAGE";
        facts.expires_at = 0;
        self.meta_token(facts)
    }

    fn edit_meta(&self, token: &str, edit: impl FnOnce(&mut MetaToken)) {
        let mut w = self.world();
        edit(w.meta.get_mut(token).expect("a token the fake issued"));
    }

    fn set_meta(&self, token: &str, answer: MetaAnswer) {
        self.edit_meta(token, |t| t.answer = answer);
    }

    fn meta_facts(&self, token: &str) -> Option<MetaToken> {
        self.world().meta.get(token).cloned()
    }

    fn set_app_usage(&self, percent: u32) {
        self.world().app_usage = percent;
    }

    /// What the next person to pass the Facebook login dialog grants.
    fn next_facebook_login(&self, pages: &[&str], scopes: &[&str]) {
        self.world().next_login = Some(MetaToken::user(FB_USER, pages, scopes, 2 * 3600));
    }

    /// The next login grants the Page permissions for every Page the person manages
    /// (`managed`): `debug_token` then names no Page.
    fn next_facebook_login_for_all_pages(&self, managed: &[&str], scopes: &[&str]) {
        let mut login = MetaToken::user(FB_USER, managed, scopes, 2 * 3600);
        login.all_pages = true;
        self.world().next_login = Some(login);
    }

    /// An access token (one hour) and a refresh token for the mailbox.
    fn google_tokens(&self, scopes: &[&str]) -> (String, String) {
        let access = mint("ya29.a0Ae");
        let refresh = mint("1//0g");
        let mut w = self.world();
        w.issued.extend([access.clone(), refresh.clone()]);
        w.google.insert(
            access.clone(),
            GoogleToken {
                email: MAILBOX.into(),
                sub: GOOGLE_SUB.into(),
                scopes: strings(scopes),
                exp: now() + 3599,
                answer: GoogleAnswer::Valid,
            },
        );
        w.refresh.insert(
            refresh.clone(),
            GoogleGrant {
                email: MAILBOX.into(),
                sub: GOOGLE_SUB.into(),
                scopes: strings(scopes),
                revoked: false,
            },
        );
        (access, refresh)
    }

    fn edit_google(&self, token: &str, edit: impl FnOnce(&mut GoogleToken)) {
        let mut w = self.world();
        edit(w.google.get_mut(token).expect("a token the fake issued"));
    }

    fn set_google(&self, token: &str, answer: GoogleAnswer) {
        self.edit_google(token, |t| t.answer = answer);
    }

    fn revoke_refresh(&self, token: &str) {
        let mut w = self.world();
        w.refresh.get_mut(token).expect("issued").revoked = true;
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.world()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Whether any call to `path` sent `value` as parameter `key`.
    fn sent(&self, path: &str, key: &str, value: &str) -> bool {
        self.calls(path)
            .iter()
            .any(|c| c.params.get(key).map(String::as_str) == Some(value))
    }

    fn issued(&self) -> Vec<String> {
        self.world().issued.clone()
    }
}

impl World {
    fn record(&mut self, path: &'static str, params: &HashMap<String, String>) {
        self.calls.push(Call {
            path,
            params: params.clone(),
        });
    }

    fn mint_meta(&mut self, facts: MetaToken) -> String {
        let token = mint("EAAaRe");
        self.issued.push(token.clone());
        self.meta.insert(token.clone(), facts);
        token
    }

    /// `X-App-Usage` as Meta sends it on every Graph answer.
    fn usage(&self) -> String {
        let p = self.app_usage;
        json!({"call_count": p, "total_cputime": p / 2, "total_time": p / 2}).to_string()
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn mint(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

fn with_usage(mut resp: Response, usage: &str) -> Response {
    resp.headers_mut().insert(
        "x-app-usage",
        HeaderValue::from_str(usage).expect("header value"),
    );
    resp
}

fn json_status(status: u16, body: Value) -> Response {
    let mut resp = Json(body).into_response();
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp
}

/// Meta's error object, HTTP 400.
fn graph_error(code: i64, subcode: Option<i64>, transient: bool, message: &str) -> Response {
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

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
}

fn garbage() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body>Sorry, something went wrong.</body></html>",
    )
        .into_response()
}

/// `GET {apiBase}/debug_token?input_token=…&access_token={app-id}|{app-secret}`.
async fn debug_token(
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
const PAGE_NAME: &str = "Acme Bakery";
const FB_USER_NAME: &str = "Ann Example";
const OTHER_PAGE_NAME: &str = "Acme Outlet";

/// `GET {apiBase}/{id}?fields=name&access_token=…`: a Page or User node, readable with a valid
/// token that reaches it.
async fn graph_node(
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
async fn managed_pages(
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
async fn meta_access_token(
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
async fn facebook_dialog(
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

/// `POST https://oauth2.googleapis.com/tokeninfo` with `access_token=…` in the form body
/// (Google accepts GET and POST; relink keeps the token out of the URL).
async fn tokeninfo(
    State(world): State<Shared>,
    Form(q): Form<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/tokeninfo", &q);
    let invalid = || {
        json_status(
            400,
            json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        )
    };
    let token = q.get("access_token").cloned().unwrap_or_default();
    let Some(t) = w.google.get(&token).cloned() else {
        return invalid();
    };
    match t.answer {
        GoogleAnswer::Valid if t.exp > now() => json_status(
            200,
            json!({
                "azp": GOOGLE_CLIENT,
                "aud": GOOGLE_CLIENT,
                "sub": t.sub,
                "scope": t.scopes.join(" "),
                "exp": t.exp.to_string(),
                "expires_in": (t.exp - now()).to_string(),
                "email": t.email,
                "email_verified": "true",
                "access_type": "offline",
            }),
        ),
        GoogleAnswer::Valid | GoogleAnswer::Revoked => invalid(),
        GoogleAnswer::Unavailable => unavailable(),
        GoogleAnswer::Garbage => garbage(),
    }
}

/// `POST https://oauth2.googleapis.com/token` (form, client credentials in the form).
async fn google_token(
    State(world): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/token", &form);
    let param = |k: &str| form.get(k).cloned().unwrap_or_default();
    if param("client_id") != GOOGLE_CLIENT || param("client_secret") != w.google_secret {
        return json_status(
            401,
            json!({"error": "invalid_client", "error_description": "Unauthorized"}),
        );
    }
    if param("grant_type") != "refresh_token" {
        return json_status(
            400,
            json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
        );
    }
    let grant = match w.refresh.get(&param("refresh_token")) {
        Some(g) if !g.revoked => g.clone(),
        _ => {
            return json_status(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            );
        }
    };
    let access = mint("ya29.a0Ae");
    w.issued.push(access.clone());
    w.google.insert(
        access.clone(),
        GoogleToken {
            email: grant.email,
            sub: grant.sub,
            scopes: grant.scopes.clone(),
            exp: now() + 3599,
            answer: GoogleAnswer::Valid,
        },
    );
    json_status(
        200,
        json!({
            "access_token": access,
            "expires_in": 3599,
            "scope": grant.scopes.join(" "),
            "token_type": "Bearer",
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Scenario helpers.
// ---------------------------------------------------------------------------------------------

/// A namespaced `ChannelProvider` of a built-in type, with its client secret.
async fn apply_provider(
    sc: &Scenario,
    name: &str,
    type_: ProviderType,
    client_id: &str,
    client_secret: &str,
    scopes: &[&str],
    endpoints: ProviderEndpoints,
) {
    sc.secret(
        &format!("{name}-client"),
        &[("client_secret", client_secret)],
    )
    .await;
    let p = ChannelProvider::new(
        name,
        ChannelProviderSpec {
            type_,
            client_id: client_id.into(),
            client_secret_ref: Some(ClientSecretRef {
                name: format!("{name}-client"),
                key: "client_secret".into(),
                namespace: None,
            }),
            redirect_url: None,
            scopes: strings(scopes),
            endpoints,
            authorization_params: BTreeMap::new(),
            refresh_token_lifetime: None,
        },
    );
    Api::<ChannelProvider>::namespaced(sc.client.clone(), &sc.ns)
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&p))
        .await
        .expect("provider applies");
}

/// Provider `facebook`: the Graph API base and the login dialog moved to the fake; the token
/// endpoint follows the API base.
async fn facebook_provider(sc: &Scenario, fake: &Fake) {
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

/// Provider `google`: tokeninfo, token and authorization endpoints moved to the fake.
async fn google_provider(sc: &Scenario, fake: &Fake) {
    let endpoints = ProviderEndpoints {
        authorization_url: Some(fake.url("/google/o/oauth2/v2/auth")),
        token_url: Some(fake.url("/google/token")),
        introspection_url: Some(fake.url("/google/tokeninfo")),
        ..Default::default()
    };
    let secret = fake.google_secret();
    apply_provider(
        sc,
        "google",
        ProviderType::Google,
        GOOGLE_CLIENT,
        &secret,
        &[],
        endpoints,
    )
    .await;
}

/// A scenario with the fake and provider `facebook` pointing at it.
async fn facebook_scenario(prefix: &str) -> (Scenario, Fake) {
    let sc = Scenario::start(prefix).await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    (sc, fake)
}

async fn google_scenario(prefix: &str) -> (Scenario, Fake) {
    let sc = Scenario::start(prefix).await;
    let fake = Fake::start().await;
    google_provider(&sc, &fake).await;
    (sc, fake)
}

/// Connection `name` of provider `facebook` for [`PAGE`], its Secret `<name>-token` holding
/// `data`.
async fn facebook_connection(sc: &Scenario, name: &str, data: &[(&str, &str)]) {
    let secret = format!("{name}-token");
    sc.secret(&secret, data).await;
    sc.apply_connection(
        name,
        connection_spec("facebook", &secret, PAGE, &FB_REQUIRED),
    )
    .await;
}

/// Connection `name` of provider `google` for [`MAILBOX`] requiring Gmail read access.
async fn google_connection(sc: &Scenario, name: &str, data: &[(&str, &str)]) {
    let secret = format!("{name}-token");
    sc.secret(&secret, data).await;
    sc.apply_connection(
        name,
        connection_spec("google", &secret, MAILBOX, &[GMAIL_READ]),
    )
    .await;
}

fn cond(s: &ChannelConnectionStatus, t: ConditionType) -> (String, String) {
    let c = s
        .condition(t)
        .unwrap_or_else(|| panic!("condition {} present", t.as_str()));
    (c.status.clone(), c.reason.clone())
}

fn message(s: &ChannelConnectionStatus, t: ConditionType) -> String {
    s.condition(t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn query(link: &str) -> BTreeMap<String, String> {
    url::Url::parse(link)
        .expect("a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

async fn secret_data(sc: &Scenario, name: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get(name)
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// Waits until `Reconciling` says `ProviderUnavailable` with `needle` in its message.
async fn wait_unavailable(sc: &Scenario, name: &str, needle: &str) -> ChannelConnectionStatus {
    support::eventually(
        &format!("{name}: ProviderUnavailable mentioning {needle:?}"),
        Duration::from_secs(30),
        || async {
            let s = sc.status(name).await;
            let c = s.condition(ConditionType::Reconciling)?;
            (c.status == "True" && c.reason == "ProviderUnavailable" && c.message.contains(needle))
                .then_some(s)
        },
    )
    .await
}

/// Reasons of the `Warning` Events about `name`.
async fn warnings(sc: &Scenario, name: &str) -> Vec<String> {
    sc.events(name)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits for a `Warning` Event about `name` with `reason` whose note contains `words`.
async fn wait_warning_saying(sc: &Scenario, name: &str, reason: &str, words: &str) {
    support::eventually(
        &format!("Warning {reason} for {name} saying {words:?}"),
        Duration::from_secs(20),
        || async {
            sc.events(name)
                .await
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(words))
                })
                .map(|_| ())
        },
    )
    .await
}

/// No verdict this time: `Ready`, `Stalled` and the re-authorization link are as they were
/// `before` the provider trouble, so nobody is asked to do anything.
fn assert_verdict_kept(before: &ChannelConnectionStatus, s: &ChannelConnectionStatus, what: &str) {
    assert_eq!(
        cond(s, ConditionType::Ready),
        cond(before, ConditionType::Ready),
        "{what}: Ready kept"
    );
    assert_eq!(cond(before, ConditionType::Ready).0, "True");
    assert_eq!(
        cond(s, ConditionType::Stalled).0,
        "False",
        "{what}: nobody is asked to act"
    );
    assert_eq!(s.reauth_url, before.reauth_url, "{what}: link unchanged");
    assert!(s.consecutive_failures >= 1, "{what}: failure counted");
}

/// The next check of `s` is about ten minutes after the last one, and no call comes meanwhile.
async fn assert_holds_off(sc: &Scenario, fake: &Fake, s: &ChannelConnectionStatus, what: &str) {
    let last = s.last_check_time.clone().expect("checked").0;
    let next = s.next_check_time.clone().expect("next check").0;
    let wait = next.duration_since(last).as_secs();
    assert!(
        wait >= 590,
        "{what}: the next check waits about 10 minutes, not {wait}s"
    );
    let calls = fake.calls("/debug_token").len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fake.calls("/debug_token").len(),
        calls,
        "{what}: no retries meanwhile"
    );
    assert_eq!(
        sc.status("chan").await.last_check_time.map(|t| t.0),
        Some(last)
    );
}

/// Every token, code and secret of the scenario joins the leak check, which then runs.
async fn assert_nothing_leaked(sc: &mut Scenario, fake: &Fake) {
    sc.tokens.extend(fake.issued());
    sc.assert_no_token_leaked().await;
}

// ---------------------------------------------------------------------------------------------
// Facebook.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_page_token_is_valid_then_password_change_turns_it_stalled() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-password").await;
    let user_token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    let page_token = fake.facebook_page_token(PAGE, &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &user_token)]).await;
    facebook_connection(&sc, "page", &[("access_token", &page_token)]).await;

    let s = sc.wait_ready_reason("chan", "Valid").await;
    let facts = fake.meta_facts(&user_token).expect("issued");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "False");
    assert_eq!(s.granted_scopes, FB_SCOPES);
    assert!(s.missing_scopes.is_empty());
    // A user token reports the person; the Page is among the granted targets.
    let account = s.account.clone().expect("account reported");
    assert_eq!(account.id.as_deref(), Some(FB_USER));
    assert_eq!(
        s.data_access_expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.data_access_expires_at),
        "the 90-day data access clock is shown"
    );
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.expires_at)
    );
    assert_eq!(s.reauth_url, None);
    // debug_token is asked with the app access token, the user token only as input_token.
    let app_token = format!("{FB_APP}|{}", fake.app_secret());
    let calls = fake.calls("/debug_token");
    assert!(
        calls
            .iter()
            .all(|c| c.params.get("access_token") == Some(&app_token)),
        "every debug_token call authenticates as the app"
    );
    assert!(fake.sent("/debug_token", "input_token", &user_token));

    // A Page token acts as the Page and never expires (`expires_at: 0`).
    let s = sc.wait_ready_reason("page", "Valid").await;
    let page_account = s.account.clone().expect("account");
    assert_eq!(
        page_account.id.as_deref(),
        Some(PAGE),
        "a Page token reports the Page (profile_id)"
    );
    assert_eq!(
        page_account.name.as_deref(),
        Some(PAGE_NAME),
        "the ACCOUNT column names the Page (GET /{{page-id}}?fields=name)"
    );
    let named = fake.calls("/node").len();
    let asked = sc.request_check("page").await;
    support::eventually(
        "a second check of the page",
        Duration::from_secs(20),
        || async {
            let s = sc.status("page").await;
            (s.last_handled_check_request.as_deref() == Some(asked.as_str())).then_some(())
        },
    )
    .await;
    assert_eq!(
        fake.calls("/node").len(),
        named,
        "the name is asked once, then kept in status"
    );
    assert_eq!(s.expires_at, None, "expires_at 0 means never");
    assert!(s.data_access_expires_at.is_some());

    // The person changes their Facebook password: Meta invalidates the session.
    fake.set_meta(&user_token, MetaAnswer::password_changed());
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "False");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "Revoked".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "Revoked".into())
    );
    assert_eq!(cond(&s, ConditionType::Reconciling).0, "False");
    let ready = message(&s, ConditionType::Ready);
    assert!(ready.contains("password"), "{ready}");
    assert!(ready.contains("460"), "{ready}");
    let warning = sc.wait_event("chan", "Warning", "Revoked").await;
    assert!(
        warning.note.unwrap_or_default().contains("password"),
        "the Event says why"
    );

    // The link asks Facebook for the same permissions again, comma-separated, at the
    // overridden dialog; Facebook has no PKCE.
    let link = s.reauth_url.clone().expect("a re-authorization link");
    assert!(
        link.starts_with(&format!("{}?", fake.url(FB_DIALOG))),
        "{link}"
    );
    let q = query(&link);
    assert_eq!(q["client_id"], FB_APP);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], DEFAULT_CALLBACK);
    assert_eq!(
        q["scope"],
        "pages_show_list,pages_manage_posts,pages_read_engagement"
    );
    assert_eq!(q["auth_type"], "rerequest");
    assert!(q.contains_key("state"));
    assert!(!q.contains_key("code_challenge"), "no PKCE at Facebook");
    assert!(
        !link.contains(&fake.app_secret()),
        "no app secret in the link"
    );

    // The Page token of the same person is another connection: untouched.
    let page = sc.status("page").await;
    assert_eq!(cond(&page, ConditionType::Ready).1, "Valid");
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_page_removed_from_grant_is_account_mismatch() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-mismatch").await;
    let token = fake.facebook_user_token(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    // Business settings: the person takes the Page away from the app; the token still works.
    fake.edit_meta(&token, |t| t.pages = vec![OTHER_PAGE.into()]);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "AccountMismatch").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "AccountMismatch".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into()),
        "the permissions themselves are still granted"
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "AccountMismatch".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains(PAGE), "names the Page: {m}");
    let link = s
        .reauth_url
        .clone()
        .expect("the person must log in and pick the Page");
    assert!(link.starts_with(&fake.url(FB_DIALOG)));
    sc.wait_event("chan", "Warning", "AccountMismatch").await;

    // The Page is picked again.
    fake.edit_meta(&token, |t| t.pages = vec![PAGE.into(), OTHER_PAGE.into()]);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "link withdrawn once healthy");
    assert_eq!(
        warnings(&sc, "chan").await,
        ["AccountMismatch"],
        "one Warning for the one bad transition"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_removed_permission_is_scopes_missing() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-scopes").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    // The person removes "manage posts" from the app's permissions on Facebook.
    fake.edit_meta(&token, |t| t.scopes.retain(|s| s != "pages_manage_posts"));
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "ScopesMissing").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into()),
        "the token itself works"
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("False".into(), "ScopesMissing".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(s.missing_scopes, ["pages_manage_posts"]);
    let link = s.reauth_url.expect("re-consent link");
    assert_eq!(
        query(&link)["scope"],
        "pages_show_list,pages_manage_posts,pages_read_engagement"
    );
    sc.wait_event("chan", "Warning", "ScopesMissing").await;
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_rate_limit_keeps_the_verdict() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-ratelimit").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let healthy = sc.wait_ready_reason("chan", "Valid").await;

    // Meta throttles the app: code 4, is_transient, X-App-Usage at 100 %. Retrying within
    // seconds cannot help before Meta's hour-long window moves: relink waits about ten minutes.
    fake.set_meta(&token, MetaAnswer::RateLimited);
    sc.request_check("chan").await;
    let s = wait_unavailable(&sc, "chan", "Application request limit reached").await;
    assert_verdict_kept(&healthy, &s, "code 4");
    assert_holds_off(&sc, &fake, &s, "code 4 at 100% usage").await;

    // Throttling lifts but the app is at 97 % of its limit: the token works, yet relink holds
    // off instead of pushing every channel of the app over the limit.
    fake.set_app_usage(97);
    fake.set_meta(&token, MetaAnswer::Valid);
    sc.request_check("chan").await;
    let s = wait_unavailable(&sc, "chan", "97%").await;
    assert_verdict_kept(&healthy, &s, "X-App-Usage 97%");
    assert_holds_off(&sc, &fake, &s, "97% usage").await;

    // Usage back to normal; a check clears the failure without a Ready transition.
    fake.set_app_usage(12);
    sc.request_check("chan").await;
    sc.wait_condition("chan", ConditionType::Reconciling, "Valid")
        .await;
    let s = sc.status("chan").await;
    assert_eq!(s.consecutive_failures, 0);
    let w = warnings(&sc, "chan").await;
    assert!(
        w.iter().all(|r| r == "ProviderUnavailable"),
        "no owner-facing Warning, only provider trouble: {w:?}"
    );
    let valid_events = sc
        .events("chan")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Valid"))
        .count();
    assert_eq!(
        valid_events, 0,
        "Ready never changed (and a first Valid is no news), so no Valid Event"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_checkpoint_needs_the_user_on_facebook() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-checkpoint").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    for (i, (answer, words)) in [
        (MetaAnswer::checkpointed(), "checkpoint"),
        (MetaAnswer::unconfirmed(), "confirm"),
    ]
    .into_iter()
    .enumerate()
    {
        fake.set_meta(&token, answer);
        sc.request_check("chan").await;
        let s = sc.wait_ready_reason("chan", "AccountActionRequired").await;
        assert_eq!(
            cond(&s, ConditionType::TokenValid),
            ("False".into(), "AccountActionRequired".into())
        );
        assert_eq!(
            cond(&s, ConditionType::Stalled),
            ("True".into(), "AccountActionRequired".into()),
            "a person must act"
        );
        let m = message(&s, ConditionType::Ready);
        assert!(m.contains(words) && m.contains("Facebook"), "{m}");
        if i == 0 {
            wait_warning_saying(&sc, "chan", "AccountActionRequired", words).await;
        } else {
            // Same reason again: the Event recorder counts it in the first Event's series
            // (keeping that Event's note); the condition above carries the new cause.
            support::eventually(
                "a second AccountActionRequired",
                Duration::from_secs(20),
                || async {
                    sc.events("chan")
                        .await
                        .into_iter()
                        .find(|e| {
                            e.reason.as_deref() == Some("AccountActionRequired")
                                && e.series.as_ref().is_some_and(|s| s.count >= 2)
                        })
                        .map(|_| ())
                },
            )
            .await;
        }

        // The owner clears it on Facebook; the same token works again.
        fake.set_meta(&token, MetaAnswer::Valid);
        sc.request_check("chan").await;
        sc.wait_ready_reason("chan", "Valid").await;
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_lapsed_data_access_needs_reauthorization() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-dataaccess").await;
    // The person has not used the app for 90 days: Meta still authenticates the token, but the
    // app may no longer act on their Pages.
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    fake.edit_meta(&token, |t| t.data_access_expires_at = now() - 3600);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let s = sc
        .wait_ready_reason("chan", "ReauthorizationRequired")
        .await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "False");
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "ReauthorizationRequired".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("data") && m.contains("90 days"), "{m}");
    let link = s.reauth_url.expect("a person must log in again");
    assert!(link.starts_with(&fake.url(FB_DIALOG)));
    sc.wait_event("chan", "Warning", "ReauthorizationRequired")
        .await;

    // They log in again: a fresh 90 days.
    fake.edit_meta(&token, |t| t.data_access_expires_at = now() + 90 * 86_400);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.data_access_expires_at.is_some());
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_expiring_user_token_is_exchanged_for_a_long_lived_one() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-exchange").await;
    // A user token with two hours left, its expiry recorded next to it.
    let token = fake.meta_token(MetaToken::user(FB_USER, &[PAGE], &FB_SCOPES, 7200));
    let expires = fake.meta_facts(&token).expect("issued").expires_at;
    facebook_connection(
        &sc,
        "chan",
        &[
            ("access_token", &token),
            ("expires_at", &expires.to_string()),
        ],
    )
    .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.last_refresh_time.is_some(), "renewed");
    let data = secret_data(&sc, "chan-token").await;
    let new = data["access_token"].clone();
    assert!(new != token, "a new token was written");
    let facts = fake.meta_facts(&new).expect("a token the fake issued");
    assert!(
        facts.expires_at - now() > 59 * 86_400,
        "the long-lived (60-day) token"
    );
    let written: jiff::Timestamp = data["expires_at"].parse().expect("RFC 3339 expiry");
    assert!((written.as_second() - facts.expires_at).abs() < 60);
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.expires_at)
    );
    // One GET oauth/access_token with grant_type=fb_exchange_token and the app secret; then
    // only the new token is inspected.
    let exchanges = fake.calls("/oauth/access_token");
    assert_eq!(exchanges.len(), 1);
    let p = &exchanges[0].params;
    assert_eq!(p["grant_type"], "fb_exchange_token");
    assert_eq!(p["client_id"], FB_APP);
    assert!(p["client_secret"] == fake.app_secret() && p["fb_exchange_token"] == token);
    assert!(!fake.sent("/debug_token", "input_token", &token));
    assert!(fake.sent("/debug_token", "input_token", &new));
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_revoked_token_is_restored_through_the_reauth_link() {
    if support::skip() {
        return;
    }
    let (mut sc, public) = Scenario::start_with_callback("fb-reauth").await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(
        &sc,
        "chan",
        &[("access_token", &token), ("note", "kept by relink")],
    )
    .await;
    sc.wait_ready_reason("chan", "Valid").await;
    fake.set_meta(&token, MetaAnswer::logged_out());
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    let link = s.reauth_url.expect("link");
    assert_eq!(
        query(&link)["redirect_uri"],
        format!("{public}/oauth/callback")
    );

    // First the person picks only their other Page: refused before anything is written.
    fake.next_facebook_login(&[OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains(PAGE), "{page}");
    assert!(
        secret_data(&sc, "chan-token").await["access_token"] == token,
        "the Secret is unchanged"
    );

    // Then they pick the right Page, with the link that replaced the used one.
    let link = sc.status("chan").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login(&[PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    assert!(callback.starts_with(&format!("{public}/oauth/callback?")));
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("connected again"), "{page}");

    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None);
    let data = secret_data(&sc, "chan-token").await;
    let new = data["access_token"].clone();
    assert!(new != token, "new token written");
    assert_eq!(data["note"], "kept by relink", "other keys untouched");
    // The code bought a short-lived token, exchanged at once for the 60-day one, and with it
    // the Page's own token: what a Page connection needs to publish.
    let facts = fake.meta_facts(&new).expect("a token the fake issued");
    assert_eq!(
        (facts.kind, facts.pages.first().map(String::as_str)),
        ("PAGE", Some(PAGE)),
        "the Page token is stored, not the person's user token"
    );
    assert_eq!(
        facts.expires_at, 0,
        "a Page token of a long-lived user token never expires"
    );
    assert!(
        !data.contains_key("expires_at"),
        "no expiry recorded for it"
    );
    assert_eq!(
        s.account.as_ref().and_then(|a| a.name.as_deref()),
        Some(PAGE_NAME),
        "the ACCOUNT column names the Page"
    );
    let calls = fake.calls("/oauth/access_token");
    let code_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.params.contains_key("code"))
        .collect();
    assert_eq!(code_calls.len(), 2, "one code per login");
    assert!(
        code_calls.iter().all(
            |c| c.params["redirect_uri"] == format!("{public}/oauth/callback")
                && c.params["client_secret"] == fake.app_secret()
        ),
        "code exchanged with the same redirect_uri and the app secret"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.params.get("grant_type").map(String::as_str) == Some("fb_exchange_token")),
        "short-lived token exchanged"
    );
    sc.wait_event("chan", "Normal", "Valid").await;
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_facebook_login_heals_every_page_it_grants() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let smtp = sink.url();
    let (mut sc, _public) = Scenario::start_with_callback_flags(
        "fb-heal",
        &[("--smtp-url", &smtp), ("--smtp-from", "relink@example.com")],
    )
    .await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    // Two Pages of one admin, each connection with its own Page token.
    let first = fake.facebook_page_token(PAGE, &FB_SCOPES);
    let second = fake.facebook_page_token(OTHER_PAGE, &FB_SCOPES);
    facebook_connection(&sc, "acme", &[("access_token", &first)]).await;
    sc.secret("outlet-token", &[("access_token", &second)])
        .await;
    sc.apply_connection(
        "outlet",
        connection_spec("facebook", "outlet-token", OTHER_PAGE, &FB_REQUIRED),
    )
    .await;
    sc.wait_ready_reason("acme", "Valid").await;
    sc.wait_ready_reason("outlet", "Valid").await;

    // The admin changes their password: both Pages die at once.
    fake.set_meta(&first, MetaAnswer::password_changed());
    fake.set_meta(&second, MetaAnswer::password_changed());
    // Their checks find it one after the other, as scheduled checks do.
    sc.request_check("acme").await;
    let link = sc
        .wait_ready_reason("acme", "Revoked")
        .await
        .reauth_url
        .expect("link");
    sc.request_check("outlet").await;
    sc.wait_ready_reason("outlet", "Revoked").await;
    // The owner's mail offers one login for both: the later one names the other Page.
    let mails = support::eventually("two mails", Duration::from_secs(30), || async {
        let m = sink.mails();
        (m.len() >= 2).then_some(m)
    })
    .await;
    assert!(
        mails.iter().any(|m| {
            let t = m.text();
            t.contains("also reconnects") && t.contains(&format!("{PAGE} display"))
        }),
        "the outlet's mail names the other broken Page"
    );

    // One login through the first Page's link, granting both Pages, heals both.
    fake.next_facebook_login(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("also reconnected: outlet"), "{page}");
    for (name, secret, id, page_name) in [
        ("acme", "acme-token", PAGE, PAGE_NAME),
        ("outlet", "outlet-token", OTHER_PAGE, OTHER_PAGE_NAME),
    ] {
        let s = sc.wait_ready_reason(name, "Valid").await;
        assert_eq!(s.reauth_url, None, "{name}: the link is withdrawn");
        assert_eq!(
            s.account.as_ref().and_then(|a| a.name.as_deref()),
            Some(page_name)
        );
        let token = secret_data(&sc, secret).await["access_token"].clone();
        let facts = fake.meta_facts(&token).expect("a token the fake issued");
        assert_eq!(
            (facts.kind, facts.pages.first().map(String::as_str)),
            ("PAGE", Some(id)),
            "{name}: its own Page's token"
        );
        sc.tokens.push(token);
        let e = sc.wait_event(name, "Normal", "Reauthorized").await;
        assert!(e.note.unwrap_or_default().contains(id), "{name}");
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// Two Pages of one admin die together (a password change): with a batching window their owner
/// gets one email with one link, and one login through it reconnects both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_broken_together_get_one_email_with_one_link() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let smtp = sink.url();
    let (mut sc, _public) = Scenario::start_with_callback_flags(
        "fb-group",
        &[
            ("--smtp-url", &smtp),
            ("--smtp-from", "relink@example.com"),
            ("--notification-batch-window", "10s"),
        ],
    )
    .await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let first = fake.facebook_page_token(PAGE, &FB_SCOPES);
    let second = fake.facebook_page_token(OTHER_PAGE, &FB_SCOPES);
    facebook_connection(&sc, "acme", &[("access_token", &first)]).await;
    sc.secret("outlet-token", &[("access_token", &second)])
        .await;
    sc.apply_connection(
        "outlet",
        connection_spec("facebook", "outlet-token", OTHER_PAGE, &FB_REQUIRED),
    )
    .await;
    sc.wait_ready_reason("acme", "Valid").await;
    sc.wait_ready_reason("outlet", "Valid").await;

    fake.set_meta(&first, MetaAnswer::password_changed());
    fake.set_meta(&second, MetaAnswer::password_changed());
    sc.request_check("acme").await;
    sc.request_check("outlet").await;
    let mut links = Vec::new();
    for name in ["acme", "outlet"] {
        let s = sc.wait_ready_reason(name, "Revoked").await;
        links.push(s.reauth_url.expect("link"));
        sc.wait_event(name, "Normal", "NotificationSent").await;
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "one email for both Pages");
    assert!(
        mails[0]
            .subject()
            .contains("2 Facebook pages need you to log in again"),
        "{}",
        mails[0].subject()
    );
    let text = mails[0].text();
    assert!(text.contains("One login reconnects every one of them"));
    let offered: Vec<&String> = links.iter().filter(|l| text.contains(l.as_str())).collect();
    assert_eq!(offered.len(), 1, "one link for both");

    // That one link heals both.
    fake.next_facebook_login(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let (status, page) = open(&follow_dialog(offered[0]).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("also reconnected"), "{page}");
    for (name, secret) in [("acme", "acme-token"), ("outlet", "outlet-token")] {
        sc.wait_ready_reason(name, "Valid").await;
        sc.tokens
            .push(secret_data(&sc, secret).await["access_token"].clone());
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// An Instagram business account reached through its Facebook Page (`spec.account.kind:
/// InstagramBusiness`) holds the Page's token: the check names the account by its username, a
/// login that manages no Page linked to it is refused, and the Page's manager gets the Page's
/// token written, healing the Page's own broken connection with the same login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_business_account_holds_its_pages_token() {
    if support::skip() {
        return;
    }
    let (mut sc, _) = Scenario::start_with_callback("fb-ig").await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let ig_token = fake.facebook_page_token(PAGE, &IG_SCOPES);
    let page_token = fake.facebook_page_token(PAGE, &IG_SCOPES);
    sc.secret("insta-token", &[("access_token", &ig_token)])
        .await;
    let mut spec = connection_spec("facebook", "insta-token", IG_ACCOUNT, &IG_REQUIRED);
    if let Some(a) = spec.account.as_mut() {
        a.kind = Some(AccountKind::InstagramBusiness);
    }
    sc.apply_connection("insta", spec).await;
    facebook_connection(&sc, "acme", &[("access_token", &page_token)]).await;
    let s = sc.wait_ready_reason("insta", "Valid").await;
    let account = s.account.clone().unwrap_or_default();
    assert_eq!(
        (account.id.as_deref(), account.name.as_deref()),
        (Some(IG_ACCOUNT), Some(IG_USERNAME)),
        "the ACCOUNT column names the Instagram account"
    );
    assert_eq!(cond(&s, ConditionType::ScopesGranted).0, "True");
    sc.wait_ready_reason("acme", "Valid").await;

    // The admin changes their password: the Page tokens of both channels die.
    fake.set_meta(&ig_token, MetaAnswer::password_changed());
    fake.set_meta(&page_token, MetaAnswer::password_changed());
    sc.request_check("acme").await;
    sc.wait_ready_reason("acme", "Revoked").await;
    sc.request_check("insta").await;
    let link = sc
        .wait_ready_reason("insta", "Revoked")
        .await
        .reauth_url
        .expect("link");

    // Someone who manages only a Page without that Instagram account: refused, nothing written.
    fake.next_facebook_login(&[OTHER_PAGE], &IG_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("manages no Facebook Page linked to the Instagram account"),
        "{page}"
    );
    assert_eq!(
        secret_data(&sc, "insta-token").await["access_token"],
        ig_token
    );

    // The Page's manager: the Page's token is written, and the Page's connection healed too.
    let link = sc.status("insta").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login(&[PAGE], &IG_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(IG_USERNAME), "{page}");
    assert!(page.contains("also reconnected: acme"), "{page}");
    assert!(
        fake.calls("/me/accounts").iter().any(|c| c
            .params
            .get("fields")
            .is_some_and(|f| f.contains("instagram_business_account"))),
        "the managed Pages were listed"
    );
    for (name, secret) in [("insta", "insta-token"), ("acme", "acme-token")] {
        let s = sc.wait_ready_reason(name, "Valid").await;
        assert_eq!(s.reauth_url, None, "{name}: the link is withdrawn");
        let token = secret_data(&sc, secret).await["access_token"].clone();
        let facts = fake.meta_facts(&token).expect("a token the fake issued");
        assert_eq!(
            (facts.kind, facts.pages.first().map(String::as_str)),
            ("PAGE", Some(PAGE)),
            "{name}: the Page's token, not the person's"
        );
        sc.tokens.push(token);
    }
    let s = sc.status("insta").await;
    assert_eq!(s.account.and_then(|a| a.name).as_deref(), Some(IG_USERNAME));
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// Opens a re-authorization link at the fake Facebook dialog and returns where it redirects.
/// A login that grants the Page permissions for every Page names no Page: relink asks the Page
/// itself (`GET /{page-id}?fields=id,name,access_token`) and writes only a login that manages it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_login_for_every_page_is_confirmed_with_the_page() {
    if support::skip() {
        return;
    }
    let (mut sc, _) = Scenario::start_with_callback("fb-allpages").await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;
    fake.set_meta(&token, MetaAnswer::logged_out());
    sc.request_check("chan").await;
    let link = sc
        .wait_ready_reason("chan", "Revoked")
        .await
        .reauth_url
        .expect("link");

    // Someone who manages only another Page logs in with "all Pages": refused, nothing written.
    fake.next_facebook_login_for_all_pages(&[OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains(PAGE), "{page}");
    assert_eq!(secret_data(&sc, "chan-token").await["access_token"], token);
    assert!(
        fake.calls("/node").iter().any(|c| c
            .params
            .get("fields")
            .is_some_and(|f| f.contains("access_token"))),
        "the Page was asked"
    );

    // A manager of the Page, also with "all Pages": confirmed by the Page, written.
    let link = sc.status("chan").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login_for_all_pages(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    sc.wait_event("chan", "Normal", "Reauthorized").await;
    assert_ne!(secret_data(&sc, "chan-token").await["access_token"], token);
    assert_nothing_leaked(&mut sc, &fake).await;
}

async fn follow_dialog(link: &str) -> String {
    let resp = browser().get(link).send().await.expect("dialog answers");
    assert_eq!(resp.status().as_u16(), 302, "the dialog redirects back");
    resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_wrong_app_secret_is_the_providers_problem() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-appsecret").await;
    sc.secret(
        "facebook-client",
        &[("client_secret", "not-the-app-secret")],
    )
    .await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let s = sc.wait_ready_reason("chan", "ProviderNotReady").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid).0,
        "Unknown",
        "nothing is known about the token"
    );
    assert_eq!(s.reauth_url, None, "a new login would not help");
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("app secret") || m.contains("clientId"), "{m}");
    assert!(
        !m.contains("not-the-app-secret"),
        "the secret is not echoed"
    );

    // The administrator fixes the secret; the next check is Valid.
    let secret = fake.app_secret();
    sc.secret("facebook-client", &[("client_secret", &secret)])
        .await;
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.tokens.push("not-the-app-secret".into());
    assert_nothing_leaked(&mut sc, &fake).await;
}

// ---------------------------------------------------------------------------------------------
// Google.
// ---------------------------------------------------------------------------------------------

const GMAIL_SCOPES: [&str; 3] = ["openid", USERINFO_EMAIL, GMAIL_READ];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_mailbox_token_valid_then_revoked() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-revoked").await;
    let (access, _refresh) = fake.google_tokens(&GMAIL_SCOPES);
    google_connection(&sc, "mail", &[("access_token", &access)]).await;

    // Google access tokens live an hour; without a refresh token a person must re-authorize
    // before then: Ready, but Expiring.
    let s = sc.wait_ready_reason("mail", "Expiring").await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "True");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "False");
    let account = s.account.clone().expect("account");
    assert_eq!(
        account.id.as_deref(),
        Some(MAILBOX),
        "the mailbox is the account"
    );
    assert_eq!(account.name.as_deref(), Some(MAILBOX));
    assert_eq!(s.granted_scopes, GMAIL_SCOPES);
    let exp = fake.world().google[&access].exp;
    assert_eq!(s.expires_at.as_ref().map(|t| t.0.as_second()), Some(exp));
    assert_eq!(s.data_access_expires_at, None);
    assert!(fake.sent("/tokeninfo", "access_token", &access));
    sc.wait_event("mail", "Normal", "Expiring").await;

    // The person removes the app at myaccount.google.com; no refresh token is stored.
    fake.set_google(&access, GoogleAnswer::Revoked);
    sc.request_check("mail").await;
    let s = sc.wait_ready_reason("mail", "Revoked").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "Revoked".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "Revoked".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("invalid_token"), "{m}");
    sc.wait_event("mail", "Warning", "Revoked").await;

    // The link: Google's preset (offline access, consent screen, PKCE, default scopes first).
    let link = s.reauth_url.expect("link");
    assert!(
        link.starts_with(&fake.url("/google/o/oauth2/v2/auth?")),
        "{link}"
    );
    let q = query(&link);
    assert_eq!(q["client_id"], GOOGLE_CLIENT);
    assert_eq!(q["scope"], format!("openid email {GMAIL_READ}"));
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("code_challenge") && q.contains_key("state"));
    assert!(fake.calls("/token").is_empty(), "nothing to refresh with");
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_missing_gmail_scope_is_scopes_missing() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-scopes").await;
    // Granular consent: the person unticked "read your email" and kept "send".
    let (access, _refresh) = fake.google_tokens(&["openid", USERINFO_EMAIL, GMAIL_SEND]);
    google_connection(&sc, "mail", &[("access_token", &access)]).await;
    let s = sc.wait_ready_reason("mail", "ScopesMissing").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("False".into(), "ScopesMissing".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(s.missing_scopes, [GMAIL_READ]);
    assert!(message(&s, ConditionType::Ready).contains(GMAIL_READ));
    assert!(s.reauth_url.is_some());
    sc.wait_event("mail", "Warning", "ScopesMissing").await;

    // Consent given in full.
    fake.edit_google(&access, |t| t.scopes.push(GMAIL_READ.into()));
    sc.request_check("mail").await;
    let s = sc.wait_ready_reason("mail", "Expiring").await;
    assert!(s.missing_scopes.is_empty());
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into())
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_expired_access_token_is_refreshed() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-refresh").await;

    // Expiry recorded in the Secret and passed: refreshed before any check.
    let (old, refresh) = fake.google_tokens(&GMAIL_SCOPES);
    let past = now() - 60;
    fake.edit_google(&old, |t| t.exp = past);
    google_connection(
        &sc,
        "mail",
        &[
            ("access_token", &old),
            ("refresh_token", &refresh),
            ("expires_at", &past.to_string()),
            ("other", "x"),
        ],
    )
    .await;
    let s = sc.wait_ready_reason("mail", "Valid").await;
    assert!(s.last_refresh_time.is_some(), "refreshed");
    let data = secret_data(&sc, "mail-token").await;
    let new = data["access_token"].clone();
    assert!(new != old, "new access token written");
    assert!(new.starts_with("ya29."));
    assert!(
        data["refresh_token"] == refresh,
        "Google keeps the refresh token"
    );
    assert_eq!(data["other"], "x", "other keys untouched");
    let written: jiff::Timestamp = data["expires_at"].parse().expect("RFC 3339 expiry");
    assert!(written.as_second() > now() + 3000, "about an hour ahead");
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(fake.world().google[&new].exp)
    );
    let refreshes = fake.calls("/token");
    assert_eq!(refreshes.len(), 1);
    let p = &refreshes[0].params;
    assert_eq!(p["grant_type"], "refresh_token");
    assert_eq!(p["client_id"], GOOGLE_CLIENT);
    assert!(
        p["refresh_token"] == refresh && p["client_secret"] == fake.google_secret(),
        "refresh token and client secret sent in the form"
    );
    assert!(
        !fake.sent("/tokeninfo", "access_token", &old),
        "the known-expired token is not even checked"
    );
    assert!(fake.sent("/tokeninfo", "access_token", &new));

    // No recorded expiry: tokeninfo rejects the token, one refresh before telling anyone.
    let (old2, refresh2) = fake.google_tokens(&GMAIL_SCOPES);
    fake.edit_google(&old2, |t| t.exp = now() - 60);
    google_connection(
        &sc,
        "other",
        &[("access_token", &old2), ("refresh_token", &refresh2)],
    )
    .await;
    let s = sc.wait_ready_reason("other", "Valid").await;
    assert!(s.last_refresh_time.is_some());
    assert!(fake.sent("/tokeninfo", "access_token", &old2));
    assert!(secret_data(&sc, "other-token").await["access_token"] != old2);
    assert_eq!(
        warnings(&sc, "other").await,
        Vec::<String>::new(),
        "nobody was told about a token relink renewed itself"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_revoked_refresh_token_asks_for_login() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-deadgrant").await;
    let (access, refresh) = fake.google_tokens(&GMAIL_SCOPES);
    fake.set_google(&access, GoogleAnswer::Revoked);
    fake.revoke_refresh(&refresh);
    google_connection(
        &sc,
        "mail",
        &[("access_token", &access), ("refresh_token", &refresh)],
    )
    .await;
    let s = sc.wait_ready_reason("mail", "RefreshFailed").await;
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "RefreshFailed".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("invalid_grant"), "{m}");
    let link = s.reauth_url.expect("a link to log in again");
    assert_eq!(query(&link)["prompt"], "consent");
    assert_eq!(fake.calls("/token").len(), 1, "one refresh attempt");
    sc.wait_event("mail", "Warning", "RefreshFailed").await;
    assert!(
        secret_data(&sc, "mail-token").await["refresh_token"] == refresh,
        "nothing deleted"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

// ---------------------------------------------------------------------------------------------
// Both.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_or_garbage_never_turns_a_channel_invalid() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::start("fbg-outage").await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    google_provider(&sc, &fake).await;
    let fb = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    let (g, _refresh) = fake.google_tokens(&GMAIL_SCOPES);
    facebook_connection(&sc, "page", &[("access_token", &fb)]).await;
    google_connection(&sc, "mail", &[("access_token", &g)]).await;
    let page = sc.wait_ready_reason("page", "Valid").await;
    // An hour-long Google access token with no refresh token works but needs a person soon.
    let mail = sc.wait_ready_reason("mail", "Expiring").await;

    let modes = [
        (
            MetaAnswer::Unavailable,
            GoogleAnswer::Unavailable,
            "HTTP 503",
            "HTTP 503",
        ),
        (
            MetaAnswer::Garbage,
            GoogleAnswer::Garbage,
            "unreadable body",
            "unreadable body",
        ),
    ];
    for (meta, google, fb_says, g_says) in modes {
        fake.set_meta(&fb, meta.clone());
        fake.set_google(&g, google);
        sc.request_check("page").await;
        sc.request_check("mail").await;
        let s = wait_unavailable(&sc, "page", fb_says).await;
        assert_verdict_kept(&page, &s, &format!("facebook {meta:?}"));
        let s = wait_unavailable(&sc, "mail", g_says).await;
        assert_verdict_kept(&mail, &s, &format!("google {google:?}"));
    }
    fake.set_meta(&fb, MetaAnswer::Valid);
    fake.set_google(&g, GoogleAnswer::Valid);
    for name in ["page", "mail"] {
        sc.request_check(name).await;
        sc.wait_condition(name, ConditionType::Reconciling, "Valid")
            .await;
        let w = warnings(&sc, name).await;
        assert!(
            w.iter().all(|r| r == "ProviderUnavailable"),
            "{name}: only provider trouble reported: {w:?}"
        );
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}
