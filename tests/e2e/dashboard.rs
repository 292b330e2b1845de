//! `relink dashboard` in a real browser: the operator and `relink dashboard` run as processes
//! against the local control plane, headless Chromium (through chromedriver, see `browser`)
//! opens the page, and the test asserts what a person sees: the counts, a red row for a
//! revoked connection with its Reconnect link, an orange one for an expiring token, LAST CHECK
//! moving after Check now, a revocation turning a row red without a reload, Reconnect through
//! the sandbox consent page turning it green; then a user without `patch` sees Check now
//! disabled with the reason, and the page says when it lost the API server and when it is back.
//! Screenshots are kept in `target/e2e-artifacts/<test namespace>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use relink::api::{ChannelGroup, ChannelGroupSpec};
use relink::sandbox::Grant;
use serde_json::{Value, json};

use crate::browser::{self, Chromedriver, WebDriver};
use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

const RELINK: &str = env!("CARGO_BIN_EXE_relink");
const WAIT: Duration = Duration::from_secs(45);

/// A running `relink dashboard`; killed on drop and by a watchdog if the test binary dies.
struct Dashboard {
    child: tokio::process::Child,
    watchdog: Option<std::process::Child>,
    log: PathBuf,
    url: String,
}

impl Dashboard {
    async fn start(ns: &str, kubeconfig: &Path, log: PathBuf) -> Dashboard {
        let port = support::free_port();
        let file = std::fs::File::create(&log).expect("create dashboard log");
        let child = tokio::process::Command::new(RELINK)
            .args(["dashboard", "-n", ns, "--port", &port.to_string()])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn relink dashboard");
        let pid = child.id().expect("dashboard pid");
        let dashboard = Dashboard {
            child,
            watchdog: Some(support::watchdog(pid, None)),
            log,
            url: format!("http://127.0.0.1:{port}/"),
        };
        let printed = support::eventually(
            "relink dashboard prints its URL",
            Duration::from_secs(20),
            || async {
                let out = dashboard.output();
                out.contains(&dashboard.url).then_some(out)
            },
        )
        .await;
        assert!(
            printed.contains(&format!(
                "relink dashboard for namespace {ns}: {}",
                dashboard.url
            )),
            "{printed}"
        );
        eprintln!("[e2e] relink dashboard at {} (pid {pid})", dashboard.url);
        dashboard
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

/// A TCP proxy on loopback in front of the API server that the test can cut and restore, as
/// a dropped VPN or a sleeping laptop would.
struct Proxy {
    port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let mut p = Proxy {
            port: support::free_port(),
            target,
            task: None,
        };
        p.open().await;
        p
    }

    async fn open(&mut self) {
        let listener = support::eventually("the proxy port binds", WAIT, || async {
            tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .ok()
        })
        .await;
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when the task is aborted) closes every proxied connection.
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                open.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The control plane's kubeconfig, optionally through `server` and impersonating `user`.
fn kubeconfig(dir: &Path, name: &str, server: Option<&str>, user: Option<&str>) -> PathBuf {
    let cp = support::control_plane();
    let text = std::fs::read_to_string(cp.kubeconfig()).expect("read kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    if let Some(server) = server {
        config["clusters"][0]["cluster"]["server"] = server.into();
    }
    if let Some(user) = user {
        config["users"][0]["user"]["as"] = user.into();
    }
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&config).expect("YAML")).expect("write kubeconfig");
    path
}

/// Commands of the W3C WebDriver API that `browser::WebDriver` has no helper for.
impl WebDriver {
    async fn window(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/window", None).await;
        v.as_str().expect("window handle").to_owned()
    }

    async fn windows(&self) -> Vec<String> {
        let v = self
            .cmd(reqwest::Method::GET, "/window/handles", None)
            .await;
        v.as_array()
            .expect("window handles")
            .iter()
            .map(|h| h.as_str().expect("handle").to_owned())
            .collect()
    }

    async fn switch_to(&self, handle: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    async fn close_window(&self) {
        self.cmd(reqwest::Method::DELETE, "/window", None).await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Types `text` into the element.
    async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn clear(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
    }

    async fn enabled(&self, element: &str) -> bool {
        let v = self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{element}/enabled"),
                None,
            )
            .await;
        v.as_bool().expect("enabled is a bool")
    }

    /// The text of the first element matching `css`, or `None` when there is none.
    async fn text_of(&self, css: &str) -> Option<String> {
        let found = self.find_all(css).await;
        match found.first() {
            Some(e) => Some(self.text(e).await),
            None => None,
        }
    }

    /// Waits until the first element matching `css` has a text that `want` accepts.
    async fn wait_text(&self, css: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
        support::eventually(what, WAIT, || async {
            self.text_of(css).await.filter(|t| want(t))
        })
        .await
    }

    /// The class of the connection row `id`.
    async fn row_class(&self, id: &str) -> Option<String> {
        let rows = self.find_all(&row(id)).await;
        match rows.first() {
            Some(r) => Some(self.property(r, "className").await),
            None => None,
        }
    }

    async fn wait_row_mark(&self, id: &str, mark: &str) {
        let class = format!("mark-{mark}");
        support::eventually(&format!("row {id} turns {mark}"), WAIT, || async {
            self.row_class(id)
                .await
                .filter(|c| c.split(' ').any(|x| x == class))
        })
        .await;
    }

    async fn counts(&self) -> [String; 3] {
        let mut out: [String; 3] = Default::default();
        for (i, id) in ["count-ready", "count-expiring", "count-broken"]
            .iter()
            .enumerate()
        {
            out[i] = self.text_of(&format!("#{id}")).await.unwrap_or_default();
        }
        out
    }

    async fn wait_counts(&self, want: [&str; 3]) {
        support::eventually(
            &format!("counts ready/expiring/broken = {want:?}"),
            WAIT,
            || async { (self.counts().await == want).then_some(()) },
        )
        .await;
    }
}

/// CSS selector of the connection row `id` (`namespace/name`).
fn row(id: &str) -> String {
    format!(r#"tr.conn[data-id="{id}"]"#)
}

fn normalized(url: &str) -> String {
    url::Url::parse(url).expect("a URL").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_watches_and_heals_channels_on_the_dashboard() {
    if support::skip() {
        return;
    }
    let Some(chromedriver) = browser::find_chromedriver() else {
        if std::env::var("RELINK_SKIP_E2E").as_deref() == Ok("1") {
            eprintln!("skipped: RELINK_SKIP_E2E=1 and no Chromium/chromedriver");
            return;
        }
        panic!("{}", browser::MISSING_BROWSER);
    };
    let mut sc = Scenario::builder("dash").callback().start().await;
    let ns = sc.ns.clone();
    let cp = support::control_plane();
    let dir = cp.dir().join(&ns);
    std::fs::create_dir_all(dir.join("profile")).expect("create browser dir");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e-artifacts")
        .join(&ns);
    std::fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("create {}: {e}", artifacts.display()));

    // Three channels: one works, one was revoked behind the app's back (its owner's display
    // name is hostile markup), one expires in 12 hours and cannot be refreshed.
    sc.provider("app", Validation::Introspection).await;
    let shop = sc.issue("page-1", &["read", "write"]);
    sc.secret("shop-token", &[("access_token", &shop.access_token)])
        .await;
    sc.apply_connection(
        "shop",
        TestConnection::default()
            .secret("shop-token")
            .account("page-1")
            .requires(&["read", "write"]),
    )
    .await;
    let support_token = sc.issue("page-2", &["read"]);
    sc.sandbox.revoke(&support_token.access_token);
    sc.secret(
        "support-token",
        &[("access_token", &support_token.access_token)],
    )
    .await;
    let mut spec = TestConnection::default()
        .secret("support-token")
        .account("page-2")
        .requires(&["read"])
        .spec();
    if let Some(a) = spec.account.as_mut() {
        a.display_name = Some("<b>Support</b> & co".into());
    }
    sc.apply_connection("support", spec).await;
    let news = sc.sandbox.issue(Grant {
        account_id: "page-3".into(),
        account_name: "page-3 name".into(),
        scopes: vec!["read".into()],
        expires_in_secs: Some(12 * 3600),
        refreshable: false,
    });
    sc.tokens.push(news.access_token.clone());
    sc.secret("news-token", &[("access_token", &news.access_token)])
        .await;
    sc.apply_connection(
        "news",
        TestConnection::default()
            .secret("news-token")
            .account("page-3")
            .requires(&["read"]),
    )
    .await;
    let group = ChannelGroup::new(
        "campaign",
        ChannelGroupSpec {
            selector: None,
            connections: vec!["shop".into(), "support".into()],
            min_ready: None,
        },
    );
    Api::<ChannelGroup>::namespaced(sc.client.clone(), &ns)
        .create(&PostParams::default(), &group)
        .await
        .expect("group is accepted");
    sc.wait_ready_reason("shop", "Valid").await;
    sc.wait_ready_reason("news", "Expiring").await;
    let support_link = sc
        .wait_ready_reason("support", "Revoked")
        .await
        .reauth_url
        .expect("a link while a person must log in");

    let dashboard = Dashboard::start(&ns, cp.kubeconfig(), dir.join("dashboard.log")).await;
    let driver = Chromedriver::start(&chromedriver, &dir).await;
    let browser = WebDriver::new(&driver, &dir.join("profile")).await;
    browser.resize(1360, 860).await;
    browser.goto(&dashboard.url).await;
    assert!(browser.title().await.ends_with("relink dashboard"));

    // The counts, and one row per state.
    browser.wait_counts(["1", "1", "1"]).await;
    assert_eq!(browser.title().await, "(1 broken) relink dashboard");
    browser
        .wait_text("#live", "the page says it is live", |t| t == "Live")
        .await;
    let id = |name: &str| format!("{ns}/{name}");
    browser.wait_row_mark(&id("shop"), "green").await;
    browser.wait_row_mark(&id("news"), "orange").await;
    browser.wait_row_mark(&id("support"), "red").await;
    let red = browser
        .text(&browser.find(&row(&id("support"))).await)
        .await;
    for want in [
        "Broken",
        "Access was revoked at the provider",
        "support",
        "page-2",
        "Reconnect",
        "Check now",
        // Escaped: shown as text, never as markup.
        "manages <b>Support</b> & co",
    ] {
        assert!(red.contains(want), "missing {want:?} in the red row: {red}");
    }
    assert!(
        browser
            .find_all(&format!("{} b", row(&id("support"))))
            .await
            .is_empty(),
        "markup from the cluster is not rendered"
    );
    // Details: the connection's recent Events, read with the user's credentials.
    let more = browser
        .find(&format!("{} button.more", row(&id("support"))))
        .await;
    browser.click(&more).await;
    assert_eq!(browser.property(&more, "ariaExpanded").await, "true");
    let events = browser
        .wait_text(
            &format!("{} + tr.details ul.events", row(&id("support"))),
            "the Revoked Event in the details",
            |t| t.contains("Revoked"),
        )
        .await;
    assert!(events.contains("inactive"), "{events}");
    browser.click(&more).await;
    let orange = browser.text(&browser.find(&row(&id("news"))).await).await;
    assert!(orange.contains("Expiring"), "{orange}");
    assert!(
        orange.contains("in 11h") || orange.contains("in 12h"),
        "{orange}"
    );
    let reconnect = browser
        .find(&format!("{} a.reconnect", row(&id("support"))))
        .await;
    assert_eq!(
        normalized(&browser.property(&reconnect, "href").await),
        normalized(&support_link),
        "Reconnect opens the connection's reauthUrl"
    );
    assert_eq!(browser.property(&reconnect, "target").await, "_blank");
    let state = url::Url::parse(&support_link)
        .expect("link")
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("the link carries a state");
    let source = browser.source().await;
    assert_eq!(
        source.matches(&state).count(),
        1,
        "the link appears once, as the Reconnect target"
    );
    let green = browser.text(&browser.find(&row(&id("shop"))).await).await;
    assert!(
        green.contains("Ready") && !green.contains("Reconnect"),
        "no Reconnect on a working channel: {green}"
    );
    let group_card = browser
        .wait_text(
            &format!(r#"article.group[data-id="{ns}/campaign"]"#),
            "the group card",
            |t| t.contains("1/2 ready"),
        )
        .await;
    assert!(
        group_card.contains("shop") && group_card.contains("support"),
        "{group_card}"
    );
    browser.screenshot(&artifacts.join("dashboard.png")).await;

    // Search and the status filter narrow the rows.
    let visible = || async { browser.find_all("tr.conn:not([hidden])").await.len() };
    let search = browser.find("#f-search").await;
    browser.type_into(&search, "page-3").await;
    support::eventually("search finds one row", WAIT, || async {
        (visible().await == 1).then_some(())
    })
    .await;
    assert!(
        browser
            .text(&browser.find(&row(&id("news"))).await)
            .await
            .contains("news")
    );
    browser.clear(&search).await;
    let broken = browser.find(r#"button.count[data-filter="red"]"#).await;
    browser.click(&broken).await;
    support::eventually("the status filter keeps the red row", WAIT, || async {
        (visible().await == 1).then_some(())
    })
    .await;
    assert!(
        !browser
            .text(&browser.find(&row(&id("support"))).await)
            .await
            .is_empty()
    );
    assert_eq!(browser.property(&broken, "ariaPressed").await, "true");
    browser
        .click(&browser.find(r#"#f-status option[value=""]"#).await)
        .await;
    support::eventually("every row is back", WAIT, || async {
        (visible().await == 3).then_some(())
    })
    .await;

    // From here on the page must never reload: a mark set now must survive.
    browser.script("window.relinkNoReload = 42;").await;
    let no_reload = || async { browser.script("return window.relinkNoReload;").await == json!(42) };

    // Check now: LAST CHECK moves.
    let last_check = format!("{} .c-lastcheck", row(&id("shop")));
    let cell = browser.find(&last_check).await;
    let before = browser.property(&cell, "title").await;
    assert!(!before.is_empty(), "the exact time is the cell's title");
    // lastCheckTime has whole seconds: let the next second begin.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let check = browser
        .find(&format!("{} button.check", row(&id("shop"))))
        .await;
    assert!(browser.enabled(&check).await);
    browser.click(&check).await;
    support::eventually("LAST CHECK changes after Check now", WAIT, || async {
        let cell = browser.find_all(&last_check).await.pop()?;
        let title = browser.property(&cell, "title").await;
        (title != before).then_some(())
    })
    .await;
    let handled = sc.status("shop").await.last_handled_check_request;
    let annotation = sc
        .connections()
        .get("shop")
        .await
        .expect("shop")
        .metadata
        .annotations
        .unwrap_or_default()
        .get(relink::api::CHECK_REQUESTED_ANNOTATION)
        .cloned();
    assert!(annotation.is_some(), "Check now set the annotation");
    assert_eq!(handled, annotation, "and the operator handled it");

    // Someone removes the app at the provider; a check elsewhere finds out: the row turns red
    // and gains a Reconnect link, without a reload.
    sc.sandbox.revoke(&shop.access_token);
    sc.request_check("shop").await;
    browser.wait_row_mark(&id("shop"), "red").await;
    browser.wait_counts(["0", "1", "2"]).await;
    let shop_link = sc
        .wait_ready_reason("shop", "Revoked")
        .await
        .reauth_url
        .expect("a link for shop");
    let reconnect = browser
        .find(&format!("{} a.reconnect", row(&id("shop"))))
        .await;
    assert_eq!(
        normalized(&browser.property(&reconnect, "href").await),
        normalized(&shop_link)
    );
    assert!(no_reload().await, "the page was not reloaded");
    browser.screenshot(&artifacts.join("revoked.png")).await;

    // Reconnect: the provider's consent page opens in a new tab; Allow; back on the
    // dashboard the row is green again.
    let dashboard_window = browser.window().await;
    browser.click(&reconnect).await;
    let consent = support::eventually("the Reconnect tab opens", WAIT, || async {
        let handles = browser.windows().await;
        handles.into_iter().find(|h| *h != dashboard_window)
    })
    .await;
    browser.switch_to(&consent).await;
    support::eventually("the consent page loads", WAIT, || async {
        browser
            .current_url()
            .await
            .starts_with(&format!("{}/oauth/authorize?", sc.sandbox.base_url()))
            .then_some(())
    })
    .await;
    let account = browser.find("input#account_id").await;
    assert_eq!(browser.property(&account, "value").await, "page-1");
    let allow = browser.find(r#"button[value="allow"]"#).await;
    browser.click(&allow).await;
    support::eventually("the callback's result page", WAIT, || async {
        browser
            .title()
            .await
            .contains("Channel connected again")
            .then_some(())
    })
    .await;
    browser.close_window().await;
    browser.switch_to(&dashboard_window).await;
    browser.wait_row_mark(&id("shop"), "green").await;
    browser.wait_counts(["1", "1", "1"]).await;
    let green = browser.text(&browser.find(&row(&id("shop"))).await).await;
    assert!(
        !green.contains("Reconnect"),
        "the Reconnect link is gone once the channel works: {green}"
    );
    assert!(no_reload().await, "the page was not reloaded");
    browser.screenshot(&artifacts.join("healed.png")).await;

    // A person who may only read: same rows, Check now disabled with the reason. Their
    // dashboard goes through a proxy the test cuts: the page says it lost the API server.
    let viewer = "dash-viewer@example.com";
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "relink-viewer"},
        "rules": [
            {"apiGroups": ["relink.dev"], "resources": ["channelconnections", "channelgroups", "channelproviders"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .expect("role");
    Api::<Role>::namespaced(sc.client.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "relink-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "relink-viewer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": viewer}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(sc.client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");
    let api_addr = url::Url::parse(cp.url()).expect("control plane URL");
    let mut proxy = Proxy::start(format!(
        "127.0.0.1:{}",
        api_addr.port().expect("control plane port")
    ))
    .await;
    let viewer_config = kubeconfig(
        &dir,
        "viewer.kubeconfig",
        Some(&format!("https://127.0.0.1:{}", proxy.port)),
        Some(viewer),
    );
    let viewer_dashboard = Dashboard::start(&ns, &viewer_config, dir.join("viewer.log")).await;
    browser.goto(&viewer_dashboard.url).await;
    browser.wait_counts(["1", "1", "1"]).await;
    let why = browser
        .wait_text(
            &format!("{} .why", row(&id("shop"))),
            "the reason Check now is disabled",
            |t| !t.is_empty(),
        )
        .await;
    assert!(
        why.contains("may not patch channelconnections") && why.contains(&ns),
        "{why}"
    );
    let check = browser
        .find(&format!("{} button.check", row(&id("shop"))))
        .await;
    assert!(!browser.enabled(&check).await, "Check now is disabled");
    browser.screenshot(&artifacts.join("viewer.png")).await;

    proxy.cut().await;
    let lost = browser
        .wait_text("#live", "the page says it lost the API server", |t| {
            t.starts_with("Lost the API server")
        })
        .await;
    eprintln!("[e2e] banner: {lost}");
    browser.wait_counts(["1", "1", "1"]).await; // the last picture stays
    browser.screenshot(&artifacts.join("lost.png")).await;
    proxy.open().await;
    browser
        .wait_text("#live", "the page is live again", |t| t == "Live")
        .await;
    browser.quit().await;

    // Nothing token-shaped anywhere: the dashboards never read a Secret.
    let data: BTreeMap<String, String> = Api::<Secret>::namespaced(sc.client.clone(), &ns)
        .get("shop-token")
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect();
    sc.tokens.extend(data.values().cloned());
    for out in [dashboard.output(), viewer_dashboard.output()] {
        assert!(!out.contains("sbx-"), "{out}");
    }
    assert!(!source.contains("sbx-at-") && !source.contains("sbx-rt-"));
    sc.assert_no_token_leaked().await;
    eprintln!("[e2e] screenshots in {}", artifacts.display());
    drop(driver);
}
