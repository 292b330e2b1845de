//! When a connection is due for a check, and when the next one will be. Pure functions of the
//! object, what the caches know of its Secret and provider, and `now`.

use std::time::Duration;

use rand::Rng;

use crate::api::{
    CHECK_REQUESTED_ANNOTATION, ChannelConnection, ConditionType, REAUTHORIZE_REQUESTED_ANNOTATION,
    REFRESH_REQUESTED_ANNOTATION, Reason,
};
use crate::providers::MAX_PROVIDER_WAIT;

/// Versions of a connection's inputs as the watch caches see them now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub secret_version: Option<String>,
    pub provider_generation: Option<i64>,
}

/// Whether to check now, and why (the why goes to logs).
#[derive(Clone, Debug, PartialEq)]
pub enum Due {
    Now(&'static str),
    Later(Duration),
    /// Suspended and already reported as such: wait for a change.
    Idle,
}

/// Whether `conn` is due. `min_gap` is the least time between two checks of one connection
/// that a trigger (a check request, a changed spec, Secret or provider) can cause: a trigger
/// inside the gap is served when the gap ends, never dropped, so nobody can make relink call
/// a provider in a loop by rewriting an object.
pub fn due(
    conn: &ChannelConnection,
    observed: &Observed,
    now: jiff::Timestamp,
    min_gap: Duration,
) -> Due {
    let none = crate::api::ChannelConnectionStatus::default();
    let status = conn.status.as_ref().unwrap_or(&none);
    let generation_changed = status.observed_generation != conn.metadata.generation;
    let shown = |reason: Reason| {
        status
            .condition(ConditionType::Ready)
            .is_some_and(|c| c.reason == reason.as_str())
    };
    if conn.spec.suspend {
        return if shown(Reason::Suspended) && !generation_changed {
            Due::Idle
        } else {
            Due::Now("suspended")
        };
    }
    if shown(Reason::InvalidSpec)
        && !generation_changed
        && status.observed_secret_version == observed.secret_version
    {
        // Reported for this generation: only an edit (or, for a token Secret lacking the
        // opt-in label, a change of that Secret) can change the answer.
        return Due::Idle;
    }
    let trigger = if generation_changed {
        Some("spec changed")
    } else if check_request(conn)
        .is_some_and(|asked| status.last_handled_check_request.as_deref() != Some(asked))
    {
        Some("check requested")
    } else if refresh_requested(conn) {
        Some("refresh requested")
    } else if reauthorize_request(conn).is_some_and(|asked| {
        status.last_handled_reauthorize_request.as_deref() != Some(asked)
            && status
                .pending_reauthorization
                .as_ref()
                .map(|p| p.value.as_str())
                != Some(asked)
    }) {
        Some("re-authorization requested")
    } else if status.observed_secret_version != observed.secret_version {
        Some("secret changed")
    } else if status.observed_provider_generation != observed.provider_generation {
        Some("provider changed")
    } else {
        None
    };
    if let Some(why) = trigger {
        let since_last = status
            .last_check_time
            .as_ref()
            .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or(Duration::ZERO));
        return match since_last {
            Some(since) if since < min_gap => Due::Later(min_gap - since),
            _ => Due::Now(why),
        };
    }
    match &status.next_check_time {
        Some(next) if next.0 > now => {
            Due::Later(Duration::try_from(next.0.duration_since(now)).unwrap_or(Duration::ZERO))
        }
        _ => Due::Now("scheduled"),
    }
}

/// The annotation value asking for a refresh now, if any.
pub fn refresh_request(conn: &ChannelConnection) -> Option<&str> {
    annotation(conn, REFRESH_REQUESTED_ANNOTATION)
}

/// Whether the refresh asked for by annotation has not been acted on yet.
pub fn refresh_requested(conn: &ChannelConnection) -> bool {
    let handled = conn
        .status
        .as_ref()
        .and_then(|s| s.last_handled_refresh_request.as_deref());
    refresh_request(conn).is_some_and(|asked| handled != Some(asked))
}

/// The annotation value asking for a re-authorization link, if any.
pub fn reauthorize_request(conn: &ChannelConnection) -> Option<&str> {
    annotation(conn, REAUTHORIZE_REQUESTED_ANNOTATION)
}

fn annotation<'a>(conn: &'a ChannelConnection, key: &str) -> Option<&'a str> {
    conn.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `now + wait`, saturating at the largest timestamp instead of overflowing: a wait is bounded
/// everywhere it is made, and this keeps one that is not from ever panicking.
pub fn after(now: jiff::Timestamp, wait: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|w| now.checked_add(w).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// The annotation value asking for a check, if any.
pub fn check_request(conn: &ChannelConnection) -> Option<&str> {
    annotation(conn, CHECK_REQUESTED_ANNOTATION)
}

/// Next regular check: exactly one interval later, so each connection is checked exactly once
/// per interval.
///
/// After a connection's first check the next one comes one full interval plus a random phase
/// later: a fleet created (or installed) at once is checked in one burst the first time, and
/// evenly from the second round on, each connection keeping its own phase, and no connection
/// is ever checked twice in one interval.
pub fn next_regular(interval: Duration, first_check: bool, rng: &mut impl Rng) -> Duration {
    if first_check {
        return interval.mul_f64(rng.random_range(1.0..2.0));
    }
    interval
}

/// Next try after `failures` transient failures in a row: exponential from `base`, capped at
/// the interval, jittered ±20 %, and never sooner than the provider's `Retry-After` (itself
/// clamped to [`MAX_PROVIDER_WAIT`]: a provider cannot park a connection for longer).
pub fn next_retry(
    base: Duration,
    interval: Duration,
    failures: i32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let exp = failures.clamp(1, 20) as u32 - 1;
    let backoff = base.saturating_mul(2u32.saturating_pow(exp)).min(interval);
    let jittered = backoff.mul_f64(rng.random_range(0.8..1.2));
    match retry_after {
        Some(ra) => jittered.max(ra.min(MAX_PROVIDER_WAIT)),
        None => jittered,
    }
}

/// Whether to refresh now: the token expires within `before`, and (for tokens that live
/// shorter than `before`) at least half of its life since the last refresh has passed, so a
/// one-hour token is renewed every half hour rather than on every check.
pub fn refresh_due(
    expires_at: Option<jiff::Timestamp>,
    last_refresh: Option<jiff::Timestamp>,
    before: Duration,
    now: jiff::Timestamp,
) -> bool {
    let Some(exp) = expires_at else { return false };
    let remaining = exp.as_second() - now.as_second();
    if remaining >= before.as_secs() as i64 {
        return false;
    }
    match last_refresh {
        Some(last) if last < exp => {
            now.as_second() - last.as_second() >= (exp.as_second() - last.as_second()) / 2
        }
        _ => true,
    }
}

/// For a refreshable token, the next check comes before it expires (at half its remaining
/// life, not sooner than 30 s), so the Secret never holds an expired token.
pub fn before_expiry(
    regular: Duration,
    expires_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Duration {
    let Some(exp) = expires_at else {
        return regular;
    };
    let half = (exp.as_second() - now.as_second()).max(0) as u64 / 2;
    regular.min(Duration::from_secs(half.max(30)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn short_lived_tokens_refresh_at_half_life_long_lived_within_before() {
        let t = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        let day = Duration::from_secs(86_400);
        // A 1h token just refreshed: not again until 30 minutes have passed.
        assert!(!refresh_due(Some(t(3600)), Some(t(0)), day, t(600)));
        assert!(refresh_due(Some(t(3600)), Some(t(0)), day, t(1800)));
        // A 60-day token: only inside the 24h window.
        assert!(!refresh_due(Some(t(60 * 86_400)), None, day, t(0)));
        assert!(refresh_due(
            Some(t(60 * 86_400)),
            None,
            day,
            t(59 * 86_400 + 1)
        ));
        assert!(!refresh_due(None, None, day, t(0)));
        assert_eq!(
            before_expiry(Duration::from_secs(900), Some(t(1200)), t(0)),
            Duration::from_secs(600)
        );
        assert_eq!(
            before_expiry(Duration::from_secs(900), Some(t(10)), t(0)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retry_grows_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let base = Duration::from_secs(5);
        let iv = Duration::from_secs(60);
        let d1 = next_retry(base, iv, 1, None, &mut rng);
        let d3 = next_retry(base, iv, 3, None, &mut rng);
        let d9 = next_retry(base, iv, 9, None, &mut rng);
        assert!(
            d1 >= Duration::from_secs(4) && d1 <= Duration::from_secs(6),
            "{d1:?}"
        );
        assert!(
            d3 >= Duration::from_secs(16) && d3 <= Duration::from_secs(24),
            "{d3:?}"
        );
        assert!(d9 <= Duration::from_secs(72), "{d9:?}");
    }

    #[test]
    fn a_huge_retry_after_is_clamped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let d = next_retry(
            Duration::from_secs(1),
            Duration::from_secs(60),
            1,
            Some(Duration::from_secs(999_999_999_999)),
            &mut rng,
        );
        assert_eq!(d, MAX_PROVIDER_WAIT);
        let now = jiff::Timestamp::now();
        assert_eq!(after(now, Duration::MAX), jiff::Timestamp::MAX);
        assert_eq!(
            after(now, Duration::from_secs(60)).as_second(),
            now.as_second() + 60
        );
    }

    #[test]
    fn triggers_inside_the_minimum_gap_wait_for_it() {
        use crate::api::ChannelConnectionStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let now: jiff::Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        let mut conn: ChannelConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection",
            "metadata": {"name": "c", "namespace": "n", "generation": 1,
                         "annotations": {CHECK_REQUESTED_ANNOTATION: "2"}},
            "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}
        }))
        .unwrap();
        conn.status = Some(ChannelConnectionStatus {
            observed_generation: Some(1),
            last_handled_check_request: Some("1".into()),
            last_check_time: Some(Time(now - jiff::SignedDuration::from_secs(4))),
            next_check_time: Some(Time(now + jiff::SignedDuration::from_secs(600))),
            ..Default::default()
        });
        let gap = Duration::from_secs(10);
        let seen = Observed::default();
        assert_eq!(
            due(&conn, &seen, now, gap),
            Due::Later(Duration::from_secs(6))
        );
        let later = now + jiff::SignedDuration::from_secs(6);
        assert_eq!(due(&conn, &seen, later, gap), Due::Now("check requested"));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let d = next_retry(
            Duration::from_secs(1),
            Duration::from_secs(60),
            1,
            Some(Duration::from_secs(30)),
            &mut rng,
        );
        assert!(d >= Duration::from_secs(30));
    }

    #[test]
    fn a_fleet_checked_together_spreads_over_the_whole_interval() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = next_regular(Duration::from_secs(1000), true, &mut rng);
            // Never a second check inside the first interval.
            assert!(
                d >= Duration::from_secs(1000) && d < Duration::from_secs(2000),
                "{d:?}"
            );
            buckets[((d.as_secs() - 1000) / 100).min(9) as usize] += 1;
        }
        // Roughly flat: every tenth of the next interval gets a share.
        assert!(buckets.iter().all(|&b| b > 800 && b < 1300), "{buckets:?}");
    }

    #[test]
    fn later_checks_keep_their_phase_exactly_one_interval_apart() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(
            next_regular(Duration::from_secs(900), false, &mut rng),
            Duration::from_secs(900)
        );
    }
}
