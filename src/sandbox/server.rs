//! HTTP side: OAuth endpoints, failure injection and the control API.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::pages;
use super::store::{
    CODE_TTL_SECS, CodeRec, Form, Store, field, now_secs, parse_form, random_token, split_scopes,
};
use super::{Call, Grant, IssuedTokens, Mode, SandboxConfig};

pub(super) const HUGE_BODY_BYTES: usize = 20 * 1024 * 1024;

/// Standard base64, for HTTP Basic client credentials.
pub(super) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

pub(super) fn auth_param<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    let mut resp = json_response(status, body);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"sandbox\""),
        );
    }
    resp
}

pub(super) fn bearer_error(status: StatusCode, error: &'static str) -> Response {
    let challenge = format!("Bearer error=\"{error}\"");
    (
        status,
        [(header::WWW_AUTHENTICATE, challenge)],
        Json(json!({ "error": error })),
    )
        .into_response()
}

pub(super) struct Inner {
    pub(super) config: SandboxConfig,
    pub(super) store: Mutex<Store>,
    pub(super) stop: watch::Sender<bool>,
    /// True while refresh answers are held back.
    pub(super) hold: watch::Sender<bool>,
}

impl Inner {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("sandbox store mutex poisoned")
    }

    pub(super) fn record(&self, path: &str, account_id: Option<String>, status: u16) {
        self.record_grant(path, account_id, status, None);
    }

    pub(super) fn record_grant(
        &self,
        path: &str,
        account_id: Option<String>,
        status: u16,
        grant_type: Option<String>,
    ) {
        tracing::debug!(
            path,
            account_id = account_id.as_deref(),
            status,
            "sandbox call"
        );
        let at_unix_ms = jiff::Timestamp::now().as_millisecond();
        self.store().calls.push(Call {
            path: path.to_owned(),
            at_unix_ms,
            account_id,
            status,
            grant_type,
        });
    }

    /// Waits while refresh answers are held (or until shutdown).
    async fn wait_released(&self) {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return;
        }
        self.store().held += 1;
        let mut stop = self.stop.subscribe();
        tokio::select! {
            _ = hold.wait_for(|h| !*h) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        self.store().held -= 1;
    }

    /// Sleeps, but wakes early on shutdown so hanging requests release their connection.
    pub(super) async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let mut stop = self.stop.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    pub(super) fn client_ok(&self, headers: &HeaderMap, form: &Form) -> bool {
        let basic = auth_param(headers, "Basic")
            .and_then(b64_decode)
            .and_then(|b| String::from_utf8(b).ok());
        let (id, secret) = match &basic {
            Some(cred) => cred.split_once(':').unwrap_or((cred.as_str(), "")),
            None => (field(form, "client_id"), field(form, "client_secret")),
        };
        id == self.config.client_id && secret == self.config.client_secret
    }

    /// Applies the failure mode, otherwise runs `handler`; records the call either way.
    pub(super) async fn respond(
        &self,
        path: &str,
        account: Option<String>,
        handler: impl FnOnce() -> Response,
    ) -> Response {
        self.respond_grant(path, account, None, handler).await
    }

    pub(super) async fn respond_grant(
        &self,
        path: &str,
        account: Option<String>,
        grant_type: Option<String>,
        handler: impl FnOnce() -> Response,
    ) -> Response {
        let mode = {
            let store = self.store();
            match (&store.refresh_mode, grant_type.as_deref()) {
                (Some(m), Some("refresh_token")) => m.clone(),
                _ => store.mode.clone(),
            }
        };
        let resp = match mode {
            Mode::Normal => handler(),
            Mode::Status { code } => json_response(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                json!({ "error": "temporarily_unavailable" }),
            ),
            Mode::RetryAfter { seconds } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                Json(json!({ "error": "temporarily_unavailable" })),
            )
                .into_response(),
            Mode::Garbage => {
                ([(header::CONTENT_TYPE, "text/html")], "<html>oops</html>").into_response()
            }
            Mode::ErrorBody => json_response(
                StatusCode::OK,
                json!({ "error": "server_error", "error_description": "sandbox injected failure" }),
            ),
            Mode::Hang => {
                self.record_grant(path, account, 0, grant_type);
                self.sleep(Duration::from_secs(3600)).await;
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
            Mode::Huge => {
                let body = format!(
                    "{{\"error\":\"server_error\",\"padding\":\"{}\"}}",
                    "a".repeat(HUGE_BODY_BYTES)
                );
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        };
        self.record_grant(path, account, resp.status().as_u16(), grant_type);
        resp
    }

    pub(super) fn issue(&self, g: Grant) -> IssuedTokens {
        let mut store = self.store();
        let grant = store.add_grant(g.account_id, g.account_name, g.scopes);
        let ttl = g
            .expires_in_secs
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX / 2));
        store.mint(grant, ttl, g.refreshable)
    }

    pub(super) fn revoke(&self, access_token: &str) -> bool {
        self.store()
            .grant_mut(access_token)
            .map(|g| g.revoked = true)
            .is_some()
    }

    pub(super) fn set_scopes(&self, access_token: &str, scopes: Vec<String>) -> bool {
        self.store()
            .grant_mut(access_token)
            .map(|g| g.scopes = scopes)
            .is_some()
    }

    pub(super) fn set_expires_at(&self, access_token: &str, expires_at: Option<i64>) -> bool {
        self.store()
            .access
            .get_mut(access_token)
            .map(|a| a.expires_at = expires_at)
            .is_some()
    }

    /// Checks client and redirect URI; failures are shown to the user, never redirected.
    pub(super) fn check_authorize(&self, params: &Form) -> Result<url::Url, String> {
        if field(params, "client_id") != self.config.client_id {
            return Err("Unknown application (client_id).".to_owned());
        }
        let uri = url::Url::parse(field(params, "redirect_uri"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or("redirect_uri must be an absolute http(s) URL.")?;
        match field(params, "code_challenge_method") {
            "" | "plain" | "S256" => Ok(uri),
            _ => Err("Unsupported code_challenge_method.".to_owned()),
        }
    }
}

pub(super) async fn authorize_page(State(s): State<Arc<Inner>>, Query(q): Query<Form>) -> Response {
    s.sleep(s.config.latency).await;
    let resp = match s.check_authorize(&q) {
        Err(msg) => (StatusCode::BAD_REQUEST, Html(pages::error(&msg))).into_response(),
        Ok(_) if field(&q, "response_type") != "code" => (
            StatusCode::BAD_REQUEST,
            Html(pages::error("Only response_type=code is supported.")),
        )
            .into_response(),
        Ok(_) => Html(pages::consent(&q, &split_scopes(field(&q, "scope")))).into_response(),
    };
    s.record("/oauth/authorize", None, resp.status().as_u16());
    resp
}

pub(super) async fn authorize_decide(State(s): State<Arc<Inner>>, body: Bytes) -> Response {
    s.sleep(s.config.latency).await;
    let form = parse_form(&body);
    let account_id = field(&form, "account_id").trim().to_owned();
    let allowed = field(&form, "decision") == "allow";
    let resp = match s.check_authorize(&form) {
        Err(msg) => (StatusCode::BAD_REQUEST, Html(pages::error(&msg))).into_response(),
        Ok(_) if allowed && account_id.is_empty() => (
            StatusCode::BAD_REQUEST,
            Html(pages::error("A page id is required.")),
        )
            .into_response(),
        Ok(mut target) => {
            {
                let mut pairs = target.query_pairs_mut();
                if allowed {
                    let code = random_token("sbx-code-");
                    let challenge = match field(&form, "code_challenge") {
                        "" => None,
                        c => {
                            let method = match field(&form, "code_challenge_method") {
                                "" => "plain",
                                m => m,
                            };
                            Some((c.to_owned(), method.to_owned()))
                        }
                    };
                    let name = match field(&form, "account_name").trim() {
                        "" => account_id.clone(),
                        n => n.to_owned(),
                    };
                    let rec = CodeRec {
                        redirect_uri: field(&form, "redirect_uri").to_owned(),
                        account_id: account_id.clone(),
                        account_name: name,
                        scopes: split_scopes(field(&form, "scope")),
                        challenge,
                        expires_at: now_secs() + CODE_TTL_SECS,
                        used: false,
                    };
                    s.store().codes.insert(code.clone(), rec);
                    pairs.append_pair("code", &code);
                } else {
                    pairs.append_pair("error", "access_denied");
                }
                if let Some(state) = form.get("state").filter(|v| !v.is_empty()) {
                    pairs.append_pair("state", state);
                }
            }
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, target.to_string())],
            )
                .into_response()
        }
    };
    let account = (allowed && !account_id.is_empty()).then_some(account_id);
    s.record("/oauth/authorize", account, resp.status().as_u16());
    resp
}

pub(super) async fn token(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.sleep(s.config.latency).await;
    let form = parse_form(&body);
    let account = ["code", "refresh_token"]
        .iter()
        .find_map(|k| form.get(*k))
        .and_then(|t| s.store().account_of(t));
    let grant_type = form.get("grant_type").cloned();
    let refreshing = grant_type.as_deref() == Some("refresh_token");
    let mut resp = s
        .respond_grant("/oauth/token", account, grant_type, || {
            if !s.client_ok(&headers, &form) {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication failed",
                );
            }
            let mut store = s.store();
            let result = match field(&form, "grant_type") {
                "authorization_code" => store.exchange_code(&form),
                "refresh_token" => {
                    store.refresh_grant(&form, s.config.reuse_detection, s.config.reuse_grace)
                }
                _ => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "unsupported_grant_type",
                        "use authorization_code or refresh_token",
                    );
                }
            };
            match result {
                Err(msg) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", msg),
                Ok((tokens, grant)) => {
                    let mut body = json!({
                        "access_token": tokens.access_token,
                        "token_type": "Bearer",
                        "scope": store.grants[grant].scopes.join(" "),
                    });
                    if let Some(exp) = tokens.expires_at {
                        body["expires_in"] = json!((exp - now_secs()).max(0));
                    }
                    if let Some(rt) = tokens.refresh_token {
                        body["refresh_token"] = json!(rt);
                    }
                    json_response(StatusCode::OK, body)
                }
            }
        })
        .await;
    if refreshing && resp.status().is_success() {
        s.wait_released().await;
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

pub(super) async fn introspect(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.sleep(s.config.latency).await;
    let form = parse_form(&body);
    let token = field(&form, "token");
    let account = s.store().account_of(token);
    s.respond("/oauth/introspect", account, || {
        if !s.client_ok(&headers, &form) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
        let store = s.store();
        let Some((grant, exp)) = store.active_access(token) else {
            return json_response(StatusCode::OK, json!({ "active": false }));
        };
        let mut body = json!({
            "active": true,
            "scope": grant.scopes.join(" "),
            "sub": grant.account_id,
            "username": grant.account_name,
            "client_id": s.config.client_id,
            "token_type": "Bearer",
        });
        if let Some(exp) = exp {
            body["exp"] = json!(exp);
        }
        if !s.config.introspection_names_account
            && let Some(b) = body.as_object_mut()
        {
            b.remove("sub");
            b.remove("username");
        }
        json_response(StatusCode::OK, body)
    })
    .await
}

pub(super) async fn userinfo(State(s): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    s.sleep(s.config.latency).await;
    let token = auth_param(&headers, "Bearer").unwrap_or("");
    let account = s.store().account_of(token);
    s.respond("/oauth/userinfo", account, || {
        match s.store().active_access(token) {
            None => bearer_error(StatusCode::UNAUTHORIZED, "invalid_token"),
            Some((g, _)) if g.scopes.is_empty() => {
                bearer_error(StatusCode::FORBIDDEN, "insufficient_scope")
            }
            Some((g, _)) => json_response(
                StatusCode::OK,
                json!({ "sub": g.account_id, "name": g.account_name, "scope": g.scopes.join(" ") }),
            ),
        }
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct TokenBody {
    access_token: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_at: Option<i64>,
}

pub(super) fn found(ok: bool) -> Response {
    if ok {
        StatusCode::NO_CONTENT.into_response()
    } else {
        json_response(StatusCode::NOT_FOUND, json!({ "error": "unknown_token" }))
    }
}

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route(
            "/oauth/authorize",
            get(authorize_page).post(authorize_decide),
        )
        .route("/oauth/token", post(token))
        .route("/oauth/introspect", post(introspect))
        .route("/oauth/userinfo", get(userinfo))
        .route(
            "/sandbox/tokens",
            post(
                |State(s): State<Arc<Inner>>, Json(g): Json<Grant>| async move { Json(s.issue(g)) },
            ),
        )
        .route(
            "/sandbox/revoke",
            post(
                |State(s): State<Arc<Inner>>, Json(b): Json<TokenBody>| async move {
                    found(s.revoke(&b.access_token))
                },
            ),
        )
        .route(
            "/sandbox/scopes",
            post(
                |State(s): State<Arc<Inner>>, Json(b): Json<TokenBody>| async move {
                    found(s.set_scopes(&b.access_token, b.scopes))
                },
            ),
        )
        .route(
            "/sandbox/expiry",
            post(
                |State(s): State<Arc<Inner>>, Json(b): Json<TokenBody>| async move {
                    found(s.set_expires_at(&b.access_token, b.expires_at))
                },
            ),
        )
        .route(
            "/sandbox/mode",
            post(
                |State(s): State<Arc<Inner>>, Json(m): Json<Mode>| async move {
                    s.store().mode = m;
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/sandbox/calls",
            get(|State(s): State<Arc<Inner>>| async move { Json(s.store().calls.clone()) }).delete(
                |State(s): State<Arc<Inner>>| async move {
                    s.store().calls.clear();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route("/sandbox/healthz", get(|| async { "ok" }))
        .with_state(inner)
}
