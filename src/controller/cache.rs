//! What the connection cache keeps of each object, and the status writes it has not seen yet.
//!
//! The cache decides only whether a check is due (`schedule::due`), which connections a
//! Secret or provider event concerns, group membership and the ready gauge. It keeps the
//! labels, the request annotations and the few spec and status fields those read; everything
//! else (condition messages, account, scopes, the link, notification records, `managedFields`,
//! other annotations) is dropped. A check that is due reads the whole object from the API
//! server, unless the cached object never had a status (a new connection: the cache then
//! holds its whole spec, all of it that a check reads).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use kube::api::ObjectMeta;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::store::{Conn, Connections};
use crate::api::{
    ChannelConnection, ChannelConnectionSpec, ChannelConnectionStatus, ConditionType,
    PendingReauthorization, ProviderRef, Reason,
};

/// A connection as the cache holds it, decoded straight from the watch: `managedFields`,
/// other annotations and most of the status are skipped while decoding, so they cost neither
/// memory nor the work of building them. What is kept is kept compactly (one cached object
/// per connection makes every byte count ten thousand times): the key (namespace and name,
/// shared with the cache's map and the due queue, see `store.rs`), what `due` reads of the
/// metadata (generation, creation and deletion times), the uid, labels and relink's
/// annotations.
/// The spec of a connection that was never checked is kept as the API server's compact JSON
/// (under half the size of the decoded spec with its twenty-odd strings): its first check
/// reads it from here, without a GET. Once the connection has a status, a due check reads the
/// whole object anyway, so the cache keeps only what deciding "due?" reads: `suspend` and
/// whether the spec is valid. The two fields events are matched on (the provider and the
/// Secret) are kept decoded.
#[derive(Clone, Debug)]
pub struct CachedConnection {
    conn: Conn,
    generation: Option<i64>,
    created: Seconds,
    deleted: Seconds,
    uid: Uid,
    labels: Pairs,
    /// relink's own annotations (the requests); usually none.
    annotations: Pairs,
    spec: Spec,
    provider_ref: ProviderRef,
    secret_name: Box<str>,
    pub status: Option<SlimStatus>,
    /// Whether this copy changed what can make a check due (see [`CachedConnection::set_news`]).
    news: bool,
}

/// A connection as kube's watcher decodes it: the slim copy, and the metadata the watcher
/// itself reads (its `resourceVersion`, to resume), which is dropped with this wrapper.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "Wire")]
pub struct Watched {
    metadata: ObjectMeta,
    pub conn: CachedConnection,
}

impl<'de> Deserialize<'de> for CachedConnection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Watched::deserialize(d).map(|w| w.conn)
    }
}

/// What the cache keeps of the spec (see [`CachedConnection`]): `spec.suspend`, whether the
/// spec passed validation, and, until the connection has a status, the whole spec as JSON
/// text.
#[derive(Clone, Debug)]
struct Spec {
    text: Option<Box<str>>,
    suspend: bool,
    valid: bool,
}

/// The status fields `schedule::due`, the ready gauge and group counts read, kept without an
/// allocation of their own in the usual case: times in whole seconds (as relink writes them),
/// the two kept conditions inline, the Secret version as a number, and the fields that are
/// usually empty (handled requests, a pending re-authorization) behind one box.
#[derive(Clone, Debug, Default)]
pub struct SlimStatus {
    observed_generation: Option<i64>,
    observed_provider_generation: Option<i64>,
    last_check_time: Seconds,
    next_check_time: Seconds,
    expires_at: Seconds,
    refreshable: Option<bool>,
    observed_secret_version: Version,
    /// `Ready` and `Stalled`, in that order: status and reason.
    conditions: [Option<SlimCondition>; 2],
    rare: Option<Box<RareStatus>>,
}

/// The conditions the cache keeps, in the order of [`SlimStatus::conditions`].
const KEPT_CONDITIONS: [ConditionType; 2] = [ConditionType::Ready, ConditionType::Stalled];

/// Status fields that are usually empty.
#[derive(Clone, Debug, Default)]
struct RareStatus {
    last_handled_check_request: Option<Box<str>>,
    last_handled_refresh_request: Option<Box<str>>,
    last_handled_reauthorize_request: Option<Box<str>>,
    pending_reauthorization: Option<PendingReauthorization>,
}

/// A kept condition: its status, and its reason as relink's enum when it is one of relink's
/// (always, unless another writer put it there).
#[derive(Clone, Debug)]
struct SlimCondition {
    status: ConditionStatus,
    reason: SlimReason,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ConditionStatus {
    True,
    False,
    Unknown,
}

#[derive(Clone, Debug)]
enum SlimReason {
    Known(Reason),
    Other(Box<str>),
}

/// A time in whole seconds since the epoch, `i64::MIN` for none.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seconds(i64);

impl Default for Seconds {
    fn default() -> Self {
        Seconds(i64::MIN)
    }
}

impl Seconds {
    fn of(t: Option<Time>) -> Seconds {
        t.map_or_else(Seconds::default, |t| Seconds(t.0.as_second()))
    }

    fn time(self) -> Option<jiff::Timestamp> {
        (self.0 != i64::MIN)
            .then(|| jiff::Timestamp::from_second(self.0).ok())
            .flatten()
    }
}

/// A `resourceVersion`: opaque text, in practice a decimal number, kept as one when it reads
/// back exactly.
#[derive(Clone, Debug, Default, PartialEq)]
enum Version {
    #[default]
    None,
    Number(u64),
    Text(Box<str>),
}

impl Version {
    fn of(text: Option<&str>) -> Version {
        let Some(t) = text else {
            return Version::None;
        };
        // Only digits, no leading zero (but "0"): then the number reads back as this text.
        let canonical = t.bytes().all(|b| b.is_ascii_digit()) && (t == "0" || !t.starts_with('0'));
        match t.parse::<u64>() {
            Ok(n) if canonical => Version::Number(n),
            _ => Version::Text(t.into()),
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Version::None => None,
            Version::Number(n) => Some(n.to_string()),
            Version::Text(t) => Some(t.to_string()),
        }
    }
}

/// A uid: Kubernetes writes lowercase UUIDs, kept as their 128 bits; anything else as text.
#[derive(Clone, Debug, Default, PartialEq)]
enum Uid {
    #[default]
    None,
    Uuid(u128),
    Text(Box<str>),
}

/// String pairs (labels, annotations) in one allocation of the exact size, instead of a
/// `BTreeMap` whose first leaf holds room for eleven.
#[derive(Clone, Debug, Default)]
struct Pairs(Box<[(Box<str>, Box<str>)]>);

impl CachedConnection {
    /// The connection as the rest of the operator reads it: what the cache kept, every other
    /// status field empty and condition messages blank. Once the connection has a status the
    /// spec holds only what [`CachedConnection::slim_view`] holds.
    pub fn view(&self) -> ChannelConnection {
        match &self.spec.text {
            Some(text) => self
                .build(serde_json::from_str(text).expect("the cached spec was decoded on arrival")),
            None => self.slim_view(),
        }
    }

    /// [`CachedConnection::view`] without decoding a kept spec text: the spec holds only the
    /// provider, the Secret's name and `suspend` (the rest at defaults). Enough for
    /// `schedule::due`, the observed versions, the provider and the ready gauge.
    pub fn slim_view(&self) -> ChannelConnection {
        self.build(ChannelConnectionSpec {
            provider_ref: self.provider_ref.clone(),
            suspend: self.spec.suspend,
            ..ChannelConnectionSpec::new("", &self.secret_name)
        })
    }

    /// Whether the spec is whole only in [`CachedConnection::view`]: the connection has no
    /// status yet.
    pub fn spec_is_kept(&self) -> bool {
        self.spec.text.is_some()
    }

    fn build(&self, spec: ChannelConnectionSpec) -> ChannelConnection {
        let mut c = ChannelConnection::new(&self.conn.name, spec);
        c.metadata.namespace = Some(self.conn.namespace.to_string());
        c.metadata.generation = self.generation;
        c.metadata.creation_timestamp = self.created.time().map(Time);
        c.metadata.deletion_timestamp = self.deleted.time().map(Time);
        c.metadata.uid = self.uid();
        c.metadata.labels = self.labels.to_map();
        c.metadata.annotations = self.annotations.to_map();
        c.status = self.status.as_ref().map(SlimStatus::view);
        c
    }

    /// Whether a check would call a provider: not suspended, and the spec valid.
    pub fn calls_provider(&self) -> bool {
        !self.spec.suspend && self.spec.valid
    }

    /// The connection's namespace and name, as the cache keys it.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Takes the cache's copy of the key (see `store.rs`).
    pub(super) fn set_conn(&mut self, conn: Conn) {
        debug_assert!(conn == self.conn);
        self.conn = conn;
    }

    pub fn name(&self) -> &str {
        &self.conn.name
    }

    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }

    /// `spec.providerRef`.
    pub fn provider_ref(&self) -> &ProviderRef {
        &self.provider_ref
    }

    /// `spec.secretRef.name`.
    pub fn secret_name(&self) -> &str {
        &self.secret_name
    }

    /// The object's uid.
    pub fn uid(&self) -> Option<String> {
        match &self.uid {
            Uid::None => None,
            Uid::Uuid(n) => Some(format_uuid(*n)),
            Uid::Text(t) => Some(t.to_string()),
        }
    }

    /// The labels, as a map (built on each call: the cache keeps them as a list).
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels.to_map().unwrap_or_default()
    }

    /// The value of one of relink's annotations.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key)
    }

    /// Compares this copy with the `cached` one: it is news when it is new (or a new object
    /// under the same name: another uid) or when what can make a check due changed (the
    /// spec's generation, deletion, the request annotations). A status-only change (the
    /// operator's own write coming back) is not.
    pub fn set_news(&mut self, cached: Option<&CachedConnection>) {
        self.news = cached.is_none_or(|c| c.triggers() != self.triggers());
    }

    pub fn is_news(&self) -> bool {
        self.news
    }

    fn triggers(&self) -> (&Uid, Option<i64>, bool, [Option<&str>; 3]) {
        (
            &self.uid,
            self.generation,
            self.deleted != Seconds::default(),
            [
                crate::api::CHECK_REQUESTED_ANNOTATION,
                crate::api::REFRESH_REQUESTED_ANNOTATION,
                crate::api::REAUTHORIZE_REQUESTED_ANNOTATION,
            ]
            .map(|key| self.annotation(key)),
        )
    }
}

impl SlimStatus {
    fn view(&self) -> ChannelConnectionStatus {
        let conditions = (KEPT_CONDITIONS.iter().zip(&self.conditions))
            .filter_map(|(type_, c)| Some((type_, c.as_ref()?)))
            .map(|(type_, c)| Condition {
                type_: type_.as_str().to_owned(),
                status: match c.status {
                    ConditionStatus::True => "True",
                    ConditionStatus::False => "False",
                    ConditionStatus::Unknown => "Unknown",
                }
                .to_owned(),
                reason: match &c.reason {
                    SlimReason::Known(r) => r.as_str().to_owned(),
                    SlimReason::Other(text) => text.to_string(),
                },
                message: String::new(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            })
            .collect();
        let rare = self.rare.as_deref().cloned().unwrap_or_default();
        let text = |t: Option<Box<str>>| t.map(String::from);
        ChannelConnectionStatus {
            observed_generation: self.observed_generation,
            conditions,
            last_check_time: self.last_check_time.time().map(Time),
            next_check_time: self.next_check_time.time().map(Time),
            expires_at: self.expires_at.time().map(Time),
            refreshable: self.refreshable,
            observed_secret_version: self.observed_secret_version.text(),
            observed_provider_generation: self.observed_provider_generation,
            last_handled_check_request: text(rare.last_handled_check_request),
            last_handled_refresh_request: text(rare.last_handled_refresh_request),
            last_handled_reauthorize_request: text(rare.last_handled_reauthorize_request),
            pending_reauthorization: rare.pending_reauthorization,
            ..Default::default()
        }
    }

    /// `lastCheckTime`.
    pub fn last_check_time(&self) -> Option<jiff::Timestamp> {
        self.last_check_time.time()
    }
}

impl<'de> Deserialize<'de> for SlimStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        WireStatus::deserialize(d).map(SlimStatus::from)
    }
}

/// The status as the API server sends it, with only the kept fields decoded; its short
/// strings borrowed from the event's text where they hold no escapes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus<'a> {
    observed_generation: Option<i64>,
    #[serde(default, borrow)]
    conditions: Option<Vec<WireCondition<'a>>>,
    last_check_time: Option<Time>,
    next_check_time: Option<Time>,
    expires_at: Option<Time>,
    refreshable: Option<bool>,
    #[serde(borrow)]
    observed_secret_version: Option<Cow<'a, str>>,
    observed_provider_generation: Option<i64>,
    last_handled_check_request: Option<Box<str>>,
    last_handled_refresh_request: Option<Box<str>>,
    last_handled_reauthorize_request: Option<Box<str>>,
    pending_reauthorization: Option<PendingReauthorization>,
}

#[derive(Deserialize)]
struct WireCondition<'a> {
    #[serde(rename = "type", borrow)]
    type_: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
}

impl From<WireStatus<'_>> for SlimStatus {
    fn from(w: WireStatus<'_>) -> SlimStatus {
        let mut conditions = [None, None];
        for c in w.conditions.unwrap_or_default() {
            let Some(i) = KEPT_CONDITIONS
                .iter()
                .position(|t| t.as_str() == c.type_.as_ref())
            else {
                continue;
            };
            let status = match c.status.as_ref() {
                "True" => ConditionStatus::True,
                "False" => ConditionStatus::False,
                _ => ConditionStatus::Unknown,
            };
            let reason = match Reason::parse(&c.reason) {
                Some(r) => SlimReason::Known(r),
                None => SlimReason::Other(c.reason.into()),
            };
            conditions[i] = Some(SlimCondition { status, reason });
        }
        let rare = RareStatus {
            last_handled_check_request: w.last_handled_check_request,
            last_handled_refresh_request: w.last_handled_refresh_request,
            last_handled_reauthorize_request: w.last_handled_reauthorize_request,
            pending_reauthorization: w.pending_reauthorization,
        };
        let usual = rare.last_handled_check_request.is_none()
            && rare.last_handled_refresh_request.is_none()
            && rare.last_handled_reauthorize_request.is_none()
            && rare.pending_reauthorization.is_none();
        SlimStatus {
            observed_generation: w.observed_generation,
            observed_provider_generation: w.observed_provider_generation,
            last_check_time: Seconds::of(w.last_check_time),
            next_check_time: Seconds::of(w.next_check_time),
            expires_at: Seconds::of(w.expires_at),
            refreshable: w.refreshable,
            observed_secret_version: Version::of(w.observed_secret_version.as_deref()),
            conditions,
            rare: (!usual).then(|| Box::new(rare)),
        }
    }
}

impl Resource for Watched {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        ChannelConnection::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        ChannelConnection::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        ChannelConnection::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        ChannelConnection::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The object as the API server sends it, with only the kept fields decoded.
#[derive(Deserialize)]
struct Wire {
    metadata: WireMeta,
    spec: Box<serde_json::value::RawValue>,
    #[serde(default)]
    status: Option<SlimStatus>,
}

/// The metadata fields the operator reads; annotations only those relink reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    labels: Pairs,
    #[serde(default, deserialize_with = "relink_annotations")]
    annotations: Pairs,
}

impl TryFrom<Wire> for Watched {
    type Error = serde_json::Error;

    fn try_from(w: Wire) -> Result<Self, Self::Error> {
        let m = w.metadata;
        // Decoded once here, so a spec that does not decode fails the watch event, not a
        // later read; kept as text.
        let spec: ChannelConnectionSpec = serde_json::from_str(w.spec.get())?;
        let (name, namespace) = (m.name.unwrap_or_default(), m.namespace.unwrap_or_default());
        let conn = CachedConnection {
            conn: Conn::new(&namespace, &name),
            generation: m.generation,
            created: Seconds::of(m.creation_timestamp),
            deleted: Seconds::of(m.deletion_timestamp),
            uid: m.uid.map(Uid::from).unwrap_or_default(),
            labels: m.labels,
            annotations: m.annotations,
            spec: Spec {
                text: w.status.is_none().then(|| compact(&spec, w.spec.get())),
                suspend: spec.suspend,
                valid: spec.validate().is_ok(),
            },
            provider_ref: spec.provider_ref,
            secret_name: spec.secret_ref.name.into_boxed_str(),
            status: w.status,
            news: true,
        };
        let metadata = ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            resource_version: m.resource_version,
            ..Default::default()
        };
        Ok(Watched { metadata, conn })
    }
}

/// The spec as JSON without the fields at their defaults, which the API server writes out
/// in full and decoding fills in again (about half the text of a typical spec): what the
/// cache keeps of a connection never checked. The API server's own `text` when the short
/// form would not decode to the same spec.
fn compact(spec: &ChannelConnectionSpec, text: &str) -> Box<str> {
    static DEFAULTS: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
        serde_json::to_value(ChannelConnectionSpec::new("", "")).unwrap_or_default()
    });
    let short = serde_json::to_value(spec).ok().and_then(|mut v| {
        drop_defaults(&mut v, &DEFAULTS);
        serde_json::to_string(&v).ok()
    });
    match short {
        Some(short)
            if short.len() < text.len()
                && serde_json::from_str::<ChannelConnectionSpec>(&short)
                    .is_ok_and(|s| s == *spec) =>
        {
            short.into()
        }
        _ => text.into(),
    }
}

/// Removes from object `v` every member equal to the same member of `defaults`, and then
/// every object member left empty.
fn drop_defaults(v: &mut serde_json::Value, defaults: &serde_json::Value) {
    let (serde_json::Value::Object(map), serde_json::Value::Object(defaults)) = (v, defaults)
    else {
        return;
    };
    map.retain(|key, value| match defaults.get(key) {
        Some(d) if d == value => false,
        Some(d) => {
            drop_defaults(value, d);
            value.as_object().is_none_or(|m| !m.is_empty())
        }
        None => true,
    });
}

impl From<String> for Uid {
    fn from(text: String) -> Uid {
        match parse_uuid(&text) {
            Some(n) => Uid::Uuid(n),
            None => Uid::Text(text.into_boxed_str()),
        }
    }
}

/// The 128 bits of a UUID written exactly as [`format_uuid`] writes it (lowercase, dashes
/// at 8, 13, 18 and 23), so that it reads back as the same text; else `None`.
fn parse_uuid(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        let digit = match c {
            b'-' if matches!(i, 8 | 13 | 18 | 23) => continue,
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        if matches!(i, 8 | 13 | 18 | 23) {
            return None;
        }
        n = n << 4 | u128::from(digit);
    }
    Some(n)
}

fn format_uuid(n: u128) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(36);
    let _ = write!(
        s,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        n >> 96,
        (n >> 80) & 0xffff,
        (n >> 64) & 0xffff,
        (n >> 48) & 0xffff,
        n & 0xffff_ffff_ffff
    );
    s
}

impl Pairs {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
    }

    fn to_map(&self) -> Option<BTreeMap<String, String>> {
        (!self.0.is_empty()).then(|| {
            (self.0.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(PairsVisitor)
    }
}

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Pairs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }
    fn visit_none<E>(self) -> Result<Pairs, E> {
        Ok(Pairs::default())
    }
    fn visit_unit<E>(self) -> Result<Pairs, E> {
        Ok(Pairs::default())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Pairs, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, String>()? {
            pairs.push((k.into_boxed_str(), v.into_boxed_str()));
        }
        Ok(Pairs(pairs.into_boxed_slice()))
    }
}

fn relink_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
    let Pairs(all) = Pairs::deserialize(d)?;
    let mut kept = all.into_vec();
    kept.retain(|(k, _)| crate::api::ANNOTATIONS.iter().any(|(key, _)| key == &&**k));
    Ok(Pairs(kept.into_boxed_slice()))
}

/// `lastCheckTime` of status writes this process made and has not seen back through the
/// watch yet, by connection uid. While an entry is here the cached object is behind, and a
/// check that looks due reads the object instead of trusting the cache. Entries leave as soon
/// as the watch delivers the write, so the map stays small.
#[derive(Default)]
pub struct Unseen {
    writes: Mutex<HashMap<String, jiff::Timestamp>>,
}

impl Unseen {
    /// Records a status write with this `lastCheckTime` (kept in whole seconds, as the API
    /// server stores it).
    pub fn wrote(&self, uid: String, checked: jiff::Timestamp) {
        let seconds = jiff::Timestamp::from_second(checked.as_second()).unwrap_or(checked);
        self.lock().insert(uid, seconds);
    }

    /// Whether the cached object is behind a write of this process (and forgets writes it has
    /// caught up with).
    pub fn behind(&self, status: Option<&SlimStatus>, uid: Option<&str>) -> bool {
        let Some(uid) = uid else {
            return false;
        };
        let mut writes = self.lock();
        let Some(written) = writes.get(uid) else {
            return false;
        };
        let cached = status.and_then(SlimStatus::last_check_time);
        if cached.is_some_and(|c| c >= *written) {
            writes.remove(uid);
            return false;
        }
        true
    }

    /// The copy of a connection a check decides on, and whether it is behind a write of this
    /// process. A reconcile starts from the copy the cache had when the reconcile started;
    /// the watch may have replaced it (and forgotten the write it carried) before the
    /// reconcile runs, so the newest copy is read again here.
    ///
    /// The order makes this safe: whether a write is pending is asked first, the cache read
    /// after. The watch puts an object in the cache before it forgets the write the object
    /// carries (`ConnectionSide::seen`), so with no write pending, the copy read after holds
    /// every status write of this process.
    pub fn current(
        &self,
        cache: &Connections,
        handed: &Arc<CachedConnection>,
    ) -> (Arc<CachedConnection>, bool) {
        let pending = handed
            .uid()
            .is_some_and(|uid| self.lock().contains_key(&uid));
        let newest = cache.get(handed.conn()).unwrap_or_else(|| handed.clone());
        let behind = pending && self.behind(newest.status.as_ref(), newest.uid().as_deref());
        (newest, behind)
    }

    /// Forgets a deleted connection.
    pub fn forget(&self, conn: &CachedConnection) {
        if let Some(uid) = conn.uid() {
            self.lock().remove(&uid);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, jiff::Timestamp>> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(at: jiff::Timestamp) -> ChannelConnection {
        let mut c: ChannelConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1"},
            "spec": {"providerRef": {"name": "p"}, "secretRef": {"name": "s"}}
        }))
        .unwrap();
        c.metadata.annotations = Some(
            [
                ("relink.dev/check-requested-at".to_owned(), "1".to_owned()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".into(),
                    "{}".into(),
                ),
            ]
            .into(),
        );
        let condition = |type_: &str| Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "a long message".into(),
            last_transition_time: Time(at),
            observed_generation: Some(1),
        };
        c.status = Some(ChannelConnectionStatus {
            conditions: vec![condition("Ready"), condition("TokenValid")],
            last_check_time: Some(Time(at)),
            reauth_url: Some("https://example.test/login".into()),
            granted_scopes: vec!["a".into()],
            ..Default::default()
        });
        c
    }

    #[test]
    fn a_never_checked_spec_is_kept_without_its_defaults() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let mut c = checked(now);
        c.status = None;
        c.spec.owners = vec!["ops@example.test".into()];
        c.spec.refresh.enabled = false;
        let full = serde_json::to_string(&c.spec).unwrap();
        let kept = compact(&c.spec, &full);
        assert!(kept.len() * 2 < full.len(), "{kept} against {full}");
        assert!(!kept.contains("access_token") && kept.contains("\"enabled\":false"));
        let cached: CachedConnection =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(cached.view().spec, c.spec, "decodes to the same spec");
        // A text that is already short is kept as it is.
        assert_eq!(&*compact(&c.spec, "{}"), "{}");
    }

    #[test]
    fn a_uid_reads_back_as_written() {
        let uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(
            Uid::from(uuid.to_owned()),
            Uid::Uuid(0x0f1e2d3c4b5a69788796a5b4c3d2e1f0)
        );
        assert_eq!(format_uuid(parse_uuid(uuid).unwrap()), uuid);
        // Anything that would not read back identically is kept as text.
        for other in [
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f00",
            "0f1e2d3c-4b5a-6978-8796a-5b4c3d2e1f0",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1g0",
            "+f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "u1",
        ] {
            assert_eq!(
                Uid::from(other.to_owned()),
                Uid::Text(other.into()),
                "{other}"
            );
        }
    }

    #[test]
    fn the_cache_keeps_what_due_reads_and_drops_the_rest() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let json = serde_json::to_value(checked(now)).unwrap();
        let cached: CachedConnection = serde_json::from_value(json).unwrap();
        let c = cached.view();
        let s = c.status.as_ref().unwrap();
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].reason, "Valid");
        assert!(s.conditions[0].message.is_empty());
        assert_eq!(s.last_check_time, Some(Time(now)));
        assert!(s.reauth_url.is_none() && s.granted_scopes.is_empty());
        let annotations = c.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["relink.dev/check-requested-at"]
        );
        assert_eq!(c.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(c.spec.secret_ref.name, "s");
    }

    #[test]
    fn the_slim_status_reads_back_as_written() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let decode = |c: &ChannelConnection| -> CachedConnection {
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap()
        };
        let mut c = checked(now);
        let s = c.status.as_mut().unwrap();
        s.observed_secret_version = Some("123456".into());
        let next = Some(Time(now + jiff::SignedDuration::from_secs(900)));
        s.next_check_time = next.clone();
        s.observed_generation = Some(3);
        s.observed_provider_generation = Some(4);
        s.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(24)));
        s.refreshable = Some(false);
        s.conditions[0].status = "Unknown".into();
        s.conditions.push(Condition {
            type_: "Stalled".into(),
            status: "False".into(),
            reason: "SomebodyElsesReason".into(),
            message: String::new(),
            last_transition_time: Time(now),
            observed_generation: None,
        });
        let slim = decode(&c);
        assert!(slim.status.as_ref().unwrap().rare.is_none(), "nothing rare");
        assert_eq!(
            slim.status.as_ref().unwrap().observed_secret_version,
            Version::Number(123456)
        );
        let back = slim.view().status.unwrap();
        assert_eq!(back.observed_secret_version.as_deref(), Some("123456"));
        assert_eq!(back.next_check_time, next);
        assert_eq!(
            (back.expires_at, back.refreshable),
            (c.status.as_ref().unwrap().expires_at.clone(), Some(false)),
            "the expiry gauge is exported from the cache after a restart"
        );
        assert_eq!(
            (back.observed_generation, back.observed_provider_generation),
            (Some(3), Some(4))
        );
        let kept: Vec<_> = (back.conditions.iter())
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            kept,
            [
                ("Ready", "Unknown", "Valid"),
                ("Stalled", "False", "SomebodyElsesReason")
            ]
        );

        // Versions that are not plain numbers, and the fields usually empty.
        let s = c.status.as_mut().unwrap();
        s.observed_secret_version = Some("007".into());
        s.last_handled_check_request = Some("1".into());
        s.last_handled_reauthorize_request = Some("2".into());
        let back = decode(&c).view().status.unwrap();
        assert_eq!(back.observed_secret_version.as_deref(), Some("007"));
        assert_eq!(back.last_handled_check_request.as_deref(), Some("1"));
        assert_eq!(back.last_handled_reauthorize_request.as_deref(), Some("2"));
        assert_eq!(back.last_handled_refresh_request, None);
    }

    #[test]
    fn a_checked_connection_keeps_only_what_due_reads_of_its_spec() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let decode = |c: &ChannelConnection| -> CachedConnection {
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap()
        };
        let mut unchecked = checked(now);
        unchecked.status = None;
        unchecked.spec.owners = vec!["ops@example.test".into()];
        let fresh = decode(&unchecked);
        assert!(fresh.spec_is_kept());
        assert_eq!(
            fresh.view().spec,
            unchecked.spec,
            "a first check reads the whole spec from the cache"
        );
        assert!(fresh.calls_provider());
        let slim = fresh.slim_view();
        assert_eq!(slim.spec.provider_ref, unchecked.spec.provider_ref);
        assert_eq!(slim.spec.secret_ref.name, "s");
        assert!(slim.spec.owners.is_empty(), "the slim view decodes nothing");
        assert_eq!(slim.metadata, fresh.view().metadata);

        let mut with_status = checked(now);
        with_status.spec.owners = vec!["ops@example.test".into()];
        let kept = decode(&with_status);
        assert!(!kept.spec_is_kept() && !kept.spec.suspend && kept.spec.valid);
        let view = kept.view();
        assert_eq!(view.spec.provider_ref, with_status.spec.provider_ref);
        assert_eq!(view.spec.secret_ref.name, "s");
        assert!(view.spec.owners.is_empty(), "not kept once checked");
        assert!(kept.calls_provider());
        assert_eq!(kept.slim_view(), view);

        let mut invalid = checked(now);
        invalid.spec.check_interval = "1s".into();
        let invalid = decode(&invalid);
        assert!(!invalid.calls_provider(), "an invalid spec calls nothing");
        let mut unchecked_invalid = checked(now);
        unchecked_invalid.status = None;
        unchecked_invalid.spec.check_interval = "1s".into();
        let unchecked_invalid = decode(&unchecked_invalid);
        assert!(!unchecked_invalid.calls_provider());
        let mut suspended = checked(now);
        suspended.spec.suspend = true;
        let suspended = decode(&suspended);
        assert!(suspended.view().spec.suspend && !suspended.calls_provider());
    }

    #[test]
    fn only_what_can_make_a_check_due_is_news() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let decode = |c: &ChannelConnection| -> CachedConnection {
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap()
        };
        let base = checked(now);
        let mut first = decode(&base);
        first.set_news(None);
        assert!(
            first.is_news(),
            "a connection the cache has not seen is news"
        );

        let mut status_only = base.clone();
        status_only.status.as_mut().unwrap().last_check_time =
            Some(Time(now + jiff::SignedDuration::from_secs(60)));
        let mut second = decode(&status_only);
        second.set_news(Some(&first));
        assert!(
            !second.is_news(),
            "the operator's own status write is not news"
        );

        let mut edited = base.clone();
        edited.metadata.generation = Some(2);
        let mut third = decode(&edited);
        third.set_news(Some(&first));
        assert!(third.is_news(), "a spec edit is news");

        let mut requested = base.clone();
        requested
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(crate::api::CHECK_REQUESTED_ANNOTATION.into(), "2".into());
        let mut fourth = decode(&requested);
        fourth.set_news(Some(&first));
        assert!(fourth.is_news(), "a new check request is news");

        let mut recreated = base.clone();
        recreated.metadata.uid = Some("0b6f5a2e-8d43-4c55-9a5e-3f1f7a0f9e11".into());
        let mut fifth = decode(&recreated);
        fifth.set_news(Some(&first));
        assert!(fifth.is_news(), "a new object under the same name is news");
        assert_eq!(
            fifth.uid().as_deref(),
            Some("0b6f5a2e-8d43-4c55-9a5e-3f1f7a0f9e11"),
            "a UUID comes back as written"
        );
    }

    #[test]
    fn unseen_write_makes_the_cache_behind_until_it_catches_up() {
        let now = jiff::Timestamp::now();
        let unseen = Unseen::default();
        let cached = |at: jiff::Timestamp| -> CachedConnection {
            serde_json::from_value(serde_json::to_value(checked(at)).unwrap()).unwrap()
        };
        let behind = |c: &CachedConnection| unseen.behind(c.status.as_ref(), Some("u1"));
        let old = cached(now - jiff::SignedDuration::from_secs(60));
        assert!(!behind(&old));
        unseen.wrote("u1".into(), now);
        assert!(behind(&old));
        assert!(!behind(&cached(now)));
        // Caught up: forgotten, so an older cached copy is trusted again.
        assert!(!behind(&old));
    }
    /// The race behind a flaky "call that was not due": a reconcile starts from the copy the
    /// cache had when it started; the watch then delivers this process's own status write and
    /// forgets it before the reconcile first runs. The handed copy has no status and no write
    /// is pending, yet the connection was just checked: the check must decide on the newest copy.
    #[test]
    fn a_write_seen_after_the_reconcile_started_is_not_checked_again() {
        use kube::runtime::watcher::Event;
        let now = jiff::Timestamp::now();
        let slim = |c: ChannelConnection| -> Arc<CachedConnection> {
            Arc::new(serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap())
        };
        let mut unchecked = checked(now);
        unchecked.status = None;
        let store = Connections::default();
        let unseen = Unseen::default();
        let first = slim(unchecked);
        store.apply(Event::Apply(first.as_ref().clone()));

        // Never checked, nothing written: the handed copy is the newest and may be trusted.
        let (copy, behind) = unseen.current(&store, &first);
        assert!(copy.status.is_none() && !behind);

        // Checked and written; the reconcile after it is handed the copy from before.
        let handed = store.get(first.conn()).unwrap();
        unseen.wrote("u1".into(), now);
        let (copy, behind) = unseen.current(&store, &handed);
        assert!(
            copy.status.is_none() && behind,
            "the cache is behind the write"
        );

        // The watch delivers the write and forgets it (as `ConnectionSide::seen` does).
        let written = slim(checked(now));
        store.apply(Event::Apply(written.as_ref().clone()));
        assert!(!unseen.behind(written.status.as_ref(), Some("u1")));
        let (copy, behind) = unseen.current(&store, &handed);
        assert!(!behind);
        assert!(
            copy.status
                .as_ref()
                .and_then(SlimStatus::last_check_time)
                .is_some(),
            "the check decides on the written copy, not on the one it was handed"
        );
    }
}
