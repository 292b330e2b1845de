//! Local OAuth 2 provider ("Sandbox Social") standing in for a real social network,
//! so tests, the demo and benchmarks can exercise token checks without network
//! access or real accounts. It speaks RFC 6749 (authorization code + refresh),
//! RFC 7662 introspection and a bearer-protected userinfo endpoint, and can be
//! told to misbehave (`Mode`) to exercise the operator's failure handling.
//!
//! Tokens are opaque and carry recognisable prefixes (`sbx-at-`, `sbx-rt-`,
//! `sbx-code-`) so leak tests can grep logs for them; this module never logs them.

mod pages;
mod server;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::api::{ChannelProviderSpec, ClientSecretRef, ProviderEndpoints, ProviderType};
use server::{Inner, router};
use store::Store;

/// Knobs fixed for the lifetime of a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Delay before answering each `/oauth/*` request, to mimic a remote provider.
    pub latency: Duration,
    /// The only client the sandbox accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Whether introspection names the account (`sub`, `username`). RFC 7662 makes both
    /// optional; false answers like servers that do not say whose token it is.
    pub introspection_names_account: bool,
    /// Refresh-token reuse detection (OAuth 2.1, the security BCP): a rotated refresh token
    /// presented again revokes its whole token family (the grant), as X, TikTok, Microsoft
    /// and many identity providers do.
    pub reuse_detection: bool,
    /// How long a rotated refresh token still works after its rotation (Okta's "grace period
    /// for token rotation", Auth0's "reuse interval"); zero: never.
    pub reuse_grace: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            client_id: "relink-sandbox".to_owned(),
            client_secret: "sandbox-secret".to_owned(),
            introspection_names_account: true,
            reuse_detection: false,
            reuse_grace: Duration::ZERO,
        }
    }
}

/// What a user consented to; issuing one yields tokens without the browser dance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Grant {
    pub account_id: String,
    pub account_name: String,
    pub scopes: Vec<String>,
    /// `None`: the access token never expires.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// Whether a refresh token is issued alongside.
    #[serde(default = "default_true")]
    pub refreshable: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// Failure injection for `/oauth/token`, `/oauth/introspect` and `/oauth/userinfo`,
/// covering the ways real providers break.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Mode {
    #[default]
    Normal,
    /// Answer this status with `{"error":"temporarily_unavailable"}`.
    Status { code: u16 },
    /// 429 with a `Retry-After` header.
    RetryAfter { seconds: u64 },
    /// 200 `text/html`, not JSON.
    Garbage,
    /// 200 with an OAuth error body.
    ErrorBody,
    /// Never answers (one hour, or until shutdown).
    Hang,
    /// 200 with a 20 MiB JSON body.
    Huge,
}

/// One `/oauth/*` request, so tests can assert what the operator actually called.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    pub path: String,
    pub at_unix_ms: i64,
    /// Account behind the token/code of the request, when known.
    pub account_id: Option<String>,
    /// Status answered; 0 for a request left hanging.
    pub status: u16,
    /// `grant_type` of a `/oauth/token` request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
}

/// Stops the server when the last `Sandbox` clone goes away.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.send_replace(true);
    }
}

/// Handle to a running sandbox; cheap to clone, all clones drive the same server.
/// Dropping the last clone shuts the server down.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
    addr: SocketAddr,
    _stop: Arc<StopOnDrop>,
}

impl Sandbox {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio runtime.
    pub async fn start(addr: SocketAddr, config: SandboxConfig) -> std::io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            store: Mutex::new(Store::default()),
            stop,
            hold: watch::channel(false).0,
        });
        let app = router(inner.clone());
        tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::error!(%err, "sandbox server failed");
            }
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, to configure as the provider endpoint.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoints of a provider that logs people in here and checks tokens by introspection.
    pub fn endpoints(&self) -> ProviderEndpoints {
        let base = self.base_url();
        ProviderEndpoints {
            authorization_url: Some(format!("{base}/oauth/authorize")),
            token_url: Some(format!("{base}/oauth/token")),
            introspection_url: Some(format!("{base}/oauth/introspect")),
            ..Default::default()
        }
    }

    /// An `oauth2` `ChannelProvider` for the sandbox's client ([`Self::endpoints`]), its client
    /// secret in key `client_secret` of Secret `client_secret` (the demo, the tests).
    pub fn provider_spec(&self, client_secret: &str) -> ChannelProviderSpec {
        ChannelProviderSpec {
            type_: ProviderType::OAuth2,
            client_id: self.inner.config.client_id.clone(),
            client_secret_ref: Some(ClientSecretRef {
                name: client_secret.to_owned(),
                key: "client_secret".into(),
                namespace: None,
            }),
            redirect_url: None,
            scopes: vec![],
            endpoints: self.endpoints(),
            authorization_params: BTreeMap::new(),
            refresh_token_lifetime: None,
        }
    }

    /// Issues tokens as if the user had completed consent, for the sandbox's client.
    pub fn issue(&self, grant: Grant) -> IssuedTokens {
        self.inner.issue(grant)
    }

    /// Simulates the user removing the app: the whole grant (this token, its
    /// refresh token and any token refreshed from it) stops working.
    pub fn revoke(&self, access_token: &str) {
        self.inner.revoke(access_token);
    }

    /// Replaces the scopes of the token's grant (also seen by tokens refreshed from it).
    pub fn set_scopes(&self, access_token: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.inner.set_scopes(access_token, scopes);
    }

    /// Unix seconds; `None` never expires. A past value makes the token expired.
    pub fn set_expires_at(&self, access_token: &str, expires_at: Option<i64>) {
        self.inner.set_expires_at(access_token, expires_at);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.store().mode = mode;
    }

    /// A failure mode for refresh-token grants only (`None`: as [`Sandbox::set_mode`] says),
    /// so checks keep working while refreshes fail.
    pub fn set_refresh_mode(&self, mode: Option<Mode>) {
        self.inner.store().refresh_mode = mode;
    }

    pub fn mode(&self) -> Mode {
        self.inner.store().mode.clone()
    }

    /// Every `/oauth/*` request so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.store().calls.clone()
    }

    pub fn calls_for(&self, account_id: &str) -> Vec<Call> {
        let store = self.inner.store();
        let mine = |c: &&Call| c.account_id.as_deref() == Some(account_id);
        store.calls.iter().filter(mine).cloned().collect()
    }

    /// Refresh-token grants presented for `account_id` (answered or not).
    pub fn refresh_calls_for(&self, account_id: &str) -> usize {
        self.calls_for(account_id)
            .iter()
            .filter(|c| {
                c.path == "/oauth/token" && c.grant_type.as_deref() == Some("refresh_token")
            })
            .count()
    }

    /// Token families (grants) revoked because a rotated refresh token was presented again.
    pub fn families_revoked_for_reuse(&self) -> usize {
        self.inner
            .store()
            .grants
            .iter()
            .filter(|g| g.revoked_for_reuse)
            .count()
    }

    /// Holds the answers to refresh-token grants until [`Sandbox::release_refreshes`]: the
    /// rotation happens (the old refresh token is spent) and the new tokens wait to be sent,
    /// as with a provider that answered but whose answer has not arrived yet.
    pub fn hold_refreshes(&self) {
        self.inner.hold.send_replace(true);
    }

    pub fn release_refreshes(&self) {
        self.inner.hold.send_replace(false);
    }

    /// Refresh answers being held now.
    pub fn held_refreshes(&self) -> usize {
        self.inner.store().held
    }

    pub fn clear_calls(&self) {
        self.inner.store().calls.clear();
    }

    /// Stops accepting connections, closes idle ones and wakes hanging requests.
    pub fn shutdown(&self) {
        self.inner.stop.send_replace(true);
    }
}
