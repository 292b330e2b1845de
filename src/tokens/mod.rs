//! What a check and the OAuth callback read and write besides the connection: the provider
//! application with its client secret ([`app`]) and the token Secret ([`secret`]). Shared by the
//! controller and `reauth`, so neither imports the other for them.

pub mod app;
pub mod secret;

pub use app::{
    ClientSecretCache, KnownVersions, NotReady, ResolvedProvider, Reuse, SecretKey, load_app,
};
pub use secret::{
    REFRESH_EXPIRES_ANNOTATION, TOKENS_ISSUED_ANNOTATION, WriteError, parse_expiry, read_key,
    refresh_expires_at, tokens_issued_at, write_tokens, write_tokens_labelled,
};
