//! Asking a provider whether a token still works.
//!
//! Each provider type turns its own documented answers into one [`Verdict`]; the controller
//! never looks at provider-specific bodies. The four verdict kinds keep a provider outage from
//! ever looking like a dead token (DESIGN.md, "never cry wolf").

mod answer;
mod facebook;
mod google;
mod http;
mod identity;
mod instagram;
mod linkedin;
mod meta;
mod microsoft;
mod oauth2;
pub mod policy;
pub mod preset;
mod slack;
#[cfg(test)]
mod testserver;
mod tiktok;
pub mod token;
mod x;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

pub use http::{Http, HttpConfig, MAX_PROVIDER_WAIT, Response, TransportError};
pub use identity::{Identity, facebook_asset_token, identify};
pub use policy::EndpointPolicy;
pub use preset::{ClientAuth, Preset, RenewStyle, preset};
pub use token::{NewTokens, Renewal};

use crate::api::{AccountKind, ProviderSettings, ProviderType, Reason, ReportedAccount};

/// A secret string (access token, refresh token, client secret). It prints as `[redacted]`, so
/// leaking one into a log or an error takes a deliberate `expose()`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The raw value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the provider says about a working token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grant {
    /// The account the token reaches, when the provider tells.
    pub account: Option<ReportedAccount>,
    /// Granted scopes; `None` when the provider does not report them (then they are not judged).
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<jiff::Timestamp>,
    pub data_access_expires_at: Option<jiff::Timestamp>,
    /// Asset IDs (pages, accounts) the token was granted, where the provider scopes grants to
    /// assets (Meta's granular scopes). `None` when not reported.
    pub target_ids: Option<Vec<String>>,
}

/// A provider's answer about one token.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The token works.
    Valid(Grant),
    /// The provider said explicitly that the token is dead or needs a person. `reason` is one of
    /// `Expired`, `Revoked`, `AccountActionRequired`, `ScopesMissing`, `ReauthorizationRequired`
    /// (the token authenticates but the consent behind it lapsed, e.g. Meta's data access).
    Invalid { reason: Reason, message: String },
    /// No verdict this time (timeout, 5xx, 429, garbage): keep the last one and retry later.
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The OAuth application itself is rejected (`invalid_client`): the provider object's problem.
    Misconfigured { message: String },
}

/// Most scopes or asset IDs kept from one answer: a status stays writable whatever a provider
/// lists.
const MAX_LISTED: usize = 200;

impl Verdict {
    /// The verdict with every piece of provider text bounded and `secrets` removed: the one
    /// place provider words pass before they reach a condition, an Event or a notification.
    pub fn scrubbed(self, secrets: &[&Token]) -> Verdict {
        let clip = |t: String| crate::text::scrub(&t, secrets);
        let list =
            |v: Option<Vec<String>>| v.map(|v| v.into_iter().take(MAX_LISTED).map(clip).collect());
        match self {
            Verdict::Valid(g) => Verdict::Valid(Grant {
                account: g.account.map(|a| ReportedAccount {
                    id: a.id.map(clip),
                    name: a.name.map(clip),
                }),
                scopes: list(g.scopes),
                target_ids: list(g.target_ids),
                ..g
            }),
            Verdict::Invalid { reason, message } => Verdict::Invalid {
                reason,
                message: clip(message),
            },
            Verdict::Transient {
                message,
                retry_after,
            } => Verdict::Transient {
                message: clip(message),
                retry_after: retry_after.map(|w| w.min(MAX_PROVIDER_WAIT)),
            },
            Verdict::Misconfigured { message } => Verdict::Misconfigured {
                message: clip(message),
            },
        }
    }
}

/// Everything a validator needs about the OAuth application.
#[derive(Clone, Debug)]
pub struct App {
    pub settings: ProviderSettings,
    pub client_secret: Option<Token>,
    /// False for namespaced providers: their endpoints are tenant input and go through the
    /// endpoint policy.
    pub trusted: bool,
    /// Metric and log label: `<kind>/<namespace>/<name>` of the provider object.
    pub label: String,
}

/// Which URL of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Authorization,
    Token,
    Introspection,
    Userinfo,
    ApiBase,
}

impl App {
    /// The preset of the provider's type.
    pub fn preset(&self) -> Preset {
        preset(self.settings.type_)
    }

    /// A URL: `spec.endpoints` when set, else the preset's.
    pub fn endpoint(&self, which: Endpoint) -> Option<String> {
        let e = &self.settings.endpoints;
        let p = self.preset();
        let (spec, preset) = match which {
            Endpoint::Authorization => (&e.authorization_url, p.authorization_url),
            Endpoint::Token => (&e.token_url, p.token_url),
            Endpoint::Introspection => (&e.introspection_url, p.introspection_url),
            Endpoint::Userinfo => (&e.userinfo_url, p.userinfo_url),
            Endpoint::ApiBase => (&e.api_base_url, p.api_base_url),
        };
        spec.clone().or_else(|| preset.map(str::to_owned))
    }
}

/// One provider type's way of checking and renewing a token.
pub trait Validator: Send + Sync {
    /// Asks the provider about `token`. Never fails: every outcome is a [`Verdict`].
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict>;

    /// Renews the access token without a person, as the preset's [`RenewStyle`] says.
    /// `refresh_token` is the stored refresh token, `access_token` the current token (Meta and
    /// Instagram renew by exchanging it).
    fn renew<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        access_token: &'a Token,
        refresh_token: Option<&'a Token>,
    ) -> BoxFuture<'a, Renewal> {
        token::renew_standard(http, app, access_token, refresh_token)
    }

    /// The display name of account `id`, for presets whose check names the account by ID only
    /// (a Facebook Page token's `debug_token` gives the Page ID, not its name). Asked once per
    /// account: the name is kept in status. `None` when the provider cannot tell.
    fn account_name<'a>(
        &'a self,
        _http: &'a Http,
        _app: &'a App,
        _token: &'a Token,
        _id: &'a str,
    ) -> BoxFuture<'a, Option<String>> {
        futures::future::ready(None).boxed()
    }

    /// Completes a working token's verdict with the connection's account where the check alone
    /// does not name it: the name of an account the check gave by ID only ([`Self::account_name`]),
    /// the Instagram business account a Facebook Page token reaches, the LinkedIn member or
    /// organization. `wanted` is the account the connection must reach, `known` the account in
    /// status: a name already known is reused, so each account is named once. A call that fails
    /// now may turn the verdict into "try later"; it never makes a token look dead.
    fn complete<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
        verdict: &'a mut Verdict,
        _wanted: Option<Wanted<'a>>,
        known: Option<&'a ReportedAccount>,
    ) -> BoxFuture<'a, ()> {
        name_by_id(self, http, app, token, verdict, known).boxed()
    }

    /// Exchanges an authorization code from the OAuth callback for tokens.
    fn exchange_code<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    ) -> BoxFuture<'a, Renewal> {
        token::exchange_code_standard(http, app, code, redirect_uri, code_verifier)
    }
}

/// The account a connection's token must reach, as providers need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub id: &'a str,
    /// `spec.account.kind`, when set.
    pub kind: Option<AccountKind>,
}

/// Names the account of a working token that the check gave by ID only: the name last seen for
/// the same ID, else one call to the provider ([`Validator::account_name`]).
pub async fn name_by_id<V: Validator + ?Sized>(
    validator: &V,
    http: &Http,
    app: &App,
    token: &Token,
    verdict: &mut Verdict,
    known: Option<&ReportedAccount>,
) {
    let Verdict::Valid(grant) = verdict else {
        return;
    };
    let Some(account) = grant.account.as_mut().filter(|a| a.name.is_none()) else {
        return;
    };
    let Some(id) = account.id.clone() else { return };
    let same = known
        .filter(|k| k.id.as_deref() == Some(id.as_str()))
        .and_then(|k| k.name.clone());
    account.name = match same {
        Some(name) => Some(name),
        None => validator.account_name(http, app, token, &id).await,
    };
}

/// The validator for a provider type: each reads its provider's own documented answers.
pub fn validator_for(type_: ProviderType) -> &'static dyn Validator {
    match type_ {
        ProviderType::Facebook => &facebook::Facebook,
        ProviderType::Instagram => &instagram::Instagram,
        ProviderType::Google => &google::Google,
        ProviderType::Microsoft => &microsoft::Microsoft,
        ProviderType::Linkedin => &linkedin::LinkedIn,
        ProviderType::X => &x::X,
        ProviderType::Slack => &slack::Slack,
        ProviderType::Tiktok => &tiktok::TikTok,
        ProviderType::OAuth2 => &oauth2::OAuth2,
    }
}

/// Splits a scope string on spaces and commas (RFC 6749 uses spaces; Meta and others commas).
pub fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints() {
        let t = Token::new("sbx-at-secret");
        assert_eq!(format!("{t:?} {t}"), "[redacted] [redacted]");
        assert_eq!(t.expose(), "sbx-at-secret");
    }

    #[test]
    fn scopes_split_on_space_and_comma() {
        assert_eq!(split_scopes("a b,c  d"), ["a", "b", "c", "d"]);
    }
}

#[cfg(test)]
mod scrub_tests {
    use super::*;

    #[test]
    fn scrubbed_verdicts_are_bounded_and_token_free() {
        let t = Token::new("tok-123");
        let v = Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!("{} tok-123", "e".repeat(400_000)),
        }
        .scrubbed(&[&t]);
        let Verdict::Invalid { message, .. } = v else {
            panic!("kind kept")
        };
        assert!(message.len() < 1000 && !message.contains("tok-123"));
        let v = Verdict::Valid(Grant {
            account: Some(ReportedAccount {
                id: Some("tok-123".into()),
                name: Some("n".repeat(10_000)),
            }),
            scopes: Some((0..10_000).map(|i| i.to_string()).collect()),
            ..Default::default()
        })
        .scrubbed(&[&t]);
        let Verdict::Valid(g) = v else { panic!() };
        assert_eq!(g.scopes.unwrap().len(), MAX_LISTED);
        let account = g.account.unwrap();
        assert_eq!(account.id.as_deref(), Some("[redacted]"));
        assert!(account.name.unwrap().len() < 1000);
    }
}
