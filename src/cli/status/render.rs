//! How the terminal tools print connections: one line each, or everything about one.

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use relink::api::{
    CHECK_REQUESTED_ANNOTATION, ChannelConnection, ChannelConnectionStatus, ConditionType, Reason,
};

use super::cluster::event_time;

/// What one line says about a connection.
pub(crate) struct Summary {
    pub mark: &'static str,
    pub ready: bool,
    pub id: String,
    pub provider: String,
    pub account: String,
    pub reason: String,
    pub expiry: String,
    pub checked: String,
    /// Lines under the summary (the condition message, the link, what to do).
    pub notes: Vec<String>,
}

pub(crate) fn summarize(c: &ChannelConnection, now: jiff::Timestamp) -> Summary {
    let status = c.status.clone().unwrap_or_default();
    let ready_cond = status.condition(ConditionType::Ready);
    let (mark, ready, reason) = match ready_cond {
        Some(r) if r.reason == "Checking" => ("…", false, "Checking".to_owned()),
        Some(r) if r.status == "True" => ("✔", true, r.reason.clone()),
        Some(r) if r.status == "False" => ("✖", false, r.reason.clone()),
        Some(r) => ("…", false, r.reason.clone()),
        None => ("…", false, "NotCheckedYet".to_owned()),
    };
    let account = status
        .account
        .as_ref()
        .and_then(|a| a.name.clone().or_else(|| a.id.clone()))
        .or_else(|| c.spec.account.as_ref().map(|a| a.label().to_owned()))
        .unwrap_or_else(|| "-".to_owned());
    let expiry = match &status.expires_at {
        Some(t) if t.0 > now => format!(
            "expires in {}",
            human_duration(t.0.as_second() - now.as_second())
        ),
        Some(t) => format!(
            "expired {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None if ready => "no expiry".to_owned(),
        None => "-".to_owned(),
    };
    let checked = match &status.last_check_time {
        Some(t) => format!(
            "checked {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None => "not checked yet".to_owned(),
    };
    let notes = notes(c, &status, ready, &reason);
    Summary {
        mark,
        ready,
        id: format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        provider: c.spec.provider_ref.name.clone(),
        account,
        reason,
        expiry,
        checked,
        notes,
    }
}

/// The lines under a connection's summary: the condition message, provider trouble, missing
/// permissions, and the link or what to do.
fn notes(
    c: &ChannelConnection,
    status: &ChannelConnectionStatus,
    ready: bool,
    reason: &str,
) -> Vec<String> {
    let mut notes = Vec::new();
    let show_message = !ready || reason != "Valid";
    if show_message && let Some(r) = status.condition(ConditionType::Ready) {
        notes.push(r.message.clone());
    }
    if let Some(rec) = status.condition(ConditionType::Reconciling)
        && rec.status == "True"
        && rec.reason == "ProviderUnavailable"
    {
        notes.push(format!(
            "the provider did not answer; relink keeps the last verdict and retries ({})",
            rec.message
        ));
    }
    if !status.missing_scopes.is_empty() {
        notes.push(format!(
            "missing permissions: {}",
            status.missing_scopes.join(", ")
        ));
    }
    if let Some(url) = &status.reauth_url {
        let who = c
            .spec
            .account
            .as_ref()
            .map(|a| format!(" as the owner of {}", a.label()))
            .unwrap_or_default();
        notes.push(format!(
            "what to do: open this link in a browser and log in{who} (do not delete the connection):"
        ));
        notes.push(format!("  {url}"));
    } else if !ready && reason != "Checking" {
        notes.push(what_to_do(reason).to_owned());
    }
    notes
}

/// One hint per reason that has no re-authorization link (see docs/troubleshooting.md): what
/// `Reason::advice` says; the CLI's own "not checked yet" reads like `Checking`.
pub(crate) fn what_to_do(reason: &str) -> &'static str {
    Reason::parse(reason).unwrap_or(Reason::Checking).advice()
}

/// The whole summary as text: a header, one aligned line per connection, notes, a total.
pub(crate) fn render(list: &[ChannelConnection], now: jiff::Timestamp) -> String {
    let rows: Vec<Summary> = list.iter().map(|c| summarize(c, now)).collect();
    let header = ["CONNECTION", "PROVIDER", "ACCOUNT", "STATUS", "EXPIRY"];
    let width = |f: &dyn Fn(&Summary) -> usize, h: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(h.chars().count())
    };
    let w = [
        width(&|s| s.id.chars().count(), header[0]),
        width(&|s| s.provider.chars().count(), header[1]),
        width(&|s| s.account.chars().count(), header[2]),
        width(&|s| s.reason.chars().count(), header[3]),
        width(&|s| s.expiry.chars().count(), header[4]),
    ];
    let line = |mark: &str, cells: [&str; 5], last: &str| {
        let mut out = format!("{mark} ");
        for (cell, width) in cells.iter().zip(w) {
            out.push_str(&pad(cell, width));
            out.push_str("  ");
        }
        out.push_str(last);
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(" ", header, "LAST CHECK");
    for s in &rows {
        out.push_str(&line(
            s.mark,
            [&s.id, &s.provider, &s.account, &s.reason, &s.expiry],
            &s.checked,
        ));
        for note in &s.notes {
            out.push_str(&format!("    {note}\n"));
        }
    }
    let ready = rows.iter().filter(|s| s.ready).count();
    out.push_str(&format!(
        "\n{ready} of {} connection{} Ready.",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    if ready < rows.len() {
        out.push_str(&format!(
            " To check one again now: kubectl annotate channelconnection NAME -n NAMESPACE {CHECK_REQUESTED_ANNOTATION}=$(date +%s) --overwrite"
        ));
    }
    out.push('\n');
    out
}

pub(super) fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// `seconds` the way kubectl prints ages (`45s`, `3m20s`, `5h`, `12d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let days = hours / 24;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        };
    }
    format!("{}y", days / 365)
}

/// Condition types in the order the detailed view lists them (others follow, as written).
const CONDITION_ORDER: [ConditionType; 5] = [
    ConditionType::Ready,
    ConditionType::TokenValid,
    ConditionType::ScopesGranted,
    ConditionType::Stalled,
    ConditionType::Reconciling,
];

/// Everything about one connection, for `relink status NAME` and `relink check NAME`.
/// `events` are the last Events about it, oldest first, or why they could not be listed.
pub(crate) fn render_detail(
    c: &ChannelConnection,
    events: &Result<Vec<Event>, String>,
    now: jiff::Timestamp,
) -> String {
    let status = c.status.clone().unwrap_or_default();
    let summary = summarize(c, now);
    let mut fields = Fields::default();
    identity_fields(&mut fields, c, &status, &summary, now);
    token_fields(&mut fields, c, &status, now);
    let mut out = fields.0;
    out.push_str(&conditions_section(&status, now));
    out.push_str(&events_section(events, now));
    if let Some(url) = &status.reauth_url {
        out.push_str(&format!("\nRe-authorization link:\n  {url}\n"));
    }
    out.push_str(&format!("\n{}\n", advice(c, &summary, &status)));
    out
}

/// `Label:` lines, values aligned.
#[derive(Default)]
struct Fields(String);

impl Fields {
    fn add(&mut self, label: &str, value: String) {
        self.0
            .push_str(&format!("{}{value}\n", pad(&format!("{label}:"), 22)));
    }
}

/// Which connection, its verdict and which account it reaches.
fn identity_fields(
    field: &mut Fields,
    c: &ChannelConnection,
    status: &ChannelConnectionStatus,
    summary: &Summary,
    now: jiff::Timestamp,
) {
    field.add("Name", c.name_any());
    field.add("Namespace", c.namespace().unwrap_or_default());
    field.add(
        "Provider",
        format!(
            "{}/{}",
            c.spec.provider_ref.kind.as_str(),
            c.spec.provider_ref.name
        ),
    );
    field.add("Secret", c.spec.secret_ref.name.clone());
    let verdict = match status.condition(ConditionType::Ready) {
        Some(r) => format!(
            "{} {} (Ready {} since {})",
            summary.mark,
            summary.reason,
            r.status,
            when(Some(&r.last_transition_time), now)
        ),
        None => format!("{} not checked yet", summary.mark),
    };
    field.add("Status", verdict);
    if let (Some(seen), Some(generation)) = (status.observed_generation, c.metadata.generation)
        && seen != generation
    {
        field.add(
            "Spec",
            format!("changed (generation {generation}); the last check saw generation {seen}"),
        );
    }
    field.add(
        "Account",
        match &status.account {
            Some(a) => account_text(a.name.as_deref(), a.id.as_deref()),
            None => "- (not reported yet)".to_owned(),
        },
    );
    if let Some(a) = &c.spec.account {
        field.add(
            "Expected account",
            account_text(a.display_name.as_deref(), Some(&a.id)),
        );
    }
}

/// Scopes, times and the check request.
fn token_fields(
    field: &mut Fields,
    c: &ChannelConnection,
    status: &ChannelConnectionStatus,
    now: jiff::Timestamp,
) {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    field.add("Scopes required", list(&c.spec.required_scopes));
    field.add("Scopes granted", list(&status.granted_scopes));
    field.add("Scopes missing", list(&status.missing_scopes));
    field.add("Expires", when(status.expires_at.as_ref(), now));
    field.add(
        "Data access expires",
        when(status.data_access_expires_at.as_ref(), now),
    );
    field.add("Last check", when(status.last_check_time.as_ref(), now));
    field.add("Next check", when(status.next_check_time.as_ref(), now));
    field.add("Last valid", when(status.last_valid_time.as_ref(), now));
    field.add("Last refresh", when(status.last_refresh_time.as_ref(), now));
    field.add(
        "Consecutive failures",
        status.consecutive_failures.to_string(),
    );
    let asked = c
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHECK_REQUESTED_ANNOTATION));
    let handled = status.last_handled_check_request.as_ref();
    match (asked, handled) {
        (Some(a), Some(h)) if a == h => field.add("Check request", format!("{h} (handled)")),
        (Some(a), _) => field.add("Check request", format!("{a} (pending)")),
        (None, Some(h)) => field.add("Check request", format!("{h} (handled)")),
        (None, None) => {}
    }
}

/// The conditions, in [`CONDITION_ORDER`].
fn conditions_section(status: &ChannelConnectionStatus, now: jiff::Timestamp) -> String {
    let mut out = "\nConditions:\n".to_owned();
    if status.conditions.is_empty() {
        out.push_str("  none yet: the connection has not been checked\n");
        return out;
    }
    let mut conditions: Vec<_> = status.conditions.iter().collect();
    conditions.sort_by_key(|k| {
        CONDITION_ORDER
            .iter()
            .position(|t| t.as_str() == k.type_)
            .unwrap_or(CONDITION_ORDER.len())
    });
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|k| {
            vec![
                k.type_.clone(),
                k.status.clone(),
                k.reason.clone(),
                ago(k.last_transition_time.0, now),
                one_line(&k.message),
            ]
        })
        .collect();
    out.push_str(&table(
        &["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"],
        &rows,
    ));
    out
}

/// The last Events, or why they could not be listed.
fn events_section(events: &Result<Vec<Event>, String>, now: jiff::Timestamp) -> String {
    let list = match events {
        Ok(list) if list.is_empty() => return "\nEvents: none\n".to_owned(),
        Ok(list) => list,
        Err(e) => return format!("\nEvents: {e}\n"),
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let mut age = event_time(e)
                .map(|t| ago(t, now))
                .unwrap_or_else(|| "-".to_owned());
            if let Some(s) = e.series.as_ref().filter(|s| s.count > 1) {
                age.push_str(&format!(" (x{})", s.count));
            }
            vec![
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                age,
                one_line(e.note.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    format!(
        "\nEvents (last {}, newest last):\n{}",
        list.len(),
        table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows)
    )
}

/// ` as someone who manages ACCOUNT`, for "log in" advice; empty without `spec.account`.
pub(crate) fn as_manager(c: &ChannelConnection) -> String {
    c.spec
        .account
        .as_ref()
        .map(|a| format!(" as someone who manages {}", a.label()))
        .unwrap_or_default()
}

/// The one line saying what to do about `c`.
pub(super) fn advice(
    c: &ChannelConnection,
    summary: &Summary,
    status: &ChannelConnectionStatus,
) -> String {
    if status.reauth_url.is_some() {
        let who = as_manager(c);
        let first = if summary.reason == "AccountActionRequired" {
            "finish what the provider's website asks of the account, then "
        } else {
            ""
        };
        return format!(
            "what to do: {first}open the link above in a browser and log in{who}, granting every permission asked (do not delete the connection)"
        );
    }
    let trouble = status
        .condition(ConditionType::Reconciling)
        .is_some_and(|r| r.status == "True" && r.reason == "ProviderUnavailable");
    if trouble {
        return what_to_do("ProviderUnavailable").to_owned();
    }
    if summary.ready {
        return "nothing to do: the channel works".to_owned();
    }
    what_to_do(&summary.reason).to_owned()
}

/// `name (id ID)`, or whichever of the two is known.
pub(super) fn account_text(name: Option<&str>, id: Option<&str>) -> String {
    match (name, id) {
        (Some(n), Some(i)) if n != i => format!("{n} (id {i})"),
        (Some(n), _) => n.to_owned(),
        (None, Some(i)) => format!("id {i}"),
        (None, None) => "-".to_owned(),
    }
}

/// A time as RFC 3339 (whole seconds, UTC) with how long ago or ahead it is; `-` when unset.
pub(super) fn when(t: Option<&Time>, now: jiff::Timestamp) -> String {
    let Some(Time(t)) = t else {
        return "-".to_owned();
    };
    let exact = t.strftime("%Y-%m-%dT%H:%M:%SZ");
    if *t > now {
        format!(
            "{exact} (in {})",
            human_duration(t.as_second() - now.as_second())
        )
    } else {
        format!("{exact} ({})", ago(*t, now))
    }
}

/// `3m20s ago`.
pub(super) fn ago(t: jiff::Timestamp, now: jiff::Timestamp) -> String {
    format!("{} ago", human_duration(now.as_second() - t.as_second()))
}

/// Provider text on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An aligned table indented by two spaces; the last column is not padded.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = "  ".to_owned();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&pad(cell, widths[i]));
                out.push_str("  ");
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}
