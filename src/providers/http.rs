//! The one HTTP setup every provider call goes through: timeouts, a response size cap, no
//! redirects, the endpoint policy for tenant-written providers, and `Retry-After` parsing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::EndpointPolicy;

/// The longest wait a provider can ask for (`Retry-After`, rate-limit headers): a longer one is
/// clamped to this, so no answer can park a connection for days or overflow a timestamp.
pub const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(3600);

/// Limits of provider calls, set by operator flags.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub policy: EndpointPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_body_bytes: 1 << 20,
            policy: EndpointPolicy::default(),
        }
    }
}

/// A provider's answer, body already read (and capped). Not `Debug`: the body may hold tokens.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub elapsed: Duration,
}

impl Response {
    /// `Retry-After` as seconds or an HTTP date, relative to now, at most [`MAX_PROVIDER_WAIT`].
    pub fn retry_after(&self) -> Option<Duration> {
        let value = self.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(provider_wait(secs as f64));
        }
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let secs = at
            .as_second()
            .saturating_sub(jiff::Timestamp::now().as_second());
        Some(provider_wait(secs as f64))
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A wait a provider announced, in seconds (any number, even negative, NaN or huge), as a
/// duration from zero to [`MAX_PROVIDER_WAIT`].
pub fn provider_wait(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_PROVIDER_WAIT)
        .min(MAX_PROVIDER_WAIT)
}

/// Why no answer came back. Messages never contain the URL (it may carry a token).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to the provider: {0}")]
    Connect(String),
    #[error("the provider's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("refused by the endpoint policy: {0}")]
    Policy(String),
    #[error("request to the provider failed: {0}")]
    Other(String),
}

/// HTTP clients for provider calls: one for trusted (cluster-scoped) providers and one whose
/// DNS answers pass the endpoint policy, for tenant-written providers.
#[derive(Clone)]
pub struct Http {
    trusted: reqwest::Client,
    tenant: reqwest::Client,
    config: HttpConfig,
}

impl Http {
    pub fn new(config: HttpConfig) -> Result<Self, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; use ring, as kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .timeout(config.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("relink/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            trusted: builder().build()?,
            // Tenant endpoints are reached directly: a proxy from the environment would resolve
            // the name itself, out of reach of the policy's DNS check.
            tenant: builder()
                .no_proxy()
                .dns_resolver(Arc::new(PolicyResolver(config.policy.clone())))
                .build()?,
            config,
        })
    }

    pub fn policy(&self) -> &EndpointPolicy {
        &self.config.policy
    }

    /// A request builder on the right client. `trusted` is false for namespaced providers.
    pub fn request(
        &self,
        trusted: bool,
        method: reqwest::Method,
        url: &str,
    ) -> reqwest::RequestBuilder {
        let client = if trusted { &self.trusted } else { &self.tenant };
        client.request(method, url)
    }

    /// Sends the request and reads at most `max_body_bytes` of the answer.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Response, TransportError> {
        let started = Instant::now();
        let mut resp = req.send().await.map_err(|e| self.classify(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let cap = self.config.max_body_bytes;
        if resp.content_length().is_some_and(|n| n as usize > cap) {
            return Err(TransportError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > cap {
                return Err(TransportError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
            elapsed: started.elapsed(),
        })
    }

    fn classify(&self, e: reqwest::Error) -> TransportError {
        let e = e.without_url();
        if e.is_timeout() {
            return TransportError::Timeout(self.config.timeout);
        }
        let text = crate::text::error_chain(&e);
        if text.contains(POLICY_MARKER) {
            return TransportError::Policy(text);
        }
        if e.is_connect() {
            return TransportError::Connect(text);
        }
        TransportError::Other(text)
    }
}

const POLICY_MARKER: &str = "resolves only to non-public addresses";

/// Resolves names for tenant providers and drops addresses the policy refuses.
struct PolicyResolver(EndpointPolicy);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = policy.filter_resolved(&host, addrs);
            if allowed.is_empty() {
                return Err(format!("{host} {POLICY_MARKER}").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(value: &str) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        Response {
            status: 429,
            headers,
            body: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn provider_waits_are_clamped_in_both_forms() {
        assert_eq!(
            with_retry_after("999999999999").retry_after(),
            Some(MAX_PROVIDER_WAIT)
        );
        assert_eq!(
            with_retry_after("18446744073709551615").retry_after(),
            Some(MAX_PROVIDER_WAIT)
        );
        assert_eq!(
            with_retry_after("30").retry_after(),
            Some(Duration::from_secs(30))
        );
        // An HTTP date far in the future, and one in the past.
        assert_eq!(
            with_retry_after("31 Dec 9000 23:59:59 GMT").retry_after(),
            Some(MAX_PROVIDER_WAIT)
        );
        assert_eq!(
            with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").retry_after(),
            Some(Duration::ZERO)
        );
        assert_eq!(with_retry_after("soon").retry_after(), None);
        assert_eq!(provider_wait(f64::INFINITY), MAX_PROVIDER_WAIT);
        assert_eq!(provider_wait(f64::NAN), Duration::ZERO);
        assert_eq!(provider_wait(-5.0), Duration::ZERO);
    }
}
