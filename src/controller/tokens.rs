//! Reading and writing what a check needs: the provider application (with its client secret,
//! behind the endpoint policy) and the token keys of a connection's Secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::SecretVersions;
use crate::api::{
    ChannelProvider, ClusterChannelProvider, ProviderKind, ProviderRef, ProviderSettings,
    TokenSecretRef,
};
use crate::providers::{App, EndpointPolicy, NewTokens, Token};

/// A provider object found for a connection.
#[derive(Clone, Debug)]
pub struct ResolvedProvider {
    pub settings: ProviderSettings,
    pub kind: ProviderKind,
    pub name: String,
    /// Namespace of a ChannelProvider; the operator's for a ClusterChannelProvider.
    pub namespace: String,
    pub generation: Option<i64>,
    /// Re-authorization links name the object they were made for.
    pub uid: Option<String>,
}

impl ResolvedProvider {
    pub fn from_namespaced(p: &ChannelProvider) -> Self {
        Self {
            settings: p.spec.clone().into(),
            kind: ProviderKind::ChannelProvider,
            name: p.name_any(),
            namespace: p.namespace().unwrap_or_default(),
            generation: p.metadata.generation,
            uid: p.uid(),
        }
    }

    pub fn from_cluster(p: &ClusterChannelProvider, operator_namespace: &str) -> Self {
        Self {
            settings: p.spec.clone().into(),
            kind: ProviderKind::ClusterChannelProvider,
            name: p.name_any(),
            namespace: operator_namespace.to_owned(),
            generation: p.metadata.generation,
            uid: p.uid(),
        }
    }

    /// Reads the provider object through the API (the callback server has no caches).
    pub async fn fetch(
        client: &Client,
        r: &ProviderRef,
        namespace: &str,
        operator_namespace: &str,
    ) -> Result<Option<Self>, kube::Error> {
        Ok(match r.kind {
            ProviderKind::ChannelProvider => {
                Api::<ChannelProvider>::namespaced(client.clone(), namespace)
                    .get_opt(&r.name)
                    .await?
                    .map(|p| Self::from_namespaced(&p))
            }
            ProviderKind::ClusterChannelProvider => {
                Api::<ClusterChannelProvider>::all(client.clone())
                    .get_opt(&r.name)
                    .await?
                    .map(|p| Self::from_cluster(&p, operator_namespace))
            }
        })
    }

    pub fn trusted(&self) -> bool {
        self.kind == ProviderKind::ClusterChannelProvider
    }

    /// Namespace, name and key of the client secret: a ClusterChannelProvider may name a
    /// namespace, a ChannelProvider only ever reads its own.
    pub fn client_secret_location(&self) -> Option<SecretKey> {
        let cs = self.settings.client_secret_ref.as_ref()?;
        let ns = match (&cs.namespace, self.trusted()) {
            (Some(ns), true) => ns.clone(),
            _ => self.namespace.clone(),
        };
        Some((ns, cs.name.clone(), cs.key.clone()))
    }

    pub fn label(&self) -> String {
        match self.kind {
            ProviderKind::ChannelProvider => {
                format!("ChannelProvider/{}/{}", self.namespace, self.name)
            }
            ProviderKind::ClusterChannelProvider => format!("ClusterChannelProvider/{}", self.name),
        }
    }
}

/// Why the application cannot be used: shown as `ProviderNotReady`.
pub type NotReady = String;

/// Builds the [`App`]: endpoints checked against the policy (namespaced providers only) and the
/// client secret read. A Kubernetes API failure is an `Err(Err(..))` to retry.
/// Client secrets read for checks, reused while the metadata watch reports the same
/// `resourceVersion` for their Secret: a fleet of connections sharing one provider then costs
/// one Secret read per check, not two. Only client secrets are kept, never tokens.
#[derive(Default)]
pub struct ClientSecretCache {
    entries: Mutex<HashMap<SecretKey, (String, Token)>>,
}

/// Namespace, name and key of a client secret.
pub type SecretKey = (String, String, String);

impl ClientSecretCache {
    fn get(&self, key: &SecretKey, version: &str) -> Option<Token> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(v, _)| v == version)
            .map(|(_, t)| t.clone())
    }

    fn put(&self, key: SecretKey, version: String, token: Token) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(key, (version, token));
    }
}

/// Where [`load_app`] may reuse a client secret instead of reading it.
pub type Reuse<'a> = Option<(&'a ClientSecretCache, &'a SecretVersions)>;

pub async fn load_app(
    client: &Client,
    policy: &EndpointPolicy,
    p: &ResolvedProvider,
    reuse: Reuse<'_>,
) -> Result<Result<App, NotReady>, kube::Error> {
    let label = p.label();
    if let Err(message) = p.settings.refresh_token_lifetime() {
        return Ok(Err(format!("{label}: {message}")));
    }
    if !p.trusted() {
        let e = &p.settings.endpoints;
        for url in [
            &e.authorization_url,
            &e.token_url,
            &e.introspection_url,
            &e.userinfo_url,
            &e.api_base_url,
        ]
        .into_iter()
        .flatten()
        {
            if let Err(message) = policy.check_url(url) {
                return Ok(Err(format!("{label}: {message}")));
            }
        }
    }
    let client_secret = match p.client_secret_location() {
        None => None,
        Some(key) => {
            let (ns, name, secret_key) = key.clone();
            let cached =
                reuse.and_then(|(cache, versions)| cache.get(&key, &versions.version(&ns, &name)?));
            let read = match cached {
                Some(t) => Some(t),
                None => {
                    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
                    let secret = api.get_opt(&name).await?;
                    let token = secret.as_ref().and_then(|s| read_key(s, &secret_key));
                    if let (Some((cache, _)), Some(t), Some(v)) = (
                        reuse,
                        &token,
                        secret.as_ref().and_then(|s| s.resource_version()),
                    ) {
                        cache.put(key, v, t.clone());
                    }
                    token
                }
            };
            match read {
                Some(v) => Some(v),
                None => {
                    return Ok(Err(format!(
                        "{label}: client secret not found (Secret {ns}/{name}, key {secret_key:?} in spec.clientSecretRef)"
                    )));
                }
            }
        }
    };
    Ok(Ok(App {
        settings: p.settings.clone(),
        client_secret,
        trusted: p.trusted(),
        label,
    }))
}

/// A Secret value as a token: UTF-8, surrounding whitespace trimmed (files often end in a
/// newline), non-empty and without inner whitespace.
pub fn read_key(secret: &Secret, key: &str) -> Option<Token> {
    let raw = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&raw.0).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return None;
    }
    Some(Token::new(text))
}

/// `expires_at` as RFC 3339 or Unix seconds.
pub fn parse_expiry(v: &str) -> Option<jiff::Timestamp> {
    if let Ok(secs) = v.parse::<i64>() {
        return jiff::Timestamp::from_second(secs).ok();
    }
    v.parse().ok()
}

/// Annotation relink sets on a token Secret whenever it writes new tokens (refresh or
/// re-authorization): when they were issued. Every connection of the Secret, and every replica
/// after a restart, paces its refreshes from it, so a token one connection just refreshed is not
/// refreshed again by another.
pub const TOKENS_ISSUED_ANNOTATION: &str = "relink.dev/tokens-issued-at";

/// Annotation relink sets on a token Secret when the provider said when the refresh token
/// itself expires (LinkedIn's 365 days, TikTok, Google's time-limited access): a refresh does
/// not extend it, so the connection turns `Expiring` ahead of it.
pub const REFRESH_EXPIRES_ANNOTATION: &str = "relink.dev/refresh-token-expires-at";

/// When the refresh token in `secret` stops working, if the provider said so.
pub fn refresh_expires_at(secret: &Secret) -> Option<jiff::Timestamp> {
    annotated_time(secret, REFRESH_EXPIRES_ANNOTATION)
}

/// When the tokens in `secret` were issued, if relink wrote them.
pub fn tokens_issued_at(secret: &Secret) -> Option<jiff::Timestamp> {
    annotated_time(secret, TOKENS_ISSUED_ANNOTATION)
}

/// A timestamp relink wrote in annotation `key` of a token Secret.
fn annotated_time(secret: &Secret, key: &str) -> Option<jiff::Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Why new tokens were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else changed the Secret since it was read (optimistic concurrency).
    #[error("the Secret changed while relink was writing it")]
    Conflict,
    #[error("cannot write the token Secret: {0}")]
    Kube(#[from] kube::Error),
}

/// Writes new tokens into the keys `secret_ref` names, leaving every other key untouched.
/// With `expected_version`, the write fails with [`WriteError::Conflict`] if the Secret changed
/// since; a missing Secret is created. Returns the Secret's new `resourceVersion`.
pub async fn write_tokens(
    client: &Client,
    namespace: &str,
    secret_ref: &TokenSecretRef,
    tokens: &NewTokens,
    expected_version: Option<&str>,
) -> Result<Option<String>, WriteError> {
    write_tokens_labelled(
        client,
        namespace,
        secret_ref,
        tokens,
        expected_version,
        &BTreeMap::new(),
    )
    .await
}

/// [`write_tokens`], also putting `labels` on the Secret (a created Secret has them from the
/// start, so it is never seen without them).
pub async fn write_tokens_labelled(
    client: &Client,
    namespace: &str,
    secret_ref: &TokenSecretRef,
    tokens: &NewTokens,
    expected_version: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<Option<String>, WriteError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut data = serde_json::Map::new();
    data.insert(
        secret_ref.access_token_key.clone(),
        json!(b64(tokens.access_token.expose())),
    );
    if let Some(rt) = &tokens.refresh_token {
        data.insert(
            secret_ref.refresh_token_key.clone(),
            json!(b64(rt.expose())),
        );
    }
    data.insert(
        secret_ref.expires_at_key.clone(),
        match tokens.expires_at {
            Some(t) => json!(b64(&t.to_string())),
            None => serde_json::Value::Null,
        },
    );
    let issued = jiff::Timestamp::now().to_string();
    let mut annotations = BTreeMap::from([(TOKENS_ISSUED_ANNOTATION.to_owned(), issued)]);
    if let Some(at) = tokens.refresh_expires_at {
        annotations.insert(REFRESH_EXPIRES_ANNOTATION.to_owned(), at.to_string());
    }
    let mut patch = json!({
        "data": data,
        "metadata": { "annotations": &annotations },
    });
    if let Some(rv) = expected_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    if !labels.is_empty() {
        patch["metadata"]["labels"] = json!(labels);
    }
    match api
        .patch(
            &secret_ref.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(s) => Ok(s.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Conflict),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let mut values = BTreeMap::new();
            values.insert(
                secret_ref.access_token_key.clone(),
                ByteString(tokens.access_token.expose().as_bytes().to_vec()),
            );
            if let Some(rt) = &tokens.refresh_token {
                values.insert(
                    secret_ref.refresh_token_key.clone(),
                    ByteString(rt.expose().as_bytes().to_vec()),
                );
            }
            if let Some(t) = tokens.expires_at {
                values.insert(
                    secret_ref.expires_at_key.clone(),
                    ByteString(t.to_string().into_bytes()),
                );
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_ref.name.clone()),
                    labels: (!labels.is_empty()).then(|| labels.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                data: Some(values),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(s) => Ok(s.resource_version()),
                Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Conflict),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}
