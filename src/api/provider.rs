//! `ChannelProvider` (namespaced) and `ClusterChannelProvider` (cluster-wide): the OAuth
//! application registered at a provider, e.g. "our Facebook app".

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which network or protocol a provider speaks; selects the built-in endpoints and validator.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    Facebook,
    Instagram,
    Google,
    Microsoft,
    Linkedin,
    X,
    Slack,
    Tiktok,
    /// Any RFC 6749 server, validated by RFC 7662 introspection or a userinfo/probe URL.
    #[serde(rename = "oauth2")]
    OAuth2,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Facebook => "facebook",
            Self::Instagram => "instagram",
            Self::Google => "google",
            Self::Microsoft => "microsoft",
            Self::Linkedin => "linkedin",
            Self::X => "x",
            Self::Slack => "slack",
            Self::Tiktok => "tiktok",
            Self::OAuth2 => "oauth2",
        }
    }
}

/// Where the OAuth client secret is stored.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ClientSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret that holds the client secret.
    #[serde(default = "default_client_secret_key")]
    pub key: String,
    /// Namespace of the Secret. Only for a ClusterChannelProvider (defaults to the operator's
    /// namespace); a ChannelProvider always reads from its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_client_secret_key() -> String {
    "client_secret".to_owned()
}

/// Provider URLs. Each one overrides the built-in preset of `type`: this is how sandboxes,
/// self-hosted servers and pinned API versions are served.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEndpoints {
    /// Where a person logs in and consents (the OAuth authorization endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, regex(pattern = r"^https?://"))]
    pub authorization_url: Option<String>,
    /// The OAuth token endpoint (code exchange and refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, regex(pattern = r"^https?://"))]
    pub token_url: Option<String>,
    /// RFC 7662 token introspection endpoint; preferred for validation when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, regex(pattern = r"^https?://"))]
    pub introspection_url: Option<String>,
    /// An endpoint that answers 200 to a valid bearer token (OIDC userinfo or any probe URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, regex(pattern = r"^https?://"))]
    pub userinfo_url: Option<String>,
    /// Base URL of the provider's API (e.g. `https://graph.facebook.com/v21.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url, regex(pattern = r"^https?://"))]
    pub api_base_url: Option<String>,
}

/// What relink last found out about a provider object.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelProviderStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the client credentials are present, the endpoints pass the operator's policy
    /// and, where the provider can tell, the credentials are accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Both provider kinds share one spec; the macro keeps them from drifting apart.
macro_rules! provider_spec {
    ($spec:ident, $kind:tt, $doc:tt, $($scope:tt)*) => {
        #[doc = $doc]
        #[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
        #[kube(
            group = "relink.dev",
            version = "v1alpha1",
            kind = $kind,
            status = "ChannelProviderStatus",
            category = "relink",
            derive = "PartialEq",
            doc = $doc,
            printcolumn(name = "TYPE", type_ = "string", json_path = ".spec.type"),
            printcolumn(name = "CLIENT ID", type_ = "string", json_path = ".spec.clientId"),
            printcolumn(name = "READY", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
            printcolumn(name = "STATUS", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason"),
            printcolumn(name = "AGE", type_ = "date", json_path = ".metadata.creationTimestamp")
            $($scope)*
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $spec {
            /// The network: facebook, instagram, google, microsoft, linkedin, x, slack, tiktok,
            /// or oauth2 for any RFC 6749 server.
            #[serde(rename = "type")]
            pub type_: ProviderType,

            /// The application's client ID (TikTok calls it client key).
            #[schemars(length(min = 1))]
            pub client_id: String,

            /// The Secret holding the application's client secret.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub client_secret_ref: Option<ClientSecretRef>,

            /// Where the provider sends a person back after consent. Defaults to the operator's
            /// `--public-url` + `/oauth/callback`; must be registered with the provider.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(url, regex(pattern = r"^https?://"))]
            pub redirect_url: Option<String>,

            /// Scopes requested at re-authorization, merged with each connection's requiredScopes.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub scopes: Vec<String>,

            /// Overrides of the built-in endpoints of `type`.
            #[serde(default)]
            pub endpoints: ProviderEndpoints,

            /// Extra query parameters for the authorization URL (e.g. `access_type: offline`).
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub authorization_params: BTreeMap<String, String>,
        }
    };
}

provider_spec!(
    ChannelProviderSpec,
    "ChannelProvider",
    "An OAuth application at a provider, usable by the connections of one namespace. Its endpoints must pass the operator's endpoint policy.",
    , namespaced
);

provider_spec!(
    ClusterChannelProviderSpec,
    "ClusterChannelProvider",
    "An OAuth application at a provider, usable by connections in every namespace. Trusted: set up by cluster administrators.",
);

/// What the controller needs of either provider kind, read once per check.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderSettings {
    pub type_: ProviderType,
    pub client_id: String,
    pub client_secret_ref: Option<ClientSecretRef>,
    pub redirect_url: Option<String>,
    pub scopes: Vec<String>,
    pub endpoints: ProviderEndpoints,
    pub authorization_params: BTreeMap<String, String>,
}

macro_rules! into_settings {
    ($spec:ident) => {
        impl From<$spec> for ProviderSettings {
            fn from(s: $spec) -> Self {
                Self {
                    type_: s.type_,
                    client_id: s.client_id,
                    client_secret_ref: s.client_secret_ref,
                    redirect_url: s.redirect_url,
                    scopes: s.scopes,
                    endpoints: s.endpoints,
                    authorization_params: s.authorization_params,
                }
            }
        }
    };
}
into_settings!(ChannelProviderSpec);
into_settings!(ClusterChannelProviderSpec);
