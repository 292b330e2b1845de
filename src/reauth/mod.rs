//! Re-authorization: the link a person follows to log in again (`status.reauthUrl`), the
//! signed `state` it carries, and the OAuth callback that completes it.

pub mod callback;
pub mod state;

use std::time::Duration;

use base64::Engine;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use url::Url;

use crate::api::{ChannelConnection, ProviderType};
use crate::providers::{App, Endpoint};
use crate::tokens::ResolvedProvider;
pub use state::{ProviderBinding, StateClaims, StateError, StateKey};

/// RFC 7636 S256 code challenge of a verifier: BASE64URL-NOPAD(SHA256(verifier)).
pub fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Links are renewed when less than this is left, so an email's link keeps working a while.
const RENEW_BEFORE: Duration = Duration::from_secs(24 * 3600);

/// Everything needed to mint and check re-authorization links.
#[derive(Clone, Debug)]
pub struct Reauth {
    pub key: StateKey,
    /// External URL of the callback listener (`--public-url`).
    pub public_url: String,
    /// Lifetime of a link (`--reauth-link-ttl`).
    pub ttl: Duration,
}

/// Default lifetime of a link: long enough for an email read the next working day, short
/// enough that a link forwarded or left in a chat history stops working soon.
pub const DEFAULT_LINK_TTL: &str = "72h";

impl Reauth {
    /// Where the provider sends the person back: the provider's `redirectUrl`, else ours.
    pub fn redirect_uri(&self, app: &App) -> String {
        app.settings
            .redirect_url
            .clone()
            .unwrap_or_else(|| format!("{}/oauth/callback", self.public_url.trim_end_matches('/')))
    }

    /// Scopes to request: the preset's, the provider's and the connection's, without repeats.
    pub fn scopes(app: &App, conn: &ChannelConnection) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let preset = app.preset();
        let all = preset
            .default_scopes
            .iter()
            .map(|s| s.to_string())
            .chain(app.settings.scopes.iter().cloned())
            .chain(conn.spec.required_scopes.iter().cloned());
        for s in all {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// What a link made now for `provider` is bound to.
    pub fn binding(&self, provider: &ResolvedProvider, app: &App) -> ProviderBinding {
        ProviderBinding {
            k: provider.kind.as_str().to_owned(),
            n: provider.name.clone(),
            u: provider.uid.clone().unwrap_or_default(),
            g: provider.generation.unwrap_or_default(),
            c: app.settings.client_id.clone(),
            r: self.redirect_uri(app),
        }
    }

    /// The existing link when it is for this connection and this provider setup and not close
    /// to expiry, else a new one.
    pub fn link(
        &self,
        app: &App,
        binding: &ProviderBinding,
        conn: &ChannelConnection,
        existing: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<String, String> {
        if let Some(url) = existing
            && let Some(claims) = self.claims_of_link(url, now)
            && claims.u == conn.uid().unwrap_or_default()
            && claims.p == *binding
            && claims.exp - now.as_second() > RENEW_BEFORE.min(self.ttl / 2).as_secs() as i64
        {
            return Ok(url.to_owned());
        }
        self.authorization_url(app, binding, conn, now)
    }

    /// The state inside a link we minted, if it still verifies.
    pub fn claims_of_link(&self, url: &str, now: jiff::Timestamp) -> Option<StateClaims> {
        let state = state_of(url)?;
        self.key.verify(&state, now).ok()
    }

    /// A new authorization URL for `conn` with a fresh signed state.
    pub fn authorization_url(
        &self,
        app: &App,
        binding: &ProviderBinding,
        conn: &ChannelConnection,
        now: jiff::Timestamp,
    ) -> Result<String, String> {
        let base = app.endpoint(Endpoint::Authorization).ok_or_else(|| {
            format!(
                "{} has no authorization endpoint: set spec.endpoints.authorizationUrl to offer a re-authorization link",
                app.label
            )
        })?;
        let mut url = Url::parse(&base)
            .map_err(|e| format!("{}: authorizationUrl is not a URL: {e}", app.label))?;
        let claims = StateClaims {
            ns: conn.namespace().unwrap_or_default(),
            n: conn.name_any(),
            u: conn.uid().unwrap_or_default(),
            p: binding.clone(),
            exp: now.as_second() + self.ttl.as_secs() as i64,
            nonce: state::nonce(),
        };
        let preset = app.preset();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair(preset.client_id_param, &app.settings.client_id);
            q.append_pair("redirect_uri", &binding.r);
            q.append_pair(
                "scope",
                &Self::scopes(app, conn).join(preset.scope_separator),
            );
            q.append_pair("state", &self.key.sign(&claims));
            if preset.pkce {
                q.append_pair(
                    "code_challenge",
                    &pkce_s256(&self.key.pkce_verifier(&claims)),
                );
                q.append_pair("code_challenge_method", "S256");
            }
            if app.settings.type_ == ProviderType::OAuth2
                && let Some(account) = &conn.spec.account
            {
                // RFC 6749 servers ignore parameters they do not know; OIDC ones prefill the login.
                q.append_pair("login_hint", &account.id);
            }
            // The provider object's own parameters win over the preset's of the same name.
            for (k, v) in preset.authorization_params {
                if !app.settings.authorization_params.contains_key(*k) {
                    q.append_pair(k, v);
                }
            }
            for (k, v) in &app.settings.authorization_params {
                q.append_pair(k, v);
            }
        }
        Ok(url.into())
    }
}

/// The `state` query parameter of a URL.
pub fn state_of(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChannelConnectionSpec, ProviderEndpoints, ProviderSettings};
    use std::collections::BTreeMap;

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn app() -> App {
        App {
            settings: ProviderSettings {
                type_: ProviderType::OAuth2,
                client_id: "cid".into(),
                client_secret_ref: None,
                redirect_url: None,
                scopes: vec!["profile".into(), "read".into()],
                endpoints: ProviderEndpoints {
                    authorization_url: Some("https://idp.example/authorize?tenant=1".into()),
                    ..Default::default()
                },
                authorization_params: BTreeMap::from([("prompt".into(), "consent".into())]),
                refresh_token_lifetime: None,
            },
            client_secret: Some(crate::providers::Token::new("very-secret")),
            trusted: true,
            label: "ClusterChannelProvider/idp".into(),
        }
    }

    fn conn() -> ChannelConnection {
        let spec: ChannelConnectionSpec = serde_json::from_value(serde_json::json!({
            "providerRef": {"name": "idp"},
            "account": {"id": "page-1"},
            "secretRef": {"name": "tok"},
            "requiredScopes": ["read", "publish"]
        }))
        .unwrap();
        let mut c = ChannelConnection::new("chan", spec);
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    fn binding(r: &Reauth, a: &App) -> ProviderBinding {
        let provider = ResolvedProvider {
            settings: a.settings.clone(),
            kind: crate::api::ProviderKind::ClusterChannelProvider,
            name: "idp".into(),
            namespace: "relink-system".into(),
            generation: Some(3),
            uid: Some("p-uid".into()),
        };
        r.binding(&provider, a)
    }

    #[test]
    fn authorization_url_carries_what_the_provider_needs_and_no_secret() {
        let r = Reauth {
            key: StateKey::random(),
            public_url: "https://relink.example/".into(),
            ttl: Duration::from_secs(3600),
        };
        let now = jiff::Timestamp::now();
        let b = binding(&r, &app());
        let link = r.authorization_url(&app(), &b, &conn(), now).unwrap();
        let url = Url::parse(&link).unwrap();
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "1", "the base URL's own query is kept");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "https://relink.example/oauth/callback");
        assert_eq!(q["scope"], "profile read publish");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["login_hint"], "page-1");
        let claims = r.key.verify(&q["state"], now).unwrap();
        assert_eq!(
            (claims.ns.as_str(), claims.n.as_str(), claims.u.as_str()),
            ("ns", "chan", "uid-1")
        );
        assert_eq!(
            claims.p, b,
            "the link names the provider setup it was made for"
        );
        assert_eq!(
            (claims.p.k.as_str(), claims.p.u.as_str(), claims.p.g),
            ("ClusterChannelProvider", "p-uid", 3)
        );
        assert_eq!(
            q["code_challenge"],
            pkce_s256(&r.key.pkce_verifier(&claims))
        );
        assert!(!link.contains("very-secret"));

        // A valid link is kept; one for another object (uid) is replaced.
        assert_eq!(r.link(&app(), &b, &conn(), Some(&link), now).unwrap(), link);
        let mut other = conn();
        other.metadata.uid = Some("uid-2".into());
        assert_ne!(r.link(&app(), &b, &other, Some(&link), now).unwrap(), link);
    }

    #[test]
    fn a_changed_provider_setup_replaces_the_link() {
        let r = Reauth {
            key: StateKey::random(),
            public_url: "https://relink.example".into(),
            ttl: Duration::from_secs(3600),
        };
        let now = jiff::Timestamp::now();
        let b = binding(&r, &app());
        let link = r.authorization_url(&app(), &b, &conn(), now).unwrap();
        let changes: [fn(&mut ProviderBinding); 6] = [
            |b| b.k = "ChannelProvider".into(),
            |b| b.n = "other".into(),
            |b| b.u = "p-uid-2".into(),
            |b| b.g += 1,
            |b| b.c = "cid-2".into(),
            |b| b.r = "https://evil.example/cb".into(),
        ];
        for change in changes {
            let mut changed = b.clone();
            change(&mut changed);
            let new = r.link(&app(), &changed, &conn(), Some(&link), now).unwrap();
            assert_ne!(new, link, "{changed:?}");
            let claims = r.claims_of_link(&new, now).unwrap();
            assert_eq!(claims.p, changed);
        }
    }

    #[test]
    fn provider_parameters_replace_preset_ones_of_the_same_name() {
        let r = Reauth {
            key: StateKey::random(),
            public_url: "https://relink.example".into(),
            ttl: Duration::from_secs(3600),
        };
        let mut a = app();
        a.settings.type_ = ProviderType::Google;
        a.settings.authorization_params =
            BTreeMap::from([("access_type".into(), "offline".into())]);
        let b = binding(&r, &a);
        let link = r
            .authorization_url(&a, &b, &conn(), jiff::Timestamp::now())
            .unwrap();
        let url = Url::parse(&link).unwrap();
        let count = url
            .query_pairs()
            .filter(|(k, _)| k == "access_type")
            .count();
        assert_eq!(count, 1, "{link}");
    }
}
