//! Condition types and reasons of DESIGN.md, and the one helper that sets a condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types a `ChannelConnection` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// The token is valid, reaches the account and has every required scope.
    Ready,
    /// The token half of the verdict.
    TokenValid,
    /// The permission half of the verdict.
    ScopesGranted,
    /// A person must act; what GitOps health checks read as failed.
    Stalled,
    /// A check or refresh is in flight or retrying.
    Reconciling,
    /// Groups only: some members are not Ready.
    Degraded,
}

impl ConditionType {
    /// Every condition type, in the order the reference lists them.
    pub const ALL: [ConditionType; 6] = [
        Self::Ready,
        Self::TokenValid,
        Self::ScopesGranted,
        Self::Stalled,
        Self::Reconciling,
        Self::Degraded,
    ];

    /// What the condition says, for the API reference.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Ready => {
                "True when the token is valid, reaches the account and has every required scope"
            }
            Self::TokenValid => {
                "the token half of the verdict: the provider accepts it and it reaches the account"
            }
            Self::ScopesGranted => {
                "the permission half: every `spec.requiredScopes` is granted (`Unknown` when the provider cannot tell)"
            }
            Self::Stalled => {
                "True only when a person must act (log in, fix the account, create the Secret, fix the spec); what kstatus and GitOps tools read as failed"
            }
            Self::Reconciling => {
                "True only while a check or refresh is in flight or retrying after a provider failure"
            }
            Self::Degraded => "ChannelGroup only: some members are not Ready",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::TokenValid => "TokenValid",
            Self::ScopesGranted => "ScopesGranted",
            Self::Stalled => "Stalled",
            Self::Reconciling => "Reconciling",
            Self::Degraded => "Degraded",
        }
    }
}

/// Every reason relink writes on a condition (CamelCase, as Kubernetes expects).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Valid,
    Expiring,
    Expired,
    Revoked,
    ScopesMissing,
    AccountMismatch,
    AccountActionRequired,
    SecretNotFound,
    SecretKeyMissing,
    ProviderNotFound,
    ProviderNotReady,
    ProviderUnavailable,
    RefreshFailed,
    ReauthorizationRequired,
    Suspended,
    /// A spec field is out of its documented range or malformed; nothing is called until the
    /// object is fixed.
    InvalidSpec,
    /// On `ScopesGranted=Unknown`: the provider does not say which scopes a token carries, so
    /// `spec.requiredScopes` could not be checked.
    ScopesUnverifiable,
    /// A ClusterChannelProvider not shared with the connection's namespace or scopes.
    ProviderNotAllowed,
    /// Not in the verdict list: used on `Reconciling` while a check runs, and on conditions
    /// before the first check has happened.
    Checking,
}

impl Reason {
    /// Every reason, in the order the reference lists them.
    pub const ALL: [Reason; 19] = [
        Self::Valid,
        Self::Expiring,
        Self::Expired,
        Self::Revoked,
        Self::ScopesMissing,
        Self::AccountMismatch,
        Self::AccountActionRequired,
        Self::SecretNotFound,
        Self::SecretKeyMissing,
        Self::ProviderNotFound,
        Self::ProviderNotReady,
        Self::ProviderUnavailable,
        Self::RefreshFailed,
        Self::ReauthorizationRequired,
        Self::Suspended,
        Self::InvalidSpec,
        Self::ScopesUnverifiable,
        Self::ProviderNotAllowed,
        Self::Checking,
    ];

    /// What the reason means, for the API reference (docs/troubleshooting.md says what to do).
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Valid => "the token works, reaches the account and has every required scope",
            Self::Expiring => {
                "the token works but expires (or its data access ends) within `spec.refresh.before` and relink cannot renew it"
            }
            Self::Expired => "the provider says the token expired",
            Self::Revoked => {
                "the provider says the token was revoked (password change, app removed, logged out)"
            }
            Self::ScopesMissing => "the token lacks a permission in `spec.requiredScopes`",
            Self::AccountMismatch => "the token reaches another account than `spec.account.id`",
            Self::AccountActionRequired => {
                "the account's owner must act at the provider (a checkpoint, MFA, accepting terms)"
            }
            Self::SecretNotFound => "the Secret named in `spec.secretRef` does not exist",
            Self::SecretKeyMissing => "the Secret has no usable value under the access-token key",
            Self::ProviderNotFound => {
                "the provider object named in `spec.providerRef` does not exist"
            }
            Self::ProviderNotReady => {
                "the provider object has a problem (client secret, endpoint policy, the application rejected)"
            }
            Self::ProviderUnavailable => {
                "the provider gave no verdict (timeout, 5xx, 429, garbage); the last verdict is kept"
            }
            Self::RefreshFailed => "the refresh token was refused; a person must log in again",
            Self::ReauthorizationRequired => {
                "the consent behind the token lapsed (Meta's 90-day data access, `spec.refresh.maxAge`)"
            }
            Self::Suspended => "`spec.suspend` is true: nothing is checked",
            Self::InvalidSpec => {
                "a spec field is out of its documented range or malformed: nothing is called"
            }
            Self::ScopesUnverifiable => {
                "on `ScopesGranted=Unknown`: the provider does not say which scopes a token carries"
            }
            Self::ProviderNotAllowed => {
                "the ClusterChannelProvider is not shared with this namespace (`spec.allowedNamespaces`) or these scopes (`spec.allowedScopes`): nothing is called"
            }
            Self::Checking => "not checked yet (and on `Reconciling` while a check runs)",
        }
    }

    /// Whether a person must log in again: then `status.reauthUrl` offers a link.
    pub fn needs_login(self) -> bool {
        match self {
            Self::Revoked
            | Self::Expired
            | Self::Expiring
            | Self::ScopesMissing
            | Self::AccountMismatch
            | Self::ReauthorizationRequired
            | Self::RefreshFailed
            | Self::SecretNotFound
            | Self::SecretKeyMissing => true,
            Self::Valid
            | Self::AccountActionRequired
            | Self::ProviderNotFound
            | Self::ProviderNotReady
            | Self::ProviderUnavailable
            | Self::Suspended
            | Self::InvalidSpec
            | Self::ScopesUnverifiable
            | Self::ProviderNotAllowed
            | Self::Checking => false,
        }
    }

    /// Whether the channel's owners are told when a connection stops with this reason: they can
    /// act on it. The application's configuration (the operator's administrators' job), a
    /// wrongly written Secret or spec, transient trouble and suspension are not theirs.
    pub fn tells_owners(self) -> bool {
        match self {
            Self::Revoked
            | Self::Expired
            | Self::ScopesMissing
            | Self::AccountMismatch
            | Self::AccountActionRequired
            | Self::SecretNotFound
            | Self::ReauthorizationRequired
            | Self::RefreshFailed => true,
            Self::Valid
            | Self::Expiring
            | Self::SecretKeyMissing
            | Self::ProviderNotFound
            | Self::ProviderNotReady
            | Self::ProviderUnavailable
            | Self::Suspended
            | Self::InvalidSpec
            | Self::ScopesUnverifiable
            | Self::ProviderNotAllowed
            | Self::Checking => false,
        }
    }

    /// One line of advice for a person looking at a connection with this reason.
    pub fn advice(self) -> &'static str {
        match self {
            Self::Valid | Self::ScopesUnverifiable => "nothing to do: the channel works",
            Self::Expiring
            | Self::Expired
            | Self::Revoked
            | Self::ScopesMissing
            | Self::AccountMismatch
            | Self::ReauthorizationRequired
            | Self::RefreshFailed => "what to do: see docs/troubleshooting.md for this reason",
            Self::SecretNotFound => {
                "what to do: create the Secret named in spec.secretRef (same namespace)"
            }
            Self::SecretKeyMissing => {
                "what to do: put the access token under the key named in spec.secretRef.accessTokenKey"
            }
            Self::ProviderNotFound => {
                "what to do: create the provider named in spec.providerRef, or fix the name"
            }
            Self::ProviderNotReady => {
                "what to do: fix the provider object (client ID/secret); see `kubectl describe` on it"
            }
            Self::ProviderUnavailable => {
                "nothing to do: the provider is unreachable; relink retries"
            }
            Self::AccountActionRequired => {
                "what to do: log in to the provider's website with the account; it asks for an action"
            }
            Self::Suspended => "checks are suspended (spec.suspend: true)",
            Self::InvalidSpec => "what to do: fix the spec field the message names",
            Self::ProviderNotAllowed => {
                "what to do: ask the cluster administrators to share the ClusterChannelProvider, or use a ChannelProvider of this namespace"
            }
            Self::Checking => {
                "nothing to do yet: the first check has not happened; if this lasts, check that the operator runs and watches this namespace"
            }
        }
    }

    /// The reason named `s`, as written in a condition.
    pub fn parse(s: &str) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "Valid",
            Self::Expiring => "Expiring",
            Self::Expired => "Expired",
            Self::Revoked => "Revoked",
            Self::ScopesMissing => "ScopesMissing",
            Self::AccountMismatch => "AccountMismatch",
            Self::AccountActionRequired => "AccountActionRequired",
            Self::SecretNotFound => "SecretNotFound",
            Self::SecretKeyMissing => "SecretKeyMissing",
            Self::ProviderNotFound => "ProviderNotFound",
            Self::ProviderNotReady => "ProviderNotReady",
            Self::ProviderUnavailable => "ProviderUnavailable",
            Self::RefreshFailed => "RefreshFailed",
            Self::ReauthorizationRequired => "ReauthorizationRequired",
            Self::Suspended => "Suspended",
            Self::InvalidSpec => "InvalidSpec",
            Self::ScopesUnverifiable => "ScopesUnverifiable",
            Self::ProviderNotAllowed => "ProviderNotAllowed",
            Self::Checking => "Checking",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sets (or replaces) the condition of `type_` (`None` means `Unknown`); `lastTransitionTime` moves only when the status
/// actually changes, as the Kubernetes API conventions ask.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: Option<bool>,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    set_condition_reason(
        conditions,
        type_,
        status,
        reason.as_str(),
        message,
        generation,
        now,
    );
}

/// [`set_condition`] with a free-form reason (groups use `Healthy`, `Degraded`, `Down`).
pub fn set_condition_reason(
    conditions: &mut Vec<Condition>,
    type_: ConditionType,
    status: Option<bool>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = match status {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
    .to_owned();
    let existing = conditions.iter().position(|c| c.type_ == type_.as_str());
    let last_transition_time = match existing {
        Some(i) if conditions[i].status == status => conditions[i].last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: type_.as_str().to_owned(),
        status,
        reason: reason.to_owned(),
        message: crate::text::truncate(&message.into(), crate::text::MAX_MESSAGE),
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut c = Vec::new();
        set_condition(
            &mut c,
            ConditionType::Ready,
            Some(true),
            Reason::Valid,
            "ok",
            Some(1),
            t0,
        );
        set_condition(
            &mut c,
            ConditionType::Ready,
            Some(true),
            Reason::Expiring,
            "soon",
            Some(2),
            t1,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.0, t0);
        assert_eq!(c[0].reason, "Expiring");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(
            &mut c,
            ConditionType::Ready,
            Some(false),
            Reason::Revoked,
            "gone",
            Some(2),
            t1,
        );
        assert_eq!(c[0].last_transition_time.0, t1);
    }
}
