//! The Helm chart's least-privilege RBAC and its CRDs, checked without Helm: the rules live in
//! plain files under `charts/relink/files/rbac/` (the templates include them as they are), so
//! these tests apply exactly those rules to a real API server and ask it what they allow.
//!
//! No kube-controller-manager runs here: ServiceAccounts get no token and aggregated ClusterRoles
//! are never filled in. Tests therefore impersonate the ServiceAccount and bind the aggregated
//! rules directly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use relink::api::{ChannelConnection, ClusterChannelProvider};
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::support;

const SA: &str = "relink";

fn chart_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/relink")
        .join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The rules list of `charts/relink/files/rbac/<name>.yaml`.
fn rules(name: &str) -> Vec<PolicyRule> {
    let path = chart_path(&format!("files/rbac/{name}.yaml"));
    serde_yaml::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not a list of PolicyRules: {e}", path.display()))
}

/// Every (group, resource, resourceName or "*", verb) a rules list grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for r in rules {
        let names = r.resource_names.clone().unwrap_or_else(|| vec!["*".into()]);
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for n in &names {
                    for v in &r.verbs {
                        out.insert((g.clone(), res.clone(), n.clone(), v.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Parses every non-empty document of a YAML stream.
fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn crd_name(doc: &serde_yaml::Value) -> String {
    doc["metadata"]["name"]
        .as_str()
        .expect("a CRD has metadata.name")
        .to_owned()
}

#[test]
fn chart_crds_match_crds_dir() {
    let source = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/relink.dev.yaml"));
    let expected: BTreeMap<String, serde_yaml::Value> = yaml_docs(&source)
        .into_iter()
        .map(|d| (crd_name(&d), d))
        .collect();

    let dir = chart_path("templates/crds");
    let mut chart = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let text = read(&path);
        assert!(
            text.contains("helm.sh/resource-policy: keep"),
            "{} lacks the keep annotation",
            path.display()
        );
        assert!(
            text.trim_start()
                .starts_with("{{- if .Values.crds.enabled }}"),
            "{} is not behind crds.enabled",
            path.display()
        );
        // What Helm renders with the keep annotation off, minus the template lines.
        let plain: String = text
            .lines()
            .filter(|l| {
                let t = l.trim();
                !(t.starts_with("{{") && t.ends_with("}}")) && t != "helm.sh/resource-policy: keep"
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for mut doc in yaml_docs(&plain) {
            // The keep annotation may have been the only one: `annotations:` is then left empty.
            if let Some(meta) = doc["metadata"].as_mapping_mut() {
                let empty = meta
                    .get("annotations")
                    .is_some_and(|a| a.is_null() || a.as_mapping().is_some_and(|m| m.is_empty()));
                if empty {
                    meta.remove("annotations");
                }
            }
            chart.insert(crd_name(&doc), (path.clone(), doc));
        }
    }

    let fix = "run scripts/chart-crds";
    for (name, want) in &expected {
        let (path, got) = chart
            .get(name)
            .unwrap_or_else(|| panic!("the chart has no template for CRD {name}: {fix}"));
        assert!(
            got == want,
            "{} differs from CRD {name} in crds/relink.dev.yaml: {fix}",
            path.display()
        );
    }
    for (name, (path, _)) in &chart {
        assert!(
            expected.contains_key(name),
            "{} holds CRD {name}, which crds/relink.dev.yaml no longer has: {fix}",
            path.display()
        );
    }
}

/// The namespace-scoped install's two roles grant exactly what the cluster-wide role grants,
/// and every rule file is included by a template.
#[test]
fn namespace_scoped_rules_add_up_to_the_cluster_rules() {
    let cluster = grants(&rules("operator-cluster-rules"));
    let mut split = grants(&rules("operator-scoped-rules"));
    split.extend(grants(&rules("operator-cluster-scoped-rules")));
    assert_eq!(
        split, cluster,
        "operator-scoped-rules.yaml + operator-cluster-scoped-rules.yaml must grant exactly what operator-cluster-rules.yaml grants"
    );

    let templates = ["templates/rbac.yaml", "templates/rbac-aggregate.yaml"]
        .map(|t| read(&chart_path(t)))
        .join("\n");
    for entry in std::fs::read_dir(chart_path("files/rbac")).expect("files/rbac") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            templates.contains(&format!(".Files.Get \"files/rbac/{name}\"")),
            "no template includes files/rbac/{name}"
        );
    }
    let aggregate = read(&chart_path("templates/rbac-aggregate.yaml"));
    for role in ["view", "edit", "admin"] {
        assert!(
            aggregate.contains(&format!(
                "rbac.authorization.k8s.io/aggregate-to-{role}: \"true\""
            )),
            "no ClusterRole is aggregated into {role}"
        );
    }
}

/// Creates ServiceAccount `relink` in `ns` and returns a client acting as it.
async fn service_account(admin: &Client, ns: &str) -> Client {
    let sa = ServiceAccount {
        metadata: meta(SA, Some(ns)),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount");
    let groups = format!("system:serviceaccounts:{ns}");
    support::control_plane().client_as(
        &format!("system:serviceaccount:{ns}:{SA}"),
        &["system:serviceaccounts", &groups],
    )
}

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

fn subject_sa(ns: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "ServiceAccount".into(),
        name: SA.into(),
        namespace: Some(ns.into()),
        api_group: None,
    }]
}

fn subject_user(user: &str) -> Vec<Subject> {
    vec![Subject {
        kind: "User".into(),
        name: user.into(),
        namespace: None,
        api_group: Some("rbac.authorization.k8s.io".into()),
    }]
}

/// A ClusterRole named `name` with `rules`, bound cluster-wide to `subjects`.
async fn cluster_grant(admin: &Client, name: &str, rules: Vec<PolicyRule>, subjects: Vec<Subject>) {
    let role = ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create ClusterRole {name}: {e}"));
    let binding = ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: role_ref("ClusterRole", name),
        subjects: Some(subjects),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("create ClusterRoleBinding {name}: {e}"));
}

/// A Role named `name` with `rules` in `ns`, bound there to `subjects`.
async fn namespace_grant(
    admin: &Client,
    ns: &str,
    name: &str,
    rules: Vec<PolicyRule>,
    subjects: Vec<Subject>,
) {
    let role = Role {
        metadata: meta(name, Some(ns)),
        rules: Some(rules),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap_or_else(|e| panic!("create Role {ns}/{name}: {e}"));
    bind(admin, ns, name, role_ref("Role", name), subjects).await;
}

/// A RoleBinding in `ns` of `role` to `subjects`.
async fn bind(admin: &Client, ns: &str, name: &str, role: RoleRef, subjects: Vec<Subject>) {
    let binding = RoleBinding {
        metadata: meta(name, Some(ns)),
        role_ref: role,
        subjects: Some(subjects),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("create RoleBinding {ns}/{name}: {e}"));
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

/// One access question: `verb` on `group`/`resource`[/`subresource`] in `namespace` ("" = all).
#[derive(Clone, Copy, Debug)]
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
}

const fn access(verb: &'static str, group: &'static str, resource: &'static str) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource: "",
    }
}

const fn status(verb: &'static str, resource: &'static str) -> Access {
    Access {
        verb,
        group: "relink.dev",
        resource,
        subresource: "status",
    }
}

/// Asks the API server (SelfSubjectAccessReview, as `client`) whether `a` is allowed in `ns`.
async fn can(client: &Client, ns: &str, a: Access) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(a.resource.into()),
                subresource: (!a.subresource.is_empty()).then(|| a.subresource.into()),
                namespace: (!ns.is_empty()).then(|| ns.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// Asserts every answer of `cases`. New bindings reach the API server's RBAC cache within
/// moments, so the allowed cases get a few seconds to turn true; the refusals are then final.
async fn assert_access(who: &str, client: &Client, cases: &[(&str, Access, bool)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (ns, a, _) in cases.iter().filter(|(_, _, allowed)| *allowed) {
        while !can(client, ns, *a).await && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut wrong = Vec::new();
    for (ns, a, allowed) in cases {
        if can(client, ns, *a).await != *allowed {
            let verdict = if *allowed { "CANNOT" } else { "CAN" };
            let sub = if a.subresource.is_empty() {
                String::new()
            } else {
                format!("/{}", a.subresource)
            };
            let group = if a.group.is_empty() { "core" } else { a.group };
            let scope = if ns.is_empty() { "all namespaces" } else { ns };
            wrong.push(format!(
                "{verdict} {} {group}/{}{sub} in {scope}",
                a.verb, a.resource
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{who}, against expectations:\n  {}",
        wrong.join("\n  ")
    );
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn token_secret(name: &str) -> Secret {
    Secret {
        metadata: meta(name, None),
        data: Some(BTreeMap::from([(
            "access_token".to_string(),
            ByteString(b"not-a-real-token".to_vec()),
        )])),
        ..Default::default()
    }
}

fn event_about(conn: &ChannelConnection, name: &str) -> Event {
    Event {
        metadata: meta(name, None),
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some("relink.dev/relink".into()),
        reporting_instance: Some("relink-0".into()),
        action: Some("Check".into()),
        reason: Some("Valid".into()),
        type_: Some("Normal".into()),
        note: Some("token is valid".into()),
        regarding: Some(ObjectReference {
            api_version: Some("relink.dev/v1alpha1".into()),
            kind: Some("ChannelConnection".into()),
            name: conn.meta().name.clone(),
            namespace: conn.meta().namespace.clone(),
            uid: conn.meta().uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Cluster-wide install: the operator's ServiceAccount, bound to exactly the chart's rules, does
/// every kind of call the operator makes, and is refused the rest.
#[tokio::test]
async fn operator_rules_grant_only_what_it_needs() {
    if support::skip() {
        return;
    }
    let admin = support::control_plane().client();
    let ns = support::test_namespace(&admin, "rbac-op").await;
    let other = support::test_namespace(&admin, "rbac-other").await;
    let sa = service_account(&admin, &ns).await;
    cluster_grant(
        &admin,
        &format!("relink-{ns}"),
        rules("operator-cluster-rules"),
        subject_sa(&ns),
    )
    .await;
    // `ns` doubles as the operator's namespace.
    namespace_grant(
        &admin,
        &ns,
        "relink-operator",
        rules("operator-namespace-rules"),
        subject_sa(&ns),
    )
    .await;

    let (core, relink, events, leases) = ("", "relink.dev", "events.k8s.io", "coordination.k8s.io");
    let (n, o) = (ns.as_str(), other.as_str());
    let cases = [
        // What it needs, in any watched namespace.
        (o, access("list", relink, "channelconnections"), true),
        ("", access("watch", relink, "channelconnections"), true),
        ("", access("list", relink, "channelproviders"), true),
        ("", access("watch", relink, "clusterchannelproviders"), true),
        ("", access("watch", relink, "channelgroups"), true),
        (o, status("patch", "channelconnections"), true),
        (o, status("patch", "channelproviders"), true),
        ("", status("patch", "clusterchannelproviders"), true),
        (o, status("patch", "channelgroups"), true),
        ("", access("list", core, "secrets"), true),
        ("", access("watch", core, "secrets"), true),
        (o, access("get", core, "secrets"), true),
        (o, access("patch", core, "secrets"), true),
        (o, access("create", core, "secrets"), true),
        (o, access("patch", relink, "channelconnections"), true),
        (o, access("create", events, "events"), true),
        (o, access("patch", events, "events"), true),
        // In its own namespace only.
        (n, access("get", leases, "leases"), true),
        (n, access("create", leases, "leases"), true),
        (n, access("patch", leases, "leases"), true),
        (n, access("create", core, "secrets"), true),
        (o, access("patch", leases, "leases"), false),
        (o, access("create", leases, "leases"), false),
        // What it must never do.
        (n, access("delete", core, "secrets"), false),
        (o, access("delete", core, "secrets"), false),
        ("", access("deletecollection", core, "secrets"), false),
        (o, access("delete", relink, "channelconnections"), false),
        (o, access("update", relink, "channelconnections"), false),
        (o, access("create", relink, "channelconnections"), false),
        (o, access("delete", relink, "channelproviders"), false),
        (n, access("create", core, "pods"), false),
        (n, access("get", core, "configmaps"), false),
        ("", access("list", core, "configmaps"), false),
        (n, access("delete", leases, "leases"), false),
        (n, access("update", leases, "leases"), false),
        (o, access("create", core, "events"), false),
        (
            "",
            access("list", "apiextensions.k8s.io", "customresourcedefinitions"),
            false,
        ),
        (
            "",
            access("create", "rbac.authorization.k8s.io", "clusterroles"),
            false,
        ),
    ];
    assert_access("the operator's ServiceAccount", &sa, &cases).await;

    // And the real calls, as the operator makes them. The admin declares a connection and its
    // token Secret in a namespace the operator serves.
    let conns_admin: Api<ChannelConnection> = Api::namespaced(admin.clone(), &other);
    let conn = conns_admin
        .create(
            &PostParams::default(),
            &ChannelConnection::new(
                "acme",
                TestConnection::default()
                    .provider("fb")
                    .secret("acme-token")
                    .account("123")
                    .spec(),
            ),
        )
        .await
        .expect("admin creates a connection");
    Api::<Secret>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &token_secret("acme-token"))
        .await
        .expect("admin creates the token Secret");

    let conns: Api<ChannelConnection> = Api::namespaced(sa.clone(), &other);
    assert_eq!(
        conns
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    Api::<ClusterChannelProvider>::all(sa.clone())
        .list(&ListParams::default())
        .await
        .expect("list ClusterChannelProviders");
    let patch = json!({
        "apiVersion": "relink.dev/v1alpha1",
        "kind": "ChannelConnection",
        "status": {"observedGeneration": conn.meta().generation},
    });
    conns
        .patch_status("acme", &PatchParams::apply("relink"), &Patch::Apply(&patch))
        .await
        .expect("write status with server-side apply");

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &other);
    let listed = Api::<Secret>::all(sa.clone())
        .list_metadata(&ListParams::default())
        .await
        .expect("metadata-only list of every Secret");
    assert!(
        listed
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("acme-token"))
    );
    secrets
        .get("acme-token")
        .await
        .expect("get the token Secret");
    let refreshed = json!({"data": {"access_token": "cmVmcmVzaGVk"}});
    secrets
        .patch(
            "acme-token",
            &PatchParams::default(),
            &Patch::Merge(&refreshed),
        )
        .await
        .expect("write a refreshed token into the Secret");

    let event = Api::<Event>::namespaced(sa.clone(), &other)
        .create(&PostParams::default(), &event_about(&conn, "acme.check"))
        .await
        .expect("create an events.k8s.io Event");
    Api::<Event>::namespaced(sa.clone(), &other)
        .patch(
            event.meta().name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"note": "token is still valid"})),
        )
        .await
        .expect("patch the Event");

    let leases: Api<Lease> = Api::namespaced(sa.clone(), &ns);
    let lease = Lease {
        metadata: meta("relink", None),
        spec: Some(LeaseSpec {
            holder_identity: Some("relink-0".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the Lease");
    leases.get("relink").await.expect("get the Lease");
    let renew = json!({"spec": {"renewTime": MicroTime(jiff::Timestamp::now())}});
    leases
        .patch("relink", &PatchParams::default(), &Patch::Strategic(&renew))
        .await
        .expect("renew (patch) the Lease");

    let own: Api<Secret> = Api::namespaced(sa.clone(), &ns);
    own.create(&PostParams::default(), &token_secret("relink-state-key"))
        .await
        .expect("create the state-key Secret");
    own.get("relink-state-key")
        .await
        .expect("read the state-key Secret back");

    let dp = DeleteParams::default();
    assert_forbidden(
        "delete a token Secret",
        secrets.delete("acme-token", &dp).await,
    );
    assert_forbidden(
        "delete a ChannelConnection",
        conns.delete("acme", &dp).await,
    );
    assert_forbidden(
        "create a Lease outside its namespace",
        Api::<Lease>::namespaced(sa.clone(), o)
            .create(&PostParams::default(), &lease)
            .await,
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "escape"},
        "spec": {"containers": [{"name": "sh", "image": "busybox"}]},
    }))
    .expect("pod");
    assert_forbidden(
        "create a Pod",
        Api::<Pod>::namespaced(sa.clone(), &ns)
            .create(&PostParams::default(), &pod)
            .await,
    );
    assert_forbidden(
        "read ConfigMaps",
        Api::<ConfigMap>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await,
    );
    Api::<Secret>::namespaced(admin.clone(), &other)
        .get("acme-token")
        .await
        .expect("the token Secret is still there");
}

/// Namespace-scoped install: the operator serves its namespace and cannot see into any other.
#[tokio::test]
async fn namespace_scoped_operator_cannot_touch_other_namespaces() {
    if support::skip() {
        return;
    }
    let admin = support::control_plane().client();
    let ns = support::test_namespace(&admin, "rbac-scoped").await;
    let other = support::test_namespace(&admin, "rbac-elsewhere").await;
    let sa = service_account(&admin, &ns).await;
    namespace_grant(
        &admin,
        &ns,
        "relink",
        rules("operator-scoped-rules"),
        subject_sa(&ns),
    )
    .await;
    namespace_grant(
        &admin,
        &ns,
        "relink-operator",
        rules("operator-namespace-rules"),
        subject_sa(&ns),
    )
    .await;
    cluster_grant(
        &admin,
        &format!("relink-cluster-scoped-{ns}"),
        rules("operator-cluster-scoped-rules"),
        subject_sa(&ns),
    )
    .await;

    let (core, relink) = ("", "relink.dev");
    let (n, o) = (ns.as_str(), other.as_str());
    let cases = [
        (n, access("watch", relink, "channelconnections"), true),
        (n, status("patch", "channelconnections"), true),
        (n, access("list", core, "secrets"), true),
        (n, access("patch", core, "secrets"), true),
        (n, access("create", "events.k8s.io", "events"), true),
        ("", access("watch", relink, "clusterchannelproviders"), true),
        ("", status("patch", "clusterchannelproviders"), true),
        ("", access("list", relink, "channelconnections"), false),
        ("", access("list", core, "secrets"), false),
        (o, access("list", relink, "channelconnections"), false),
        (o, access("get", core, "secrets"), false),
        (o, access("list", core, "secrets"), false),
        (o, access("patch", core, "secrets"), false),
        (o, status("patch", "channelconnections"), false),
        (o, access("create", "events.k8s.io", "events"), false),
    ];
    assert_access("a namespace-scoped operator", &sa, &cases).await;

    Api::<Secret>::namespaced(admin.clone(), &other)
        .create(&PostParams::default(), &token_secret("someone-elses-token"))
        .await
        .expect("admin creates a Secret elsewhere");
    assert_forbidden(
        "read a Secret in a namespace it does not serve",
        Api::<Secret>::namespaced(sa.clone(), &other)
            .get("someone-elses-token")
            .await,
    );
    Api::<ChannelConnection>::namespaced(sa.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list connections in its namespace");
}

/// The aggregated roles: whoever holds `view` in a namespace reads its connections; `edit`
/// declares them; neither writes status or reads Secrets through relink's rules.
#[tokio::test]
async fn aggregated_roles_let_viewers_read_and_editors_declare_connections() {
    if support::skip() {
        return;
    }
    let admin = support::control_plane().client();
    let ns = support::test_namespace(&admin, "rbac-agg").await;
    let (view, edit) = (format!("relink-view-{ns}"), format!("relink-edit-{ns}"));
    for (name, file) in [
        (&view, "aggregate-view-rules"),
        (&edit, "aggregate-edit-rules"),
    ] {
        let role = ClusterRole {
            metadata: meta(name, None),
            rules: Some(rules(file)),
            ..Default::default()
        };
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap_or_else(|e| panic!("create ClusterRole {name}: {e}"));
    }
    // What the aggregation controller would do: `edit` holds the view rules too.
    let (viewer, editor) = (format!("viewer@{ns}"), format!("editor@{ns}"));
    bind(
        &admin,
        &ns,
        "viewer",
        role_ref("ClusterRole", &view),
        subject_user(&viewer),
    )
    .await;
    bind(
        &admin,
        &ns,
        "editor-view",
        role_ref("ClusterRole", &view),
        subject_user(&editor),
    )
    .await;
    bind(
        &admin,
        &ns,
        "editor-edit",
        role_ref("ClusterRole", &edit),
        subject_user(&editor),
    )
    .await;

    let cp = support::control_plane();
    let as_viewer = cp.client_as(&viewer, &["system:authenticated"]);
    let as_editor = cp.client_as(&editor, &["system:authenticated"]);
    let relink = "relink.dev";
    let n = ns.as_str();
    assert_access(
        "a viewer",
        &as_viewer,
        &[
            (n, access("get", relink, "channelconnections"), true),
            (n, access("list", relink, "channelconnections"), true),
            (n, access("watch", relink, "channelgroups"), true),
            (n, access("list", relink, "channelproviders"), true),
            (n, access("update", relink, "channelconnections"), false),
            (n, access("patch", relink, "channelconnections"), false),
            (n, access("delete", relink, "channelconnections"), false),
            (n, access("get", "", "secrets"), false),
            ("", access("list", relink, "channelconnections"), false),
        ],
    )
    .await;
    assert_access(
        "an editor",
        &as_editor,
        &[
            (n, access("get", relink, "channelconnections"), true),
            (n, access("create", relink, "channelconnections"), true),
            (n, access("update", relink, "channelconnections"), true),
            (n, access("delete", relink, "channelconnections"), true),
            (n, access("create", relink, "channelproviders"), true),
            (n, access("create", relink, "channelgroups"), true),
            (n, status("patch", "channelconnections"), false),
            (n, status("update", "channelconnections"), false),
            (n, access("get", "", "secrets"), false),
        ],
    )
    .await;

    // Real calls: the viewer reads a connection and cannot change it.
    Api::<ChannelConnection>::namespaced(as_editor.clone(), n)
        .create(
            &PostParams::default(),
            &ChannelConnection::new(
                "shared",
                TestConnection::default()
                    .provider("fb")
                    .secret("shared-token")
                    .account("1")
                    .spec(),
            ),
        )
        .await
        .expect("an editor declares a connection");
    let as_viewer_api: Api<ChannelConnection> = Api::namespaced(as_viewer, n);
    as_viewer_api
        .get("shared")
        .await
        .expect("a viewer reads the connection");
    let suspend = json!({"spec": {"suspend": true}});
    assert_forbidden(
        "a viewer suspends a connection",
        as_viewer_api
            .patch("shared", &PatchParams::default(), &Patch::Merge(&suspend))
            .await,
    );
}
