//! `GET /oauth/callback`: where the provider sends a person back after consent.
//!
//! Whoever holds a link decides whose token ends up in the Secret, and links are seen by every
//! namespace viewer, every owner and every chat a notification reaches. So the callback:
//! verifies the signed state and that it was made for the connection's current provider setup;
//! consumes the link atomically before the code is exchanged (a status patch conditioned on the
//! connection's resourceVersion replaces it, so of two racing callbacks exactly one goes on);
//! exchanges the code; checks the new token and asks the provider who it belongs to when the
//! check did not say; and writes it only when it reaches the expected account with the
//! required scopes ([`login_fit`]). A refused callback changes no Secret.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Reauth, StateClaims, state_of};
use crate::access::{self, SecretLabel};
use crate::account::{LoginFit, describe, expected_account, login_fit, reached_ids};
use crate::api::write;
use crate::api::{
    ALLOW_ACCOUNT_CHANGE_ANNOTATION, CHECK_REQUESTED_ANNOTATION, ChannelConnection,
    ClusterChannelProvider, ProviderKind, ProviderType, ReportedAccount,
};
use crate::providers::{
    App, Http, Identity, Renewal, Verdict, Wanted, facebook_asset_token, identify, validator_for,
};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::CallbackLabels;
use crate::tokens::{ResolvedProvider, WriteError, load_app, write_tokens_labelled};

/// What the callback server needs.
pub struct CallbackContext {
    pub client: Client,
    pub http: Http,
    pub reauth: Reauth,
    pub operator_namespace: String,
    pub metrics: Arc<Metrics>,
    pub recorder: crate::telemetry::Publisher,
    /// The label token Secrets must carry (`--secret-label`).
    pub secret_label: Option<SecretLabel>,
}

impl CallbackContext {
    pub fn new(
        client: Client,
        http: Http,
        reauth: Reauth,
        operator_namespace: String,
        metrics: Arc<Metrics>,
        secret_label: Option<SecretLabel>,
    ) -> Self {
        Self {
            recorder: crate::telemetry::publisher(&client),
            client,
            http,
            reauth,
            operator_namespace,
            metrics,
            secret_label,
        }
    }
}

/// Serves the callback until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<CallbackContext>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/oauth/callback", get(callback))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx);
    crate::server::serve(listener, app, shutdown).await
}

/// Longest `code` / `state` accepted; real ones are far shorter.
const MAX_PARAM: usize = 4096;

async fn callback(
    State(ctx): State<Arc<CallbackContext>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (result, response) = match handle(&ctx, &q).await {
        Ok(done) => (
            "reauthorized",
            page(StatusCode::OK, "Channel connected again", &done, true),
        ),
        Err(f) => {
            // The message never holds the code; it is scrubbed anyway, as provider text is
            // copied into it.
            let message = match q.get("code").filter(|c| !c.is_empty()) {
                Some(code) => f.message.replace(code.as_str(), "[redacted]"),
                None => f.message,
            };
            if f.result != "error" {
                info!(connection = %f.connection, result = f.result, reason = %message, "callback refused; nothing written");
            }
            (
                f.result,
                page(f.status, "The channel was not changed", &message, false),
            )
        }
    };
    ctx.metrics
        .callbacks
        .get_or_create(&CallbackLabels {
            result: result.to_owned(),
        })
        .inc();
    response
}

/// A callback that wrote nothing: the metric label, the HTTP status and the page's text.
struct Failure {
    result: &'static str,
    status: StatusCode,
    message: String,
    /// `namespace/name`, once the state named one.
    connection: String,
}

fn refuse(result: &'static str, connection: &str, message: impl Into<String>) -> Failure {
    Failure {
        result,
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
        connection: connection.to_owned(),
    }
}

fn internal(connection: &str, e: impl std::fmt::Display) -> Failure {
    warn!(connection, error = %e, "callback failed");
    Failure {
        result: "error",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: "relink could not finish: the operator's logs say why. Nothing was changed; open the newest link to try again.".into(),
        connection: connection.to_owned(),
    }
}

const NEWEST: &str =
    "Open the newest link from `kubectl get channelconnections -o wide` or the latest email.";

/// One callback: the link is checked and consumed, the code exchanged, the login judged, and
/// only an accepted login is written (with every other broken Page it heals).
async fn handle(ctx: &CallbackContext, q: &HashMap<String, String>) -> Result<String, Failure> {
    let now = jiff::Timestamp::now();
    let Request {
        claims,
        state,
        code,
    } = request(ctx, q, now)?;
    let who = format!("{}/{}", claims.ns, claims.n);
    let conns: Api<ChannelConnection> = Api::namespaced(ctx.client.clone(), &claims.ns);
    let Consumed { conn, app } = consume(ctx, &conns, &claims, state, &who, now).await?;
    let tokens = exchange(ctx, &app, &claims, code, &who).await?;
    let Accepted {
        grant,
        account,
        replaces,
    } = accept(ctx, &app, &conn, &tokens, &who).await?;
    let login = tokens.clone();
    let (tokens, account) = as_page(ctx, &app, &conn, &grant, tokens, account, &who).await?;
    write(ctx, &conn, &tokens, &who).await?;
    let granted = grant.scopes.as_deref();
    finish(
        ctx,
        &conns,
        &conn,
        &account,
        replaces.as_ref(),
        granted,
        now,
    )
    .await
    .map_err(|e| internal(&who, e))?;
    info!(connection = %who, account = ?account.id, changed_from = ?replaces.as_ref().and_then(|r| r.id.as_deref()), "re-authorized through the callback; tokens written");
    let name = conn
        .spec
        .account
        .as_ref()
        .and_then(|a| a.display_name.clone())
        .unwrap_or_else(|| claims.n.clone());
    let healed = heal_other_pages(ctx, &conns, &conn, &app, &grant, &login, now).await;
    let also = if healed.is_empty() {
        String::new()
    } else {
        format!(" The same login also reconnected: {}.", healed.join(", "))
    };
    Ok(format!(
        "{name} ({who}) is connected again as {}.{also} relink is checking it now; you can close this page.",
        describe(&account)
    ))
}

/// What the provider sent the person back with.
struct Request<'q> {
    claims: StateClaims,
    state: &'q str,
    code: &'q str,
}

/// Reads the callback's query: a valid signed `state`, no `error`, and a `code`.
fn request<'q>(
    ctx: &CallbackContext,
    q: &'q HashMap<String, String>,
    now: jiff::Timestamp,
) -> Result<Request<'q>, Failure> {
    let state = q
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= MAX_PARAM);
    let Some(state) = state else {
        return Err(refuse(
            "invalid_state",
            "",
            "This page was opened without a valid re-authorization link.",
        ));
    };
    let claims = ctx.reauth.key.verify(state, now).map_err(|e| {
        refuse(
            "invalid_state",
            "",
            format!("This re-authorization link cannot be used: {e}. {NEWEST}"),
        )
    })?;
    let who = format!("{}/{}", claims.ns, claims.n);
    if let Some(error) = q.get("error") {
        return Err(refuse(
            "declined",
            &who,
            format!(
                "The provider reported \"{}\": the connection {who} stays as it was. Open the link again to retry.",
                truncate(error)
            ),
        ));
    }
    let code = q
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= MAX_PARAM)
        .ok_or_else(|| refuse("no_code", &who, "The provider sent no authorization code."))?;
    Ok(Request {
        claims,
        state,
        code,
    })
}

/// Exchanges the code for tokens (with the PKCE verifier the link was made with).
async fn exchange(
    ctx: &CallbackContext,
    app: &App,
    claims: &StateClaims,
    code: &str,
    who: &str,
) -> Result<crate::providers::NewTokens, Failure> {
    let verifier = app
        .preset()
        .pkce
        .then(|| ctx.reauth.key.pkce_verifier(claims));
    match validator_for(app.settings.type_)
        .exchange_code(&ctx.http, app, code, &claims.p.r, verifier.as_deref())
        .await
    {
        Renewal::Renewed(t) => Ok(t),
        Renewal::Rejected { message }
        | Renewal::NeedsPerson { message, .. }
        | Renewal::Misconfigured { message }
        | Renewal::Unsupported { message } => Err(refuse(
            "exchange_failed",
            who,
            format!("The provider refused the login ({message}). {NEWEST}"),
        )),
        Renewal::Transient { message, .. } => Err(Failure {
            status: StatusCode::BAD_GATEWAY,
            ..refuse(
                "exchange_failed",
                who,
                format!("The provider could not be reached ({message}). {NEWEST}"),
            )
        }),
    }
}

/// A login that may be written: what the provider granted, who logged in, and the account it
/// replaces when the channel changed hands on purpose.
struct Accepted {
    grant: crate::providers::Grant,
    account: ReportedAccount,
    replaces: Option<ReportedAccount>,
}

/// Before writing anything: the new token must work, belong to the expected account and carry
/// the required scopes ([`login_fit`]).
async fn accept(
    ctx: &CallbackContext,
    app: &App,
    conn: &ChannelConnection,
    tokens: &crate::providers::NewTokens,
    who: &str,
) -> Result<Accepted, Failure> {
    let validator = validator_for(app.settings.type_);
    let mut grant = match validator.check(&ctx.http, app, &tokens.access_token).await {
        Verdict::Valid(grant) => grant,
        Verdict::Invalid { message, .. }
        | Verdict::Misconfigured { message }
        | Verdict::Transient { message, .. } => {
            return Err(Failure {
                status: StatusCode::BAD_GATEWAY,
                ..refuse(
                    "unverified",
                    who,
                    format!(
                        "The new token could not be verified ({message}); nothing was changed. {NEWEST}"
                    ),
                )
            });
        }
    };
    if grant.scopes.is_none() {
        // What the token endpoint said it granted, when the check cannot tell.
        grant.scopes = tokens.scopes.clone();
    }
    let unknown = name_the_account(ctx, app, conn, &tokens.access_token, &mut grant).await;
    let allow_change = conn
        .annotations()
        .get(ALLOW_ACCOUNT_CHANGE_ANNOTATION)
        .is_some_and(|v| v == "true");
    match login_fit(&conn.spec, conn.status.as_ref(), allow_change, &grant) {
        LoginFit::Accepted { account, replaces } => Ok(Accepted {
            grant,
            account,
            replaces,
        }),
        LoginFit::Refused { why, message } => {
            let detail = unknown.map(|u| format!(" ({u})")).unwrap_or_default();
            Err(refuse(
                why.as_str(),
                who,
                format!("{message}{detail} Nothing was changed. {NEWEST}"),
            ))
        }
    }
}

/// Makes sure `grant` names the account the login reaches: when the check's answer did not
/// (or, for a Facebook Page, did not name the expected Page), asks the provider who the new
/// token belongs to. Returns why the provider could not tell, for the refusal page.
async fn name_the_account(
    ctx: &CallbackContext,
    app: &App,
    conn: &ChannelConnection,
    token: &crate::providers::Token,
    grant: &mut crate::providers::Grant,
) -> Option<String> {
    let expected = expected_account(&conn.spec, conn.status.as_ref()).and_then(|a| a.id);
    let ids = reached_ids(grant);
    let confirms_per_asset = app.settings.type_ == ProviderType::Facebook;
    let unconfirmed = expected.as_ref().is_some_and(|e| !ids.contains(e));
    let ask = ids.is_empty() || (confirms_per_asset && unconfirmed);
    if !ask {
        return None;
    }
    let wanted = expected.as_deref().map(|id| Wanted {
        id,
        kind: kind_of(conn),
    });
    match identify(&ctx.http, app, token, wanted).await {
        Identity::Known { account, ids: more } => {
            let mut all = ids;
            for id in more {
                if !all.contains(&id) {
                    all.push(id);
                }
            }
            grant.target_ids = Some(all);
            if grant.account.is_none() {
                grant.account = Some(account);
            }
            None
        }
        Identity::Unknown(why) => Some(why),
    }
}

/// One Facebook login heals every other broken Page connection of the same provider in the
/// namespace whose Page it granted: when an admin's password change kills every Page they
/// connected, one login fixes them all. Each gets its own Page token in its own Secret, its own
/// `Reauthorized` Event and a check. Only Pages: a refresh token of another provider must never
/// be copied into two Secrets (two refreshers would burn its rotating family). Returns the
/// names healed; a sibling that cannot be healed is left as it was.
async fn heal_other_pages(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    conn: &ChannelConnection,
    app: &App,
    grant: &crate::providers::Grant,
    login: &crate::providers::NewTokens,
    now: jiff::Timestamp,
) -> Vec<String> {
    if app.settings.type_ != ProviderType::Facebook {
        return Vec::new();
    }
    let granted = reached_ids(grant);
    let person = grant.account.as_ref().and_then(|a| a.id.clone());
    let Ok(list) = conns.list(&Default::default()).await else {
        return Vec::new();
    };
    let mut healed = Vec::new();
    for other in list.items {
        let Some(page) = sibling_page(conn, &other, &granted, person.as_deref()) else {
            continue;
        };
        if heal_page(ctx, conns, &other, app, login, &page, now).await {
            healed.push(other.name_any());
        }
    }
    healed
}

/// The Page of `other` when it is a broken connection of the same provider as `conn`, not
/// suspended, whose Page (not the person who logged in) the login granted.
fn sibling_page(
    conn: &ChannelConnection,
    other: &ChannelConnection,
    granted: &[String],
    person: Option<&str>,
) -> Option<String> {
    let broken = other
        .status
        .as_ref()
        .is_some_and(crate::account::needs_login);
    if other.uid() == conn.uid()
        || other.spec.provider_ref != conn.spec.provider_ref
        || other.spec.suspend
        || !broken
        || other.spec.secret_ref.problem().is_some()
    {
        return None;
    }
    expected_account(&other.spec, other.status.as_ref())
        .and_then(|a| a.id)
        .filter(|id| granted.contains(id) && Some(id.as_str()) != person)
}

/// Writes the token of `page` (asked with the login's user token) into `other`'s Secret and
/// records the login on it; whether it is healed.
async fn heal_page(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    other: &ChannelConnection,
    app: &App,
    login: &crate::providers::NewTokens,
    page: &str,
    now: jiff::Timestamp,
) -> bool {
    let who = format!(
        "{}/{}",
        other.namespace().unwrap_or_default(),
        other.name_any()
    );
    let asset = Wanted {
        id: page,
        kind: kind_of(other),
    };
    let Ok((token, account)) =
        facebook_asset_token(&ctx.http, app, &login.access_token, asset).await
    else {
        return false;
    };
    let tokens = crate::providers::NewTokens {
        access_token: token,
        refresh_token: None,
        expires_at: None,
        scopes: login.scopes.clone(),
        refresh_expires_at: None,
    };
    if write(ctx, other, &tokens, &who).await.is_err() {
        return false;
    }
    match finish(
        ctx,
        conns,
        other,
        &account,
        None,
        tokens.scopes.as_deref(),
        now,
    )
    .await
    {
        Ok(()) => {
            info!(connection = %who, account = ?account.id, "re-authorized by the same login as another Page");
            true
        }
        Err(e) => {
            warn!(connection = %who, error = %e, "healed Page's status not written");
            false
        }
    }
}

/// For a Facebook Page connection (its expected account is not the person who logged in), the
/// Page's own token replaces the person's user token: publishing as the Page needs it, and a
/// user token would check `Valid` (the Page is among its targets) and then fail to post. An
/// Instagram business account (`spec.account.kind`) gets the token of the Page it is linked to.
/// A person who does not manage the Page gets a refusal and nothing is written.
async fn as_page(
    ctx: &CallbackContext,
    app: &App,
    conn: &ChannelConnection,
    grant: &crate::providers::Grant,
    tokens: crate::providers::NewTokens,
    account: ReportedAccount,
    who: &str,
) -> Result<(crate::providers::NewTokens, ReportedAccount), Failure> {
    if app.settings.type_ != ProviderType::Facebook {
        return Ok((tokens, account));
    }
    let person = grant.account.as_ref().and_then(|a| a.id.as_deref());
    let Some(page) = expected_account(&conn.spec, conn.status.as_ref())
        .and_then(|a| a.id)
        .filter(|id| Some(id.as_str()) != person)
    else {
        return Ok((tokens, account));
    };
    let asset = Wanted {
        id: &page,
        kind: kind_of(conn),
    };
    match facebook_asset_token(&ctx.http, app, &tokens.access_token, asset).await {
        Ok((page_token, page_account)) => Ok((
            crate::providers::NewTokens {
                access_token: page_token,
                // A Page token of a long-lived user token does not expire and is not refreshed.
                refresh_token: None,
                expires_at: None,
                scopes: tokens.scopes,
                refresh_expires_at: None,
            },
            page_account,
        )),
        Err(why) => Err(refuse(
            "not_page_manager",
            who,
            format!(
                "{why}: this login cannot act as the channel's Page, so nothing was changed. {NEWEST}"
            ),
        )),
    }
}

/// `spec.account.kind`, when set.
fn kind_of(conn: &ChannelConnection) -> Option<crate::api::AccountKind> {
    conn.spec.account.as_ref().and_then(|a| a.kind)
}

/// Writes the accepted login's tokens into the connection's Secret (only the keys it names,
/// optimistic concurrency, created labelled when missing), never into a Secret without the
/// opt-in label.
async fn write(
    ctx: &CallbackContext,
    conn: &ChannelConnection,
    tokens: &crate::providers::NewTokens,
    who: &str,
) -> Result<(), Failure> {
    let ns = conn.namespace().unwrap_or_default();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let labels = ctx
        .secret_label
        .as_ref()
        .map(SecretLabel::labels)
        .unwrap_or_default();
    let mut attempts = 0;
    loop {
        let current = secrets
            .get_metadata_opt(&conn.spec.secret_ref.name)
            .await
            .map_err(|e| internal(who, e))?;
        if let (Some(label), Some(secret)) = (&ctx.secret_label, &current)
            && let Some(m) = label.refusal(&conn.spec.secret_ref.name, secret.labels())
        {
            return Err(refuse(
                "secret_not_labelled",
                who,
                format!("{m}. Nothing was changed."),
            ));
        }
        let version = current.and_then(|s| s.resource_version());
        match write_tokens_labelled(
            &ctx.client,
            &ns,
            &conn.spec.secret_ref,
            tokens,
            version.as_deref(),
            &labels,
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(WriteError::Conflict) if attempts < 3 => attempts += 1,
            Err(e) => return Err(internal(who, e)),
        }
    }
}

/// The connection whose link was just consumed, and its provider application.
struct Consumed {
    conn: ChannelConnection,
    app: App,
}

/// Checks that `state` was made for the connection's current provider setup and is its current
/// link, then consumes it: one status patch, conditioned on the resourceVersion just read,
/// replaces the link with a fresh one (so a refused login leaves a working link for the right
/// person). A conflict means someone else changed the connection first: read again; if that
/// was another callback with this state, the link is no longer current and this one stops.
async fn consume(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    claims: &StateClaims,
    state: &str,
    who: &str,
    now: jiff::Timestamp,
) -> Result<Consumed, Failure> {
    for _ in 0..5 {
        let conn = current_connection(ctx, conns, claims, who).await?;
        let (app, binding) = current_app(ctx, conns, claims, &conn, who, now).await?;
        let current = conn
            .status
            .as_ref()
            .and_then(|s| s.reauth_url.as_deref())
            .and_then(state_of);
        if current.as_deref() != Some(state) {
            return Err(refuse(
                "used",
                who,
                format!(
                    "This link for {who} was already used or replaced by a newer one; nothing was changed. {NEWEST}"
                ),
            ));
        }
        let fresh = ctx
            .reauth
            .authorization_url(&app, &binding, &conn, now)
            .ok();
        let consumed = write::link_replaced(conn.status.as_ref(), fresh);
        let version = conn.resource_version();
        match write::apply(
            &ctx.client,
            &claims.ns,
            &claims.n,
            &consumed,
            version.as_deref(),
        )
        .await
        {
            Ok(_) => return Ok(Consumed { conn, app }),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(internal(who, e)),
        }
    }
    Err(internal(
        who,
        "the connection kept changing while the link was consumed",
    ))
}

/// The connection the state names (same UID), if its Secret may be written.
async fn current_connection(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    claims: &StateClaims,
    who: &str,
) -> Result<ChannelConnection, Failure> {
    let conn = conns
        .get_opt(&claims.n)
        .await
        .map_err(|e| internal(who, e))?
        .filter(|c| c.uid().as_deref() == Some(claims.u.as_str()))
        .ok_or_else(|| {
            refuse(
                "gone",
                who,
                format!("The connection {who} no longer exists."),
            )
        })?;
    if let Some(m) = conn.spec.secret_ref.problem() {
        return Err(refuse(
            "invalid_spec",
            who,
            format!("{m}. Nothing was changed."),
        ));
    }
    if let Some(label) = &ctx.secret_label {
        let secret =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ctx.client.clone(), &claims.ns)
                .get_metadata_opt(&conn.spec.secret_ref.name)
                .await
                .map_err(|e| internal(who, e))?;
        // A Secret relink would create gets the label; an existing one must have it.
        if let Some(m) = secret.and_then(|s| label.refusal(&conn.spec.secret_ref.name, s.labels()))
        {
            return Err(refuse(
                "secret_not_labelled",
                who,
                format!("{m}. Nothing was changed."),
            ));
        }
    }
    Ok(conn)
}

/// The connection's provider application, if it is still the setup the link was made for (else
/// a check is asked for, which publishes a link for the current one) and still allowed.
async fn current_app(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    claims: &StateClaims,
    conn: &ChannelConnection,
    who: &str,
    now: jiff::Timestamp,
) -> Result<(App, super::ProviderBinding), Failure> {
    let moved = || {
        refuse(
            "provider_changed",
            who,
            format!(
                "This link was made for an earlier setup of the provider of {who} (spec.providerRef, the provider object, its client ID or redirect URL changed since); nothing was changed. A new link is published with the next check. {NEWEST}"
            ),
        )
    };
    let r = &conn.spec.provider_ref;
    if claims.p.k != r.kind.as_str() || claims.p.n != r.name {
        ask_for_check(conns, &claims.n, now).await;
        return Err(moved());
    }
    let provider = ResolvedProvider::fetch(&ctx.client, r, &claims.ns, &ctx.operator_namespace)
        .await
        .map_err(|e| internal(who, e))?
        .ok_or_else(|| {
            refuse(
                "provider_changed",
                who,
                format!("The provider of {who} no longer exists."),
            )
        })?;
    let app = load_app(&ctx.client, ctx.http.policy(), &provider, None)
        .await
        .map_err(|e| internal(who, e))?
        .map_err(|m| Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..refuse("provider_not_ready", who, m)
        })?;
    let binding = ctx.reauth.binding(&provider, &app);
    if binding != claims.p {
        ask_for_check(conns, &claims.n, now).await;
        return Err(moved());
    }
    if r.kind == ProviderKind::ClusterChannelProvider
        && let Some(p) = Api::<ClusterChannelProvider>::all(ctx.client.clone())
            .get_opt(&r.name)
            .await
            .map_err(|e| internal(who, e))?
        && let Some(m) = access::refusal(&ctx.client, &p, conn)
            .await
            .map_err(|e| internal(who, e))?
    {
        return Err(refuse(
            "provider_not_allowed",
            who,
            format!("{m}. Nothing was changed."),
        ));
    }
    Ok((app, binding))
}

/// After the tokens are written: the link is withdrawn, the account that logged in is pinned and
/// recorded, a check is asked for at once, and an Event says who re-authorized.
async fn finish(
    ctx: &CallbackContext,
    conns: &Api<ChannelConnection>,
    conn: &ChannelConnection,
    account: &ReportedAccount,
    replaces: Option<&ReportedAccount>,
    granted: Option<&[String]>,
    now: jiff::Timestamp,
) -> Result<(), kube::Error> {
    let name = conn.name_any();
    // Conditioned on the version read, so a check's write in between is never overwritten.
    let mut attempts = 0;
    loop {
        let current = conns.get(&name).await?;
        let status = write::reauthorized(current.status.as_ref(), account, granted, now);
        let version = current.resource_version();
        let ns = current.namespace().unwrap_or_default();
        match write::apply(&ctx.client, &ns, &name, &status, version.as_deref()).await {
            Ok(()) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
    let mut annotations =
        json!({CHECK_REQUESTED_ANNOTATION: format!("callback-{}", now.as_millisecond())});
    if replaces.is_some() {
        // Used once: the next change of account must be allowed again.
        annotations[ALLOW_ACCOUNT_CHANGE_ANNOTATION] = serde_json::Value::Null;
    }
    conns
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": annotations}})),
        )
        .await?;
    let mut note = format!(
        "Re-authorized through relink's link by provider account {}",
        describe(account)
    );
    if let Some(old) = replaces {
        note.push_str(&format!(
            "; the channel's account changed from {} ({ALLOW_ACCOUNT_CHANGE_ANNOTATION})",
            describe(old)
        ));
    }
    let event = Event {
        type_: EventType::Normal,
        reason: "Reauthorized".into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reauthorize".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &conn.object_ref(&())).await {
        warn!(connection = %format!("{}/{name}", conn.namespace().unwrap_or_default()), error = %e, "cannot publish event");
    }
    Ok(())
}

/// Asks for a check now, so a link for the provider's current setup is published.
async fn ask_for_check(conns: &Api<ChannelConnection>, name: &str, now: jiff::Timestamp) {
    let ask = json!({"metadata": {"annotations": {CHECK_REQUESTED_ANNOTATION: format!("callback-{}", now.as_millisecond())}}});
    if let Err(e) = conns
        .patch(name, &PatchParams::default(), &Patch::Merge(&ask))
        .await
    {
        warn!(connection = name, error = %e, "cannot ask for a check");
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

fn page(status: StatusCode, title: &str, message: &str, ok: bool) -> Response {
    let color = if ok { "#1a7f37" } else { "#cf222e" };
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>relink: {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328}}
h1{{color:{color};font-size:1.5rem}}</style></head>
<body><h1>{title}</h1><p>{}</p><p style="color:#59636e">relink keeps your channel connections healthy.</p></body></html>"#,
        crate::text::escape_html(message)
    );
    (status, Html(html)).into_response()
}
