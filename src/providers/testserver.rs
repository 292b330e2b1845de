//! A local HTTP server that answers as a provider does, for the provider tests: canned answers
//! per path (in order, the last one repeating) and a record of every request relink sent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::{App, Http, HttpConfig, Token, Verdict};
use crate::api::{ProviderEndpoints, ProviderSettings, ProviderType, Reason};

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub form: BTreeMap<String, String>,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Inner {
    routes: Mutex<HashMap<String, VecDeque<Canned>>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct TestServer {
    pub base: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    /// Serves `routes` on 127.0.0.1 at a free port. A path listed twice answers in that order.
    pub async fn start(routes: Vec<(&str, Canned)>) -> Self {
        let inner = Arc::new(Inner::default());
        {
            let mut map = inner.routes.lock().unwrap();
            for (path, canned) in routes {
                map.entry(path.to_owned()).or_default().push_back(canned);
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base: format!("http://{addr}"),
            inner,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// The only request received at `path`.
    pub fn one(&self, path: &str) -> Seen {
        let hits: Vec<Seen> = self.seen().into_iter().filter(|s| s.path == path).collect();
        assert_eq!(hits.len(), 1, "requests to {path}: {hits:?}");
        hits.into_iter().next().unwrap()
    }
}

fn pairs(s: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(s.as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let form = if headers.get("content-type").is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    }) {
        pairs(&String::from_utf8_lossy(&body))
    } else {
        BTreeMap::new()
    };
    inner.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: pairs(uri.query().unwrap_or_default()),
        form,
        headers,
    });
    let canned = {
        let mut routes = inner.routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front(),
            Some(q) => q.front().cloned(),
            None => None,
        }
    };
    let Some(c) = canned else {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    };
    let mut resp = (StatusCode::from_u16(c.status).unwrap(), c.body).into_response();
    for (k, v) in c.headers {
        resp.headers_mut().insert(
            HeaderName::try_from(k).unwrap(),
            HeaderValue::try_from(v).unwrap(),
        );
    }
    resp
}

/// The provider HTTP client, allowed to call 127.0.0.1.
pub fn http() -> Http {
    Http::new(HttpConfig {
        policy: super::EndpointPolicy::new(vec!["127.0.0.1".into()]),
        ..Default::default()
    })
    .unwrap()
}

/// A trusted provider of `type_` with client `app-id`, the given secret and endpoint overrides.
pub fn app(type_: ProviderType, endpoints: ProviderEndpoints, secret: Option<&str>) -> App {
    App {
        settings: ProviderSettings {
            type_,
            client_id: "app-id".into(),
            client_secret_ref: None,
            redirect_url: None,
            scopes: Vec::new(),
            endpoints,
            authorization_params: BTreeMap::new(),
            refresh_token_lifetime: None,
        },
        client_secret: secret.map(Token::new),
        trusted: true,
        label: format!("ClusterChannelProvider/{}", type_.as_str()),
    }
}

/// The reason of an `Invalid` verdict, else a panic showing the verdict.
#[track_caller]
pub fn invalid(v: &Verdict) -> Reason {
    match v {
        Verdict::Invalid { reason, .. } => *reason,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The retry hint of a `Transient` verdict, else a panic showing the verdict.
#[track_caller]
pub fn transient(v: &Verdict) -> Option<std::time::Duration> {
    match v {
        Verdict::Transient { retry_after, .. } => *retry_after,
        other => panic!("expected Transient, got {other:?}"),
    }
}

/// The grant of a `Valid` verdict, else a panic showing the verdict.
#[track_caller]
pub fn valid(v: Verdict) -> super::Grant {
    match v {
        Verdict::Valid(g) => g,
        other => panic!("expected Valid, got {other:?}"),
    }
}

#[track_caller]
pub fn misconfigured(v: &Verdict) -> &str {
    match v {
        Verdict::Misconfigured { message } => message,
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

/// Whether no verdict message leaks `secret`.
#[track_caller]
pub fn assert_no_leak(v: &Verdict, secret: &str) {
    assert!(!format!("{v:?}").contains(secret), "{v:?} leaks a secret");
}
