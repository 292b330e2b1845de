//! The refresh scenario: K Secrets holding rotating refresh tokens, each due for refresh and
//! referenced by two connections, all created at once while the operator runs against a
//! sandbox with refresh-token reuse detection. Counts refresh calls per connection and per
//! Secret, and refused refreshes (a reused refresh token revokes its family).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use relink::api::{
    AccountRef, ChannelConnection, ChannelConnectionSpec, ConditionType, ProviderKind, ProviderRef,
    RefreshPolicy, TokenSecretRef,
};
use relink::sandbox::{Call, Grant, IssuedTokens};

use crate::fixtures::{NS, PROVIDER};

/// Connections per Secret in the scenario.
pub const PER_SECRET: usize = 2;
const LABEL: &str = "relink.dev/bench-scenario";

#[derive(Clone, Debug, Default)]
pub struct RefreshRun {
    pub secrets: usize,
    pub connections: usize,
    /// Refresh-token grants the provider received.
    pub calls: usize,
    /// Of `calls`: refused (`invalid_grant`, e.g. a reused refresh token).
    pub refused: usize,
    /// Most refresh calls for one Secret.
    pub max_per_secret: usize,
    /// Connections with `Ready=True` and `status.lastRefreshTime` at the end.
    pub refreshed_ready: usize,
    /// Creation to every connection refreshed and Ready.
    pub secs: f64,
}

impl RefreshRun {
    pub fn per_connection(&self) -> f64 {
        self.calls as f64 / self.connections.max(1) as f64
    }
}

fn account(i: usize) -> String {
    format!("refresh-{i:05}")
}

fn connection(i: usize, twin: usize) -> ChannelConnection {
    let mut c = ChannelConnection::new(
        &format!("refresh-{i:05}-{twin}"),
        ChannelConnectionSpec {
            provider_ref: ProviderRef {
                kind: ProviderKind::ChannelProvider,
                name: PROVIDER.into(),
            },
            account: Some(AccountRef {
                id: account(i),
                display_name: None,
                kind: None,
            }),
            secret_ref: TokenSecretRef {
                name: format!("{}-token", account(i)),
                access_token_key: "access_token".into(),
                refresh_token_key: "refresh_token".into(),
                expires_at_key: "expires_at".into(),
            },
            required_scopes: vec![],
            check_interval: "15m".into(),
            refresh: RefreshPolicy::default(),
            owners: vec![],
            notify: Default::default(),
            suspend: false,
        },
    );
    c.metadata.namespace = Some(NS.into());
    c.metadata.labels = Some(BTreeMap::from([(LABEL.into(), "refresh".into())]));
    c
}

/// Creates the Secrets (expiring in 10 minutes, so due for refresh) and their connections,
/// waits until every connection is refreshed and Ready, and counts the provider's calls.
pub async fn run(
    client: &kube::Client,
    http: &reqwest::Client,
    sandbox: &str,
    k: usize,
    concurrency: usize,
) -> Result<RefreshRun> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let conns: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let soon = (jiff::Timestamp::now().as_second() + 600).to_string();
    stream::iter(0..k)
        .map(|i| {
            let (secrets, conns, soon) = (secrets.clone(), conns.clone(), soon.clone());
            async move {
                let grant = Grant {
                    account_id: account(i),
                    account_name: account(i),
                    scopes: vec![],
                    expires_in_secs: Some(3600),
                    refreshable: true,
                };
                let issued: IssuedTokens = http
                    .post(format!("{sandbox}/sandbox/tokens"))
                    .json(&grant)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .context("issue a sandbox token")?
                    .json()
                    .await?;
                let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
                let mut data = BTreeMap::from([
                    ("access_token".to_owned(), bytes(&issued.access_token)),
                    ("expires_at".to_owned(), bytes(&soon)),
                ]);
                if let Some(rt) = &issued.refresh_token {
                    data.insert("refresh_token".into(), bytes(rt));
                }
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-token", account(i))),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await?;
                for twin in 0..PER_SECRET {
                    conns
                        .create(&PostParams::default(), &connection(i, twin))
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!(
        "[bench] refresh scenario: {k} Secrets due for refresh, {PER_SECRET} connections each"
    );

    let total = k * PER_SECRET;
    let lp = ListParams::default().labels(&format!("{LABEL}=refresh"));
    let mut refreshed_ready = 0;
    let deadline = Instant::now() + Duration::from_secs(120 + k as u64);
    while Instant::now() < deadline {
        refreshed_ready = conns
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.last_refresh_time.is_some()
                        && s.condition(ConditionType::Ready)
                            .is_some_and(|r| r.status == "True")
                })
            })
            .count();
        if refreshed_ready == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // Later checks of the same connections could refresh again only if something went wrong;
    // give them a moment to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let calls: Vec<Call> = http
        .get(format!("{sandbox}/sandbox/calls"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("sandbox call log")?;
    let refreshes: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.path == "/oauth/token"
                && c.grant_type.as_deref() == Some("refresh_token")
                && c.account_id
                    .as_deref()
                    .is_some_and(|a| a.starts_with("refresh-"))
        })
        .collect();
    let mut per_secret: HashMap<&str, usize> = HashMap::new();
    for c in &refreshes {
        *per_secret
            .entry(c.account_id.as_deref().unwrap_or_default())
            .or_default() += 1;
    }
    let run = RefreshRun {
        secrets: k,
        connections: total,
        calls: refreshes.len(),
        refused: refreshes.iter().filter(|c| c.status == 400).count(),
        max_per_secret: per_secret.values().copied().max().unwrap_or(0),
        refreshed_ready,
        secs,
    };
    eprintln!(
        "[bench] refresh scenario: {} refresh calls for {} connections ({:.2} per connection, at most {} per Secret), {} refused, {}/{} refreshed and Ready after {:.1} s",
        run.calls,
        run.connections,
        run.per_connection(),
        run.max_per_secret,
        run.refused,
        run.refreshed_ready,
        run.connections,
        run.secs
    );
    Ok(run)
}
