//! Instagram business accounts reached through Facebook Login: the account is linked to one
//! Facebook Page, and publishing to it needs that Page's token. A login proves it can act for
//! the account when `GET /me/accounts` (the Pages the person manages, with their tokens) lists a
//! Page whose `instagram_business_account` is it; a stored Page token still reaches it while
//! `GET /{page-id}?fields=instagram_business_account` names it.

use serde::Deserialize;

use super::super::answer::de_string;
use super::super::meta::{self, Answer, Class};
use super::super::{App, Grant, Http, Token, Verdict};
use crate::api::ReportedAccount;

/// Most pages of `/me/accounts` read: a person managing more than this many Pages (100 a page)
/// is asked to pick fewer at login.
const MAX_PAGES: usize = 10;

#[derive(Deserialize)]
struct Node {
    #[serde(default, deserialize_with = "de_string")]
    id: Option<String>,
}

#[derive(Deserialize)]
struct ManagedPage {
    #[serde(default, deserialize_with = "de_string")]
    id: Option<String>,
    name: Option<String>,
    access_token: Option<String>,
    instagram_business_account: Option<Node>,
}

#[derive(Deserialize)]
struct Cursors {
    after: Option<String>,
}

#[derive(Deserialize)]
struct Paging {
    cursors: Option<Cursors>,
    /// Present only when there is another page.
    next: Option<String>,
}

#[derive(Deserialize)]
struct Accounts {
    #[serde(default)]
    data: Vec<ManagedPage>,
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Username {
    username: Option<String>,
    name: Option<String>,
}

/// An ID goes into a URL path: Meta's IDs are digits, anything else is refused unsent.
fn graph_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

/// The token of the Page the Instagram business account `ig` is linked to, for a person who
/// manages that Page, and the Instagram account (ID and username). The error says why, for the
/// person who logged in.
pub async fn instagram_page_token(
    http: &Http,
    app: &App,
    user_token: &Token,
    ig: &str,
) -> Result<(Token, ReportedAccount), String> {
    if !graph_id(ig) {
        return Err(format!(
            "spec.account.id {ig:?} is not an Instagram business account ID"
        ));
    }
    let base = meta::api_base(app)?;
    let url = format!("{base}/me/accounts");
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![
            (
                "fields",
                "id,name,access_token,instagram_business_account".to_owned(),
            ),
            ("limit", "100".to_owned()),
            ("access_token", user_token.expose().to_owned()),
        ];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = match meta::get(http, app, &url, &query).await {
            Answer::Ok(resp) => resp.json::<Accounts>(),
            Answer::Error(e, _) => {
                return Err(format!(
                    "Meta did not list the Pages this login manages ({})",
                    e.describe(&[user_token])
                ));
            }
            Answer::Failed(_) => {
                return Err("Meta could not be asked which Pages this login manages".into());
            }
        };
        let Some(answer) = answer else {
            return Err("Meta's list of managed Pages was unreadable".into());
        };
        let linked = answer.data.into_iter().find(|p| {
            p.instagram_business_account
                .as_ref()
                .and_then(|n| n.id.as_deref())
                == Some(ig)
        });
        if let Some(page) = linked {
            let Some(token) = page.access_token.filter(|t| !t.is_empty()) else {
                return Err(format!(
                    "Meta gave no token for the Facebook Page {} linked to the Instagram account {ig}",
                    page.name.or(page.id).unwrap_or_default()
                ));
            };
            let token = Token::new(token);
            let name = username(http, app, &token, ig).await;
            return Ok((
                token,
                ReportedAccount {
                    id: Some(ig.to_owned()),
                    name,
                },
            ));
        }
        match answer.paging {
            Some(Paging {
                next: Some(_),
                cursors: Some(Cursors { after: Some(a) }),
            }) => after = Some(a),
            _ => break,
        }
    }
    Err(format!(
        "this login manages no Facebook Page linked to the Instagram account {ig}"
    ))
}

/// `GET /{ig-user-id}?fields=username,name`: the account's handle (else its name).
pub async fn username(http: &Http, app: &App, token: &Token, ig: &str) -> Option<String> {
    if !graph_id(ig) {
        return None;
    }
    let base = meta::api_base(app).ok()?;
    let query = [
        ("fields", "username,name"),
        ("access_token", token.expose()),
    ];
    match meta::get(http, app, &format!("{base}/{ig}"), &query).await {
        Answer::Ok(resp) if resp.status == 200 => {
            let u = resp.json::<Username>()?;
            u.username.or(u.name)
        }
        _ => None,
    }
}

/// For a Page token (its grant names the Page) kept for the Instagram business account `ig`:
/// when `GET /{page-id}?fields=instagram_business_account` names `ig`, the grant reaches it and
/// names it (`known` is the account last seen, so the username is asked once). When the Page is
/// linked to no or another account the grant is left as it is (the check then reports that the
/// token does not reach the account); when Meta cannot answer now, the verdict to keep instead.
pub async fn reach_linked_instagram(
    http: &Http,
    app: &App,
    token: &Token,
    grant: &mut Grant,
    ig: &str,
    known: Option<&ReportedAccount>,
) -> Result<(), Verdict> {
    let Some(page) = grant
        .account
        .as_ref()
        .and_then(|a| a.id.clone())
        .filter(|p| graph_id(p) && p != ig)
    else {
        return Ok(());
    };
    let base = meta::api_base(app).map_err(|message| Verdict::Misconfigured { message })?;
    let query = [
        ("fields", "instagram_business_account"),
        ("access_token", token.expose()),
    ];
    #[derive(Deserialize)]
    struct Linked {
        instagram_business_account: Option<Node>,
    }
    let linked = match meta::get(http, app, &format!("{base}/{page}"), &query).await {
        Answer::Ok(resp) => resp
            .json::<Linked>()
            .and_then(|l| l.instagram_business_account)
            .and_then(|n| n.id),
        // Code 100: the node has no such field (the token acts as a person, not a Page).
        Answer::Error(e, _) if e.code == Some(100) => None,
        Answer::Error(e, resp) => match e.class() {
            Class::Later | Class::Unknown | Class::Dead(_) => {
                return Err(e.verdict(Some(&resp), &[token]));
            }
            Class::Permission | Class::App => None,
        },
        Answer::Failed(v) => return Err(v),
    };
    if linked.as_deref() != Some(ig) {
        return Ok(());
    }
    let name = match known.filter(|k| k.id.as_deref() == Some(ig)) {
        Some(k) if k.name.is_some() => k.name.clone(),
        _ => username(http, app, token, ig).await,
    };
    grant.account = Some(ReportedAccount {
        id: Some(ig.to_owned()),
        name,
    });
    grant.target_ids = Some(vec![ig.to_owned(), page]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{ProviderEndpoints, ProviderType};
    use crate::providers::testserver::{Canned, TestServer, app, http};

    const IG: &str = "17841400008460056";
    const PAGE: &str = "104857600123456";
    const USER_TOKEN: &str = "EAAuser-secret";

    fn graph(server: &TestServer) -> App {
        let endpoints = ProviderEndpoints {
            api_base_url: Some(server.base.clone()),
            ..Default::default()
        };
        app(ProviderType::Facebook, endpoints, Some("s"))
    }

    #[tokio::test]
    async fn the_linked_pages_token_is_found_across_pages_of_me_accounts() {
        let server = TestServer::start(vec![
            (
                "/me/accounts",
                Canned::json(
                    200,
                    json!({"data": [{"id": "1", "name": "Other", "access_token": "EAAother"}],
                           "paging": {"cursors": {"before": "QVFIUa", "after": "QVFIUb"},
                                      "next": "https://graph.facebook.com/v25.0/me/accounts?after=QVFIUb"}}),
                ),
            ),
            (
                "/me/accounts",
                Canned::json(
                    200,
                    json!({"data": [{"id": PAGE, "name": "Acme", "access_token": "EAApage-secret",
                                     "instagram_business_account": {"id": IG}}],
                           "paging": {"cursors": {"before": "QVFIUb", "after": "QVFIUc"}}}),
                ),
            ),
            (
                &format!("/{IG}"),
                Canned::json(200, json!({"id": IG, "username": "acmebakery"})),
            ),
        ])
        .await;
        let a = graph(&server);
        let (token, account) = instagram_page_token(&http(), &a, &Token::new(USER_TOKEN), IG)
            .await
            .expect("found");
        assert_eq!(token.expose(), "EAApage-secret");
        assert_eq!(account.name.as_deref(), Some("acmebakery"));
        let asked: Vec<_> = server
            .seen()
            .into_iter()
            .filter(|s| s.path == "/me/accounts")
            .collect();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[0].query["access_token"], USER_TOKEN);
        assert!(asked[0].query["fields"].contains("instagram_business_account"));
        assert_eq!(asked[1].query["after"], "QVFIUb");
        assert_eq!(
            server.one(&format!("/{IG}")).query["access_token"],
            "EAApage-secret"
        );
    }

    #[tokio::test]
    async fn a_login_without_the_linked_page_is_refused() {
        let server = TestServer::start(vec![(
            "/me/accounts",
            Canned::json(
                200,
                json!({"data": [{"id": "1", "access_token": "EAAother"}]}),
            ),
        )])
        .await;
        let a = graph(&server);
        let e = instagram_page_token(&http(), &a, &Token::new(USER_TOKEN), IG)
            .await
            .unwrap_err();
        assert!(e.contains("manages no Facebook Page linked"), "{e}");
        let e = instagram_page_token(&http(), &a, &Token::new(USER_TOKEN), "../me")
            .await
            .unwrap_err();
        assert!(e.contains("not an Instagram business account ID"), "{e}");
        assert_eq!(server.seen().len(), 1, "nothing sent for a bad ID");
    }

    fn page_grant() -> Grant {
        Grant {
            account: Some(ReportedAccount {
                id: Some(PAGE.into()),
                name: None,
            }),
            ..Grant::default()
        }
    }

    #[tokio::test]
    async fn a_page_token_reaches_its_linked_account_and_an_outage_is_no_verdict() {
        let server = TestServer::start(vec![
            (
                &format!("/{PAGE}"),
                Canned::json(
                    200,
                    json!({"id": PAGE, "instagram_business_account": {"id": IG}}),
                ),
            ),
            (&format!("/{PAGE}"), Canned::text(503, "")),
            (&format!("/{PAGE}"), Canned::json(200, json!({"id": PAGE}))),
        ])
        .await;
        let a = graph(&server);
        let token = Token::new("EAApage-secret");
        let known = ReportedAccount {
            id: Some(IG.into()),
            name: Some("acmebakery".into()),
        };
        let mut g = page_grant();
        reach_linked_instagram(&http(), &a, &token, &mut g, IG, Some(&known))
            .await
            .expect("no trouble");
        assert_eq!(
            g.account,
            Some(known.clone()),
            "the known name, not asked again"
        );
        assert_eq!(g.target_ids.unwrap(), [IG, PAGE]);
        let mut g = page_grant();
        let v = reach_linked_instagram(&http(), &a, &token, &mut g, IG, Some(&known))
            .await
            .unwrap_err();
        assert!(matches!(v, Verdict::Transient { .. }), "{v:?}");
        // Unlinked: the grant stays the Page's, so the check reports the mismatch.
        let mut g = page_grant();
        reach_linked_instagram(&http(), &a, &token, &mut g, IG, Some(&known))
            .await
            .expect("no trouble");
        assert_eq!(g, page_grant());
    }
}
