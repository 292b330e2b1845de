//! Connection groups: green, orange, red for everything a workload depends on.

use std::time::Duration;

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use relink::api::{ChannelGroup, ChannelGroupSpec, ChannelGroupStatus};
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

fn group(name: &str, min_ready: Option<i32>) -> ChannelGroup {
    let spec: ChannelGroupSpec = serde_json::from_value(json!({
        "selector": {"matchLabels": {"app": "campaign"}},
        "minReady": min_ready,
    }))
    .unwrap();
    ChannelGroup::new(name, spec)
}

async fn wait_group(sc: &Scenario, name: &str, health: &str, summary: &str) -> ChannelGroupStatus {
    let api: Api<ChannelGroup> = Api::namespaced(sc.client.clone(), &sc.ns);
    support::eventually(
        &format!("group {name} {summary} {health}"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let s = api.get(name).await.ok()?.status?;
                (s.health.as_deref() == Some(health) && s.ready_summary.as_deref() == Some(summary))
                    .then_some(s)
            }
        },
    )
    .await
}

fn cond(s: &ChannelGroupStatus, t: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_turns_orange_then_red_and_follows_its_members() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("groups").start().await;
    sc.provider("app", Validation::Introspection).await;
    let mut tokens = Vec::new();
    for (i, name) in ["facebook-page", "instagram", "x-account"]
        .iter()
        .enumerate()
    {
        let t = sc.issue(&format!("acct-{i}"), &["read"]);
        sc.secret(
            &format!("{name}-token"),
            &[("access_token", &t.access_token)],
        )
        .await;
        sc.apply_connection(
            name,
            TestConnection::default()
                .secret(&format!("{name}-token"))
                .account(&format!("acct-{i}"))
                .requires(&["read"]),
        )
        .await;
        let patch = json!({"metadata": {"labels": {"app": "campaign"}}});
        sc.connections()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        sc.wait_ready_reason(name, "Valid").await;
        tokens.push(t.access_token);
    }
    let groups: Api<ChannelGroup> = Api::namespaced(sc.client.clone(), &sc.ns);
    let calls_before = sc.sandbox.calls().len();
    groups
        .create(&PostParams::default(), &group("campaign", None))
        .await
        .unwrap();
    groups
        .create(&PostParams::default(), &group("campaign-min2", Some(2)))
        .await
        .unwrap();
    let s = wait_group(&sc, "campaign", "Healthy", "3/3").await;
    assert_eq!(cond(&s, "Ready"), "True");

    // The table users see.
    let table = support::table(
        &sc.client,
        &format!(
            "/apis/relink.dev/v1alpha1/namespaces/{}/channelgroups",
            sc.ns
        ),
    )
    .await;
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Name", "READY", "STATUS", "AGE"]);

    // One member revoked: orange, and notReady names it.
    sc.sandbox.revoke(&tokens[1]);
    sc.request_check("instagram").await;
    let s = wait_group(&sc, "campaign", "Degraded", "2/3").await;
    assert_eq!(cond(&s, "Ready"), "False");
    assert_eq!(cond(&s, "Degraded"), "True");
    assert_eq!(cond(&s, "Stalled"), "False");
    assert_eq!(s.not_ready.len(), 1);
    assert_eq!(
        (s.not_ready[0].name.as_str(), s.not_ready[0].reason.as_str()),
        ("instagram", "Revoked")
    );
    let s = wait_group(&sc, "campaign-min2", "Degraded", "2/3").await;
    assert_eq!(cond(&s, "Ready"), "True", "minReady 2 is still met");
    let table = support::table(
        &sc.client,
        &format!(
            "/apis/relink.dev/v1alpha1/namespaces/{}/channelgroups",
            sc.ns
        ),
    )
    .await;
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "campaign")
        .unwrap();
    assert_eq!(
        (row["cells"][1].as_str(), row["cells"][2].as_str()),
        (Some("2/3"), Some("Degraded"))
    );

    // All revoked: red and Stalled.
    for (t, name) in [(&tokens[0], "facebook-page"), (&tokens[2], "x-account")] {
        sc.sandbox.revoke(t);
        sc.request_check(name).await;
    }
    let s = wait_group(&sc, "campaign", "Down", "0/3").await;
    assert_eq!(cond(&s, "Stalled"), "True");
    wait_group(&sc, "campaign-min2", "Down", "0/3").await;

    // Relabelled and deleted members: the counts follow.
    let patch = json!({"metadata": {"labels": {"app": "other"}}});
    sc.connections()
        .patch("x-account", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_group(&sc, "campaign", "Down", "0/2").await;
    sc.connections()
        .delete("facebook-page", &DeleteParams::default())
        .await
        .unwrap();
    wait_group(&sc, "campaign", "Down", "0/1").await;

    // Groups never call the provider: every call came from a connection check.
    let requested_checks = 3;
    assert_eq!(
        sc.sandbox.calls().len(),
        calls_before + requested_checks,
        "one call per requested check, none from groups"
    );
    sc.wait_event("campaign", "Warning", "Degraded").await;
    sc.assert_no_token_leaked().await;
}
