//! With the operator stopped: what one API request of each kind a check makes costs
//! kube-apiserver + etcd (the same Secret GET, status write and Event the operator sends, plus a
//! JSON merge patch of the same status for comparison with server-side apply), and a "minimal
//! operator" loop that does only what a check must: read the token Secret, ask the provider,
//! write the status once.

use std::future::Future;
use std::time::Instant;

use anyhow::{Context as _, Result};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use relink::api::{ChannelConnection, FIELD_MANAGER};
use serde_json::{Value, json};

use crate::controlplane::ControlPlane;
use crate::fixtures::{Conn, NS};

/// Control-plane CPU and wall time per request, by kind.
#[derive(Clone, Debug, Default)]
pub struct ApiCosts {
    pub ops: usize,
    /// (kind, control-plane CPU ms per request, wall ms per request at `concurrency` in flight)
    pub kinds: Vec<(&'static str, f64, f64)>,
}

pub async fn measure(
    cp: &ControlPlane,
    client: &kube::Client,
    conns: &[Conn],
    ops: usize,
    concurrency: usize,
) -> Result<ApiCosts> {
    let ops = ops.min(conns.len());
    let mut costs = ApiCosts {
        ops,
        kinds: Vec::new(),
    };
    if ops == 0 {
        return Ok(costs);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let status = StatusBody::read(&api, &conns[0].name).await?;
    let body = |i: usize| status.body(i as i64 + 60);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "relink".into(),
            instance: None,
        },
    );

    let g = time(cp, ops, concurrency, |i| {
        let secrets = secrets.clone();
        let name = format!("{}-token", conns[i].name);
        async move { secrets.get(&name).await.map(|_| ()) }
    })
    .await?;
    costs.kinds.push(("GET Secret", g.0, g.1));

    let a = time(cp, ops, concurrency, |i| {
        let api = api.clone();
        let (name, patch) = (conns[i].name.clone(), body(i));
        async move {
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            api.patch_status(&name, &pp, &Patch::Apply(&patch))
                .await
                .map(|_| ())
        }
    })
    .await?;
    costs.kinds.push(("status: server-side apply", a.0, a.1));

    let m = time(cp, ops, concurrency, |i| {
        let api = api.clone();
        let (name, patch) = (conns[i].name.clone(), body(i + ops));
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    })
    .await?;
    costs.kinds.push(("status: JSON merge patch", m.0, m.1));

    let e = time(cp, ops, concurrency, |i| {
        let recorder = recorder.clone();
        let reference = ObjectReference {
            api_version: Some("relink.dev/v1alpha1".into()),
            kind: Some("ChannelConnection".into()),
            name: Some(conns[i].name.clone()),
            namespace: Some(NS.into()),
            ..Default::default()
        };
        async move {
            let ev = Event {
                type_: EventType::Normal,
                reason: "Valid".into(),
                note: Some("probe: the token is valid and has every required scope".into()),
                action: "Check".into(),
                secondary: None,
            };
            recorder.publish(&ev, &reference).await
        }
    })
    .await?;
    costs.kinds.push(("POST Event (kube Recorder)", e.0, e.1));
    Ok(costs)
}

/// A status as the operator writes it, with a `lastCheckTime` that differs on every write.
struct StatusBody(Value);

impl StatusBody {
    async fn read(api: &Api<ChannelConnection>, name: &str) -> Result<StatusBody> {
        let status = api
            .get(name)
            .await
            .context("read a checked connection")?
            .status
            .context("the connection has a status")?;
        Ok(StatusBody(serde_json::to_value(status)?))
    }

    fn body(&self, offset_secs: i64) -> Value {
        let mut s = self.0.clone();
        let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset_secs);
        s["lastCheckTime"] = json!(t.to_string());
        json!({"apiVersion": "relink.dev/v1alpha1", "kind": "ChannelConnection", "status": s})
    }
}

/// The least an operator must do per check, at `concurrency` in flight: GET the token Secret,
/// POST the introspection, server-side apply the status. Returns the wall time in seconds.
pub async fn minimal_loop(
    client: &kube::Client,
    sandbox: &str,
    conns: &[Conn],
    concurrency: usize,
) -> Result<f64> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let api: Api<ChannelConnection> = Api::namespaced(client.clone(), NS);
    let status = StatusBody::read(&api, &conns[0].name).await?;
    let url = format!("{sandbox}/oauth/introspect");
    let started = Instant::now();
    let results: Vec<Result<()>> = stream::iter(conns.iter().enumerate())
        .map(|(i, c)| {
            let (secrets, api, http, url) = (secrets.clone(), api.clone(), &http, &url);
            let patch = status.body(i as i64 + 120);
            async move {
                let s = secrets.get(&format!("{}-token", c.name)).await?;
                let token = s
                    .data
                    .and_then(|d| d.get("access_token").cloned())
                    .context("token key")?;
                http.post(url)
                    .header("Accept", "application/json")
                    .basic_auth(
                        crate::fixtures::CLIENT_ID,
                        Some(crate::fixtures::CLIENT_SECRET),
                    )
                    .form(&[
                        ("token", String::from_utf8_lossy(&token.0).as_ref()),
                        ("token_type_hint", "access_token"),
                    ])
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                api.patch_status(&c.name, &pp, &Patch::Apply(&patch))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e).context("minimal-operator loop");
    }
    Ok(elapsed)
}

/// Runs `f(0..ops)` with `concurrency` in flight; returns (control-plane CPU ms, wall ms) per op.
async fn time<F, Fut>(cp: &ControlPlane, ops: usize, concurrency: usize, f: F) -> Result<(f64, f64)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = kube::Result<()>>,
{
    let cpu0 = cp.cpu_time()?;
    let started = Instant::now();
    let results: Vec<kube::Result<()>> = stream::iter(0..ops)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = started.elapsed().as_secs_f64() * 1000.0 / ops as f64;
    let cpu = (cp.cpu_time()? - cpu0).as_secs_f64() * 1000.0 / ops as f64;
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        return Err(e).context("API cost probe");
    }
    Ok((cpu, wall))
}
