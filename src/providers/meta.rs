//! What Facebook and Instagram share: Meta's Graph API error object (codes and subcodes decide
//! between dead, needs a person and try later), its usage headers (slow down before Meta
//! throttles), and GET-style token calls whose errors are Graph errors rather than RFC 6749.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use super::answer::{clip, in_secs, renewal};
use super::oauth2::{common_failures, transport};
use super::{App, Endpoint, Http, NewTokens, Renewal, Response, Token, Verdict};
use crate::api::Reason;

/// `{"error": {...}}`, the body of every failed Graph call.
#[derive(Deserialize)]
struct Envelope {
    error: GraphError,
}

/// Meta's error object. `debug_token` reports the inspected token's error with `subcode`
/// instead of `error_subcode`.
#[derive(Deserialize, Clone, Default)]
pub(super) struct GraphError {
    #[serde(default)]
    pub message: String,
    pub code: Option<i64>,
    #[serde(alias = "subcode")]
    pub error_subcode: Option<i64>,
    #[serde(default)]
    pub is_transient: bool,
}

/// What an error code means for relink.
#[derive(Debug, PartialEq)]
pub(super) enum Class {
    /// The token is dead or blocked until its owner acts.
    Dead(Reason),
    /// A permission is missing (codes 10 and 200–299).
    Permission,
    /// Downtime or throttling.
    Later,
    /// The app itself is refused.
    App,
    /// Nothing documented: never a reason to call a token dead.
    Unknown,
}

impl GraphError {
    pub fn class(&self) -> Class {
        if self.is_transient {
            return Class::Later;
        }
        match self.code {
            Some(190 | 102) => match self.error_subcode {
                // Checkpointed or unconfirmed: the person must act on Facebook itself.
                Some(459 | 464) => Class::Dead(Reason::AccountActionRequired),
                Some(463) => Class::Dead(Reason::Expired),
                _ => Class::Dead(Reason::Revoked),
            },
            // Code 1 is "unknown, retry" except when the app secret is wrong.
            Some(1) if self.message.to_lowercase().contains("client secret") => Class::App,
            Some(101) => Class::App,
            // 1, 2: downtime; 4, 17, 32, 341, 613 and 80000–80014: app, user, page and
            // business use case throttling.
            Some(1 | 2 | 4 | 17 | 32 | 341 | 613 | 80000..=80014) => Class::Later,
            Some(10 | 200..=299) => Class::Permission,
            _ => Class::Unknown,
        }
    }

    /// `code/subcode: message`, with secrets the message may repeat removed.
    pub fn describe(&self, secrets: &[&Token]) -> String {
        let code = match (self.code, self.error_subcode) {
            (Some(c), Some(s)) => format!("code {c}, subcode {s}"),
            (Some(c), None) => format!("code {c}"),
            _ => "no code".to_owned(),
        };
        format!("{} ({code})", clip(&self.message, secrets))
    }

    /// Why a dead token is dead, in words an owner understands.
    fn why_dead(&self) -> &'static str {
        match self.error_subcode {
            Some(458) => "the person removed the app from their account",
            Some(459) => {
                "the account is checkpointed: its owner must log in to Facebook and clear the checkpoint"
            }
            Some(460) => "the password of the account was changed",
            Some(463) => "the token expired",
            Some(464) => {
                "the account is not confirmed: its owner must log in to Facebook and confirm it"
            }
            Some(467) => "the person logged out or the token was invalidated",
            Some(492) => "the person no longer has a role on the Page",
            _ => "the token was revoked or is invalid",
        }
    }

    /// The verdict for an error about the token itself.
    pub fn verdict(&self, resp: Option<&Response>, secrets: &[&Token]) -> Verdict {
        let what = self.describe(secrets);
        match self.class() {
            Class::Dead(reason) => Verdict::Invalid {
                reason,
                message: format!("Meta: {} ({what})", self.why_dead()),
            },
            Class::Permission => Verdict::Invalid {
                reason: Reason::ScopesMissing,
                message: format!("Meta says a permission is missing: {what}"),
            },
            Class::App => Verdict::Misconfigured {
                message: format!("Meta refused the app credentials: {what}"),
            },
            Class::Later | Class::Unknown => Verdict::Transient {
                message: format!("Meta answered with an error to retry later: {what}"),
                retry_after: resp.and_then(backoff),
            },
        }
    }
}

/// The Graph error in a response body, if it is one.
pub(super) fn error_of(resp: &Response) -> Option<GraphError> {
    resp.json::<Envelope>().map(|e| e.error)
}

/// Above this share of a Meta rate limit (percent) relink stops checking for a while.
pub(super) const USAGE_LIMIT: f64 = 95.0;
/// The wait when Meta reports high usage but no time to regain access (its windows are an hour).
pub(super) const USAGE_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    call_count: f64,
    #[serde(default)]
    total_cputime: f64,
    #[serde(default)]
    total_time: f64,
    /// Minutes, in business use case usage.
    #[serde(default)]
    estimated_time_to_regain_access: f64,
    /// Percent, in ad account usage.
    #[serde(default)]
    acc_id_util_pct: f64,
    /// Seconds, in ad account usage.
    #[serde(default)]
    reset_time_duration: f64,
}

impl Usage {
    fn percent(&self) -> f64 {
        [
            self.call_count,
            self.total_cputime,
            self.total_time,
            self.acc_id_util_pct,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
    fn regain(&self) -> f64 {
        (self.estimated_time_to_regain_access * 60.0).max(self.reset_time_duration)
    }
}

/// The highest usage Meta reports in `X-App-Usage`, `X-Page-Usage`, `X-Ad-Account-Usage` and
/// `X-Business-Use-Case-Usage`, and the longest wait it announces until access returns.
pub(super) fn usage(resp: &Response) -> Option<(f64, Option<Duration>)> {
    let mut found: Vec<Usage> = Vec::new();
    let header = |name: &str| resp.headers.get(name).and_then(|v| v.to_str().ok());
    for name in ["x-app-usage", "x-page-usage", "x-ad-account-usage"] {
        if let Some(u) = header(name).and_then(|v| serde_json::from_str::<Usage>(v).ok()) {
            found.push(u);
        }
    }
    if let Some(v) = header("x-business-use-case-usage")
        && let Ok(map) = serde_json::from_str::<std::collections::HashMap<String, Vec<Usage>>>(v)
    {
        found.extend(map.into_values().flatten());
    }
    if found.is_empty() {
        return None;
    }
    let percent = found.iter().map(Usage::percent).fold(0.0, f64::max);
    let regain = found.iter().map(Usage::regain).fold(0.0, f64::max);
    Some((
        percent,
        (regain > 0.0).then(|| super::http::provider_wait(regain)),
    ))
}

/// How long to wait after a throttled or failed call: `Retry-After`, else Meta's own estimate,
/// else, when the usage headers show the app at its limit, [`USAGE_BACKOFF`]: retrying within
/// seconds cannot succeed before Meta's window moves and keeps the app throttled.
fn backoff(resp: &Response) -> Option<Duration> {
    resp.retry_after().or_else(|| {
        usage(resp).and_then(|(percent, regain)| {
            regain.or((percent >= USAGE_LIMIT).then_some(USAGE_BACKOFF))
        })
    })
}

/// A working token seen while the app is about to be throttled becomes "try later": the next
/// checks must not push the app over Meta's limit, which would stall every other channel.
/// Verdicts that a token is dead stand, since they do not depend on the limit.
pub(super) fn throttle(resp: &Response, verdict: Verdict) -> Verdict {
    match (&verdict, usage(resp)) {
        (Verdict::Valid(_), Some((percent, regain))) if percent >= USAGE_LIMIT => {
            Verdict::Transient {
                message: format!(
                    "the token works, but Meta reports {percent:.0}% of the app's rate limit used; checking less often"
                ),
                retry_after: Some(resp.retry_after().or(regain).unwrap_or(USAGE_BACKOFF)),
            }
        }
        _ => verdict,
    }
}

/// A Graph answer: a body to read, a Graph error, or a verdict already (transport, 429, 5xx).
pub(super) enum Answer {
    Ok(Response),
    Error(GraphError, Response),
    Failed(Verdict),
}

/// GET `url` with `query` on the provider's client.
pub(super) async fn get(http: &Http, app: &App, url: &str, query: &[(&str, &str)]) -> Answer {
    let req = http
        .request(app.trusted, Method::GET, url)
        .header("Accept", "application/json")
        .query(query);
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(transport(e)),
    };
    if let Some(e) = error_of(&resp) {
        // Meta answers throttling with 4xx/5xx and a Graph error; both say "later" the same way.
        return Answer::Error(e, resp);
    }
    if let Some(v) = common_failures(&resp, "Graph API") {
        return Answer::Failed(v);
    }
    Answer::Ok(resp)
}

/// The Graph API base URL (`spec.endpoints.apiBaseUrl` or the preset's); the error is the
/// provider object's problem, reported as `Misconfigured`.
pub(super) fn api_base(app: &App) -> Result<String, String> {
    app.endpoint(Endpoint::ApiBase)
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or_else(|| "the provider has no API base URL (spec.endpoints.apiBaseUrl)".to_owned())
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<i64>,
}

/// A GET token call of Meta's (`fb_exchange_token`, `ig_refresh_token`, `ig_exchange_token`,
/// Facebook's code exchange): tokens, or the Graph error read as a renewal outcome.
pub(super) async fn token_get(
    http: &Http,
    app: &App,
    url: &str,
    query: &[(&str, &str)],
    secrets: &[&Token],
) -> Renewal {
    match get(http, app, url, query).await {
        Answer::Failed(v) => renewal(v),
        Answer::Error(e, resp) => {
            let what = e.describe(secrets);
            match e.class() {
                Class::Dead(_) => Renewal::Rejected {
                    message: format!("Meta refused to renew the token: {}", e.why_dead()),
                },
                Class::App => Renewal::Misconfigured {
                    message: format!("Meta refused the app credentials: {what}"),
                },
                // Invalid parameter: a wrong redirect URI is the app's problem; otherwise the
                // code or token sent is unusable (used, expired, malformed).
                _ if resp.status < 500 && e.code == Some(100) => {
                    if e.message.contains("redirect_uri") {
                        Renewal::Misconfigured {
                            message: format!("Meta refused the token request: {what}"),
                        }
                    } else {
                        Renewal::Rejected {
                            message: format!("Meta refused the token request: {what}"),
                        }
                    }
                }
                _ => Renewal::Transient {
                    message: format!("Meta could not renew the token now: {what}"),
                    retry_after: backoff(&resp),
                },
            }
        }
        Answer::Ok(resp) => match resp.json::<TokenAnswer>() {
            Some(t) if resp.status == 200 => Renewal::Renewed(NewTokens {
                access_token: Token::new(t.access_token),
                refresh_token: None,
                expires_at: t.expires_in.and_then(in_secs),
                scopes: None,
                refresh_expires_at: None,
            }),
            _ => Renewal::Transient {
                message: format!(
                    "Meta's token endpoint answered HTTP {} with an unreadable body",
                    resp.status
                ),
                retry_after: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64, sub: Option<i64>) -> GraphError {
        GraphError {
            message: "m".into(),
            code: Some(code),
            error_subcode: sub,
            is_transient: false,
        }
    }

    fn response(headers: &[(&'static str, &str)]) -> Response {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, v.parse().unwrap());
        }
        Response {
            status: 400,
            headers: map,
            body: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn throttled_at_the_limit_waits_for_metas_window() {
        // Code 4 with X-App-Usage at 100 % and no estimate: the usage backoff, not seconds.
        let full = response(&[(
            "x-app-usage",
            r#"{"call_count":100,"total_cputime":41,"total_time":57}"#,
        )]);
        assert_eq!(backoff(&full), Some(USAGE_BACKOFF));
        let v = err(4, None).verdict(Some(&full), &[]);
        assert!(
            matches!(v, Verdict::Transient { retry_after: Some(d), .. } if d == USAGE_BACKOFF),
            "{v:?}"
        );
        // Meta's estimate and Retry-After still come first.
        let buc = response(&[(
            "x-business-use-case-usage",
            r#"{"111":[{"type":"pages","call_count":100,"estimated_time_to_regain_access":7}]}"#,
        )]);
        assert_eq!(backoff(&buc), Some(Duration::from_secs(420)));
        let ra = response(&[
            ("retry-after", "30"),
            ("x-app-usage", r#"{"call_count":100}"#),
        ]);
        assert_eq!(backoff(&ra), Some(Duration::from_secs(30)));
        // Below the limit or without headers: the operator's own backoff.
        assert_eq!(
            backoff(&response(&[("x-app-usage", r#"{"call_count":40}"#)])),
            None
        );
        assert_eq!(backoff(&response(&[])), None);
    }

    #[test]
    fn announced_waits_are_clamped() {
        use crate::providers::MAX_PROVIDER_WAIT;
        for header in [
            (
                "x-business-use-case-usage",
                r#"{"1":[{"call_count":100,"estimated_time_to_regain_access":1e300}]}"#,
            ),
            (
                "x-ad-account-usage",
                r#"{"acc_id_util_pct":100,"reset_time_duration":99999999999999}"#,
            ),
            ("retry-after", "999999999999"),
        ] {
            assert_eq!(
                backoff(&response(&[header])),
                Some(MAX_PROVIDER_WAIT),
                "{header:?}"
            );
        }
        // Negative or nonsense estimates are no wait at all, never a panic.
        let negative = response(&[(
            "x-business-use-case-usage",
            r#"{"1":[{"call_count":100,"estimated_time_to_regain_access":-5}]}"#,
        )]);
        assert_eq!(backoff(&negative), Some(USAGE_BACKOFF));
    }

    #[test]
    fn codes_and_subcodes() {
        use Class::*;
        assert_eq!(err(190, Some(460)).class(), Dead(Reason::Revoked));
        assert_eq!(err(190, Some(463)).class(), Dead(Reason::Expired));
        assert_eq!(err(190, Some(458)).class(), Dead(Reason::Revoked));
        assert_eq!(err(190, Some(467)).class(), Dead(Reason::Revoked));
        assert_eq!(
            err(190, Some(459)).class(),
            Dead(Reason::AccountActionRequired)
        );
        assert_eq!(
            err(102, Some(464)).class(),
            Dead(Reason::AccountActionRequired)
        );
        assert_eq!(err(190, None).class(), Dead(Reason::Revoked));
        for c in [1, 2, 4, 17, 32, 341, 613, 80001] {
            assert_eq!(err(c, None).class(), Later, "code {c}");
        }
        assert_eq!(err(10, None).class(), Permission);
        assert_eq!(err(200, None).class(), Permission);
        assert_eq!(err(299, None).class(), Permission);
        assert_eq!(err(100, None).class(), Unknown);
        let mut t = err(190, Some(460));
        t.is_transient = true;
        assert_eq!(t.class(), Later);
        let mut secret = err(1, None);
        secret.message = "Error validating client secret.".into();
        assert_eq!(secret.class(), App);
    }
}
