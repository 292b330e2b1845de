//! Token bookkeeping: which opaque string belongs to which grant, and its state.

use std::collections::HashMap;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Call, IssuedTokens, Mode};

pub(super) const CODE_TTL_SECS: i64 = 600;
pub(super) const DEFAULT_TTL_SECS: i64 = 3600;

pub(super) struct GrantRec {
    pub(super) account_id: String,
    pub(super) account_name: String,
    pub(super) scopes: Vec<String>,
    pub(super) revoked: bool,
    /// Revoked because a rotated refresh token of this family was presented again.
    pub(super) revoked_for_reuse: bool,
}

pub(super) struct AccessRec {
    pub(super) grant: usize,
    pub(super) expires_at: Option<i64>,
}

pub(super) struct RefreshRec {
    pub(super) grant: usize,
    pub(super) access_token: String,
    pub(super) active: bool,
    /// Unix milliseconds of the rotation that spent this refresh token.
    pub(super) rotated_at_ms: Option<i64>,
}

pub(super) struct CodeRec {
    pub(super) redirect_uri: String,
    pub(super) account_id: String,
    pub(super) account_name: String,
    pub(super) scopes: Vec<String>,
    /// (challenge, method)
    pub(super) challenge: Option<(String, String)>,
    pub(super) expires_at: i64,
    pub(super) used: bool,
}

/// Everything mutable. Spent codes, rotated refresh tokens and revoked grants are
/// kept (flagged) so later requests using them are still attributed to an account.
#[derive(Default)]
pub(super) struct Store {
    pub(super) grants: Vec<GrantRec>,
    pub(super) access: HashMap<String, AccessRec>,
    pub(super) refresh: HashMap<String, RefreshRec>,
    pub(super) codes: HashMap<String, CodeRec>,
    pub(super) mode: Mode,
    /// Failure mode of refresh-token grants only, overriding `mode` for them.
    pub(super) refresh_mode: Option<Mode>,
    pub(super) calls: Vec<Call>,
    /// Refresh answers held back now (see `Sandbox::hold_refreshes`).
    pub(super) held: usize,
}

pub(super) fn random_token(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

pub(super) fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl Store {
    pub(super) fn add_grant(
        &mut self,
        account_id: String,
        account_name: String,
        scopes: Vec<String>,
    ) -> usize {
        self.grants.push(GrantRec {
            account_id,
            account_name,
            scopes,
            revoked: false,
            revoked_for_reuse: false,
        });
        self.grants.len() - 1
    }

    pub(super) fn mint(
        &mut self,
        grant: usize,
        ttl_secs: Option<i64>,
        refreshable: bool,
    ) -> IssuedTokens {
        let access_token = random_token("sbx-at-");
        let expires_at = ttl_secs.map(|t| now_secs() + t);
        self.access
            .insert(access_token.clone(), AccessRec { grant, expires_at });
        let refresh_token = refreshable.then(|| {
            let rt = random_token("sbx-rt-");
            let rec = RefreshRec {
                grant,
                access_token: access_token.clone(),
                active: true,
                rotated_at_ms: None,
            };
            self.refresh.insert(rt.clone(), rec);
            rt
        });
        IssuedTokens {
            access_token,
            refresh_token,
            expires_at,
        }
    }

    /// The grant and expiry of an access token that is currently usable.
    pub(super) fn active_access(&self, token: &str) -> Option<(&GrantRec, Option<i64>)> {
        let rec = self.access.get(token)?;
        let grant = &self.grants[rec.grant];
        let live = !grant.revoked && rec.expires_at.is_none_or(|e| e > now_secs());
        live.then_some((grant, rec.expires_at))
    }

    pub(super) fn account_of(&self, token: &str) -> Option<String> {
        if let Some(code) = self.codes.get(token) {
            return Some(code.account_id.clone());
        }
        let grant = self
            .access
            .get(token)
            .map(|a| a.grant)
            .or_else(|| self.refresh.get(token).map(|r| r.grant))?;
        Some(self.grants[grant].account_id.clone())
    }

    pub(super) fn grant_mut(&mut self, access_token: &str) -> Option<&mut GrantRec> {
        let idx = self.access.get(access_token)?.grant;
        self.grants.get_mut(idx)
    }

    pub(super) fn exchange_code(
        &mut self,
        form: &Form,
    ) -> Result<(IssuedTokens, usize), &'static str> {
        let rec = self
            .codes
            .get_mut(field(form, "code"))
            .ok_or("unknown authorization code")?;
        if rec.used {
            return Err("authorization code already used");
        }
        if rec.expires_at <= now_secs() {
            return Err("authorization code expired");
        }
        if rec.redirect_uri != field(form, "redirect_uri") {
            return Err("redirect_uri does not match the authorization request");
        }
        if let Some((challenge, method)) = &rec.challenge
            && !pkce_matches(method, challenge, field(form, "code_verifier"))
        {
            return Err("code_verifier does not match the code_challenge");
        }
        rec.used = true;
        let (id, name, scopes) = (
            rec.account_id.clone(),
            rec.account_name.clone(),
            rec.scopes.clone(),
        );
        let grant = self.add_grant(id, name, scopes);
        Ok((self.mint(grant, Some(DEFAULT_TTL_SECS), true), grant))
    }

    /// Rotates a refresh token. A spent one presented again is refused, and with
    /// `reuse_detection` its whole family is revoked, unless it was spent less than
    /// `grace` ago.
    pub(super) fn refresh_grant(
        &mut self,
        form: &Form,
        reuse_detection: bool,
        grace: std::time::Duration,
    ) -> Result<(IssuedTokens, usize), &'static str> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let rec = self
            .refresh
            .get_mut(field(form, "refresh_token"))
            .ok_or("unknown refresh token")?;
        let grant = rec.grant;
        if self.grants[grant].revoked {
            return Err("grant revoked");
        }
        if !rec.active {
            let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
            let in_grace = rec
                .rotated_at_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < grace_ms);
            if !in_grace {
                if reuse_detection {
                    let g = &mut self.grants[grant];
                    g.revoked = true;
                    g.revoked_for_reuse = true;
                    return Err("refresh token reuse detected: the token family is revoked");
                }
                return Err("rotated refresh token");
            }
        }
        rec.active = false;
        rec.rotated_at_ms.get_or_insert(now_ms);
        let ttl = match self.access.get(&rec.access_token) {
            Some(AccessRec {
                expires_at: None, ..
            }) => None,
            _ => Some(DEFAULT_TTL_SECS),
        };
        Ok((self.mint(grant, ttl, true), grant))
    }
}

/// Checks a PKCE verifier (RFC 7636).
pub(super) fn pkce_matches(method: &str, challenge: &str, verifier: &str) -> bool {
    match method {
        "plain" => !verifier.is_empty() && verifier == challenge,
        "S256" => pkce_s256(verifier) == challenge,
        _ => false,
    }
}

/// RFC 7636 S256 challenge: BASE64URL-NOPAD(SHA256(verifier)).
pub(super) fn pkce_s256(verifier: &str) -> String {
    crate::reauth::pkce_s256(verifier)
}

pub(super) type Form = HashMap<String, String>;

pub(super) fn parse_form(body: &[u8]) -> Form {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub(super) fn field<'a>(form: &'a Form, key: &str) -> &'a str {
    form.get(key).map(String::as_str).unwrap_or("")
}

pub(super) fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
