//! Telling a connection's owners when a person must act, when its token will expire soon,
//! and when it recovers: by email to `spec.owners` and by webhook (`spec.notify.webhookSecretRef`).
//!
//! Exactly once per change: what was told is recorded in `status.lastNotification` (reason,
//! time, and the destinations reached), written with the same status write as the check, so a
//! restart or a new leader reads it back and sends nothing twice. Delivery happens inside the
//! check with short timeouts and one attempt: a destination that failed is not recorded and is
//! tried again on the next check (the check schedule is the backoff), a failure raises a
//! Warning Event `NotificationFailed` and counts in `relink_notifications_total`, and nothing
//! ever blocks the status write. See `docs/notifications.md`.

pub mod decide;
pub mod email;
pub mod message;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use tracing::{debug, info, warn};

use crate::api::{
    ChannelConnection, ChannelConnectionStatus, ChannelProvider, ClusterChannelProvider,
    ConditionType, NotificationRecord, ProviderKind, ProviderType,
};
use crate::providers::Http;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::ChannelLabels;
use decide::{News, Policy};
use message::Notice;

/// Operator-level notification settings (flags).
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// `smtp://host:port` (plain), `smtp://host:port?tls=required` (STARTTLS) or
    /// `smtps://host:port` (implicit TLS).
    pub smtp_url: Option<String>,
    /// Sender address of emails.
    pub smtp_from: Option<String>,
    /// Secret (operator namespace) with `username` and `password` for SMTP.
    pub smtp_credentials_secret: Option<String>,
    /// Reminder while a connection stays broken (zero: no reminders).
    pub reminder_interval: Duration,
    /// Warn this long before a token that cannot be refreshed expires.
    pub expiry_warning: Duration,
    pub operator_namespace: String,
    /// Email only owners in these domains (`--allowed-email-domains`); empty: any domain.
    pub allowed_email_domains: Vec<String>,
}

/// A destination of notices, as named in `lastNotification.channels` and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Webhook => "webhook",
        }
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The mail settings, when email is configured and valid.
struct Mail {
    server: email::SmtpServer,
    from: Mailbox,
}

/// Decides whom to tell about what, and sends it.
pub struct Notifier {
    client: Client,
    config: NotifyConfig,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    mail: Option<Mail>,
}

impl Notifier {
    pub fn new(client: Client, config: NotifyConfig, metrics: Arc<Metrics>) -> Self {
        // lettre's rustls and reqwest need a process-wide crypto provider; ring, as kube uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mail = mail_settings(&config);
        let reporter = Reporter {
            controller: "relink".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics,
            mail,
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            reminder_interval: self.config.reminder_interval,
            expiry_warning: self.config.expiry_warning,
        }
    }

    /// The destinations this connection has: email when the operator has a mail server,
    /// `spec.notify.email` is not false and there are owners; webhook when a Secret is named.
    pub fn destinations(&self, conn: &ChannelConnection) -> Vec<Channel> {
        let mut d = Vec::new();
        let spec = &conn.spec;
        if self.mail.is_some() && spec.notify.email && !self.owners(conn).0.is_empty() {
            d.push(Channel::Email);
        }
        if spec.notify.webhook_secret_ref.is_some() {
            d.push(Channel::Webhook);
        }
        d
    }

    /// Called after every check with the status about to be written. Sends what is due and
    /// records it in `new.lastNotification`, so the same news is not sent twice (also across
    /// restarts, since the record is written with the status).
    ///
    /// Failure handling: only destinations that accepted the notice are recorded. When none
    /// did, nothing is recorded and the next check tries again; when some did, the record lists
    /// them and the others are tried again on later checks (never the ones that already have
    /// it), until the reminder interval, when the reminder goes to all of them.
    pub async fn on_check(
        &self,
        conn: &ChannelConnection,
        _old: &ChannelConnectionStatus,
        new: &mut ChannelConnectionStatus,
        now: jiff::Timestamp,
        http: &Http,
    ) {
        self.note_unmailed_owners(conn, new);
        let destinations = self.destinations(conn);
        if destinations.is_empty() {
            return;
        }
        let policy = self.policy();
        let state = decide::state(new, &conn.spec, now, &policy);
        let last = new.last_notification.clone();
        let (news, targets, fresh) =
            match decide::decide(state, new, &conn.spec, last.as_ref(), now, &policy) {
                Some(news) => (news, destinations, true),
                None => match decide::pending(state, last.as_ref(), &destinations, now, &policy) {
                    Some((news, missing)) => (news, missing.into_iter().copied().collect(), false),
                    None => return,
                },
            };
        let notice = self.notice(conn, new, news, now).await;
        let ns = conn.namespace().unwrap_or_default();
        let name = conn.name_any();

        let email = async {
            if targets.contains(&Channel::Email) {
                Some(self.send_email(conn, &notice).await)
            } else {
                None
            }
        };
        let hook = async {
            if targets.contains(&Channel::Webhook) {
                Some(self.send_webhook(conn, &ns, &notice, http).await)
            } else {
                None
            }
        };
        let (email, hook) = tokio::join!(email, hook);

        let mut reached = Vec::new();
        let mut failures = Vec::new();
        for (channel, result) in [(Channel::Email, email), (Channel::Webhook, hook)] {
            let Some(result) = result else { continue };
            let ok = result.is_ok();
            self.metrics
                .notifications
                .get_or_create(&ChannelLabels {
                    channel: channel.as_str().to_owned(),
                    result: if ok { "sent" } else { "failed" }.to_owned(),
                })
                .inc();
            match result {
                Ok(()) => reached.push(channel),
                Err(e) => {
                    warn!(
                        namespace = %ns,
                        name = %name,
                        channel = channel.as_str(),
                        reason = %notice.reason(),
                        error = %e,
                        "notification failed; the next check tries again"
                    );
                    failures.push(format!("{}: {e}", channel.as_str()));
                }
            }
        }

        if !reached.is_empty() {
            let reached_names: Vec<&str> = reached.iter().map(|c| c.as_str()).collect();
            info!(
                namespace = %ns,
                name = %name,
                event = notice.event(),
                reason = %notice.reason(),
                channels = %reached_names.join(","),
                "owners notified"
            );
            new.last_notification = Some(if fresh {
                NotificationRecord {
                    reason: news.recorded_reason().as_str().to_owned(),
                    time: Time(now),
                    channels: Some(reached_names.join(",")),
                }
            } else {
                // Same news, more destinations reached: keep the original time (reminders
                // count from it).
                let mut all: Vec<String> = last
                    .as_ref()
                    .and_then(|l| l.channels.clone())
                    .map(|c| c.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                all.extend(reached_names.iter().map(|s| (*s).to_owned()));
                NotificationRecord {
                    reason: news.recorded_reason().as_str().to_owned(),
                    time: last.as_ref().map(|l| l.time.clone()).unwrap_or(Time(now)),
                    channels: Some(all.join(",")),
                }
            });
            self.publish(
                conn,
                EventType::Normal,
                "NotificationSent",
                format!(
                    "Told the owners ({}): {}",
                    reached_names.join(", "),
                    notice.headline()
                ),
            )
            .await;
        }
        if !failures.is_empty() {
            self.publish(
                conn,
                EventType::Warning,
                "NotificationFailed",
                format!(
                    "Could not tell the owners ({}); the next check tries again. {}",
                    notice.reason(),
                    failures.join("; ")
                ),
            )
            .await;
        }
    }

    /// Gathers what the notice says from the status (never from the token Secret).
    async fn notice(
        &self,
        conn: &ChannelConnection,
        new: &ChannelConnectionStatus,
        news: News,
        now: jiff::Timestamp,
    ) -> Notice {
        let ready = new.condition(ConditionType::Ready);
        let spec_account = conn.spec.account.as_ref();
        let reported = new.account.as_ref();
        let account_id = spec_account
            .map(|a| a.id.clone())
            .or_else(|| reported.and_then(|a| a.id.clone()));
        let display_name = spec_account
            .and_then(|a| a.display_name.clone())
            .or_else(|| reported.and_then(|a| a.name.clone()))
            .or_else(|| account_id.clone())
            .unwrap_or_else(|| conn.name_any());
        Notice {
            news,
            namespace: conn.namespace().unwrap_or_default(),
            name: conn.name_any(),
            provider_name: conn.spec.provider_ref.name.clone(),
            provider_type: self.provider_type(conn).await,
            display_name,
            account_id,
            reauth_url: new.reauth_url.clone(),
            detail: match news {
                News::Recovery => None,
                _ => ready.map(|c| c.message.clone()),
            },
            missing_scopes: new.missing_scopes.clone(),
            expires_at: new.expires_at.as_ref().map(|t| t.0),
            since: ready.map(|c| c.last_transition_time.0),
            now,
        }
    }

    /// The provider object's type, for wording ("Facebook page"); `None` if unreadable.
    async fn provider_type(&self, conn: &ChannelConnection) -> Option<ProviderType> {
        let r = &conn.spec.provider_ref;
        let result = match r.kind {
            ProviderKind::ChannelProvider => {
                let ns = conn.namespace().unwrap_or_default();
                Api::<ChannelProvider>::namespaced(self.client.clone(), &ns)
                    .get_opt(&r.name)
                    .await
                    .map(|p| p.map(|p| p.spec.type_))
            }
            ProviderKind::ClusterChannelProvider => {
                Api::<ClusterChannelProvider>::all(self.client.clone())
                    .get_opt(&r.name)
                    .await
                    .map(|p| p.map(|p| p.spec.type_))
            }
        };
        result.unwrap_or_else(|e| {
            debug!(error = %e, "cannot read the provider object for a notification");
            None
        })
    }

    async fn send_email(&self, conn: &ChannelConnection, notice: &Notice) -> Result<(), String> {
        let mail = self
            .mail
            .as_ref()
            .ok_or_else(|| "no mail server configured".to_owned())?;
        let mut owners = Vec::new();
        for o in self.owners(conn).0 {
            match o.parse::<Mailbox>() {
                Ok(m) => owners.push(m),
                Err(_) => warn!(
                    namespace = ?conn.namespace(),
                    name = %conn.name_any(),
                    owner = %o,
                    "spec.owners has an address that is not a valid email address; skipped"
                ),
            }
        }
        if owners.is_empty() {
            return Err("no valid address in spec.owners".to_owned());
        }
        let credentials = self.smtp_credentials().await?;
        let message = email::build(&mail.from, &owners, notice)?;
        email::send(&mail.server, credentials, message).await
    }

    /// `spec.owners` split into those the operator may email and those outside
    /// `--allowed-email-domains` (compared case-insensitively, exact domain).
    fn owners<'a>(&self, conn: &'a ChannelConnection) -> (Vec<&'a str>, Vec<&'a str>) {
        let allowed = &self.config.allowed_email_domains;
        conn.spec.owners.iter().map(String::as_str).partition(|o| {
            allowed.is_empty()
                || o.rsplit_once('@').is_some_and(|(_, domain)| {
                    allowed.iter().any(|a| a.eq_ignore_ascii_case(domain))
                })
        })
    }

    /// Says on the `Ready` condition which owners are never emailed because their domain is
    /// not allowed, so the connection's users learn it from `kubectl describe`, not from silence.
    fn note_unmailed_owners(&self, conn: &ChannelConnection, new: &mut ChannelConnectionStatus) {
        if self.mail.is_none() || !conn.spec.notify.email {
            return;
        }
        let (_, outside) = self.owners(conn);
        if outside.is_empty() {
            return;
        }
        let note = format!(
            "owners outside the operator's allowed email domains ({}) are not emailed: {}",
            self.config.allowed_email_domains.join(", "),
            outside.join(", ")
        );
        if let Some(ready) = new
            .conditions
            .iter_mut()
            .find(|c| c.type_ == ConditionType::Ready.as_str())
            && !ready.message.contains(&note)
        {
            ready.message = format!("{}; {note}", ready.message);
        }
    }

    /// `username` / `password` from `--smtp-credentials-secret`, read at each send.
    async fn smtp_credentials(&self) -> Result<Option<Credentials>, String> {
        let Some(name) = &self.config.smtp_credentials_secret else {
            return Ok(None);
        };
        let ns = &self.config.operator_namespace;
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read SMTP credentials Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("SMTP credentials Secret {ns}/{name} does not exist"))?;
        let username = secret_value(&secret, "username")
            .ok_or_else(|| format!("SMTP credentials Secret {ns}/{name} has no key username"))?;
        let password = secret_value(&secret, "password")
            .ok_or_else(|| format!("SMTP credentials Secret {ns}/{name} has no key password"))?;
        Ok(Some(Credentials::new(username, password)))
    }

    /// Reads the webhook Secret (only ever in the connection's own namespace) and POSTs.
    async fn send_webhook(
        &self,
        conn: &ChannelConnection,
        ns: &str,
        notice: &Notice,
        http: &Http,
    ) -> Result<(), String> {
        let Some(r) = &conn.spec.notify.webhook_secret_ref else {
            return Err("no webhook configured".to_owned());
        };
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("cannot read webhook Secret {:?}: {e}", r.name))?
            .ok_or_else(|| {
                format!(
                    "webhook Secret {:?} (spec.notify.webhookSecretRef) does not exist in this namespace",
                    r.name
                )
            })?;
        let address = secret_value(&secret, "address")
            .ok_or_else(|| format!("webhook Secret {:?} has no key address", r.name))?;
        let target = webhook::Target::new(
            address,
            secret_value(&secret, "token"),
            secret_value(&secret, "format").as_deref(),
        );
        webhook::send(http, &target, notice).await
    }

    async fn publish(
        &self,
        conn: &ChannelConnection,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(&note, 1000)),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &conn.object_ref(&())).await {
            warn!(namespace = ?conn.namespace(), name = %conn.name_any(), error = %e, "cannot publish event");
        }
    }
}

/// Parses the mail flags once; a broken setting is logged (without the URL) and leaves email
/// off rather than failing the operator.
fn mail_settings(config: &NotifyConfig) -> Option<Mail> {
    let url = config.smtp_url.as_deref()?;
    let server = match email::SmtpServer::parse(url) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "email notifications are off");
            return None;
        }
    };
    let Some(from) = config.smtp_from.as_deref() else {
        warn!("email notifications are off: --smtp-url is set but --smtp-from is not");
        return None;
    };
    let from = match from.parse::<Mailbox>() {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "email notifications are off: --smtp-from is not a valid address");
            return None;
        }
    };
    info!(
        host = %server.host,
        port = server.port,
        security = ?server.security,
        "email notifications on"
    );
    Some(Mail { server, from })
}

/// A Secret value as trimmed UTF-8, if present and non-empty.
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let raw = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&raw.0).ok()?.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
