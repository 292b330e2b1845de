//! What the owners should be told after a check: a pure function of the new status, the spec,
//! what was last sent (`status.lastNotification`) and the time, so every rule is unit-tested.

use std::time::Duration;

use crate::api::{
    ChannelConnectionSpec, ChannelConnectionStatus, ConditionType, NotificationRecord, Reason,
};

/// Reason recorded for a recovery notice.
pub const RECOVERED: Reason = Reason::Valid;
/// Reason recorded for an expiry warning.
pub const EXPIRING: Reason = Reason::Expiring;

/// The timing flags.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Repeat a problem notice this often while it lasts; zero turns reminders off.
    pub reminder_interval: Duration,
    /// Warn this long before a token that will not be renewed expires.
    pub expiry_warning: Duration,
}

/// Where the connection stands, as far as its owners are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing to tell: transient trouble, suspended, the app's misconfiguration, no verdict yet.
    Quiet,
    /// A person must act.
    Broken(Reason),
    /// The token works; `expiring` when it will stop working soon and will not be renewed.
    Healthy { expiring: bool },
}

/// One piece of news for the owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum News {
    /// The connection just broke (or broke differently).
    Problem(Reason),
    /// It is still broken, `reminder_interval` after the last notice.
    Reminder(Reason),
    /// The token will expire soon and relink cannot renew it.
    ExpiryWarning,
    /// It works again after a notified problem.
    Recovery,
}

impl News {
    /// The reason written in `lastNotification.reason`.
    pub fn recorded_reason(self) -> Reason {
        match self {
            Self::Problem(r) | Self::Reminder(r) => r,
            Self::ExpiryWarning => EXPIRING,
            Self::Recovery => RECOVERED,
        }
    }
}

/// Classifies the status about to be written.
pub fn state(
    new: &ChannelConnectionStatus,
    spec: &ChannelConnectionSpec,
    now: jiff::Timestamp,
    policy: &Policy,
) -> State {
    // A check that could not reach a verdict keeps the last one: nothing new to tell.
    if new
        .condition(ConditionType::Reconciling)
        .is_some_and(|c| c.status == "True")
    {
        return State::Quiet;
    }
    let Some(ready) = new.condition(ConditionType::Ready) else {
        return State::Quiet;
    };
    let Some(reason) = Reason::parse(&ready.reason) else {
        return State::Quiet;
    };
    match ready.status.as_str() {
        "True" => State::Healthy {
            expiring: expiring(new, spec, reason, now, policy),
        },
        "False" => {
            let stalled = new
                .condition(ConditionType::Stalled)
                .is_some_and(|c| c.status == "True");
            if stalled && reason.tells_owners() {
                State::Broken(reason)
            } else {
                State::Quiet
            }
        }
        _ => State::Quiet,
    }
}

/// A working token that will stop working and will not be renewed: the controller says
/// `Expiring` (it was not refreshed within `spec.refresh.before`), or refresh is disabled and
/// it expires within the warning window. (The status does not say whether a refresh token
/// exists, so a refreshable token is only warned about once the controller gives up on it.)
fn expiring(
    new: &ChannelConnectionStatus,
    spec: &ChannelConnectionSpec,
    ready_reason: Reason,
    now: jiff::Timestamp,
    policy: &Policy,
) -> bool {
    if ready_reason == Reason::Expiring {
        return true;
    }
    let Some(at) = new.expires_at.as_ref().map(|t| t.0) else {
        return false;
    };
    !spec.refresh.enabled && within(now, at, policy.expiry_warning)
}

/// True when `at` is no more than `window` after `now` (or already past).
fn within(now: jiff::Timestamp, at: jiff::Timestamp, window: Duration) -> bool {
    at.as_second().saturating_sub(now.as_second()) <= window.as_secs() as i64
}

fn last_reason(last: Option<&NotificationRecord>) -> Option<Reason> {
    last.and_then(|l| Reason::parse(&l.reason))
}

/// Fresh news to send to every destination, if any. `last` is `status.lastNotification`.
pub fn decide(
    state: State,
    new: &ChannelConnectionStatus,
    spec: &ChannelConnectionSpec,
    last: Option<&NotificationRecord>,
    now: jiff::Timestamp,
    policy: &Policy,
) -> Option<News> {
    let told = last_reason(last);
    match state {
        State::Quiet => None,
        State::Broken(reason) => {
            if told != Some(reason) {
                return Some(News::Problem(reason));
            }
            let since = last.map(|l| l.time.0)?;
            let reminders = !policy.reminder_interval.is_zero();
            let elapsed = now.as_second().saturating_sub(since.as_second());
            (reminders && elapsed >= policy.reminder_interval.as_secs() as i64)
                .then_some(News::Reminder(reason))
        }
        State::Healthy { expiring } => {
            if told.is_some_and(Reason::tells_owners) {
                return Some(News::Recovery);
            }
            (expiring && !warned_for_this_expiry(new, spec, last, policy))
                .then_some(News::ExpiryWarning)
        }
    }
}

/// True when the last notice was an expiry warning about the token that expires at
/// `status.expiresAt`: sent after that token entered its warning window. A renewed token
/// expires later, so its window opens after the old warning and it gets its own.
fn warned_for_this_expiry(
    new: &ChannelConnectionStatus,
    spec: &ChannelConnectionSpec,
    last: Option<&NotificationRecord>,
    policy: &Policy,
) -> bool {
    let Some(last) = last.filter(|l| l.reason == EXPIRING.as_str()) else {
        return false;
    };
    let Some(at) = new.expires_at.as_ref().map(|t| t.0) else {
        // No expiry known: one warning until something else is told.
        return true;
    };
    let before = spec.timings().map(|t| t.refresh_before).unwrap_or_default();
    let lead = policy.expiry_warning.max(before).as_secs() as i64;
    last.time.0.as_second() >= at.as_second().saturating_sub(lead)
}

/// The destinations that missed the news recorded in `last` while it is still the news:
/// they are tried again on later checks (one attempt per check) until the reminder interval
/// (or a day, without reminders) has passed.
pub fn pending<'a, C: AsRef<str>>(
    state: State,
    last: Option<&NotificationRecord>,
    destinations: &'a [C],
    now: jiff::Timestamp,
    policy: &Policy,
) -> Option<(News, Vec<&'a C>)> {
    let last = last?;
    let told = Reason::parse(&last.reason)?;
    let news = match state {
        State::Broken(r) if r == told => News::Problem(r),
        State::Healthy { .. } if told == RECOVERED => News::Recovery,
        State::Healthy { expiring: true } if told == EXPIRING => News::ExpiryWarning,
        _ => return None,
    };
    let window = if policy.reminder_interval.is_zero() {
        Duration::from_secs(24 * 3600)
    } else {
        policy.reminder_interval
    };
    let elapsed = now.as_second().saturating_sub(last.time.0.as_second());
    if elapsed >= window.as_secs() as i64 {
        return None;
    }
    let reached = last.channels.as_deref()?;
    let missing: Vec<&C> = destinations
        .iter()
        .filter(|d| !reached.split(',').any(|r| r.trim() == d.as_ref()))
        .collect();
    (!missing.is_empty()).then_some((news, missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::set_condition;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const HOUR: u64 = 3600;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            reminder_interval: Duration::from_secs(24 * HOUR),
            expiry_warning: Duration::from_secs(168 * HOUR),
        }
    }

    fn spec() -> ChannelConnectionSpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "app"},
            "secretRef": {"name": "tok"},
            "owners": ["owner@example.com"],
        }))
        .unwrap()
    }

    /// A status as the controller writes it: Ready/Stalled/Reconciling.
    fn status(
        ready: Option<bool>,
        reason: Reason,
        stalled: bool,
        reconciling: bool,
    ) -> ChannelConnectionStatus {
        let now = ts("2026-01-01T00:00:00Z");
        let mut s = ChannelConnectionStatus::default();
        set_condition(
            &mut s.conditions,
            ConditionType::Ready,
            ready,
            reason,
            "m",
            Some(1),
            now,
        );
        set_condition(
            &mut s.conditions,
            ConditionType::Stalled,
            Some(stalled),
            reason,
            "m",
            Some(1),
            now,
        );
        let rec_reason = if reconciling {
            Reason::ProviderUnavailable
        } else {
            reason
        };
        set_condition(
            &mut s.conditions,
            ConditionType::Reconciling,
            Some(reconciling),
            rec_reason,
            "m",
            Some(1),
            now,
        );
        s
    }

    fn broken(reason: Reason) -> ChannelConnectionStatus {
        status(Some(false), reason, true, false)
    }

    fn healthy() -> ChannelConnectionStatus {
        status(Some(true), Reason::Valid, false, false)
    }

    fn record(reason: Reason, at: &str) -> NotificationRecord {
        NotificationRecord {
            reason: reason.as_str().to_owned(),
            time: Time(ts(at)),
            channels: Some("email,webhook".into()),
        }
    }

    /// Runs the classification and the decision like `Notifier::on_check` does.
    fn news(
        new: &ChannelConnectionStatus,
        spec: &ChannelConnectionSpec,
        last: Option<&NotificationRecord>,
        now: &str,
    ) -> Option<News> {
        let now = ts(now);
        let st = state(new, spec, now, &policy());
        decide(st, new, spec, last, now, &policy())
    }

    #[test]
    fn first_failure_is_told() {
        let s = broken(Reason::Revoked);
        assert_eq!(
            news(&s, &spec(), None, "2026-01-01T00:00:00Z"),
            Some(News::Problem(Reason::Revoked))
        );
    }

    #[test]
    fn every_actionable_reason_is_told() {
        for r in Reason::ALL.into_iter().filter(|r| r.tells_owners()) {
            assert_eq!(
                news(&broken(r), &spec(), None, "2026-01-01T00:00:00Z"),
                Some(News::Problem(r)),
                "{r}"
            );
        }
    }

    #[test]
    fn same_failure_next_check_is_not_told_again() {
        let s = broken(Reason::Revoked);
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        assert_eq!(news(&s, &spec(), Some(&last), "2026-01-01T00:15:00Z"), None);
        assert_eq!(news(&s, &spec(), Some(&last), "2026-01-01T23:59:59Z"), None);
    }

    #[test]
    fn a_different_failure_is_told() {
        let s = broken(Reason::ScopesMissing);
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(&s, &spec(), Some(&last), "2026-01-01T00:15:00Z"),
            Some(News::Problem(Reason::ScopesMissing))
        );
    }

    #[test]
    fn reminder_after_the_interval() {
        let s = broken(Reason::Revoked);
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(&s, &spec(), Some(&last), "2026-01-02T00:00:00Z"),
            Some(News::Reminder(Reason::Revoked))
        );
        // The reminder is recorded with its own time: the next one is a day later again.
        let last = record(Reason::Revoked, "2026-01-02T00:00:00Z");
        assert_eq!(news(&s, &spec(), Some(&last), "2026-01-02T12:00:00Z"), None);
    }

    #[test]
    fn zero_interval_turns_reminders_off() {
        let s = broken(Reason::Revoked);
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        let p = Policy {
            reminder_interval: Duration::ZERO,
            ..policy()
        };
        let now = ts("2026-03-01T00:00:00Z");
        let st = state(&s, &spec(), now, &p);
        assert_eq!(decide(st, &s, &spec(), Some(&last), now, &p), None);
    }

    #[test]
    fn transient_trouble_is_never_told() {
        // Provider down before any verdict, and provider down on a healthy connection.
        let mut first = ChannelConnectionStatus::default();
        let now = ts("2026-01-01T00:00:00Z");
        set_condition(
            &mut first.conditions,
            ConditionType::Ready,
            None,
            Reason::ProviderUnavailable,
            "m",
            Some(1),
            now,
        );
        set_condition(
            &mut first.conditions,
            ConditionType::Reconciling,
            Some(true),
            Reason::ProviderUnavailable,
            "m",
            Some(1),
            now,
        );
        assert_eq!(news(&first, &spec(), None, "2026-01-01T00:00:00Z"), None);
        let ok_then_down = status(Some(true), Reason::Valid, false, true);
        assert_eq!(
            news(&ok_then_down, &spec(), None, "2026-01-01T00:00:00Z"),
            None
        );
        // Broken, then the provider goes down: no reminder while there is no fresh verdict.
        let broken_then_down = status(Some(false), Reason::Revoked, true, true);
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(
                &broken_then_down,
                &spec(),
                Some(&last),
                "2026-01-05T00:00:00Z"
            ),
            None
        );
    }

    #[test]
    fn provider_misconfiguration_and_suspension_are_not_told() {
        for r in [
            Reason::ProviderNotReady,
            Reason::ProviderNotFound,
            Reason::SecretKeyMissing,
        ] {
            let s = status(Some(false), r, true, false);
            assert_eq!(news(&s, &spec(), None, "2026-01-01T00:00:00Z"), None, "{r}");
        }
        let s = status(None, Reason::Suspended, false, false);
        assert_eq!(news(&s, &spec(), None, "2026-01-01T00:00:00Z"), None);
    }

    #[test]
    fn recovery_after_a_notified_problem() {
        let last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(&healthy(), &spec(), Some(&last), "2026-01-01T01:00:00Z"),
            Some(News::Recovery)
        );
        // Recorded as Valid: told once.
        let last = record(RECOVERED, "2026-01-01T01:00:00Z");
        assert_eq!(
            news(&healthy(), &spec(), Some(&last), "2026-01-01T01:15:00Z"),
            None
        );
    }

    #[test]
    fn recovery_without_a_prior_notice_is_not_told() {
        assert_eq!(
            news(&healthy(), &spec(), None, "2026-01-01T01:00:00Z"),
            None
        );
        let last = record(EXPIRING, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(&healthy(), &spec(), Some(&last), "2026-01-01T01:00:00Z"),
            None
        );
    }

    #[test]
    fn expiring_token_is_warned_once() {
        let mut s = status(Some(true), Reason::Expiring, false, false);
        s.expires_at = Some(Time(ts("2026-01-01T20:00:00Z")));
        assert_eq!(
            news(&s, &spec(), None, "2026-01-01T00:00:00Z"),
            Some(News::ExpiryWarning)
        );
        let last = record(EXPIRING, "2026-01-01T00:00:00Z");
        assert_eq!(news(&s, &spec(), Some(&last), "2026-01-01T00:15:00Z"), None);
        assert_eq!(news(&s, &spec(), Some(&last), "2026-01-01T19:00:00Z"), None);

        // Renewed by someone, then expiring again weeks later: a new warning.
        s.expires_at = Some(Time(ts("2026-02-01T20:00:00Z")));
        assert_eq!(
            news(&s, &spec(), Some(&last), "2026-02-01T00:00:00Z"),
            Some(News::ExpiryWarning)
        );
    }

    #[test]
    fn expiry_window_applies_when_refresh_is_off() {
        let mut sp = spec();
        sp.refresh.enabled = false;
        let mut s = healthy();
        s.expires_at = Some(Time(ts("2026-01-10T00:00:00Z")));
        // Nine days out: outside the 7-day window.
        assert_eq!(news(&s, &sp, None, "2026-01-01T00:00:00Z"), None);
        // Six days out: inside.
        assert_eq!(
            news(&s, &sp, None, "2026-01-04T00:00:00Z"),
            Some(News::ExpiryWarning)
        );
        // With refresh on, relink renews it: no warning for a merely valid token.
        assert_eq!(news(&s, &spec(), None, "2026-01-04T00:00:00Z"), None);
    }

    #[test]
    fn problem_then_expiring_sends_recovery_first() {
        let mut s = status(Some(true), Reason::Expiring, false, false);
        s.expires_at = Some(Time(ts("2026-01-01T20:00:00Z")));
        let last = record(Reason::Expired, "2025-12-31T00:00:00Z");
        assert_eq!(
            news(&s, &spec(), Some(&last), "2026-01-01T00:00:00Z"),
            Some(News::Recovery)
        );
        let last = record(RECOVERED, "2026-01-01T00:00:00Z");
        assert_eq!(
            news(&s, &spec(), Some(&last), "2026-01-01T00:15:00Z"),
            Some(News::ExpiryWarning)
        );
    }

    #[test]
    fn destinations_that_missed_the_news_are_retried_within_the_interval() {
        let dest = ["email", "webhook"];
        let st = State::Broken(Reason::Revoked);
        let mut last = record(Reason::Revoked, "2026-01-01T00:00:00Z");
        last.channels = Some("email".into());
        let now = ts("2026-01-01T00:15:00Z");
        let (n, missing) = pending(st, Some(&last), &dest, now, &policy()).unwrap();
        assert_eq!(n, News::Problem(Reason::Revoked));
        assert_eq!(missing, [&"webhook"]);
        // Everything reached: nothing pending.
        last.channels = Some("email,webhook".into());
        assert!(pending(st, Some(&last), &dest, now, &policy()).is_none());
        // Past the interval the reminder covers it.
        last.channels = Some("email".into());
        let later = ts("2026-01-02T00:00:00Z");
        assert!(pending(st, Some(&last), &dest, later, &policy()).is_none());
        // The news changed: not pending, `decide` tells the new news to everyone.
        let healed = State::Healthy { expiring: false };
        assert!(pending(healed, Some(&last), &dest, now, &policy()).is_none());
        let mut rec = record(RECOVERED, "2026-01-01T00:00:00Z");
        rec.channels = Some("webhook".into());
        let (n, missing) = pending(healed, Some(&rec), &dest, now, &policy()).unwrap();
        assert_eq!((n, missing), (News::Recovery, vec![&"email"]));
    }
}
