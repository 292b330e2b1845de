//! The objects a benchmark run needs: a sandbox `ChannelProvider`, N token Secrets and
//! connections, and unrelated Secrets of realistic size in other namespaces. Everything is
//! created with bounded concurrency, retried a few times, and reported as it goes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use rand::Rng;
use rand::distr::Alphanumeric;
use relink::api::{
    AccountRef, ChannelConnection, ChannelConnectionSpec, ChannelProvider, ChannelProviderSpec,
    ClientSecretRef, ProviderEndpoints, ProviderKind, ProviderRef, ProviderType, RefreshPolicy,
    TokenSecretRef,
};
use relink::sandbox::{Grant, IssuedTokens};

/// Namespace of the connections, their Secrets and the provider.
pub const NS: &str = "bench";
/// Namespace the operator runs in (its state-key Secret lands there).
pub const OPERATOR_NS: &str = "relink-system";
/// The unrelated Secrets are spread over this many `tenant-NN` namespaces.
const TENANT_NAMESPACES: usize = 20;
pub const PROVIDER: &str = "sandbox";
pub const CLIENT_ID: &str = "relink-sandbox";
pub const CLIENT_SECRET: &str = "sandbox-secret";

/// One connection as created: its name and its token (kept in memory for the bare-client loop
/// and revocations; never printed).
pub struct Conn {
    pub name: String,
    pub token: String,
}

pub fn connection_name(i: usize) -> String {
    format!("chan-{i:05}")
}

/// Prints "created 2000/10000 connections" about ten times per batch.
struct Progress {
    what: &'static str,
    total: usize,
    step: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total,
            step: (total / 10).clamp(1, 1000),
            done: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    fn tick(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.step) || n == self.total {
            eprintln!(
                "[bench] created {n}/{} {} ({:.0} s)",
                self.total,
                self.what,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Runs `f(0..total)` with at most `concurrency` in flight; stops at the first error.
async fn bounded<T, F, Fut>(
    what: &'static str,
    total: usize,
    concurrency: usize,
    f: F,
) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let progress = Progress::new(what, total);
    let mut out: Vec<(usize, T)> = stream::iter(0..total)
        .map(|i| {
            let fut = f(i);
            let progress = &progress;
            async move {
                let v = fut.await?;
                progress.tick();
                Ok::<_, anyhow::Error>((i, v))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Creates `obj`, retrying transient failures (at most 5 tries, 3 s of backoff in all);
/// "already exists" after a retried timeout counts as created.
async fn create<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=5 {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 1 => return Ok(()),
            Err(e) if attempt == 5 => {
                return Err(anyhow!(
                    "create {}: {e}",
                    obj.meta().name.as_deref().unwrap_or("?")
                ));
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    unreachable!("the last attempt returns")
}

fn secret(ns: &str, name: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn bytes(s: &str) -> ByteString {
    ByteString(s.as_bytes().to_vec())
}

pub async fn namespaces(client: &kube::Client) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut names = vec![NS.to_owned(), OPERATOR_NS.to_owned()];
    names.extend((0..TENANT_NAMESPACES).map(|i| format!("tenant-{i:02}")));
    for name in names {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name),
                ..Default::default()
            },
            ..Default::default()
        };
        create(&api, &ns).await?;
    }
    Ok(())
}

/// The `ChannelProvider` every connection uses, validating by RFC 7662 introspection at the sandbox.
pub async fn provider(client: &kube::Client, sandbox: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let data = BTreeMap::from([("client_secret".to_owned(), bytes(CLIENT_SECRET))]);
    create(&secrets, &secret(NS, "sandbox-client", data)).await?;
    let p = ChannelProvider::new(
        PROVIDER,
        ChannelProviderSpec {
            type_: ProviderType::OAuth2,
            client_id: CLIENT_ID.into(),
            client_secret_ref: Some(ClientSecretRef {
                name: "sandbox-client".into(),
                key: "client_secret".into(),
                namespace: None,
            }),
            redirect_url: None,
            scopes: vec![],
            endpoints: ProviderEndpoints {
                authorization_url: Some(format!("{sandbox}/oauth/authorize")),
                token_url: Some(format!("{sandbox}/oauth/token")),
                introspection_url: Some(format!("{sandbox}/oauth/introspect")),
                ..Default::default()
            },
            authorization_params: BTreeMap::new(),
            refresh_token_lifetime: None,
        },
    );
    let api: Api<ChannelProvider> = Api::namespaced(client.clone(), NS);
    let mut p = p;
    p.metadata.namespace = Some(NS.into());
    create(&api, &p).await
}

const SCOPES: [&str; 3] = [
    "pages_show_list",
    "pages_read_engagement",
    "pages_manage_posts",
];

/// A connection as a team would declare it: labels, an account with a display name, the
/// scopes the channel needs, two owners, the default 15m interval.
fn connection(i: usize) -> ChannelConnection {
    let mut c = ChannelConnection::new(
        &connection_name(i),
        ChannelConnectionSpec {
            provider_ref: ProviderRef {
                kind: ProviderKind::ChannelProvider,
                name: PROVIDER.into(),
            },
            account: Some(AccountRef {
                id: format!("acct-{i:05}"),
                display_name: Some(format!("Brand {i} – Facebook page")),
                kind: None,
            }),
            secret_ref: TokenSecretRef {
                name: format!("{}-token", connection_name(i)),
                access_token_key: "access_token".into(),
                refresh_token_key: "refresh_token".into(),
                expires_at_key: "expires_at".into(),
            },
            required_scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            check_interval: "15m".into(),
            refresh: RefreshPolicy::default(),
            owners: vec![
                format!("social-team-{}@example.com", i % 50),
                "marketing-ops@example.com".into(),
            ],
            notify: Default::default(),
            suspend: false,
        },
    );
    c.metadata.namespace = Some(NS.into());
    c.metadata.labels = Some(BTreeMap::from([
        ("app.kubernetes.io/part-of".into(), "social-suite".into()),
        ("relink.dev/team".into(), format!("team-{}", i % 50)),
        ("relink.dev/channel".into(), "facebook-page".into()),
    ]));
    c
}

/// Issues a token at the sandbox for each connection, then creates its Secret and the
/// connection. Returns the connections in index order.
pub async fn connections(
    client: &kube::Client,
    http: &reqwest::Client,
    sandbox: &str,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Conn>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let conns: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    bounded("connections", n, concurrency, |i| {
        let (secrets, conns) = (secrets.clone(), conns.clone());
        async move {
            let grant = Grant {
                account_id: format!("acct-{i:05}"),
                account_name: format!("Brand {i}"),
                scopes: SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                expires_in_secs: None,
                refreshable: false,
            };
            let issued: IssuedTokens = http
                .post(format!("{sandbox}/sandbox/tokens"))
                .json(&grant)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .context("issue a sandbox token")?
                .json()
                .await
                .context("sandbox token answer")?;
            let name = connection_name(i);
            let data = BTreeMap::from([("access_token".to_owned(), bytes(&issued.access_token))]);
            create(&secrets, &secret(NS, &format!("{name}-token"), data)).await?;
            create(&conns, &connection(i)).await?;
            Ok(Conn {
                name,
                token: issued.access_token,
            })
        }
    })
    .await
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Secrets the operator has no business with, as a cluster has them: Helm-style labels and
/// annotations, 2-4 KiB of data in three keys, spread over the `tenant-NN` namespaces.
pub async fn unrelated_secrets(client: &kube::Client, n: usize, concurrency: usize) -> Result<()> {
    bounded("unrelated secrets", n, concurrency, |i| {
        let client = client.clone();
        async move {
            let ns = format!("tenant-{:02}", i % TENANT_NAMESPACES);
            let size = rand::rng().random_range(2048..4096);
            let data = BTreeMap::from([
                ("config.yaml".to_owned(), bytes(&random_text(size / 2))),
                ("tls.crt".to_owned(), bytes(&random_text(size / 3))),
                (
                    "tls.key".to_owned(),
                    bytes(&random_text(size - size / 2 - size / 3)),
                ),
            ]);
            let mut s = secret(&ns, &format!("app-{i:05}-config"), data);
            s.metadata.labels = Some(BTreeMap::from([
                ("app.kubernetes.io/name".into(), format!("app-{i:05}")),
                ("app.kubernetes.io/managed-by".into(), "Helm".into()),
            ]));
            s.metadata.annotations = Some(BTreeMap::from([
                ("meta.helm.sh/release-name".into(), format!("app-{i:05}")),
                ("meta.helm.sh/release-namespace".into(), ns.clone()),
            ]));
            create(&Api::<Secret>::namespaced(client, &ns), &s).await
        }
    })
    .await
    .map(|_| ())
}
