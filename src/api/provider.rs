//! `ChannelProvider` (namespaced) and `ClusterChannelProvider` (cluster-wide): the OAuth
//! application registered at a provider, e.g. "our Facebook app".

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use kube::core::{Selector, SelectorExt};
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
    ($spec:ident, $kind:tt, $doc:tt, { $($extra:tt)* }, $($scope:tt)*) => {
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

            /// How long a refresh token of this application works after it is issued, where the
            /// provider documents a limit its token responses do not state: a Google app whose
            /// OAuth consent screen is in "Testing" status gets refresh tokens that stop working
            /// after 7 days (`168h`). When relink receives a new refresh token (login or
            /// rotation) it records the end, and the connection turns `Expiring` with a
            /// re-authorization link `refresh.before` ahead of it. A lifetime the token response
            /// states (`refresh_token_expires_in`) wins. From `1h` to `8784h` (366 days).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(regex(pattern = super::duration::DURATION_PATTERN), length(max = 16))]
            pub refresh_token_lifetime: Option<String>,

            $($extra)*
        }
    };
}

provider_spec!(
    ChannelProviderSpec,
    "ChannelProvider",
    "An OAuth application at a provider, usable by the connections of one namespace. Its endpoints must pass the operator's endpoint policy.",
    {},
    , namespaced
);

provider_spec!(
    ClusterChannelProviderSpec,
    "ClusterChannelProvider",
    "An OAuth application at a provider, shared with the namespaces `allowedNamespaces` selects (every namespace when absent). Trusted: set up by cluster administrators.",
    {
        /// Namespaces whose connections may use this application, selected by their labels
        /// (like Gateway API's `allowedRoutes`). Absent: every namespace; `{}` also selects
        /// every namespace. The label `kubernetes.io/metadata.name` (the namespace's name) can
        /// be used on every Kubernetes version. A connection elsewhere gets `Ready=False`
        /// reason `ProviderNotAllowed`: no provider call, no link, no mail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub allowed_namespaces: Option<LabelSelector>,

        /// Scopes connections may ask for (`spec.requiredScopes`). Absent: any. A connection
        /// requiring another scope gets reason `ProviderNotAllowed`, so a tenant cannot use the
        /// company's application to ask anyone for, say, full mailbox access.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub allowed_scopes: Option<Vec<String>>,
    },
);

impl ClusterChannelProviderSpec {
    /// Why a connection in `namespace` (with its `labels`) requiring `scopes` may not use this
    /// application, or `None` when it may.
    pub fn refusal(
        &self,
        provider: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        scopes: &[String],
    ) -> Option<String> {
        if let Some(selector) = &self.allowed_namespaces {
            // Set by the API server from 1.21 on; added here so older clusters select alike.
            let mut labels = labels.clone();
            labels
                .entry(NAMESPACE_NAME_LABEL.to_owned())
                .or_insert_with(|| namespace.to_owned());
            let matches = Selector::try_from(selector.clone())
                .map(|s| s.matches(&labels))
                .unwrap_or(false);
            if !matches {
                return Some(format!(
                    "ClusterChannelProvider {provider:?} is not shared with namespace {namespace:?} (its spec.allowedNamespaces does not select it): ask the cluster administrators, or use a ChannelProvider of this namespace"
                ));
            }
        }
        if let Some(allowed) = &self.allowed_scopes {
            let beyond: Vec<&str> = scopes
                .iter()
                .filter(|s| !allowed.contains(s))
                .map(String::as_str)
                .collect();
            if !beyond.is_empty() {
                return Some(format!(
                    "ClusterChannelProvider {provider:?} does not allow the scopes {} (spec.requiredScopes beyond its spec.allowedScopes): remove them or ask the cluster administrators",
                    beyond.join(", ")
                ));
            }
        }
        None
    }
}

/// The label the API server puts on every namespace (1.21+): its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

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
    pub refresh_token_lifetime: Option<String>,
}

impl ProviderSettings {
    /// `spec.refreshTokenLifetime`, parsed and range-checked; the error names the field.
    pub fn refresh_token_lifetime(&self) -> Result<Option<std::time::Duration>, String> {
        self.refresh_token_lifetime
            .as_deref()
            .map(|d| super::duration::REFRESH_TOKEN_LIFETIME_RANGE.parse(d))
            .transpose()
    }
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
                    refresh_token_lifetime: s.refresh_token_lifetime,
                }
            }
        }
    };
}
into_settings!(ChannelProviderSpec);
into_settings!(ClusterChannelProviderSpec);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn spec(json: serde_json::Value) -> ClusterChannelProviderSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn shared_only_with_selected_namespaces_and_allowed_scopes() {
        let open = spec(serde_json::json!({"type": "google", "clientId": "c"}));
        let none = BTreeMap::new();
        assert_eq!(open.refusal("g", "any", &none, &["x".into()]), None);

        let mut p = spec(serde_json::json!({
            "type": "google", "clientId": "c",
            "allowedNamespaces": {"matchLabels": {"relink.dev/tenant": "marketing"}},
            "allowedScopes": ["https://www.googleapis.com/auth/gmail.send"]
        }));
        let tenant = BTreeMap::from([("relink.dev/tenant".to_owned(), "marketing".to_owned())]);
        let send = vec!["https://www.googleapis.com/auth/gmail.send".to_owned()];
        assert_eq!(p.refusal("g", "mkt", &tenant, &send), None);
        let m = p.refusal("g", "other", &none, &send).unwrap();
        assert!(
            m.contains("\"other\"") && m.contains("allowedNamespaces"),
            "{m}"
        );
        let all_mail = vec!["https://mail.google.com/".to_owned()];
        let m = p.refusal("g", "mkt", &tenant, &all_mail).unwrap();
        assert!(
            m.contains("https://mail.google.com/") && m.contains("allowedScopes"),
            "{m}"
        );

        // By name, on clusters that do not label namespaces with it yet.
        p.allowed_namespaces = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(vec!["mkt".into()]),
            }]),
            ..Default::default()
        });
        assert_eq!(p.refusal("g", "mkt", &none, &send), None);
        assert!(p.refusal("g", "sales", &none, &send).is_some());
        // Every namespace with an empty selector.
        p.allowed_namespaces = Some(LabelSelector::default());
        assert_eq!(p.refusal("g", "sales", &none, &send), None);
    }
}
