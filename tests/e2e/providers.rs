//! The built-in `facebook` and `google` providers end to end: the operator process checks
//! tokens against a local server that answers as Meta's Graph API and Google's OAuth endpoints
//! document (bodies, status codes, usage headers), with `spec.endpoints` pointing at it; the
//! verdicts are read back through the API as conditions, Events, re-authorization links and
//! Secret contents.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use relink::api::{AccountKind, ChannelConnectionStatus, ConditionType};

use crate::fakes::*;
use crate::fixtures::{Scenario, TestConnection, browser, open};
use crate::support;

fn cond(s: &ChannelConnectionStatus, t: ConditionType) -> (String, String) {
    let c = s
        .condition(t)
        .unwrap_or_else(|| panic!("condition {} present", t.as_str()));
    (c.status.clone(), c.reason.clone())
}

fn message(s: &ChannelConnectionStatus, t: ConditionType) -> String {
    s.condition(t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn query(link: &str) -> BTreeMap<String, String> {
    url::Url::parse(link)
        .expect("a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

async fn secret_data(sc: &Scenario, name: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(sc.client.clone(), &sc.ns)
        .get(name)
        .await
        .expect("secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// Waits until `Reconciling` says `ProviderUnavailable` with `needle` in its message.
async fn wait_unavailable(sc: &Scenario, name: &str, needle: &str) -> ChannelConnectionStatus {
    support::eventually(
        &format!("{name}: ProviderUnavailable mentioning {needle:?}"),
        Duration::from_secs(30),
        || async {
            let s = sc.status(name).await;
            let c = s.condition(ConditionType::Reconciling)?;
            (c.status == "True" && c.reason == "ProviderUnavailable" && c.message.contains(needle))
                .then_some(s)
        },
    )
    .await
}

/// Reasons of the `Warning` Events about `name`.
async fn warnings(sc: &Scenario, name: &str) -> Vec<String> {
    sc.events(name)
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect()
}

/// Waits for a `Warning` Event about `name` with `reason` whose note contains `words`.
async fn wait_warning_saying(sc: &Scenario, name: &str, reason: &str, words: &str) {
    support::eventually(
        &format!("Warning {reason} for {name} saying {words:?}"),
        Duration::from_secs(20),
        || async {
            sc.events(name)
                .await
                .into_iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(words))
                })
                .map(|_| ())
        },
    )
    .await
}

/// No verdict this time: `Ready`, `Stalled` and the re-authorization link are as they were
/// `before` the provider trouble, so nobody is asked to do anything.
fn assert_verdict_kept(before: &ChannelConnectionStatus, s: &ChannelConnectionStatus, what: &str) {
    assert_eq!(
        cond(s, ConditionType::Ready),
        cond(before, ConditionType::Ready),
        "{what}: Ready kept"
    );
    assert_eq!(cond(before, ConditionType::Ready).0, "True");
    assert_eq!(
        cond(s, ConditionType::Stalled).0,
        "False",
        "{what}: nobody is asked to act"
    );
    assert_eq!(s.reauth_url, before.reauth_url, "{what}: link unchanged");
    assert!(s.consecutive_failures >= 1, "{what}: failure counted");
}

/// The next check of `s` is about ten minutes after the last one, and no call comes meanwhile.
async fn assert_holds_off(sc: &Scenario, fake: &Fake, s: &ChannelConnectionStatus, what: &str) {
    let last = s.last_check_time.clone().expect("checked").0;
    let next = s.next_check_time.clone().expect("next check").0;
    let wait = next.duration_since(last).as_secs();
    assert!(
        wait >= 590,
        "{what}: the next check waits about 10 minutes, not {wait}s"
    );
    let calls = fake.calls("/debug_token").len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fake.calls("/debug_token").len(),
        calls,
        "{what}: no retries meanwhile"
    );
    assert_eq!(
        sc.status("chan").await.last_check_time.map(|t| t.0),
        Some(last)
    );
}

/// Every token, code and secret of the scenario joins the leak check, which then runs.
async fn assert_nothing_leaked(sc: &mut Scenario, fake: &Fake) {
    sc.tokens.extend(fake.issued());
    sc.assert_no_token_leaked().await;
}

// ---------------------------------------------------------------------------------------------
// Facebook.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_page_token_is_valid_then_password_change_turns_it_stalled() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-password").await;
    let user_token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    let page_token = fake.facebook_page_token(PAGE, &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &user_token)]).await;
    facebook_connection(&sc, "page", &[("access_token", &page_token)]).await;

    let s = sc.wait_ready_reason("chan", "Valid").await;
    let facts = fake.meta_facts(&user_token).expect("issued");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "False");
    assert_eq!(s.granted_scopes, FB_SCOPES);
    assert!(s.missing_scopes.is_empty());
    // A user token reports the person; the Page is among the granted targets.
    let account = s.account.clone().expect("account reported");
    assert_eq!(account.id.as_deref(), Some(FB_USER));
    assert_eq!(
        s.data_access_expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.data_access_expires_at),
        "the 90-day data access clock is shown"
    );
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.expires_at)
    );
    assert_eq!(s.reauth_url, None);
    // debug_token is asked with the app access token, the user token only as input_token.
    let app_token = format!("{FB_APP}|{}", fake.app_secret());
    let calls = fake.calls("/debug_token");
    assert!(
        calls
            .iter()
            .all(|c| c.params.get("access_token") == Some(&app_token)),
        "every debug_token call authenticates as the app"
    );
    assert!(fake.sent("/debug_token", "input_token", &user_token));

    // A Page token acts as the Page and never expires (`expires_at: 0`).
    let s = sc.wait_ready_reason("page", "Valid").await;
    let page_account = s.account.clone().expect("account");
    assert_eq!(
        page_account.id.as_deref(),
        Some(PAGE),
        "a Page token reports the Page (profile_id)"
    );
    assert_eq!(
        page_account.name.as_deref(),
        Some(PAGE_NAME),
        "the ACCOUNT column names the Page (GET /{{page-id}}?fields=name)"
    );
    let named = fake.calls("/node").len();
    let asked = sc.request_check("page").await;
    support::eventually(
        "a second check of the page",
        Duration::from_secs(20),
        || async {
            let s = sc.status("page").await;
            (s.last_handled_check_request.as_deref() == Some(asked.as_str())).then_some(())
        },
    )
    .await;
    assert_eq!(
        fake.calls("/node").len(),
        named,
        "the name is asked once, then kept in status"
    );
    assert_eq!(s.expires_at, None, "expires_at 0 means never");
    assert!(s.data_access_expires_at.is_some());

    // The person changes their Facebook password: Meta invalidates the session.
    fake.set_meta(&user_token, MetaAnswer::password_changed());
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "False");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "Revoked".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "Revoked".into())
    );
    assert_eq!(cond(&s, ConditionType::Reconciling).0, "False");
    let ready = message(&s, ConditionType::Ready);
    assert!(ready.contains("password"), "{ready}");
    assert!(ready.contains("460"), "{ready}");
    let warning = sc.wait_event("chan", "Warning", "Revoked").await;
    assert!(
        warning.note.unwrap_or_default().contains("password"),
        "the Event says why"
    );

    // The link asks Facebook for the same permissions again, comma-separated, at the
    // overridden dialog; Facebook has no PKCE.
    let link = s.reauth_url.clone().expect("a re-authorization link");
    assert!(
        link.starts_with(&format!("{}?", fake.url(FB_DIALOG))),
        "{link}"
    );
    let q = query(&link);
    assert_eq!(q["client_id"], FB_APP);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], DEFAULT_CALLBACK);
    assert_eq!(
        q["scope"],
        "pages_show_list,pages_manage_posts,pages_read_engagement"
    );
    assert_eq!(q["auth_type"], "rerequest");
    assert!(q.contains_key("state"));
    assert!(!q.contains_key("code_challenge"), "no PKCE at Facebook");
    assert!(
        !link.contains(&fake.app_secret()),
        "no app secret in the link"
    );

    // The Page token of the same person is another connection: untouched.
    let page = sc.status("page").await;
    assert_eq!(cond(&page, ConditionType::Ready).1, "Valid");
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_page_removed_from_grant_is_account_mismatch() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-mismatch").await;
    let token = fake.facebook_user_token(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    // Business settings: the person takes the Page away from the app; the token still works.
    fake.edit_meta(&token, |t| t.pages = vec![OTHER_PAGE.into()]);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "AccountMismatch").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "AccountMismatch".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into()),
        "the permissions themselves are still granted"
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "AccountMismatch".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains(PAGE), "names the Page: {m}");
    let link = s
        .reauth_url
        .clone()
        .expect("the person must log in and pick the Page");
    assert!(link.starts_with(&fake.url(FB_DIALOG)));
    sc.wait_event("chan", "Warning", "AccountMismatch").await;

    // The Page is picked again.
    fake.edit_meta(&token, |t| t.pages = vec![PAGE.into(), OTHER_PAGE.into()]);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None, "link withdrawn once healthy");
    assert_eq!(
        warnings(&sc, "chan").await,
        ["AccountMismatch"],
        "one Warning for the one bad transition"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_removed_permission_is_scopes_missing() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-scopes").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    // The person removes "manage posts" from the app's permissions on Facebook.
    fake.edit_meta(&token, |t| t.scopes.retain(|s| s != "pages_manage_posts"));
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "ScopesMissing").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into()),
        "the token itself works"
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("False".into(), "ScopesMissing".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(s.missing_scopes, ["pages_manage_posts"]);
    let link = s.reauth_url.expect("re-consent link");
    assert_eq!(
        query(&link)["scope"],
        "pages_show_list,pages_manage_posts,pages_read_engagement"
    );
    sc.wait_event("chan", "Warning", "ScopesMissing").await;
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_rate_limit_keeps_the_verdict() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-ratelimit").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let healthy = sc.wait_ready_reason("chan", "Valid").await;

    // Meta throttles the app: code 4, is_transient, X-App-Usage at 100 %. Retrying within
    // seconds cannot help before Meta's hour-long window moves: relink waits about ten minutes.
    fake.set_meta(&token, MetaAnswer::RateLimited);
    sc.request_check("chan").await;
    let s = wait_unavailable(&sc, "chan", "Application request limit reached").await;
    assert_verdict_kept(&healthy, &s, "code 4");
    assert_holds_off(&sc, &fake, &s, "code 4 at 100% usage").await;

    // Throttling lifts but the app is at 97 % of its limit: the token works, yet relink holds
    // off instead of pushing every channel of the app over the limit.
    fake.set_app_usage(97);
    fake.set_meta(&token, MetaAnswer::Valid);
    sc.request_check("chan").await;
    let s = wait_unavailable(&sc, "chan", "97%").await;
    assert_verdict_kept(&healthy, &s, "X-App-Usage 97%");
    assert_holds_off(&sc, &fake, &s, "97% usage").await;

    // Usage back to normal; a check clears the failure without a Ready transition.
    fake.set_app_usage(12);
    sc.request_check("chan").await;
    sc.wait_condition("chan", ConditionType::Reconciling, "Valid")
        .await;
    let s = sc.status("chan").await;
    assert_eq!(s.consecutive_failures, 0);
    let w = warnings(&sc, "chan").await;
    assert!(
        w.iter().all(|r| r == "ProviderUnavailable"),
        "no owner-facing Warning, only provider trouble: {w:?}"
    );
    let valid_events = sc
        .events("chan")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Valid"))
        .count();
    assert_eq!(
        valid_events, 0,
        "Ready never changed (and a first Valid is no news), so no Valid Event"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_checkpoint_needs_the_user_on_facebook() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-checkpoint").await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;

    for (i, (answer, words)) in [
        (MetaAnswer::checkpointed(), "checkpoint"),
        (MetaAnswer::unconfirmed(), "confirm"),
    ]
    .into_iter()
    .enumerate()
    {
        fake.set_meta(&token, answer);
        sc.request_check("chan").await;
        let s = sc.wait_ready_reason("chan", "AccountActionRequired").await;
        assert_eq!(
            cond(&s, ConditionType::TokenValid),
            ("False".into(), "AccountActionRequired".into())
        );
        assert_eq!(
            cond(&s, ConditionType::Stalled),
            ("True".into(), "AccountActionRequired".into()),
            "a person must act"
        );
        let m = message(&s, ConditionType::Ready);
        assert!(m.contains(words) && m.contains("Facebook"), "{m}");
        if i == 0 {
            wait_warning_saying(&sc, "chan", "AccountActionRequired", words).await;
        } else {
            // Same reason again: the Event recorder counts it in the first Event's series
            // (keeping that Event's note); the condition above carries the new cause.
            support::eventually(
                "a second AccountActionRequired",
                Duration::from_secs(20),
                || async {
                    sc.events("chan")
                        .await
                        .into_iter()
                        .find(|e| {
                            e.reason.as_deref() == Some("AccountActionRequired")
                                && e.series.as_ref().is_some_and(|s| s.count >= 2)
                        })
                        .map(|_| ())
                },
            )
            .await;
        }

        // The owner clears it on Facebook; the same token works again.
        fake.set_meta(&token, MetaAnswer::Valid);
        sc.request_check("chan").await;
        sc.wait_ready_reason("chan", "Valid").await;
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_lapsed_data_access_needs_reauthorization() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-dataaccess").await;
    // The person has not used the app for 90 days: Meta still authenticates the token, but the
    // app may no longer act on their Pages.
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    fake.edit_meta(&token, |t| t.data_access_expires_at = now() - 3600);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let s = sc
        .wait_ready_reason("chan", "ReauthorizationRequired")
        .await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "False");
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "ReauthorizationRequired".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("data") && m.contains("90 days"), "{m}");
    let link = s.reauth_url.expect("a person must log in again");
    assert!(link.starts_with(&fake.url(FB_DIALOG)));
    sc.wait_event("chan", "Warning", "ReauthorizationRequired")
        .await;

    // They log in again: a fresh 90 days.
    fake.edit_meta(&token, |t| t.data_access_expires_at = now() + 90 * 86_400);
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.data_access_expires_at.is_some());
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_expiring_user_token_is_exchanged_for_a_long_lived_one() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-exchange").await;
    // A user token with two hours left, its expiry recorded next to it.
    let token = fake.meta_token(MetaToken::user(FB_USER, &[PAGE], &FB_SCOPES, 7200));
    let expires = fake.meta_facts(&token).expect("issued").expires_at;
    facebook_connection(
        &sc,
        "chan",
        &[
            ("access_token", &token),
            ("expires_at", &expires.to_string()),
        ],
    )
    .await;
    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert!(s.last_refresh_time.is_some(), "renewed");
    let data = secret_data(&sc, "chan-token").await;
    let new = data["access_token"].clone();
    assert!(new != token, "a new token was written");
    let facts = fake.meta_facts(&new).expect("a token the fake issued");
    assert!(
        facts.expires_at - now() > 59 * 86_400,
        "the long-lived (60-day) token"
    );
    let written: jiff::Timestamp = data["expires_at"].parse().expect("RFC 3339 expiry");
    assert!((written.as_second() - facts.expires_at).abs() < 60);
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(facts.expires_at)
    );
    // One GET oauth/access_token with grant_type=fb_exchange_token and the app secret; then
    // only the new token is inspected.
    let exchanges = fake.calls("/oauth/access_token");
    assert_eq!(exchanges.len(), 1);
    let p = &exchanges[0].params;
    assert_eq!(p["grant_type"], "fb_exchange_token");
    assert_eq!(p["client_id"], FB_APP);
    assert!(p["client_secret"] == fake.app_secret() && p["fb_exchange_token"] == token);
    assert!(!fake.sent("/debug_token", "input_token", &token));
    assert!(fake.sent("/debug_token", "input_token", &new));
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_revoked_token_is_restored_through_the_reauth_link() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("fb-reauth").callback().start().await;
    let public = sc.public_url.clone().expect("callback served");
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(
        &sc,
        "chan",
        &[("access_token", &token), ("note", "kept by relink")],
    )
    .await;
    sc.wait_ready_reason("chan", "Valid").await;
    fake.set_meta(&token, MetaAnswer::logged_out());
    sc.request_check("chan").await;
    let s = sc.wait_ready_reason("chan", "Revoked").await;
    let link = s.reauth_url.expect("link");
    assert_eq!(
        query(&link)["redirect_uri"],
        format!("{public}/oauth/callback")
    );

    // First the person picks only their other Page: refused before anything is written.
    fake.next_facebook_login(&[OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains(PAGE), "{page}");
    assert!(
        secret_data(&sc, "chan-token").await["access_token"] == token,
        "the Secret is unchanged"
    );

    // Then they pick the right Page, with the link that replaced the used one.
    let link = sc.status("chan").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login(&[PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    assert!(callback.starts_with(&format!("{public}/oauth/callback?")));
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("connected again"), "{page}");

    let s = sc.wait_ready_reason("chan", "Valid").await;
    assert_eq!(s.reauth_url, None);
    let data = secret_data(&sc, "chan-token").await;
    let new = data["access_token"].clone();
    assert!(new != token, "new token written");
    assert_eq!(data["note"], "kept by relink", "other keys untouched");
    // The code bought a short-lived token, exchanged at once for the 60-day one, and with it
    // the Page's own token: what a Page connection needs to publish.
    let facts = fake.meta_facts(&new).expect("a token the fake issued");
    assert_eq!(
        (facts.kind, facts.pages.first().map(String::as_str)),
        ("PAGE", Some(PAGE)),
        "the Page token is stored, not the person's user token"
    );
    assert_eq!(
        facts.expires_at, 0,
        "a Page token of a long-lived user token never expires"
    );
    assert!(
        !data.contains_key("expires_at"),
        "no expiry recorded for it"
    );
    assert_eq!(
        s.account.as_ref().and_then(|a| a.name.as_deref()),
        Some(PAGE_NAME),
        "the ACCOUNT column names the Page"
    );
    let calls = fake.calls("/oauth/access_token");
    let code_calls: Vec<_> = calls
        .iter()
        .filter(|c| c.params.contains_key("code"))
        .collect();
    assert_eq!(code_calls.len(), 2, "one code per login");
    assert!(
        code_calls.iter().all(
            |c| c.params["redirect_uri"] == format!("{public}/oauth/callback")
                && c.params["client_secret"] == fake.app_secret()
        ),
        "code exchanged with the same redirect_uri and the app secret"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.params.get("grant_type").map(String::as_str) == Some("fb_exchange_token")),
        "short-lived token exchanged"
    );
    sc.wait_event("chan", "Normal", "Valid").await;
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_facebook_login_heals_every_page_it_grants() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let smtp = sink.url();
    let mut sc = crate::notify::mailing("fb-heal", &smtp)
        .callback()
        .start()
        .await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    // Two Pages of one admin, each connection with its own Page token.
    let first = fake.facebook_page_token(PAGE, &FB_SCOPES);
    let second = fake.facebook_page_token(OTHER_PAGE, &FB_SCOPES);
    facebook_connection(&sc, "acme", &[("access_token", &first)]).await;
    sc.secret("outlet-token", &[("access_token", &second)])
        .await;
    sc.apply_connection("outlet", facebook_page("outlet-token", OTHER_PAGE))
        .await;
    sc.wait_ready_reason("acme", "Valid").await;
    sc.wait_ready_reason("outlet", "Valid").await;

    // The admin changes their password: both Pages die at once.
    fake.set_meta(&first, MetaAnswer::password_changed());
    fake.set_meta(&second, MetaAnswer::password_changed());
    // Their checks find it one after the other, as scheduled checks do.
    sc.request_check("acme").await;
    let link = sc
        .wait_ready_reason("acme", "Revoked")
        .await
        .reauth_url
        .expect("link");
    sc.request_check("outlet").await;
    sc.wait_ready_reason("outlet", "Revoked").await;
    // The owner's mail offers one login for both: the later one names the other Page.
    let mails = support::eventually("two mails", Duration::from_secs(30), || async {
        let m = sink.mails();
        (m.len() >= 2).then_some(m)
    })
    .await;
    assert!(
        mails.iter().any(|m| {
            let t = m.text();
            t.contains("also reconnects") && t.contains(&format!("{PAGE} display"))
        }),
        "the outlet's mail names the other broken Page"
    );

    // One login through the first Page's link, granting both Pages, heals both.
    fake.next_facebook_login(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("also reconnected: outlet"), "{page}");
    for (name, secret, id, page_name) in [
        ("acme", "acme-token", PAGE, PAGE_NAME),
        ("outlet", "outlet-token", OTHER_PAGE, OTHER_PAGE_NAME),
    ] {
        let s = sc.wait_ready_reason(name, "Valid").await;
        assert_eq!(s.reauth_url, None, "{name}: the link is withdrawn");
        assert_eq!(
            s.account.as_ref().and_then(|a| a.name.as_deref()),
            Some(page_name)
        );
        let token = secret_data(&sc, secret).await["access_token"].clone();
        let facts = fake.meta_facts(&token).expect("a token the fake issued");
        assert_eq!(
            (facts.kind, facts.pages.first().map(String::as_str)),
            ("PAGE", Some(id)),
            "{name}: its own Page's token"
        );
        sc.tokens.push(token);
        let e = sc.wait_event(name, "Normal", "Reauthorized").await;
        assert!(e.note.unwrap_or_default().contains(id), "{name}");
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// Two Pages of one admin die together (a password change): with a batching window their owner
/// gets one email with one link, and one login through it reconnects both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_broken_together_get_one_email_with_one_link() {
    if support::skip() {
        return;
    }
    let sink = crate::notify::SmtpSink::start("127.0.0.1:0").await;
    let smtp = sink.url();
    let mut sc = crate::notify::mailing("fb-group", &smtp)
        .callback()
        .flag("--notification-batch-window", "10s")
        .start()
        .await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let first = fake.facebook_page_token(PAGE, &FB_SCOPES);
    let second = fake.facebook_page_token(OTHER_PAGE, &FB_SCOPES);
    facebook_connection(&sc, "acme", &[("access_token", &first)]).await;
    sc.secret("outlet-token", &[("access_token", &second)])
        .await;
    sc.apply_connection("outlet", facebook_page("outlet-token", OTHER_PAGE))
        .await;
    sc.wait_ready_reason("acme", "Valid").await;
    sc.wait_ready_reason("outlet", "Valid").await;

    fake.set_meta(&first, MetaAnswer::password_changed());
    fake.set_meta(&second, MetaAnswer::password_changed());
    sc.request_check("acme").await;
    sc.request_check("outlet").await;
    let mut links = Vec::new();
    for name in ["acme", "outlet"] {
        let s = sc.wait_ready_reason(name, "Revoked").await;
        links.push(s.reauth_url.expect("link"));
        sc.wait_event(name, "Normal", "NotificationSent").await;
    }
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "one email for both Pages");
    assert!(
        mails[0]
            .subject()
            .contains("2 Facebook pages need you to log in again"),
        "{}",
        mails[0].subject()
    );
    let text = mails[0].text();
    assert!(text.contains("One login reconnects every one of them"));
    let offered: Vec<&String> = links.iter().filter(|l| text.contains(l.as_str())).collect();
    assert_eq!(offered.len(), 1, "one link for both");

    // That one link heals both.
    fake.next_facebook_login(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let (status, page) = open(&follow_dialog(offered[0]).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("also reconnected"), "{page}");
    for (name, secret) in [("acme", "acme-token"), ("outlet", "outlet-token")] {
        sc.wait_ready_reason(name, "Valid").await;
        sc.tokens
            .push(secret_data(&sc, secret).await["access_token"].clone());
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// An Instagram business account reached through its Facebook Page (`spec.account.kind:
/// InstagramBusiness`) holds the Page's token: the check names the account by its username, a
/// login that manages no Page linked to it is refused, and the Page's manager gets the Page's
/// token written, healing the Page's own broken connection with the same login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_business_account_holds_its_pages_token() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("fb-ig").callback().start().await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let ig_token = fake.facebook_page_token(PAGE, &IG_SCOPES);
    let page_token = fake.facebook_page_token(PAGE, &IG_SCOPES);
    sc.secret("insta-token", &[("access_token", &ig_token)])
        .await;
    let insta = TestConnection::default()
        .provider("facebook")
        .secret("insta-token")
        .account(IG_ACCOUNT)
        .kind(AccountKind::InstagramBusiness)
        .requires(&IG_REQUIRED);
    sc.apply_connection("insta", insta).await;
    facebook_connection(&sc, "acme", &[("access_token", &page_token)]).await;
    let s = sc.wait_ready_reason("insta", "Valid").await;
    let account = s.account.clone().unwrap_or_default();
    assert_eq!(
        (account.id.as_deref(), account.name.as_deref()),
        (Some(IG_ACCOUNT), Some(IG_USERNAME)),
        "the ACCOUNT column names the Instagram account"
    );
    assert_eq!(cond(&s, ConditionType::ScopesGranted).0, "True");
    sc.wait_ready_reason("acme", "Valid").await;

    // The admin changes their password: the Page tokens of both channels die.
    fake.set_meta(&ig_token, MetaAnswer::password_changed());
    fake.set_meta(&page_token, MetaAnswer::password_changed());
    sc.request_check("acme").await;
    sc.wait_ready_reason("acme", "Revoked").await;
    sc.request_check("insta").await;
    let link = sc
        .wait_ready_reason("insta", "Revoked")
        .await
        .reauth_url
        .expect("link");

    // Someone who manages only a Page without that Instagram account: refused, nothing written.
    fake.next_facebook_login(&[OTHER_PAGE], &IG_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("manages no Facebook Page linked to the Instagram account"),
        "{page}"
    );
    assert_eq!(
        secret_data(&sc, "insta-token").await["access_token"],
        ig_token
    );

    // The Page's manager: the Page's token is written, and the Page's connection healed too.
    let link = sc.status("insta").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login(&[PAGE], &IG_SCOPES);
    let (status, page) = open(&follow_dialog(&link).await).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(IG_USERNAME), "{page}");
    assert!(page.contains("also reconnected: acme"), "{page}");
    assert!(
        fake.calls("/me/accounts").iter().any(|c| c
            .params
            .get("fields")
            .is_some_and(|f| f.contains("instagram_business_account"))),
        "the managed Pages were listed"
    );
    for (name, secret) in [("insta", "insta-token"), ("acme", "acme-token")] {
        let s = sc.wait_ready_reason(name, "Valid").await;
        assert_eq!(s.reauth_url, None, "{name}: the link is withdrawn");
        let token = secret_data(&sc, secret).await["access_token"].clone();
        let facts = fake.meta_facts(&token).expect("a token the fake issued");
        assert_eq!(
            (facts.kind, facts.pages.first().map(String::as_str)),
            ("PAGE", Some(PAGE)),
            "{name}: the Page's token, not the person's"
        );
        sc.tokens.push(token);
    }
    let s = sc.status("insta").await;
    assert_eq!(s.account.and_then(|a| a.name).as_deref(), Some(IG_USERNAME));
    assert_nothing_leaked(&mut sc, &fake).await;
}

/// Opens a re-authorization link at the fake Facebook dialog and returns where it redirects.
/// A login that grants the Page permissions for every Page names no Page: relink asks the Page
/// itself (`GET /{page-id}?fields=id,name,access_token`) and writes only a login that manages it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_login_for_every_page_is_confirmed_with_the_page() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("fb-allpages").callback().start().await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    sc.wait_ready_reason("chan", "Valid").await;
    fake.set_meta(&token, MetaAnswer::logged_out());
    sc.request_check("chan").await;
    let link = sc
        .wait_ready_reason("chan", "Revoked")
        .await
        .reauth_url
        .expect("link");

    // Someone who manages only another Page logs in with "all Pages": refused, nothing written.
    fake.next_facebook_login_for_all_pages(&[OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains(PAGE), "{page}");
    assert_eq!(secret_data(&sc, "chan-token").await["access_token"], token);
    assert!(
        fake.calls("/node").iter().any(|c| c
            .params
            .get("fields")
            .is_some_and(|f| f.contains("access_token"))),
        "the Page was asked"
    );

    // A manager of the Page, also with "all Pages": confirmed by the Page, written.
    let link = sc.status("chan").await.reauth_url.expect("a fresh link");
    fake.next_facebook_login_for_all_pages(&[PAGE, OTHER_PAGE], &FB_SCOPES);
    let callback = follow_dialog(&link).await;
    let (status, page) = open(&callback).await;
    assert_eq!(status, 200, "{page}");
    sc.wait_event("chan", "Normal", "Reauthorized").await;
    assert_ne!(secret_data(&sc, "chan-token").await["access_token"], token);
    assert_nothing_leaked(&mut sc, &fake).await;
}

async fn follow_dialog(link: &str) -> String {
    let resp = browser().get(link).send().await.expect("dialog answers");
    assert_eq!(resp.status().as_u16(), 302, "the dialog redirects back");
    resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facebook_wrong_app_secret_is_the_providers_problem() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = facebook_scenario("fb-appsecret").await;
    sc.secret(
        "facebook-client",
        &[("client_secret", "not-the-app-secret")],
    )
    .await;
    let token = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    facebook_connection(&sc, "chan", &[("access_token", &token)]).await;
    let s = sc.wait_ready_reason("chan", "ProviderNotReady").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid).0,
        "Unknown",
        "nothing is known about the token"
    );
    assert_eq!(s.reauth_url, None, "a new login would not help");
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("app secret") || m.contains("clientId"), "{m}");
    assert!(
        !m.contains("not-the-app-secret"),
        "the secret is not echoed"
    );

    // The administrator fixes the secret; the next check is Valid.
    let secret = fake.app_secret();
    sc.secret("facebook-client", &[("client_secret", &secret)])
        .await;
    sc.request_check("chan").await;
    sc.wait_ready_reason("chan", "Valid").await;
    sc.tokens.push("not-the-app-secret".into());
    assert_nothing_leaked(&mut sc, &fake).await;
}

// ---------------------------------------------------------------------------------------------
// Google.
// ---------------------------------------------------------------------------------------------

const GMAIL_SCOPES: [&str; 3] = ["openid", USERINFO_EMAIL, GMAIL_READ];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_mailbox_token_valid_then_revoked() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-revoked").await;
    let (access, _refresh) = fake.google_tokens(&GMAIL_SCOPES);
    google_connection(&sc, "mail", &[("access_token", &access)]).await;

    // Google access tokens live an hour; without a refresh token a person must re-authorize
    // before then: Ready, but Expiring.
    let s = sc.wait_ready_reason("mail", "Expiring").await;
    assert_eq!(cond(&s, ConditionType::Ready).0, "True");
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "False");
    let account = s.account.clone().expect("account");
    assert_eq!(
        account.id.as_deref(),
        Some(MAILBOX),
        "the mailbox is the account"
    );
    assert_eq!(account.name.as_deref(), Some(MAILBOX));
    assert_eq!(s.granted_scopes, GMAIL_SCOPES);
    let exp = fake.world().google[&access].exp;
    assert_eq!(s.expires_at.as_ref().map(|t| t.0.as_second()), Some(exp));
    assert_eq!(s.data_access_expires_at, None);
    assert!(fake.sent("/tokeninfo", "access_token", &access));
    sc.wait_event("mail", "Normal", "Expiring").await;

    // The person removes the app at myaccount.google.com; no refresh token is stored.
    fake.set_google(&access, GoogleAnswer::Revoked);
    sc.request_check("mail").await;
    let s = sc.wait_ready_reason("mail", "Revoked").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("False".into(), "Revoked".into())
    );
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "Revoked".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("invalid_token"), "{m}");
    sc.wait_event("mail", "Warning", "Revoked").await;

    // The link: Google's preset (offline access, consent screen, PKCE, default scopes first).
    let link = s.reauth_url.expect("link");
    assert!(
        link.starts_with(&fake.url("/google/o/oauth2/v2/auth?")),
        "{link}"
    );
    let q = query(&link);
    assert_eq!(q["client_id"], GOOGLE_CLIENT);
    assert_eq!(q["scope"], format!("openid email {GMAIL_READ}"));
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q.contains_key("code_challenge") && q.contains_key("state"));
    assert!(fake.calls("/token").is_empty(), "nothing to refresh with");
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_missing_gmail_scope_is_scopes_missing() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-scopes").await;
    // Granular consent: the person unticked "read your email" and kept "send".
    let (access, _refresh) = fake.google_tokens(&["openid", USERINFO_EMAIL, GMAIL_SEND]);
    google_connection(&sc, "mail", &[("access_token", &access)]).await;
    let s = sc.wait_ready_reason("mail", "ScopesMissing").await;
    assert_eq!(
        cond(&s, ConditionType::TokenValid),
        ("True".into(), "Valid".into())
    );
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("False".into(), "ScopesMissing".into())
    );
    assert_eq!(cond(&s, ConditionType::Stalled).0, "True");
    assert_eq!(s.missing_scopes, [GMAIL_READ]);
    assert!(message(&s, ConditionType::Ready).contains(GMAIL_READ));
    assert!(s.reauth_url.is_some());
    sc.wait_event("mail", "Warning", "ScopesMissing").await;

    // Consent given in full.
    fake.edit_google(&access, |t| t.scopes.push(GMAIL_READ.into()));
    sc.request_check("mail").await;
    let s = sc.wait_ready_reason("mail", "Expiring").await;
    assert!(s.missing_scopes.is_empty());
    assert_eq!(
        cond(&s, ConditionType::ScopesGranted),
        ("True".into(), "Valid".into())
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_expired_access_token_is_refreshed() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-refresh").await;

    // Expiry recorded in the Secret and passed: refreshed before any check.
    let (old, refresh) = fake.google_tokens(&GMAIL_SCOPES);
    let past = now() - 60;
    fake.edit_google(&old, |t| t.exp = past);
    google_connection(
        &sc,
        "mail",
        &[
            ("access_token", &old),
            ("refresh_token", &refresh),
            ("expires_at", &past.to_string()),
            ("other", "x"),
        ],
    )
    .await;
    let s = sc.wait_ready_reason("mail", "Valid").await;
    assert!(s.last_refresh_time.is_some(), "refreshed");
    let data = secret_data(&sc, "mail-token").await;
    let new = data["access_token"].clone();
    assert!(new != old, "new access token written");
    assert!(new.starts_with("ya29."));
    assert!(
        data["refresh_token"] == refresh,
        "Google keeps the refresh token"
    );
    assert_eq!(data["other"], "x", "other keys untouched");
    let written: jiff::Timestamp = data["expires_at"].parse().expect("RFC 3339 expiry");
    assert!(written.as_second() > now() + 3000, "about an hour ahead");
    assert_eq!(
        s.expires_at.as_ref().map(|t| t.0.as_second()),
        Some(fake.world().google[&new].exp)
    );
    let refreshes = fake.calls("/token");
    assert_eq!(refreshes.len(), 1);
    let p = &refreshes[0].params;
    assert_eq!(p["grant_type"], "refresh_token");
    assert_eq!(p["client_id"], GOOGLE_CLIENT);
    assert!(
        p["refresh_token"] == refresh && p["client_secret"] == fake.google_secret(),
        "refresh token and client secret sent in the form"
    );
    assert!(
        !fake.sent("/tokeninfo", "access_token", &old),
        "the known-expired token is not even checked"
    );
    assert!(fake.sent("/tokeninfo", "access_token", &new));

    // No recorded expiry: tokeninfo rejects the token, one refresh before telling anyone.
    let (old2, refresh2) = fake.google_tokens(&GMAIL_SCOPES);
    fake.edit_google(&old2, |t| t.exp = now() - 60);
    google_connection(
        &sc,
        "other",
        &[("access_token", &old2), ("refresh_token", &refresh2)],
    )
    .await;
    let s = sc.wait_ready_reason("other", "Valid").await;
    assert!(s.last_refresh_time.is_some());
    assert!(fake.sent("/tokeninfo", "access_token", &old2));
    assert!(secret_data(&sc, "other-token").await["access_token"] != old2);
    assert_eq!(
        warnings(&sc, "other").await,
        Vec::<String>::new(),
        "nobody was told about a token relink renewed itself"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_revoked_refresh_token_asks_for_login() {
    if support::skip() {
        return;
    }
    let (mut sc, fake) = google_scenario("g-deadgrant").await;
    let (access, refresh) = fake.google_tokens(&GMAIL_SCOPES);
    fake.set_google(&access, GoogleAnswer::Revoked);
    fake.revoke_refresh(&refresh);
    google_connection(
        &sc,
        "mail",
        &[("access_token", &access), ("refresh_token", &refresh)],
    )
    .await;
    let s = sc.wait_ready_reason("mail", "RefreshFailed").await;
    assert_eq!(
        cond(&s, ConditionType::Stalled),
        ("True".into(), "RefreshFailed".into())
    );
    let m = message(&s, ConditionType::Ready);
    assert!(m.contains("invalid_grant"), "{m}");
    let link = s.reauth_url.expect("a link to log in again");
    assert_eq!(query(&link)["prompt"], "consent");
    assert_eq!(fake.calls("/token").len(), 1, "one refresh attempt");
    sc.wait_event("mail", "Warning", "RefreshFailed").await;
    assert!(
        secret_data(&sc, "mail-token").await["refresh_token"] == refresh,
        "nothing deleted"
    );
    assert_nothing_leaked(&mut sc, &fake).await;
}

// ---------------------------------------------------------------------------------------------
// Both.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_outage_or_garbage_never_turns_a_channel_invalid() {
    if support::skip() {
        return;
    }
    let mut sc = Scenario::builder("fbg-outage").start().await;
    let fake = Fake::start().await;
    facebook_provider(&sc, &fake).await;
    google_provider(&sc, &fake).await;
    let fb = fake.facebook_user_token(&[PAGE], &FB_SCOPES);
    let (g, _refresh) = fake.google_tokens(&GMAIL_SCOPES);
    facebook_connection(&sc, "page", &[("access_token", &fb)]).await;
    google_connection(&sc, "mail", &[("access_token", &g)]).await;
    let page = sc.wait_ready_reason("page", "Valid").await;
    // An hour-long Google access token with no refresh token works but needs a person soon.
    let mail = sc.wait_ready_reason("mail", "Expiring").await;

    let modes = [
        (
            MetaAnswer::Unavailable,
            GoogleAnswer::Unavailable,
            "HTTP 503",
            "HTTP 503",
        ),
        (
            MetaAnswer::Garbage,
            GoogleAnswer::Garbage,
            "unreadable body",
            "unreadable body",
        ),
    ];
    for (meta, google, fb_says, g_says) in modes {
        fake.set_meta(&fb, meta.clone());
        fake.set_google(&g, google);
        sc.request_check("page").await;
        sc.request_check("mail").await;
        let s = wait_unavailable(&sc, "page", fb_says).await;
        assert_verdict_kept(&page, &s, &format!("facebook {meta:?}"));
        let s = wait_unavailable(&sc, "mail", g_says).await;
        assert_verdict_kept(&mail, &s, &format!("google {google:?}"));
    }
    fake.set_meta(&fb, MetaAnswer::Valid);
    fake.set_google(&g, GoogleAnswer::Valid);
    for name in ["page", "mail"] {
        sc.request_check(name).await;
        sc.wait_condition(name, ConditionType::Reconciling, "Valid")
            .await;
        let w = warnings(&sc, name).await;
        assert!(
            w.iter().all(|r| r == "ProviderUnavailable"),
            "{name}: only provider trouble reported: {w:?}"
        );
    }
    assert_nothing_leaked(&mut sc, &fake).await;
}
