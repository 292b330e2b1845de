//! Every other built-in preset (Instagram, Microsoft, LinkedIn, X, Slack, TikTok) through the
//! controller, the way `providers.rs` does Facebook and Google: a local server answers as the
//! provider documents (the same bodies the unit tests use, from the provider's docs), the
//! operator checks a token, and the verdicts are read back through the API: valid with the
//! account filled in, the provider's own rate limit (verdict kept), its revoked answer (a
//! re-authorization link), then the code exchange of the preset through the operator's callback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use relink::api::{
    ChannelProviderSpec, ConditionType, ProviderEndpoints, ProviderType,
    REAUTHORIZE_REQUESTED_ANNOTATION, REFRESH_REQUESTED_ANNOTATION,
};
use serde_json::{Value, json};

use crate::fixtures::{Scenario, TestConnection, open, provider_spec};
use crate::support;

/// One canned answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body,
    }
}

impl Answer {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    form: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct FakeState {
    routes: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A provider that answers each path with what the test set last.
struct Fake {
    base: String,
    state: FakeState,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start() -> Fake {
        let state = FakeState::default();
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { base, state, task }
    }

    fn set(&self, path: &str, a: Answer) {
        self.state.routes.lock().unwrap().insert(path.to_owned(), a);
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(State(s): State<FakeState>, uri: Uri, _headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    s.seen.lock().unwrap().push(Seen {
        path: uri.path().to_owned(),
        form,
    });
    let Some(a) = s.routes.lock().unwrap().get(uri.path()).cloned() else {
        return (StatusCode::NOT_FOUND, "no such route").into_response();
    };
    let mut resp = (
        StatusCode::from_u16(a.status).expect("status"),
        axum::Json(a.body),
    )
        .into_response();
    for (name, value) in a.headers {
        resp.headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    resp
}

/// What one preset looks like from the outside.
struct Case {
    prefix: &'static str,
    type_: ProviderType,
    /// Endpoints of the preset moved to the fake (base URL given).
    endpoints: fn(&str) -> ProviderEndpoints,
    /// Where the check goes, and its documented answers.
    check_path: &'static str,
    valid: Answer,
    limited: Answer,
    revoked: Answer,
    revoked_reason: &'static str,
    /// `spec.account.id`, and the name the ACCOUNT column shows (None: the preset's check does
    /// not name the account).
    account: &'static str,
    account_name: Option<&'static str>,
    required: &'static [&'static str],
    /// `ScopesGranted` after a valid check: `True`, or `Unknown` where the check cannot tell.
    scopes_granted: &'static str,
    /// The code exchange: answers to set (path, answer) and the new access token they carry.
    exchange: Vec<(&'static str, Answer)>,
    new_token: &'static str,
    token_path: &'static str,
    client_id_param: &'static str,
}

/// Provider `app` of `type_` with client `app-id` and its secret.
async fn apply_app(
    sc: &Scenario,
    type_: ProviderType,
    endpoints: ProviderEndpoints,
    refresh_token_lifetime: Option<&str>,
) {
    let spec = ChannelProviderSpec {
        refresh_token_lifetime: refresh_token_lifetime.map(str::to_owned),
        ..provider_spec("app", type_, "app-id", endpoints)
    };
    sc.apply_provider("app", spec, "s3cret-client").await;
}

/// Sets annotation `key` of connection `name` to a fresh value (a request to the operator).
async fn annotate(sc: &Scenario, name: &str, key: &str) {
    let value = jiff::Timestamp::now().as_millisecond().to_string();
    let patch = json!({"metadata": {"annotations": {key: value}}});
    sc.connections()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("annotation set");
}

async fn run(case: Case) {
    let mut sc = Scenario::builder(case.prefix).callback().start().await;
    let public = sc.public_url.clone().expect("callback served");
    let fake = Fake::start().await;
    fake.set(case.check_path, case.valid.clone());
    // The provider's other documented calls (userinfo, the long-lived exchange) answer all
    // along; the code exchange itself only once the person logs in.
    for (path, a) in case.exchange.iter().filter(|(p, _)| *p != case.token_path) {
        fake.set(path, a.clone());
    }
    let mut endpoints = (case.endpoints)(&fake.base);
    endpoints.authorization_url = Some(format!("{}/authorize", fake.base));
    apply_app(&sc, case.type_, endpoints, None).await;
    let old_token = format!("{}-token-secret-1", case.prefix);
    sc.tokens.push(old_token.clone());
    sc.tokens.push(case.new_token.to_owned());
    sc.secret("tok", &[("access_token", &old_token)]).await;
    let chan = TestConnection::on(case.account, case.required);
    sc.apply_connection("chan", chan).await;

    // Valid: the account is the channel's, named where the preset's check names it.
    let s = sc.wait_ready_reason("chan", "Valid").await;
    let account = s.account.clone().unwrap_or_default();
    if let Some(name) = case.account_name {
        assert_eq!(account.name.as_deref(), Some(name), "{}", case.prefix);
    }
    let scopes = s
        .condition(ConditionType::ScopesGranted)
        .expect("ScopesGranted");
    assert_eq!(
        scopes.status, case.scopes_granted,
        "{}: {}",
        case.prefix, scopes.message
    );

    // The provider's own rate limit: no verdict, the last one kept.
    fake.set(case.check_path, case.limited.clone());
    sc.request_check("chan").await;
    let s = sc
        .wait_condition("chan", ConditionType::Reconciling, "ProviderUnavailable")
        .await;
    let ready = s.condition(ConditionType::Ready).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Valid")
    );

    // Revoked at the provider: a person must log in, through a link to the preset's consent
    // page with the preset's client id parameter.
    fake.set(case.check_path, case.revoked.clone());
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", case.revoked_reason).await;
    let stalled = s.condition(ConditionType::Stalled).expect("Stalled");
    assert_eq!(stalled.status, "True");
    let link = s.reauth_url.clone().expect("a re-authorization link");
    let link = url::Url::parse(&link).expect("link is a URL");
    assert!(
        link.as_str()
            .starts_with(&format!("{}/authorize", fake.base))
    );
    let params: HashMap<String, String> = link.query_pairs().into_owned().collect();
    assert_eq!(
        params.get(case.client_id_param).map(String::as_str),
        Some("app-id")
    );
    let state = params.get("state").expect("state").clone();

    // The person logs in: the provider redirects to the operator's callback with a code.
    for (path, a) in &case.exchange {
        fake.set(path, a.clone());
    }
    fake.set(case.check_path, case.valid.clone());
    let callback = format!(
        "{public}/oauth/callback?code=code-{}&state={}",
        case.prefix,
        url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{}: {page}", case.prefix);
    let exchanged = fake.seen(case.token_path);
    assert!(
        exchanged
            .iter()
            .any(|s| s.form.get("code").map(String::as_str)
                == Some(&format!("code-{}", case.prefix))),
        "{}: the code went to the token endpoint: {exchanged:?}",
        case.prefix
    );
    sc.wait_ready_reason("chan", "Valid").await;
    // What the login granted (the token response's scopes) is kept and judged, also for
    // presets whose check cannot tell.
    let s = support::eventually(
        "scopes judged after the login",
        std::time::Duration::from_secs(20),
        || async {
            let s = sc.status("chan").await;
            let c = s.condition(ConditionType::ScopesGranted)?;
            (c.status == "True").then_some(s)
        },
    )
    .await;
    for scope in case.required {
        assert!(
            s.granted_scopes.iter().any(|g| g == scope),
            "{}: {:?}",
            case.prefix,
            s.granted_scopes
        );
    }
    let secret = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get("tok")
        .await
        .expect("token Secret");
    let written = secret
        .data
        .unwrap_or_default()
        .get("access_token")
        .map(|v| String::from_utf8_lossy(&v.0).into_owned());
    assert_eq!(written.as_deref(), Some(case.new_token), "{}", case.prefix);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_account_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    run(Case {
        prefix: "preset-x",
        type_: ProviderType::X,
        endpoints: |b| ProviderEndpoints {
            userinfo_url: Some(format!("{b}/2/users/me")),
            token_url: Some(format!("{b}/2/oauth2/token")),
            ..Default::default()
        },
        check_path: "/2/users/me",
        valid: answer(
            200,
            json!({"data": {"id": "2244994945", "name": "X Dev", "username": "XDevelopers"}}),
        ),
        limited: answer(
            429,
            json!({"title": "Too Many Requests", "detail": "Too Many Requests", "type": "about:blank", "status": 429}),
        )
        .header(
            "x-rate-limit-reset",
            (jiff::Timestamp::now().as_second() + 60).to_string(),
        ),
        revoked: answer(
            401,
            json!({"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}),
        ),
        revoked_reason: "Revoked",
        account: "2244994945",
        account_name: Some("XDevelopers"),
        required: &["tweet.write"],
        scopes_granted: "Unknown",
        exchange: vec![(
            "/2/oauth2/token",
            answer(
                200,
                json!({"token_type": "bearer", "expires_in": 7200, "access_token": "x-new-access-9f2",
                       "scope": "tweet.read users.read tweet.write offline.access", "refresh_token": "x-new-refresh-9f2"}),
            ),
        )],
        new_token: "x-new-access-9f2",
        token_path: "/2/oauth2/token",
        client_id_param: "client_id",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_mailbox_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    run(Case {
        prefix: "preset-ms",
        type_: ProviderType::Microsoft,
        endpoints: |b| ProviderEndpoints {
            userinfo_url: Some(format!("{b}/v1.0/me")),
            token_url: Some(format!("{b}/common/oauth2/v2.0/token")),
            ..Default::default()
        },
        check_path: "/v1.0/me",
        valid: answer(
            200,
            json!({"id": "87d349ed", "displayName": "Megan Bowen",
                   "mail": "MeganB@contoso.com", "userPrincipalName": "MeganB@contoso.com"}),
        ),
        limited: answer(
            429,
            json!({"error": {"code": "TooManyRequests", "message": "Too many requests"}}),
        )
        .header("retry-after", "30"),
        revoked: answer(
            401,
            json!({"error": {"code": "InvalidAuthenticationToken",
                   "message": "Lifetime validation failed, the token is expired."}}),
        ),
        revoked_reason: "Expired",
        account: "MeganB@contoso.com",
        account_name: Some("MeganB@contoso.com"),
        required: &["Mail.Send"],
        scopes_granted: "Unknown",
        exchange: vec![(
            "/common/oauth2/v2.0/token",
            answer(
                200,
                json!({"token_type": "Bearer", "scope": "User.Read Mail.Send", "expires_in": 3599,
                       "access_token": "ms-new-access-41c", "refresh_token": "ms-new-refresh-41c"}),
            ),
        )],
        new_token: "ms-new-access-41c",
        token_path: "/common/oauth2/v2.0/token",
        client_id_param: "client_id",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkedin_member_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    run(Case {
        prefix: "preset-li",
        type_: ProviderType::Linkedin,
        endpoints: |b| ProviderEndpoints {
            introspection_url: Some(format!("{b}/oauth/v2/introspectToken")),
            token_url: Some(format!("{b}/oauth/v2/accessToken")),
            // Introspection names no member: the callback asks {apiBaseUrl}/v2/userinfo.
            api_base_url: Some(b.to_owned()),
            ..Default::default()
        },
        check_path: "/oauth/v2/introspectToken",
        valid: answer(
            200,
            json!({"active": true, "client_id": "app-id", "authorized_at": 1_493_055_596,
                   "created_at": 1_493_055_596, "status": "active", "expires_at": 4_102_444_800_i64,
                   "scope": "r_liteprofile,w_member_social", "auth_type": "3L"}),
        ),
        limited: answer(429, json!({"status": 429, "message": "Too many requests"})),
        revoked: answer(200, json!({"active": false, "status": "revoked"})),
        revoked_reason: "Revoked",
        account: "urn:li:person:782bbtaQ",
        // Introspection names no member: the check asks /v2/userinfo once.
        account_name: Some("John Doe"),
        required: &["w_member_social"],
        scopes_granted: "True",
        exchange: vec![
            (
                "/oauth/v2/accessToken",
                answer(
                    200,
                    json!({"access_token": "li-new-access-7ad", "expires_in": 5_184_000,
                           "scope": "r_liteprofile,w_member_social"}),
                ),
            ),
            (
                "/v2/userinfo",
                answer(
                    200,
                    json!({"sub": "782bbtaQ", "name": "John Doe", "given_name": "John",
                           "family_name": "Doe", "email": "doe@email.com",
                           "email_verified": true, "locale": "en-US"}),
                ),
            ),
        ],
        new_token: "li-new-access-7ad",
        token_path: "/oauth/v2/accessToken",
        client_id_param: "client_id",
    })
    .await;
}

/// A LinkedIn organization page: named by the Organization Lookup API, and a login is written
/// only for one of the organization's administrators (Organization Access Control API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkedin_organization_page_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    run(Case {
        prefix: "preset-liorg",
        type_: ProviderType::Linkedin,
        endpoints: |b| ProviderEndpoints {
            introspection_url: Some(format!("{b}/oauth/v2/introspectToken")),
            token_url: Some(format!("{b}/oauth/v2/accessToken")),
            api_base_url: Some(b.to_owned()),
            ..Default::default()
        },
        check_path: "/oauth/v2/introspectToken",
        valid: answer(
            200,
            json!({"active": true, "client_id": "app-id", "status": "active",
                   "expires_at": 4_102_444_800_i64, "auth_type": "3L",
                   "scope": "r_organization_admin,w_organization_social"}),
        ),
        limited: answer(429, json!({"status": 429, "message": "Too many requests"})),
        revoked: answer(200, json!({"active": false, "status": "revoked"})),
        revoked_reason: "Revoked",
        account: "urn:li:organization:2414183",
        account_name: Some("Acme Coffee"),
        required: &["w_organization_social"],
        scopes_granted: "True",
        exchange: vec![
            (
                "/oauth/v2/accessToken",
                answer(
                    200,
                    json!({"access_token": "li-org-access-3c1", "expires_in": 5_184_000,
                           "scope": "r_organization_admin,w_organization_social"}),
                ),
            ),
            (
                "/rest/organizationAcls",
                answer(
                    200,
                    json!({"paging": {"count": 100, "start": 0}, "elements": [
                        {"role": "ADMINISTRATOR", "organization": "urn:li:organization:2414183",
                         "state": "APPROVED", "roleAssignee": "urn:li:person:782bbtaQ"}]}),
                ),
            ),
            (
                "/rest/organizations/2414183",
                answer(
                    200,
                    json!({"id": 2414183, "localizedName": "Acme Coffee",
                           "vanityName": "acme-coffee", "versionTag": "11"}),
                ),
            ),
        ],
        new_token: "li-org-access-3c1",
        token_path: "/oauth/v2/accessToken",
        client_id_param: "client_id",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_workspace_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    run(Case {
        prefix: "preset-slack",
        type_: ProviderType::Slack,
        endpoints: |b| ProviderEndpoints {
            api_base_url: Some(format!("{b}/api")),
            token_url: Some(format!("{b}/api/oauth.v2.access")),
            ..Default::default()
        },
        check_path: "/api/auth.test",
        valid: answer(
            200,
            json!({"ok": true, "url": "https://subarachnoid.slack.com/",
                   "team": "Subarachnoid Workspace", "user": "grace", "team_id": "T12345678",
                   "user_id": "W12345678", "bot_id": "B0123", "is_enterprise_install": false}),
        )
        .header("x-oauth-scopes", "chat:write,channels:read"),
        limited: answer(429, json!({"ok": false, "error": "ratelimited"})).header("retry-after", "30"),
        revoked: answer(200, json!({"ok": false, "error": "token_revoked"})),
        revoked_reason: "Revoked",
        account: "T12345678",
        account_name: Some("Subarachnoid Workspace"),
        required: &["chat:write"],
        scopes_granted: "True",
        exchange: vec![(
            "/api/oauth.v2.access",
            answer(
                200,
                json!({"ok": true, "access_token": "xoxb-new-access-3e1", "token_type": "bot",
                       "scope": "chat:write,channels:read", "bot_user_id": "U0KRQLJ9H", "app_id": "A0KRD7HC3",
                       "team": {"name": "Subarachnoid Workspace", "id": "T12345678"},
                       "authed_user": {"id": "U1234"}}),
            ),
        )],
        new_token: "xoxb-new-access-3e1",
        token_path: "/api/oauth.v2.access",
        client_id_param: "client_id",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiktok_account_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    let error = |status, code: &str| {
        answer(
            status,
            json!({"data": {}, "error": {"code": code, "message": "m", "log_id": "2023"}}),
        )
    };
    run(Case {
        prefix: "preset-tiktok",
        type_: ProviderType::Tiktok,
        endpoints: |b| ProviderEndpoints {
            userinfo_url: Some(format!("{b}/v2/user/info/")),
            token_url: Some(format!("{b}/v2/oauth/token/")),
            ..Default::default()
        },
        check_path: "/v2/user/info/",
        valid: answer(
            200,
            json!({"data": {"user": {"open_id": "723f24d7", "union_id": "c9c60f44",
                   "display_name": "Tik Toker"}}, "error": {"code": "ok", "message": "", "log_id": "2022"}}),
        ),
        limited: error(429, "rate_limit_exceeded").header("retry-after", "30"),
        revoked: error(401, "access_token_invalid"),
        revoked_reason: "Revoked",
        account: "723f24d7",
        account_name: Some("Tik Toker"),
        required: &["video.publish"],
        scopes_granted: "Unknown",
        exchange: vec![(
            "/v2/oauth/token/",
            answer(
                200,
                json!({"access_token": "act.new-access-5b0", "expires_in": 86_400, "open_id": "723f24d7",
                       "refresh_expires_in": 31_536_000, "refresh_token": "rft.new-refresh-5b0",
                       "scope": "user.info.basic,video.publish", "token_type": "Bearer"}),
            ),
        )],
        new_token: "act.new-access-5b0",
        token_path: "/v2/oauth/token/",
        client_id_param: "client_key",
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_professional_account_through_the_controller_and_the_callback() {
    if support::skip() {
        return;
    }
    let graph_error = |status, code: i64, subcode: Option<i64>| {
        answer(
            status,
            json!({"error": {"message": "Error validating access token", "type": "OAuthException",
                             "code": code, "error_subcode": subcode, "fbtrace_id": "x"}}),
        )
    };
    run(Case {
        prefix: "preset-ig",
        type_: ProviderType::Instagram,
        endpoints: |b| ProviderEndpoints {
            api_base_url: Some(format!("{b}/v25.0")),
            token_url: Some(format!("{b}/oauth/access_token")),
            ..Default::default()
        },
        check_path: "/v25.0/me",
        valid: answer(
            200,
            json!({"user_id": "17841400000", "username": "shop", "id": "9001"}),
        ),
        limited: graph_error(400, 4, None),
        revoked: graph_error(400, 190, Some(460)),
        revoked_reason: "Revoked",
        account: "17841400000",
        account_name: Some("shop"),
        required: &["instagram_business_content_publish"],
        scopes_granted: "Unknown",
        exchange: vec![
            (
                "/oauth/access_token",
                answer(
                    200,
                    json!({"data": [{"access_token": "IGshort-2c8", "user_id": "17841400000",
                           "permissions": "instagram_business_basic,instagram_business_content_publish"}]}),
                ),
            ),
            (
                "/access_token",
                answer(
                    200,
                    json!({"access_token": "IGlong-new-access-2c8", "token_type": "bearer", "expires_in": 5_184_000}),
                ),
            ),
        ],
        new_token: "IGlong-new-access-2c8",
        token_path: "/oauth/access_token",
        client_id_param: "client_id",
    })
    .await;
}

/// A refresh answer's scopes are judged like a login's for a preset whose check cannot tell
/// (X): one granting fewer scopes than required turns the connection `ScopesMissing`, one
/// granting them keeps it healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_answer_scopes_decide_missing_scopes() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("preset-rscopes").start().await;
    let fake = Fake::start().await;
    fake.set(
        "/2/users/me",
        answer(
            200,
            json!({"data": {"id": "2244994945", "name": "X Dev", "username": "XDevelopers"}}),
        ),
    );
    let refreshed = |scope: &str, n: u32| {
        answer(
            200,
            json!({"token_type": "bearer", "expires_in": 7200,
                   "access_token": format!("x-access-r{n}"), "refresh_token": format!("x-refresh-r{n}"),
                   "scope": scope}),
        )
    };
    let endpoints = ProviderEndpoints {
        userinfo_url: Some(format!("{}/2/users/me", fake.base)),
        token_url: Some(format!("{}/2/oauth2/token", fake.base)),
        ..Default::default()
    };
    apply_app(&sc, ProviderType::X, endpoints, None).await;
    sc.tokens.extend(
        [
            "x-access-0",
            "x-refresh-0",
            "x-access-r1",
            "x-refresh-r1",
            "x-access-r2",
            "x-refresh-r2",
        ]
        .map(String::from),
    );
    sc.secret(
        "tok",
        &[
            ("access_token", "x-access-0"),
            ("refresh_token", "x-refresh-0"),
        ],
    )
    .await;
    let chan = TestConnection::on("2244994945", &["tweet.write"]);
    sc.apply_connection("chan", chan).await;
    sc.wait_ready_reason("chan", "Valid").await;

    // The refresh answer grants no tweet.write: the connection asks for a login with it.
    fake.set(
        "/2/oauth2/token",
        refreshed("tweet.read users.read offline.access", 1),
    );
    annotate(&sc, "chan", REFRESH_REQUESTED_ANNOTATION).await;
    let s = sc.wait_ready_reason("chan", "ScopesMissing").await;
    assert_eq!(s.missing_scopes, ["tweet.write"]);
    assert!(s.reauth_url.is_some(), "a link to grant it");
    assert_eq!(fake.seen("/2/oauth2/token").len(), 1);

    // A refresh answer that grants it: healthy again.
    fake.set(
        "/2/oauth2/token",
        refreshed("tweet.read users.read tweet.write offline.access", 2),
    );
    annotate(&sc, "chan", REFRESH_REQUESTED_ANNOTATION).await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    let granted = s
        .condition(ConditionType::ScopesGranted)
        .expect("ScopesGranted");
    assert_eq!(granted.status, "True", "{}", granted.message);
    assert!(s.missing_scopes.is_empty());
    sc.assert_no_token_leaked().await;
}

/// A Google app in "Testing" status: its refresh tokens die after 7 days, which Google's token
/// response does not say. With `refreshTokenLifetime: 168h` on the provider, a login records
/// the end and the connection warns (`Expiring`, the date, a link) `refresh.before` ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_testing_app_refresh_token_warns_before_its_seventh_day() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("preset-gtest").callback().start().await;
    let public = sc.public_url.clone().expect("callback served");
    let fake = Fake::start().await;
    let scope = "openid https://www.googleapis.com/auth/gmail.send https://www.googleapis.com/auth/userinfo.email";
    fake.set(
        "/tokeninfo",
        answer(
            200,
            json!({"azp": "app-id", "aud": "app-id", "sub": "110248495921238986420",
                   "exp": (jiff::Timestamp::now().as_second() + 3599).to_string(),
                   "expires_in": "3599", "email": "ann@example.com", "email_verified": "true",
                   "access_type": "offline", "scope": scope}),
        ),
    );
    let endpoints = ProviderEndpoints {
        authorization_url: Some(format!("{}/authorize", fake.base)),
        introspection_url: Some(format!("{}/tokeninfo", fake.base)),
        token_url: Some(format!("{}/token", fake.base)),
        ..Default::default()
    };
    apply_app(&sc, ProviderType::Google, endpoints, Some("168h")).await;
    sc.tokens
        .extend(["ya29.old-access", "ya29.new-access", "1//0new-refresh"].map(String::from));
    sc.secret("tok", &[("access_token", "ya29.old-access")])
        .await;
    let mut spec = TestConnection::on(
        "ann@example.com",
        &["https://www.googleapis.com/auth/gmail.send"],
    )
    .spec();
    spec.refresh.before = "170h".into();
    sc.apply_connection("chan", spec).await;
    // No refresh token yet: the one-hour access token itself is what ends.
    let s = sc.wait_ready_reason("chan", "Expiring").await;
    assert_eq!(s.refresh_token_expires_at, None);

    // A person logs in through a requested link; Google answers without a refresh-token lifetime.
    annotate(&sc, "chan", REAUTHORIZE_REQUESTED_ANNOTATION).await;
    let link = support::eventually("a link", std::time::Duration::from_secs(30), || async {
        sc.status("chan").await.reauth_url
    })
    .await;
    let params: HashMap<String, String> = url::Url::parse(&link)
        .expect("link")
        .query_pairs()
        .into_owned()
        .collect();
    fake.set(
        "/token",
        answer(
            200,
            json!({"access_token": "ya29.new-access", "expires_in": 3599,
                   "refresh_token": "1//0new-refresh", "scope": scope, "token_type": "Bearer"}),
        ),
    );
    let callback = format!(
        "{public}/oauth/callback?code=4/0code&state={}",
        url::form_urlencoded::byte_serialize(params["state"].as_bytes()).collect::<String>()
    );
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");

    let s = support::eventually(
        "the refresh token's end",
        std::time::Duration::from_secs(30),
        || async {
            let s = sc.status("chan").await;
            let ready = s.condition(ConditionType::Ready)?;
            (ready.reason == "Expiring" && s.refresh_token_expires_at.is_some()).then_some(s)
        },
    )
    .await;
    let end = s
        .refresh_token_expires_at
        .as_ref()
        .expect("status.refreshTokenExpiresAt")
        .0;
    let hours = (end.as_second() - jiff::Timestamp::now().as_second() + 60) / 3600;
    assert_eq!(hours, 168, "7 days from the login");
    let ready = s.condition(ConditionType::Ready).expect("Ready");
    assert!(
        ready.message.contains("refresh token")
            && ready
                .message
                .contains(&end.strftime("%Y-%m-%dT%H:%M").to_string()),
        "{}",
        ready.message
    );
    assert!(s.reauth_url.is_some(), "the link is offered in time");
    let secret = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get("tok")
        .await
        .expect("token Secret");
    assert!(
        secret
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("relink.dev/refresh-token-expires-at")
    );
    sc.assert_no_token_leaked().await;
}
