//! The operator's HTTP listeners (metrics and probes; the public OAuth callback) on hyper with
//! limits axum's `serve` does not set: a client that sends headers slowly, never finishes a
//! body or holds connections open cannot tie the listener up, and every response carries
//! headers that keep pages out of frames, caches and referrers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tracing::debug;

/// Time a client has to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection, body and answer included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 512;

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::map_response(security_headers));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

/// The callback's and the metrics listener's Content-Security-Policy: nothing loads from
/// elsewhere, inline styles only.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Headers for every page: `csp`, no framing, no referrer carrying the callback's `code` and
/// `state`, nothing cached, no content sniffing. The dashboard passes its own `csp`.
pub fn set_security_headers(h: &mut axum::http::HeaderMap, csp: &'static str) {
    let set = HeaderValue::from_static;
    h.insert(CONTENT_SECURITY_POLICY, set(csp));
    h.insert(X_FRAME_OPTIONS, set("DENY"));
    h.insert(REFERRER_POLICY, set("no-referrer"));
    h.insert(CACHE_CONTROL, set("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, set("nosniff"));
}

async fn security_headers(mut response: Response) -> Response {
    set_security_headers(response.headers_mut(), PAGE_CSP);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_answer_carries_the_security_headers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "page" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::get(format!("http://{addr}/")).await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["cache-control"], "no-store");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
        assert_eq!(resp.text().await.unwrap(), "page");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
