//! `GET /oauth/callback`: where the provider sends a person back after consent. It verifies the
//! signed state, exchanges the code, checks that the new token reaches the connection's account
//! with the required scopes, writes it into the connection's Secret (other keys untouched) and
//! asks for a check at once. A forged, replayed or wrong-account callback changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{Reauth, state_of};
use crate::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnection};
use crate::controller::status::unfit_for;
use crate::controller::tokens::{ResolvedProvider, WriteError, load_app, write_tokens};
use crate::providers::{Http, Renewal, Verdict, validator_for};

/// What the callback server needs.
pub struct CallbackContext {
    pub client: Client,
    pub http: Http,
    pub reauth: Reauth,
    pub operator_namespace: String,
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
    match handle(&ctx, &q).await {
        Ok(done) => page(StatusCode::OK, "Channel connected again", &done, true),
        Err((status, message)) => page(status, "The channel was not changed", &message, false),
    }
}

type Failure = (StatusCode, String);

fn bad(message: impl Into<String>) -> Failure {
    (StatusCode::BAD_REQUEST, message.into())
}

async fn handle(ctx: &CallbackContext, q: &HashMap<String, String>) -> Result<String, Failure> {
    let now = jiff::Timestamp::now();
    let state = q
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= MAX_PARAM);
    let Some(state) = state else {
        return Err(bad(
            "This page was opened without a valid re-authorization link.",
        ));
    };
    let claims = ctx
        .reauth
        .key
        .verify(state, now)
        .map_err(|e| bad(format!("This re-authorization link cannot be used: {e}. Open the newest link from `kubectl get channelconnections -o wide` or the latest email.")))?;
    let who = format!("{}/{}", claims.ns, claims.n);
    if let Some(error) = q.get("error") {
        info!(connection = %who, error = %truncate(error), "authorization declined at the provider");
        return Err(bad(format!(
            "The provider reported \"{}\": the connection {who} stays as it was. Open the link again to retry.",
            truncate(error)
        )));
    }
    let code = q
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= MAX_PARAM)
        .ok_or_else(|| bad("The provider sent no authorization code."))?;

    let conns: Api<ChannelConnection> = Api::namespaced(ctx.client.clone(), &claims.ns);
    let conn = conns
        .get_opt(&claims.n)
        .await
        .map_err(internal)?
        .filter(|c| c.uid().as_deref() == Some(claims.u.as_str()))
        .ok_or_else(|| bad(format!("The connection {who} no longer exists.")))?;
    let current = conn
        .status
        .as_ref()
        .and_then(|s| s.reauth_url.as_deref())
        .and_then(state_of);
    if current.as_deref() != Some(state.as_str()) {
        return Err(bad(format!(
            "This link for {who} was already used or replaced by a newer one; nothing was changed."
        )));
    }

    let provider = ResolvedProvider::fetch(
        &ctx.client,
        &conn.spec.provider_ref,
        &claims.ns,
        &ctx.operator_namespace,
    )
    .await
    .map_err(internal)?
    .ok_or_else(|| bad(format!("The provider of {who} no longer exists.")))?;
    let app = load_app(&ctx.client, ctx.http.policy(), &provider, None)
        .await
        .map_err(internal)?
        .map_err(|m| (StatusCode::SERVICE_UNAVAILABLE, m))?;
    let validator = validator_for(app.settings.type_);
    let verifier = app
        .preset()
        .pkce
        .then(|| ctx.reauth.key.pkce_verifier(&claims));
    let redirect_uri = ctx.reauth.redirect_uri(&app);
    let tokens = match validator
        .exchange_code(&ctx.http, &app, code, &redirect_uri, verifier.as_deref())
        .await
    {
        Renewal::Renewed(t) => t,
        Renewal::Rejected { message }
        | Renewal::NeedsPerson { message, .. }
        | Renewal::Misconfigured { message }
        | Renewal::Unsupported { message } => {
            warn!(connection = %who, %message, "code exchange refused");
            return Err(bad(format!(
                "The provider refused the login ({message}). Open the link again to retry."
            )));
        }
        Renewal::Transient { message, .. } => {
            return Err((
                StatusCode::BAD_GATEWAY,
                format!(
                    "The provider could not be reached ({message}). Open the link again in a moment."
                ),
            ));
        }
    };

    // Before writing anything: the new token must work and fit the connection.
    match validator.check(&ctx.http, &app, &tokens.access_token).await {
        Verdict::Valid(grant) => {
            if let Some(problem) = unfit_for(&conn.spec, &grant) {
                info!(connection = %who, %problem, "login did not fit the connection");
                return Err(bad(format!(
                    "{problem}. Nothing was changed; open the link again and log in with the right account."
                )));
            }
        }
        Verdict::Invalid { message, .. }
        | Verdict::Misconfigured { message }
        | Verdict::Transient { message, .. } => {
            return Err((
                StatusCode::BAD_GATEWAY,
                format!("The new token could not be verified ({message}); nothing was changed."),
            ));
        }
    }

    let mut attempts = 0;
    loop {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(ctx.client.clone(), &claims.ns);
        let version = secrets
            .get_opt(&conn.spec.secret_ref.name)
            .await
            .map_err(internal)?
            .and_then(|s| s.resource_version());
        match write_tokens(
            &ctx.client,
            &claims.ns,
            &conn.spec.secret_ref,
            &tokens,
            version.as_deref(),
        )
        .await
        {
            Ok(_) => break,
            Err(WriteError::Conflict) if attempts < 3 => attempts += 1,
            Err(e) => return Err(internal(e)),
        }
    }

    // Single use: the link is withdrawn, and a check is asked for at once.
    let ask = json!({"metadata": {"annotations": {CHECK_REQUESTED_ANNOTATION: format!("callback-{}", now.as_millisecond())}}});
    conns
        .patch(&claims.n, &PatchParams::default(), &Patch::Merge(&ask))
        .await
        .map_err(internal)?;
    conns
        .patch_status(
            &claims.n,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"reauthUrl": null}})),
        )
        .await
        .map_err(internal)?;
    info!(connection = %who, "re-authorized through the callback; tokens written");
    let name = conn
        .spec
        .account
        .as_ref()
        .and_then(|a| a.display_name.clone())
        .unwrap_or_else(|| claims.n.clone());
    Ok(format!(
        "{name} ({who}) is connected again. relink is checking it now; you can close this page."
    ))
}

fn internal(e: impl std::fmt::Display) -> Failure {
    warn!(error = %e, "callback failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "relink could not finish: the operator's logs say why. Nothing was changed; try the link again.".into(),
    )
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(status: StatusCode, title: &str, message: &str, ok: bool) -> Response {
    let color = if ok { "#1a7f37" } else { "#cf222e" };
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>relink: {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1f2328}}
h1{{color:{color};font-size:1.5rem}}</style></head>
<body><h1>{title}</h1><p>{}</p><p style="color:#59636e">relink keeps your channel connections healthy.</p></body></html>"#,
        escape(message)
    );
    (status, Html(html)).into_response()
}
