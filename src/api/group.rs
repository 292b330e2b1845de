//! `ChannelGroup`: the set of connections one workload depends on, summarised as green
//! (Healthy), orange (Degraded) or red (Down).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The connections a workload depends on (e.g. the Facebook page, Instagram account and X
/// account a campaign service posts to), and how many must work for it to work.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "relink.dev",
    version = "v1alpha1",
    kind = "ChannelGroup",
    namespaced,
    status = "ChannelGroupStatus",
    shortname = "chg",
    category = "relink",
    derive = "PartialEq",
    doc = "A set of ChannelConnections one workload depends on: Healthy, Degraded or Down at a glance.",
    printcolumn(name = "READY", type_ = "string", json_path = ".status.readySummary"),
    printcolumn(name = "STATUS", type_ = "string", json_path = ".status.health"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChannelGroupSpec {
    /// Members by label: every ChannelConnection in this namespace whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Members by name (in this namespace), in addition to the selector's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<String>,

    /// How many members must be Ready for the group to be Ready. Default: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_ready: Option<i32>,
}

/// A member that is not Ready, and why.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GroupMember {
    /// Name of the ChannelConnection.
    pub name: String,
    /// Its Ready reason (`Revoked`, `ScopesMissing`, ... or `Missing` when a named member does not exist).
    pub reason: String,
}

/// The group's health, recomputed whenever a member's status changes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelGroupStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (at least minReady members ready), `Degraded` (some but not all ready),
    /// `Stalled` (down and a person must act).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Members found.
    #[serde(default)]
    pub total: i32,
    /// Members that are Ready.
    #[serde(default)]
    pub ready: i32,
    /// Members that are not Ready, with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<GroupMember>,
    /// `ready/total`, for `kubectl get chg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_summary: Option<String>,
    /// `Healthy`, `Degraded` or `Down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}
