//! The one writer of a connection's status, used by the check and by the OAuth callback:
//! server-side apply (field manager `relink`) of the whole status relink owns, optionally
//! conditioned on the `resourceVersion` it was computed from. And the callback's two status
//! changes, as pure functions of the status it read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::json;

use crate::api::{
    ChannelConnection, ChannelConnectionStatus, FIELD_MANAGER, Reauthorization, ReportedAccount,
};

/// Applies `status` to connection `namespace/name`. With `version`, only if the connection has
/// not changed since that `resourceVersion` (else HTTP 409).
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    status: &ChannelConnectionStatus,
    version: Option<&str>,
) -> Result<(), kube::Error> {
    let patch = StatusPatch {
        api_version: ChannelConnection::api_version(&()),
        kind: ChannelConnection::kind(&()),
        metadata: version.map(|v| json!({ "resourceVersion": v })),
        status,
    };
    Api::<Written>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Applies the status of a group or provider object (the same server-side apply as [`apply`],
/// unconditioned; those objects are small, so the answer is decoded as usual).
pub async fn apply_other<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// The body of a status write, serialized as it stands (no JSON tree built in between).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a> {
    api_version: std::borrow::Cow<'static, str>,
    kind: std::borrow::Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Value>,
    status: &'a ChannelConnectionStatus,
}

/// What the answer to a status write is read into: nothing. The answer is the whole object
/// with its `managedFields`; the watch brings the change anyway, so decoding it into a
/// `ChannelConnection` would be work for nothing on every check.
#[derive(Clone, Debug, Default, serde::Deserialize)]
struct Written {
    #[serde(skip)]
    metadata: kube::api::ObjectMeta,
}

impl Resource for Written {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        ChannelConnection::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        ChannelConnection::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        ChannelConnection::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        ChannelConnection::plural(dt)
    }
    fn meta(&self) -> &kube::api::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
        &mut self.metadata
    }
}

/// The status once a link was used: the same, with `fresh` (a new link for the right person,
/// should this login be refused) in its place.
pub fn link_replaced(
    status: Option<&ChannelConnectionStatus>,
    fresh: Option<String>,
) -> ChannelConnectionStatus {
    ChannelConnectionStatus {
        reauth_url: fresh,
        ..status.cloned().unwrap_or_default()
    }
}

/// The status once a login was written: the link withdrawn, the account that logged in pinned
/// and recorded, and what the login granted kept for providers whose checks cannot tell.
pub fn reauthorized(
    status: Option<&ChannelConnectionStatus>,
    account: &ReportedAccount,
    granted: Option<&[String]>,
    now: jiff::Timestamp,
) -> ChannelConnectionStatus {
    let mut s = status.cloned().unwrap_or_default();
    s.reauth_url = None;
    s.account = Some(account.clone());
    s.last_reauthorization = Some(Reauthorization {
        time: Time(now),
        account: Some(account.clone()),
    });
    if let Some(scopes) = granted {
        s.granted_scopes = scopes.to_vec();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_withdraws_the_link_and_pins_the_account() {
        let old = ChannelConnectionStatus {
            reauth_url: Some("https://login".into()),
            granted_scopes: vec!["a".into()],
            consecutive_failures: 3,
            ..Default::default()
        };
        let account = ReportedAccount {
            id: Some("1".into()),
            name: Some("Acme".into()),
        };
        let now = jiff::Timestamp::now();
        let s = reauthorized(Some(&old), &account, Some(&["a".into(), "b".into()]), now);
        assert_eq!(s.reauth_url, None);
        assert_eq!(s.account.as_ref(), Some(&account));
        assert_eq!(s.granted_scopes, ["a", "b"]);
        assert_eq!(s.consecutive_failures, 3, "the rest is kept");
        assert_eq!(s.last_reauthorization.map(|r| r.time.0), Some(now));
        let s = reauthorized(Some(&old), &account, None, now);
        assert_eq!(s.granted_scopes, ["a"]);
        let s = link_replaced(Some(&old), Some("https://fresh".into()));
        assert_eq!(s.reauth_url.as_deref(), Some("https://fresh"));
        assert_eq!(s.consecutive_failures, 3);
    }
}
