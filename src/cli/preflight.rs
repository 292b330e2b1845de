//! What `relink run` checks before it starts: the cluster answers and its CRDs are this version's.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tracing::info;

/// Fails with a message that says what to do when the cluster is unreachable or the CRDs are missing.
pub async fn preflight(client: &Client) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in relink::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        match crds.get_opt(&name).await {
            Ok(Some(installed)) => {
                if let Some(field) = missing_field(&crd, &installed) {
                    return Err(format!(
                        "CRD {name} is older than this operator (it has no {field}; the API server would drop it and requests would repeat): apply this version's CRDs with `relink crd | kubectl apply --server-side -f -` (or upgrade the Helm chart with crds.enabled=true)"
                    ));
                }
            }
            Ok(None) => {
                return Err(format!(
                    "CRD {name} is not installed: run `relink crd | kubectl apply --server-side -f -` (or install the Helm chart)"
                ));
            }
            Err(kube::Error::Api(e)) if e.code == 403 => {
                info!("cannot read CRDs (forbidden); assuming they are installed");
                return Ok(());
            }
            Err(e) => return Err(format!("cannot reach the Kubernetes API: {e}")),
        }
    }
    Ok(())
}

/// A spec or status field this operator writes or reads that the installed CRD lacks, if any
/// (an older CRD prunes it silently).
fn missing_field(
    ours: &CustomResourceDefinition,
    installed: &CustomResourceDefinition,
) -> Option<String> {
    let props = |crd: &CustomResourceDefinition, section: &str| -> Vec<String> {
        serde_json::to_value(crd).ok().and_then(|v| {
            v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][section]["properties"]
                .as_object()
                .map(|o| o.keys().cloned().collect())
        })
        .unwrap_or_default()
    };
    ["spec", "status"].into_iter().find_map(|section| {
        let have = props(installed, section);
        props(ours, section)
            .into_iter()
            .find(|f| !have.contains(f))
            .map(|f| format!("{section}.{f}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_installed_crd_is_named_with_the_field_it_lacks() {
        let ours = relink::api::crds().remove(0);
        assert_eq!(missing_field(&ours, &ours), None);
        let mut older = serde_json::to_value(&ours).unwrap();
        older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]
            .as_object_mut()
            .unwrap()
            .remove("lastHandledRefreshRequest");
        let older: CustomResourceDefinition = serde_json::from_value(older).unwrap();
        assert_eq!(
            missing_field(&ours, &older).as_deref(),
            Some("status.lastHandledRefreshRequest")
        );
    }
}
