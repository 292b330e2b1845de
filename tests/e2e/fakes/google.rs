//! The Google side of the fake: tokeninfo, the token endpoint (code exchange and refresh) and
//! the mailbox the tokens reach.

use std::collections::HashMap;

use axum::extract::{Form, State};
use axum::response::Response;
use relink::api::{ProviderEndpoints, ProviderType};
use serde_json::json;

use super::*;
use crate::fixtures::{Scenario, TestConnection};

pub(crate) const GOOGLE_CLIENT: &str = "418230118870-relinke2e.apps.googleusercontent.com";
pub(crate) const MAILBOX: &str = "ann@example.com";
pub(crate) const GOOGLE_SUB: &str = "110248495921238986420";
pub(crate) const GMAIL_READ: &str = "https://www.googleapis.com/auth/gmail.readonly";
pub(crate) const GMAIL_SEND: &str = "https://www.googleapis.com/auth/gmail.send";
/// What Google's tokeninfo lists for a consent to `openid email <gmail>`.
pub(crate) const USERINFO_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";

/// What Google's tokeninfo says about one access token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum GoogleAnswer {
    Valid,
    /// Revoked (or expired): HTTP 400 `invalid_token`.
    Revoked,
    Unavailable,
    Garbage,
}

#[derive(Clone, Debug)]
pub(crate) struct GoogleToken {
    pub(crate) email: String,
    pub(crate) sub: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) exp: i64,
    pub(crate) answer: GoogleAnswer,
}

/// A refresh token and what it grants.
#[derive(Clone, Debug)]
pub(crate) struct GoogleGrant {
    pub(crate) email: String,
    pub(crate) sub: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) revoked: bool,
}

impl Fake {
    /// An access token (one hour) and a refresh token for the mailbox.
    pub(crate) fn google_tokens(&self, scopes: &[&str]) -> (String, String) {
        let access = mint("ya29.a0Ae");
        let refresh = mint("1//0g");
        let mut w = self.world();
        w.issued.extend([access.clone(), refresh.clone()]);
        w.google.insert(
            access.clone(),
            GoogleToken {
                email: MAILBOX.into(),
                sub: GOOGLE_SUB.into(),
                scopes: strings(scopes),
                exp: now() + 3599,
                answer: GoogleAnswer::Valid,
            },
        );
        w.refresh.insert(
            refresh.clone(),
            GoogleGrant {
                email: MAILBOX.into(),
                sub: GOOGLE_SUB.into(),
                scopes: strings(scopes),
                revoked: false,
            },
        );
        (access, refresh)
    }

    pub(crate) fn edit_google(&self, token: &str, edit: impl FnOnce(&mut GoogleToken)) {
        let mut w = self.world();
        edit(w.google.get_mut(token).expect("a token the fake issued"));
    }

    pub(crate) fn set_google(&self, token: &str, answer: GoogleAnswer) {
        self.edit_google(token, |t| t.answer = answer);
    }

    pub(crate) fn revoke_refresh(&self, token: &str) {
        let mut w = self.world();
        w.refresh.get_mut(token).expect("issued").revoked = true;
    }
}

/// `POST https://oauth2.googleapis.com/tokeninfo` with `access_token=…` in the form body
/// (Google accepts GET and POST; relink keeps the token out of the URL).
pub(crate) async fn tokeninfo(
    State(world): State<Shared>,
    Form(q): Form<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/tokeninfo", &q);
    let invalid = || {
        json_status(
            400,
            json!({"error": "invalid_token", "error_description": "Invalid Value"}),
        )
    };
    let token = q.get("access_token").cloned().unwrap_or_default();
    let Some(t) = w.google.get(&token).cloned() else {
        return invalid();
    };
    match t.answer {
        GoogleAnswer::Valid if t.exp > now() => json_status(
            200,
            json!({
                "azp": GOOGLE_CLIENT,
                "aud": GOOGLE_CLIENT,
                "sub": t.sub,
                "scope": t.scopes.join(" "),
                "exp": t.exp.to_string(),
                "expires_in": (t.exp - now()).to_string(),
                "email": t.email,
                "email_verified": "true",
                "access_type": "offline",
            }),
        ),
        GoogleAnswer::Valid | GoogleAnswer::Revoked => invalid(),
        GoogleAnswer::Unavailable => unavailable(),
        GoogleAnswer::Garbage => garbage(),
    }
}

/// `POST https://oauth2.googleapis.com/token` (form, client credentials in the form).
pub(crate) async fn google_token(
    State(world): State<Shared>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut w = world.lock().expect("world");
    w.record("/token", &form);
    let param = |k: &str| form.get(k).cloned().unwrap_or_default();
    if param("client_id") != GOOGLE_CLIENT || param("client_secret") != w.google_secret {
        return json_status(
            401,
            json!({"error": "invalid_client", "error_description": "Unauthorized"}),
        );
    }
    if param("grant_type") != "refresh_token" {
        return json_status(
            400,
            json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}),
        );
    }
    let grant = match w.refresh.get(&param("refresh_token")) {
        Some(g) if !g.revoked => g.clone(),
        _ => {
            return json_status(
                400,
                json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
            );
        }
    };
    let access = mint("ya29.a0Ae");
    w.issued.push(access.clone());
    w.google.insert(
        access.clone(),
        GoogleToken {
            email: grant.email,
            sub: grant.sub,
            scopes: grant.scopes.clone(),
            exp: now() + 3599,
            answer: GoogleAnswer::Valid,
        },
    );
    json_status(
        200,
        json!({
            "access_token": access,
            "expires_in": 3599,
            "scope": grant.scopes.join(" "),
            "token_type": "Bearer",
        }),
    )
}

/// Provider `google`: tokeninfo, token and authorization endpoints moved to the fake.
pub(crate) async fn google_provider(sc: &Scenario, fake: &Fake) {
    let endpoints = ProviderEndpoints {
        authorization_url: Some(fake.url("/google/o/oauth2/v2/auth")),
        token_url: Some(fake.url("/google/token")),
        introspection_url: Some(fake.url("/google/tokeninfo")),
        ..Default::default()
    };
    let secret = fake.google_secret();
    apply_provider(
        sc,
        "google",
        ProviderType::Google,
        GOOGLE_CLIENT,
        &secret,
        &[],
        endpoints,
    )
    .await;
}

pub(crate) async fn google_scenario(prefix: &str) -> (Scenario, Fake) {
    let sc = Scenario::builder(prefix).start().await;
    let fake = Fake::start().await;
    google_provider(&sc, &fake).await;
    (sc, fake)
}

/// Connection `name` of provider `google` for [`MAILBOX`] requiring Gmail read access.
pub(crate) async fn google_connection(sc: &Scenario, name: &str, data: &[(&str, &str)]) {
    let secret = format!("{name}-token");
    sc.secret(&secret, data).await;
    let chan = TestConnection::default()
        .provider("google")
        .secret(&secret)
        .account(MAILBOX)
        .requires(&[GMAIL_READ]);
    sc.apply_connection(name, chan).await;
}
