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

/// Meta's Graph API version relink was written against. Meta keeps a version for at least two
/// years; `spec.endpoints.apiBaseUrl` pins another one.
pub const GRAPH_VERSION: &str = "v25.0";

/// Facebook Login for pages and user tokens. Checks use `debug_token` on the Graph API; renewal
/// exchanges the long-lived user token (`fb_exchange_token`). `auth_type=rerequest` asks again
/// for permissions a person declined before, which is why a re-authorization happens at all.
pub const FACEBOOK: Preset = Preset {
    authorization_url: Some("https://www.facebook.com/v25.0/dialog/oauth"),
    token_url: Some("https://graph.facebook.com/v25.0/oauth/access_token"),
    introspection_url: None,
    userinfo_url: None,
    api_base_url: Some("https://graph.facebook.com/v25.0"),
    scope_separator: ",",
    client_id_param: "client_id",
    pkce: false,
    client_auth: ClientAuth::Form,
    authorization_params: &[("auth_type", "rerequest")],
    default_scopes: &[],
    renew: RenewStyle::MetaExchange,
};

/// Instagram API with Instagram Login (Business Login for Instagram): tokens for professional
/// accounts, checked and refreshed on `graph.instagram.com`.
pub const INSTAGRAM: Preset = Preset {
    authorization_url: Some("https://www.instagram.com/oauth/authorize"),
    token_url: Some("https://api.instagram.com/oauth/access_token"),
    introspection_url: None,
    userinfo_url: None,
    api_base_url: Some("https://graph.instagram.com/v25.0"),
    scope_separator: ",",
    client_id_param: "client_id",
    pkce: false,
    client_auth: ClientAuth::Form,
    authorization_params: &[],
    default_scopes: &["instagram_business_basic"],
    renew: RenewStyle::InstagramRefresh,
};

/// Google: `tokeninfo` reports scopes, audience and expiry. Without `access_type=offline` and
/// `prompt=consent` Google issues no refresh token on a second consent. `openid email` make
/// tokeninfo name the mailbox, so `spec.account.id` can be checked.
pub const GOOGLE: Preset = Preset {
    authorization_url: Some("https://accounts.google.com/o/oauth2/v2/auth"),
    token_url: Some("https://oauth2.googleapis.com/token"),
    introspection_url: Some("https://oauth2.googleapis.com/tokeninfo"),
    userinfo_url: None,
    api_base_url: None,
    scope_separator: " ",
    client_id_param: "client_id",
    pkce: true,
    client_auth: ClientAuth::Form,
    authorization_params: &[("access_type", "offline"), ("prompt", "consent")],
    default_scopes: &["openid", "email"],
    renew: RenewStyle::RefreshToken,
};

/// Microsoft identity platform (v2.0, any tenant). Single-tenant apps override the two
/// `login.microsoftonline.com` URLs with their tenant ID. The probe is Microsoft Graph `/me`,
/// which needs `User.Read`; `offline_access` brings the refresh token.
pub const MICROSOFT: Preset = Preset {
    authorization_url: Some("https://login.microsoftonline.com/common/oauth2/v2.0/authorize"),
    token_url: Some("https://login.microsoftonline.com/common/oauth2/v2.0/token"),
    introspection_url: None,
    userinfo_url: Some("https://graph.microsoft.com/v1.0/me"),
    api_base_url: Some("https://graph.microsoft.com/v1.0"),
    scope_separator: " ",
    client_id_param: "client_id",
    pkce: true,
    client_auth: ClientAuth::Form,
    authorization_params: &[],
    default_scopes: &["offline_access", "User.Read"],
    renew: RenewStyle::RefreshToken,
};

/// LinkedIn: checked by its token introspection endpoint (client credentials in the form).
/// Refresh tokens exist only for approved partners.
pub const LINKEDIN: Preset = Preset {
    authorization_url: Some("https://www.linkedin.com/oauth/v2/authorization"),
    token_url: Some("https://www.linkedin.com/oauth/v2/accessToken"),
    introspection_url: Some("https://www.linkedin.com/oauth/v2/introspectToken"),
    userinfo_url: None,
    api_base_url: Some("https://api.linkedin.com"),
    scope_separator: " ",
    client_id_param: "client_id",
    pkce: false,
    client_auth: ClientAuth::Form,
    authorization_params: &[],
    default_scopes: &[],
    renew: RenewStyle::RefreshToken,
};

/// X (OAuth 2.0 with PKCE). `/2/users/me` needs `tweet.read users.read`; without
/// `offline.access` X issues no refresh token and the token dies after two hours.
pub const X: Preset = Preset {
    authorization_url: Some("https://x.com/i/oauth2/authorize"),
    token_url: Some("https://api.x.com/2/oauth2/token"),
    introspection_url: None,
    userinfo_url: Some("https://api.x.com/2/users/me"),
    api_base_url: Some("https://api.x.com/2"),
    scope_separator: " ",
    client_id_param: "client_id",
    pkce: true,
    client_auth: ClientAuth::Basic,
    authorization_params: &[],
    default_scopes: &["tweet.read", "users.read", "offline.access"],
    renew: RenewStyle::RefreshToken,
};

/// Slack (OAuth v2). `auth.test` checks any token; refresh tokens exist only when the app has
/// token rotation turned on.
pub const SLACK: Preset = Preset {
    authorization_url: Some("https://slack.com/oauth/v2/authorize"),
    token_url: Some("https://slack.com/api/oauth.v2.access"),
    introspection_url: None,
    userinfo_url: None,
    api_base_url: Some("https://slack.com/api"),
    scope_separator: ",",
    client_id_param: "client_id",
    pkce: false,
    client_auth: ClientAuth::Form,
    authorization_params: &[],
    default_scopes: &[],
    renew: RenewStyle::RefreshToken,
};

/// TikTok Login Kit (OAuth v2 for web): `client_key` instead of `client_id`, comma-separated
/// scopes, rotating refresh tokens. `user.info.basic` is what the `/v2/user/info/` probe needs.
pub const TIKTOK: Preset = Preset {
    authorization_url: Some("https://www.tiktok.com/v2/auth/authorize/"),
    token_url: Some("https://open.tiktokapis.com/v2/oauth/token/"),
    introspection_url: None,
    userinfo_url: Some("https://open.tiktokapis.com/v2/user/info/"),
    api_base_url: Some("https://open.tiktokapis.com/v2"),
    scope_separator: ",",
    client_id_param: "client_key",
    pkce: false,
    client_auth: ClientAuth::Form,
    authorization_params: &[],
    default_scopes: &["user.info.basic"],
    renew: RenewStyle::RefreshToken,
};

/// The preset of a provider type.
pub fn preset(type_: ProviderType) -> Preset {
    match type_ {
        ProviderType::OAuth2 => OAUTH2,
        ProviderType::Facebook => FACEBOOK,
        ProviderType::Instagram => INSTAGRAM,
        ProviderType::Google => GOOGLE,
        ProviderType::Microsoft => MICROSOFT,
        ProviderType::Linkedin => LINKEDIN,
        ProviderType::X => X,
        ProviderType::Slack => SLACK,
        ProviderType::Tiktok => TIKTOK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_presets_are_complete() {
        for t in [
            ProviderType::Facebook,
            ProviderType::Instagram,
            ProviderType::Google,
            ProviderType::Microsoft,
            ProviderType::Linkedin,
            ProviderType::X,
            ProviderType::Slack,
            ProviderType::Tiktok,
        ] {
            let p = preset(t);
            for url in [p.authorization_url, p.token_url].into_iter().flatten() {
                assert!(url.starts_with("https://"), "{t:?}: {url}");
            }
            assert!(
                p.authorization_url.is_some() && p.token_url.is_some(),
                "{t:?}"
            );
        }
        assert_eq!(preset(ProviderType::Tiktok).client_id_param, "client_key");
        assert!(
            FACEBOOK
                .api_base_url
                .is_some_and(|u| u.ends_with(GRAPH_VERSION))
        );
        assert!(
            INSTAGRAM
                .api_base_url
                .is_some_and(|u| u.ends_with(GRAPH_VERSION))
        );
    }
}
