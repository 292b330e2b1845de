//! Whose token a connection holds: the account a login must reach, whether a login may be
//! written, and whether the verdict asks a person to log in. Shared by the check
//! (`controller`) and the OAuth callback (`reauth`), which do not depend on each other.

use crate::api::{
    ChannelConnectionSpec, ChannelConnectionStatus, ConditionType, Reason, ReportedAccount,
};
use crate::providers::Grant;

/// Whether the Ready verdict asks a person to log in again (then `reauthUrl` is offered).
pub fn needs_login(status: &ChannelConnectionStatus) -> bool {
    status
        .condition(ConditionType::Ready)
        .and_then(|ready| Reason::parse(&ready.reason))
        .is_some_and(Reason::needs_login)
}

/// Whether a login completed through the OAuth callback may be written (see [`login_fit`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LoginFit {
    /// Write it; `account` is who logged in (pinned as `status.account`).
    Accepted {
        account: ReportedAccount,
        /// The account the connection had before, when the login changed it on purpose.
        replaces: Option<ReportedAccount>,
    },
    /// Write nothing; the message is shown to the person who logged in.
    Refused { why: Refusal, message: String },
}

/// Why a login was refused, as a metric label and log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The provider did not say which account the login reaches.
    AccountUnknown,
    /// Another account than the expected one.
    WrongAccount,
    /// A required scope was not granted.
    ScopesMissing,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountUnknown => "account_unknown",
            Self::WrongAccount => "wrong_account",
            Self::ScopesMissing => "scopes_missing",
        }
    }
}

/// The account a login must reach: `spec.account` when set, else the account the connection
/// was last seen working with (`status.account`).
pub fn expected_account(
    spec: &ChannelConnectionSpec,
    status: Option<&ChannelConnectionStatus>,
) -> Option<ReportedAccount> {
    if let Some(a) = &spec.account {
        return Some(ReportedAccount {
            id: Some(a.id.clone()),
            name: a.display_name.clone(),
        });
    }
    status
        .and_then(|s| s.account.clone())
        .filter(|a| a.id.is_some())
}

/// Every identifier the provider said the granted token reaches.
pub fn reached_ids(grant: &Grant) -> Vec<String> {
    match &grant.target_ids {
        Some(ids) => ids.clone(),
        None => grant
            .account
            .as_ref()
            .and_then(|a| a.id.clone())
            .into_iter()
            .collect(),
    }
}

/// Decides, before anything is written, whether a freshly granted token may replace the
/// connection's. It fails closed: the login must name an account and it must be the expected
/// one ([`expected_account`]). A connection that never knew an account accepts the first one
/// (which is then pinned); `allow_change` (the `relink.dev/allow-account-change` annotation)
/// lets a login replace a pinned account, but never `spec.account`, which is changed by editing
/// the spec.
pub fn login_fit(
    spec: &ChannelConnectionSpec,
    status: Option<&ChannelConnectionStatus>,
    allow_change: bool,
    grant: &Grant,
) -> LoginFit {
    let refuse = |why, message: String| LoginFit::Refused { why, message };
    let expected = expected_account(spec, status);
    let ids = reached_ids(grant);
    let Some(first) = ids.first() else {
        let whom = expected
            .as_ref()
            .map(|a| format!(" It must be {}.", describe(a)))
            .unwrap_or_default();
        return refuse(
            Refusal::AccountUnknown,
            format!(
                "The provider did not say which account this login belongs to, so relink cannot tell whether it is the channel's account.{whom}"
            ),
        );
    };
    let mut account = grant.account.clone().unwrap_or_default();
    if account.id.is_none() {
        account.id = Some(first.clone());
    }
    let mut replaces = None;
    if let Some(want) = &expected {
        let want_id = want.id.as_deref().unwrap_or_default();
        if !ids.iter().any(|i| i == want_id) {
            let pinned = spec.account.is_none();
            if !(pinned && allow_change) {
                let advice = if pinned {
                    format!(
                        "log in with that account, or, to hand the channel to another account on purpose, annotate the connection with {}=true and open the new link",
                        crate::api::ALLOW_ACCOUNT_CHANGE_ANNOTATION
                    )
                } else {
                    "log in with that account, or change spec.account to hand the channel to another one".to_owned()
                };
                return refuse(
                    Refusal::WrongAccount,
                    format!(
                        "This login is for {}, but the channel belongs to {}: {advice}.",
                        describe(&account),
                        describe(want)
                    ),
                );
            }
            replaces = Some(want.clone());
        }
    }
    if let Some(granted) = &grant.scopes {
        let missing: Vec<&str> = spec
            .required_scopes
            .iter()
            .filter(|r| !granted.contains(r))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return refuse(
                Refusal::ScopesMissing,
                format!(
                    "The login did not grant the required scopes: {}. Open the link again and allow them.",
                    missing.join(", ")
                ),
            );
        }
    }
    LoginFit::Accepted { account, replaces }
}

/// An account for people: "Name (id)", or the one that is known.
pub fn describe(a: &ReportedAccount) -> String {
    match (&a.name, &a.id) {
        (Some(n), Some(i)) if n != i => format!("{n} ({i})"),
        (Some(n), _) => n.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => "an unnamed account".to_owned(),
    }
}
