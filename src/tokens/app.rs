//! The provider application a check or the callback uses: the provider object found for a
//! connection, its endpoints checked against the endpoint policy, and its client secret read
//! (or reused while its Secret is unchanged).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use super::read_key;
use crate::api::{
    ChannelProvider, ClusterChannelProvider, ProviderKind, ProviderRef, ProviderSettings,
};
use crate::providers::{App, EndpointPolicy, Token};

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

/// Client secrets read for checks, reused while the metadata watch reports the same
/// `resourceVersion` for their Secret: a fleet of connections sharing one provider then costs
/// one Secret read per check, not two. Only client secrets are kept, never tokens.
#[derive(Default)]
pub struct ClientSecretCache {
    entries: Mutex<HashMap<SecretKey, (String, Token)>>,
    /// Held while a client secret is read: the checks that start together (a sweep starts
    /// dozens at once) wait for the first read instead of each reading the Secret. Reads are
    /// rare (once per client secret version), so one lock for all providers is enough.
    reading: tokio::sync::Mutex<()>,
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

/// The `resourceVersion` of Secrets as last seen (the controller's metadata-only watch).
pub trait KnownVersions {
    fn version(&self, namespace: &str, name: &str) -> Option<String>;
}

/// Where [`load_app`] may reuse a client secret instead of reading it.
pub type Reuse<'a> = Option<(&'a ClientSecretCache, &'a (dyn KnownVersions + Sync))>;

/// Builds the [`App`]: endpoints checked against the policy (namespaced providers only) and the
/// client secret read. A Kubernetes API failure is an `Err(..)` to retry.
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
            let cached = || {
                reuse.and_then(|(cache, versions)| cache.get(&key, &versions.version(&ns, &name)?))
            };
            // A miss waits for a read in flight, then looks again: a hit is looked up once.
            let mut found = cached();
            let _reading = match (&found, reuse) {
                (None, Some((cache, _))) => {
                    let reading = cache.reading.lock().await;
                    found = cached();
                    Some(reading)
                }
                _ => None,
            };
            let read = match found {
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
                        cache.put(key.clone(), v, t.clone());
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
