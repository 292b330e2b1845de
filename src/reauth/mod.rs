//! Re-authorization: PKCE today; the authorization URL, signed state and callback build on it.

use base64::Engine;
use sha2::{Digest, Sha256};

/// RFC 7636 S256 code challenge of a verifier: BASE64URL-NOPAD(SHA256(verifier)).
pub fn pkce_s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            super::pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
