//! The words owners read: email subject, text and HTML bodies, webhook and Slack payloads.
//! Built from the connection's status only (never from the token Secret), so no token can end
//! up in a message; the only link is `status.reauthUrl`, which carries a client ID and a
//! signed state, not a secret.

use serde_json::{Value, json};

use super::decide::News;
use crate::api::{ProviderType, Reason};

mod digest;
pub use digest::Digest;

/// Everything a notice says, gathered once and rendered per destination.
#[derive(Clone, Debug)]
pub struct Notice {
    pub news: News,
    pub namespace: String,
    pub name: String,
    /// `spec.providerRef.name`.
    pub provider_name: String,
    /// The provider object's `spec.type`, when it could be read.
    pub provider_type: Option<ProviderType>,
    /// `spec.account.displayName`, else the reported account name, else the account ID, else
    /// the connection's name.
    pub display_name: String,
    pub account_id: Option<String>,
    pub reauth_url: Option<String>,
    /// The `Ready` condition's message.
    pub detail: Option<String>,
    pub missing_scopes: Vec<String>,
    pub expires_at: Option<jiff::Timestamp>,
    /// When `Ready` last changed (how long it has been broken, for reminders).
    pub since: Option<jiff::Timestamp>,
    /// Other broken Pages of the same Facebook app and owner: one login through this link
    /// reconnects every one of them the person manages.
    pub also_broken: Vec<String>,
    pub now: jiff::Timestamp,
}

/// A Facebook Page's notice with nothing optional set, for the notifier's tests to adjust.
#[cfg(test)]
impl Notice {
    pub fn example(news: News) -> Notice {
        Notice {
            news,
            namespace: "marketing".into(),
            name: "acme-fb".into(),
            provider_name: "meta".into(),
            provider_type: Some(ProviderType::Facebook),
            display_name: "Acme Support".into(),
            account_id: None,
            reauth_url: None,
            detail: None,
            missing_scopes: vec![],
            expires_at: None,
            since: None,
            now: "2026-01-01T08:05:00Z".parse().unwrap(),
            also_broken: vec![],
        }
    }
}

impl Notice {
    /// The network, as people call it.
    fn network(&self) -> &'static str {
        match self.provider_type {
            Some(ProviderType::Facebook) => "Facebook",
            Some(ProviderType::Instagram) => "Instagram",
            Some(ProviderType::Google) => "Google",
            Some(ProviderType::Microsoft) => "Microsoft",
            Some(ProviderType::Linkedin) => "LinkedIn",
            Some(ProviderType::X) => "X",
            Some(ProviderType::Slack) => "Slack",
            Some(ProviderType::Tiktok) => "TikTok",
            Some(ProviderType::OAuth2) | None => "the provider",
        }
    }

    /// What kind of channel this is.
    fn noun(&self) -> &'static str {
        match self.provider_type {
            Some(ProviderType::Facebook) => "Facebook page",
            Some(ProviderType::Instagram) => "Instagram account",
            Some(ProviderType::Google) => "Google account",
            Some(ProviderType::Microsoft) => "Microsoft account",
            Some(ProviderType::Linkedin) => "LinkedIn page",
            Some(ProviderType::X) => "X account",
            Some(ProviderType::Slack) => "Slack workspace",
            Some(ProviderType::Tiktok) => "TikTok account",
            Some(ProviderType::OAuth2) | None => "channel",
        }
    }

    /// `Facebook page "Acme Support"`.
    pub fn channel(&self) -> String {
        format!("{} \"{}\"", self.noun(), self.display_name)
    }

    /// The reason this notice is about (`Valid` for a recovery, `Expiring` for a warning).
    pub fn reason(&self) -> Reason {
        self.news.recorded_reason()
    }

    /// `critical` while a person must act, `warning` before an expiry, `info` on recovery.
    pub fn severity(&self) -> &'static str {
        match self.news {
            News::Problem(_) | News::Reminder(_) => "critical",
            News::ExpiryWarning => "warning",
            News::Recovery => "info",
        }
    }

    /// Short name of the kind of notice, for webhook consumers.
    pub fn event(&self) -> &'static str {
        match self.news {
            News::Problem(_) => "problem",
            News::Reminder(_) => "reminder",
            News::ExpiryWarning => "expiryWarning",
            News::Recovery => "recovery",
        }
    }

    fn problem_reason(&self) -> Option<Reason> {
        match self.news {
            News::Problem(r) | News::Reminder(r) => Some(r),
            _ => None,
        }
    }

    fn expiry_text(&self) -> String {
        match self.expires_at {
            Some(at) => {
                let secs = at.as_second().saturating_sub(self.now.as_second());
                let left = if secs <= 0 {
                    "now".to_owned()
                } else if secs < 2 * 3600 {
                    format!("in {} minutes", (secs / 60).max(1))
                } else if secs < 2 * 86_400 {
                    format!("in {} hours", secs / 3600)
                } else {
                    format!("in {} days", secs / 86_400)
                };
                format!("on {} ({left})", when(at))
            }
            None => "soon".to_owned(),
        }
    }

    /// One line saying what is going on (also the webhook's headline).
    pub fn headline(&self) -> String {
        let ch = self.channel();
        let core = match self.news {
            News::Problem(r) | News::Reminder(r) => match r {
                Reason::ScopesMissing => format!("{ch} is missing permissions it needs"),
                Reason::AccountMismatch => format!("{ch} is connected with the wrong account"),
                Reason::AccountActionRequired => {
                    format!("{ch} is blocked until someone acts on the account")
                }
                Reason::SecretNotFound => format!("{ch} is not connected: its token is missing"),
                _ => format!("{ch} needs you to log in again"),
            },
            News::ExpiryWarning => format!("{ch} will disconnect {}", self.expiry_text()),
            News::Recovery => format!("{ch} works again"),
        };
        match self.news {
            News::Reminder(_) => format!("Reminder: {core}"),
            _ => capitalize(&core),
        }
    }

    pub fn subject(&self) -> String {
        let h = self.headline();
        match self.news {
            News::ExpiryWarning => format!("[relink] {h}: log in again before then"),
            _ => format!("[relink] {h}"),
        }
    }

    /// What happened, in plain words.
    pub fn explanation(&self) -> String {
        let net = self.network();
        let net_cap = capitalize(net);
        // "page", "account", "workspace", "channel": the network is named already.
        let noun = self.noun().rsplit(' ').next().unwrap_or("channel");
        let stopped = "Until someone logs in again, nothing can be published or received through this channel.";
        match self.news {
            News::Problem(r) | News::Reminder(r) => match r {
                Reason::Revoked => format!(
                    "{net_cap} no longer accepts relink's access to this {noun}. This happens when someone changes the account's password, removes the app's access, logs out everywhere, or when {net} resets connections for security reasons. {stopped}"
                ),
                Reason::Expired => format!(
                    "The access to this {noun} has expired and could not be renewed automatically. {stopped}"
                ),
                Reason::RefreshFailed => format!(
                    "relink could not renew the access to this {noun}: {net} refused to extend it. {stopped}"
                ),
                Reason::ReauthorizationRequired => format!(
                    "The access to this {noun} is old enough that it must be renewed by logging in again, as {net} asks periodically. {stopped}"
                ),
                Reason::ScopesMissing => {
                    let which = if self.missing_scopes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", self.missing_scopes.join(", "))
                    };
                    format!(
                        "The access to this {noun} works, but some permissions the channel needs were not granted{which}. Log in again and accept every permission asked."
                    )
                }
                Reason::AccountMismatch => {
                    let id = self
                        .account_id
                        .as_deref()
                        .map(|a| format!(" (ID {a})"))
                        .unwrap_or_default();
                    format!(
                        "The login that was used does not reach \"{}\"{id}. Log in again with an account that manages it, and select it when {net} asks which ones to share.",
                        self.display_name
                    )
                }
                Reason::AccountActionRequired => format!(
                    "{net_cap} blocks access to this {noun} until someone deals with the account itself (for example a security check, new terms to accept, or a restriction). Sign in to {net} directly, resolve what it asks, then log in again through relink."
                ),
                Reason::SecretNotFound => format!(
                    "The Kubernetes Secret that holds this {noun}'s token does not exist, so the channel is not connected."
                ),
                _ => format!("This {noun} needs a person to act. {stopped}"),
            },
            News::ExpiryWarning => format!(
                "The access to this {noun} expires {} and relink cannot renew it by itself. Log in again before then to keep the channel connected; nothing else changes.",
                self.expiry_text()
            ),
            News::Recovery => format!(
                "relink checked it at {}: {net} accepts the token, it reaches the account and has every permission the channel needs. Nothing more to do.",
                when(self.now)
            ),
        }
    }

    /// Label of the one button.
    fn action_label(&self) -> String {
        match self.problem_reason() {
            Some(Reason::ScopesMissing) => format!("Log in to {} and grant access", self.network()),
            _ => format!("Log in to {} again", self.network()),
        }
    }

    /// What to do when there is no direct link.
    fn no_link_advice(&self) -> String {
        format!(
            "There is no direct re-authorization link for this connection yet. Ask the people who run relink in your cluster to re-authorize it, or look for a link with:\n  kubectl get channelconnection {} -n {} -o jsonpath='{{.status.reauthUrl}}'",
            self.name, self.namespace
        )
    }

    fn asks_for_action(&self) -> bool {
        !matches!(self.news, News::Recovery)
    }

    const DO_NOT_DELETE: &'static str = "Do not delete the connection to fix this: deleting and re-adding the channel does not restore the login, and everything tied to it would have to be set up again. Re-authorize instead.";

    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("Channel", capitalize(&self.channel()))];
        if let Some(a) = &self.account_id {
            f.push(("Account ID", a.clone()));
        }
        let provider = match self.provider_type {
            Some(t) => format!("{} (provider \"{}\")", t.as_str(), self.provider_name),
            None => format!("provider \"{}\"", self.provider_name),
        };
        f.push(("Provider", provider));
        f.push((
            "Connection",
            format!("{}/{} (ChannelConnection)", self.namespace, self.name),
        ));
        let mut status = self.reason().as_str().to_owned();
        if let (Some(since), true) = (self.since, self.problem_reason().is_some()) {
            status.push_str(&format!(" since {}", when(since)));
        }
        f.push(("Status", status));
        if let Some(at) = self.expires_at
            && matches!(self.news, News::ExpiryWarning)
        {
            f.push(("Expires", when(at)));
        }
        if let Some(d) = self.detail.as_deref().filter(|d| !d.is_empty()) {
            f.push(("Details", d.to_owned()));
        }
        f
    }

    /// The plain-text email body.
    /// One link for the group: the other broken Pages the same login reconnects.
    fn also_line(&self) -> Option<String> {
        (!self.also_broken.is_empty()).then(|| {
            format!(
                "The same login also reconnects your other broken Pages of this app that it manages: {}. One login is enough.",
                self.also_broken.join(", ")
            )
        })
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str("Hello,\n\n");
        out.push_str(&self.headline());
        out.push_str(".\n\n");
        out.push_str("What happened\n");
        out.push_str(&self.explanation());
        out.push_str("\n\n");
        if self.asks_for_action() {
            out.push_str("What to do\n");
            match &self.reauth_url {
                Some(url) => {
                    out.push_str(&format!(
                        "{}: open this link and log in with an account that manages \"{}\"; accept every permission asked.\n\n  {url}\n\n",
                        self.action_label(),
                        self.display_name
                    ));
                    if let Some(also) = self.also_line() {
                        out.push_str(&also);
                        out.push_str("\n\n");
                    }
                }
                None => {
                    out.push_str(&self.no_link_advice());
                    out.push_str("\n\n");
                }
            }
            out.push_str(Self::DO_NOT_DELETE);
            out.push_str("\n\n");
        }
        out.push_str("The channel\n");
        for (k, v) in self.facts() {
            out.push_str(&format!("  {:<11} {v}\n", format!("{k}:")));
        }
        out.push('\n');
        out.push_str(&self.footer());
        out.push('\n');
        out
    }

    fn footer(&self) -> String {
        "You receive this message because you are listed in spec.owners of this ChannelConnection. -- relink".to_owned()
    }

    /// The HTML email body: the same content, with the link as a button.
    pub fn html(&self) -> String {
        let e = escape_html;
        let color = match self.severity() {
            "critical" => "#c62828",
            "warning" => "#ef6c00",
            _ => "#2e7d32",
        };
        let mut out = String::new();
        out.push_str("<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>");
        out.push_str(&e(&self.subject()));
        out.push_str("</title></head>\n");
        out.push_str("<body style=\"margin:0;padding:24px;background:#f5f5f5;font-family:Arial,Helvetica,sans-serif;color:#212121\">\n");
        out.push_str("<div style=\"max-width:600px;margin:0 auto;background:#ffffff;border-radius:6px;padding:24px\">\n");
        out.push_str(&format!(
            "<h2 style=\"margin-top:0;color:{color}\">{}</h2>\n",
            e(&self.headline())
        ));
        out.push_str(&format!("<p>{}</p>\n", e(&self.explanation())));
        if self.asks_for_action() {
            match &self.reauth_url {
                Some(url) => {
                    out.push_str(&format!(
                        "<p style=\"margin:28px 0\"><a href=\"{}\" style=\"display:inline-block;padding:12px 22px;background:#1a73e8;color:#ffffff;text-decoration:none;border-radius:4px;font-weight:bold\">{}</a></p>\n",
                        e(url),
                        e(&self.action_label())
                    ));
                    out.push_str(&format!(
                        "<p>Log in with an account that manages &quot;{}&quot; and accept every permission asked. If the button does not work, open this address:<br>\n<a href=\"{}\">{}</a></p>\n",
                        e(&self.display_name),
                        e(url),
                        e(url)
                    ));
                    if let Some(also) = self.also_line() {
                        out.push_str(&format!("<p>{}</p>\n", e(&also)));
                    }
                }
                None => {
                    out.push_str(&format!(
                        "<p>There is no direct re-authorization link for this connection yet. Ask the people who run relink in your cluster to re-authorize it, or look for a link with:<br>\n<code>kubectl get channelconnection {} -n {} -o jsonpath='{{.status.reauthUrl}}'</code></p>\n",
                        e(&self.name),
                        e(&self.namespace)
                    ));
                }
            }
            out.push_str(&format!(
                "<p style=\"padding:12px;background:#fff8e1;border-left:4px solid #ffb300\"><strong>{}</strong></p>\n",
                e(Self::DO_NOT_DELETE)
            ));
        }
        out.push_str("<table style=\"border-collapse:collapse;margin-top:16px;font-size:14px\">\n");
        for (k, v) in self.facts() {
            out.push_str(&format!(
                "<tr><td style=\"padding:4px 12px 4px 0;color:#757575;vertical-align:top\">{}</td><td style=\"padding:4px 0\">{}</td></tr>\n",
                e(k),
                e(&v)
            ));
        }
        out.push_str("</table>\n");
        out.push_str(&format!(
            "<p style=\"margin-top:24px;font-size:12px;color:#757575\">{}</p>\n",
            e(&self.footer())
        ));
        out.push_str("</div>\n</body>\n</html>\n");
        out
    }

    /// The generic webhook body.
    pub fn webhook_json(&self) -> Value {
        json!({
            "namespace": self.namespace,
            "name": self.name,
            "provider": self.provider_name,
            "providerType": self.provider_type.map(|t| t.as_str()),
            "account": self.account_id,
            "displayName": self.display_name,
            "event": self.event(),
            "reason": self.reason().as_str(),
            "message": format!("{}. {}", self.headline(), self.explanation()),
            "reauthUrl": self.reauth_url,
            "expiresAt": self.expires_at.map(|t| t.to_string()),
            "severity": self.severity(),
            "timestamp": self.now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        })
    }

    /// A Slack incoming-webhook body: `text` (also the notification fallback) and blocks.
    pub fn slack_json(&self) -> Value {
        let s = escape_slack;
        let icon = match self.severity() {
            "critical" => ":rotating_light:",
            "warning" => ":hourglass_flowing_sand:",
            _ => ":white_check_mark:",
        };
        let mut text = format!(
            "{icon} *{}*\n{}",
            s(&self.headline()),
            s(&self.explanation())
        );
        if self.asks_for_action() {
            match &self.reauth_url {
                Some(url) => text.push_str(&format!("\n<{}|{}>", s(url), s(&self.action_label()))),
                None => text.push_str(&format!("\n{}", s(&self.no_link_advice()))),
            }
            text.push_str(&format!("\n_{}_", s(Self::DO_NOT_DELETE)));
        }
        let context = format!(
            "`{}/{}` · {} · {}",
            s(&self.namespace),
            s(&self.name),
            s(&self.provider_name),
            self.reason().as_str()
        );
        let mut blocks = vec![json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": text},
        })];
        if let (Some(url), true) = (&self.reauth_url, self.asks_for_action()) {
            blocks.push(json!({
                "type": "actions",
                "elements": [{
                    "type": "button",
                    "text": {"type": "plain_text", "text": self.action_label()},
                    "url": url,
                    "style": "primary",
                }],
            }));
        }
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": context}],
        }));
        json!({"text": text, "blocks": blocks})
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `2026-01-08 12:00 UTC`.
fn when(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

pub use crate::text::escape_html;

/// Slack's mrkdwn reserves only these three.
fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(news: News, reauth: Option<&str>) -> Notice {
        Notice {
            account_id: Some("1234567890".into()),
            reauth_url: reauth.map(str::to_owned),
            detail: Some("token revoked by the provider; re-authorize the channel".into()),
            since: Some("2026-01-01T08:00:00Z".parse().unwrap()),
            ..Notice::example(news)
        }
    }

    const URL: &str = "https://www.facebook.com/v19.0/dialog/oauth?client_id=1&state=a.b&x=<y>";

    #[test]
    fn one_link_for_every_broken_page_of_the_owner() {
        let mut n = notice(News::Problem(Reason::Revoked), Some(URL));
        assert!(!n.text().contains("also reconnects"));
        n.also_broken = vec!["Acme Outlet".into(), "Acme <Kids>".into()];
        let text = n.text();
        assert!(
            text.contains("also reconnects your other broken Pages of this app that it manages: Acme Outlet, Acme <Kids>"),
            "{text}"
        );
        let html = n.html();
        assert!(html.contains("Acme Outlet, Acme &lt;Kids&gt;"), "{html}");
    }

    #[test]
    fn problem_subject_names_the_channel() {
        let n = notice(News::Problem(Reason::Revoked), Some(URL));
        assert_eq!(
            n.subject(),
            "[relink] Facebook page \"Acme Support\" needs you to log in again"
        );
        let r = notice(News::Reminder(Reason::Revoked), Some(URL));
        assert!(r.subject().starts_with("[relink] Reminder: Facebook page"));
    }

    #[test]
    fn text_has_the_link_the_facts_and_the_warning() {
        let n = notice(News::Problem(Reason::Revoked), Some(URL));
        let t = n.text();
        assert!(t.contains(URL));
        assert!(t.contains("Do not delete the connection"));
        assert!(t.contains("Re-authorize instead"));
        assert!(t.contains("marketing/acme-fb"));
        assert!(t.contains("1234567890"));
        assert!(t.contains("facebook (provider \"meta\")"));
        assert!(t.contains("Revoked since 2026-01-01 08:00 UTC"));
        assert!(t.is_ascii(), "plain ASCII keeps the body 7bit");
    }

    #[test]
    fn html_escapes_and_has_one_button() {
        let mut n = notice(News::Problem(Reason::Revoked), Some(URL));
        n.display_name = "<script>alert(1)</script>".into();
        let h = n.html();
        assert!(!h.contains("<script>"));
        assert!(h.contains("&lt;script&gt;"));
        assert!(h.contains("x=&lt;y&gt;"));
        assert!(h.contains("&amp;state=a.b"));
        assert_eq!(h.matches("display:inline-block").count(), 1);
        assert!(h.lines().all(|l| l.len() < 900), "lines fit SMTP limits");
    }

    #[test]
    fn without_a_link_it_still_says_what_to_do() {
        let n = notice(News::Problem(Reason::Expired), None);
        let t = n.text();
        assert!(t.contains("no direct re-authorization link"));
        assert!(t.contains("kubectl get channelconnection acme-fb -n marketing"));
        assert!(!n.html().contains("display:inline-block"));
    }

    #[test]
    fn recovery_asks_nothing() {
        let n = notice(News::Recovery, Some(URL));
        assert_eq!(
            n.subject(),
            "[relink] Facebook page \"Acme Support\" works again"
        );
        assert!(!n.text().contains("Do not delete"));
        assert!(!n.text().contains(URL));
        assert_eq!(n.severity(), "info");
        assert_eq!(n.webhook_json()["reason"], "Valid");
    }

    #[test]
    fn expiry_warning_says_when() {
        let mut n = notice(News::ExpiryWarning, None);
        n.expires_at = Some("2026-01-04T08:05:00Z".parse().unwrap());
        assert_eq!(
            n.subject(),
            "[relink] Facebook page \"Acme Support\" will disconnect on 2026-01-04 08:05 UTC (in 3 days): log in again before then"
        );
        assert_eq!(n.severity(), "warning");
    }

    #[test]
    fn webhook_payload_fields() {
        let n = notice(News::Problem(Reason::ScopesMissing), Some(URL));
        let v = n.webhook_json();
        for k in [
            "namespace",
            "name",
            "provider",
            "account",
            "reason",
            "message",
            "reauthUrl",
            "severity",
            "timestamp",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["namespace"], "marketing");
        assert_eq!(v["account"], "1234567890");
        assert_eq!(v["reason"], "ScopesMissing");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["reauthUrl"], URL);
        assert_eq!(v["timestamp"], "2026-01-01T08:05:00Z");
    }

    #[test]
    fn slack_payload_has_text_and_button() {
        let n = notice(News::Problem(Reason::Revoked), Some(URL));
        let v = n.slack_json();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("needs you to log in again"));
        assert!(text.contains("x=&lt;y&gt;|Log in to Facebook again>"));
        assert_eq!(v["blocks"][1]["elements"][0]["url"], URL);
    }

    #[test]
    fn generic_provider_reads_naturally() {
        let mut n = notice(News::Problem(Reason::Revoked), None);
        n.provider_type = None;
        assert_eq!(
            n.subject(),
            "[relink] Channel \"Acme Support\" needs you to log in again"
        );
        assert!(
            n.explanation()
                .starts_with("The provider no longer accepts")
        );
    }
}

#[cfg(test)]
mod readme_sample {
    use super::*;

    /// The sample email in the README is what relink renders for that connection.
    #[test]
    fn the_readme_shows_the_email_relink_sends() {
        let notice = Notice {
            news: News::Problem(Reason::Revoked),
            namespace: "marketing".into(),
            name: "acme-support-fb".into(),
            provider_name: "facebook".into(),
            provider_type: Some(ProviderType::Facebook),
            display_name: "Acme Support".into(),
            account_id: Some("104839201928374".into()),
            reauth_url: Some("https://www.facebook.com/v25.0/dialog/oauth?client_id=1234567890&redirect_uri=https%3A%2F%2Frelink.example.com%2Foauth%2Fcallback&scope=pages_manage_posts%2Cpages_read_engagement&state=eyJucyI6...".into()),
            detail: Some("Meta reports the token as invalid: Error validating access token: The session has been invalidated because the user changed their password (code 190, subcode 460); re-authorize the channel".into()),
            missing_scopes: vec![],
            expires_at: None,
            since: Some("2026-03-02T09:14:05Z".parse().unwrap()),
            now: "2026-03-02T09:14:06Z".parse().unwrap(),
            also_broken: vec![],
        };
        let sample = format!(
            "```text\nSubject: {}\n\n{}```\n",
            notice.subject(),
            notice.text()
        );
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        assert!(
            readme.contains(&sample),
            "README.md's sample email is stale; it should read:\n{sample}"
        );
    }
}
