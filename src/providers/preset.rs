//! Built-in facts about each provider type: endpoints, scope separator, client authentication,
//! PKCE and extra authorization parameters. `spec.endpoints` overrides any URL here.

use crate::api::ProviderType;

/// How the token endpoint wants the client to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`), the RFC 6749 default.
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Form,
}

/// How a token is renewed without a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewStyle {
    /// RFC 6749 §6: `grant_type=refresh_token` with the stored refresh token.
    RefreshToken,
    /// Meta: exchange the current long-lived user token (`grant_type=fb_exchange_token`).
    MetaExchange,
    /// Instagram Login: `GET refresh_access_token?grant_type=ig_refresh_token`.
    InstagramRefresh,
    /// The provider offers no renewal: a person must log in again before expiry.
    None,
}

/// Defaults of one provider type.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub authorization_url: Option<&'static str>,
    pub token_url: Option<&'static str>,
    pub introspection_url: Option<&'static str>,
    pub userinfo_url: Option<&'static str>,
    pub api_base_url: Option<&'static str>,
    /// Joins scopes in the authorization URL (RFC 6749: space; Meta, TikTok: comma).
    pub scope_separator: &'static str,
    /// Name of the client ID parameter (`client_key` for TikTok).
    pub client_id_param: &'static str,
    /// Whether the authorization URL carries a PKCE S256 challenge.
    pub pkce: bool,
    pub client_auth: ClientAuth,
    /// Extra authorization query parameters (e.g. Google's `access_type=offline`).
    pub authorization_params: &'static [(&'static str, &'static str)],
    /// Scopes always requested (e.g. Microsoft's `offline_access`).
    pub default_scopes: &'static [&'static str],
    pub renew: RenewStyle,
}

/// The generic RFC 6749 server: nothing built in, every URL comes from `spec.endpoints`.
pub const OAUTH2: Preset = Preset {
    authorization_url: None,
    token_url: None,
    introspection_url: None,
    userinfo_url: None,
    api_base_url: None,
    scope_separator: " ",
    client_id_param: "client_id",
    pkce: true,
    client_auth: ClientAuth::Basic,
    authorization_params: &[],
    default_scopes: &[],
    renew: RenewStyle::RefreshToken,
};

/// The preset of a provider type.
pub fn preset(type_: ProviderType) -> Preset {
    match type_ {
        ProviderType::OAuth2 => OAUTH2,
        // Built-in presets arrive with the built-in providers; until then these behave as oauth2.
        _ => OAUTH2,
    }
}
