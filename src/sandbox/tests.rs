//! End-to-end tests over real HTTP against a sandbox on an ephemeral port.

use super::server::HUGE_BODY_BYTES;
use super::store::{Form, now_secs};
use super::*;
use serde_json::{Value, json};

async fn sandbox() -> (Sandbox, reqwest::Client) {
    sandbox_with(SandboxConfig::default()).await
}

async fn sandbox_with(config: SandboxConfig) -> (Sandbox, reqwest::Client) {
    // reqwest is built without a TLS provider and refuses to build a client
    // until one is installed, even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = "127.0.0.1:0".parse().expect("addr");
    let sb = Sandbox::start(addr, config).await.expect("start");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    (sb, client)
}

fn grant(account: &str, scopes: &[&str]) -> Grant {
    Grant {
        account_id: account.to_owned(),
        account_name: format!("{account} name"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_in_secs: Some(3600),
        refreshable: true,
    }
}

async fn introspect(sb: &Sandbox, c: &reqwest::Client, token: &str) -> Value {
    introspection(sb, c, token).await.json().await.unwrap()
}

/// `POST /oauth/introspect` as the sandbox's client.
async fn introspection(sb: &Sandbox, c: &reqwest::Client, token: &str) -> reqwest::Response {
    c.post(format!("{}/oauth/introspect", sb.base_url()))
        .basic_auth("relink-sandbox", Some("sandbox-secret"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

async fn userinfo(sb: &Sandbox, c: &reqwest::Client, token: &str) -> reqwest::Response {
    c.get(format!("{}/oauth/userinfo", sb.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn token(sb: &Sandbox, c: &reqwest::Client, form: &[(&str, &str)]) -> reqwest::Response {
    let mut form = form.to_vec();
    form.extend([
        ("client_id", "relink-sandbox"),
        ("client_secret", "sandbox-secret"),
    ]);
    c.post(format!("{}/oauth/token", sb.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn issue_introspect_revoke_userinfo() {
    let (sb, c) = sandbox().await;
    let t = sb.issue(grant("page-1", &["pages.read", "profile"]));
    assert!(t.access_token.starts_with("sbx-at-") && t.access_token.len() == 39);
    assert!(t.refresh_token.as_deref().unwrap().starts_with("sbx-rt-"));
    let v = introspect(&sb, &c, &t.access_token).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "page-1");
    assert_eq!(v["scope"], "pages.read profile");
    assert_eq!(v["exp"], t.expires_at.unwrap());

    let r = userinfo(&sb, &c, &t.access_token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "page-1 name");

    sb.revoke(&t.access_token);
    assert_eq!(
        introspect(&sb, &c, &t.access_token).await,
        json!({ "active": false })
    );
    let r = userinfo(&sb, &c, &t.access_token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let rt = t.refresh_token.unwrap();
    let r = token(
        &sb,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(r.status(), 400);

    let t2 = sb.issue(grant("page-2", &["x"]));
    sb.set_scopes(&t2.access_token, &[]);
    let r = userinfo(&sb, &c, &t2.access_token).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\""
    );
    sb.set_expires_at(&t2.access_token, Some(now_secs() - 1));
    assert_eq!(introspect(&sb, &c, &t2.access_token).await["active"], false);
}

#[tokio::test]
async fn refresh_rotates() {
    let (sb, c) = sandbox().await;
    let t = sb.issue(grant("page-1", &["a", "b"]));
    let rt = t.refresh_token.unwrap();
    let r = token(
        &sb,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["scope"], "a b");
    assert!(v["expires_in"].as_i64().unwrap() > 3500);
    let new_rt = v["refresh_token"].as_str().unwrap();
    assert_ne!(new_rt, rt);
    let r = token(
        &sb,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let r = token(
        &sb,
        &c,
        &[("grant_type", "refresh_token"), ("refresh_token", new_rt)],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = token(&sb, &c, &[("grant_type", "password")]).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
}

/// The whole authorization-code flow as one client walks it (consent, exchange, use, refresh,
/// reuse): long, but one story read top to bottom.
#[tokio::test]
async fn authorization_code_flow() {
    let (sb, c) = sandbox().await;
    let base = sb.base_url();
    let redirect = "http://localhost:9999/callback";
    let page = c
        .get(format!("{base}/oauth/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "relink-sandbox"),
            ("redirect_uri", redirect),
            ("scope", "pages.read,pages.write"),
            ("state", "st<1>"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("pages.write") && html.contains("st&lt;1&gt;") && html.contains("demo-page")
    );

    let mut form = vec![
        ("client_id", "relink-sandbox"),
        ("redirect_uri", redirect),
        ("scope", "pages.read,pages.write"),
        ("state", "st<1>"),
        ("code_challenge", "verifier-123"),
        ("code_challenge_method", "plain"),
        ("account_id", "page-7"),
        ("account_name", "Page Seven"),
        ("decision", "allow"),
    ];
    let r = c
        .post(format!("{base}/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: Form = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st<1>");
    let code = &q["code"];
    assert!(code.starts_with("sbx-code-"));

    let bad = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
    ];
    let r = token(&sb, &c, &bad).await;
    assert_eq!(r.status(), 400, "missing verifier");
    let good = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", "verifier-123"),
    ];
    let r = token(&sb, &c, &good).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["scope"], "pages.read pages.write");
    let at = v["access_token"].as_str().unwrap();
    assert_eq!(introspect(&sb, &c, at).await["username"], "Page Seven");
    let r = token(&sb, &c, &good).await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_grant",
        "code reused"
    );

    form.retain(|(k, _)| *k != "decision");
    form.push(("decision", "deny"));
    let r = c
        .post(format!("{base}/oauth/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=access_denied")
    );

    let r = c
        .get(format!(
            "{base}/oauth/authorize?response_type=code&client_id=evil&redirect_uri={redirect}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(calls_paths(&sb).iter().all(|p| p.starts_with("/oauth/")));
}

fn calls_paths(sb: &Sandbox) -> Vec<String> {
    sb.calls().into_iter().map(|c| c.path).collect()
}

#[tokio::test]
async fn wrong_secret_is_invalid_client() {
    let (sb, c) = sandbox().await;
    let t = sb.issue(grant("page-1", &["a"]));
    let r = c
        .post(format!("{}/oauth/introspect", sb.base_url()))
        .basic_auth("relink-sandbox", Some("nope"))
        .form(&[("token", t.access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = c
        .post(format!("{}/oauth/token", sb.base_url()))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn modes_and_calls() {
    let (sb, c) = sandbox().await;
    let t = sb.issue(grant("page-9", &["a"]));
    sb.set_mode(Mode::RetryAfter { seconds: 7 });
    let r = c
        .post(format!("{}/oauth/introspect", sb.base_url()))
        .basic_auth("relink-sandbox", Some("sandbox-secret"))
        .form(&[("token", t.access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    // Mode over the control API, JSON shape included.
    let r = c
        .post(format!("{}/sandbox/mode", sb.base_url()))
        .json(&json!({ "kind": "status", "code": 503 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sb.mode(), Mode::Status { code: 503 });
    assert_eq!(userinfo(&sb, &c, &t.access_token).await.status(), 503);
    sb.set_mode(Mode::Garbage);
    assert!(
        introspect_raw(&sb, &c, &t.access_token)
            .await
            .contains("oops")
    );
    sb.set_mode(Mode::Huge);
    assert!(introspect_raw(&sb, &c, &t.access_token).await.len() > HUGE_BODY_BYTES);
    sb.set_mode(Mode::Normal);

    let other = sb.issue(grant("page-10", &["a"]));
    introspect(&sb, &c, &other.access_token).await;
    let calls = sb.calls_for("page-9");
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 503, 200, 200]);
    assert_eq!(calls[0].path, "/oauth/introspect");
    assert_eq!(sb.calls().len(), 5);
    let over_http: Vec<Call> = c
        .get(format!("{}/sandbox/calls", sb.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http.len(), 5);
    sb.clear_calls();
    assert!(sb.calls().is_empty());

    // Control token issuance and a hanging request woken by shutdown.
    let issued: IssuedTokens = c
        .post(format!("{}/sandbox/tokens", sb.base_url()))
        .json(&json!({ "account_id": "p", "account_name": "P", "scopes": ["a"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(issued.refresh_token.is_some() && issued.expires_at.is_none());
    sb.set_mode(Mode::Hang);
    let pending = tokio::spawn(introspect_raw_owned(
        sb.clone(),
        c.clone(),
        issued.access_token,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sb.calls_for("p")[0].status, 0);
    sb.shutdown();
    tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("hang released")
        .expect("join");
}

async fn introspect_raw(sb: &Sandbox, c: &reqwest::Client, token: &str) -> String {
    let r = introspection(sb, c, token).await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

async fn introspect_raw_owned(sb: Sandbox, c: reqwest::Client, token: String) {
    let _ = c
        .post(format!("{}/oauth/introspect", sb.base_url()))
        .form(&[("token", token.as_str())])
        .send()
        .await;
}

async fn refresh_status(sb: &Sandbox, c: &reqwest::Client, rt: &str) -> (u16, Value) {
    let r = token(
        sb,
        c,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_family() {
    let (sb, c) = sandbox_with(SandboxConfig {
        reuse_detection: true,
        ..SandboxConfig::default()
    })
    .await;
    let t = sb.issue(grant("page-1", &["a"]));
    let rt1 = t.refresh_token.unwrap();
    let (status, v) = refresh_status(&sb, &c, &rt1).await;
    assert_eq!(status, 200);
    let rt2 = v["refresh_token"].as_str().unwrap().to_owned();
    let at2 = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(sb.families_revoked_for_reuse(), 0);

    // The spent token again: refused, and the whole family with it.
    let (status, v) = refresh_status(&sb, &c, &rt1).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(sb.families_revoked_for_reuse(), 1);
    assert_eq!(refresh_status(&sb, &c, &rt2).await.0, 400);
    assert_eq!(introspect(&sb, &c, &at2).await["active"], false);
    assert_eq!(sb.refresh_calls_for("page-1"), 3);
}

#[tokio::test]
async fn a_spent_refresh_token_works_within_the_grace_period() {
    let (sb, c) = sandbox_with(SandboxConfig {
        reuse_detection: true,
        reuse_grace: Duration::from_secs(60),
        ..SandboxConfig::default()
    })
    .await;
    let rt1 = sb.issue(grant("page-1", &["a"])).refresh_token.unwrap();
    assert_eq!(refresh_status(&sb, &c, &rt1).await.0, 200);
    let (status, v) = refresh_status(&sb, &c, &rt1).await;
    assert_eq!(status, 200, "{v}");
    let rt3 = v["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh_status(&sb, &c, &rt3).await.0, 200);
    assert_eq!(sb.families_revoked_for_reuse(), 0);
}

#[tokio::test]
async fn held_refresh_answers_wait_for_release_after_rotating() {
    let (sb, c) = sandbox().await;
    let rt1 = sb.issue(grant("page-1", &["a"])).refresh_token.unwrap();
    sb.hold_refreshes();
    let pending = tokio::spawn({
        let (sb, c, rt1) = (sb.clone(), c.clone(), rt1.clone());
        async move { refresh_status(&sb, &c, &rt1).await }
    });
    for _ in 0..100 {
        if sb.held_refreshes() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.held_refreshes(), 1);
    // Already rotated while the answer waits.
    assert_eq!(refresh_status(&sb, &c, &rt1).await.0, 400);
    sb.release_refreshes();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("released")
        .expect("join");
    assert_eq!(status, 200);
    assert_eq!(sb.held_refreshes(), 0);
}

#[tokio::test]
async fn a_refresh_mode_fails_only_refreshes() {
    let (sb, c) = sandbox().await;
    let t = sb.issue(grant("page-1", &["a"]));
    sb.set_refresh_mode(Some(Mode::Status { code: 503 }));
    let rt = t.refresh_token.unwrap();
    assert_eq!(refresh_status(&sb, &c, &rt).await.0, 503);
    assert_eq!(introspect(&sb, &c, &t.access_token).await["active"], true);
    sb.set_refresh_mode(None);
    assert_eq!(
        refresh_status(&sb, &c, &rt).await.0,
        200,
        "nothing was spent"
    );
}
