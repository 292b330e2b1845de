//! The manifests in `examples/`, as a platform engineer would apply them.
//!
//! - Every document of every file is accepted by the API server (server-side apply, dry run, in a
//!   test namespace; cluster-scoped objects renamed): schema-valid, no field the schema does not
//!   declare, and every value kept as written (nothing pruned or rewritten). Secrets hold
//!   placeholders only, and each file declares what its connections and providers refer to.
//! - The `sandbox/` set, with its URLs pointed at an in-process sandbox, its namespace at the
//!   test's and a token issued through the sandbox's `/sandbox/tokens` (as the README's `curl`
//!   does) in its Secret, turns Ready with the operator. After a revocation at the sandbox and a
//!   check request, the connection reads as Failed for kstatus and Degraded for the Argo CD
//!   health script (`docs/argocd/channelconnection.lua`, run with Lua 5.1), and Current /
//!   Healthy before; the group follows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, Scope};
use relink::api::{ChannelConnection, ChannelGroup};
use relink::sandbox::IssuedTokens;
use serde_json::{Value as Json, json};

use crate::fixtures::{Scenario, browser};
use crate::support;

/// Where the sandbox set expects `relink sandbox --listen 127.0.0.1:8090`.
const SANDBOX_URL: &str = "http://127.0.0.1:8090";
const SANDBOX_NAMESPACE: &str = "relink-sandbox";
/// The sandbox's built-in client secret: the one non-placeholder value a Secret may hold.
const SANDBOX_CLIENT_SECRET: &str = "sandbox-secret";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every `*.yaml` / `*.yml` under `dir`, recursively, sorted (the order `kubectl apply -f` uses
/// within a folder).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The documents of a YAML text, as JSON, without empty ones.
fn documents(text: &str, what: &str) -> Vec<Json> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"));
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value)
            .unwrap_or_else(|e| panic!("{what}: a document is not plain JSON data: {e}"));
        docs.push(json);
    }
    docs
}

fn str_at<'a>(v: &'a Json, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Json::as_str).unwrap_or("")
}

/// `apiVersion` and `kind` of a document as a GVK.
fn gvk_of(doc: &Json) -> GroupVersionKind {
    let api_version = str_at(doc, "/apiVersion");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, str_at(doc, "/kind"))
}

/// The API resource of a document's kind, and whether it is namespaced, as the server says.
async fn resolve(client: &kube::Client, doc: &Json) -> Result<(ApiResource, Scope), String> {
    let gvk = gvk_of(doc);
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("the API server does not serve {gvk:?}: {e}"))?;
    Ok((ar, caps.scope))
}

/// Server-side applies `doc` (field manager `e2e`), for real or as a dry run; returns what the
/// server answered (the object as it would be stored).
async fn apply(
    client: &kube::Client,
    ar: &ApiResource,
    scope: &Scope,
    doc: &Json,
    dry_run: bool,
) -> Result<Json, String> {
    let name = str_at(doc, "/metadata/name");
    let api: Api<DynamicObject> = match scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), str_at(doc, "/metadata/namespace"), ar)
        }
        Scope::Cluster => Api::all_with(client.clone(), ar),
    };
    let mut pp = PatchParams::apply("e2e").force();
    if dry_run {
        pp = pp.dry_run();
    }
    let obj = api
        .patch(name, &pp, &Patch::Apply(doc))
        .await
        .map_err(|e| e.to_string())?;
    serde_json::to_value(obj).map_err(|e| e.to_string())
}

/// The first path of `sent` that `got` lacks or holds with another value (objects are compared
/// key by key, so fields the server adds, such as defaults, are fine).
fn dropped(sent: &Json, got: &Json, path: &str) -> Option<String> {
    match (sent, got) {
        (Json::Object(s), Json::Object(g)) => s.iter().find_map(|(k, v)| match g.get(k) {
            Some(gv) => dropped(v, gv, &format!("{path}.{k}")),
            None if v.is_null() => None,
            None => Some(format!("{path}.{k}")),
        }),
        (Json::Array(s), Json::Array(g)) if s.len() == g.len() => s
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (sv, gv))| dropped(sv, gv, &format!("{path}[{i}]"))),
        _ if sent == got => None,
        _ => Some(path.to_owned()),
    }
}

/// A Secret in `examples/` holds nothing real: every value is a `<...>` placeholder (or the
/// sandbox's well-known client secret), in `stringData`, never base64 `data`. Placeholders hold a
/// space, so relink reads them as absent (`SecretKeyMissing`, "client secret not found") and never
/// sends one to a provider.
fn assert_placeholder_secret(file: &str, doc: &Json) {
    let name = str_at(doc, "/metadata/name");
    assert!(
        doc.get("data").is_none(),
        "{file}: Secret {name} has `data`; use `stringData` with placeholders"
    );
    let values = doc
        .get("stringData")
        .and_then(Json::as_object)
        .unwrap_or_else(|| panic!("{file}: Secret {name} has no stringData template"));
    for (key, value) in values {
        let v = value.as_str().unwrap_or("");
        let placeholder = v.starts_with('<') && v.ends_with('>') && v.contains(' ');
        assert!(
            placeholder || (file.contains("sandbox") && v == SANDBOX_CLIENT_SECRET),
            "{file}: Secret {name} key {key} is not a <placeholder>"
        );
    }
}

/// What a set of documents refers to that it does not declare: a connection's provider and token
/// Secret, a provider's client secret.
fn missing_references(docs: &[Json]) -> Vec<String> {
    let declared: BTreeSet<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                str_at(d, "/kind").to_owned(),
                str_at(d, "/metadata/name").to_owned(),
            )
        })
        .collect();
    let mut wanted = Vec::new();
    for d in docs {
        match str_at(d, "/kind") {
            "ChannelConnection" => {
                let kind = match str_at(d, "/spec/providerRef/kind") {
                    "" => "ChannelProvider",
                    k => k,
                };
                wanted.push((kind, str_at(d, "/spec/providerRef/name")));
                wanted.push(("Secret", str_at(d, "/spec/secretRef/name")));
            }
            "ChannelProvider" | "ClusterChannelProvider" => {
                if let Some(name) = d
                    .pointer("/spec/clientSecretRef/name")
                    .and_then(Json::as_str)
                {
                    wanted.push(("Secret", name));
                }
            }
            _ => {}
        }
    }
    wanted
        .into_iter()
        .filter(|(k, n)| !declared.contains(&(k.to_string(), n.to_string())))
        .map(|(k, n)| format!("{k}/{n}"))
        .collect()
}

#[tokio::test]
async fn every_example_is_accepted_by_the_api() {
    if support::skip() {
        return;
    }
    let client = support::control_plane().client();
    let ns = support::test_namespace(&client, "examples").await;
    let suffix = ns
        .rsplit('-')
        .next()
        .expect("namespace has a suffix")
        .to_owned();

    let dir = examples_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("examples/README.md");
    let files = yaml_files(&dir);
    for wanted in [
        "facebook-page.yaml",
        "instagram-business.yaml",
        "gmail-mailbox.yaml",
        "outlook-mailbox.yaml",
        "slack-workspace.yaml",
        "campaign-group.yaml",
    ] {
        assert!(dir.join(wanted).is_file(), "examples/{wanted} exists");
    }
    let sandbox_files = yaml_files(&dir.join("sandbox"));
    assert!(!sandbox_files.is_empty(), "examples/sandbox/ has manifests");

    // Each top-level file stands alone; the sandbox folder is one set.
    let mut units: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    let mut kinds = BTreeSet::new();
    let mut provider_types = BTreeSet::new();
    let mut applied = 0;
    for file in &files {
        let rel = relative(file);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        let docs = documents(&text, &rel);
        assert!(!docs.is_empty(), "{rel} has no document");
        let in_sandbox = file.parent() == Some(dir.join("sandbox").as_path());
        let unit = if in_sandbox {
            "examples/sandbox/".to_owned()
        } else {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                readme.contains(&format!("({name})")),
                "examples/README.md links {name}"
            );
            rel.clone()
        };
        for doc in docs {
            let kind = str_at(&doc, "/kind").to_owned();
            let name = str_at(&doc, "/metadata/name").to_owned();
            assert!(!name.is_empty(), "{rel}: a {kind} without a name");
            kinds.insert(kind.clone());
            if kind.ends_with("ChannelProvider") {
                provider_types.insert(str_at(&doc, "/spec/type").to_owned());
            }
            if kind == "Secret" {
                assert_placeholder_secret(&rel, &doc);
            }
            units.entry(unit.clone()).or_default().push(doc.clone());

            let (ar, scope) = resolve(&client, &doc)
                .await
                .unwrap_or_else(|e| panic!("{rel}: {kind}/{name}: {e}"));
            let mut doc = doc;
            let meta = doc["metadata"].as_object_mut().expect("metadata");
            match scope {
                Scope::Namespaced => {
                    meta.insert("namespace".into(), json!(ns));
                }
                Scope::Cluster => {
                    meta.insert("name".into(), json!(format!("{name}-{suffix}")));
                }
            }
            let got = apply(&client, &ar, &scope, &doc, true)
                .await
                .unwrap_or_else(|e| panic!("{rel}: the API server refused {kind}/{name}: {e}"));
            let mut sent = doc.clone();
            // Write-only: the server turns it into `data`.
            let string_data = sent
                .as_object_mut()
                .and_then(|o| o.remove("stringData"))
                .unwrap_or(Json::Null);
            if let Some(path) = dropped(&sent, &got, "") {
                panic!("{rel}: {kind}/{name}: the API server did not keep `{path}` as written");
            }
            if let Some(keys) = string_data.as_object() {
                for key in keys.keys() {
                    assert!(
                        got.pointer(&format!("/data/{key}")).is_some(),
                        "{rel}: Secret {name} key {key} stored"
                    );
                }
            }
            applied += 1;
        }
    }
    assert!(
        readme.contains("(sandbox/)"),
        "examples/README.md links sandbox/"
    );

    for (unit, docs) in &units {
        let missing = missing_references(docs);
        assert!(
            missing.is_empty(),
            "{unit} refers to objects it does not declare: {missing:?}"
        );
    }
    for kind in [
        "Namespace",
        "Secret",
        "ChannelConnection",
        "ChannelProvider",
        "ClusterChannelProvider",
        "ChannelGroup",
    ] {
        assert!(kinds.contains(kind), "the examples show a {kind}");
    }
    for t in ["facebook", "google", "microsoft", "slack", "oauth2"] {
        assert!(
            provider_types.contains(t),
            "the examples show a provider of type {t}"
        );
    }
    eprintln!(
        "[e2e] {applied} documents of {} files accepted",
        files.len()
    );
}

/// The live object as the API serves it (what Argo CD and kstatus read).
async fn live<K>(client: &kube::Client, ns: &str, name: &str) -> Json
where
    K: kube::Resource<DynamicType = ()>,
{
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {} {ns}/{name}: {e}", ar.kind));
    serde_json::to_value(obj).expect("object as JSON")
}

fn condition<'a>(obj: &'a Json, type_: &str) -> Option<&'a Json> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(obj: &Json, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == status)
}

/// kstatus's verdict for an object with standard conditions (sigs.k8s.io/cli-utils,
/// `pkg/kstatus/status`, generic rules): a spec not yet observed or `Reconciling=True` is
/// InProgress, `Stalled=True` is Failed, anything else is Current.
fn kstatus(obj: &Json) -> &'static str {
    let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
    let observed = obj
        .pointer("/status/observedGeneration")
        .and_then(Json::as_i64);
    if let (Some(g), Some(o)) = (generation, observed)
        && g != o
    {
        return "InProgress";
    }
    if condition_is(obj, "Reconciling", "True") {
        return "InProgress";
    }
    if condition_is(obj, "Stalled", "True") {
        return "Failed";
    }
    "Current"
}

/// kstatus facts that hold in every settled state: the status describes the current spec, on
/// the top level and on every condition.
fn assert_observed_current_spec(obj: &Json, what: &str) {
    let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
    assert!(generation.is_some(), "{what}: metadata.generation is set");
    assert_eq!(
        obj.pointer("/status/observedGeneration")
            .and_then(Json::as_i64),
        generation,
        "{what}: status.observedGeneration equals metadata.generation"
    );
    for c in obj
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        assert_eq!(
            c["observedGeneration"].as_i64(),
            generation,
            "{what}: condition {} observedGeneration",
            c["type"]
        );
    }
}

#[tokio::test]
async fn sandbox_examples_work_with_the_operator() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("examples-sbx").start().await;
    let (client, ns) = (sc.client.clone(), sc.ns.clone());
    let base = sc.sandbox.base_url();

    // The README's `curl -XPOST localhost:8090/sandbox/tokens`.
    let issued: IssuedTokens = browser()
        .post(format!("{base}/sandbox/tokens"))
        .json(&json!({"account_id": "page-1", "account_name": "Demo Page", "scopes": ["read"]}))
        .send()
        .await
        .expect("the sandbox issues a token")
        .json()
        .await
        .expect("IssuedTokens JSON");
    sc.tokens.push(issued.access_token.clone());
    sc.tokens.extend(issued.refresh_token.clone());

    let mut connections = Vec::new();
    let mut groups = Vec::new();
    let mut token_written = false;
    for file in yaml_files(&examples_dir().join("sandbox")) {
        let rel = relative(&file);
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        let text = text.replace(SANDBOX_URL, &base);
        for mut doc in documents(&text, &rel) {
            let kind = str_at(&doc, "/kind").to_owned();
            let name = str_at(&doc, "/metadata/name").to_owned();
            if kind == "Namespace" {
                assert_eq!(name, SANDBOX_NAMESPACE, "{rel}: the set's namespace");
                continue; // the test's namespace stands in for it
            }
            assert_eq!(
                str_at(&doc, "/metadata/namespace"),
                SANDBOX_NAMESPACE,
                "{rel}: {kind}/{name} lives in the set's namespace"
            );
            doc["metadata"]["namespace"] = json!(ns);
            match kind.as_str() {
                "Secret" => {
                    if let Some(v) = doc.pointer_mut("/stringData/access_token")
                        && v.as_str().is_some_and(|s| s.starts_with('<'))
                    {
                        *v = json!(issued.access_token);
                        token_written = true;
                    }
                }
                "ChannelConnection" => connections.push(name.clone()),
                "ChannelGroup" => groups.push(name.clone()),
                _ => {}
            }
            let (ar, scope) = resolve(&client, &doc)
                .await
                .unwrap_or_else(|e| panic!("{rel}: {kind}/{name}: {e}"));
            assert!(
                matches!(scope, Scope::Namespaced),
                "{rel}: {kind} is namespaced"
            );
            apply(&client, &ar, &scope, &doc, false)
                .await
                .unwrap_or_else(|e| panic!("{rel}: apply {kind}/{name}: {e}"));
        }
    }
    assert!(token_written, "a token Secret template with access_token");
    assert_eq!(connections.len(), 1, "the set has one connection");
    assert_eq!(groups.len(), 1, "the set has one group");
    let (conn, group) = (connections[0].as_str(), groups[0].as_str());

    // Valid: Ready, kstatus Current, Argo CD Healthy.
    sc.wait_ready_reason(conn, "Valid").await;
    let obj = live::<ChannelConnection>(&client, &ns, conn).await;
    assert!(condition_is(&obj, "Ready", "True"), "Ready=True");
    assert!(!condition_is(&obj, "Stalled", "True"), "not Stalled");
    assert!(
        !condition_is(&obj, "Reconciling", "True"),
        "not Reconciling"
    );
    assert_eq!(str_at(&obj, "/status/account/id"), "page-1");
    assert_observed_current_spec(&obj, "valid connection");
    assert_eq!(kstatus(&obj), "Current", "kstatus of the valid connection");
    let (status, message) = crate::chart::argo_health("channelconnection", &obj);
    assert_eq!(
        status, "Healthy",
        "Argo CD health of the valid connection: {message}"
    );

    let groups_api: Api<ChannelGroup> = Api::namespaced(client.clone(), &ns);
    let groups_api = &groups_api;
    support::eventually("the group Ready", Duration::from_secs(30), || async move {
        let g = serde_json::to_value(groups_api.get(group).await.ok()?).ok()?;
        condition_is(&g, "Ready", "True").then_some(())
    })
    .await;
    let g = live::<ChannelGroup>(&client, &ns, group).await;
    assert_eq!(g.pointer("/status/ready"), Some(&json!(1)), "1/1 ready");
    assert_eq!(kstatus(&g), "Current", "kstatus of the healthy group");
    let (status, message) = crate::chart::argo_health("channelgroup", &g);
    assert_eq!(status, "Healthy", "Argo CD health of the group: {message}");

    // Revoked behind relink's back (the README's `curl -XPOST localhost:8090/sandbox/revoke`),
    // then a check on request.
    let revoked = browser()
        .post(format!("{base}/sandbox/revoke"))
        .json(&json!({"access_token": issued.access_token}))
        .send()
        .await
        .expect("the sandbox revokes");
    assert_eq!(revoked.status().as_u16(), 204, "the sandbox knew the token");
    let asked = sc.request_check(conn).await;
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), &ns);
    let (api, asked) = (&api, asked.as_str());
    support::eventually(
        "the check request handled with a Revoked, Stalled verdict",
        Duration::from_secs(30),
        || async move {
            let s = api.get(conn).await.ok()?.status?;
            let obj = json!({"status": s});
            (s.last_handled_check_request.as_deref() == Some(asked)
                && condition(&obj, "Ready").is_some_and(|c| c["reason"] == "Revoked")
                && condition_is(&obj, "Stalled", "True"))
            .then_some(())
        },
    )
    .await;
    let obj = live::<ChannelConnection>(&client, &ns, conn).await;
    assert!(condition_is(&obj, "Ready", "False"), "Ready=False");
    assert!(condition_is(&obj, "Stalled", "True"), "Stalled=True");
    assert!(
        !condition_is(&obj, "Reconciling", "True"),
        "not Reconciling"
    );
    assert_observed_current_spec(&obj, "revoked connection");
    assert_eq!(kstatus(&obj), "Failed", "kstatus of the revoked connection");
    let reauth = str_at(&obj, "/status/reauthUrl");
    assert!(
        reauth.starts_with(&format!("{base}/oauth/authorize?")),
        "a re-login link at the sandbox: {reauth}"
    );
    let (status, message) = crate::chart::argo_health("channelconnection", &obj);
    assert_eq!(
        status, "Degraded",
        "Argo CD health of the revoked connection: {message}"
    );
    assert!(
        message.starts_with("Revoked") && message.contains(reauth),
        "the Argo CD message names the reason and the link: {message}"
    );

    support::eventually(
        "the group Down (Stalled)",
        Duration::from_secs(30),
        || async move {
            let g = serde_json::to_value(groups_api.get(group).await.ok()?).ok()?;
            condition_is(&g, "Stalled", "True").then_some(())
        },
    )
    .await;
    let g = live::<ChannelGroup>(&client, &ns, group).await;
    assert!(condition_is(&g, "Ready", "False"), "the group is not Ready");
    assert_eq!(kstatus(&g), "Failed", "kstatus of the down group");
    let (status, message) = crate::chart::argo_health("channelgroup", &g);
    assert_eq!(
        status, "Degraded",
        "Argo CD health of the down group: {message}"
    );

    sc.assert_no_token_leaked().await;
}
