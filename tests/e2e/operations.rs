//! Running it in production: metrics, probes, leader election, graceful shutdown, logs, sharding.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation, open};
use crate::support::{self, Operator};

use crate::support::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_probes_describe_the_fleet() {
    if support::skip() {
        return;
    }
    let port = free_port();
    let mut sc = Scenario::builder("metrics")
        .flag("--metrics-addr", &format!("127.0.0.1:{port}"))
        .start()
        .await;
    let ns = sc.ns.clone();
    let base = format!("http://127.0.0.1:{port}");
    support::eventually("/readyz", Duration::from_secs(20), || async {
        let (status, _) = try_open(&format!("{base}/readyz")).await?;
        (status == 200).then_some(())
    })
    .await;
    assert_eq!(open(&format!("{base}/healthz")).await.0, 200);

    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    let exp = jiff::Timestamp::now().as_second() + 30 * 86_400;
    sc.sandbox.set_expires_at(&t.access_token, Some(exp));
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;

    let (_, text) = open(&format!("{base}/metrics")).await;
    let series = format!("namespace=\"{ns}\",name=\"chan\",provider=\"app\"");
    assert!(
        text.contains(&format!("relink_connection_ready{{{series}}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "relink_token_expiration_timestamp_seconds{{{series}}} {exp}"
        )),
        "{text}"
    );
    assert!(
        text.contains("relink_checks_total{provider=\"app\",result=\"Valid\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "relink_provider_request_duration_seconds_count{provider=\"app\",endpoint=\"check\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("relink_status_writes_total 1"), "{text}");
    for t in &sc.tokens {
        assert!(!text.contains(t.as_str()), "no token in metrics");
    }

    // A restarted operator exports both series from the status, before any new check.
    sc.operator.stop().await;
    sc.sandbox.clear_calls();
    let flags: Vec<&str> = sc.flags.iter().map(String::as_str).collect();
    sc.operator = support::Operator::start(&flags).await;
    let expiry = format!("relink_token_expiration_timestamp_seconds{{{series}}} {exp}");
    let text = support::eventually(
        "series after a restart",
        Duration::from_secs(20),
        || async {
            let (_, text) = try_open(&format!("{base}/metrics")).await?;
            text.contains(&expiry).then_some(text)
        },
    )
    .await;
    assert!(
        text.contains(&format!("relink_connection_ready{{{series}}} 1")),
        "{text}"
    );
    assert!(
        sc.sandbox.calls().is_empty(),
        "the series come from the status, not from a new check"
    );

    // Deleting the connection removes its series; the token Secret stays.
    sc.connections()
        .delete("chan", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually("series removed", Duration::from_secs(20), || async {
        let (_, text) = open(&format!("{base}/metrics")).await;
        (!text.contains(&series)).then_some(())
    })
    .await;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(sc.client.clone(), &sc.ns);
    assert!(
        secrets.get_opt("tok").await.unwrap().is_some(),
        "deleting a connection keeps its Secret"
    );
    sc.operator.stop().await;
}

async fn try_open(url: &str) -> Option<(u16, String)> {
    let resp = crate::fixtures::browser().get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.unwrap_or_default()))
}

const LEADING: &str = "leading: starting the controller";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_a_standby_takes_over() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("leader")
        .switch("--leader-elect")
        .flag("--lease-duration", "4s")
        .start()
        .await;
    let refs: Vec<&str> = sc.flags.iter().map(String::as_str).collect();
    let mut other = Operator::start(&refs).await;
    support::eventually("one leader", Duration::from_secs(30), || async {
        let leaders = [sc.operator.output(), other.output()]
            .iter()
            .filter(|o| o.contains(LEADING))
            .count();
        (leaders == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaders = [sc.operator.output(), other.output()]
        .iter()
        .filter(|o| o.contains(LEADING))
        .count();
    assert_eq!(leaders, 1, "exactly one replica leads");

    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sc.sandbox.calls().len(), 1, "one check by one leader");

    // kill -9 the leader: the standby leads within about the lease duration.
    let first_leads = sc.operator.output().contains(LEADING);
    let (dead, standby) = if first_leads {
        (&mut sc.operator, &mut other)
    } else {
        (&mut other, &mut sc.operator)
    };
    let killed_at = std::time::Instant::now();
    dead.kill().await;
    standby
        .wait_for_output(LEADING, Duration::from_secs(20))
        .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(15), "takeover took {took:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sc.sandbox.calls().len(),
        1,
        "the new leader does not re-check what is not due"
    );

    // The new leader acts on requests.
    sc.request_check("chan").await;
    support::eventually(
        "check by the new leader",
        Duration::from_secs(20),
        || async { (sc.sandbox.calls().len() == 2).then_some(()) },
    )
    .await;

    // SIGTERM: in-flight work finishes, the lease is released, exit 0.
    let standby_is_first = !first_leads;
    let leader = if standby_is_first {
        &mut sc.operator
    } else {
        &mut other
    };
    let status = leader
        .terminate()
        .await
        .expect("exits by itself on SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        leader.output().contains("lease released"),
        "{}",
        leader.output()
    );
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_structured_line_per_check() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("jsonlog")
        .flag("--log-format", "json")
        .start()
        .await;
    let ns = sc.ns.clone();
    sc.provider("app", Validation::Userinfo).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.operator
        .wait_for_output("\"checked\"", Duration::from_secs(10))
        .await;
    let output = sc.operator.output();
    let line = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "checked")
        .expect("a JSON line per check");
    let f = &line["fields"];
    assert_eq!(f["namespace"], ns.as_str());
    assert_eq!(f["name"], "chan");
    assert_eq!(f["provider"], "app");
    assert_eq!(f["verdict"], "Valid");
    assert!(f["duration_ms"].is_u64());
    assert_eq!(line["level"], "INFO");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_shards_connections_between_operators() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("shard")
        .flag("--selector", "sharding.relink.dev/key=a")
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("in-a", TestConnection::on("page-1", &["read"]))
        .await;
    sc.apply_connection("in-b", TestConnection::on("page-1", &["read"]))
        .await;
    for (name, shard) in [("in-a", "a"), ("in-b", "b")] {
        let patch = json!({"metadata": {"labels": {"sharding.relink.dev/key": shard}}});
        sc.connections()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    sc.wait_ready_reason("in-a", "Valid").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sc.status("in-b").await.conditions.is_empty(),
        "another shard's connection is left alone"
    );
    assert_eq!(sc.sandbox.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_exits_with_a_clear_message_when_the_cluster_is_unreachable() {
    if support::skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("relink-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: nothing\n",
            free_port()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_relink"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--callback-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_check_finishes_it_before_exiting() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("sigterm").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;

    // The provider hangs; the operator's 2 s provider timeout ends the check.
    sc.sandbox.set_mode(relink::sandbox::Mode::Hang);
    sc.request_check("chan").await;
    support::eventually(
        "the check reached the provider",
        Duration::from_secs(20),
        || async { (sc.sandbox.calls().len() == 2).then_some(()) },
    )
    .await;
    let status = sc.operator.terminate().await.expect("exits by itself");
    assert!(status.success(), "{status:?}");
    let after = sc.status("chan").await;
    assert_eq!(
        after.consecutive_failures, 1,
        "the in-flight check was written before exit"
    );
    let reconciling = after
        .condition(relink::api::ConditionType::Reconciling)
        .unwrap();
    assert_eq!(reconciling.reason, "ProviderUnavailable");
    sc.sandbox.set_mode(relink::sandbox::Mode::Normal);
}
