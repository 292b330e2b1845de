//! Smoke tests for the e2e harness itself.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};

use crate::support;

#[tokio::test]
async fn control_plane_starts_and_serves_namespaces() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let name = support::test_namespace(&client, "harness").await;
    let ns = Api::<Namespace>::all(client.clone())
        .get(&name)
        .await
        .expect("read namespace back");
    assert_eq!(ns.metadata.name.as_deref(), Some(name.as_str()));

    let table = support::table(&client, &format!("/api/v1/namespaces/{name}")).await;
    assert_eq!(table["kind"], "Table");
}

#[tokio::test]
async fn impersonated_client_is_forbidden_without_rbac() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client_as("system:serviceaccount:x:nobody", &[]);
    let err = Api::<Secret>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .expect_err("listing secrets must be forbidden");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
}
