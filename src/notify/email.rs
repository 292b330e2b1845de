//! Email over SMTP with lettre's async transport.
//!
//! `--smtp-url` and transport security:
//! - `smtp://host` or `smtp://host:587`: STARTTLS, refusing to continue without it (the
//!   submission port's meaning);
//! - `smtp://host:<other port>`: STARTTLS when the server offers it (a local relay on 25);
//! - `smtp://host[:port]?tls=required|opportunistic|none`: said explicitly;
//! - `smtps://host[:port]`: implicit TLS from the first byte (port 465).
//!
//! Credentials never go in the URL: they come from the Secret named by
//! `--smtp-credentials-secret` (keys `username`, `password`) in the operator's namespace, read at
//! each send so a rotation needs no restart. They are only sent over STARTTLS required or
//! implicit TLS, unless `--smtp-allow-plaintext-auth` says otherwise.

use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::{Digest, Notice};
use crate::api::Reason;

/// Timeout of each SMTP step (connect, each command).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of one whole delivery, so a stuck server never holds a check for long.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// How the connection to the mail server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    Plain,
    StartTlsRequired,
    StartTlsOpportunistic,
    Implicit,
}

/// A parsed `--smtp-url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

impl SmtpServer {
    /// Parses `--smtp-url`. Errors never repeat the URL (it could carry a password by mistake).
    pub fn parse(raw: &str) -> Result<SmtpServer, String> {
        let url =
            url::Url::parse(raw).map_err(|e| format!("--smtp-url is not a valid URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "--smtp-url must not contain credentials: put them in the Secret named by --smtp-credentials-secret"
                    .to_owned(),
            );
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("--smtp-url has no host".to_owned()),
        };
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtps", None | Some("wrapper") | Some("implicit")) => Security::Implicit,
            ("smtp", None) if matches!(url.port(), None | Some(587)) => Security::StartTlsRequired,
            ("smtp", None) => Security::StartTlsOpportunistic,
            ("smtp", Some("none")) => Security::Plain,
            ("smtp", Some("required")) => Security::StartTlsRequired,
            ("smtp", Some("opportunistic")) => Security::StartTlsOpportunistic,
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!(
                    "--smtp-url: unknown tls={other:?} (use required or opportunistic with smtp://, nothing with smtps://)"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "--smtp-url: unknown scheme {scheme:?} (use smtp:// or smtps://)"
                ));
            }
        };
        let default_port = match security {
            Security::Plain | Security::StartTlsOpportunistic => 25,
            Security::StartTlsRequired => 587,
            Security::Implicit => 465,
        };
        Ok(SmtpServer {
            host,
            port: url.port().unwrap_or(default_port),
            security,
        })
    }

    /// Whether credentials sent to this server are protected by TLS for sure.
    pub fn encrypted(&self) -> bool {
        matches!(
            self.security,
            Security::StartTlsRequired | Security::Implicit
        )
    }

    fn transport(
        &self,
        credentials: Option<Credentials>,
    ) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls_params = || {
            TlsParameters::new(self.host.clone())
                .map_err(|e| format!("cannot set up TLS for the mail server: {e}"))
        };
        let tls = match self.security {
            Security::Plain => Tls::None,
            Security::StartTlsRequired => Tls::Required(tls_params()?),
            Security::StartTlsOpportunistic => Tls::Opportunistic(tls_params()?),
            Security::Implicit => Tls::Wrapper(tls_params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(STEP_TIMEOUT));
        if let Some(c) = credentials {
            builder = builder.credentials(c);
        }
        Ok(builder.build())
    }
}

/// The message for `owners`: multipart text + HTML, with headers that let mail rules sort it.
pub fn build(from: &Mailbox, owners: &[Mailbox], notice: &Notice) -> Result<Message, String> {
    compose(
        from,
        owners,
        Letter {
            subject: notice.subject(),
            connections: format!("{}/{}", notice.namespace, notice.name),
            reason: notice.reason(),
            text: notice.text(),
            html: notice.html(),
        },
    )
}

/// One message for several channels of the same owners ([`Digest`]).
pub fn build_digest(
    from: &Mailbox,
    owners: &[Mailbox],
    digest: &Digest,
) -> Result<Message, String> {
    compose(
        from,
        owners,
        Letter {
            subject: digest.subject(),
            connections: digest.connections(),
            reason: digest.reason(),
            text: digest.text(),
            html: digest.html(),
        },
    )
}

/// What one email says.
struct Letter {
    subject: String,
    /// `namespace/name` of each channel it is about.
    connections: String,
    reason: Reason,
    text: String,
    html: String,
}

fn compose(from: &Mailbox, owners: &[Mailbox], letter: Letter) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(from.clone())
        .subject(letter.subject)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Relink-Connection"),
            letter.connections,
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Relink-Reason"),
            letter.reason.as_str().to_owned(),
        ));
    for o in owners {
        b = b.to(o.clone());
    }
    b.multipart(MultiPart::alternative_plain_html(letter.text, letter.html))
        .map_err(|e| format!("cannot build the email: {e}"))
}

/// Sends one message, within [`SEND_TIMEOUT`].
pub async fn send(
    server: &SmtpServer,
    credentials: Option<Credentials>,
    message: Message,
) -> Result<(), String> {
    let transport = server.transport(credentials)?;
    match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "mail server {}:{} refused or failed: {e}",
            server.host, server.port
        )),
        Err(_) => Err(format!(
            "mail server {}:{} did not finish within {}s",
            server.host,
            server.port,
            SEND_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_explicit_about_tls() {
        let p = |s: &str| SmtpServer::parse(s).unwrap();
        assert_eq!(
            p("smtp://127.0.0.1:2525"),
            SmtpServer {
                host: "127.0.0.1".into(),
                port: 2525,
                security: Security::StartTlsOpportunistic
            }
        );
        // The submission port means STARTTLS, as the chart says.
        let sub = p("smtp://mail.example.com:587");
        assert_eq!(sub.security, Security::StartTlsRequired);
        assert!(sub.encrypted());
        assert_eq!(p("smtp://mail.example.com").port, 587);
        let plain = p("smtp://relay.local?tls=none");
        assert_eq!((plain.port, plain.security), (25, Security::Plain));
        assert!(!plain.encrypted());
        let st = p("smtp://mail.example.com?tls=required");
        assert_eq!((st.port, st.security), (587, Security::StartTlsRequired));
        let op = p("smtp://mail.example.com:25?tls=opportunistic");
        assert_eq!(op.security, Security::StartTlsOpportunistic);
        let imp = p("smtps://mail.example.com");
        assert_eq!((imp.port, imp.security), (465, Security::Implicit));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_secrets() {
        let e = SmtpServer::parse("smtp://user:hunter2@mail.example.com").unwrap_err();
        assert!(!e.contains("hunter2"));
        assert!(SmtpServer::parse("http://mail.example.com").is_err());
        assert!(SmtpServer::parse("smtps://mail.example.com?tls=required").is_err());
        assert!(SmtpServer::parse("not a url").is_err());
    }

    #[test]
    fn message_is_multipart_with_sortable_headers() {
        use super::super::decide::News;
        use crate::api::Reason;
        let notice = Notice {
            namespace: "ns".into(),
            name: "chan".into(),
            provider_name: "app".into(),
            provider_type: None,
            display_name: "Acme".into(),
            reauth_url: Some("https://auth.example.com/authorize?client_id=c&state=s".into()),
            now: jiff::Timestamp::UNIX_EPOCH,
            ..Notice::example(News::Problem(Reason::Revoked))
        };
        let from: Mailbox = "relink@example.com".parse().unwrap();
        let to: Mailbox = "owner@example.com".parse().unwrap();
        let m = build(&from, &[to], &notice).unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
        assert!(raw.contains("Auto-Submitted: auto-generated"));
        assert!(raw.contains("X-Relink-Connection: ns/chan"));
        assert!(raw.contains("To: owner@example.com"));
    }
}
