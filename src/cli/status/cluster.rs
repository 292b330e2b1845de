//! What the terminal tools read from and write to the cluster, with the caller's kubeconfig.

use std::path::{Path, PathBuf};

use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use relink::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnection};

/// How many Events the detailed view shows.
const EVENTS_SHOWN: usize = 5;

/// The configuration in `kubeconfig`, or in the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster).
pub(crate) async fn config_for(kubeconfig: Option<&Path>) -> Result<Config, String> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("cannot use kubeconfig {}: {e}", path.display()))
        }
        None => Config::infer().await.map_err(|e| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            if std::env::var_os("KUBECONFIG").is_none() && !home.join(".kube/config").exists() {
                "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)".to_owned()
            } else {
                let e = e.to_string().replace('\n', " ");
                format!("cannot load the kubeconfig (set KUBECONFIG or pass --kubeconfig): {e}")
            }
        }),
    }
}

/// A client for [`config_for`].
pub(crate) async fn client_for(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = config_for(kubeconfig).await?;
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// The connections API of `namespace` (default: the kubeconfig's) and that namespace's name.
pub(super) fn connections_in(
    client: &Client,
    namespace: Option<&str>,
) -> (Api<ChannelConnection>, String) {
    let ns = namespace.unwrap_or(client.default_namespace()).to_owned();
    (Api::namespaced(client.clone(), &ns), ns)
}

/// One connection, or an error naming what was not found.
pub(super) async fn get_connection(
    api: &Api<ChannelConnection>,
    name: &str,
    ns: &str,
) -> Result<ChannelConnection, String> {
    api.get_opt(name)
        .await
        .map_err(api_error)?
        .ok_or_else(|| format!("channelconnection {name} not found in namespace {ns}"))
}

/// Sets the check-request annotation of `ns/name` to `requested` (in nanoseconds) with the
/// caller's credentials; returns the value the operator will echo in
/// `status.lastHandledCheckRequest`. Used by `relink check` and the dashboard's Check now.
pub(crate) async fn request_check(
    api: &Api<ChannelConnection>,
    ns: &str,
    name: &str,
    requested: jiff::Timestamp,
) -> Result<String, String> {
    let value = requested.as_nanosecond().to_string();
    annotate(api, ns, name, CHECK_REQUESTED_ANNOTATION, &value).await?;
    Ok(value)
}

/// Sets annotation `key` of `ns/name` to `value` with the caller's credentials.
pub(super) async fn annotate(
    api: &Api<ChannelConnection>,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("cannot annotate channelconnection {ns}/{name}: {e}"))?;
    Ok(())
}

/// Whether the operator has acted on the check request `value`.
pub(super) fn handled(conn: &ChannelConnection, value: &str) -> bool {
    conn.status
        .as_ref()
        .and_then(|s| s.last_handled_check_request.as_deref())
        == Some(value)
}

/// The last Events about `conn` (oldest first), or why they could not be listed.
pub(crate) async fn events_about(
    client: &Client,
    conn: &ChannelConnection,
) -> Result<Vec<Event>, String> {
    let ns = conn.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let name = conn.name_any();
    let by_name = ListParams::default().fields(&format!("regarding.name={name}"));
    let items = match api.list(&by_name).await {
        Ok(list) => list.items,
        // An API server that does not know the field selector: filter here instead.
        Err(kube::Error::Api(e)) if e.code == 400 => {
            api.list(&ListParams::default())
                .await
                .map_err(|e| format!("cannot list Events in namespace {ns}: {e}"))?
                .items
        }
        Err(e) => return Err(format!("cannot list Events in namespace {ns}: {e}")),
    };
    Ok(select_events(items, conn, EVENTS_SHOWN))
}

/// The `last` newest Events about `conn` (by name and kind, and uid when both carry one),
/// oldest first.
pub(super) fn select_events(
    items: Vec<Event>,
    conn: &ChannelConnection,
    last: usize,
) -> Vec<Event> {
    let name = conn.name_any();
    let uid = conn.uid();
    let mut list: Vec<Event> = items
        .into_iter()
        .filter(|e| {
            let Some(r) = &e.regarding else { return false };
            r.name.as_deref() == Some(name.as_str())
                && r.kind.as_deref() == Some("ChannelConnection")
                && match (&r.uid, &uid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
        .collect();
    list.sort_by_key(event_time);
    let skip = list.len().saturating_sub(last);
    list.split_off(skip)
}

/// When an Event last happened: its series' last time, else its own time.
pub(crate) fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

pub(super) fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            "the ChannelConnection CRD is not installed: run `relink crd | kubectl apply --server-side -f -`".to_owned()
        }
        other => format!("cannot read ChannelConnections: {other}"),
    }
}
