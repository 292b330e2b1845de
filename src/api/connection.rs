//! `ChannelConnection`: one channel (a page, a mailbox, a workspace) whose token relink keeps healthy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DURATION_PATTERN, INTERVAL_PATTERN};

/// A channel's OAuth connection: which provider app issued its token, which account the token
/// must reach, where the token is stored, and who to tell when a person must log in again.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "relink.dev",
    version = "v1alpha1",
    kind = "ChannelConnection",
    namespaced,
    status = "ChannelConnectionStatus",
    shortname = "chc",
    category = "relink",
    derive = "PartialEq",
    doc = "A channel's OAuth token connection, checked by relink on a schedule.",
    printcolumn(
        name = "PROVIDER",
        type_ = "string",
        json_path = ".spec.providerRef.name"
    ),
    printcolumn(name = "ACCOUNT", type_ = "string", json_path = ".status.account.name"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "STATUS",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "EXPIRES", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "LAST CHECK",
        type_ = "date",
        json_path = ".status.lastCheckTime"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn = r#"{"name":"MISSING SCOPES","type":"string","jsonPath":".status.missingScopes","priority":1}"#,
    printcolumn = r#"{"name":"REAUTH URL","type":"string","jsonPath":".status.reauthUrl","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConnectionSpec {
    /// The OAuth application (a ChannelProvider in this namespace, or a ClusterChannelProvider)
    /// that issued this channel's token.
    pub provider_ref: ProviderRef,

    /// The asset the token must reach (a Facebook page ID, a mailbox address, a workspace ID).
    /// When set, a token that works but reaches another account is reported as `AccountMismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountRef>,

    /// The Secret, in this namespace, that holds the channel's token. relink reads it when a check
    /// is due and only ever writes the token keys named here; it never deletes the Secret.
    pub secret_ref: TokenSecretRef,

    /// Permissions the channel needs (e.g. `pages_manage_posts`). Each one missing from the token
    /// is listed in `status.missingScopes` and makes the connection not Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,

    /// How often the token is checked, from 1m to 168h (e.g. `15m`, `1h`, `1h30m`). After the
    /// first check each connection gets its own random phase within the interval, so thousands
    /// of connections do not fire together. A value out of range gives reason `InvalidSpec`.
    #[serde(default = "default_check_interval")]
    #[schemars(regex(pattern = INTERVAL_PATTERN), length(max = 16))]
    pub check_interval: String,

    /// Automatic refresh ahead of expiry, where the provider allows it.
    #[serde(default)]
    pub refresh: RefreshPolicy,

    /// Email addresses told when the connection needs a person (re-login, a missing permission,
    /// a missing Secret) and when it recovers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(email))]
    pub owners: Vec<String>,

    /// How owners are told.
    #[serde(default)]
    pub notify: NotifySpec,

    /// Stop checking this connection. Nothing is deleted; status shows reason `Suspended`.
    #[serde(default)]
    pub suspend: bool,
}

/// The spec's durations, parsed and range-checked once when the object is read, so the rest of
/// the code works with `Duration`s and never with strings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timings {
    pub check_interval: std::time::Duration,
    pub refresh_before: std::time::Duration,
    pub max_age: Option<std::time::Duration>,
    pub keep_alive: Option<std::time::Duration>,
}

impl ChannelConnectionSpec {
    /// A spec with every default, for the channel whose token is in Secret `secret` and was
    /// issued by the ChannelProvider `provider` (the CLI, the demo and tests start from it).
    pub fn new(provider: &str, secret: &str) -> Self {
        ChannelConnectionSpec {
            provider_ref: ProviderRef {
                kind: ProviderKind::ChannelProvider,
                name: provider.to_owned(),
            },
            account: None,
            secret_ref: TokenSecretRef {
                name: secret.to_owned(),
                access_token_key: default_access_token_key(),
                refresh_token_key: default_refresh_token_key(),
                expires_at_key: default_expires_at_key(),
            },
            required_scopes: Vec::new(),
            check_interval: default_check_interval(),
            refresh: RefreshPolicy::default(),
            owners: Vec::new(),
            notify: NotifySpec::default(),
            suspend: false,
        }
    }

    /// The one check of a spec beyond what the API server's schema enforces: its typed
    /// durations, or the first problem, named with its field for reason `InvalidSpec` (a
    /// duration out of range, then the token keys). The controller decides with it; the rest of
    /// the code gets the [`Timings`] it returns.
    pub fn validate(&self) -> Result<Timings, String> {
        let timings = self.timings()?;
        match self.secret_ref.problem() {
            Some(problem) => Err(problem),
            None => Ok(timings),
        }
    }

    /// The typed durations, or a message naming the field and its allowed range (part of
    /// [`Self::validate`]; alone where only the durations matter).
    pub fn timings(&self) -> Result<Timings, String> {
        use super::duration::{
            CHECK_INTERVAL_RANGE, KEEP_ALIVE_RANGE, MAX_AGE_RANGE, REFRESH_BEFORE_RANGE,
        };
        Ok(Timings {
            check_interval: CHECK_INTERVAL_RANGE.parse(&self.check_interval)?,
            refresh_before: REFRESH_BEFORE_RANGE.parse(&self.refresh.before)?,
            max_age: self
                .refresh
                .max_age
                .as_deref()
                .map(|m| MAX_AGE_RANGE.parse(m))
                .transpose()?,
            keep_alive: self
                .refresh
                .keep_alive
                .as_deref()
                .map(|k| KEEP_ALIVE_RANGE.parse(k))
                .transpose()?,
        })
    }
}

fn default_check_interval() -> String {
    "15m".to_owned()
}

/// Which provider object issued the token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// `ChannelProvider` (same namespace, the default) or `ClusterChannelProvider`.
    #[serde(default)]
    pub kind: ProviderKind,
    /// Name of the provider object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// The two kinds of provider object.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ProviderKind {
    #[default]
    ChannelProvider,
    ClusterChannelProvider,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChannelProvider => "ChannelProvider",
            Self::ClusterChannelProvider => "ClusterChannelProvider",
        }
    }
}

/// The account a token must reach.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// The provider's identifier of the account (page ID, user ID, mailbox address).
    #[schemars(length(min = 1))]
    pub id: String,
    /// A name people recognise, used in notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// What the account is, where one login reaches several kinds (Facebook Login): `User` (the
    /// person who logs in keeps their own token), `Page` (a Facebook Page: the Page's own token
    /// is stored) or `InstagramBusiness` (an Instagram business account reached through the
    /// Facebook Page it is linked to: that Page's token is stored). Absent: derived from the
    /// provider type (for `facebook`, `Page` unless the account is the person who logs in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AccountKind>,
}

/// What kind of account a connection's token must reach (`spec.account.kind`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccountKind {
    /// The person who logs in.
    User,
    /// A Facebook Page.
    Page,
    /// An Instagram business or creator account linked to a Facebook Page.
    InstagramBusiness,
}

impl AccountRef {
    /// The name people know the account by: `displayName`, else the ID.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.id)
    }
}

/// Where the token lives. Only the keys named here are ever written by relink.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret in the connection's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key holding the access token.
    #[serde(default = "default_access_token_key")]
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(max = 253))]
    pub access_token_key: String,
    /// Key holding the refresh token, if the provider issued one. Must differ from the other keys.
    #[serde(default = "default_refresh_token_key")]
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(max = 253))]
    pub refresh_token_key: String,
    /// Key holding the access token's expiry (RFC 3339 or Unix seconds), if known. Must differ
    /// from the other keys.
    #[serde(default = "default_expires_at_key")]
    #[schemars(regex(pattern = SECRET_KEY_PATTERN), length(max = 253))]
    pub expires_at_key: String,
}

/// What Kubernetes accepts as a Secret data key.
const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

impl TokenSecretRef {
    /// Why these keys cannot be used, or `None`. The three keys must be valid Secret keys and
    /// distinct: a refresh token written over the access token (or its expiry) would destroy
    /// the token it was meant to keep.
    pub fn problem(&self) -> Option<String> {
        let keys = [
            ("accessTokenKey", &self.access_token_key),
            ("refreshTokenKey", &self.refresh_token_key),
            ("expiresAtKey", &self.expires_at_key),
        ];
        for (field, key) in keys {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Some(format!(
                    "spec.secretRef.{field} {key:?} is not a valid Secret key (letters, digits, '-', '_', '.'; at most 253)"
                ));
            }
        }
        for (i, (a, ka)) in keys.iter().enumerate() {
            for (b, kb) in &keys[i + 1..] {
                if ka == kb {
                    return Some(format!(
                        "spec.secretRef.{a} and spec.secretRef.{b} are both {ka:?}: each token key must be its own Secret key"
                    ));
                }
            }
        }
        None
    }
}

fn default_access_token_key() -> String {
    "access_token".to_owned()
}
fn default_refresh_token_key() -> String {
    "refresh_token".to_owned()
}
fn default_expires_at_key() -> String {
    "expires_at".to_owned()
}

/// Refresh ahead of expiry.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshPolicy {
    /// Refresh the token when a refresh token or exchange allows it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long before expiry to refresh (e.g. `24h`), from 0s to 2160h.
    #[serde(default = "default_refresh_before")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 16))]
    pub before: String,
    /// Ask for a new login this long after the last consent (the last re-authorization through
    /// relink, else the connection's creation) even if the token still works, e.g. `2160h` for
    /// the 90 days many networks use; from 1h to 8784h. Within `before` of that date the
    /// connection is `Expiring` with a re-authorization link; after it,
    /// `ReauthorizationRequired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 16))]
    pub max_age: Option<String>,
    /// Refresh at least this often even when the access token does not need it, so a refresh
    /// token the provider revokes after a period without use stays alive (`1h` to `2160h`;
    /// default `720h` for `google` and `microsoft`, none for the others). A value out of range
    /// gives reason `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN), length(max = 16))]
    pub keep_alive: Option<String>,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            before: default_refresh_before(),
            max_age: None,
            keep_alive: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_refresh_before() -> String {
    "24h".to_owned()
}

/// How the connection's owners are told.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Email `owners` when a person must act and when the channel recovers.
    #[serde(default = "default_true")]
    pub email: bool,
    /// A Secret with `address` (and optional `token` to sign the body) to POST notifications to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<LocalObjectRef>,
}

impl Default for NotifySpec {
    fn default() -> Self {
        Self {
            email: true,
            webhook_secret_ref: None,
        }
    }
}

/// A reference to an object in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What relink last found out about the connection.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConnectionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `TokenValid`, `ScopesGranted`, `Stalled` (a person must act) and `Reconciling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The account the token reaches, as the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<ReportedAccount>,

    /// Permissions the token carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub granted_scopes: Vec<String>,

    /// Required permissions the token lacks; re-authorize and grant them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_scopes: Vec<String>,

    /// When the access token expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// Whether relink renews the access token itself before `expiresAt` (a refresh token in
    /// the Secret, or the provider's token exchange), as of the last check the provider
    /// answered. When false, a person must renew the token before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshable: Option<bool>,

    /// When the refresh token itself stops working, where the provider says so (a refresh does
    /// not extend it; a person must log in before then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_at: Option<Time>,

    /// When the provider's data-access grant ends (Meta's 90-day clock), if it reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_access_expires_at: Option<Time>,

    /// When the provider was last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,

    /// When the next scheduled check is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_time: Option<Time>,

    /// When the token was last found valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_valid_time: Option<Time>,

    /// When the token was last refreshed by relink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,

    /// The last re-authorization completed through relink's link: when, and which provider
    /// account logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reauthorization: Option<Reauthorization>,

    /// Checks in a row that could not reach a verdict (provider unavailable).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub consecutive_failures: i32,

    /// Open this URL and log in to re-authorize the channel. Set only while a person must log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reauth_url: Option<String>,

    /// `resourceVersion` of the token Secret at the last check; a change triggers a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_secret_version: Option<String>,

    /// `generation` of the provider object at the last check; a change triggers a check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_provider_generation: Option<i64>,

    /// The last notification sent to the owners, so each change is told once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<NotificationRecord>,

    /// The last value of the `relink.dev/check-requested-at` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_check_request: Option<String>,

    /// The last value of the `relink.dev/refresh-requested-at` annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh_request: Option<String>,

    /// A re-authorization asked for with the `relink.dev/reauthorize-requested-at` annotation
    /// and not completed yet: `reauthUrl` is published until a login changes the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reauthorization: Option<PendingReauthorization>,

    /// The last `relink.dev/reauthorize-requested-at` value completed by a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reauthorize_request: Option<String>,
}

/// A re-authorization someone asked for.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingReauthorization {
    /// The annotation's value.
    pub value: String,
    /// `resourceVersion` of the token Secret when it was asked for: a login changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_version: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What owners were last told, and when.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// The reason told (e.g. `Revoked`, `Expiring`, `Valid` for a recovery).
    pub reason: String,
    /// When it was sent.
    pub time: Time,
    /// Where it went, e.g. `email,webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<String>,
}

/// A completed re-authorization.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct Reauthorization {
    /// When the login was written into the Secret.
    pub time: Time,
    /// The provider account that logged in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<ReportedAccount>,
}

/// An account as the provider reports it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReportedAccount {
    /// The provider's identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The provider's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChannelConnectionStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: super::ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(a: &str, r: &str, e: &str) -> TokenSecretRef {
        TokenSecretRef {
            name: "tok".into(),
            access_token_key: a.into(),
            refresh_token_key: r.into(),
            expires_at_key: e.into(),
        }
    }

    #[test]
    fn validation_names_the_first_problem_durations_then_keys() {
        let mut spec = ChannelConnectionSpec::new("app", "tok");
        assert_eq!(spec.validate(), spec.timings());
        spec.secret_ref.refresh_token_key = "access_token".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .contains("spec.secretRef.accessTokenKey")
        );
        spec.check_interval = "1s".into();
        assert!(spec.validate().unwrap_err().contains("checkInterval"));
    }

    #[test]
    fn token_keys_are_valid_and_distinct() {
        assert_eq!(
            keys("access_token", "refresh_token", "expires_at").problem(),
            None
        );
        let m = keys("token", "token", "expires_at").problem().unwrap();
        assert!(
            m.contains("accessTokenKey") && m.contains("refreshTokenKey"),
            "{m}"
        );
        let m = keys("token", "rt", "rt").problem().unwrap();
        assert!(m.contains("expiresAtKey"), "{m}");
        let m = keys("a/b", "rt", "exp").problem().unwrap();
        assert!(m.contains("not a valid Secret key"), "{m}");
    }
}
