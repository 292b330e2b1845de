//! What the dashboard page shows, as plain data: one row per connection with its mark, one
//! card per group, the counts. Pure functions of the objects the watches hold and `now`; the
//! page only lays this out (and escapes it, by building the DOM with `textContent`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use relink::api::{
    ChannelConnection, ChannelConnectionStatus, ChannelGroup, ConditionType, ProviderKind,
    ProviderType, Reason,
};
use serde::Serialize;

use crate::cli::status::what_to_do;

/// The colour of a row: what a person reads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Ready.
    Green,
    /// Works now, but expires soon or the provider cannot be asked.
    Orange,
    /// Broken: a person must act.
    Red,
    /// Suspended, not checked yet, or unknown.
    Grey,
}

/// The state words next to the mark, and the counts at the top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum State {
    Ready,
    Expiring,
    Degraded,
    Broken,
    Suspended,
    Unknown,
}

impl State {
    pub fn mark(self) -> Mark {
        match self {
            Self::Ready => Mark::Green,
            Self::Expiring | Self::Degraded => Mark::Orange,
            Self::Broken => Mark::Red,
            Self::Suspended | Self::Unknown => Mark::Grey,
        }
    }
}

/// Who may press Check now, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Permission {
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// One connection as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    /// `namespace/name`, the row's key.
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// `ChannelProvider/app`.
    pub provider_ref: String,
    /// `facebook`, `google`, ... when the provider object could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_type: Option<String>,
    /// `Facebook`, `Google`, ... or the provider object's name.
    pub provider_label: String,
    pub account_name: String,
    pub account_id: String,
    pub state: State,
    pub mark: Mark,
    /// The Ready reason (`Revoked`), or `NotCheckedYet`.
    pub reason: String,
    /// The reason in words.
    pub reason_text: String,
    /// The Ready condition's message, as the operator wrote it.
    pub message: String,
    /// What to do, when a person must act.
    pub hint: String,
    pub missing_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_valid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<String>,
    /// The re-authorization link: the only place it is shown, as the Reconnect target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<String>,
    pub check: Permission,
    /// A check request the operator has not handled yet.
    pub check_pending: bool,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Member {
    pub name: String,
    pub mark: Mark,
    pub reason: String,
}

/// One `ChannelGroup` as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// `Healthy`, `Degraded`, `Down`, or `Unknown` before the operator wrote a status.
    pub health: String,
    pub mark: Mark,
    /// `3/4`.
    pub ready: String,
    pub members: Vec<Member>,
}

/// The numbers at the top of the page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: usize,
    pub ready: usize,
    /// Orange: expiring or degraded.
    pub expiring: usize,
    pub broken: usize,
    /// Grey: suspended, not checked yet, unknown.
    pub other: usize,
}

/// `reason` in words, for people who do not read condition reasons.
pub fn reason_text(reason: Reason) -> &'static str {
    match reason {
        Reason::Valid => "Working",
        Reason::Expiring => "Token expires soon and cannot be renewed",
        Reason::Expired => "Token expired",
        Reason::Revoked => "Access was revoked at the provider",
        Reason::ScopesMissing => "Permissions are missing",
        Reason::AccountMismatch => "The token reaches another account",
        Reason::AccountActionRequired => "The provider asks the account to act",
        Reason::SecretNotFound => "The token Secret does not exist",
        Reason::SecretKeyMissing => "The token is missing from its Secret",
        Reason::ProviderNotFound => "The provider object does not exist",
        Reason::ProviderNotReady => "The provider's app is misconfigured",
        Reason::ProviderUnavailable => "The provider cannot be reached; relink retries",
        Reason::RefreshFailed => "Renewing the token failed",
        Reason::ReauthorizationRequired => "Someone must log in again",
        Reason::Suspended => "Checks are suspended",
        Reason::InvalidSpec => "The connection's spec is invalid",
        Reason::ProviderNotAllowed => "The shared provider is not allowed here",
        Reason::ScopesUnverifiable => "Working; the provider does not say which permissions it has",
        Reason::Checking => "Checking",
    }
}

/// The state of a connection whose Ready condition has `reason`; `ready` is that condition's
/// status, `stalled` whether a person must act, `trouble` whether the provider could not be
/// asked at the last check.
pub fn state_for(reason: Reason, ready: &str, stalled: bool, trouble: bool) -> State {
    match reason {
        Reason::Valid | Reason::ScopesUnverifiable if ready == "True" && trouble => State::Degraded,
        Reason::Valid | Reason::ScopesUnverifiable if ready == "True" => State::Ready,
        Reason::Valid | Reason::ScopesUnverifiable => State::Unknown,
        Reason::Expiring => State::Expiring,
        Reason::ProviderUnavailable => State::Degraded,
        Reason::Checking => State::Unknown,
        Reason::Suspended => State::Suspended,
        Reason::Expired
        | Reason::Revoked
        | Reason::ScopesMissing
        | Reason::AccountMismatch
        | Reason::AccountActionRequired
        | Reason::SecretNotFound
        | Reason::SecretKeyMissing
        | Reason::ProviderNotFound
        | Reason::ProviderNotReady
        | Reason::RefreshFailed
        | Reason::ReauthorizationRequired
        | Reason::InvalidSpec
        | Reason::ProviderNotAllowed => {
            if ready == "True" && !stalled {
                State::Degraded
            } else {
                State::Broken
            }
        }
    }
}

pub fn provider_label(t: ProviderType) -> &'static str {
    match t {
        ProviderType::Facebook => "Facebook",
        ProviderType::Instagram => "Instagram",
        ProviderType::Google => "Google",
        ProviderType::Microsoft => "Microsoft",
        ProviderType::Linkedin => "LinkedIn",
        ProviderType::X => "X",
        ProviderType::Slack => "Slack",
        ProviderType::Tiktok => "TikTok",
        ProviderType::OAuth2 => "OAuth 2",
    }
}

/// The link as a Reconnect target, only when it is a web address (never `javascript:`).
pub fn safe_link(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "https" | "http").then(|| parsed.to_string())
}

fn rfc3339(t: Option<&Time>) -> Option<String> {
    t.map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The row's state, its reason and the reason in words.
fn verdict(c: &ChannelConnection, status: &ChannelConnectionStatus) -> (State, String, String) {
    let ready = status.condition(ConditionType::Ready);
    let stalled = status
        .condition(ConditionType::Stalled)
        .is_some_and(|s| s.status == "True");
    let trouble = provider_trouble(status);
    let (state, reason, reason_words) = if c.spec.suspend {
        let r = Reason::Suspended;
        (State::Suspended, r.as_str().to_owned(), reason_text(r))
    } else {
        match ready {
            None => (
                State::Unknown,
                "NotCheckedYet".to_owned(),
                "Not checked yet",
            ),
            Some(r) => match Reason::parse(&r.reason) {
                Some(reason) => (
                    state_for(reason, &r.status, stalled, trouble),
                    r.reason.clone(),
                    reason_text(reason),
                ),
                // A reason this build does not know (a newer operator): trust the conditions.
                None => {
                    let state = match (r.status.as_str(), stalled) {
                        (_, true) => State::Broken,
                        ("True", false) => State::Ready,
                        _ => State::Unknown,
                    };
                    (state, r.reason.clone(), "")
                }
            },
        }
    };
    let reason_text = if reason_words.is_empty() {
        reason.clone()
    } else {
        reason_words.to_owned()
    };
    (state, reason, reason_text)
}

/// Whether the provider did not answer the last check (the verdict before it stands).
fn provider_trouble(status: &ChannelConnectionStatus) -> bool {
    status
        .condition(ConditionType::Reconciling)
        .is_some_and(|r| r.status == "True" && r.reason == Reason::ProviderUnavailable.as_str())
}

/// What the person looking at the row should do.
fn hint(
    c: &ChannelConnection,
    status: &ChannelConnectionStatus,
    state: State,
    trouble: bool,
    reason: &str,
) -> String {
    match state {
        State::Ready => String::new(),
        _ if status.reauth_url.is_some() => {
            let who = crate::cli::status::as_manager(c);
            format!("Reconnect: log in{who} and grant every permission asked.")
        }
        State::Degraded if trouble => what_to_do(Reason::ProviderUnavailable.as_str()).to_owned(),
        _ => what_to_do(reason).to_owned(),
    }
}

/// The row of `c`. `provider_type` is the type of the provider object it names, when known;
/// `check` whether the user may request a check in its namespace.
pub fn connection_row(
    c: &ChannelConnection,
    provider_type: Option<ProviderType>,
    check: Permission,
) -> ConnectionRow {
    let status = c.status.clone().unwrap_or_default();
    let ready = status.condition(ConditionType::Ready);
    let trouble = provider_trouble(&status);
    let (state, reason, reason_text) = verdict(c, &status);
    let hint = hint(c, &status, state, trouble, &reason);
    let reported = status.account.clone().unwrap_or_default();
    let expected = c.spec.account.as_ref();
    let account_id = reported
        .id
        .clone()
        .or_else(|| expected.map(|a| a.id.clone()))
        .unwrap_or_default();
    let account_name = reported
        .name
        .clone()
        .or_else(|| expected.and_then(|a| a.display_name.clone()))
        .unwrap_or_default();
    let asked = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(relink::api::CHECK_REQUESTED_ANNOTATION));
    let check_pending =
        asked.is_some_and(|a| status.last_handled_check_request.as_ref() != Some(a));
    let provider = &c.spec.provider_ref;
    let check = if c.spec.suspend {
        Permission {
            allowed: false,
            why: Some("Checks are suspended (spec.suspend: true).".to_owned()),
        }
    } else {
        check
    };
    ConnectionRow {
        id: format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
        provider_ref: format!("{}/{}", provider.kind.as_str(), provider.name),
        provider_type: provider_type.map(|t| t.as_str().to_owned()),
        provider_label: provider_type
            .map(|t| provider_label(t).to_owned())
            .unwrap_or_else(|| provider.name.clone()),
        account_name,
        account_id,
        state,
        mark: state.mark(),
        reason,
        reason_text,
        message: ready
            .filter(|_| state != State::Ready)
            .map(|r| crate::cli::status::one_line(&r.message))
            .unwrap_or_default(),
        hint,
        missing_scopes: status.missing_scopes.clone(),
        expires_at: rfc3339(status.expires_at.as_ref()),
        last_check: rfc3339(status.last_check_time.as_ref()),
        next_check: rfc3339(status.next_check_time.as_ref()),
        last_valid: rfc3339(status.last_valid_time.as_ref()),
        last_refresh: rfc3339(status.last_refresh_time.as_ref()),
        reconnect: status.reauth_url.as_deref().and_then(safe_link),
        check,
        check_pending,
    }
}

/// The provider type a connection's `providerRef` names, from the provider objects the user
/// can read: `(kind, namespace or "", name) → type`.
pub type ProviderTypes = BTreeMap<(&'static str, String, String), ProviderType>;

pub fn provider_type_of(c: &ChannelConnection, types: &ProviderTypes) -> Option<ProviderType> {
    let r = &c.spec.provider_ref;
    let ns = match r.kind {
        ProviderKind::ChannelProvider => c.namespace().unwrap_or_default(),
        ProviderKind::ClusterChannelProvider => String::new(),
    };
    types.get(&(r.kind.as_str(), ns, r.name.clone())).copied()
}

/// The card of group `g`; `rows` are the connection rows the page shows (members are looked
/// up there, as the operator does: by name or by the selector).
pub fn group_row(
    g: &ChannelGroup,
    conns: &[&ChannelConnection],
    rows: &[ConnectionRow],
) -> GroupRow {
    let ns = g.namespace().unwrap_or_default();
    let status = g.status.clone().unwrap_or_default();
    let selector = g
        .spec
        .selector
        .clone()
        .and_then(|s| Selector::try_from(s).ok());
    let no_labels = BTreeMap::new();
    let mut members: Vec<Member> = conns
        .iter()
        .zip(rows)
        .filter(|(c, _)| c.namespace().as_deref() == Some(ns.as_str()))
        .filter(|(c, _)| {
            g.spec.connections.contains(&c.name_any())
                || selector
                    .as_ref()
                    .is_some_and(|s| s.matches(c.metadata.labels.as_ref().unwrap_or(&no_labels)))
        })
        .map(|(_, r)| Member {
            name: r.name.clone(),
            mark: r.mark,
            reason: r.reason.clone(),
        })
        .collect();
    // Members the operator counts that this page does not show (filtered by -l, or missing).
    for m in &status.not_ready {
        if !members.iter().any(|x| x.name == m.name) {
            members.push(Member {
                name: m.name.clone(),
                mark: Mark::Red,
                reason: m.reason.clone(),
            });
        }
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let health = status
        .health
        .clone()
        .unwrap_or_else(|| "Unknown".to_owned());
    let mark = match health.as_str() {
        "Healthy" => Mark::Green,
        "Degraded" => Mark::Orange,
        "Down" => Mark::Red,
        _ => Mark::Grey,
    };
    GroupRow {
        id: format!("{ns}/{}", g.name_any()),
        namespace: ns,
        name: g.name_any(),
        health,
        mark,
        ready: status
            .ready_summary
            .clone()
            .unwrap_or_else(|| format!("{}/{}", status.ready, status.total)),
        members,
    }
}

pub fn counts(rows: &[ConnectionRow]) -> Counts {
    let mut n = Counts {
        total: rows.len(),
        ..Default::default()
    };
    for r in rows {
        match r.mark {
            Mark::Green => n.ready += 1,
            Mark::Orange => n.expiring += 1,
            Mark::Red => n.broken += 1,
            Mark::Grey => n.other += 1,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use relink::api::{ChannelGroupSpec, ChannelGroupStatus, GroupMember};

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{reason}\n  says <b>hi</b>"),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn conn(name: &str, conditions: Vec<Condition>, link: Option<&str>) -> ChannelConnection {
        crate::cli::fixtures::page_connection(name, conditions, link)
    }

    fn allowed() -> Permission {
        Permission {
            allowed: true,
            why: None,
        }
    }

    #[test]
    fn marks_follow_the_conditions() {
        let row = |conds| connection_row(&conn("c", conds, None), None, allowed());
        let ready = row(vec![cond("Ready", "True", "Valid")]);
        assert_eq!((ready.state, ready.mark), (State::Ready, Mark::Green));
        assert_eq!(ready.message, "", "a working channel needs no words");
        let expiring = row(vec![cond("Ready", "True", "Expiring")]);
        assert_eq!(expiring.mark, Mark::Orange);
        let trouble = row(vec![
            cond("Ready", "True", "Valid"),
            cond("Reconciling", "True", "ProviderUnavailable"),
        ]);
        assert_eq!(
            (trouble.state, trouble.mark),
            (State::Degraded, Mark::Orange)
        );
        assert!(trouble.hint.contains("unreachable"), "{}", trouble.hint);
        let revoked = row(vec![
            cond("Ready", "False", "Revoked"),
            cond("Stalled", "True", "Revoked"),
        ]);
        assert_eq!((revoked.state, revoked.mark), (State::Broken, Mark::Red));
        assert_eq!(revoked.reason_text, "Access was revoked at the provider");
        assert_eq!(
            revoked.message, "Revoked says <b>hi</b>",
            "one line, as written"
        );
        let unchecked = row(vec![]);
        assert_eq!(
            (unchecked.mark, unchecked.reason.as_str()),
            (Mark::Grey, "NotCheckedYet")
        );
        let newer = row(vec![
            cond("Ready", "False", "SomeFutureReason"),
            cond("Stalled", "True", "SomeFutureReason"),
        ]);
        assert_eq!(newer.mark, Mark::Red, "an unknown reason trusts Stalled");
        assert_eq!(newer.reason_text, "SomeFutureReason");
        let mut suspended = conn("c", vec![cond("Ready", "True", "Valid")], None);
        suspended.spec.suspend = true;
        let row = connection_row(&suspended, None, allowed());
        assert_eq!(row.state, State::Suspended);
        assert!(!row.check.allowed, "nothing would check it");
        let rows = [ready, expiring, trouble, revoked, unchecked, newer];
        assert_eq!(
            counts(&rows),
            Counts {
                total: 6,
                ready: 1,
                expiring: 2,
                broken: 2,
                other: 1
            }
        );
    }

    #[test]
    fn the_link_is_only_a_web_address() {
        let c = conn(
            "c",
            vec![cond("Ready", "False", "Revoked")],
            Some("https://provider.test/auth?state=s&scope=a+b"),
        );
        let row = connection_row(&c, Some(ProviderType::Facebook), allowed());
        assert_eq!(
            row.reconnect.as_deref(),
            Some("https://provider.test/auth?state=s&scope=a+b")
        );
        assert_eq!(row.provider_label, "Facebook");
        assert_eq!(row.provider_type.as_deref(), Some("facebook"));
        assert!(row.hint.contains("manages Page One"), "{}", row.hint);
        let text = serde_json::to_string(&row).unwrap();
        assert_eq!(
            text.matches("provider.test").count(),
            1,
            "the link appears once, as the Reconnect target: {text}"
        );
        for bad in ["javascript:alert(1)", "data:text/html,x", "not a url"] {
            let c = conn("c", vec![cond("Ready", "False", "Revoked")], Some(bad));
            assert_eq!(connection_row(&c, None, allowed()).reconnect, None, "{bad}");
        }
    }

    #[test]
    fn accounts_and_check_requests() {
        let mut c = conn("c", vec![cond("Ready", "True", "Valid")], None);
        let row = connection_row(&c, None, allowed());
        assert_eq!(
            (row.account_name.as_str(), row.account_id.as_str()),
            ("Page One", "page-1")
        );
        assert_eq!(
            row.provider_label, "app",
            "the object's name when the type is unknown"
        );
        let s = c.status.as_mut().unwrap();
        s.account = Some(relink::api::ReportedAccount {
            id: Some("page-1".into()),
            name: Some("Page One Ltd".into()),
        });
        s.last_handled_check_request = Some("1".into());
        c.metadata.annotations = Some(
            [(
                relink::api::CHECK_REQUESTED_ANNOTATION.to_owned(),
                "2".to_owned(),
            )]
            .into(),
        );
        let row = connection_row(&c, None, allowed());
        assert_eq!(
            row.account_name, "Page One Ltd",
            "as the provider reports it"
        );
        assert!(row.check_pending);
    }

    #[test]
    fn groups_list_their_members() {
        let a = conn("a", vec![cond("Ready", "True", "Valid")], None);
        let mut b = conn("b", vec![cond("Ready", "False", "Revoked")], None);
        b.metadata.labels = Some([("team".to_owned(), "ads".to_owned())].into());
        let other = conn("c", vec![cond("Ready", "True", "Valid")], None);
        let conns = [&a, &b, &other];
        let rows: Vec<ConnectionRow> = conns
            .iter()
            .map(|c| connection_row(c, None, allowed()))
            .collect();
        let mut g = ChannelGroup::new(
            "campaign",
            ChannelGroupSpec {
                selector: Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                        match_labels: Some([("team".to_owned(), "ads".to_owned())].into()),
                        ..Default::default()
                    },
                ),
                connections: vec!["a".into()],
                min_ready: None,
            },
        );
        g.metadata.namespace = Some("ns".into());
        g.status = Some(ChannelGroupStatus {
            total: 3,
            ready: 1,
            not_ready: vec![
                GroupMember {
                    name: "b".into(),
                    reason: "Revoked".into(),
                },
                GroupMember {
                    name: "gone".into(),
                    reason: "Missing".into(),
                },
            ],
            ready_summary: Some("1/3".into()),
            health: Some("Down".into()),
            ..Default::default()
        });
        let card = group_row(&g, &conns, &rows);
        assert_eq!(
            (card.health.as_str(), card.mark, card.ready.as_str()),
            ("Down", Mark::Red, "1/3")
        );
        let names: Vec<(&str, Mark)> = card
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.mark))
            .collect();
        assert_eq!(
            names,
            [("a", Mark::Green), ("b", Mark::Red), ("gone", Mark::Red)]
        );
    }
}
