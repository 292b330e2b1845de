//! When a connection is due for a check, and when the next one will be. Pure functions of the
//! object, what the caches know of its Secret and provider, and `now`.

use std::time::Duration;

use rand::Rng;

use crate::api::{
    CHECK_REQUESTED_ANNOTATION, ChannelConnection, ConditionType, Reason, parse_duration,
};

/// The shortest check interval, also enforced here for objects the schema did not validate.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Share of the interval used to spread checks.
const JITTER: f64 = 0.1;

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

pub fn due(conn: &ChannelConnection, observed: &Observed, now: jiff::Timestamp) -> Due {
    let status = conn.status.clone().unwrap_or_default();
    let generation_changed = status.observed_generation != conn.metadata.generation;
    if conn.spec.suspend {
        let shown = status
            .condition(ConditionType::Ready)
            .is_some_and(|c| c.reason == Reason::Suspended.as_str());
        return if shown && !generation_changed {
            Due::Idle
        } else {
            Due::Now("suspended")
        };
    }
    if generation_changed {
        return Due::Now("spec changed");
    }
    if let Some(asked) = check_request(conn)
        && status.last_handled_check_request.as_deref() != Some(asked)
    {
        return Due::Now("check requested");
    }
    if status.observed_secret_version != observed.secret_version {
        return Due::Now("secret changed");
    }
    if status.observed_provider_generation != observed.provider_generation {
        return Due::Now("provider changed");
    }
    match status.next_check_time {
        Some(next) if next.0 > now => Due::Later(Duration::from_secs_f64(
            next.0.duration_since(now).as_secs_f64().max(0.0),
        )),
        _ => Due::Now("scheduled"),
    }
}

/// The annotation value asking for a check, if any.
pub fn check_request(conn: &ChannelConnection) -> Option<&str> {
    conn.metadata
        .annotations
        .as_ref()?
        .get(CHECK_REQUESTED_ANNOTATION)
        .map(String::as_str)
}

/// `spec.checkInterval`, never below [`MIN_INTERVAL`].
pub fn interval(conn: &ChannelConnection) -> Duration {
    parse_duration(&conn.spec.check_interval)
        .unwrap_or(Duration::from_secs(900))
        .max(MIN_INTERVAL)
}

/// Next regular check: the interval shortened by up to 10 % so a fleet created together spreads out.
pub fn next_regular(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(1.0 - rng.random_range(0.0..JITTER))
}

/// Next try after `failures` transient failures in a row: exponential from `base`, capped at
/// the interval, jittered ±20 %, and never sooner than the provider's `Retry-After`.
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
        Some(ra) => jittered.max(ra),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
    fn regular_checks_spread_within_ten_percent() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let d = next_regular(Duration::from_secs(900), &mut rng);
            assert!(d > Duration::from_secs(810) && d <= Duration::from_secs(900));
        }
    }
}
