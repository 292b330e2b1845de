//! Telling a connection's owners when a person must act, when its token will expire soon,
//! and when it recovers. (Email and webhook delivery arrive with the notifications issue.)

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use crate::api::{ChannelConnection, ChannelConnectionStatus};
use crate::telemetry::Metrics;

/// Operator-level notification settings (flags).
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// `smtp://host:port`, `smtps://host:port` or `smtp://host:port?tls=required` (STARTTLS).
    pub smtp_url: Option<String>,
    /// Sender address of emails.
    pub smtp_from: Option<String>,
    /// Secret (operator namespace) with `username` and `password` for SMTP.
    pub smtp_credentials_secret: Option<String>,
    /// Reminder while a connection stays broken.
    pub reminder_interval: Duration,
    /// Warn this long before a token that cannot be refreshed expires.
    pub expiry_warning: Duration,
    pub operator_namespace: String,
}

/// Decides whom to tell about what, and sends it.
pub struct Notifier {
    #[allow(dead_code)]
    client: Client,
    #[allow(dead_code)]
    config: NotifyConfig,
    #[allow(dead_code)]
    metrics: Arc<Metrics>,
}

impl Notifier {
    pub fn new(client: Client, config: NotifyConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            config,
            metrics,
        }
    }

    /// Called after every check with the status about to be written. Sends what is due and
    /// records it in `new.lastNotification`, so the same news is not sent twice (also across
    /// restarts, since the record is written with the status).
    pub async fn on_check(
        &self,
        _conn: &ChannelConnection,
        _old: &ChannelConnectionStatus,
        _new: &mut ChannelConnectionStatus,
        _now: jiff::Timestamp,
    ) {
    }
}
