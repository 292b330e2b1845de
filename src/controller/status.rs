//! Turning what a check found into the connection's new status: a pure function of the old
//! status, the outcome and `now`, so every verdict → condition rule is unit-tested.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ChannelConnectionSpec, ChannelConnectionStatus, ConditionType, PendingReauthorization, Reason,
    set_condition,
};
use crate::providers::{Grant, Verdict};

/// What gathering the inputs and asking the provider came to.
#[derive(Clone, Debug)]
pub enum Outcome {
    Suspended,
    SecretNotFound {
        secret: String,
    },
    SecretKeyMissing {
        secret: String,
        key: String,
    },
    ProviderNotFound {
        kind: &'static str,
        name: String,
    },
    ProviderNotReady {
        message: String,
    },
    /// A ClusterChannelProvider not shared with this namespace or these scopes.
    ProviderNotAllowed {
        message: String,
    },
    /// A spec field out of range or malformed: nothing was called.
    InvalidSpec {
        message: String,
    },
    Checked {
        verdict: Verdict,
        /// Expiry recorded next to the token in the Secret, if any.
        secret_expires_at: Option<jiff::Timestamp>,
        /// relink can renew this token itself; then a near expiry is not news.
        refreshable: bool,
    },
}

/// Facts about this check that are not part of the outcome.
pub struct CheckContext<'a> {
    pub spec: &'a ChannelConnectionSpec,
    pub generation: Option<i64>,
    pub now: jiff::Timestamp,
    /// Value of the check-request annotation acted on.
    pub check_request: Option<String>,
    /// Value of the refresh-request annotation acted on.
    pub refresh_request: Option<String>,
    pub observed_secret_version: Option<String>,
    pub observed_provider_generation: Option<i64>,
    /// `spec.refresh.before`, typed (`Expiring` is reported inside it).
    pub refresh_before: Duration,
    /// When the stored refresh token stops working, if the provider said so.
    pub refresh_expires_at: Option<jiff::Timestamp>,
    /// `spec.refresh.maxAge` after the last consent (the last re-authorization, else the
    /// connection's creation): a person should log in again by then.
    pub consent_deadline: Option<jiff::Timestamp>,
}

/// A change worth an Event: one per transition of `Ready` (or into provider trouble).
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
}

/// The new status (without `nextCheckTime`, which the schedule sets) and the Event to publish.
pub fn next_status(
    old: &ChannelConnectionStatus,
    outcome: &Outcome,
    cx: &CheckContext<'_>,
) -> (ChannelConnectionStatus, Option<Transition>) {
    let mut s = old.clone();
    s.observed_generation = cx.generation;
    s.last_handled_check_request = cx.check_request.clone().or(s.last_handled_check_request);
    s.last_handled_refresh_request = cx
        .refresh_request
        .clone()
        .or(s.last_handled_refresh_request);
    s.observed_secret_version = cx.observed_secret_version.clone();
    s.observed_provider_generation = cx.observed_provider_generation;
    let now = cx.now;
    let gen_ = cx.generation;
    let mut set = |s: &mut ChannelConnectionStatus,
                   t: ConditionType,
                   ok: Option<bool>,
                   r: Reason,
                   m: &str| {
        set_condition(&mut s.conditions, t, ok, r, m, gen_, now);
    };

    match outcome {
        Outcome::Suspended => {
            let m = "checks are suspended (spec.suspend: true); the last verdict is kept";
            set(&mut s, ConditionType::Ready, None, Reason::Suspended, m);
            set(
                &mut s,
                ConditionType::Stalled,
                Some(false),
                Reason::Suspended,
                m,
            );
            set(
                &mut s,
                ConditionType::Reconciling,
                Some(false),
                Reason::Suspended,
                m,
            );
            s.reauth_url = None;
        }
        Outcome::Checked {
            verdict: Verdict::Transient { message, .. },
            ..
        } => {
            s.last_check_time = Some(Time(now));
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            let m = format!(
                "provider unavailable ({} in a row), keeping the last verdict and retrying: {message}",
                s.consecutive_failures
            );
            set(
                &mut s,
                ConditionType::Reconciling,
                Some(true),
                Reason::ProviderUnavailable,
                &m,
            );
            if s.condition(ConditionType::Ready).is_none() {
                set(
                    &mut s,
                    ConditionType::Ready,
                    None,
                    Reason::ProviderUnavailable,
                    &m,
                );
            }
        }
        _ => {
            s.last_check_time = Some(Time(now));
            s.consecutive_failures = 0;
            apply_verdict(&mut s, outcome, cx, &mut set);
        }
    }
    let transition = transition(old, &s);
    (s, transition)
}

type Setter<'a> =
    dyn FnMut(&mut ChannelConnectionStatus, ConditionType, Option<bool>, Reason, &str) + 'a;

/// A definitive problem: whether the token and the scopes hold (`None`: not known), the
/// reason and the message.
type Problem = (Option<bool>, Option<bool>, Reason, String);

/// Definitive outcomes: every condition gets a fresh verdict.
fn apply_verdict(
    s: &mut ChannelConnectionStatus,
    outcome: &Outcome,
    cx: &CheckContext<'_>,
    set: &mut Setter<'_>,
) {
    use ConditionType::*;
    if let Outcome::Checked { refreshable, .. } = outcome {
        s.refreshable = Some(*refreshable);
    }
    let (token_ok, scopes_ok, reason, message) = match outcome {
        Outcome::Checked {
            verdict: Verdict::Valid(grant),
            secret_expires_at,
            refreshable,
        } => return apply_valid(s, grant, *secret_expires_at, *refreshable, cx, set),
        Outcome::Checked {
            verdict,
            secret_expires_at,
            ..
        } => verdict_problem(verdict, *secret_expires_at, cx.now),
        _ => {
            let (reason, message) = unchecked_problem(outcome);
            (None, None, reason, message)
        }
    };
    // The message once where a person reads it (Ready, and Stalled for GitOps tools); the
    // halves of the verdict repeat it only when they are the half at fault.
    let (token_msg, scopes_msg) = verdict_halves(token_ok, scopes_ok, &message);
    set(s, Ready, Some(false), reason, &message);
    set(s, TokenValid, token_ok, reason, token_msg);
    let scopes_reason = if scopes_ok == Some(false) {
        Reason::ScopesMissing
    } else {
        reason
    };
    set(s, ScopesGranted, scopes_ok, scopes_reason, scopes_msg);
    set(s, Stalled, Some(true), reason, &message);
    set(s, Reconciling, Some(false), reason, "check finished");
    if reason == Reason::ScopesMissing {
        s.missing_scopes = cx.spec.required_scopes.clone();
    }
}

/// Reason and message of an outcome found before the provider was asked.
fn unchecked_problem(outcome: &Outcome) -> (Reason, String) {
    match outcome {
        Outcome::SecretNotFound { secret } => (
            Reason::SecretNotFound,
            format!(
                "Secret {secret:?} (spec.secretRef.name) does not exist in this namespace: create it with the channel's token"
            ),
        ),
        Outcome::SecretKeyMissing { secret, key } => (
            Reason::SecretKeyMissing,
            format!(
                "Secret {secret:?} has no usable key {key:?} (spec.secretRef.accessTokenKey): add the token under that key or fix the key name"
            ),
        ),
        Outcome::ProviderNotFound { kind, name } => (
            Reason::ProviderNotFound,
            format!(
                "{kind} {name:?} (spec.providerRef) does not exist: create it or fix spec.providerRef"
            ),
        ),
        Outcome::ProviderNotReady { message } => (Reason::ProviderNotReady, message.clone()),
        Outcome::ProviderNotAllowed { message } => (Reason::ProviderNotAllowed, message.clone()),
        Outcome::InvalidSpec { message } => (
            Reason::InvalidSpec,
            format!("{message}; fix the ChannelConnection, nothing is checked until then"),
        ),
        Outcome::Checked { .. } => unreachable!("handled by apply_verdict"),
        Outcome::Suspended => unreachable!("handled by next_status"),
    }
}

/// The problem a provider's definitive "no" names (an expired token it calls revoked is
/// reported as expired).
fn verdict_problem(
    verdict: &Verdict,
    secret_expires_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Problem {
    match verdict {
        Verdict::Invalid {
            reason: Reason::ScopesMissing,
            message,
        } => (
            Some(true),
            Some(false),
            Reason::ScopesMissing,
            message.clone(),
        ),
        Verdict::Invalid { reason, message } => {
            let reason = match (reason, secret_expires_at) {
                (Reason::Revoked, Some(at)) if at <= now => Reason::Expired,
                _ => *reason,
            };
            let advice = if reason == Reason::AccountActionRequired {
                "the account's owner must act at the provider, then request a check"
            } else {
                "re-authorize the channel"
            };
            (Some(false), None, reason, format!("{message}; {advice}"))
        }
        Verdict::Misconfigured { message } => {
            (None, None, Reason::ProviderNotReady, message.clone())
        }
        Verdict::Valid(_) => unreachable!("handled by apply_valid"),
        Verdict::Transient { .. } => unreachable!("transient outcomes keep the last verdict"),
    }
}

/// Whether the token carries `spec.requiredScopes`: the check's own answer, else what the last
/// token response granted (kept in status); records granted and missing scopes in `s`.
fn scopes_verdict(
    s: &mut ChannelConnectionStatus,
    grant: &Grant,
    spec: &ChannelConnectionSpec,
) -> (Option<bool>, Reason, String) {
    // The check's own answer, else what the last token response (login or refresh) granted,
    // kept in status; providers that report neither leave the scopes unverified.
    let granted: Option<Vec<String>> = grant
        .scopes
        .clone()
        .or_else(|| (!s.granted_scopes.is_empty()).then(|| s.granted_scopes.clone()));
    let missing: Vec<String> = match &granted {
        Some(granted) => {
            let have: BTreeSet<&str> = granted.iter().map(String::as_str).collect();
            s.granted_scopes = granted.clone();
            spec.required_scopes
                .iter()
                .filter(|r| !have.contains(r.as_str()))
                .cloned()
                .collect()
        }
        None => Vec::new(),
    };
    s.missing_scopes = missing.clone();

    if granted.is_none() && !spec.required_scopes.is_empty() {
        (
            None,
            Reason::ScopesUnverifiable,
            format!(
                "the provider does not say which scopes the token carries; spec.requiredScopes ({}) could not be verified",
                spec.required_scopes.join(", ")
            ),
        )
    } else if missing.is_empty() {
        let m = if granted.is_some() {
            "every required scope is granted"
        } else {
            "no scopes are required (spec.requiredScopes is empty)"
        };
        (Some(true), Reason::Valid, m.to_owned())
    } else {
        (
            Some(false),
            Reason::ScopesMissing,
            format!(
                "the token lacks required scopes: {}; re-authorize and grant them",
                missing.join(", ")
            ),
        )
    }
}

/// Messages of `TokenValid` and `ScopesGranted` after a definitive problem: the problem's
/// message on the half at fault, a short word on the other.
fn verdict_halves(token_ok: Option<bool>, scopes_ok: Option<bool>, message: &str) -> (&str, &str) {
    const UNKNOWN: &str = "not known: see the Ready condition";
    let token = match token_ok {
        Some(true) => "the provider accepts the token",
        Some(false) => message,
        None => UNKNOWN,
    };
    let scopes = match scopes_ok {
        Some(false) => message,
        _ => UNKNOWN,
    };
    (token, scopes)
}

fn apply_valid(
    s: &mut ChannelConnectionStatus,
    grant: &Grant,
    secret_expires_at: Option<jiff::Timestamp>,
    refreshable: bool,
    cx: &CheckContext<'_>,
    set: &mut Setter<'_>,
) {
    use ConditionType::*;
    let now = cx.now;
    s.last_valid_time = Some(Time(now));
    s.account = grant.account.clone().or_else(|| s.account.take());
    s.expires_at = grant.expires_at.or(secret_expires_at).map(Time);
    s.data_access_expires_at = grant.data_access_expires_at.map(Time);
    s.refresh_token_expires_at = cx.refresh_expires_at.map(Time);

    let (scopes_ok, scopes_reason, scopes_msg) = scopes_verdict(s, grant, cx.spec);
    // Only what this answer names: an account kept from before (or pinned by a login) is not
    // evidence that this token reaches another one.
    let mismatch = account_mismatch(cx.spec, grant);
    let (token_ok, token_reason, token_msg) = match &mismatch {
        Some(m) => (false, Reason::AccountMismatch, m.clone()),
        None => (
            true,
            Reason::Valid,
            "the provider accepts the token".to_owned(),
        ),
    };
    set(s, TokenValid, Some(token_ok), token_reason, &token_msg);
    set(s, ScopesGranted, scopes_ok, scopes_reason, &scopes_msg);

    let blocked = if !token_ok {
        Some((token_reason, token_msg))
    } else if scopes_ok == Some(false) {
        Some((scopes_reason, scopes_msg.clone()))
    } else {
        cx.consent_deadline.filter(|d| *d <= now).map(|due| {
            (
                Reason::ReauthorizationRequired,
                format!(
                    "the token works, but the last consent is older than spec.refresh.maxAge (due {due}); log in again through the re-authorization link"
                ),
            )
        })
    };
    if let Some((reason, msg)) = blocked {
        set(s, Ready, Some(false), reason, &msg);
        set(s, Stalled, Some(true), reason, &msg);
    } else {
        let (reason, msg) = match ending_soon(s, refreshable, cx) {
            Some((what, at)) => (
                Reason::Expiring,
                format!("the token works but {what} at {at}; re-authorize before then"),
            ),
            None if scopes_ok.is_none() => (
                Reason::Valid,
                format!("the token works and reaches the account; {scopes_msg}"),
            ),
            None => (
                Reason::Valid,
                "the token works, reaches the account and has every required scope".to_owned(),
            ),
        };
        set(s, Ready, Some(true), reason, &msg);
        set(s, Stalled, Some(false), Reason::Valid, "nothing to do");
    }
    set(s, Reconciling, Some(false), Reason::Valid, "check finished");
}

/// What of a working token ends within `spec.refresh.before` that only a login renews, and
/// when (the first of data access, consent, refresh token, the token itself).
fn ending_soon(
    s: &ChannelConnectionStatus,
    refreshable: bool,
    cx: &CheckContext<'_>,
) -> Option<(&'static str, String)> {
    let soon = |t: Option<&Time>| {
        t.is_some_and(|t| {
            t.0.duration_since(cx.now).as_secs_f64() < cx.refresh_before.as_secs_f64()
        })
    };
    let consent_deadline = cx.consent_deadline.map(Time);
    // Meta's data-access clock and a refresh token's own lifetime are not moved by a
    // refresh: only a login renews them.
    let clocks = [
        (
            true,
            "its data access ends",
            s.data_access_expires_at.as_ref(),
        ),
        (
            true,
            "its last consent reaches spec.refresh.maxAge",
            consent_deadline.as_ref(),
        ),
        (
            refreshable,
            "its refresh token stops working (refreshing does not extend it)",
            s.refresh_token_expires_at.as_ref(),
        ),
        (!refreshable, "it expires", s.expires_at.as_ref()),
    ];
    clocks
        .into_iter()
        .find(|(counts, _, at)| *counts && soon(*at))
        .map(|(_, what, at)| (what, at.map(|t| t.0.to_string()).unwrap_or_default()))
}

/// Follows a re-authorization asked for with the annotation (value `asked`) and says whether a
/// link is to be published for it. It is pending until a check finds the token working after
/// the Secret changed (a login wrote it); removing the annotation withdraws it.
pub fn track_reauthorization(status: &mut ChannelConnectionStatus, asked: Option<&str>) -> bool {
    let Some(asked) = asked else {
        status.pending_reauthorization = None;
        return false;
    };
    if status.last_handled_reauthorize_request.as_deref() == Some(asked) {
        status.pending_reauthorization = None;
        return false;
    }
    let ready = status
        .condition(ConditionType::Ready)
        .is_some_and(|c| c.status == "True");
    match &status.pending_reauthorization {
        Some(p) if p.value == asked => {
            if ready && status.observed_secret_version != p.secret_version {
                status.last_handled_reauthorize_request = Some(asked.to_owned());
                status.pending_reauthorization = None;
                return false;
            }
        }
        _ => {
            status.pending_reauthorization = Some(PendingReauthorization {
                value: asked.to_owned(),
                secret_version: status.observed_secret_version.clone(),
            });
        }
    }
    true
}

/// `Some(message)` when the token reaches another account than `spec.account.id`.
fn account_mismatch(spec: &ChannelConnectionSpec, grant: &Grant) -> Option<String> {
    let want = &spec.account.as_ref()?.id;
    if let Some(targets) = &grant.target_ids {
        if !targets.iter().any(|t| t == want) {
            return Some(format!(
                "the token was not granted access to account {want:?} (spec.account.id); log in as someone who manages it and select it"
            ));
        }
        return None;
    }
    let got = grant.account.as_ref()?.id.as_ref()?;
    (got != want).then(|| {
        format!("the token reaches account {got:?}, not {want:?} (spec.account.id); log in with the right account")
    })
}

/// The Event a status change publishes, if any (the operator publishes it; `relink check`
/// waits for it).
pub fn transition(
    old: &ChannelConnectionStatus,
    new: &ChannelConnectionStatus,
) -> Option<Transition> {
    let key = |s: &ChannelConnectionStatus, t| {
        s.condition(t).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let ready_old = key(old, ConditionType::Ready);
    let ready_new = key(new, ConditionType::Ready);
    let ready = new.condition(ConditionType::Ready)?;
    // A new connection found working is not news: no Event for every first `Valid` (a fleet of
    // 10,000 would write 10,000 Events); every other first verdict is one.
    let first_valid = ready_old.is_none() && ready.reason == Reason::Valid.as_str();
    if ready_old != ready_new
        && ready.reason != Reason::ProviderUnavailable.as_str()
        && !first_valid
    {
        let reason = Reason::parse(&ready.reason).unwrap_or(Reason::Checking);
        return Some(Transition {
            warning: ready.status != "True",
            reason,
            note: ready.message.clone(),
        });
    }
    let rec = new.condition(ConditionType::Reconciling)?;
    let rec_old = key(old, ConditionType::Reconciling);
    if rec.status == "True" && rec_old.as_ref().is_none_or(|(st, _)| st != "True") {
        return Some(Transition {
            warning: true,
            reason: Reason::ProviderUnavailable,
            note: rec.message.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests;
