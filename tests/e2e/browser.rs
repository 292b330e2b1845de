//! The re-authorization path in a real browser: headless Chromium, driven through chromedriver's
//! W3C WebDriver HTTP API, opens a connection's `reauthUrl`, clicks "Allow" on the sandbox
//! consent page and lands on the operator's callback page. Screenshots of both pages are kept as
//! test artifacts in `target/e2e-artifacts/<test namespace>/{consent,result}.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages; without them the test fails (unless
//! `RELINK_SKIP_E2E=1`), because a browser test that silently passes proves nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};

use crate::fixtures::TestConnection;
use crate::fixtures::{Scenario, Validation};
use crate::support;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
pub(crate) const MISSING_BROWSER: &str = "the browser test needs Chromium and chromedriver: run \
     `apt-get install chromium chromium-driver` (Debian packages), or set RELINK_SKIP_E2E=1 to skip e2e tests";
/// W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` on `PATH`, when it and [`CHROMIUM`] are both installed.
pub(crate) fn find_chromedriver() -> Option<PathBuf> {
    if !Path::new(CHROMIUM).is_file() {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// A `chromedriver --port=N` child in its own process group, so the browsers it starts die with
/// it: killed on drop, and by a `sh` watchdog if the test binary dies first.
pub(crate) struct Chromedriver {
    child: tokio::process::Child,
    pgid: u32,
    watchdog: Option<std::process::Child>,
    base: String,
    log: PathBuf,
}

impl Chromedriver {
    pub(crate) async fn start(bin: &Path, dir: &Path) -> Chromedriver {
        let port = crate::support::free_port();
        let log = dir.join("chromedriver.log");
        let file = std::fs::File::create(&log).expect("create chromedriver log");
        let child = tokio::process::Command::new(bin)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}; {MISSING_BROWSER}", bin.display()));
        let pgid = child.id().expect("chromedriver pid");
        let script = format!(
            "trap '' INT TERM HUP; while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 -{pgid} 2>/dev/null",
            me = std::process::id(),
        );
        let watchdog = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog sh");
        let mut driver = Chromedriver {
            child,
            pgid,
            watchdog: Some(watchdog),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = http_client();
        let status_url = format!("{}/status", driver.base);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited early ({status}): {}",
                    std::fs::read_to_string(&driver.log).unwrap_or_default()
                );
            }
            if let Ok(resp) = http.get(&status_url).send().await
                && let Ok(body) = resp.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver not ready after 20 s (log {})",
                driver.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "[e2e] chromedriver at {} (pid {pgid}, log {})",
            driver.base,
            driver.log.display()
        );
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it left behind.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.start_kill();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// One WebDriver session: just the commands this test needs.
pub(crate) struct WebDriver {
    http: reqwest::Client,
    session: String,
}

impl WebDriver {
    /// A headless Chromium session with a fresh profile in `profile`.
    pub(crate) async fn new(driver: &Chromedriver, profile: &Path) -> WebDriver {
        let http = http_client();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1024,768",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let value = send(
            &http,
            reqwest::Method::POST,
            &format!("{}/session", driver.base),
            Some(caps),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "start a Chromium session: {e} (chromedriver log {})",
                driver.log.display()
            )
        });
        let session = value["sessionId"]
            .as_str()
            .expect("sessionId in the new session answer")
            .to_owned();
        WebDriver {
            http,
            session: format!("{}/session/{session}", driver.base),
        }
    }

    /// Runs one command; returns its `value` or panics with WebDriver's error.
    pub(crate) async fn cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let url = format!("{}{path}", self.session);
        send(&self.http, method.clone(), &url, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub(crate) async fn current_url(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/url", None).await;
        v.as_str().expect("url is a string").to_owned()
    }

    pub(crate) async fn title(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/title", None).await;
        v.as_str().expect("title is a string").to_owned()
    }

    pub(crate) async fn source(&self) -> String {
        let v = self.cmd(reqwest::Method::GET, "/source", None).await;
        v.as_str().expect("source is a string").to_owned()
    }

    /// Element ids of everything matching the CSS selector `css`.
    pub(crate) async fn find_all(&self, css: &str) -> Vec<String> {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .cmd(reqwest::Method::POST, "/elements", Some(body))
            .await;
        v.as_array()
            .expect("a list of elements")
            .iter()
            .map(|e| e[ELEMENT_KEY].as_str().expect("element id").to_owned())
            .collect()
    }

    /// The element matching `css` (WebDriver fails with "no such element" otherwise).
    pub(crate) async fn find(&self, css: &str) -> String {
        let body = json!({"using": "css selector", "value": css});
        let v = self
            .cmd(reqwest::Method::POST, "/element", Some(body))
            .await;
        v[ELEMENT_KEY].as_str().expect("element id").to_owned()
    }

    pub(crate) async fn text(&self, element: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub(crate) async fn property(&self, element: &str, name: &str) -> String {
        let path = format!("/element/{element}/property/{name}");
        let v = self.cmd(reqwest::Method::GET, &path, None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub(crate) async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("[e2e] screenshot: {}", path.display());
    }

    /// Ends the session, which closes Chromium.
    pub(crate) async fn quit(self) {
        let _ = send(&self.http, reqwest::Method::DELETE, &self.session, None).await;
    }
}

/// Sends a WebDriver command and returns the answer's `value`, or the error it reports.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut answer: Value = resp.json().await.map_err(|e| e.to_string())?;
    let value = answer["value"].take();
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{status}: {} {}",
            value["error"].as_str().unwrap_or("?"),
            value["message"].as_str().unwrap_or("")
        ))
    }
}

/// `url` without its query: callback URLs carry an authorization code, never printed.
fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_heals_a_revoked_channel_in_a_real_browser() {
    if support::skip() {
        return;
    }
    let Some(chromedriver) = find_chromedriver() else {
        if std::env::var("RELINK_SKIP_E2E").as_deref() == Ok("1") {
            eprintln!("skipped: RELINK_SKIP_E2E=1 and no Chromium/chromedriver");
            return;
        }
        panic!("{MISSING_BROWSER}");
    };

    let mut sc = Scenario::builder("browser").callback().start().await;
    let public = sc.public_url.clone().expect("the callback\'s URL");
    let dir = support::control_plane().dir().join(&sc.ns);
    std::fs::create_dir_all(dir.join("profile")).expect("create browser dir");
    // Screenshots outlive the control plane's temp dir: they are the test's artifacts.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/e2e-artifacts")
        .join(&sc.ns);
    std::fs::create_dir_all(&artifacts)
        .unwrap_or_else(|e| panic!("create {}: {e}", artifacts.display()));
    let driver = Chromedriver::start(&chromedriver, &dir).await;

    // A healthy connection for page-1, then the person removes the app at the provider.
    sc.provider("app", Validation::Introspection).await;
    let t = sc.issue("page-1", &["read", "write"]);
    sc.secret("tok", &[("access_token", &t.access_token)]).await;
    sc.apply_connection("chan", TestConnection::on("page-1", &["read", "write"]))
        .await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.sandbox.revoke(&t.access_token);
    sc.request_check("chan").await;
    let link = sc
        .wait_ready_reason("chan", "Revoked")
        .await
        .reauth_url
        .expect("a re-authorization link while a person must log in");

    // The browser opens the link: the sandbox consent page.
    let browser = WebDriver::new(&driver, &dir.join("profile")).await;
    browser.goto(&link).await;
    assert!(
        browser
            .current_url()
            .await
            .starts_with(&format!("{}/oauth/authorize?", sc.sandbox.base_url())),
        "the link opens the provider's consent page"
    );
    assert!(
        browser.title().await.contains("Sandbox Social"),
        "{}",
        browser.source().await
    );
    let heading = browser.text(&browser.find("h1").await).await;
    assert_eq!(heading, "relink-sandbox wants to access your page");
    let mut scopes = Vec::new();
    for e in browser.find_all("li code").await {
        scopes.push(browser.text(&e).await);
    }
    assert_eq!(scopes, ["read", "write"], "the page lists the scopes");
    let account = browser.find("input#account_id").await;
    assert_eq!(
        browser.property(&account, "value").await,
        "page-1",
        "the page id is pre-filled from login_hint"
    );
    browser.screenshot(&artifacts.join("consent.png")).await;

    // Allow: the sandbox redirects to the operator's callback, which answers with a page.
    let allow = browser.find(r#"button[value="allow"]"#).await;
    browser.click(&allow).await;
    let callback = format!("{public}/oauth/callback");
    let landed = support::eventually(
        "the browser on the callback's result page",
        Duration::from_secs(30),
        || async {
            let url = browser.current_url().await;
            (url.starts_with(&format!("{callback}?"))
                && browser.title().await.contains("Channel connected again"))
            .then_some(url)
        },
    )
    .await;
    assert_eq!(without_query(&landed), callback);
    let heading = browser.text(&browser.find("h1").await).await;
    assert_eq!(heading, "Channel connected again");
    let body = browser.text(&browser.find("body").await).await;
    assert!(
        body.contains("page-1 display") && body.contains("is connected again"),
        "{body}"
    );
    browser.screenshot(&artifacts.join("result.png")).await;
    browser.quit().await;

    // The connection is healthy again, with a new token in its Secret.
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "link withdrawn once healthy");
    let data: BTreeMap<String, String> = Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get("tok")
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect();
    let access = data.get("access_token").expect("an access token");
    assert!(access != &t.access_token, "a new access token was written");
    assert!(access.starts_with("sbx-at-"), "a sandbox access token");
    sc.tokens.extend(data.get("access_token").cloned());
    sc.tokens.extend(data.get("refresh_token").cloned());
    sc.assert_no_token_leaked().await;
    eprintln!(
        "[e2e] screenshots: {} {}",
        artifacts.join("consent.png").display(),
        artifacts.join("result.png").display()
    );
    drop(driver);
}
