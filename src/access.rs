//! What a connection may reach at all, decided before any provider call, link or mail, by both
//! the check and the OAuth callback: a `ClusterChannelProvider`'s `allowedNamespaces` (a label
//! selector over namespaces) and `allowedScopes`, and the opt-in label token Secrets must carry.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, ResourceExt};

use crate::api::{ChannelConnection, ClusterChannelProvider};

/// Why `conn` may not use `provider`, or `None` when it may. The namespace's labels are read
/// only when the provider selects namespaces; a namespace the operator cannot read is refused
/// (fail closed). Other API errors are returned, to be retried.
pub async fn refusal(
    client: &Client,
    provider: &ClusterChannelProvider,
    conn: &ChannelConnection,
) -> Result<Option<String>, kube::Error> {
    let ns = conn.namespace().unwrap_or_default();
    let labels = if provider.spec.allowed_namespaces.is_some() {
        match Api::<Namespace>::all(client.clone()).get_opt(&ns).await {
            Ok(found) => found.map(|n| n.labels().clone()).unwrap_or_default(),
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return Ok(Some(format!(
                    "ClusterChannelProvider {:?} selects namespaces by label, and the operator may not read namespace {ns:?} (RBAC: get namespaces); not using it",
                    provider.name_any()
                )));
            }
            Err(e) => return Err(e),
        }
    } else {
        Default::default()
    };
    Ok(provider.spec.refusal(
        &provider.name_any(),
        &ns,
        &labels,
        &conn.spec.required_scopes,
    ))
}

/// The label token Secrets must carry before relink reads or writes them
/// (`--secret-label KEY=VALUE`): for clusters where people may create connections in a
/// namespace without being allowed to read its Secrets, so a connection cannot be pointed at
/// another Secret to have it sent to a provider or overwritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLabel {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for SecretLabel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Self {
                key: k.trim().to_owned(),
                value: v.trim().to_owned(),
            }),
            _ => Err(format!(
                "{s:?} is not KEY=VALUE (e.g. relink.dev/token=true)"
            )),
        }
    }
}

impl std::fmt::Display for SecretLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

impl SecretLabel {
    /// Why the Secret `name` with these `labels` may not be used, or `None`.
    pub fn refusal(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<String> {
        (labels.get(&self.key) != Some(&self.value)).then(|| {
            format!(
                "Secret {name:?} (spec.secretRef.name) lacks the label {self} that this operator requires before it reads or writes a token Secret: label it if it holds this channel's token, or name another Secret"
            )
        })
    }

    /// The label as a map, for a Secret relink creates.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(self.key.clone(), self.value.clone())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_label_is_key_value_and_must_match() {
        let l: SecretLabel = "relink.dev/token=true".parse().unwrap();
        assert_eq!(l.to_string(), "relink.dev/token=true");
        assert!("novalue".parse::<SecretLabel>().is_err());
        assert!("=x".parse::<SecretLabel>().is_err());
        assert_eq!(l.refusal("tok", &l.labels()), None);
        let m = l.refusal("tok", &BTreeMap::new()).unwrap();
        assert!(
            m.contains("relink.dev/token=true") && m.contains("\"tok\""),
            "{m}"
        );
        let wrong = BTreeMap::from([("relink.dev/token".to_owned(), "false".to_owned())]);
        assert!(l.refusal("tok", &wrong).is_some());
    }
}
