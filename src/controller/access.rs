//! Whether a connection may use a `ClusterChannelProvider` at all: the provider's
//! `allowedNamespaces` (a label selector over namespaces) and `allowedScopes`. Decided before any
//! provider call, link or mail, by both the check and the OAuth callback.

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
