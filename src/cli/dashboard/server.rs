//! The dashboard's HTTP server on 127.0.0.1: the page, its script and style, and three small
//! JSON endpoints. Every request must name `127.0.0.1:PORT` (or `localhost:PORT`) as its Host,
//! which defeats DNS rebinding; every `/api/` request must carry the per-process token the
//! page embeds (`X-Relink-Token`), which another site cannot read; the one request that
//! changes something (`POST /api/check`) must also be JSON from the page's own origin.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::{Api, ResourceExt};
use rand::Rng;
use relink::api::ChannelConnection;
use serde::{Deserialize, Serialize};

use super::Dashboard;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
/// The header carrying the page's token.
const TOKEN_HEADER: &str = "x-relink-token";
/// Longest wait of one `/api/state` long poll.
const LONG_POLL: Duration = Duration::from_secs(25);

struct App {
    dashboard: Arc<Dashboard>,
    token: String,
    /// `127.0.0.1:PORT` and `localhost:PORT`: the only Host headers answered.
    hosts: [String; 2],
    /// The page with its token.
    page: String,
}

/// Serves the dashboard on `listener` (bound to 127.0.0.1:`port`) until Ctrl-C.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    port: u16,
    dashboard: Arc<Dashboard>,
) -> Result<(), String> {
    let token = new_token();
    let app = Arc::new(App {
        dashboard,
        page: PAGE.replace("{{TOKEN}}", &token),
        token,
        hosts: [format!("127.0.0.1:{port}"), format!("localhost:{port}")],
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("the dashboard server stopped: {e}"))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/check", post(check))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// 32 random bytes as hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal without telling, by its timing, how much of `a` matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a `method` request to `path` with `headers` is refused, if it is; `token` and `hosts`
/// are what the page must send.
fn refusal(
    token: &str,
    hosts: &[String],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<&'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(host) = header(HOST.as_str()).filter(|h| hosts.iter().any(|x| x == h)) else {
        return Some("unexpected Host header: open the address relink dashboard printed");
    };
    if path.starts_with("/api/")
        && !header(TOKEN_HEADER).is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
    {
        return Some("missing or wrong X-Relink-Token: reload the page");
    }
    if method != Method::GET && method != Method::HEAD {
        if !header(CONTENT_TYPE.as_str()).is_some_and(|c| c.starts_with("application/json")) {
            return Some("expected a JSON request");
        }
        if header(ORIGIN.as_str()).is_some_and(|o| o != format!("http://{host}")) {
            return Some("cross-origin request refused");
        }
        if header("sec-fetch-site").is_some_and(|s| s != "same-origin") {
            return Some("cross-site request refused");
        }
    }
    None
}

/// The dashboard's own script, style and JSON come from itself; nothing else loads.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let why = refusal(
        &app.token,
        &app.hosts,
        request.method(),
        request.uri().path(),
        request.headers(),
    );
    let mut response = match why {
        Some(why) => (StatusCode::FORBIDDEN, why).into_response(),
        None => next.run(request).await,
    };
    relink::server::set_security_headers(response.headers_mut(), CSP);
    response
}

async fn page(State(app): State<Arc<App>>) -> Response {
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        app.page.clone(),
    )
        .into_response()
}

async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[derive(Deserialize)]
struct StateQuery {
    /// The version the page has; the answer waits for a newer one (up to 25 s).
    after: Option<u64>,
}

async fn state(State(app): State<Arc<App>>, Query(q): Query<StateQuery>) -> Response {
    let mut rx = app.dashboard.version.subscribe();
    let current = *rx.borrow_and_update();
    if q.after == Some(current) {
        let _ = tokio::time::timeout(LONG_POLL, rx.changed()).await;
    }
    let version = *rx.borrow();
    axum::Json(app.dashboard.snapshot(version).await).into_response()
}

#[derive(Deserialize)]
struct Target {
    namespace: String,
    name: String,
}

/// The connection `t` names, when the dashboard shows it.
fn shown(app: &App, t: &Target) -> Option<Arc<ChannelConnection>> {
    let d = &app.dashboard;
    d.connections
        .state()
        .into_iter()
        .find(|c| c.namespace().as_deref() == Some(t.namespace.as_str()) && c.name_any() == t.name)
        .filter(|_| d.scope.contains(&t.namespace))
}

fn not_shown(t: &Target) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "channelconnection {}/{} is not shown here",
            t.namespace, t.name
        ),
    )
}

fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// One Event as the page lists it.
#[derive(Serialize)]
struct EventLine {
    #[serde(rename = "type")]
    type_: String,
    reason: String,
    note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    count: i32,
}

async fn events(State(app): State<Arc<App>>, Query(t): Query<Target>) -> Response {
    let Some(conn) = shown(&app, &t) else {
        return not_shown(&t);
    };
    match crate::cli::status::events_about(&app.dashboard.client, &conn).await {
        Ok(list) => {
            let lines: Vec<EventLine> = list
                .iter()
                .rev()
                .map(|e| EventLine {
                    type_: e.type_.clone().unwrap_or_default(),
                    reason: e.reason.clone().unwrap_or_default(),
                    note: crate::cli::status::one_line(e.note.as_deref().unwrap_or_default()),
                    time: crate::cli::status::event_time(e)
                        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    count: e.series.as_ref().map(|s| s.count).unwrap_or(1),
                })
                .collect();
            axum::Json(serde_json::json!({ "events": lines })).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn check(State(app): State<Arc<App>>, axum::Json(t): axum::Json<Target>) -> Response {
    if shown(&app, &t).is_none() {
        return not_shown(&t);
    }
    let permission = app.dashboard.may_patch(&t.namespace).await;
    if !permission.allowed {
        return error(
            StatusCode::FORBIDDEN,
            permission.why.unwrap_or_else(|| "not allowed".to_owned()),
        );
    }
    let api: Api<ChannelConnection> = Api::namespaced(app.dashboard.client.clone(), &t.namespace);
    match crate::cli::status::request_check(&api, &t.namespace, &t.name, jiff::Timestamp::now())
        .await
    {
        Ok(value) => axum::Json(serde_json::json!({ "requested": value })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn refused(method: Method, path: &str, pairs: &[(&'static str, &str)]) -> Option<&'static str> {
        let token = "t".repeat(64);
        let hosts = ["127.0.0.1:8097".to_owned(), "localhost:8097".to_owned()];
        refusal(&token, &hosts, &method, path, &headers(pairs))
    }

    #[test]
    fn only_the_page_itself_may_ask() {
        let token = "t".repeat(64);
        let ok_get = [
            ("host", "127.0.0.1:8097"),
            ("x-relink-token", token.as_str()),
        ];
        assert_eq!(
            refused(Method::GET, "/", &[("host", "127.0.0.1:8097")]),
            None
        );
        assert_eq!(
            refused(Method::GET, "/", &[("host", "localhost:8097")]),
            None
        );
        assert_eq!(refused(Method::GET, "/api/state", &ok_get), None);
        // DNS rebinding: the attacker's name in Host.
        assert!(refused(Method::GET, "/", &[("host", "evil.example:8097")]).is_some());
        assert!(refused(Method::GET, "/", &[]).is_some());
        assert!(refused(Method::GET, "/api/state", &[("host", "127.0.0.1:8097")]).is_some());
        assert!(
            refused(
                Method::GET,
                "/api/state",
                &[("host", "127.0.0.1:8097"), ("x-relink-token", "guess")]
            )
            .is_some()
        );
        let post = |extra: &[(&'static str, &str)]| {
            let mut all = vec![
                ("host", "127.0.0.1:8097"),
                ("x-relink-token", token.as_str()),
            ];
            all.extend_from_slice(extra);
            refused(Method::POST, "/api/check", &all)
        };
        assert_eq!(
            post(&[
                ("content-type", "application/json"),
                ("origin", "http://127.0.0.1:8097"),
                ("sec-fetch-site", "same-origin"),
            ]),
            None
        );
        assert!(post(&[("content-type", "application/x-www-form-urlencoded")]).is_some());
        assert!(
            post(&[
                ("content-type", "application/json"),
                ("origin", "http://evil.example")
            ])
            .is_some()
        );
        assert!(
            post(&[
                ("content-type", "application/json"),
                ("sec-fetch-site", "cross-site")
            ])
            .is_some()
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
        assert_eq!(new_token().len(), 64);
        assert_ne!(new_token(), new_token());
    }
}
