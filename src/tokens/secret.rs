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

/// Reads Secret `namespace/name` as a check needs it: the whole object but
/// `metadata.managedFields`, `None` when it does not exist. The API server sends the managed
/// fields with every read; decoding them builds a JSON tree per writer that nobody reads.
pub async fn get(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Secret>, kube::Error> {
    let api: Api<ReadSecret> = Api::namespaced(client.clone(), namespace);
    Ok(api.get_opt(name).await?.map(|s| s.0))
}

/// A Secret decoded without its managed fields (see [`get`]).
#[derive(Clone, Debug)]
struct ReadSecret(Secret);

impl kube::Resource for ReadSecret {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> std::borrow::Cow<'_, str> {
        Secret::kind(dt)
    }
    fn group(dt: &()) -> std::borrow::Cow<'_, str> {
        Secret::group(dt)
    }
    fn version(dt: &()) -> std::borrow::Cow<'_, str> {
        Secret::version(dt)
    }
    fn plural(dt: &()) -> std::borrow::Cow<'_, str> {
        Secret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> serde::Deserialize<'de> for ReadSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: Meta,
            data: Option<BTreeMap<String, ByteString>>,
            #[serde(rename = "type")]
            type_: Option<String>,
            immutable: Option<bool>,
        }
        /// `ObjectMeta` but `managedFields` (and `selfLink`, which no server sends).
        #[derive(Default, serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta {
            name: Option<String>,
            generate_name: Option<String>,
            namespace: Option<String>,
            uid: Option<String>,
            resource_version: Option<String>,
            generation: Option<i64>,
            creation_timestamp: Option<Time>,
            deletion_timestamp: Option<Time>,
            deletion_grace_period_seconds: Option<i64>,
            labels: Option<BTreeMap<String, String>>,
            annotations: Option<BTreeMap<String, String>>,
            owner_references: Option<Vec<OwnerReference>>,
            finalizers: Option<Vec<String>>,
        }
        let w = Wire::deserialize(d)?;
        let m = w.metadata;
        Ok(ReadSecret(Secret {
            metadata: ObjectMeta {
                name: m.name,
                generate_name: m.generate_name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                generation: m.generation,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                deletion_grace_period_seconds: m.deletion_grace_period_seconds,
                labels: m.labels,
                annotations: m.annotations,
                owner_references: m.owner_references,
                finalizers: m.finalizers,
                managed_fields: None,
                self_link: None,
            },
            data: w.data,
            type_: w.type_,
            immutable: w.immutable,
            string_data: None,
        }))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_secret_is_the_secret_without_its_managed_fields() {
        let json = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "tok",
                "namespace": "ns",
                "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                "resourceVersion": "42",
                "creationTimestamp": "2026-12-01T10:00:00Z",
                "labels": {"relink.dev/token": "true"},
                "annotations": {"relink.dev/tokens-issued-at": "2026-12-01T10:00:00Z"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o",
                    "uid": "u"}],
                "finalizers": ["example.test/keep"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:access_token": {}}}}]
            },
            "data": {"access_token": "dG9rZW4="},
            "type": "Opaque",
            "immutable": false
        });
        let read: ReadSecret = serde_json::from_value(json.clone()).unwrap();
        let mut full: Secret = serde_json::from_value(json).unwrap();
        assert!(full.metadata.managed_fields.take().is_some());
        assert_eq!(read.0, full);
        assert_eq!(read_key(&read.0, "access_token").unwrap().expose(), "token");
    }
}
