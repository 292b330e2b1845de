//! The re-authorization link is a bearer capability that viewers, owners and chat members can
//! read: only the right account can complete it, a link works once and only for the provider
//! setup it was made for, and shared applications reach only the namespaces they are for.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use relink::api::{ALLOW_ACCOUNT_CHANGE_ANNOTATION, ChannelConnectionSpec, ProviderRef};

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation, open};
use crate::support;

async fn secret_version(sc: &Scenario, name: &str) -> Option<String> {
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get_opt(name)
        .await
        .expect("read secret")
        .and_then(|s| s.metadata.resource_version)
}

async fn access_token(sc: &Scenario, name: &str) -> String {
    let s = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get(name)
        .await
        .expect("secret");
    String::from_utf8(s.data.unwrap()["access_token"].0.clone()).unwrap()
}

/// The connection's current link, once a person is asked to log in.
async fn link(sc: &Scenario, name: &str) -> String {
    support::eventually(
        "a re-authorization link",
        Duration::from_secs(30),
        || async { sc.status(name).await.reauth_url },
    )
    .await
}

/// Once the connection is broken (revoked, or its refresh refused), the link to log in again.
async fn broken_link(sc: &Scenario, name: &str) -> String {
    support::eventually(
        "a broken connection's link",
        Duration::from_secs(30),
        || async {
            let s = sc.status(name).await;
            let ready = s.condition(relink::api::ConditionType::Ready)?;
            (ready.status == "False").then_some(s.reauth_url?)
        },
    )
    .await
}

/// A link other than `old` (the one published after `old` was used or retired).
async fn link_other_than(sc: &Scenario, name: &str, old: &str) -> String {
    support::eventually("a new link", Duration::from_secs(30), || async {
        sc.status(name).await.reauth_url.filter(|u| u != old)
    })
    .await
}

/// A connection whose spec names no account: the account is learnt from the provider.
fn unpinned_spec(provider: &str, secret: &str) -> ChannelConnectionSpec {
    let mut spec = TestConnection::default()
        .provider(provider)
        .secret(secret)
        .account("unused")
        .requires(&["read"])
        .spec();
    spec.account = None;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_with_another_account_is_refused_and_names_the_expected_one() {
    if support::skip() {
        return;
    }
    let port = support::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut sc = Scenario::builder("trustwrong")
        .callback()
        .flag("--metrics-addr", &metrics)
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let url = link(&sc, "chan").await;
    let version = secret_version(&sc, "tok").await;

    // A viewer who read the link logs in with their own page.
    let callback = sc.consent(&url, "viewer-page", true).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("page-1 display (page-1)"),
        "the page names the expected account: {page}"
    );
    assert!(page.contains("viewer-page"), "{page}");
    assert_eq!(
        secret_version(&sc, "tok").await,
        version,
        "the Secret was not written at all"
    );
    assert!(
        sc.events("chan")
            .await
            .iter()
            .all(|e| e.reason.as_deref() != Some("Reauthorized"))
    );
    sc.operator
        .wait_for_output("callback refused", Duration::from_secs(5))
        .await;
    assert!(sc.operator.output().contains("wrong_account"));

    // The owner then logs in with the page through the link that replaced the used one.
    let fresh = link_other_than(&sc, "chan", &url).await;
    let ok = sc.consent(&fresh, "page-1", true).await;
    let (status, page) = open(&ok).await;
    assert_eq!(status, 200, "{page}");
    let event = sc.wait_event("chan", "Normal", "Reauthorized").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("page-1 name (page-1)"),
        "the Event names the provider account, id and name: {note}"
    );
    let s = sc.wait_ready_reason("chan", "Valid").await;
    let last = s.last_reauthorization.expect("lastReauthorization");
    let account = last.account.expect("account");
    assert_eq!(
        (account.id.as_deref(), account.name.as_deref()),
        (Some("page-1"), Some("page-1 name"))
    );
    let (_, text) = open(&format!("http://{metrics}/metrics")).await;
    for series in [
        "relink_callbacks_total{result=\"wrong_account\"} 1",
        "relink_callbacks_total{result=\"reauthorized\"} 1",
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
    sc.tokens.push(access_token(&sc, "tok").await);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_spec_account_the_first_login_is_pinned_and_another_is_refused() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustpin").callback().start().await;
    sc.provider("app", Validation::Introspection).await;
    // Never worked, no spec.account: the Secret is missing and a person is asked to log in.
    sc.apply_connection("chan", unpinned_spec("app", "tok"))
        .await;
    sc.wait_ready_reason("chan", "SecretNotFound").await;
    let first = link(&sc, "chan").await;
    let ok = sc.consent(&first, "acct-a", true).await;
    let (status, page) = open(&ok).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("acct-a name"), "{page}");
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(
        s.account.as_ref().and_then(|a| a.id.as_deref()),
        Some("acct-a"),
        "the first account is pinned"
    );
    let last = s.last_reauthorization.expect("lastReauthorization");
    assert_eq!(last.account.and_then(|a| a.id).as_deref(), Some("acct-a"));
    let event = sc.wait_event("chan", "Normal", "Reauthorized").await;
    assert!(
        event.note.as_deref().unwrap_or_default().contains("acct-a"),
        "{event:?}"
    );
    sc.tokens.push(access_token(&sc, "tok").await);

    // Later the token dies; a viewer logs in as B with the published link.
    sc.sandbox.revoke(&access_token(&sc, "tok").await);
    sc.request_check("chan").await;
    let url = broken_link(&sc, "chan").await;
    let version = secret_version(&sc, "tok").await;
    let wrong = sc.consent(&url, "acct-b", true).await;
    let (status, page) = open(&wrong).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("acct-a name (acct-a)"), "{page}");
    assert!(page.contains(ALLOW_ACCOUNT_CHANGE_ANNOTATION), "{page}");
    assert_eq!(secret_version(&sc, "tok").await, version);
    let s = sc.status("chan").await;
    assert_eq!(
        s.account.and_then(|a| a.id).as_deref(),
        Some("acct-a"),
        "still pinned to A"
    );
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_change_annotation_lets_the_next_login_change_the_account() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustchange").callback().start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("acct-a", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", unpinned_spec("app", "tok"))
        .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.account.and_then(|a| a.id).as_deref(), Some("acct-a"));
    assert_eq!(s.reauth_url, None);

    // The working channel is handed to another account on purpose: the change is allowed and
    // a link asked for (what `relink reauth NAME` does).
    let patch = serde_json::json!({"metadata": {"annotations": {
        ALLOW_ACCOUNT_CHANGE_ANNOTATION: "true",
        relink::api::REAUTHORIZE_REQUESTED_ANNOTATION: "handover",
    }}});
    sc.connections()
        .patch("chan", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let url = link(&sc, "chan").await;
    let ok = sc.consent(&url, "acct-b", true).await;
    let (status, page) = open(&ok).await;
    assert_eq!(status, 200, "{page}");
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.account.and_then(|a| a.id).as_deref(), Some("acct-b"));
    let event = sc.wait_event("chan", "Normal", "Reauthorized").await;
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("acct-b") && note.contains("acct-a"),
        "the Event names the new account and the old: {note}"
    );
    let annotations = sc
        .connections()
        .get("chan")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(ALLOW_ACCOUNT_CHANGE_ANNOTATION),
        "the permission is used once"
    );
    sc.tokens.push(access_token(&sc, "tok").await);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_opened_twice_at_once_is_exchanged_once() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustrace").callback().start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    // No refresh after the login: every call to the token endpoint is a code exchange.
    let mut spec = TestConnection::on("page-1", &["read"]).spec();
    spec.refresh.enabled = false;
    sc.apply_connection("chan", spec).await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let url = link(&sc, "chan").await;
    // Two logins through the same link (two tabs, or the owner and someone else), both sent
    // back to the operator at the same moment.
    let a = sc.consent(&url, "page-1", true).await;
    let b = sc.consent(&url, "page-1", true).await;
    sc.sandbox.clear_calls();
    let ((sa, pa), (sb, pb)) = tokio::join!(open(&a), open(&b));
    let mut statuses = [sa, sb];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "{pa}\n{pb}");
    let exchanges = sc
        .sandbox
        .calls()
        .iter()
        .filter(|c| c.path == "/oauth/token")
        .count();
    assert_eq!(exchanges, 1, "exactly one code was exchanged");
    let refused = if sa == 400 { pa } else { pb };
    assert!(refused.contains("already used"), "{refused}");
    // Ready again (`Expiring` is Ready too: the sandbox's tokens are short-lived).
    support::eventually("Ready", Duration::from_secs(30), || async {
        let s = sc.status("chan").await;
        (s.condition(relink::api::ConditionType::Ready)?.status == "True").then_some(())
    })
    .await;
    sc.tokens.push(access_token(&sc, "tok").await);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_before_the_provider_changed_is_refused() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustmoved").callback().start().await;
    sc.provider("app", Validation::Introspection).await;
    sc.provider("other", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let old = link(&sc, "chan").await;
    let version = secret_version(&sc, "tok").await;

    // spec.providerRef moves to another application: the old link stops working and a new
    // one, for the new provider, is published.
    let callback = sc.consent(&old, "page-1", true).await;
    let mut spec = sc.connections().get("chan").await.unwrap().spec;
    spec.provider_ref = ProviderRef {
        name: "other".into(),
        ..spec.provider_ref
    };
    let patch = serde_json::json!({"spec": {"providerRef": spec.provider_ref}});
    sc.connections()
        .patch("chan", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("earlier setup"), "{page}");
    assert_eq!(secret_version(&sc, "tok").await, version);
    let new = link_other_than(&sc, "chan", &old).await;

    // The provider object itself is edited (a new generation): that link is retired as well.
    let callback = sc.consent(&new, "page-1", true).await;
    let patch = serde_json::json!({"spec": {"scopes": ["read"]}});
    Api::<relink::api::ChannelProvider>::namespaced(sc.client.clone(), &sc.ns)
        .patch("other", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("earlier setup"), "{page}");
    assert_eq!(secret_version(&sc, "tok").await, version);
    assert!(
        sc.sandbox.calls().iter().all(|c| c.path != "/oauth/token"),
        "no code was exchanged"
    );

    // The link published for the current setup works.
    let current = link_other_than(&sc, "chan", &new).await;
    let ok = sc.consent(&current, "page-1", true).await;
    assert_eq!(open(&ok).await.0, 200);
    sc.wait_ready_reason("chan", "Valid").await;
    sc.tokens.push(access_token(&sc, "tok").await);
    sc.assert_no_token_leaked().await;
}

/// A ClusterChannelProvider `name` at the sandbox, shared as `allowed` says; its client secret
/// lives in the operator's namespace (the test namespace).
async fn cluster_provider(sc: &Scenario, name: &str, allowed: serde_json::Value) {
    sc.secret(
        &format!("{name}-client"),
        &[("client_secret", "sandbox-secret")],
    )
    .await;
    let base = sc.sandbox.base_url();
    let mut spec = serde_json::json!({
        "type": "oauth2",
        "clientId": "relink-sandbox",
        "clientSecretRef": {"name": format!("{name}-client")},
        "endpoints": {
            "authorizationUrl": format!("{base}/oauth/authorize"),
            "tokenUrl": format!("{base}/oauth/token"),
            "introspectionUrl": format!("{base}/oauth/introspect"),
        },
    });
    for (k, v) in allowed.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let p = serde_json::json!({
        "apiVersion": "relink.dev/v1alpha1",
        "kind": "ClusterChannelProvider",
        "metadata": {"name": name},
        "spec": spec,
    });
    Api::<relink::api::ClusterChannelProvider>::all(sc.client.clone())
        .patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&p))
        .await
        .expect("cluster provider applies");
}

fn via_cluster_provider(provider: &str, secret: &str, scopes: &[&str]) -> ChannelConnectionSpec {
    let mut spec = TestConnection::default()
        .provider(provider)
        .secret(secret)
        .account("page-1")
        .requires(scopes)
        .spec();
    spec.provider_ref.kind = relink::api::ProviderKind::ClusterChannelProvider;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_provider_serves_only_the_namespaces_and_scopes_it_allows() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let mut sc = crate::notify::mailing("trustshare", &sink.url())
        .start()
        .await;
    let ns = sc.ns.clone();
    let provider = format!("company-app-{ns}");
    let tenant_label = "relink.dev/e2e-tenant";
    cluster_provider(
        &sc,
        &provider,
        serde_json::json!({
            "allowedNamespaces": {"matchLabels": {tenant_label: ns.clone()}},
            "allowedScopes": ["read"],
        }),
    )
    .await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;

    // A namespace the application is not shared with: no call, no link, no mail.
    sc.apply_connection("outside", via_cluster_provider(&provider, "tok", &["read"]))
        .await;
    let s = sc.wait_ready_reason("outside", "ProviderNotAllowed").await;
    let ready = s.condition(relink::api::ConditionType::Ready).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("allowedNamespaces"),
        "{}",
        ready.message
    );
    assert_eq!(s.reauth_url, None, "no link");

    // The namespace is shared with it, but a scope beyond allowedScopes is asked for.
    let patch = serde_json::json!({"metadata": {"labels": {tenant_label: ns.clone()}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(sc.client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    sc.apply_connection(
        "greedy",
        via_cluster_provider(&provider, "tok", &["read", "write"]),
    )
    .await;
    let s = sc.wait_ready_reason("greedy", "ProviderNotAllowed").await;
    let ready = s.condition(relink::api::ConditionType::Ready).unwrap();
    assert!(
        ready.message.contains("write") && ready.message.contains("allowedScopes"),
        "{}",
        ready.message
    );
    assert_eq!(s.reauth_url, None, "no link");
    assert!(
        sc.sandbox.calls().is_empty(),
        "the provider was never called: {:?}",
        sc.sandbox.calls()
    );
    sc.wait_event("greedy", "Warning", "ProviderNotAllowed")
        .await;

    // Control: once the namespace is shared, the same connection is checked, and a problem is
    // mailed — so the silence above was the refusal, not a broken setup.
    sc.request_check("outside").await;
    sc.wait_ready_reason("outside", "Valid").await;
    assert!(!sc.sandbox.calls().is_empty());
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("outside").await;
    sc.wait_ready_reason("outside", "Revoked").await;
    support::eventually(
        "a mail about the revoked token",
        Duration::from_secs(20),
        || async { (!sink.mails().is_empty()).then_some(()) },
    )
    .await;
    let greedy = sc.status("greedy").await;
    assert_eq!(
        greedy
            .condition(relink::api::ConditionType::Ready)
            .unwrap()
            .reason,
        "ProviderNotAllowed"
    );
    assert_eq!(sink.mails().len(), 1, "only the allowed connection mailed");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_outside_the_allowed_email_domains_are_never_mailed() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let mut sc = crate::notify::mailing("trustmail", &sink.url())
        .flag("--allowed-email-domains", "Example.com")
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    let mut mixed = TestConnection::on("page-1", &["read"]).spec();
    mixed.owners = vec!["owner@example.com".into(), "someone@elsewhere.test".into()];
    sc.apply_connection("mixed", mixed).await;
    let mut outside = TestConnection::on("page-1", &["read"]).spec();
    outside.owners = vec!["x@elsewhere.test".into()];
    sc.apply_connection("outside", outside).await;
    sc.wait_ready_reason("mixed", "Valid").await;
    sc.wait_ready_reason("outside", "Valid").await;

    sc.sandbox.revoke(&t.access_token);
    sc.request_check("mixed").await;
    sc.request_check("outside").await;
    let s = sc.wait_ready_reason("outside", "Revoked").await;
    let message = &s
        .condition(relink::api::ConditionType::Ready)
        .unwrap()
        .message;
    assert!(
        message.contains("x@elsewhere.test") && message.contains("not emailed"),
        "{message}"
    );
    let s = sc.wait_ready_reason("mixed", "Revoked").await;
    let message = &s
        .condition(relink::api::ConditionType::Ready)
        .unwrap()
        .message;
    assert!(message.contains("someone@elsewhere.test"), "{message}");
    let mails = support::eventually(
        "the mail to the allowed owner",
        Duration::from_secs(20),
        || async {
            let m = sink.mails();
            (!m.is_empty()).then_some(m)
        },
    )
    .await;
    // Let a mail to the other connection's owner, if relink were to send one, arrive too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = if sink.mails().len() > mails.len() {
        sink.mails()
    } else {
        mails
    };
    let recipients: Vec<&String> = mails.iter().flat_map(|m| &m.rcpt).collect();
    assert_eq!(recipients.len(), 1, "{recipients:?}");
    assert!(
        recipients[0].contains("owner@example.com"),
        "{recipients:?}"
    );
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_namespaces_install_has_secret_access_only_there() {
    use crate::chart::{
        Helm, Rendered, TempDir, can, chart_dir, flag, forbidden_lines, impersonating_kubeconfig,
        random_suffix, sa_identity, str_of, wait_allowed,
    };
    if support::skip() {
        return;
    }
    let cp = support::control_plane();
    let admin = cp.client();
    let helm = Helm::new();
    let release_ns = support::test_namespace(&admin, "trust-rel").await;
    let team_a = support::test_namespace(&admin, "trust-a").await;
    let team_b = support::test_namespace(&admin, "trust-b").await;
    let elsewhere = support::test_namespace(&admin, "trust-else").await;
    let release = format!("e2e-{}", random_suffix());
    let port = support::free_port();
    let scratch = TempDir::new("trust-install");
    let values = scratch.write(
        "values.yaml",
        &serde_json::json!({
            "crds": {"enabled": false},
            "watchNamespaces": [team_a, team_b],
            "publicUrl": format!("http://127.0.0.1:{port}"),
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
    assert!(
        notes.contains(&format!("watching namespaces {team_a}, {team_b} only")),
        "{notes}"
    );
    let manifest = Rendered::parse(&helm.ok(&[
        "get",
        "manifest",
        &release,
        "--namespace",
        &release_ns,
        "--kubeconfig",
        &kubeconfig,
    ]));
    let chart_args = manifest.args();
    let listed = format!("{team_a},{team_b}");
    assert_eq!(flag(&chart_args, "--namespace"), Some(listed.as_str()));
    let mut role_namespaces: Vec<&str> = manifest
        .of_kind("Role")
        .into_iter()
        .map(|r| str_of(&r["metadata"]["namespace"]))
        .collect();
    role_namespaces.sort();
    for ns in [&team_a, &team_b] {
        assert!(
            role_namespaces.contains(&ns.as_str()),
            "{role_namespaces:?}"
        );
    }

    // The chart's ServiceAccount, as the API server authorizes it.
    let sa = manifest.service_account();
    let (user, groups) = sa_identity(&release_ns, &sa);
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let as_sa = cp.client_as(&user, &groups);
    wait_allowed(
        &as_sa,
        &[
            ("get", "", "secrets", &team_a),
            ("patch", "", "secrets", &team_a),
            ("watch", "", "secrets", &team_b),
            ("patch", "", "secrets", &team_b),
        ],
    )
    .await;
    for (verb, ns) in [
        ("get", elsewhere.as_str()),
        ("list", elsewhere.as_str()),
        ("patch", elsewhere.as_str()),
        ("get", ""),
        ("list", ""),
        ("watch", ""),
    ] {
        assert!(
            !can(&as_sa, verb, "", "secrets", ns).await,
            "{verb} secrets in {ns:?} must be forbidden"
        );
    }
    let other = Api::<Secret>::namespaced(admin.clone(), &elsewhere);
    other
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "not-yours"},
                "stringData": {"access_token": "someone-elses"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    match Api::<Secret>::namespaced(as_sa.clone(), &elsewhere)
        .get("not-yours")
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("reading a Secret elsewhere: expected 403, got {other:?}"),
    }

    // The operator as the Deployment runs it, as that ServiceAccount, serves both namespaces.
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
    let sandbox = relink::sandbox::Sandbox::start(
        "127.0.0.1:0".parse().unwrap(),
        relink::sandbox::SandboxConfig::default(),
    )
    .await
    .expect("sandbox starts");
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let pod_name = format!("{release}-relink-0");
    let operator = support::Operator::start_with_env(
        &args_ref,
        &[("KUBECONFIG", &sa_kubeconfig), ("POD_NAME", &pod_name)],
    )
    .await;
    let mut sc = Scenario {
        client: admin.clone(),
        ns: team_a.clone(),
        sandbox,
        operator,
        tokens: Vec::new(),
        public_url: None,
        flags: Vec::new(),
    };
    for ns in [&team_a, &team_b] {
        sc.ns = ns.clone();
        sc.provider("app", Validation::Introspection).await;
        let t = sc.issue("page-1", &["read"]);
        sc.secret("tok", &[("access_token", &t.access_token)]).await;
        sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
            .await;
    }
    for ns in [&team_a, &team_b] {
        sc.ns = ns.clone();
        sc.wait_ready_reason("chan", "Valid").await;
    }
    let output = sc.operator.output();
    let forbidden = forbidden_lines(&output);
    assert!(forbidden.is_empty(), "{forbidden:#?}");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_key_equal_to_the_access_token_key_is_refused() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustkeys").start().await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("token", &t.access_token)]).await;
    let version = secret_version(&sc, "tok").await;
    let mut spec = TestConnection::on("page-1", &["read"]).spec();
    spec.secret_ref.access_token_key = "token".into();
    spec.secret_ref.refresh_token_key = "token".into();
    sc.apply_connection("chan", spec).await;
    let s = sc.wait_ready_reason("chan", "InvalidSpec").await;
    let message = &s
        .condition(relink::api::ConditionType::Ready)
        .unwrap()
        .message;
    assert!(
        message.contains("spec.secretRef.accessTokenKey")
            && message.contains("spec.secretRef.refreshTokenKey"),
        "{message}"
    );
    assert_eq!(s.reauth_url, None);
    assert!(sc.sandbox.calls().is_empty(), "no provider call");
    assert_eq!(secret_version(&sc, "tok").await, version, "nothing written");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_opt_in_label_only_labelled_token_secrets_are_used() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("trustlabel")
        .callback()
        .flag("--secret-label", "relink.dev/token=true")
        .start()
        .await;
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    // Someone else's Secret, which happens to hold a key named like a token.
    sc.secret("app-config", &[("access_token", &t.access_token)])
        .await;
    let version = secret_version(&sc, "app-config").await;
    sc.apply_connection(
        "chan",
        TestConnection::default()
            .secret("app-config")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    let s = sc.wait_ready_reason("chan", "InvalidSpec").await;
    let message = &s
        .condition(relink::api::ConditionType::Ready)
        .unwrap()
        .message;
    assert!(message.contains("relink.dev/token=true"), "{message}");
    assert_eq!(s.reauth_url, None, "no link to overwrite it either");
    assert!(
        sc.sandbox.calls().is_empty(),
        "the Secret's value was sent nowhere"
    );
    assert_eq!(secret_version(&sc, "app-config").await, version);

    // Labelled, it is the channel's token Secret: checked at once.
    let patch = serde_json::json!({"metadata": {"labels": {"relink.dev/token": "true"}}});
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .patch("app-config", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    sc.wait_ready_reason("chan", "Valid").await;

    // A connection whose Secret does not exist yet: the login creates it, labelled.
    sc.apply_connection(
        "fresh",
        TestConnection::default()
            .secret("fresh-token")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    sc.wait_ready_reason("fresh", "SecretNotFound").await;
    let url = link(&sc, "fresh").await;
    let ok = sc.consent(&url, "page-1", true).await;
    let (status, page) = open(&ok).await;
    assert_eq!(status, 200, "{page}");
    let created = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get("fresh-token")
        .await
        .unwrap();
    assert_eq!(
        created
            .metadata
            .labels
            .unwrap_or_default()
            .get("relink.dev/token")
            .map(String::as_str),
        Some("true")
    );
    sc.wait_ready_reason("fresh", "Valid").await;
    sc.tokens.push(access_token(&sc, "fresh-token").await);

    // A link published while the Secret was missing cannot write into an unlabelled Secret
    // created meanwhile under that name.
    sc.apply_connection(
        "late",
        TestConnection::default()
            .secret("late-token")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    sc.wait_ready_reason("late", "SecretNotFound").await;
    let url = link(&sc, "late").await;
    sc.secret("late-token", &[("unrelated", "data")]).await;
    let version = secret_version(&sc, "late-token").await;
    let callback = sc.consent(&url, "page-1", true).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("relink.dev/token=true"), "{page}");
    assert_eq!(secret_version(&sc, "late-token").await, version);
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_flight_does_not_bring_a_used_link_back() {
    if support::skip() {
        return;
    }
    // A slow provider keeps a check in flight while the link is used.
    let config = relink::sandbox::SandboxConfig {
        latency: Duration::from_secs(2),
        ..Default::default()
    };
    let mut sc = Scenario::builder("trustinflight")
        .callback()
        .flag("--provider-timeout", "10s")
        .sandbox(config)
        .start()
        .await;
    let _public = sc.public_url.clone().expect("the callback's URL");
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let used = link(&sc, "chan").await;
    let wrong = sc.consent(&used, "viewer-page", true).await;

    // A check starts (it read the connection with the link), then the link is used while the
    // check waits for the provider; the check ends after the link was replaced.
    tokio::time::sleep(Duration::from_millis(1500)).await; // past --check-request-min-gap
    sc.request_check("chan").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, page) = open(&wrong).await;
    assert_eq!(status, 400, "{page}");
    sc.operator
        .wait_for_output("object has been modified", Duration::from_secs(20))
        .await;
    // Every later check keeps the replacement, never the used link.
    let replacement = link_other_than(&sc, "chan", &used).await;
    sc.request_check("chan").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now = sc.status("chan").await.reauth_url.expect("a link");
    assert_ne!(now, used, "the used link came back");
    assert_eq!(now, replacement);
    let again = sc.consent(&used, "page-1", true).await;
    let (status, page) = open(&again).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already used"), "{page}");
    sc.assert_no_token_leaked().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_answer_does_not_name_is_asked_for_never_assumed() {
    if support::skip() {
        return;
    }
    // Introspection without `sub` (RFC 7662 makes it optional).
    let config = relink::sandbox::SandboxConfig {
        introspection_names_account: false,
        ..Default::default()
    };
    let mut sc = Scenario::builder("trustmute")
        .callback()
        .sandbox(config)
        .start()
        .await;
    let base = sc.sandbox.base_url();
    let endpoints = |userinfo: bool| relink::api::ProviderEndpoints {
        authorization_url: Some(format!("{base}/oauth/authorize")),
        token_url: Some(format!("{base}/oauth/token")),
        introspection_url: Some(format!("{base}/oauth/introspect")),
        userinfo_url: userinfo.then(|| format!("{base}/oauth/userinfo")),
        ..Default::default()
    };
    sc.provider_with("asks", endpoints(true)).await;
    sc.provider_with("mute", endpoints(false)).await;

    // The check names no account; at the callback relink asks userinfo who logged in.
    let t = sc.issue("page-1", &["read"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection(
        "chan",
        TestConnection::default()
            .provider("asks")
            .account("page-1")
            .requires(&["read"]),
    )
    .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Revoked").await;
    let url = link(&sc, "chan").await;
    let version = secret_version(&sc, "tok").await;
    sc.sandbox.clear_calls();
    let wrong = sc.consent(&url, "page-2", true).await;
    let (status, page) = open(&wrong).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("page-2") && page.contains("page-1 display (page-1)"),
        "{page}"
    );
    assert!(
        sc.sandbox
            .calls()
            .iter()
            .any(|c| c.path == "/oauth/userinfo"),
        "the provider was asked"
    );
    assert_eq!(secret_version(&sc, "tok").await, version);
    let fresh = link_other_than(&sc, "chan", &url).await;
    let ok = sc.consent(&fresh, "page-1", true).await;
    assert_eq!(open(&ok).await.0, 200);
    sc.wait_ready_reason("chan", "Valid").await;
    sc.tokens.push(access_token(&sc, "tok").await);

    // Nobody to ask: even a connection that never knew an account does not take a login whose
    // account nobody named.
    sc.apply_connection("blind", unpinned_spec("mute", "blind-token"))
        .await;
    sc.wait_ready_reason("blind", "SecretNotFound").await;
    let url = link(&sc, "blind").await;
    let login = sc.consent(&url, "page-1", true).await;
    let (status, page) = open(&login).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("did not say which account"), "{page}");
    assert_eq!(
        secret_version(&sc, "blind-token").await,
        None,
        "no Secret created"
    );
    sc.assert_no_token_leaked().await;
}
