//! Small pieces the built-in providers share when they read an answer: provider text made safe
//! for a status message, timestamps, and the identifiers that name an account.

use std::time::Duration;

use super::{Renewal, Response, Token, Verdict};
use crate::api::ReportedAccount;

/// Provider text as it may appear in a condition: see [`crate::text::scrub`] (Meta repeats
/// malformed tokens in its messages; conditions are read by tenants and copied into Events).
pub(super) fn clip(text: &str, secrets: &[&Token]) -> String {
    crate::text::scrub(text, secrets)
}

/// Unix seconds as a timestamp; 0 and negative values mean "never" (Meta's convention).
pub(super) fn unix(secs: i64) -> Option<jiff::Timestamp> {
    (secs > 0)
        .then(|| jiff::Timestamp::from_second(secs).ok())
        .flatten()
}

/// `expires_in` seconds from now.
pub(super) fn in_secs(secs: i64) -> Option<jiff::Timestamp> {
    (secs > 0)
        .then(|| {
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .ok()
        })
        .flatten()
}

/// A header holding a Unix time (X's `x-rate-limit-reset`) as the wait until then, from zero
/// (a time in the past) to [`super::MAX_PROVIDER_WAIT`].
pub(super) fn wait_until_header(resp: &Response, name: &str) -> Option<Duration> {
    let at: i64 = resp.headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    let wait = at.saturating_sub(jiff::Timestamp::now().as_second());
    Some(super::http::provider_wait(wait as f64))
}

/// The `scp` claim of a JWT access token (Microsoft's delegated permissions), read without
/// verifying the signature: it only tells which permissions the token says it carries, and the
/// check itself proves the token works. `None` for opaque tokens (personal Microsoft accounts).
pub(super) fn jwt_scopes(token: &Token) -> Option<Vec<String>> {
    use base64::Engine;
    let mut parts = token.expose().split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let scp = claims.get("scp")?.as_str()?;
    Some(scp.split_whitespace().map(str::to_owned).collect())
}

/// The account a token reaches, when the provider named it.
pub(super) fn account(id: Option<String>, name: Option<String>) -> Option<ReportedAccount> {
    (id.is_some() || name.is_some()).then_some(ReportedAccount { id, name })
}

/// Every identifier that names the account the token reaches (user ID, handle, mailbox,
/// workspace), for `Grant::target_ids`: `spec.account.id` may hold any of them, and e-mail
/// addresses and handles are compared case-insensitively by adding their lowercase form.
pub(super) fn aliases<I: IntoIterator<Item = Option<String>>>(ids: I) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for id in ids.into_iter().flatten().filter(|s| !s.is_empty()) {
        let lower = id.to_lowercase();
        for v in [id, lower] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The same failure seen from a token endpoint.
pub(super) fn renewal(v: Verdict) -> Renewal {
    match v {
        Verdict::Transient {
            message,
            retry_after,
        } => Renewal::Transient {
            message,
            retry_after,
        },
        Verdict::Misconfigured { message } => Renewal::Misconfigured { message },
        Verdict::Invalid { message, .. } => Renewal::Rejected { message },
        Verdict::Valid(_) => Renewal::Transient {
            message: "unexpected answer from the token endpoint".into(),
            retry_after: None,
        },
    }
}

/// A string that some providers send as a number (Meta IDs, Google's `exp`).
pub(super) fn de_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    use serde::Deserialize;
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_headers_far_away_are_clamped() {
        use crate::providers::MAX_PROVIDER_WAIT;
        let at = |v: String| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("x-rate-limit-reset", v.parse().unwrap());
            Response {
                status: 429,
                headers,
                body: Vec::new(),
                elapsed: Duration::ZERO,
            }
        };
        let r = |v: &str| wait_until_header(&at(v.to_owned()), "x-rate-limit-reset");
        assert_eq!(r("9223372036854775807"), Some(MAX_PROVIDER_WAIT));
        assert_eq!(r("-9223372036854775808"), Some(Duration::ZERO));
        assert_eq!(r("1"), Some(Duration::ZERO));
        assert_eq!(r("soon"), None);
    }

    #[test]
    fn jwt_scopes_read_the_scp_claim_of_a_jwt_only() {
        use base64::Engine;
        let enc = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let jwt = format!(
            "{}.{}.sig",
            enc(serde_json::json!({"typ": "JWT", "alg": "RS256"})),
            enc(
                serde_json::json!({"aud": "00000003-0000-0000-c000-000000000000",
                                   "scp": "Mail.Send User.Read offline_access"})
            )
        );
        assert_eq!(
            jwt_scopes(&Token::new(jwt)),
            Some(vec![
                "Mail.Send".to_owned(),
                "User.Read".to_owned(),
                "offline_access".to_owned()
            ])
        );
        assert_eq!(jwt_scopes(&Token::new("EwBwA8l6BAAU-opaque")), None);
        assert_eq!(jwt_scopes(&Token::new("a.%%%.c")), None);
        let no_scp = format!(
            "{}.{}.s",
            enc(serde_json::json!({})),
            enc(serde_json::json!({"roles": []}))
        );
        assert_eq!(jwt_scopes(&Token::new(no_scp)), None);
    }

    #[test]
    fn aliases_dedupe_and_lowercase() {
        assert_eq!(
            aliases([Some("Ann@Example.com".into()), None, Some("42".into())]),
            Some(vec![
                "Ann@Example.com".into(),
                "ann@example.com".into(),
                "42".into()
            ])
        );
        assert_eq!(aliases([None, Some(String::new())]), None);
    }

    #[test]
    fn unix_zero_is_never() {
        assert_eq!(unix(0), None);
        assert!(unix(1_700_000_000).is_some());
    }
}
