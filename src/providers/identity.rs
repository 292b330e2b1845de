//! "Who is this token?": asked by the OAuth callback when the check of a freshly granted token
//! did not name the account it reaches (LinkedIn's introspection, a Facebook user token whose
//! Page permissions cover every Page, an OAuth2 server whose introspection has no `sub`). The
//! callback writes a login only for an account the provider named, so each provider gets the
//! smallest documented call that names it.

use serde::Deserialize;

use super::answer::{account, de_string};
use super::meta::{self, Answer};
use super::{App, Endpoint, Http, Token, Verdict, Wanted, oauth2};
use crate::api::{AccountKind, ProviderType, ReportedAccount};

/// What the provider said about a token's owner.
#[derive(Clone, Debug, PartialEq)]
pub enum Identity {
    /// The account, and every identifier under which it counts as reached.
    Known {
        account: ReportedAccount,
        ids: Vec<String>,
    },
    /// The provider could not or did not tell; shown to the person, so no provider secrets.
    Unknown(String),
}

/// Asks the provider who `token` belongs to. `expected` is the account the connection must
/// reach: a Facebook Page can only be confirmed by asking about that Page.
pub async fn identify(
    http: &Http,
    app: &App,
    token: &Token,
    expected: Option<Wanted<'_>>,
) -> Identity {
    match app.settings.type_ {
        ProviderType::Facebook => match expected {
            Some(asset) => facebook_asset(http, app, token, asset).await,
            None => facebook_me(http, app, token).await,
        },
        // An organization page: is the member one of its administrators?
        ProviderType::Linkedin
            if expected.is_some_and(|w| w.id.starts_with(super::linkedin::ORGANIZATION_URN)) =>
        {
            let urn = expected.map(|w| w.id).unwrap_or_default();
            super::linkedin::organization_admin(http, app, token, urn).await
        }
        // LinkedIn's OpenID Connect userinfo (`/v2/userinfo`, scopes `openid profile`).
        ProviderType::Linkedin => {
            let url = app.endpoint(Endpoint::Userinfo).or_else(|| {
                app.endpoint(Endpoint::ApiBase)
                    .map(|b| format!("{}/v2/userinfo", b.trim_end_matches('/')))
            });
            match userinfo(http, app, token, url).await {
                // The member's URN, as LinkedIn's APIs name a person, counts as the same account.
                Identity::Known { account, .. } => Identity::Known {
                    ids: account
                        .id
                        .as_deref()
                        .map(super::linkedin::member_ids)
                        .unwrap_or_default(),
                    account,
                },
                unknown => unknown,
            }
        }
        _ => userinfo(http, app, token, app.endpoint(Endpoint::Userinfo)).await,
    }
}

/// An OIDC userinfo answer (`sub`, `name`/`email`), with the token as bearer.
async fn userinfo(http: &Http, app: &App, token: &Token, url: Option<String>) -> Identity {
    let Some(url) = url else {
        return Identity::Unknown(
            "the provider has no userinfo endpoint to ask who logged in (spec.endpoints.userinfoUrl)"
                .into(),
        );
    };
    match oauth2::probe(http, app, &url, token).await {
        Verdict::Valid(g) => match g.account {
            Some(a) if a.id.is_some() => Identity::Known {
                ids: a.id.iter().cloned().collect(),
                account: a,
            },
            _ => Identity::Unknown("the provider's userinfo answer names no account".into()),
        },
        other => Identity::Unknown(format!(
            "the provider could not say who logged in ({})",
            summary(&other)
        )),
    }
}

#[derive(Deserialize)]
struct GraphNode {
    #[serde(default, deserialize_with = "de_string")]
    id: Option<String>,
    name: Option<String>,
    /// Present only when the person manages the Page: the Page's own token.
    access_token: Option<String>,
}

/// A Page or Instagram business account is confirmed by obtaining its Page's token with the
/// new token ([`facebook_asset_token`]): Meta gives it only to a person with a task on the Page,
/// so reading a public Page's name alone would prove nothing.
async fn facebook_asset(http: &Http, app: &App, token: &Token, asset: Wanted<'_>) -> Identity {
    match facebook_asset_token(http, app, token, asset).await {
        Ok((_, account)) => Identity::Known {
            account,
            ids: vec![asset.id.to_owned()],
        },
        Err(why) => Identity::Unknown(why),
    }
}

/// The Page token a Facebook Page or Instagram business account connection stores, obtained
/// with a person's user token: for a Page, the Page's own ([`facebook_page_token`]); for an
/// Instagram business account (`spec.account.kind: InstagramBusiness`), the token of the Page
/// it is linked to, from `GET /me/accounts`. The error says why, for the person.
pub async fn facebook_asset_token(
    http: &Http,
    app: &App,
    user_token: &Token,
    asset: Wanted<'_>,
) -> Result<(Token, ReportedAccount), String> {
    match asset.kind {
        Some(AccountKind::InstagramBusiness) => {
            super::facebook::pages::instagram_page_token(http, app, user_token, asset.id).await
        }
        Some(AccountKind::Page | AccountKind::User) | None => {
            facebook_page_token(http, app, user_token, asset.id).await
        }
    }
}

/// The Page's own access token and the Page, for a person who manages it: what publishing as
/// the Page needs, and what relink writes for a Page connection (with a long-lived user token
/// the Page token does not expire). The error says why, for the person.
async fn facebook_page_token(
    http: &Http,
    app: &App,
    user_token: &Token,
    page: &str,
) -> Result<(Token, ReportedAccount), String> {
    // The id goes into a URL path: Page ids are numeric, anything else is refused unsent.
    if page.is_empty() || !page.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "spec.account.id {page:?} is not a Facebook Page ID"
        ));
    }
    let base = meta::api_base(app)?;
    let url = format!("{base}/{page}");
    let query = [
        ("fields", "id,name,access_token"),
        ("access_token", user_token.expose()),
    ];
    match meta::get(http, app, &url, &query).await {
        Answer::Ok(resp) => match resp.json::<GraphNode>() {
            Some(GraphNode {
                id: Some(id),
                name,
                access_token: Some(t),
            }) if id == page && !t.is_empty() => {
                Ok((Token::new(t), ReportedAccount { id: Some(id), name }))
            }
            Some(n) if n.id.as_deref() == Some(page) => Err(format!(
                "this login does not manage the Facebook Page {}",
                n.name.unwrap_or_else(|| page.to_owned())
            )),
            _ => Err(format!("Meta did not confirm access to the Page {page}")),
        },
        Answer::Error(e, _) => Err(format!(
            "Meta did not confirm access to the Page {page} ({})",
            e.describe(&[user_token])
        )),
        Answer::Failed(v) => Err(format!(
            "Meta could not be asked about the Page {page} ({})",
            summary(&v)
        )),
    }
}

/// `GET /me?fields=id,name`: the person who logged in.
async fn facebook_me(http: &Http, app: &App, token: &Token) -> Identity {
    let base = match meta::api_base(app) {
        Ok(b) => b,
        Err(m) => return Identity::Unknown(m),
    };
    let query = [("fields", "id,name"), ("access_token", token.expose())];
    match meta::get(http, app, &format!("{base}/me"), &query).await {
        Answer::Ok(resp) => match resp.json::<GraphNode>() {
            Some(GraphNode {
                id: Some(id), name, ..
            }) => Identity::Known {
                ids: vec![id.clone()],
                account: account(Some(id), name).unwrap_or_default(),
            },
            _ => Identity::Unknown("Meta's /me answer names no account".into()),
        },
        Answer::Error(e, _) => Identity::Unknown(format!(
            "Meta could not say who logged in ({})",
            e.describe(&[token])
        )),
        Answer::Failed(v) => Identity::Unknown(format!(
            "Meta could not say who logged in ({})",
            summary(&v)
        )),
    }
}

fn summary(v: &Verdict) -> String {
    match v {
        Verdict::Valid(_) => "no account named".into(),
        Verdict::Invalid { message, .. }
        | Verdict::Transient { message, .. }
        | Verdict::Misconfigured { message } => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::ProviderEndpoints;
    use crate::providers::testserver::{Canned, TestServer, app, http};

    const TOKEN: &str = "new-token-secret";

    fn page(id: &str) -> Wanted<'_> {
        Wanted { id, kind: None }
    }

    fn known(id: &str) -> impl Fn(&Identity) -> bool + '_ {
        move |i| matches!(i, Identity::Known { ids, .. } if ids.iter().any(|x| x == id))
    }

    #[tokio::test]
    async fn linkedin_is_asked_through_its_userinfo() {
        let server = TestServer::start(vec![(
            "/v2/userinfo",
            Canned::json(
                200,
                json!({"sub": "782bbtaQ", "name": "John Doe", "email": "doe@email.com",
                       "email_verified": true, "locale": "en-US"}),
            ),
        )])
        .await;
        let a = app(
            ProviderType::Linkedin,
            ProviderEndpoints {
                api_base_url: Some(server.base.clone()),
                ..Default::default()
            },
            Some("s"),
        );
        let id = identify(&http(), &a, &Token::new(TOKEN), Some(page("782bbtaQ"))).await;
        assert!(known("782bbtaQ")(&id), "{id:?}");
        assert!(known("urn:li:person:782bbtaQ")(&id), "{id:?}");
        let seen = server.one("/v2/userinfo");
        assert_eq!(
            seen.headers["authorization"].to_str().unwrap(),
            format!("Bearer {TOKEN}")
        );
    }

    #[tokio::test]
    async fn facebook_page_is_confirmed_only_for_a_person_who_manages_it() {
        let server = TestServer::start(vec![
            (
                "/1234",
                Canned::json(
                    200,
                    json!({"id": "1234", "name": "Acme", "access_token": "page-token-secret"}),
                ),
            ),
            (
                "/5678",
                Canned::json(200, json!({"id": "5678", "name": "Other"})),
            ),
        ])
        .await;
        let a = app(
            ProviderType::Facebook,
            ProviderEndpoints {
                api_base_url: Some(server.base.clone()),
                ..Default::default()
            },
            Some("s"),
        );
        let t = Token::new(TOKEN);
        let id = identify(&http(), &a, &t, Some(page("1234"))).await;
        assert!(known("1234")(&id), "{id:?}");
        assert!(!format!("{id:?}").contains("page-token-secret"));
        assert_eq!(server.one("/1234").query["access_token"], TOKEN);
        let id = identify(&http(), &a, &t, Some(page("5678"))).await;
        assert!(
            matches!(&id, Identity::Unknown(m) if m.contains("does not manage") && m.contains("Other")),
            "{id:?}"
        );
        let id = identify(&http(), &a, &t, Some(page("../me"))).await;
        assert!(matches!(id, Identity::Unknown(_)));
        assert!(
            server.seen().iter().all(|s| s.path != "/me"),
            "nothing sent"
        );
    }

    #[tokio::test]
    async fn oauth2_without_userinfo_cannot_tell() {
        let a = app(ProviderType::OAuth2, ProviderEndpoints::default(), None);
        let id = identify(&http(), &a, &Token::new(TOKEN), None).await;
        assert!(matches!(id, Identity::Unknown(m) if m.contains("userinfoUrl")));
    }
}
