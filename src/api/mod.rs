//! The relink API (`relink.dev/v1alpha1`): custom resource types and the condition vocabulary.
//!
//! Doc comments on fields become `kubectl explain` text, so they are written for users.

// kube's `#[kube(printcolumn(...))]` repeats `type_ = ...` per column, which clippy mistakes
// for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

mod conditions;
mod connection;
mod duration;
mod group;
mod provider;
pub mod write;

pub use conditions::{ConditionType, Reason, set_condition, set_condition_reason};
pub use connection::*;
pub use duration::{
    CHECK_INTERVAL_RANGE, DurationError, DurationRange, KEEP_ALIVE_RANGE, MAX_AGE_RANGE,
    REFRESH_BEFORE_RANGE, human, parse_duration,
};
pub use group::*;
pub use provider::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every relink resource.
pub const GROUP: &str = "relink.dev";
/// Annotation whose new value asks for a check now (`kubectl annotate chc x relink.dev/check-requested-at=$(date +%s) --overwrite`).
pub const CHECK_REQUESTED_ANNOTATION: &str = "relink.dev/check-requested-at";
/// Annotation whose new value asks for a re-authorization link for a healthy connection
/// (renewal before a deadline, handing the channel to another admin); `relink reauth NAME`.
pub const REAUTHORIZE_REQUESTED_ANNOTATION: &str = "relink.dev/reauthorize-requested-at";
/// Annotation (`"true"`) that lets the next completed re-authorization change the account a
/// connection without `spec.account` is pinned to; removed once used. Without it the OAuth
/// callback accepts only the account the connection last worked with.
pub const ALLOW_ACCOUNT_CHANGE_ANNOTATION: &str = "relink.dev/allow-account-change";
/// Annotation whose new value asks for a token refresh at the next check, even when the token
/// is not near expiry (`relink refresh NAME`).
pub const REFRESH_REQUESTED_ANNOTATION: &str = "relink.dev/refresh-requested-at";
/// Every annotation relink reads, with what it does (for the API reference).
pub const ANNOTATIONS: &[(&str, &str)] = &[
    (
        CHECK_REQUESTED_ANNOTATION,
        "a new value asks for a check now; echoed to `status.lastHandledCheckRequest` (`relink check NAME`)",
    ),
    (
        REFRESH_REQUESTED_ANNOTATION,
        "a new value asks for a token refresh now, even far from expiry; echoed to `status.lastHandledRefreshRequest` (`relink refresh NAME`)",
    ),
    (
        REAUTHORIZE_REQUESTED_ANNOTATION,
        "a new value asks for a re-authorization link for a healthy connection, published until a login changes the token (`relink reauth NAME`)",
    ),
    (
        ALLOW_ACCOUNT_CHANGE_ANNOTATION,
        "`\"true\"` lets the next completed re-authorization change the account of a connection without `spec.account` (otherwise only the account it last worked with is accepted); removed once used, and the `Reauthorized` Event names both accounts",
    ),
];

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "relink";

/// Every CRD relink installs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ChannelConnection::crd(),
        ChannelProvider::crd(),
        ClusterChannelProvider::crd(),
        ChannelGroup::crd(),
    ]
}

/// Server-side applies `crds` (field manager `manager`) and waits up to 30 s until each is
/// Established, so objects of the kinds can be created right after. Used by `relink demo`, the
/// e2e tests and the benchmark.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
    manager: &str,
) -> Result<(), String> {
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(manager).force();
    for crd in crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        api.patch(name, &pp, &Patch::Apply(crd))
            .await
            .map_err(|e| format!("cannot install CRD {name}: {e}"))?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for crd in crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        loop {
            let established = api.get(name).await.ok().is_some_and(|c| {
                c.status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("CRD {name} is not Established after 30 s"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The CRDs as one multi-document YAML stream, exactly what `relink crd` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// `crds/` is what users and the chart install: it must be exactly what the types generate.
    #[test]
    fn checked_in_crds_match_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/relink.dev.yaml");
        let checked_in = std::fs::read_to_string(path).expect("crds/relink.dev.yaml exists");
        let generated = super::crds_yaml().expect("CRDs render");
        assert!(
            checked_in == generated,
            "crds/relink.dev.yaml is stale: run `cargo run -- crd > crds/relink.dev.yaml`"
        );
    }
}
