//! The demo's objects: one provider at the sandbox and four channels in different states.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use relink::api::{
    AccountRef, ChannelConnection, ChannelConnectionSpec, ChannelProvider, ProviderKind,
    ProviderRef, RefreshPolicy, TokenSecretRef,
};
use relink::sandbox::{Grant, Sandbox, SandboxConfig};

/// Field manager of everything the demo writes.
pub(super) const MANAGER: &str = "relink-demo";
/// The provider object every demo connection uses.
pub(super) const PROVIDER: &str = "sandbox-social";
/// The connection the user heals in the browser.
pub(super) const BROKEN: &str = "acme-support-inbox";

/// One demo channel: what its token looks like at the sandbox and what the user should see.
pub(super) struct Channel {
    pub(super) name: &'static str,
    pub(super) account_id: &'static str,
    pub(super) account_name: &'static str,
    /// Granted at the sandbox.
    pub(super) scopes: &'static [&'static str],
    /// Required by the connection.
    pub(super) required: &'static [&'static str],
    pub(super) expires_in_secs: Option<u64>,
    pub(super) refreshable: bool,
    pub(super) revoked: bool,
    /// Said when the connection is created.
    pub(super) story: &'static str,
}

pub(super) const CHANNELS: [Channel; 4] = [
    Channel {
        name: "acme-facebook-page",
        account_id: "104839201122334",
        account_name: "Acme Coffee",
        scopes: &["pages_show_list", "pages_manage_posts"],
        required: &["pages_show_list", "pages_manage_posts"],
        expires_in_secs: Some(60 * 86_400),
        refreshable: true,
        revoked: false,
        story: "a healthy page token",
    },
    Channel {
        name: BROKEN,
        account_id: "support@acme-coffee.example",
        account_name: "Acme Coffee Support",
        scopes: &["mail.read", "mail.send"],
        required: &["mail.read", "mail.send"],
        expires_in_secs: None,
        refreshable: false,
        revoked: true,
        story: "a mailbox whose access was removed at the provider (revoked)",
    },
    Channel {
        name: "acme-instagram",
        account_id: "17841405822304914",
        account_name: "@acmecoffee",
        scopes: &["instagram_basic"],
        required: &["instagram_basic", "instagram_content_publish"],
        expires_in_secs: Some(60 * 86_400),
        refreshable: true,
        revoked: false,
        story: "a token granted without the permission to publish",
    },
    Channel {
        name: "acme-linkedin",
        account_id: "urn:li:organization:2414183",
        account_name: "Acme Coffee (LinkedIn)",
        scopes: &["w_organization_social"],
        required: &["w_organization_social"],
        expires_in_secs: Some(12 * 3600),
        refreshable: false,
        revoked: false,
        story: "a token that expires in 12 hours and cannot be refreshed",
    },
];

/// The provider, its client secret, and for each channel a token Secret and a connection.
/// Leftovers of an earlier run (connections, token Secrets) are replaced: their tokens belonged
/// to a sandbox that is gone.
pub(super) async fn create_objects(
    client: &Client,
    ns: &str,
    sandbox: &Sandbox,
) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let conns: Api<ChannelConnection> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(MANAGER).force();
    for c in &CHANNELS {
        delete_if_present(&conns, c.name).await?;
        delete_if_present(&secrets, &format!("{}-token", c.name)).await?;
    }

    let client_secret = secret(
        &format!("{PROVIDER}-client"),
        &[("client_secret", &SandboxConfig::default().client_secret)],
    );
    secrets
        .patch(
            &format!("{PROVIDER}-client"),
            &pp,
            &Patch::Apply(&client_secret),
        )
        .await
        .map_err(|e| format!("cannot write Secret {PROVIDER}-client: {e}"))?;
    let provider = ChannelProvider::new(
        PROVIDER,
        sandbox.provider_spec(&format!("{PROVIDER}-client")),
    );
    Api::<ChannelProvider>::namespaced(client.clone(), ns)
        .patch(PROVIDER, &pp, &Patch::Apply(&provider))
        .await
        .map_err(|e| format!("cannot apply ChannelProvider {PROVIDER}: {e}"))?;

    for c in &CHANNELS {
        create_channel(&secrets, &conns, sandbox, c).await?;
    }
    Ok(())
}

/// One channel: tokens issued (and spoiled as the channel's story says) at the sandbox, its
/// token Secret and its connection.
async fn create_channel(
    secrets: &Api<Secret>,
    conns: &Api<ChannelConnection>,
    sandbox: &Sandbox,
    c: &Channel,
) -> Result<(), String> {
    let tokens = sandbox.issue(Grant {
        account_id: c.account_id.into(),
        account_name: c.account_name.into(),
        scopes: c.scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_in_secs: c.expires_in_secs,
        refreshable: c.refreshable,
    });
    if let Some(at) = tokens.expires_at {
        sandbox.set_expires_at(&tokens.access_token, Some(at));
    }
    if c.revoked {
        sandbox.revoke(&tokens.access_token);
    }
    let expires_at = tokens.expires_at.map(|t| t.to_string());
    let mut data = vec![("access_token", tokens.access_token.as_str())];
    if let Some(rt) = &tokens.refresh_token {
        data.push(("refresh_token", rt));
    }
    if let Some(at) = &expires_at {
        data.push(("expires_at", at));
    }
    let name = format!("{}-token", c.name);
    secrets
        .create(&PostParams::default(), &secret(&name, &data))
        .await
        .map_err(|e| format!("cannot create Secret {name}: {e}"))?;
    let conn = ChannelConnection::new(
        c.name,
        ChannelConnectionSpec {
            provider_ref: ProviderRef {
                kind: ProviderKind::ChannelProvider,
                name: PROVIDER.into(),
            },
            account: Some(AccountRef {
                id: c.account_id.into(),
                display_name: Some(c.account_name.into()),
                kind: None,
            }),
            secret_ref: TokenSecretRef {
                name,
                access_token_key: "access_token".into(),
                refresh_token_key: "refresh_token".into(),
                expires_at_key: "expires_at".into(),
            },
            required_scopes: c.required.iter().map(|s| (*s).to_owned()).collect(),
            check_interval: "5m".into(),
            refresh: RefreshPolicy::default(),
            owners: vec!["social-team@acme-coffee.example".into()],
            notify: Default::default(),
            suspend: false,
        },
    );
    conns
        .create(&PostParams::default(), &conn)
        .await
        .map_err(|e| format!("cannot create ChannelConnection {}: {e}", c.name))?;
    Ok(())
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                MANAGER.to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Deletes `name` and waits until it is gone (no finalizers on demo objects, so that is quick).
async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(format!("cannot replace {name} from an earlier run: {e}")),
    }
    for _ in 0..100 {
        match api.get_opt(name).await {
            Ok(None) => return Ok(()),
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(format!("{name} from an earlier run is still being deleted"))
}
