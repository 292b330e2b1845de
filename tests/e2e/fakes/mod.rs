//! A local server answering as Meta's Graph API and Google's OAuth endpoints document (bodies,
//! status codes, usage headers): the state they share ([`World`]) and the handle a test holds
//! ([`Fake`]); the Meta side is in `meta`, the Google side in `google`.

mod google;
mod meta;

pub(crate) use google::*;
pub(crate) use meta::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use relink::api::{ChannelProviderSpec, ProviderEndpoints, ProviderType};
use serde_json::Value;

use crate::fixtures::{Scenario, provider_spec};

/// The redirect URI of an operator started without `--public-url`.
pub(crate) const DEFAULT_CALLBACK: &str = "http://localhost:8081/oauth/callback";

/// One request the fake received: path and parameters (query or form). Holds tokens: compare,
/// never print.
#[derive(Clone)]
pub(crate) struct Call {
    pub(crate) path: &'static str,
    pub(crate) params: HashMap<String, String>,
}

#[derive(Default)]
pub(crate) struct World {
    pub(crate) app_secret: String,
    pub(crate) google_secret: String,
    pub(crate) meta: HashMap<String, MetaToken>,
    /// Authorization code → (the grant the login produced, redirect_uri it was issued for).
    pub(crate) codes: HashMap<String, (MetaToken, String)>,
    /// What the next person at the Facebook login dialog picks.
    pub(crate) next_login: Option<MetaToken>,
    /// Share of the app's rate limit reported in `X-App-Usage`.
    pub(crate) app_usage: u32,
    pub(crate) google: HashMap<String, GoogleToken>,
    pub(crate) refresh: HashMap<String, GoogleGrant>,
    /// Every token, code and secret the fake made, for the leak check.
    pub(crate) issued: Vec<String>,
    pub(crate) calls: Vec<Call>,
}

pub(crate) type Shared = Arc<Mutex<World>>;

/// Handle to the fake provider server; it lives as long as the test's runtime.
pub(crate) struct Fake {
    pub(crate) base: String,
    pub(crate) world: Shared,
}

impl Fake {
    pub(crate) async fn start() -> Fake {
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

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("fake world lock")
    }

    pub(crate) fn app_secret(&self) -> String {
        self.world().app_secret.clone()
    }

    pub(crate) fn google_secret(&self) -> String {
        self.world().google_secret.clone()
    }
    pub(crate) fn calls(&self, path: &str) -> Vec<Call> {
        self.world()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Whether any call to `path` sent `value` as parameter `key`.
    pub(crate) fn sent(&self, path: &str, key: &str, value: &str) -> bool {
        self.calls(path)
            .iter()
            .any(|c| c.params.get(key).map(String::as_str) == Some(value))
    }

    pub(crate) fn issued(&self) -> Vec<String> {
        self.world().issued.clone()
    }
}

impl World {
    pub(crate) fn record(&mut self, path: &'static str, params: &HashMap<String, String>) {
        self.calls.push(Call {
            path,
            params: params.clone(),
        });
    }
}

pub(crate) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn mint(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

pub(crate) fn json_status(status: u16, body: Value) -> Response {
    let mut resp = Json(body).into_response();
    *resp.status_mut() = StatusCode::from_u16(status).expect("status");
    resp
}

pub(crate) fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
}

pub(crate) fn garbage() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><body>Sorry, something went wrong.</body></html>",
    )
        .into_response()
}

/// A namespaced `ChannelProvider` of a built-in type, with its client secret.
pub(crate) async fn apply_provider(
    sc: &Scenario,
    name: &str,
    type_: ProviderType,
    client_id: &str,
    client_secret: &str,
    scopes: &[&str],
    endpoints: ProviderEndpoints,
) {
    let spec = ChannelProviderSpec {
        scopes: strings(scopes),
        ..provider_spec(name, type_, client_id, endpoints)
    };
    sc.apply_provider(name, spec, client_secret).await;
}
