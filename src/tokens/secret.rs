//! The token Secret of a connection: reading its keys, and writing new tokens into only the keys
//! relink owns (every other key is left untouched).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::api::TokenSecretRef;
use crate::providers::{NewTokens, Token};

/// A Secret value as a token: UTF-8, surrounding whitespace trimmed (files often end in a
/// newline), non-empty and without inner whitespace.
pub fn read_key(secret: &Secret, key: &str) -> Option<Token> {
    let raw = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&raw.0).ok()?.trim();
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return None;
    }
    Some(Token::new(text))
}

/// `expires_at` as RFC 3339 or Unix seconds.
pub fn parse_expiry(v: &str) -> Option<jiff::Timestamp> {
    if let Ok(secs) = v.parse::<i64>() {
        return jiff::Timestamp::from_second(secs).ok();
    }
    v.parse().ok()
}

/// Annotation relink sets on a token Secret whenever it writes new tokens (refresh or
/// re-authorization): when they were issued. Every connection of the Secret, and every replica
/// after a restart, paces its refreshes from it, so a token one connection just refreshed is not
/// refreshed again by another.
pub const TOKENS_ISSUED_ANNOTATION: &str = "relink.dev/tokens-issued-at";

/// Annotation relink sets on a token Secret when the provider said when the refresh token
/// itself expires (LinkedIn's 365 days, TikTok, Google's time-limited access): a refresh does
/// not extend it, so the connection turns `Expiring` ahead of it.
pub const REFRESH_EXPIRES_ANNOTATION: &str = "relink.dev/refresh-token-expires-at";

/// When the refresh token in `secret` stops working, if the provider said so.
pub fn refresh_expires_at(secret: &Secret) -> Option<jiff::Timestamp> {
    annotated_time(secret, REFRESH_EXPIRES_ANNOTATION)
}

/// When the tokens in `secret` were issued, if relink wrote them.
pub fn tokens_issued_at(secret: &Secret) -> Option<jiff::Timestamp> {
    annotated_time(secret, TOKENS_ISSUED_ANNOTATION)
}

/// A timestamp relink wrote in annotation `key` of a token Secret.
fn annotated_time(secret: &Secret, key: &str) -> Option<jiff::Timestamp> {
    secret.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Why new tokens were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else changed the Secret since it was read (optimistic concurrency).
    #[error("the Secret changed while relink was writing it")]
    Conflict,
    #[error("cannot write the token Secret: {0}")]
    Kube(#[from] kube::Error),
}

/// Writes new tokens into the keys `secret_ref` names, leaving every other key untouched.
/// With `expected_version`, the write fails with [`WriteError::Conflict`] if the Secret changed
/// since; a missing Secret is created. Returns the Secret's new `resourceVersion`.
pub async fn write_tokens(
    client: &Client,
    namespace: &str,
    secret_ref: &TokenSecretRef,
    tokens: &NewTokens,
    expected_version: Option<&str>,
) -> Result<Option<String>, WriteError> {
    write_tokens_labelled(
        client,
        namespace,
        secret_ref,
        tokens,
        expected_version,
        &BTreeMap::new(),
    )
    .await
}

/// [`write_tokens`], also putting `labels` on the Secret (a created Secret has them from the
/// start, so it is never seen without them).
pub async fn write_tokens_labelled(
    client: &Client,
    namespace: &str,
    secret_ref: &TokenSecretRef,
    tokens: &NewTokens,
    expected_version: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> Result<Option<String>, WriteError> {
    use base64::Engine;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let values = token_values(secret_ref, tokens);
    let annotations = token_annotations(tokens);
    // A key relink owns without a value (no expiry) is removed by the merge patch.
    let data: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(key, value)| {
            let value = value.as_ref().map_or(serde_json::Value::Null, |v| {
                json!(base64::engine::general_purpose::STANDARD.encode(v.as_bytes()))
            });
            (key.clone(), value)
        })
        .collect();
    let mut patch = json!({
        "data": data,
        "metadata": { "annotations": &annotations },
    });
    if let Some(rv) = expected_version {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    if !labels.is_empty() {
        patch["metadata"]["labels"] = json!(labels);
    }
    let patched = api
        .patch(
            &secret_ref.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
    match patched {
        Ok(s) => Ok(s.resource_version()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Conflict),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_ref.name.clone()),
                    labels: (!labels.is_empty()).then(|| labels.clone()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                data: Some(
                    values
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, ByteString(v?.into_bytes()))))
                        .collect(),
                ),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(s) => Ok(s.resource_version()),
                Err(kube::Error::Api(e)) if e.code == 409 => Err(WriteError::Conflict),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The keys relink owns in the token Secret, with their new values: the access token, the
/// refresh token when the provider sent one (an absent one keeps the old), and the expiry
/// (`None`: remove it, the new token does not expire).
fn token_values(
    secret_ref: &TokenSecretRef,
    tokens: &NewTokens,
) -> BTreeMap<String, Option<String>> {
    let mut values = BTreeMap::from([(
        secret_ref.access_token_key.clone(),
        Some(tokens.access_token.expose().to_owned()),
    )]);
    if let Some(rt) = &tokens.refresh_token {
        values.insert(
            secret_ref.refresh_token_key.clone(),
            Some(rt.expose().to_owned()),
        );
    }
    values.insert(
        secret_ref.expires_at_key.clone(),
        tokens.expires_at.map(|t| t.to_string()),
    );
    values
}

/// When the tokens were issued, and when the refresh token expires if the provider said.
fn token_annotations(tokens: &NewTokens) -> BTreeMap<String, String> {
    let issued = jiff::Timestamp::now().to_string();
    let mut annotations = BTreeMap::from([(TOKENS_ISSUED_ANNOTATION.to_owned(), issued)]);
    if let Some(at) = tokens.refresh_expires_at {
        annotations.insert(REFRESH_EXPIRES_ANNOTATION.to_owned(), at.to_string());
    }
    annotations
}
