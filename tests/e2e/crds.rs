//! Foundation: the CRDs install, good objects read back with their defaults, bad ones are
//! refused with messages a user understands, and the printer columns are right.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use relink::api::{
    ChannelConnection, ChannelConnectionStatus, ConditionType, Reason, set_condition,
};
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::support;

fn connection_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "relink.dev",
        "v1alpha1",
        "ChannelConnection",
    ))
}

fn valid_connection(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "relink.dev/v1alpha1",
        "kind": "ChannelConnection",
        "metadata": {"name": name},
        "spec": {
            "providerRef": {"name": "facebook-app"},
            "account": {"id": "1234567890", "displayName": "Acme Support"},
            "secretRef": {"name": "acme-page-token"},
            "requiredScopes": ["pages_manage_posts"],
            "owners": ["social@acme.example"]
        }
    })
}

#[tokio::test]
async fn valid_connection_applies_and_reads_back_with_defaults() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let ns = support::test_namespace(&client, "crd-valid").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &connection_resource());
    let obj: DynamicObject = serde_json::from_value(valid_connection("acme")).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .expect("a valid connection is accepted");

    let typed: Api<ChannelConnection> = Api::namespaced(client, &ns);
    let back = typed
        .get("acme")
        .await
        .expect("reads back as a ChannelConnection");
    assert_eq!(
        back.spec.check_interval, "15m",
        "checkInterval defaults to 15m"
    );
    assert_eq!(back.spec.secret_ref.access_token_key, "access_token");
    assert_eq!(back.spec.secret_ref.refresh_token_key, "refresh_token");
    assert_eq!(back.spec.secret_ref.expires_at_key, "expires_at");
    assert!(back.spec.refresh.enabled);
    assert_eq!(back.spec.refresh.before, "24h");
    assert!(back.spec.notify.email);
    assert!(!back.spec.suspend);
    assert_eq!(back.spec.provider_ref.kind.as_str(), "ChannelProvider");
}

/// Each case: a JSON merge onto a valid object, and words the API server's message must contain.
#[tokio::test]
async fn invalid_connections_are_rejected_with_clear_messages() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let ns = support::test_namespace(&client, "crd-invalid").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &connection_resource());
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        (
            "bad-kind",
            json!({"providerRef": {"kind": "FacebookProvider", "name": "x"}}),
            vec![
                "spec.providerRef.kind",
                "Unsupported value",
                "ClusterChannelProvider",
            ],
        ),
        (
            "bad-duration",
            json!({"checkInterval": "15 minutes"}),
            vec!["spec.checkInterval", "should match"],
        ),
        (
            "too-often",
            json!({"checkInterval": "30s"}),
            vec!["spec.checkInterval"],
        ),
        (
            "no-secret-name",
            json!({"secretRef": {"accessTokenKey": "token"}}),
            vec!["spec.secretRef.name", "Required"],
        ),
        (
            "empty-provider",
            json!({"providerRef": {"name": ""}}),
            vec!["spec.providerRef.name"],
        ),
        (
            "bad-owner",
            json!({"owners": ["not-an-email"]}),
            vec!["spec.owners", "email"],
        ),
        (
            "bad-refresh",
            json!({"refresh": {"before": "1 day"}}),
            vec!["spec.refresh.before"],
        ),
    ];
    for (name, patch, words) in cases {
        let mut obj = valid_connection(name);
        let spec = obj["spec"].as_object_mut().unwrap();
        for (k, v) in patch.as_object().unwrap() {
            spec.insert(k.clone(), v.clone());
        }
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        let err = api
            .create(&PostParams::default(), &obj)
            .await
            .expect_err(&format!("case {name} must be rejected"));
        let kube::Error::Api(status) = err else {
            panic!("case {name}: expected an API error, got {err}")
        };
        assert_eq!(status.code, 422, "case {name}: {}", status.message);
        for w in words {
            assert!(
                status.message.contains(w),
                "case {name}: message {:?} lacks {w:?}",
                status.message
            );
        }
    }
    // At least one minute, in any notation, is fine.
    for (i, ok) in ["1m", "90m", "1h30m", "2h"].iter().enumerate() {
        let mut obj = valid_connection(&format!("ok-{i}"));
        obj["spec"]["checkInterval"] = json!(ok);
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{ok} must be accepted: {e}"));
    }
}

#[tokio::test]
async fn invalid_provider_endpoints_are_rejected() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let ns = support::test_namespace(&client, "crd-provider").await;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "relink.dev",
        "v1alpha1",
        "ChannelProvider",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let make = |name: &str, type_: &str, url: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelProvider", "metadata": {"name": name},
            "spec": {"type": type_, "clientId": "abc", "endpoints": {"tokenUrl": url}}
        }))
        .unwrap()
    };
    let err = api
        .create(
            &PostParams::default(),
            &make("bad-type", "myspace", "https://example.com/token"),
        )
        .await;
    let Err(kube::Error::Api(s)) = err else {
        panic!("unknown type must be rejected")
    };
    assert!(
        s.message.contains("spec.type") && s.message.contains("facebook"),
        "{}",
        s.message
    );
    let err = api
        .create(
            &PostParams::default(),
            &make("bad-url", "oauth2", "ftp://example.com/token"),
        )
        .await;
    let Err(kube::Error::Api(s)) = err else {
        panic!("a non-http URL must be rejected")
    };
    assert!(
        s.message.contains("spec.endpoints.tokenUrl"),
        "{}",
        s.message
    );
    api.create(
        &PostParams::default(),
        &make("good", "oauth2", "https://example.com/token"),
    )
    .await
    .expect("a good provider is accepted");
}

#[tokio::test]
async fn printer_columns_show_status_at_a_glance() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let ns = support::test_namespace(&client, "crd-columns").await;
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), &ns);
    let conn = ChannelConnection::new(
        "acme",
        TestConnection::default()
            .provider("facebook-app")
            .account("1234")
            .requires(&["pages_manage_posts"])
            .spec(),
    );
    api.create(&PostParams::default(), &conn).await.unwrap();

    let now: jiff::Timestamp = jiff::Timestamp::now();
    let mut status = ChannelConnectionStatus {
        missing_scopes: vec!["pages_manage_posts".into()],
        reauth_url: Some("https://sandbox.example/oauth/authorize?client_id=x".into()),
        expires_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        last_check_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        account: Some(relink::api::ReportedAccount {
            id: Some("1234".into()),
            name: Some("Acme Support".into()),
        }),
        ..Default::default()
    };
    set_condition(
        &mut status.conditions,
        ConditionType::Ready,
        Some(false),
        Reason::ScopesMissing,
        "m",
        Some(1),
        now,
    );
    let patch =
        json!({"apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection", "status": status});
    api.patch_status(
        "acme",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&patch),
    )
    .await
    .expect("status applies");

    let table = support::table(
        &client,
        &format!("/apis/relink.dev/v1alpha1/namespaces/{ns}/channelconnections"),
    )
    .await;
    let columns: Vec<(String, i64)> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Name",
            "PROVIDER",
            "ACCOUNT",
            "READY",
            "STATUS",
            "EXPIRES",
            "LAST CHECK",
            "AGE",
            "MISSING SCOPES",
            "REAUTH URL"
        ]
    );
    let wide: Vec<&str> = columns
        .iter()
        .filter(|(_, p)| *p > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        wide,
        ["MISSING SCOPES", "REAUTH URL"],
        "only these are -o wide"
    );
    let cells = table["rows"][0]["cells"].as_array().unwrap();
    assert_eq!(cells[0], "acme");
    assert_eq!(cells[1], "facebook-app");
    assert_eq!(cells[2], "Acme Support");
    assert_eq!(cells[3], "False");
    assert_eq!(cells[4], "ScopesMissing");
    assert!(cells[8].as_str().unwrap().contains("pages_manage_posts"));
    assert!(
        cells[9]
            .as_str()
            .unwrap()
            .starts_with("https://sandbox.example/")
    );

    // The short name and category resolve through discovery, as `kubectl get chc` and `kubectl get relink` do.
    let resources = client
        .list_api_group_resources("relink.dev/v1alpha1")
        .await
        .expect("discovery");
    let chc = resources
        .resources
        .iter()
        .find(|r| r.name == "channelconnections")
        .unwrap();
    assert_eq!(chc.short_names.as_deref(), Some(&["chc".to_owned()][..]));
    assert!(
        chc.categories
            .as_ref()
            .unwrap()
            .contains(&"relink".to_owned())
    );
}
