use super::*;
use crate::account::{LoginFit, Refusal, login_fit, needs_login};
use crate::api::AccountRef;
use crate::api::ReportedAccount;
use crate::providers::Grant;

fn spec() -> ChannelConnectionSpec {
    ChannelConnectionSpec {
        account: Some(AccountRef {
            id: "page-1".into(),
            display_name: None,
            kind: None,
        }),
        required_scopes: vec!["read".into(), "write".into()],
        ..ChannelConnectionSpec::new("app", "tok")
    }
}

fn now() -> jiff::Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn cx(spec: &ChannelConnectionSpec) -> CheckContext<'_> {
    CheckContext {
        spec,
        generation: Some(3),
        now: now(),
        check_request: None,
        refresh_request: None,
        observed_secret_version: Some("10".into()),
        observed_provider_generation: Some(1),
        refresh_before: spec.timings().expect("test specs are valid").refresh_before,
        refresh_expires_at: None,
        consent_deadline: None,
    }
}

fn valid(scopes: &[&str], account: &str) -> Outcome {
    Outcome::Checked {
        verdict: Verdict::Valid(Grant {
            account: Some(ReportedAccount {
                id: Some(account.into()),
                name: Some("Page One".into()),
            }),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            ..Grant::default()
        }),
        secret_expires_at: None,
        refreshable: false,
    }
}

fn revoked() -> Outcome {
    Outcome::Checked {
        verdict: Verdict::Invalid {
            reason: Reason::Revoked,
            message: "inactive".into(),
        },
        secret_expires_at: None,
        refreshable: false,
    }
}

fn transient() -> Outcome {
    Outcome::Checked {
        verdict: Verdict::Transient {
            message: "HTTP 503".into(),
            retry_after: None,
        },
        secret_expires_at: None,
        refreshable: false,
    }
}

fn cond(s: &ChannelConnectionStatus, t: ConditionType) -> (String, String) {
    let c = s.condition(t).unwrap_or_else(|| panic!("{t:?} missing"));
    (c.status.clone(), c.reason.clone())
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.into(), reason.into())
}

#[test]
fn valid_token_is_ready() {
    let spec = spec();
    let (s, t) = next_status(
        &Default::default(),
        &valid(&["read", "write"], "page-1"),
        &cx(&spec),
    );
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Valid"));
    assert_eq!(cond(&s, ConditionType::TokenValid), pair("True", "Valid"));
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        pair("True", "Valid")
    );
    assert_eq!(cond(&s, ConditionType::Stalled), pair("False", "Valid"));
    assert_eq!(cond(&s, ConditionType::Reconciling), pair("False", "Valid"));
    assert_eq!(
        s.account.as_ref().and_then(|a| a.name.as_deref()),
        Some("Page One")
    );
    assert_eq!(s.granted_scopes, ["read", "write"]);
    assert_eq!(s.observed_generation, Some(3));
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
    assert_eq!(t, None, "a new connection found working publishes no Event");
    // Working again after a problem is news.
    let (broken, _) = next_status(&s, &revoked(), &cx(&spec));
    let (_, t) = next_status(&broken, &valid(&["read", "write"], "page-1"), &cx(&spec));
    let t = t.expect("a recovery is a transition");
    assert!(!t.warning);
    assert_eq!(t.reason, Reason::Valid);
}

#[test]
fn missing_scope_is_told_apart_from_expiry() {
    let spec = spec();
    let (s, t) = next_status(&Default::default(), &valid(&["read"], "page-1"), &cx(&spec));
    assert_eq!(
        cond(&s, ConditionType::Ready),
        pair("False", "ScopesMissing")
    );
    assert_eq!(cond(&s, ConditionType::TokenValid), pair("True", "Valid"));
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        pair("False", "ScopesMissing")
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        pair("True", "ScopesMissing")
    );
    assert_eq!(s.missing_scopes, ["write"]);
    assert!(t.unwrap().warning);
}

#[test]
fn wrong_account_is_a_mismatch() {
    let spec = spec();
    let (s, _) = next_status(
        &Default::default(),
        &valid(&["read", "write"], "page-2"),
        &cx(&spec),
    );
    assert_eq!(
        cond(&s, ConditionType::Ready),
        pair("False", "AccountMismatch")
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        pair("True", "AccountMismatch")
    );
}

#[test]
fn revocation_warns_once_and_recovery_is_normal() {
    let spec = spec();
    let (ok, _) = next_status(
        &Default::default(),
        &valid(&["read", "write"], "page-1"),
        &cx(&spec),
    );
    let (dead, t) = next_status(&ok, &revoked(), &cx(&spec));
    assert_eq!(cond(&dead, ConditionType::Ready), pair("False", "Revoked"));
    assert_eq!(
        cond(&dead, ConditionType::TokenValid),
        pair("False", "Revoked")
    );
    assert_eq!(cond(&dead, ConditionType::Stalled), pair("True", "Revoked"));
    let t = t.expect("transition");
    assert!(t.warning);
    assert_eq!(t.reason, Reason::Revoked);
    let (still_dead, t2) = next_status(&dead, &revoked(), &cx(&spec));
    assert_eq!(t2, None, "no second event while nothing changes");
    assert_eq!(
        still_dead
            .condition(ConditionType::Ready)
            .unwrap()
            .last_transition_time,
        dead.condition(ConditionType::Ready)
            .unwrap()
            .last_transition_time
    );
    let (back, t3) = next_status(&dead, &valid(&["read", "write"], "page-1"), &cx(&spec));
    assert_eq!(cond(&back, ConditionType::Ready), pair("True", "Valid"));
    assert!(!t3.unwrap().warning);
}

#[test]
fn inactive_token_past_its_expiry_is_expired() {
    let spec = spec();
    let outcome = Outcome::Checked {
        verdict: Verdict::Invalid {
            reason: Reason::Revoked,
            message: "inactive".into(),
        },
        secret_expires_at: Some("2026-05-01T00:00:00Z".parse().unwrap()),
        refreshable: false,
    };
    let (s, _) = next_status(&Default::default(), &outcome, &cx(&spec));
    assert_eq!(cond(&s, ConditionType::Ready), pair("False", "Expired"));
}

#[test]
fn outage_keeps_the_verdict() {
    let spec = spec();
    let (ok, _) = next_status(
        &Default::default(),
        &valid(&["read", "write"], "page-1"),
        &cx(&spec),
    );
    let (s1, t1) = next_status(&ok, &transient(), &cx(&spec));
    assert_eq!(cond(&s1, ConditionType::Ready), pair("True", "Valid"));
    assert_eq!(
        cond(&s1, ConditionType::Reconciling),
        pair("True", "ProviderUnavailable")
    );
    assert_eq!(s1.consecutive_failures, 1);
    assert_eq!(t1.map(|t| t.reason), Some(Reason::ProviderUnavailable));
    let (s2, t2) = next_status(&s1, &transient(), &cx(&spec));
    assert_eq!(s2.consecutive_failures, 2);
    assert_eq!(t2, None);
    let (s3, t3) = next_status(&s2, &valid(&["read", "write"], "page-1"), &cx(&spec));
    assert_eq!(s3.consecutive_failures, 0);
    assert_eq!(
        cond(&s3, ConditionType::Reconciling),
        pair("False", "Valid")
    );
    assert_eq!(t3, None, "Ready did not change");
}

#[test]
fn soon_expiring_token_is_ready_but_expiring() {
    let spec = spec();
    let outcome = Outcome::Checked {
        verdict: Verdict::Valid(Grant {
            scopes: Some(vec!["read".into(), "write".into()]),
            expires_at: Some("2026-06-01T18:00:00Z".parse().unwrap()),
            ..Grant::default()
        }),
        secret_expires_at: None,
        refreshable: false,
    };
    let (s, _) = next_status(&Default::default(), &outcome, &cx(&spec));
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Expiring"));
}

#[test]
fn missing_inputs_stall_with_a_fix_in_the_message() {
    let spec = spec();
    let (s, _) = next_status(
        &Default::default(),
        &Outcome::SecretNotFound {
            secret: "tok".into(),
        },
        &cx(&spec),
    );
    assert_eq!(
        cond(&s, ConditionType::Ready),
        pair("False", "SecretNotFound")
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        pair("True", "SecretNotFound")
    );
    assert!(
        s.condition(ConditionType::Ready)
            .unwrap()
            .message
            .contains("spec.secretRef.name")
    );
}

#[test]
fn data_access_ending_is_expiring_even_when_refreshable() {
    let spec = spec();
    let outcome = Outcome::Checked {
        verdict: Verdict::Valid(Grant {
            scopes: Some(vec!["read".into(), "write".into()]),
            data_access_expires_at: Some("2026-06-01T20:00:00Z".parse().unwrap()),
            ..Grant::default()
        }),
        secret_expires_at: None,
        refreshable: true,
    };
    let (s, _) = next_status(&Default::default(), &outcome, &cx(&spec));
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Expiring"));
    assert!(needs_login(&s), "a login is what renews data access");
}

fn grant(ids: Option<&[&str]>, account: Option<(&str, &str)>, scopes: &[&str]) -> Grant {
    Grant {
        account: account.map(|(id, name)| ReportedAccount {
            id: Some(id.into()),
            name: Some(name.into()),
        }),
        scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
        target_ids: ids.map(|ids| ids.iter().map(|s| s.to_string()).collect()),
        ..Grant::default()
    }
}

fn pinned(id: &str, name: &str) -> ChannelConnectionStatus {
    ChannelConnectionStatus {
        account: Some(ReportedAccount {
            id: Some(id.into()),
            name: Some(name.into()),
        }),
        ..Default::default()
    }
}

fn refused(fit: &LoginFit) -> (Refusal, &str) {
    match fit {
        LoginFit::Refused { why, message } => (*why, message.as_str()),
        other => panic!("accepted: {other:?}"),
    }
}

#[test]
fn a_login_is_written_only_for_the_expected_account() {
    let rw = ["read", "write"];
    let mut named = spec();
    named.account.as_mut().unwrap().display_name = Some("Acme Page".into());
    // spec.account: the right one is accepted, another is refused by name.
    let ok = login_fit(
        &named,
        None,
        false,
        &grant(None, Some(("page-1", "P1")), &rw),
    );
    assert!(
        matches!(ok, LoginFit::Accepted { replaces: None, .. }),
        "{ok:?}"
    );
    let no = login_fit(
        &named,
        None,
        false,
        &grant(None, Some(("page-2", "P2")), &rw),
    );
    let (why, msg) = refused(&no);
    assert_eq!(why, Refusal::WrongAccount);
    assert!(
        msg.contains("Acme Page (page-1)") && msg.contains("P2 (page-2)"),
        "{msg}"
    );
    // The annotation never overrides spec.account.
    let no = login_fit(
        &named,
        None,
        true,
        &grant(None, Some(("page-2", "P2")), &rw),
    );
    assert!(refused(&no).1.contains("change spec.account"));
    // Among several reached assets (a Facebook user's Pages), the expected one must be there.
    let ok = login_fit(
        &named,
        None,
        false,
        &grant(Some(&["user-9", "page-1"]), Some(("user-9", "Ann")), &rw),
    );
    assert!(matches!(ok, LoginFit::Accepted { .. }), "{ok:?}");
    let no = login_fit(
        &named,
        None,
        false,
        &grant(Some(&["user-9", "page-3"]), Some(("user-9", "Ann")), &rw),
    );
    assert_eq!(refused(&no).0, Refusal::WrongAccount);
    // Fail closed: a login that names no account is refused, naming the expected one.
    let no = login_fit(&named, None, false, &grant(None, None, &rw));
    let (why, msg) = refused(&no);
    assert_eq!(why, Refusal::AccountUnknown);
    assert!(msg.contains("Acme Page (page-1)"), "{msg}");
}

#[test]
fn without_spec_account_the_last_working_account_is_expected() {
    let rw = ["read", "write"];
    let mut s = spec();
    s.account = None;
    // Never known: the first login is accepted (and pinned by the caller).
    let first = login_fit(&s, None, false, &grant(None, Some(("a", "Alice")), &rw));
    assert_eq!(
        first,
        LoginFit::Accepted {
            account: ReportedAccount {
                id: Some("a".into()),
                name: Some("Alice".into())
            },
            replaces: None
        }
    );
    let never = ChannelConnectionStatus::default();
    assert!(matches!(
        login_fit(
            &s,
            Some(&never),
            false,
            &grant(None, Some(("b", "Bob")), &rw)
        ),
        LoginFit::Accepted { .. }
    ));
    // Known as A: B is refused, A accepted.
    let a = pinned("a", "Alice");
    let no = login_fit(&s, Some(&a), false, &grant(None, Some(("b", "Bob")), &rw));
    let (why, msg) = refused(&no);
    assert_eq!(why, Refusal::WrongAccount);
    assert!(
        msg.contains("Alice (a)") && msg.contains(crate::api::ALLOW_ACCOUNT_CHANGE_ANNOTATION),
        "{msg}"
    );
    assert!(matches!(
        login_fit(&s, Some(&a), false, &grant(None, Some(("a", "Alice")), &rw)),
        LoginFit::Accepted { replaces: None, .. }
    ));
    // On purpose: the annotation lets B in, and says whom B replaces.
    match login_fit(&s, Some(&a), true, &grant(None, Some(("b", "Bob")), &rw)) {
        LoginFit::Accepted { account, replaces } => {
            assert_eq!(account.id.as_deref(), Some("b"));
            assert_eq!(replaces.and_then(|r| r.id).as_deref(), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    // Even never known, a login must name someone to be pinned.
    assert_eq!(
        refused(&login_fit(&s, None, false, &grant(None, None, &rw))).0,
        Refusal::AccountUnknown
    );
}

#[test]
fn a_login_without_the_required_scopes_is_refused() {
    let fit = login_fit(
        &spec(),
        None,
        false,
        &grant(None, Some(("page-1", "P1")), &["read"]),
    );
    let (why, msg) = refused(&fit);
    assert_eq!(why, Refusal::ScopesMissing);
    assert!(msg.contains("required scopes: write"), "{msg}");
}

#[test]
fn scopes_nobody_reports_are_unknown_not_granted() {
    let spec = spec();
    let unreported = Outcome::Checked {
        verdict: Verdict::Valid(Grant::default()),
        secret_expires_at: None,
        refreshable: false,
    };
    let (s, _) = next_status(&Default::default(), &unreported, &cx(&spec));
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        pair("Unknown", "ScopesUnverifiable")
    );
    let ready = s.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Valid")
    );
    assert!(ready.message.contains("read, write"), "{}", ready.message);

    // Scopes a token response granted (kept in status) are judged when the check has none.
    let old = ChannelConnectionStatus {
        granted_scopes: vec!["read".into()],
        ..Default::default()
    };
    let (s, _) = next_status(&old, &unreported, &cx(&spec));
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        pair("False", "ScopesMissing")
    );
    assert_eq!(s.missing_scopes, ["write"]);

    // Nothing required: nothing to verify.
    let mut none_required = spec.clone();
    none_required.required_scopes.clear();
    let (s, _) = next_status(&Default::default(), &unreported, &cx(&none_required));
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        pair("True", "Valid")
    );
}

#[test]
fn a_requested_reauthorization_stays_until_the_token_changes() {
    use super::track_reauthorization;
    let spec = spec();
    let (mut s, _) = next_status(
        &Default::default(),
        &valid(&["read", "write"], "page-1"),
        &cx(&spec),
    );
    assert!(!track_reauthorization(&mut s, None));
    assert!(track_reauthorization(&mut s, Some("1")), "asked: publish");
    let pending = s.pending_reauthorization.clone().expect("pending");
    assert_eq!(pending.secret_version.as_deref(), Some("10"));
    // Later checks with the same Secret keep it.
    assert!(track_reauthorization(&mut s, Some("1")));
    // A login wrote the Secret and the token works: done.
    s.observed_secret_version = Some("11".into());
    assert!(!track_reauthorization(&mut s, Some("1")));
    assert_eq!(s.last_handled_reauthorize_request.as_deref(), Some("1"));
    assert_eq!(s.pending_reauthorization, None);
    assert!(!track_reauthorization(&mut s, Some("1")), "done stays done");
    // A new value asks again; removing the annotation withdraws it.
    assert!(track_reauthorization(&mut s, Some("2")));
    assert!(!track_reauthorization(&mut s, None));
    assert_eq!(s.pending_reauthorization, None);
}

#[test]
fn a_refresh_token_that_dies_soon_is_expiring_even_though_refreshable() {
    let spec = spec();
    let mut c = cx(&spec);
    let soon = now() + jiff::SignedDuration::from_hours(3);
    c.refresh_expires_at = Some(soon);
    let refreshable = Outcome::Checked {
        verdict: Verdict::Valid(Grant {
            account: Some(ReportedAccount {
                id: Some("page-1".into()),
                name: None,
            }),
            scopes: Some(vec!["read".into(), "write".into()]),
            ..Grant::default()
        }),
        secret_expires_at: None,
        refreshable: true,
    };
    let (s, _) = next_status(&Default::default(), &refreshable, &c);
    let ready = s.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Expiring")
    );
    assert!(ready.message.contains("refresh token"), "{}", ready.message);
    assert_eq!(s.refresh_token_expires_at.as_ref().map(|t| t.0), Some(soon));
    assert!(needs_login(&s), "the link is published before the deadline");

    // Far away: nothing to say.
    c.refresh_expires_at = Some(now() + jiff::SignedDuration::from_hours(24 * 300));
    let (s, _) = next_status(&Default::default(), &refreshable, &c);
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Valid"));
}

#[test]
fn max_age_since_the_last_consent_warns_then_asks_for_a_login() {
    let spec = spec();
    let mut c = cx(&spec);
    let works = valid(&["read", "write"], "page-1");
    c.consent_deadline = Some(now() + jiff::SignedDuration::from_hours(24 * 30));
    let (s, _) = next_status(&Default::default(), &works, &c);
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Valid"));

    c.consent_deadline = Some(now() + jiff::SignedDuration::from_hours(5));
    let (s, _) = next_status(&Default::default(), &works, &c);
    assert_eq!(cond(&s, ConditionType::Ready), pair("True", "Expiring"));
    assert!(needs_login(&s), "the link is published before the deadline");

    c.consent_deadline = Some(now() - jiff::SignedDuration::from_hours(1));
    let (s, t) = next_status(&Default::default(), &works, &c);
    assert_eq!(
        cond(&s, ConditionType::Ready),
        pair("False", "ReauthorizationRequired")
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(cond(&s, ConditionType::TokenValid), pair("True", "Valid"));
    assert!(needs_login(&s));
    assert!(t.is_some_and(|t| t.warning));
}
