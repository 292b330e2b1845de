//! One email for several channels of the same owners broken by the same cause at about the same
//! time (an admin's password change kills every Page they connected): the channels listed, with
//! one link when one login heals them all (Facebook Pages of one app in one namespace: the
//! callback reconnects every broken Page the login manages), else each channel's own link.

use super::{Notice, capitalize, escape_html, when};
use crate::api::{ProviderType, Reason};

/// Two or more notices with the same news for the same owners.
#[derive(Clone, Debug)]
pub struct Digest {
    pub notices: Vec<Notice>,
}

impl Digest {
    fn first(&self) -> &Notice {
        &self.notices[0]
    }

    /// Whether one login heals every channel: Facebook Pages of one provider object in one
    /// namespace.
    pub fn one_login(&self) -> bool {
        let f = self.first();
        f.provider_type == Some(ProviderType::Facebook)
            && self.notices.iter().all(|n| {
                n.provider_type == f.provider_type
                    && n.namespace == f.namespace
                    && n.provider_name == f.provider_name
            })
    }

    /// The link of the group when one login heals them all.
    fn shared_link(&self) -> Option<&str> {
        self.one_login()
            .then(|| self.notices.iter().find_map(|n| n.reauth_url.as_deref()))
            .flatten()
    }

    /// "3 Facebook pages" when they are of one kind, else "3 channels".
    fn counted(&self) -> String {
        let noun = self.first().noun();
        let n = self.notices.len();
        if self.notices.iter().all(|x| x.noun() == noun) && noun != "channel" {
            format!("{n} {noun}s")
        } else {
            format!("{n} channels")
        }
    }

    pub fn reason(&self) -> Reason {
        self.first().reason()
    }

    /// `namespace/name` of every channel, for the `X-Relink-Connection` header.
    pub fn connections(&self) -> String {
        self.notices
            .iter()
            .map(|n| format!("{}/{}", n.namespace, n.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn headline(&self) -> String {
        let what = self.counted();
        let core = match self.first().problem_reason() {
            Some(Reason::ScopesMissing) => format!("{what} are missing permissions they need"),
            Some(Reason::AccountMismatch) => format!("{what} are connected with the wrong account"),
            Some(Reason::AccountActionRequired) => {
                format!("{what} are blocked until someone acts on the account")
            }
            Some(Reason::SecretNotFound) => {
                format!("{what} are not connected: their tokens are missing")
            }
            _ => format!("{what} need you to log in again"),
        };
        match self.first().news {
            super::News::Reminder(_) => format!("Reminder: {core}"),
            _ => capitalize(&core),
        }
    }

    pub fn subject(&self) -> String {
        format!("[relink] {}", self.headline())
    }

    /// One line per channel: its name, connection and status.
    fn channel_line(n: &Notice) -> String {
        let since = n
            .since
            .map(|s| format!(" since {}", when(s)))
            .unwrap_or_default();
        format!(
            "{} ({}/{}, {}{since})",
            capitalize(&n.channel()),
            n.namespace,
            n.name,
            n.reason().as_str()
        )
    }

    pub fn text(&self) -> String {
        let f = self.first();
        let mut out = String::from("Hello,\n\n");
        out.push_str(&self.headline());
        out.push_str(".\n\nWhat happened\n");
        out.push_str(&f.explanation());
        out.push_str("\n\nWhat to do\n");
        match self.shared_link() {
            Some(url) => out.push_str(&format!(
                "{}: open this link and log in with an account that manages these Pages; accept every permission asked and select all of them. One login reconnects every one of them.\n\n  {url}\n\n",
                f.action_label()
            )),
            None => {
                out.push_str("Each channel has its own link; log in with an account that manages it and accept every permission asked.\n\n");
                for n in &self.notices {
                    match &n.reauth_url {
                        Some(url) => out.push_str(&format!("  {}:\n  {url}\n\n", capitalize(&n.channel()))),
                        None => out.push_str(&format!("  {}: {}\n\n", capitalize(&n.channel()), n.no_link_advice())),
                    }
                }
            }
        }
        out.push_str(Notice::DO_NOT_DELETE);
        out.push_str("\n\nThe channels\n");
        for n in &self.notices {
            out.push_str(&format!("  - {}\n", Self::channel_line(n)));
        }
        out.push('\n');
        out.push_str(&f.footer());
        out.push('\n');
        out
    }

    pub fn html(&self) -> String {
        let e = escape_html;
        let f = self.first();
        let button = |url: &str, label: &str| {
            format!(
                "<p style=\"margin:20px 0\"><a href=\"{}\" style=\"display:inline-block;padding:12px 22px;background:#1a73e8;color:#ffffff;text-decoration:none;border-radius:4px;font-weight:bold\">{}</a></p>\n",
                e(url),
                e(label)
            )
        };
        let mut out =
            String::from("<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>");
        out.push_str(&e(&self.subject()));
        out.push_str("</title></head>\n<body style=\"margin:0;padding:24px;background:#f5f5f5;font-family:Arial,Helvetica,sans-serif;color:#212121\">\n<div style=\"max-width:600px;margin:0 auto;background:#ffffff;border-radius:6px;padding:24px\">\n");
        out.push_str(&format!(
            "<h2 style=\"margin-top:0;color:#c62828\">{}</h2>\n<p>{}</p>\n",
            e(&self.headline()),
            e(&f.explanation())
        ));
        match self.shared_link() {
            Some(url) => {
                out.push_str(&button(url, &f.action_label()));
                out.push_str("<p>Log in with an account that manages these Pages, accept every permission asked and select all of them: one login reconnects every one of them.</p>\n");
            }
            None => {
                for n in &self.notices {
                    out.push_str(&format!("<h3>{}</h3>\n", e(&capitalize(&n.channel()))));
                    match &n.reauth_url {
                        Some(url) => out.push_str(&button(url, &n.action_label())),
                        None => out.push_str(&format!("<p>{}</p>\n", e(&n.no_link_advice()))),
                    }
                }
            }
        }
        out.push_str(&format!(
            "<p style=\"padding:12px;background:#fff8e1;border-left:4px solid #ffb300\"><strong>{}</strong></p>\n<ul>\n",
            e(Notice::DO_NOT_DELETE)
        ));
        for n in &self.notices {
            out.push_str(&format!("<li>{}</li>\n", e(&Self::channel_line(n))));
        }
        out.push_str(&format!(
            "</ul>\n<p style=\"margin-top:24px;font-size:12px;color:#757575\">{}</p>\n</div>\n</body>\n</html>\n",
            e(&f.footer())
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::News;
    use super::*;

    fn page(name: &str, provider: &str, url: Option<&str>) -> Notice {
        Notice {
            name: name.into(),
            provider_name: provider.into(),
            display_name: format!("{name} <Page>"),
            reauth_url: url.map(str::to_owned),
            ..Notice::example(News::Problem(Reason::Revoked))
        }
    }

    #[test]
    fn pages_of_one_app_share_one_link() {
        let d = Digest {
            notices: vec![
                page("acme", "meta", Some("https://fb/dialog?state=1")),
                page("outlet", "meta", Some("https://fb/dialog?state=2")),
            ],
        };
        assert!(d.one_login());
        assert_eq!(
            d.subject(),
            "[relink] 2 Facebook pages need you to log in again"
        );
        let text = d.text();
        assert!(
            text.contains("state=1") && !text.contains("state=2"),
            "{text}"
        );
        assert!(text.contains("One login reconnects every one of them"));
        assert!(text.contains("marketing/outlet"));
        let html = d.html();
        assert!(html.contains("acme &lt;Page&gt;"), "{html}");
        assert_eq!(html.matches("state=1").count(), 1);
    }

    #[test]
    fn other_channels_each_get_their_link() {
        let mut slack = page("team", "slack", Some("https://slack/authorize?state=3"));
        slack.provider_type = Some(ProviderType::Slack);
        let d = Digest {
            notices: vec![
                page("acme", "meta", Some("https://fb/dialog?state=1")),
                slack,
            ],
        };
        assert!(!d.one_login());
        assert!(d.subject().contains("2 channels"));
        let text = d.text();
        assert!(
            text.contains("state=1") && text.contains("state=3"),
            "{text}"
        );
        assert_eq!(d.connections(), "marketing/acme, marketing/team");
    }
}
