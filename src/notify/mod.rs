//! Telling a connection's owners when a person must act, when its token will expire soon,
//! and when it recovers: by email to `spec.owners` and by webhook (`spec.notify.webhookSecretRef`).
//!
//! Once per change: what is told is recorded in `status.lastNotification` (reason, time and
//! destinations), written with the same status write as the check, so a restart, a new leader
//! or a failed status write never tells the same news twice. Delivery happens after that write,
//! off the reconcile path: a bounded queue feeds a few workers that try each destination
//! several times with exponential backoff; a failure raises a Warning Event
//! `NotificationFailed` and counts in `relink_notifications_total`. A slow or dead mail server
//! never holds a check slot. See `docs/notifications.md`.

pub mod batch;
pub mod decide;
pub mod email;
pub mod message;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};
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
    /// `smtp://host:587` (STARTTLS), `smtp://host:port?tls=none|opportunistic|required` or
    /// `smtps://host:port` (implicit TLS); see `email`.
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
    /// Send SMTP credentials even when TLS is not certain (`--smtp-allow-plaintext-auth`).
    pub allow_plaintext_auth: bool,
    /// How long a problem email waits for others to the same owners about the same cause, to go
    /// as one message (`--notification-batch-window`; zero: each goes at once).
    pub batch_window: Duration,
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

/// Notices waiting for a delivery worker, at most.
pub const QUEUE_CAPACITY: usize = 1000;
/// Notices being delivered at once.
pub const DELIVERY_CONCURRENCY: usize = 4;
/// Tries per destination before giving up until the next reminder.
pub const DELIVERY_ATTEMPTS: u32 = 5;

/// A notice planned by a check, delivered off the reconcile path.
#[derive(Clone)]
pub struct Delivery {
    conn: ChannelConnection,
    notice: Notice,
    targets: Vec<Channel>,
}

/// Decides whom to tell about what, and sends it.
pub struct Notifier {
    client: Client,
    config: NotifyConfig,
    metrics: Arc<Metrics>,
    recorder: crate::telemetry::Publisher,
    mail: Option<Mail>,
    queue: std::sync::OnceLock<tokio::sync::mpsc::Sender<Delivery>>,
    batches: batch::Batches,
}

impl Notifier {
    pub fn new(client: Client, config: NotifyConfig, metrics: Arc<Metrics>) -> Self {
        // lettre's rustls and reqwest need a process-wide crypto provider; ring, as kube uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mail = mail_settings(&config);
        Self {
            recorder: crate::telemetry::publisher(&client),
            client,
            config,
            metrics,
            mail,
            queue: std::sync::OnceLock::new(),
            batches: batch::Batches::default(),
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

    /// Called after every check with the status about to be written: decides what is news,
    /// records it in `new.lastNotification` (written with the same status write, so neither a
    /// restart nor a failed write can tell the same news twice) and returns the delivery to
    /// [`enqueue`](Self::enqueue) once that write succeeded.
    pub async fn plan(
        &self,
        conn: &ChannelConnection,
        new: &mut ChannelConnectionStatus,
        now: jiff::Timestamp,
    ) -> Option<Delivery> {
        self.note_unmailed_owners(conn, new);
        let destinations = self.destinations(conn);
        if destinations.is_empty() {
            return None;
        }
        let policy = self.policy();
        let state = decide::state(new, &conn.spec, now, &policy);
        let last = new.last_notification.clone();
        let (news, targets, fresh) =
            match decide::decide(state, new, &conn.spec, last.as_ref(), now, &policy) {
                Some(news) => (news, destinations, true),
                None => {
                    let (news, missing) =
                        decide::pending(state, last.as_ref(), &destinations, now, &policy)?;
                    (news, missing.into_iter().copied().collect(), false)
                }
            };
        let notice = self.notice(conn, new, news, now).await;
        let names: Vec<&str> = targets.iter().map(|c| c.as_str()).collect();
        new.last_notification = Some(if fresh {
            NotificationRecord {
                reason: news.recorded_reason().as_str().to_owned(),
                time: Time(now),
                channels: Some(names.join(",")),
            }
        } else {
            // Same news, more destinations: keep the original time (reminders count from it).
            let mut all: Vec<String> = last
                .as_ref()
                .and_then(|l| l.channels.clone())
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            all.extend(names.iter().map(|s| (*s).to_owned()));
            NotificationRecord {
                reason: news.recorded_reason().as_str().to_owned(),
                time: last.as_ref().map(|l| l.time.clone()).unwrap_or(Time(now)),
                channels: Some(all.join(",")),
            }
        });
        Some(Delivery {
            conn: conn.clone(),
            notice,
            targets,
        })
    }

    /// Hands a planned delivery to the delivery workers. The queue is bounded: when it is
    /// full the notice is dropped, counted (`result="dropped"`) and reported by an Event, and
    /// the reminder interval tells the owners again; a check never waits for a mail server.
    pub fn enqueue(&self, delivery: Delivery) {
        let Some(queue) = self.queue.get() else {
            warn!("notification workers are not running; notice dropped");
            return;
        };
        if let Err(e) = queue.try_send(delivery) {
            let delivery = e.into_inner();
            for channel in &delivery.targets {
                self.count(*channel, "dropped");
            }
            warn!(
                namespace = ?delivery.conn.namespace(),
                name = %delivery.conn.name_any(),
                "notification queue full; notice dropped"
            );
        }
    }

    /// Starts the delivery workers: at most [`DELIVERY_CONCURRENCY`] notices in flight, each
    /// destination tried up to [`DELIVERY_ATTEMPTS`] times with exponential backoff from
    /// `retry_base`. What is still queued when the process stops is not delivered (the
    /// reminder interval covers it).
    pub fn start(
        self: &Arc<Self>,
        http: Http,
        retry_base: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(QUEUE_CAPACITY);
        let _ = self.queue.set(tx);
        let this = self.clone();
        tokio::spawn(async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(DELIVERY_CONCURRENCY));
            while let Some(delivery) = rx.recv().await {
                let Some(delivery) = this.hold_email(delivery, &slots, &http, retry_base) else {
                    continue;
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (this, http) = (this.clone(), http.clone());
                tokio::spawn(async move {
                    this.deliver(delivery, &http, retry_base).await;
                    drop(permit);
                });
            }
        })
    }

    /// With a batch window, takes the email of a problem notice out of `delivery` and holds it
    /// in its batch (the first of a batch schedules the batch's delivery once the window has
    /// passed); returns what is left to deliver now (the webhook), if anything.
    fn hold_email(
        self: &Arc<Self>,
        mut delivery: Delivery,
        slots: &Arc<tokio::sync::Semaphore>,
        http: &Http,
        retry_base: Duration,
    ) -> Option<Delivery> {
        let window = self.config.batch_window;
        if window.is_zero() || !delivery.targets.contains(&Channel::Email) {
            return Some(delivery);
        }
        let Some(key) = batch::key(&self.owners(&delivery.conn).0, delivery.notice.news) else {
            return Some(delivery);
        };
        let rest: Vec<Channel> = delivery
            .targets
            .iter()
            .copied()
            .filter(|c| *c != Channel::Email)
            .collect();
        let email = Delivery {
            targets: vec![Channel::Email],
            ..delivery.clone()
        };
        let opened = match self.batches.add(key.clone(), email) {
            Ok(opened) => opened,
            Err(_full) => return Some(delivery),
        };
        if opened {
            let (this, slots, http) = (self.clone(), slots.clone(), http.clone());
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                let mut batch = this.batches.take(&key);
                let Ok(_permit) = slots.acquire_owned().await else {
                    return;
                };
                match batch.len() {
                    0 => {}
                    1 => {
                        if let Some(one) = batch.pop() {
                            this.deliver(one, &http, retry_base).await;
                        }
                    }
                    _ => this.deliver_digest(batch, retry_base).await,
                }
            });
        }
        delivery.targets = rest;
        (!delivery.targets.is_empty()).then_some(delivery)
    }

    /// Sends `send` by `channel`, up to [`DELIVERY_ATTEMPTS`] times with exponential backoff;
    /// failures are logged, counted and reported on each of `conns` by a Warning Event.
    async fn attempt<F, Fut>(
        &self,
        channel: Channel,
        conns: &[&ChannelConnection],
        reason: crate::api::Reason,
        retry_base: Duration,
        send: F,
    ) -> bool
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut wait = retry_base;
        for attempt in 1..=DELIVERY_ATTEMPTS {
            let e = match send().await {
                Ok(()) => {
                    self.count(channel, "sent");
                    return true;
                }
                Err(e) => crate::text::truncate(&e, 300),
            };
            self.count(channel, "failed");
            for conn in conns {
                warn!(
                    namespace = ?conn.namespace(),
                    name = %conn.name_any(),
                    channel = channel.as_str(),
                    reason = %reason,
                    attempt,
                    error = %e,
                    "notification failed"
                );
            }
            if attempt == 1 || attempt == DELIVERY_ATTEMPTS {
                let then = if attempt == DELIVERY_ATTEMPTS {
                    "giving up until the next reminder"
                } else {
                    "retrying with backoff"
                };
                for conn in conns {
                    self.publish(
                        conn,
                        EventType::Warning,
                        "NotificationFailed",
                        format!(
                            "Could not tell the owners by {} about {reason} (try {attempt} of {DELIVERY_ATTEMPTS}); {then}: {e}",
                            channel.as_str(),
                        ),
                    )
                    .await;
                }
            }
            if attempt < DELIVERY_ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        false
    }

    /// One email for a batch of notices with the same news for the same owners.
    async fn deliver_digest(&self, batch: Vec<Delivery>, retry_base: Duration) {
        let digest = message::Digest {
            notices: batch.iter().map(|d| d.notice.clone()).collect(),
        };
        let conns: Vec<&ChannelConnection> = batch.iter().map(|d| &d.conn).collect();
        let send = || self.mail_to(conns[0], |from, to| email::build_digest(from, to, &digest));
        if !self
            .attempt(Channel::Email, &conns, digest.reason(), retry_base, send)
            .await
        {
            return;
        }
        let names = digest.connections();
        for conn in &conns {
            info!(
                namespace = ?conn.namespace(),
                name = %conn.name_any(),
                reason = %digest.reason(),
                channels = "email",
                grouped = %names,
                "owners notified"
            );
            self.publish(
                conn,
                EventType::Normal,
                "NotificationSent",
                format!(
                    "Told the owners (email), in one message about {}: {}",
                    names,
                    digest.headline()
                ),
            )
            .await;
        }
    }

    /// Sends one notice to each of its destinations, retrying each on its own.
    async fn deliver(&self, d: Delivery, http: &Http, retry_base: Duration) {
        let conn = &d.conn;
        let notice = &d.notice;
        let ns = &conn.namespace().unwrap_or_default();
        let name = &conn.name_any();
        let attempts = d.targets.iter().map(|&channel| async move {
            let send = || async move {
                match channel {
                    Channel::Email => self.send_email(conn, notice).await,
                    Channel::Webhook => self.send_webhook(conn, ns, notice, http).await,
                }
            };
            self.attempt(channel, &[conn], notice.reason(), retry_base, send)
                .await
                .then_some(channel)
        });
        let reached: Vec<&str> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .flatten()
            .map(Channel::as_str)
            .collect();
        if !reached.is_empty() {
            info!(
                namespace = %ns,
                name = %name,
                event = d.notice.event(),
                reason = %d.notice.reason(),
                channels = %reached.join(","),
                "owners notified"
            );
            self.publish(
                conn,
                EventType::Normal,
                "NotificationSent",
                format!(
                    "Told the owners ({}): {}",
                    reached.join(", "),
                    d.notice.headline()
                ),
            )
            .await;
        }
    }

    fn count(&self, channel: Channel, result: &str) {
        self.metrics
            .notifications
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().to_owned(),
                result: result.to_owned(),
            })
            .inc();
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
        let provider_type = self.provider_type(conn).await;
        Notice {
            news,
            namespace: conn.namespace().unwrap_or_default(),
            name: conn.name_any(),
            provider_name: conn.spec.provider_ref.name.clone(),
            provider_type,
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
            also_broken: self.also_broken(conn, news, provider_type).await,
            now,
        }
    }

    /// For a problem of a Facebook Page connection: the other connections of the same provider
    /// in the namespace that need a login and share an owner with it (one login through any of
    /// their links reconnects every Page it manages). Empty when unreadable.
    async fn also_broken(
        &self,
        conn: &ChannelConnection,
        news: News,
        provider_type: Option<ProviderType>,
    ) -> Vec<String> {
        if !matches!(news, News::Problem(_) | News::Reminder(_))
            || provider_type != Some(ProviderType::Facebook)
        {
            return Vec::new();
        }
        let ns = conn.namespace().unwrap_or_default();
        let Ok(list) = Api::<ChannelConnection>::namespaced(self.client.clone(), &ns)
            .list(&Default::default())
            .await
        else {
            return Vec::new();
        };
        list.items
            .iter()
            .filter(|o| {
                o.uid() != conn.uid()
                    && o.spec.provider_ref == conn.spec.provider_ref
                    && o.spec.owners.iter().any(|w| conn.spec.owners.contains(w))
                    && o.status.as_ref().is_some_and(crate::account::needs_login)
            })
            .map(|o| {
                o.spec
                    .account
                    .as_ref()
                    .and_then(|a| a.display_name.clone())
                    .unwrap_or_else(|| o.name_any())
            })
            .take(20)
            .collect()
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
        self.mail_to(conn, |from, to| email::build(from, to, notice))
            .await
    }

    /// Builds a message for the owners of `conn` and sends it.
    async fn mail_to(
        &self,
        conn: &ChannelConnection,
        build: impl FnOnce(&Mailbox, &[Mailbox]) -> Result<lettre::Message, String>,
    ) -> Result<(), String> {
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
        if credentials.is_some() && !mail.server.encrypted() && !self.config.allow_plaintext_auth {
            return Err("refusing to send SMTP credentials over a connection that may not be encrypted: use smtp://host:587, ?tls=required or smtps://, or allow it with --smtp-allow-plaintext-auth".to_owned());
        }
        let message = build(&mail.from, &owners)?;
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
            note: Some(crate::text::truncate(&note, crate::text::MAX_MESSAGE)),
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
