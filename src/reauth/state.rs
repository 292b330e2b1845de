//! The OAuth `state` parameter: signed (HMAC-SHA256), naming the connection, expiring, and
//! carrying a nonce from which the PKCE verifier is derived, so no database is needed.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Key in the state-key Secret.
const KEY_FIELD: &str = "key";

/// The signing key, shared by every replica through a Secret the operator creates if absent.
#[derive(Clone)]
pub struct StateKey(Vec<u8>);

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([redacted])")
    }
}

/// What a state names. Short field names keep the URL short.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateClaims {
    /// Namespace of the connection.
    pub ns: String,
    /// Name of the connection.
    pub n: String,
    /// UID of the connection (a re-created connection of the same name does not match).
    pub u: String,
    /// The provider setup the link was made for; any change retires the link.
    pub p: ProviderBinding,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Random nonce; also the seed of the PKCE verifier.
    pub nonce: String,
}

/// The provider object and OAuth client a link belongs to. A code obtained through one setup is
/// only ever exchanged with that setup: a provider edited, re-created or swapped in
/// `spec.providerRef` after the link was made makes the link stop working.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderBinding {
    /// `ChannelProvider` or `ClusterChannelProvider`.
    pub k: String,
    /// Name of the provider object.
    pub n: String,
    /// UID of the provider object.
    pub u: String,
    /// `metadata.generation` of the provider object.
    pub g: i64,
    /// OAuth client ID.
    pub c: String,
    /// Redirect URI sent to the provider.
    pub r: String,
}

/// Why a state was refused. Messages are shown to the person who followed the link.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature is not valid")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

impl StateKey {
    /// A key from raw bytes (tests; at least 32 bytes in production).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Reads the key from `namespace/name`, creating the Secret with a random key when absent.
    /// Concurrent replicas converge: the loser of the create race reads the winner's key.
    pub async fn load_or_create(
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Self, String> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let read = |s: Secret| -> Result<Self, String> {
            let bytes = s
                .data
                .and_then(|d| d.get(KEY_FIELD).map(|b| b.0.clone()))
                .filter(|b| b.len() >= 32)
                .ok_or_else(|| {
                    format!("Secret {namespace}/{name} has no 32-byte key {KEY_FIELD:?}")
                })?;
            Ok(Self(bytes))
        };
        match api.get_opt(name).await {
            Ok(Some(s)) => return read(s),
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "cannot read the state key Secret {namespace}/{name}: {e}"
                ));
            }
        }
        let key = Self::random();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "relink".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                KEY_FIELD.to_owned(),
                ByteString(key.0.clone()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(key),
            Err(kube::Error::Api(e)) if e.code == 409 => match api.get(name).await {
                Ok(s) => read(s),
                Err(e) => Err(format!(
                    "cannot read the state key Secret {namespace}/{name}: {e}"
                )),
            },
            Err(e) => Err(format!(
                "cannot create the state key Secret {namespace}/{name}: {e}"
            )),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        // HMAC accepts keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for p in parts {
            mac.update(p);
        }
        mac
    }

    /// `base64url(claims).base64url(hmac)`.
    pub fn sign(&self, claims: &StateClaims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let sig = B64.encode(self.mac(&[payload.as_bytes()]).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks signature and expiry; constant-time comparison of the signature.
    pub fn verify(&self, state: &str, now: jiff::Timestamp) -> Result<StateClaims, StateError> {
        let (payload, sig) = state.split_once('.').ok_or(StateError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| StateError::Malformed)?;
        self.mac(&[payload.as_bytes()])
            .verify_slice(&sig)
            .map_err(|_| StateError::BadSignature)?;
        let bytes = B64.decode(payload).map_err(|_| StateError::Malformed)?;
        let claims: StateClaims =
            serde_json::from_slice(&bytes).map_err(|_| StateError::Malformed)?;
        if claims.exp <= now.as_second() {
            return Err(StateError::Expired);
        }
        Ok(claims)
    }

    /// The PKCE verifier of a state: 43 URL-safe characters derived from the nonce, so the
    /// callback can recompute it.
    pub fn pkce_verifier(&self, claims: &StateClaims) -> String {
        B64.encode(
            self.mac(&[b"pkce:", claims.nonce.as_bytes()])
                .finalize()
                .into_bytes(),
        )
    }
}

/// A fresh random nonce.
pub fn nonce() -> String {
    let mut n = [0u8; 16];
    rand::rng().fill_bytes(&mut n);
    B64.encode(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> StateClaims {
        StateClaims {
            ns: "ns".into(),
            n: "chan".into(),
            u: "uid-1".into(),
            p: ProviderBinding::default(),
            exp,
            nonce: nonce(),
        }
    }

    #[test]
    fn signed_state_round_trips_and_rejects_tampering() {
        let key = StateKey::random();
        let now = jiff::Timestamp::now();
        let c = claims(now.as_second() + 60);
        let state = key.sign(&c);
        assert_eq!(key.verify(&state, now).unwrap(), c);

        let (payload, sig) = state.split_once('.').unwrap();
        let mut forged = c.clone();
        forged.n = "other".into();
        let forged_payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            key.verify(&format!("{forged_payload}.{sig}"), now),
            Err(StateError::BadSignature)
        );
        assert_eq!(
            StateKey::random().verify(&state, now),
            Err(StateError::BadSignature)
        );
        assert_eq!(key.verify(payload, now), Err(StateError::Malformed));
        assert_eq!(
            key.verify("garbage.garbage!", now),
            Err(StateError::Malformed)
        );
    }

    #[test]
    fn expired_state_is_refused() {
        let key = StateKey::random();
        let now = jiff::Timestamp::now();
        let state = key.sign(&claims(now.as_second() - 1));
        assert_eq!(key.verify(&state, now), Err(StateError::Expired));
    }

    #[test]
    fn pkce_verifier_is_stable_and_valid() {
        let key = StateKey::random();
        let c = claims(0);
        let v = key.pkce_verifier(&c);
        assert_eq!(v, key.pkce_verifier(&c));
        assert_eq!(v.len(), 43, "RFC 7636 wants 43..128 characters");
        assert_ne!(
            v,
            key.pkce_verifier(&claims(0)),
            "another nonce, another verifier"
        );
    }
}
