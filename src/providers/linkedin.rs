//! Provider type `linkedin`: checked with LinkedIn's token introspection, which says whether a
//! token is active, expired or revoked, its comma-separated scopes and when it expires. It
//! does not name the member or organization: that is asked once per account with a documented
//! call ([`LinkedIn::complete`]): the member's OpenID Connect userinfo, or the organization's
//! `localizedName` for an organization page (`spec.account.id: urn:li:organization:{id}`).

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;

use super::answer::{clip, unix};
use super::oauth2::{ErrorBody, common_failures, transport};
use super::{
    App, Endpoint, Grant, Http, Identity, Token, Validator, Verdict, Wanted, identify, split_scopes,
};
use crate::api::{Reason, ReportedAccount};

/// The version of LinkedIn's versioned REST APIs (`/rest/...`) relink asks for
/// (`LinkedIn-Version`, `YYYYMM`); LinkedIn serves each version for at least a year.
const REST_VERSION: &str = "202510";

/// How LinkedIn names an organization page in `spec.account.id`.
pub(super) const ORGANIZATION_URN: &str = "urn:li:organization:";

pub struct LinkedIn;

impl Validator for LinkedIn {
    fn check<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
    ) -> BoxFuture<'a, Verdict> {
        check(http, app, token).boxed()
    }

    /// Introspection names no account. An organization page (`spec.account.id` an
    /// `urn:li:organization:` URN) is named by `GET {apiBaseUrl}/rest/organizations/{id}`
    /// (`localizedName`); a member by `GET {apiBaseUrl}/v2/userinfo` (`sub`, `name`), which also
    /// tells whether the token is the expected member's. The account in status is reused while
    /// it is the expected one, so each account is asked for once.
    fn complete<'a>(
        &'a self,
        http: &'a Http,
        app: &'a App,
        token: &'a Token,
        verdict: &'a mut Verdict,
        wanted: Option<Wanted<'a>>,
        known: Option<&'a ReportedAccount>,
    ) -> BoxFuture<'a, ()> {
        async move {
            let Verdict::Valid(grant) = verdict else {
                return;
            };
            if grant.account.is_some() {
                return;
            }
            let want = wanted.map(|w| w.id);
            if let Some(k) = known.filter(|k| k.name.is_some())
                && let Some(id) = &k.id
                && want.is_none_or(|w| member_ids(id).iter().any(|i| i == w))
            {
                grant.target_ids = Some(member_ids(id));
                grant.account = Some(k.clone());
                return;
            }
            match want.and_then(|w| w.strip_prefix(ORGANIZATION_URN).map(|o| (w, o))) {
                Some((urn, org)) => {
                    if let Some(name) = organization_name(http, app, token, org).await {
                        grant.account = Some(ReportedAccount {
                            id: Some(urn.to_owned()),
                            name: Some(name),
                        });
                    }
                }
                None => {
                    if let Identity::Known { account, ids } = identify(http, app, token, None).await
                    {
                        grant.account = Some(account);
                        grant.target_ids = Some(ids);
                    }
                }
            }
        }
        .boxed()
    }
}

/// Every identifier of a member: the OpenID `sub` and the URN LinkedIn's APIs name a person by.
pub(super) fn member_ids(id: &str) -> Vec<String> {
    if id.starts_with("urn:") {
        vec![id.to_owned()]
    } else {
        vec![id.to_owned(), format!("urn:li:person:{id}")]
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Organization {
    localized_name: Option<String>,
}

/// `GET {apiBaseUrl}/rest/organizations/{id}` (Organization Lookup API): the page's
/// `localizedName`. `None` when LinkedIn does not say (no access, another version, outage).
async fn organization_name(http: &Http, app: &App, token: &Token, org: &str) -> Option<String> {
    if !numeric(org) {
        return None;
    }
    let resp = rest_get(http, app, token, &format!("/rest/organizations/{org}"), &[]).await?;
    resp.json::<Organization>()?.localized_name
}

fn numeric(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
}

/// A GET of LinkedIn's versioned REST API with the token as bearer; the answer when HTTP 200.
async fn rest_get(
    http: &Http,
    app: &App,
    token: &Token,
    path: &str,
    query: &[(&str, &str)],
) -> Option<super::Response> {
    let base = app.endpoint(Endpoint::ApiBase)?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let req = http
        .request(app.trusted, Method::GET, &url)
        .header("Accept", "application/json")
        .header("LinkedIn-Version", REST_VERSION)
        .header("X-Restli-Protocol-Version", "2.0.0")
        .query(query)
        .bearer_auth(token.expose());
    http.send(req).await.ok().filter(|r| r.status == 200)
}

#[derive(Deserialize)]
struct Acls {
    #[serde(default)]
    elements: Vec<Acl>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Acl {
    organization: Option<String>,
    organizational_target: Option<String>,
    role: Option<String>,
}

/// Who logged in, for an organization page (`urn:li:organization:{id}`): the organization when
/// `GET {apiBaseUrl}/rest/organizationAcls?q=roleAssignee&state=APPROVED` (Organization Access
/// Control API, scope `r_organization_admin` or `rw_organization_admin`) lists the member as
/// its `ADMINISTRATOR` or `CONTENT_ADMINISTRATOR`: then the member's token may post as it.
pub(super) async fn organization_admin(
    http: &Http,
    app: &App,
    token: &Token,
    urn: &str,
) -> Identity {
    let Some(org) = urn.strip_prefix(ORGANIZATION_URN).filter(|o| numeric(o)) else {
        return Identity::Unknown(format!("{urn:?} is not a LinkedIn organization URN"));
    };
    let query = [
        ("q", "roleAssignee"),
        ("state", "APPROVED"),
        ("count", "100"),
    ];
    let Some(acls) = rest_get(http, app, token, "/rest/organizationAcls", &query)
        .await
        .and_then(|r| r.json::<Acls>())
    else {
        return Identity::Unknown(
            "LinkedIn did not list the organizations this login administers (the scope r_organization_admin is needed)".into(),
        );
    };
    let admin = acls.elements.iter().any(|a| {
        a.organization
            .as_deref()
            .or(a.organizational_target.as_deref())
            == Some(urn)
            && matches!(
                a.role.as_deref(),
                Some("ADMINISTRATOR" | "CONTENT_ADMINISTRATOR")
            )
    });
    if !admin {
        return Identity::Unknown(format!(
            "this login is not an administrator of the LinkedIn organization {urn}"
        ));
    }
    Identity::Known {
        account: ReportedAccount {
            id: Some(urn.to_owned()),
            name: organization_name(http, app, token, org).await,
        },
        ids: vec![urn.to_owned()],
    }
}

#[derive(Deserialize)]
struct Introspection {
    active: bool,
    /// `active`, `expired` or `revoked`.
    status: Option<String>,
    scope: Option<String>,
    expires_at: Option<i64>,
}

async fn check(http: &Http, app: &App, token: &Token) -> Verdict {
    let Some(url) = app.endpoint(Endpoint::Introspection) else {
        return Verdict::Misconfigured {
            message: "the provider has no introspection URL (spec.endpoints.introspectionUrl)"
                .into(),
        };
    };
    let Some(secret) = &app.client_secret else {
        return Verdict::Misconfigured {
            message: "LinkedIn token introspection needs the client secret (spec.clientSecretRef)"
                .into(),
        };
    };
    let form = [
        ("client_id", app.settings.client_id.as_str()),
        ("client_secret", secret.expose()),
        ("token", token.expose()),
    ];
    let req = http
        .request(app.trusted, Method::POST, &url)
        .header("Accept", "application/json")
        .form(&form);
    let resp = match http.send(req).await {
        Ok(r) => r,
        Err(e) => return transport(e),
    };
    if let Some(v) = common_failures(&resp, "introspection") {
        return v;
    }
    let secrets = [token, secret];
    if resp.status == 200
        && let Some(i) = resp.json::<Introspection>()
    {
        return judge(i);
    }
    let error = resp.json::<ErrorBody>();
    let what = error
        .as_ref()
        .map(|e| clip(&e.describe(), &secrets))
        .unwrap_or_else(|| format!("HTTP {}", resp.status));
    match (resp.status, error.as_ref().map(|e| e.error.as_str())) {
        (_, Some("invalid_client" | "unauthorized_client")) | (401, _) => Verdict::Misconfigured {
            message: format!("LinkedIn refused the app credentials: {what}"),
        },
        (400, Some("invalid_token")) => Verdict::Invalid {
            reason: Reason::Revoked,
            message: format!("LinkedIn rejected the token: {what}"),
        },
        _ => Verdict::Transient {
            message: format!("LinkedIn introspection failed: {what}"),
            retry_after: None,
        },
    }
}

fn judge(i: Introspection) -> Verdict {
    let status = i
        .status
        .as_deref()
        .unwrap_or(if i.active { "active" } else { "" });
    if i.active && status == "active" {
        return Verdict::Valid(Grant {
            scopes: i.scope.as_deref().map(split_scopes),
            expires_at: i.expires_at.and_then(unix),
            ..Grant::default()
        });
    }
    match status {
        "expired" => Verdict::Invalid {
            reason: Reason::Expired,
            message: "LinkedIn reports the token as expired".into(),
        },
        _ => Verdict::Invalid {
            reason: Reason::Revoked,
            message: "LinkedIn reports the token as revoked or inactive".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::{ProviderEndpoints, ProviderType};
    use crate::providers::testserver::{
        Canned, TestServer, app, assert_no_leak, http, invalid, misconfigured, transient, valid,
    };

    const TOKEN: &str = "AQVsecret";

    async fn check_with(answer: Canned) -> (Verdict, TestServer) {
        let server = TestServer::start(vec![("/oauth/v2/introspectToken", answer)]).await;
        let endpoints = ProviderEndpoints {
            introspection_url: Some(server.url("/oauth/v2/introspectToken")),
            ..Default::default()
        };
        let a = app(ProviderType::Linkedin, endpoints, Some("s3cret"));
        let v = LinkedIn.check(&http(), &a, &Token::new(TOKEN)).await;
        assert_no_leak(&v, TOKEN);
        assert_no_leak(&v, "s3cret");
        (v, server)
    }

    #[tokio::test]
    async fn active_token_reports_comma_separated_scopes() {
        let (v, server) = check_with(Canned::json(
            200,
            json!({"active": true, "client_id": "app-id", "authorized_at": 1_493_055_596,
                   "created_at": 1_493_055_596, "status": "active", "expires_at": 4_102_444_800_i64,
                   "scope": "r_liteprofile,r_emailaddress,w_member_social", "auth_type": "3L"}),
        ))
        .await;
        let g = valid(v);
        assert_eq!(
            g.scopes.unwrap(),
            ["r_liteprofile", "r_emailaddress", "w_member_social"]
        );
        assert_eq!(g.expires_at.map(|t| t.as_second()), Some(4_102_444_800));
        let form = server.one("/oauth/v2/introspectToken").form;
        assert_eq!(form["client_id"], "app-id");
        assert_eq!(form["client_secret"], "s3cret");
        assert_eq!(form["token"], TOKEN);
    }

    /// Completes a valid grant without account for connection account `want`.
    async fn complete_with(
        routes: Vec<(&str, Canned)>,
        want: &str,
        known: Option<&ReportedAccount>,
    ) -> (Grant, TestServer) {
        let server = TestServer::start(routes).await;
        let endpoints = ProviderEndpoints {
            api_base_url: Some(server.base.clone()),
            ..Default::default()
        };
        let a = app(ProviderType::Linkedin, endpoints, Some("s3cret"));
        let mut v = Verdict::Valid(Grant::default());
        let wanted = Some(Wanted {
            id: want,
            kind: None,
        });
        LinkedIn
            .complete(&http(), &a, &Token::new(TOKEN), &mut v, wanted, known)
            .await;
        (valid(v), server)
    }

    #[tokio::test]
    async fn a_member_is_named_by_userinfo_and_checked() {
        let userinfo = Canned::json(
            200,
            json!({"sub": "782bbtaQ", "name": "John Doe", "email": "doe@email.com",
                   "email_verified": true, "locale": "en-US"}),
        );
        let (g, server) = complete_with(
            vec![("/v2/userinfo", userinfo)],
            "urn:li:person:782bbtaQ",
            None,
        )
        .await;
        let account = g.account.unwrap();
        assert_eq!(account.name.as_deref(), Some("John Doe"));
        assert_eq!(
            g.target_ids.unwrap(),
            ["782bbtaQ", "urn:li:person:782bbtaQ"]
        );
        let seen = server.one("/v2/userinfo");
        assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));

        // Once named, the account in status is reused: no call.
        let (g, server) = complete_with(vec![], "urn:li:person:782bbtaQ", Some(&account)).await;
        assert_eq!(g.account, Some(account));
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn an_organization_page_is_named_by_its_localized_name() {
        let org = Canned::json(
            200,
            json!({"id": 2414183, "localizedName": "Acme Coffee", "vanityName": "acme-coffee",
                   "primaryOrganizationType": "NONE", "versionTag": "11"}),
        );
        let (g, server) = complete_with(
            vec![("/rest/organizations/2414183", org)],
            "urn:li:organization:2414183",
            None,
        )
        .await;
        let account = g.account.unwrap();
        assert_eq!(
            (account.id.as_deref(), account.name.as_deref()),
            (Some("urn:li:organization:2414183"), Some("Acme Coffee"))
        );
        let seen = server.one("/rest/organizations/2414183");
        assert_eq!(seen.headers["linkedin-version"], REST_VERSION);
        assert_eq!(seen.headers["x-restli-protocol-version"], "2.0.0");
        // Not an organization ID: nothing is sent.
        let (g, server) = complete_with(vec![], "urn:li:organization:../x", None).await;
        assert_eq!(g.account, None);
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn an_organization_login_is_confirmed_by_its_administrator_role() {
        let acls = Canned::json(
            200,
            json!({"paging": {"count": 100, "start": 0}, "elements": [
                {"role": "ADMINISTRATOR", "organization": "urn:li:organization:2414183",
                 "state": "APPROVED", "roleAssignee": "urn:li:person:782bbtaQ"},
                {"role": "ANALYST", "organization": "urn:li:organization:5555",
                 "state": "APPROVED", "roleAssignee": "urn:li:person:782bbtaQ"}]}),
        );
        let org = Canned::json(200, json!({"id": 2414183, "localizedName": "Acme Coffee"}));
        let server = TestServer::start(vec![
            ("/rest/organizationAcls", acls.clone()),
            ("/rest/organizations/2414183", org),
            ("/rest/organizationAcls", acls),
        ])
        .await;
        let endpoints = ProviderEndpoints {
            api_base_url: Some(server.base.clone()),
            ..Default::default()
        };
        let a = app(ProviderType::Linkedin, endpoints, Some("s3cret"));
        let t = Token::new(TOKEN);
        let want = |id| Some(Wanted { id, kind: None });
        match identify(&http(), &a, &t, want("urn:li:organization:2414183")).await {
            Identity::Known { account, ids } => {
                assert_eq!(account.name.as_deref(), Some("Acme Coffee"));
                assert_eq!(ids, ["urn:li:organization:2414183"]);
            }
            other => panic!("{other:?}"),
        }
        let seen = server
            .seen()
            .into_iter()
            .find(|s| s.path == "/rest/organizationAcls")
            .unwrap();
        assert_eq!(seen.query["q"], "roleAssignee");
        assert_eq!(seen.query["state"], "APPROVED");
        assert_eq!(seen.headers["authorization"], format!("Bearer {TOKEN}"));
        // An analyst of the other organization is not its administrator.
        let id = identify(&http(), &a, &t, want("urn:li:organization:5555")).await;
        assert!(
            matches!(&id, Identity::Unknown(m) if m.contains("not an administrator")),
            "{id:?}"
        );
    }

    #[tokio::test]
    async fn expired_and_revoked() {
        let (v, _s) = check_with(Canned::json(
            200,
            json!({"active": false, "status": "expired"}),
        ))
        .await;
        assert_eq!(invalid(&v), Reason::Expired);
        let (v, _s) = check_with(Canned::json(
            200,
            json!({"active": false, "status": "revoked"}),
        ))
        .await;
        assert_eq!(invalid(&v), Reason::Revoked);
        let (v, _s) = check_with(Canned::json(200, json!({"active": false}))).await;
        assert_eq!(invalid(&v), Reason::Revoked);
    }

    #[tokio::test]
    async fn bad_client_credentials_are_the_providers_problem() {
        let (v, _s) = check_with(Canned::json(
            401,
            json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
        ))
        .await;
        misconfigured(&v);
    }

    #[tokio::test]
    async fn rate_limit_outage_and_garbage_are_transient() {
        let (v, _s) = check_with(Canned::text(429, "").header("retry-after", "9")).await;
        assert_eq!(transient(&v), Some(Duration::from_secs(9)));
        let (v, _s) = check_with(Canned::text(500, "oops")).await;
        transient(&v);
        let (v, _s) = check_with(Canned::text(200, "<html>")).await;
        transient(&v);
    }
}
