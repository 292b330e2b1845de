//! Token renewal that never loses a rotated token (see `docs/refresh.md`).
//!
//! - **One refresh per Secret at a time** in this process: a refresh holds the Secret's
//!   [`Flights`] entry from re-reading the Secret to writing the answer. A connection that waited
//!   re-reads the Secret and uses what the first one wrote instead of refreshing again.
//! - **Fenced**: a refresh starts from the Secret content it read under that lock, and its
//!   answer is written with that `resourceVersion` as a precondition; a process that is no
//!   longer leader starts none.
//! - **Never dropped**: on a conflict the Secret is re-read and [`on_conflict`] decides; transient
//!   API errors are retried with backoff; an answer that still could not be written is kept in
//!   memory and written before the next refresh of that Secret would call the provider.
//! - **No false alarm**: after `invalid_grant` the Secret is re-read at [`REJECTED_REREADS`]
//!   before the refresh token is declared dead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::OwnedMutexGuard;
use tracing::{info, warn};

use super::Context;
use crate::api::{
    ChannelConnection, ChannelConnectionStatus, ProviderType, Reason, Timings, TokenSecretRef,
};
use crate::providers::{App, NewTokens, Renewal, Token, Verdict, validator_for};
use crate::telemetry::metrics::ResultLabels;
use crate::tokens::{WriteError, parse_expiry, read_key, tokens_issued_at, write_tokens};

/// Waits before each re-read of the Secret after the provider refused a refresh token
/// (`invalid_grant`): about 7.5 seconds in all for a writer that refreshed with the same token
/// first to land its write.
pub const REJECTED_REREADS: [Duration; 4] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Tries of a Secret read or write that fails transiently (API server unavailable, 429, 5xx,
/// connection errors), 250 ms apart and doubling: about 8 seconds in all.
const API_TRIES: u32 = 6;

/// Conflicts handled in one write before giving up for this check (the answer is kept).
const MAX_CONFLICTS: u32 = 5;

/// At most one `TokenRefreshed` Event per connection in this period.
pub const REFRESH_EVENT_PERIOD: Duration = Duration::from_secs(3600);

/// How often a refresh token must be used to stay alive, by provider type, when the connection
/// does not say: Microsoft revokes refresh tokens unused for 90 days, Google for 6 months.
pub fn default_keep_alive(t: ProviderType) -> Option<Duration> {
    const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);
    match t {
        ProviderType::Microsoft | ProviderType::Google => Some(THIRTY_DAYS),
        ProviderType::Facebook
        | ProviderType::Instagram
        | ProviderType::Linkedin
        | ProviderType::X
        | ProviderType::Slack
        | ProviderType::Tiktok
        | ProviderType::OAuth2 => None,
    }
}

/// The keep-alive period of a connection: `spec.refresh.keepAlive` (range-checked when the
/// spec is read) or the provider type's default.
pub fn keep_alive_period(spec: Option<Duration>, t: ProviderType) -> Option<Duration> {
    spec.or_else(|| default_keep_alive(t))
}

/// Whether a refresh is due to keep an idle refresh token alive: `period` has passed since the
/// last refresh (or, never refreshed by relink, since the connection was created).
pub fn keep_alive_due(
    period: Option<Duration>,
    last_refresh: Option<jiff::Timestamp>,
    created: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> bool {
    let (Some(period), Some(since)) = (period, last_refresh.or(created)) else {
        return false;
    };
    now.as_second().saturating_sub(since.as_second()) >= period.as_secs() as i64
}

/// The verdict of a check whose refresh failed before it: a token that works but could not be
/// renewed is reported as transient (so it is retried with backoff and says why); for a dead
/// token the renewal's failure is the reason (an outage wakes nobody, a refused refresh token is
/// `RefreshFailed`). `describe` words a transient failure for a token that still works.
pub fn after_failed_refresh(
    checked: Verdict,
    failed: Verdict,
    describe: impl FnOnce(&str) -> String,
) -> Verdict {
    match (checked, failed) {
        (
            Verdict::Valid(_),
            Verdict::Transient {
                message,
                retry_after,
            },
        ) => Verdict::Transient {
            message: describe(&message),
            retry_after,
        },
        (
            Verdict::Invalid {
                reason: Reason::Expired | Reason::Revoked,
                ..
            },
            failed,
        ) => failed,
        (checked, _) => checked,
    }
}

/// The token keys of a connection's Secret.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenKeys {
    pub access: Option<Token>,
    pub refresh: Option<Token>,
    pub expires_at: Option<jiff::Timestamp>,
}

impl TokenKeys {
    pub fn read(secret: &Secret, r: &TokenSecretRef) -> Self {
        Self {
            access: read_key(secret, &r.access_token_key),
            refresh: read_key(secret, &r.refresh_token_key),
            expires_at: read_key(secret, &r.expires_at_key).and_then(|v| parse_expiry(v.expose())),
        }
    }
}

/// What to do when writing a refresh answer hit a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// Only other keys changed: write again on the new version.
    Rewrite,
    /// Another writer changed the token keys, but the answer in hand expires later: write it.
    KeepOurs,
    /// Another writer's tokens are at least as new: keep them, drop the answer in hand.
    KeepTheirs,
}

/// Decides a write conflict from the token keys the refresh started from, the keys in the
/// Secret now, and the expiry the provider just answered. "Newer" is the later expiry; a token
/// without expiry never expires; with no way to tell, the other writer (the later write) wins.
pub fn on_conflict(
    started: &TokenKeys,
    current: &TokenKeys,
    ours_expires: Option<jiff::Timestamp>,
) -> OnConflict {
    if started == current {
        return OnConflict::Rewrite;
    }
    if current.access.is_none() {
        return OnConflict::KeepOurs;
    }
    match (ours_expires, current.expires_at) {
        (Some(ours), Some(theirs)) if ours > theirs => OnConflict::KeepOurs,
        (None, Some(_)) => OnConflict::KeepOurs,
        _ => OnConflict::KeepTheirs,
    }
}

/// Backoff of the `n`th try (0-based) of a Kubernetes API call.
fn api_backoff(n: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << n.min(10)))
}

/// Whether a Kubernetes API error is worth retrying.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

type SecretKey = (String, String);

/// Answers that could not be written yet, with the keys they replace.
struct Pending {
    base: TokenKeys,
    tokens: NewTokens,
}

/// Refresh state shared by every reconcile of this process.
#[derive(Default)]
pub struct Shared {
    flights: Mutex<HashMap<SecretKey, Arc<Slot>>>,
    pending: Mutex<HashMap<SecretKey, Pending>>,
    /// When each connection (by uid) last published `TokenRefreshed`.
    events: Mutex<HashMap<String, Instant>>,
    /// When each connection (by uid) first failed to refresh, since its last success.
    failing_since: Mutex<HashMap<String, jiff::Timestamp>>,
}

/// The single flight of one Secret: the lock, how many refreshes finished under it, and how
/// the last one failed (`None` after a success).
#[derive(Default)]
struct Slot {
    finished: AtomicU64,
    last: Arc<tokio::sync::Mutex<Option<Verdict>>>,
}

/// Holds the single flight of one Secret; the entry goes away with the last holder.
struct Flight<'a> {
    shared: &'a Shared,
    key: SecretKey,
    slot: Arc<Slot>,
    /// `finished` when this holder started waiting.
    seen: u64,
    guard: Option<OwnedMutexGuard<Option<Verdict>>>,
}

impl Shared {
    async fn flight(&self, key: SecretKey) -> Flight<'_> {
        let slot = {
            let mut map = self
                .flights
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(key.clone()).or_default().clone()
        };
        let seen = slot.finished.load(Ordering::Acquire);
        let guard = slot.last.clone().lock_owned().await;
        Flight {
            shared: self,
            key,
            slot,
            seen,
            guard: Some(guard),
        }
    }
}

impl Flight<'_> {
    /// How the refresh that finished while this one waited failed: the waiter shares that
    /// result instead of asking the provider again with the same refresh token.
    fn failure_while_waiting(&self) -> Option<Verdict> {
        if self.slot.finished.load(Ordering::Acquire) == self.seen {
            return None;
        }
        self.guard.as_ref().and_then(|g| (**g).clone())
    }

    fn finish(&mut self, failure: Option<Verdict>) {
        if let Some(g) = self.guard.as_mut() {
            **g = failure;
        }
        self.slot.finished.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self
            .shared
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            map.remove(&self.key);
        }
    }
}

/// One connection's token renewal within one check.
pub(super) struct Refresher<'a> {
    pub(super) ctx: &'a Context,
    pub(super) conn: &'a ChannelConnection,
    pub(super) ns: &'a str,
    pub(super) app: &'a App,
    pub(super) refresh_token: Option<Token>,
    /// `resourceVersion` of the Secret as last read or written.
    pub(super) version: Option<String>,
    /// The token keys as the check read them.
    pub(super) started: TokenKeys,
    /// When relink last wrote the tokens in the Secret (by any connection or replica).
    pub(super) issued_at: Option<jiff::Timestamp>,
    /// When the tokens the check now uses were renewed (here or by another writer).
    pub(super) refreshed: Option<jiff::Timestamp>,
    /// A refresh was tried in this check (at most one per check).
    pub(super) attempted: bool,
    /// The scopes the token endpoint said it granted, when this check refreshed.
    pub(super) granted: Option<Vec<String>>,
}

pub(super) enum RefreshResult {
    Renewed(Token, Option<jiff::Timestamp>),
    /// A verdict to report instead of checking further.
    Failed(Verdict),
    NotPossible,
}

impl<'a> Refresher<'a> {
    pub(super) fn new(
        ctx: &'a Context,
        conn: &'a ChannelConnection,
        ns: &'a str,
        app: &'a App,
        secret: &Secret,
    ) -> Self {
        let started = TokenKeys::read(secret, &conn.spec.secret_ref);
        Self {
            ctx,
            conn,
            ns,
            app,
            refresh_token: started.refresh.clone(),
            version: secret.resource_version(),
            started,
            issued_at: tokens_issued_at(secret),
            refreshed: None,
            attempted: false,
            granted: None,
        }
    }

    /// Whether to refresh before checking: within `spec.refresh.before` of expiry (paced at half
    /// life), or to keep an idle refresh token alive. Paced from the later of this connection's
    /// last refresh and when the Secret's tokens were issued (by another connection, say).
    pub(super) fn due(
        &self,
        status: &ChannelConnectionStatus,
        timings: &Timings,
        known_expiry: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> bool {
        let last = status
            .last_refresh_time
            .as_ref()
            .map(|t| t.0)
            .max(self.issued_at);
        let before = timings.refresh_before;
        let keep_alive = keep_alive_period(timings.keep_alive, self.app.settings.type_);
        let created = self.conn.metadata.creation_timestamp.as_ref().map(|t| t.0);
        super::schedule::refresh_due(known_expiry, last, before, now)
            || keep_alive_due(keep_alive, last, created, now)
    }

    /// See [`after_failed_refresh`].
    pub(super) fn settle(
        &self,
        checked: Verdict,
        failed: Verdict,
        expires_at: Option<jiff::Timestamp>,
    ) -> Verdict {
        after_failed_refresh(checked, failed, |m| self.failing_message(m, expires_at))
    }

    /// When the tokens were renewed, if later than `status.lastRefreshTime`: here, or by
    /// another connection of the Secret since this one last looked.
    pub(super) fn renewed_since(
        &self,
        status: &ChannelConnectionStatus,
    ) -> Option<jiff::Timestamp> {
        self.refreshed.or(self
            .issued_at
            .filter(|t| status.last_refresh_time.as_ref().is_none_or(|l| l.0 < *t)))
    }

    pub(super) fn observed(&self, mut o: super::Observed) -> super::Observed {
        o.secret_version = self.version.clone();
        o
    }

    fn count(&self, result: &str) {
        self.ctx
            .metrics
            .refreshes
            .get_or_create(&ResultLabels {
                provider: self.conn.spec.provider_ref.name.clone(),
                result: result.into(),
            })
            .inc();
    }

    fn key(&self) -> SecretKey {
        (self.ns.to_owned(), self.conn.spec.secret_ref.name.clone())
    }

    fn uid(&self) -> String {
        self.conn.uid().unwrap_or_default()
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), self.ns)
    }

    /// Reads the Secret, retrying transient API errors.
    async fn read_secret(&self) -> Result<Option<Secret>, kube::Error> {
        let api = self.secrets();
        let mut n = 0;
        loop {
            match api.get_opt(&self.conn.spec.secret_ref.name).await {
                Err(e) if transient(&e) && n + 1 < API_TRIES => {
                    tokio::time::sleep(api_backoff(n)).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Writes new tokens fenced by `version`, retrying transient API errors.
    async fn write(
        &self,
        tokens: &NewTokens,
        version: Option<&str>,
    ) -> Result<Option<String>, WriteError> {
        let mut n = 0;
        loop {
            let r = write_tokens(
                &self.ctx.client,
                self.ns,
                &self.conn.spec.secret_ref,
                tokens,
                version,
            )
            .await;
            match r {
                Err(WriteError::Kube(e)) if transient(&e) && n + 1 < API_TRIES => {
                    warn!(namespace = %self.ns, name = %self.conn.name_any(), error = %e, "writing refreshed tokens failed; retrying");
                    tokio::time::sleep(api_backoff(n)).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }

    /// Renews the token unless another writer already did: one refresh per Secret at a time.
    pub(super) async fn run(&mut self, access: &Token) -> RefreshResult {
        self.attempted = true;
        let mut flight = self.ctx.refresh.flight(self.key()).await;
        if !self.ctx.may_start_refresh() {
            // The next leader refreshes; two processes must not use one refresh token. Not a
            // verdict about the token either: nobody is told anything.
            self.count("not_leader");
            return RefreshResult::Failed(Verdict::Transient {
                message: "this replica is no longer leader; the new leader refreshes the token"
                    .into(),
                retry_after: None,
            });
        }
        let secret = match self.read_secret().await {
            Ok(Some(s)) => s,
            Ok(None) => return RefreshResult::NotPossible,
            Err(e) => return self.transient(format!("cannot read the token Secret: {e}")),
        };
        let current = TokenKeys::read(&secret, &self.conn.spec.secret_ref);
        let version = secret.resource_version();
        if current != self.started {
            // Renewed by another connection of this Secret (or another writer) meanwhile.
            return self.adopt(&secret, "shared");
        }
        if let Some(verdict) = flight.failure_while_waiting() {
            // The refresh this one waited for failed; trying again at once with the same
            // refresh token could present a token the provider already spent.
            self.count("shared_failure");
            if matches!(verdict, Verdict::Transient { .. }) {
                self.failed_since();
            }
            return RefreshResult::Failed(verdict);
        }
        let result = self.refresh(access, current, version).await;
        flight.finish(match &result {
            RefreshResult::Failed(v) => Some(v.clone()),
            RefreshResult::Renewed(..) | RefreshResult::NotPossible => None,
        });
        result
    }

    /// Asks the provider (unless an earlier answer waits to be written) and writes the answer.
    async fn refresh(
        &mut self,
        access: &Token,
        current: TokenKeys,
        version: Option<String>,
    ) -> RefreshResult {
        if let Some(result) = self.write_pending(&current, version.clone()).await {
            return result;
        }
        let validator = validator_for(self.app.settings.type_);
        let used = current.refresh.clone();
        let answer = validator
            .renew(
                &self.ctx.http,
                self.app,
                current.access.as_ref().unwrap_or(access),
                used.as_ref(),
            )
            .await;
        match answer {
            Renewal::Renewed(tokens) => self.store(tokens, current, version).await,
            Renewal::Rejected { message } => self.after_rejection(message, used).await,
            Renewal::NeedsPerson { reason, message } => {
                self.count("needs_person");
                RefreshResult::Failed(Verdict::Invalid {
                    reason,
                    message: format!("refreshing the token failed: {message}"),
                })
            }
            Renewal::Transient {
                message,
                retry_after,
            } => {
                self.count("unavailable");
                self.failed_since();
                RefreshResult::Failed(Verdict::Transient {
                    message,
                    retry_after,
                })
            }
            Renewal::Misconfigured { message } => {
                self.count("misconfigured");
                RefreshResult::Failed(Verdict::Misconfigured { message })
            }
            Renewal::Unsupported { .. } => RefreshResult::NotPossible,
        }
    }

    /// An answer of an earlier check that could not be written: written now if the Secret still
    /// holds the tokens it replaces, instead of asking the provider again.
    async fn write_pending(
        &mut self,
        current: &TokenKeys,
        version: Option<String>,
    ) -> Option<RefreshResult> {
        let pending = {
            let mut map = self
                .ctx
                .refresh
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.remove(&self.key())?
        };
        if pending.base != *current {
            return None;
        }
        info!(namespace = %self.ns, name = %self.conn.name_any(), "writing refreshed tokens kept from an earlier try");
        Some(self.store(pending.tokens, pending.base, version).await)
    }

    /// Writes the provider's answer, fenced by the version the refresh started from.
    async fn store(
        &mut self,
        tokens: NewTokens,
        mut base: TokenKeys,
        mut version: Option<String>,
    ) -> RefreshResult {
        let name = self.conn.name_any();
        for _ in 0..MAX_CONFLICTS {
            match self.write(&tokens, version.as_deref()).await {
                Ok(written) => {
                    if let Some(v) = &written {
                        self.ctx.secrets.record(
                            self.ns,
                            &self.conn.spec.secret_ref.name,
                            v.clone(),
                        );
                    }
                    self.version = written;
                    self.refreshed = Some(jiff::Timestamp::now());
                    if tokens.refresh_token.is_some() {
                        self.refresh_token = tokens.refresh_token.clone();
                    }
                    self.count("renewed");
                    self.succeeded();
                    info!(namespace = %self.ns, name = %name, "token refreshed");
                    self.refreshed_event(tokens.expires_at).await;
                    self.granted = tokens.scopes.clone();
                    return RefreshResult::Renewed(tokens.access_token, tokens.expires_at);
                }
                Err(WriteError::Conflict) => {}
                Err(WriteError::Kube(e)) => return self.keep_unwritten(base, tokens, e),
            }
            let secret = match self.read_secret().await {
                Ok(Some(s)) => s,
                // Deleted meanwhile: the next write creates it again with the new tokens.
                Ok(None) => {
                    version = None;
                    continue;
                }
                Err(e) => return self.keep_unwritten(base, tokens, e),
            };
            let current = TokenKeys::read(&secret, &self.conn.spec.secret_ref);
            let decision = on_conflict(&base, &current, tokens.expires_at);
            version = secret.resource_version();
            match decision {
                OnConflict::Rewrite => {
                    self.count("conflict_rewritten");
                    info!(namespace = %self.ns, name = %name, "the Secret changed while refreshing (other keys); writing the tokens again");
                }
                OnConflict::KeepOurs => {
                    self.count("conflict_kept_ours");
                    self.conflict_event("another writer changed the token keys while relink refreshed them; relink's tokens expire later and were written").await;
                    base = current;
                }
                OnConflict::KeepTheirs => {
                    self.count("conflict_kept_theirs");
                    self.conflict_event("another writer changed the token keys while relink refreshed them; their tokens are at least as new and were kept").await;
                    self.succeeded();
                    return self.adopt(&secret, "conflict_adopted");
                }
            }
        }
        let e = "the Secret kept changing while relink wrote the refreshed tokens";
        self.hold(base, tokens);
        self.transient(format!(
            "refreshed, but {e}; writing again at the next check"
        ))
    }

    /// Keeps an answer that could not be written for the next try of this Secret.
    fn hold(&self, base: TokenKeys, tokens: NewTokens) {
        self.ctx
            .refresh
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.key(), Pending { base, tokens });
        self.count("write_failed");
    }

    /// The answer could not be written: keep it for the next try of this Secret.
    fn keep_unwritten(
        &mut self,
        base: TokenKeys,
        tokens: NewTokens,
        e: impl std::fmt::Display,
    ) -> RefreshResult {
        self.hold(base, tokens);
        warn!(namespace = %self.ns, name = %self.conn.name_any(), error = %e, "refreshed tokens not written yet; kept to write at the next check");
        self.transient(format!(
            "refreshed, but writing the Secret failed ({e}); writing again at the next check"
        ))
    }

    /// Uses tokens another writer put into the Secret.
    fn adopt(&mut self, secret: &Secret, result: &str) -> RefreshResult {
        let keys = TokenKeys::read(secret, &self.conn.spec.secret_ref);
        let version = secret.resource_version();
        let issued_at = tokens_issued_at(secret);
        self.version = version;
        self.refresh_token = keys.refresh;
        self.count(result);
        match keys.access {
            Some(access) => {
                // The annotation dates the write only if relink made it (another program
                // leaves it as it was).
                let fresh = issued_at.filter(|t| self.issued_at.is_none_or(|s| *t > s));
                self.refreshed = Some(fresh.unwrap_or_else(jiff::Timestamp::now));
                self.issued_at = issued_at;
                self.succeeded();
                RefreshResult::Renewed(access, keys.expires_at)
            }
            None => RefreshResult::NotPossible,
        }
    }

    /// `invalid_grant`: dead only if the refresh token is still the current one after the
    /// re-reads, so a concurrent writer whose write has not landed yet is not mistaken for a
    /// revoked grant.
    async fn after_rejection(&mut self, message: String, used: Option<Token>) -> RefreshResult {
        for wait in REJECTED_REREADS {
            tokio::time::sleep(wait).await;
            let Ok(Some(secret)) = self.read_secret().await else {
                continue;
            };
            let current = TokenKeys::read(&secret, &self.conn.spec.secret_ref);
            if current.refresh.is_some() && current.refresh != used {
                return self.adopt(&secret, "rotated_elsewhere");
            }
        }
        self.count("rejected");
        self.succeeded();
        RefreshResult::Failed(Verdict::Invalid {
            reason: Reason::RefreshFailed,
            message: format!("refreshing the token failed: {message}; a person must log in again"),
        })
    }

    fn transient(&mut self, message: String) -> RefreshResult {
        self.failed_since();
        RefreshResult::Failed(Verdict::Transient {
            message,
            retry_after: None,
        })
    }

    /// Records a transient failure; returns since when refreshing has been failing.
    fn failed_since(&self) -> jiff::Timestamp {
        let now = jiff::Timestamp::now();
        let since = *self
            .ctx
            .refresh
            .failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(self.uid())
            .or_insert(now);
        self.ctx
            .metrics
            .refresh_failing_since
            .get_or_create(&super::connection_labels(self.conn))
            .set(since.as_second());
        since
    }

    fn succeeded(&self) {
        self.ctx
            .refresh
            .failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.uid());
        self.ctx
            .metrics
            .refresh_failing_since
            .remove(&super::connection_labels(self.conn));
    }

    /// The message of a refresh failing transiently while the token still works.
    pub(super) fn failing_message(
        &self,
        message: &str,
        expires_at: Option<jiff::Timestamp>,
    ) -> String {
        let now = jiff::Timestamp::now();
        let since = self.failed_since();
        let mut text = format!(
            "the token works, but refreshing it has failed for {} ({message}); retrying with backoff",
            human(now.as_second().saturating_sub(since.as_second()))
        );
        if let Some(exp) = expires_at {
            text.push_str(&format!("; the token expires at {exp}"));
        }
        text
    }

    async fn refreshed_event(&self, expires_at: Option<jiff::Timestamp>) {
        let due = {
            let mut events = self
                .ctx
                .refresh
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let uid = self.uid();
            let due = events
                .get(&uid)
                .is_none_or(|t| t.elapsed() >= REFRESH_EVENT_PERIOD);
            if due {
                events.insert(uid, Instant::now());
            }
            due
        };
        if !due {
            return;
        }
        let note = match expires_at {
            Some(t) => format!("token refreshed; the new one expires at {t}"),
            None => "token refreshed".to_owned(),
        };
        self.publish(EventType::Normal, "TokenRefreshed", note)
            .await;
    }

    async fn conflict_event(&self, note: &str) {
        self.publish(EventType::Normal, "TokenWriteConflict", note.to_owned())
            .await;
    }

    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Refresh".into(),
            secondary: None,
        };
        if let Err(e) = self
            .ctx
            .recorder
            .publish(&event, &self.conn.object_ref(&()))
            .await
        {
            warn!(namespace = %self.ns, name = %self.conn.name_any(), error = %e, "cannot publish event");
        }
    }
}

/// `3d 4h`, `2h 5m`, `40s`.
fn human(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn keys(access: &str, refresh: &str, exp: Option<i64>) -> TokenKeys {
        TokenKeys {
            access: Some(Token::new(access)),
            refresh: Some(Token::new(refresh)),
            expires_at: exp.map(t),
        }
    }

    #[test]
    fn a_conflict_on_other_keys_writes_again() {
        let k = keys("a1", "r1", Some(100));
        assert_eq!(
            on_conflict(&k, &k.clone(), Some(t(3700))),
            OnConflict::Rewrite
        );
    }

    #[test]
    fn a_conflict_on_the_token_keys_keeps_the_newer_tokens() {
        use OnConflict::{KeepOurs, KeepTheirs};
        let started = keys("a1", "r1", Some(100));
        let theirs = keys("a2", "r2", Some(3600));
        let forever = keys("a2", "r2", None);
        let cleared = TokenKeys::default();
        let cases = [
            (&theirs, Some(3700), KeepOurs, "ours expire later"),
            (
                &theirs,
                Some(3600),
                KeepTheirs,
                "a tie goes to the other writer",
            ),
            (&theirs, Some(50), KeepTheirs, "theirs expire later"),
            (
                &theirs,
                None,
                KeepOurs,
                "a token without expiry never expires",
            ),
            (&forever, Some(3700), KeepTheirs, "theirs never expire"),
            (
                &forever,
                None,
                KeepTheirs,
                "no way to tell: the later write wins",
            ),
            (&cleared, Some(3700), KeepOurs, "theirs were cleared"),
        ];
        for (theirs, ours_expire, want, why) in cases {
            assert_eq!(
                on_conflict(&started, theirs, ours_expire.map(t)),
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn keep_alive_counts_from_the_last_refresh_or_creation() {
        let day = 86_400;
        let month = Some(Duration::from_secs(30 * day as u64));
        assert!(!keep_alive_due(month, Some(t(0)), Some(t(0)), t(29 * day)));
        assert!(keep_alive_due(month, Some(t(0)), Some(t(0)), t(30 * day)));
        assert!(
            !keep_alive_due(month, None, Some(t(0)), t(day)),
            "a new connection is not refreshed at once"
        );
        assert!(keep_alive_due(month, None, Some(t(0)), t(31 * day)));
        assert!(!keep_alive_due(None, None, Some(t(0)), t(999 * day)));
    }

    #[test]
    fn keep_alive_defaults_by_provider_and_out_of_range_is_invalid() {
        assert!(
            default_keep_alive(ProviderType::Microsoft).unwrap() < Duration::from_secs(90 * 86_400)
        );
        assert!(
            default_keep_alive(ProviderType::Google).unwrap() < Duration::from_secs(180 * 86_400)
        );
        assert_eq!(default_keep_alive(ProviderType::Facebook), None);
        assert_eq!(
            keep_alive_period(Some(Duration::from_secs(7200)), ProviderType::Google),
            Some(Duration::from_secs(7200)),
            "the spec wins over the preset"
        );
        let e = crate::api::KEEP_ALIVE_RANGE.parse("1m").unwrap_err();
        assert!(
            e.contains("spec.refresh.keepAlive") && e.contains("1h to 2160h"),
            "{e}"
        );
        assert!(crate::api::KEEP_ALIVE_RANGE.parse("2161h").is_err());
    }

    #[test]
    fn api_retries_back_off_and_stay_bounded() {
        let total: Duration = (0..API_TRIES - 1).map(api_backoff).sum();
        assert_eq!(api_backoff(0), Duration::from_millis(250));
        assert_eq!(api_backoff(2), Duration::from_secs(1));
        assert!(total <= Duration::from_secs(10), "{total:?}");
        let rereads: Duration = REJECTED_REREADS.iter().sum();
        assert!(rereads <= Duration::from_secs(8), "{rereads:?}");
    }

    #[tokio::test]
    async fn one_flight_per_secret_and_waiters_share_its_failure() {
        let shared = Arc::new(Shared::default());
        let key = || ("ns".to_owned(), "tok".to_owned());
        let mut first = shared.flight(key()).await;
        // Another Secret is not held up.
        drop(shared.flight(("ns".to_owned(), "other".to_owned())).await);
        let waiter = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let f = shared.flight(key()).await;
                f.failure_while_waiting()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "the second refresh of the Secret waits"
        );
        let failure = Verdict::Transient {
            message: "provider down".into(),
            retry_after: None,
        };
        first.finish(Some(failure.clone()));
        drop(first);
        assert_eq!(waiter.await.unwrap(), Some(failure), "the waiter shares it");
        // A refresh that starts later asks the provider itself.
        assert_eq!(shared.flight(key()).await.failure_while_waiting(), None);
        assert!(
            shared.flights.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn a_failed_refresh_decides_the_verdict_of_a_dead_token_only() {
        let valid = Verdict::Valid(Default::default());
        let outage = Verdict::Transient {
            message: "503".into(),
            retry_after: None,
        };
        let refused = Verdict::Invalid {
            reason: Reason::RefreshFailed,
            message: "invalid_grant".into(),
        };
        let expired = Verdict::Invalid {
            reason: Reason::Expired,
            message: "expired".into(),
        };
        let describe = |m: &str| format!("works, but {m}");
        assert_eq!(
            after_failed_refresh(valid.clone(), outage.clone(), describe),
            Verdict::Transient {
                message: "works, but 503".into(),
                retry_after: None
            }
        );
        assert_eq!(
            after_failed_refresh(expired.clone(), outage.clone(), describe),
            outage,
            "an outage wakes nobody"
        );
        assert_eq!(
            after_failed_refresh(expired, refused.clone(), describe),
            refused
        );
        assert_eq!(
            after_failed_refresh(valid.clone(), refused, describe),
            valid,
            "the access token still works"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(40), "40s");
        assert_eq!(human(125 * 60), "2h 5m");
        assert_eq!(human(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
    }
}
