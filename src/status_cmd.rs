//! `relink status`: a terminal summary of channel connections for people, one line each, with
//! what to do under every connection that needs a person. Exit code 0 when every connection
//! shown is Ready, 1 when one is not (or none was checked yet), 2 when relink could not tell.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use relink::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnection, ConditionType};

#[derive(Args)]
pub struct StatusArgs {
    /// Only this connection (needs --namespace unless it is in the kubeconfig's default namespace).
    name: Option<String>,
    /// Only connections in this namespace (default: every namespace, or the kubeconfig's
    /// namespace when NAME is given).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Kubeconfig file to use (default: $KUBECONFIG or ~/.kube/config, current context).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

pub fn main(args: StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The configuration in `kubeconfig`, or in the usual places (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster).
pub(crate) async fn config_for(kubeconfig: Option<&Path>) -> Result<Config, String> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("cannot use kubeconfig {}: {e}", path.display()))
        }
        None => Config::infer().await.map_err(|e| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            if std::env::var_os("KUBECONFIG").is_none() && !home.join(".kube/config").exists() {
                "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)".to_owned()
            } else {
                let e = e.to_string().replace('\n', " ");
                format!("cannot load the kubeconfig (set KUBECONFIG or pass --kubeconfig): {e}")
            }
        }),
    }
}

/// A client for [`config_for`].
pub(crate) async fn client_for(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let config = config_for(kubeconfig).await?;
    Client::try_from(config).map_err(|e| format!("cannot build a Kubernetes client: {e}"))
}

/// Prints the summary; `Ok(true)` when every connection shown is Ready.
async fn run(args: &StatusArgs) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    let list = match (&args.name, &args.namespace) {
        (Some(name), ns) => {
            let api: Api<ChannelConnection> = match ns {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::default_namespaced(client),
            };
            match api.get_opt(name).await.map_err(api_error)? {
                Some(c) => vec![c],
                None => {
                    return Err(format!(
                        "channelconnection {name} not found in namespace {}",
                        ns.as_deref().unwrap_or("(the kubeconfig's default)")
                    ));
                }
            }
        }
        (None, Some(ns)) => {
            Api::<ChannelConnection>::namespaced(client, ns)
                .list(&ListParams::default())
                .await
                .map_err(api_error)?
                .items
        }
        (None, None) => {
            Api::<ChannelConnection>::all(client)
                .list(&ListParams::default())
                .await
                .map_err(api_error)?
                .items
        }
    };
    if list.is_empty() {
        let r#where = args
            .namespace
            .as_deref()
            .map(|ns| format!("namespace {ns}"))
            .unwrap_or_else(|| "any namespace".to_owned());
        println!("No ChannelConnections in {where}.");
        return Ok(true);
    }
    let now = jiff::Timestamp::now();
    print!("{}", render(&list, now));
    Ok(list.iter().all(|c| summarize(c, now).ready))
}

fn api_error(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            "the ChannelConnection CRD is not installed: run `relink crd | kubectl apply --server-side -f -`".to_owned()
        }
        other => format!("cannot list ChannelConnections: {other}"),
    }
}

/// What one line says about a connection.
pub(crate) struct Summary {
    pub mark: &'static str,
    pub ready: bool,
    pub id: String,
    pub provider: String,
    pub account: String,
    pub reason: String,
    pub expiry: String,
    pub checked: String,
    /// Lines under the summary (the condition message, the link, what to do).
    pub notes: Vec<String>,
}

pub(crate) fn summarize(c: &ChannelConnection, now: jiff::Timestamp) -> Summary {
    let status = c.status.clone().unwrap_or_default();
    let ready_cond = status.condition(ConditionType::Ready);
    let (mark, ready, reason) = match ready_cond {
        Some(r) if r.reason == "Checking" => ("…", false, "Checking".to_owned()),
        Some(r) if r.status == "True" => ("✔", true, r.reason.clone()),
        Some(r) if r.status == "False" => ("✖", false, r.reason.clone()),
        Some(r) => ("…", false, r.reason.clone()),
        None => ("…", false, "NotCheckedYet".to_owned()),
    };
    let account = status
        .account
        .as_ref()
        .and_then(|a| a.name.clone().or_else(|| a.id.clone()))
        .or_else(|| {
            c.spec
                .account
                .as_ref()
                .map(|a| a.display_name.clone().unwrap_or_else(|| a.id.clone()))
        })
        .unwrap_or_else(|| "-".to_owned());
    let expiry = match &status.expires_at {
        Some(t) if t.0 > now => format!(
            "expires in {}",
            human_duration(t.0.as_second() - now.as_second())
        ),
        Some(t) => format!(
            "expired {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None if ready => "no expiry".to_owned(),
        None => "-".to_owned(),
    };
    let checked = match &status.last_check_time {
        Some(t) => format!(
            "checked {} ago",
            human_duration(now.as_second() - t.0.as_second())
        ),
        None => "not checked yet".to_owned(),
    };
    let mut notes = Vec::new();
    let show_message = !ready || reason != "Valid";
    if show_message && let Some(r) = ready_cond {
        notes.push(r.message.clone());
    }
    if let Some(rec) = status.condition(ConditionType::Reconciling)
        && rec.status == "True"
        && rec.reason == "ProviderUnavailable"
    {
        notes.push(format!(
            "the provider did not answer; relink keeps the last verdict and retries ({})",
            rec.message
        ));
    }
    if !status.missing_scopes.is_empty() {
        notes.push(format!(
            "missing permissions: {}",
            status.missing_scopes.join(", ")
        ));
    }
    if let Some(url) = &status.reauth_url {
        let who = c
            .spec
            .account
            .as_ref()
            .map(|a| {
                format!(
                    " as the owner of {}",
                    a.display_name.as_deref().unwrap_or(&a.id)
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "what to do: open this link in a browser and log in{who} (do not delete the connection):"
        ));
        notes.push(format!("  {url}"));
    } else if !ready && reason != "Checking" {
        notes.push(what_to_do(&reason).to_owned());
    }
    Summary {
        mark,
        ready,
        id: format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()),
        provider: c.spec.provider_ref.name.clone(),
        account,
        reason,
        expiry,
        checked,
        notes,
    }
}

/// One hint per reason that has no re-authorization link (see docs/troubleshooting.md).
fn what_to_do(reason: &str) -> &'static str {
    match reason {
        "SecretNotFound" => {
            "what to do: create the Secret named in spec.secretRef (same namespace)"
        }
        "SecretKeyMissing" => {
            "what to do: put the access token under the key named in spec.secretRef.accessTokenKey"
        }
        "ProviderNotFound" => {
            "what to do: create the provider named in spec.providerRef, or fix the name"
        }
        "ProviderNotReady" => {
            "what to do: fix the provider object (client ID/secret); see `kubectl describe` on it"
        }
        "ProviderUnavailable" => "nothing to do: the provider is unreachable; relink retries",
        "AccountActionRequired" => {
            "what to do: log in to the provider's website with the account; it asks for an action"
        }
        "Suspended" => "checks are suspended (spec.suspend: true)",
        _ => "what to do: see docs/troubleshooting.md for this reason",
    }
}

/// The whole summary as text: a header, one aligned line per connection, notes, a total.
pub(crate) fn render(list: &[ChannelConnection], now: jiff::Timestamp) -> String {
    let rows: Vec<Summary> = list.iter().map(|c| summarize(c, now)).collect();
    let header = ["CONNECTION", "PROVIDER", "ACCOUNT", "STATUS", "EXPIRY"];
    let width = |f: &dyn Fn(&Summary) -> usize, h: &str| {
        rows.iter().map(f).max().unwrap_or(0).max(h.chars().count())
    };
    let w = [
        width(&|s| s.id.chars().count(), header[0]),
        width(&|s| s.provider.chars().count(), header[1]),
        width(&|s| s.account.chars().count(), header[2]),
        width(&|s| s.reason.chars().count(), header[3]),
        width(&|s| s.expiry.chars().count(), header[4]),
    ];
    let line = |mark: &str, cells: [&str; 5], last: &str| {
        let mut out = format!("{mark} ");
        for (cell, width) in cells.iter().zip(w) {
            out.push_str(&pad(cell, width));
            out.push_str("  ");
        }
        out.push_str(last);
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(" ", header, "LAST CHECK");
    for s in &rows {
        out.push_str(&line(
            s.mark,
            [&s.id, &s.provider, &s.account, &s.reason, &s.expiry],
            &s.checked,
        ));
        for note in &s.notes {
            out.push_str(&format!("    {note}\n"));
        }
    }
    let ready = rows.iter().filter(|s| s.ready).count();
    out.push_str(&format!(
        "\n{ready} of {} connection{} Ready.",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    if ready < rows.len() {
        out.push_str(&format!(
            " To check one again now: kubectl annotate channelconnection NAME -n NAMESPACE {CHECK_REQUESTED_ANNOTATION}=$(date +%s) --overwrite"
        ));
    }
    out.push('\n');
    out
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// `seconds` the way kubectl prints ages (`45s`, `3m20s`, `5h`, `12d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let days = hours / 24;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        };
    }
    format!("{}y", days / 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use relink::api::{
        AccountRef, ChannelConnectionSpec, ChannelConnectionStatus, ProviderKind, ProviderRef,
        TokenSecretRef,
    };

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(12 * 3600), "12h");
        assert_eq!(human_duration(3 * 86_400 + 3600), "3d1h");
        assert_eq!(human_duration(60 * 86_400), "60d");
    }

    fn connection(reason: &str, status: &str, reauth: Option<&str>) -> ChannelConnection {
        let now = jiff::Timestamp::now();
        let mut c = ChannelConnection::new(
            "chan",
            ChannelConnectionSpec {
                provider_ref: ProviderRef {
                    kind: ProviderKind::ChannelProvider,
                    name: "app".into(),
                },
                account: Some(AccountRef {
                    id: "page-1".into(),
                    display_name: Some("Page One".into()),
                }),
                secret_ref: TokenSecretRef {
                    name: "tok".into(),
                    access_token_key: "access_token".into(),
                    refresh_token_key: "refresh_token".into(),
                    expires_at_key: "expires_at".into(),
                },
                required_scopes: vec![],
                check_interval: "15m".into(),
                refresh: Default::default(),
                owners: vec![],
                notify: Default::default(),
                suspend: false,
            },
        );
        c.metadata.namespace = Some("ns".into());
        c.status = Some(ChannelConnectionStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: format!("{reason} message"),
                last_transition_time: Time(now),
                observed_generation: None,
            }],
            reauth_url: reauth.map(str::to_owned),
            last_check_time: Some(Time(now)),
            ..Default::default()
        });
        c
    }

    #[test]
    fn broken_connections_say_what_to_do() {
        let now = jiff::Timestamp::now();
        let ok = connection("Valid", "True", None);
        let revoked = connection("Revoked", "False", Some("https://example.test/auth?x=1"));
        let text = render(&[ok.clone(), revoked.clone()], now);
        assert!(text.contains("✔ ns/chan"), "{text}");
        assert!(text.contains("✖ ns/chan"), "{text}");
        assert!(text.contains("Revoked message"), "{text}");
        assert!(text.contains("  https://example.test/auth?x=1"), "{text}");
        assert!(text.contains("1 of 2 connections Ready."), "{text}");
        assert!(summarize(&ok, now).ready);
        assert!(!summarize(&revoked, now).ready);
        let missing = connection("SecretNotFound", "False", None);
        assert!(
            summarize(&missing, now)
                .notes
                .iter()
                .any(|n| n.contains("create the Secret"))
        );
        let pending = ChannelConnection { status: None, ..ok };
        let s = summarize(&pending, now);
        assert_eq!((s.mark, s.ready), ("…", false));
    }
}
