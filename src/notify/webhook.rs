//! Webhook delivery: one POST of JSON, signed with HMAC-SHA256 when the Secret has a `token`.
//!
//! The address is tenant input (a Secret in the connection's namespace), so it goes through
//! the same endpoint policy as a namespaced `ChannelProvider`: https and a public address,
//! unless the host is allowed with `--allow-namespaced-endpoint-hosts`. No redirects are
//! followed, the answer's body is not read, and errors never contain the address (a Slack
//! webhook address is itself a credential).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::message::Notice;
use crate::providers::Http;

/// Whole-request timeout of a webhook POST.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook settings read from the connection's Secret.
#[derive(Clone)]
pub struct Target {
    pub address: String,
    pub token: Option<String>,
    pub slack: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &host_of(&self.address))
            .field("signed", &self.token.is_some())
            .field("slack", &self.slack)
            .finish()
    }
}

impl Target {
    /// From the Secret's `address`, `token` and `format` keys.
    pub fn new(address: String, token: Option<String>, format: Option<&str>) -> Target {
        let slack = format.is_some_and(|f| f.trim().eq_ignore_ascii_case("slack"))
            || host_of(&address).is_some_and(|h| h.eq_ignore_ascii_case("hooks.slack.com"));
        Target {
            address,
            token: token.filter(|t| !t.is_empty()),
            slack,
        }
    }

    /// The body to POST.
    pub fn body(&self, notice: &Notice) -> Vec<u8> {
        let v = if self.slack {
            notice.slack_json()
        } else {
            notice.webhook_json()
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

fn host_of(address: &str) -> Option<String> {
    url::Url::parse(address)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
}

/// `sha256=<hex HMAC-SHA256(token, body)>`.
pub fn signature(token: &str, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .map_err(|_| "the webhook token cannot be used as an HMAC key".to_owned())?;
    mac.update(body);
    Ok(format!("sha256={}", hex(&mac.finalize().into_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// POSTs the notice to the target.
pub async fn send(http: &Http, target: &Target, notice: &Notice) -> Result<(), String> {
    let host = host_of(&target.address).unwrap_or_default();
    http.policy().check_url(&target.address).map_err(|_| {
        format!(
            "the webhook address (host {host:?}) is refused by the endpoint policy: it must be https on a public address, or its host allowed with --allow-namespaced-endpoint-hosts"
        )
    })?;
    let body = target.body(notice);
    let mut req = http
        .request(false, reqwest::Method::POST, &target.address)
        .timeout(TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Relink-Event", notice.event());
    if let Some(token) = &target.token {
        req = req.header("X-Signature", signature(token, &body)?);
    }
    let resp = req.body(body).send().await.map_err(|e| {
        let e = e.without_url();
        let what = if e.is_timeout() {
            format!("no answer within {}s", TIMEOUT.as_secs())
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            crate::text::error_chain(&e)
        };
        format!("webhook POST to host {host:?} failed: {what}")
    })?;
    let status = resp.status();
    drop(resp);
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "webhook at host {host:?} answered HTTP {}",
            status.as_u16()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?").unwrap();
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn slack_is_chosen_by_host_or_format() {
        let t = Target::new(
            "https://hooks.slack.com/services/T/B/xyz".into(),
            None,
            None,
        );
        assert!(t.slack);
        let t = Target::new("https://chat.example.com/hook".into(), None, Some("slack"));
        assert!(t.slack);
        let t = Target::new("https://example.com/hook".into(), Some(String::new()), None);
        assert!(!t.slack);
        assert!(t.token.is_none(), "an empty token means unsigned");
    }

    #[test]
    fn debug_never_shows_the_address_or_token() {
        let t = Target::new(
            "https://hooks.slack.com/services/T/B/secretpart".into(),
            Some("tok3n".into()),
            None,
        );
        let d = format!("{t:?}");
        assert!(!d.contains("secretpart") && !d.contains("tok3n"));
    }
}
