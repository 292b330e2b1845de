//! Builders for the objects the e2e tests apply, and a `Scenario`: one namespace, one sandbox
//! provider and one operator watching only that namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use relink::api::{
    AccountRef, CHECK_REQUESTED_ANNOTATION, ChannelConnection, ChannelConnectionSpec,
    ChannelConnectionStatus, ChannelProvider, ChannelProviderSpec, ClientSecretRef, ConditionType,
    ProviderEndpoints, ProviderType,
};
use relink::sandbox::{Grant, IssuedTokens, Sandbox, SandboxConfig};

use crate::support::{self, Operator};

/// How the provider object validates tokens against the sandbox.
#[derive(Clone, Copy)]
pub enum Validation {
    Introspection,
    Userinfo,
}

pub struct Scenario {
    pub client: Client,
    pub ns: String,
    pub sandbox: Sandbox,
    pub operator: Operator,
    /// Every token issued in this scenario, to prove none leaked.
    pub tokens: Vec<String>,
}

/// Flags every test operator gets: fast retries, short provider timeout, the sandbox allowed.
pub fn operator_args(ns: &str) -> Vec<String> {
    [
        "--namespace",
        ns,
        "--operator-namespace",
        ns,
        "--allow-namespaced-endpoint-hosts",
        "127.0.0.1",
        "--retry-base",
        "1s",
        "--provider-timeout",
        "2s",
        "--metrics-addr",
        "127.0.0.1:0",
        "--callback-addr",
        "127.0.0.1:0",
        "--check-request-min-gap",
        "1s",
        "--notification-retry-base",
        "1s",
        "--notification-batch-window",
        "0s",
    ]
    .map(str::to_owned)
    .to_vec()
}

impl Scenario {
    /// A namespace with a sandbox provider and an operator started with [`operator_args`].
    pub async fn start(prefix: &str) -> Scenario {
        let cp = support::control_plane();
        let client = cp.client();
        let ns = support::test_namespace(&client, prefix).await;
        let args = operator_args(&ns);
        Self::start_with(client, ns, &args).await
    }

    pub async fn start_with(client: Client, ns: String, args: &[String]) -> Scenario {
        Self::start_with_sandbox(client, ns, args, SandboxConfig::default()).await
    }

    /// Like [`Scenario::start_with`], with a sandbox configured by the test (e.g. its latency).
    pub async fn start_with_sandbox(
        client: Client,
        ns: String,
        args: &[String],
        config: SandboxConfig,
    ) -> Scenario {
        let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), config)
            .await
            .expect("sandbox starts");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let operator = Operator::start(&args).await;
        Scenario {
            client,
            ns,
            sandbox,
            operator,
            tokens: Vec::new(),
        }
    }

    /// Like [`Scenario::start`], with the operator's OAuth callback on a known local port.
    /// Returns the scenario and the callback's base URL (`--public-url`).
    pub async fn start_with_callback(prefix: &str) -> (Scenario, String) {
        Self::start_with_callback_flags(prefix, &[]).await
    }

    /// [`Scenario::start_with_callback`] with more operator flags (`(flag, value)` pairs).
    pub async fn start_with_callback_flags(
        prefix: &str,
        flags: &[(&str, &str)],
    ) -> (Scenario, String) {
        let cp = support::control_plane();
        let client = cp.client();
        let ns = support::test_namespace(&client, prefix).await;
        let port = crate::support::free_port();
        let public = format!("http://127.0.0.1:{port}");
        let mut args = with_flag(
            operator_args(&ns),
            "--callback-addr",
            &format!("127.0.0.1:{port}"),
        );
        args = with_flag(args, "--public-url", &public);
        for (flag, value) in flags {
            args = with_flag(args, flag, value);
        }
        (Self::start_with(client, ns, &args).await, public)
    }

    /// Plays the person at the sandbox consent page: submits it for `account` (Allow or Deny)
    /// and returns where the sandbox redirects (the operator's callback URL with code and state).
    pub async fn consent(&self, reauth_url: &str, account: &str, allow: bool) -> String {
        let url = url::Url::parse(reauth_url).expect("reauthUrl is a URL");
        let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        form.push(("account_id".into(), account.into()));
        form.push(("account_name".into(), format!("{account} name")));
        form.push((
            "decision".into(),
            if allow { "allow" } else { "deny" }.into(),
        ));
        let resp = browser()
            .post(format!("{}/oauth/authorize", self.sandbox.base_url()))
            .form(&form)
            .send()
            .await
            .expect("consent page answers");
        assert_eq!(resp.status().as_u16(), 303, "consent redirects back");
        resp.headers()["location"]
            .to_str()
            .expect("location")
            .to_owned()
    }

    pub fn connections(&self) -> Api<ChannelConnection> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Issues a token at the sandbox for `account` with `scopes`, remembering it for leak checks.
    pub fn issue(&mut self, account: &str, scopes: &[&str]) -> IssuedTokens {
        let t = self.sandbox.issue(Grant {
            account_id: account.into(),
            account_name: format!("{account} name"),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_in_secs: None,
            refreshable: true,
        });
        self.tokens.push(t.access_token.clone());
        self.tokens.extend(t.refresh_token.clone());
        t
    }

    /// A `ChannelProvider` named `name` pointing at the sandbox, with its client secret.
    pub async fn provider(&self, name: &str, validation: Validation) {
        let base = self.sandbox.base_url();
        let mut endpoints = ProviderEndpoints {
            authorization_url: Some(format!("{base}/oauth/authorize")),
            token_url: Some(format!("{base}/oauth/token")),
            ..Default::default()
        };
        match validation {
            Validation::Introspection => {
                endpoints.introspection_url = Some(format!("{base}/oauth/introspect"))
            }
            Validation::Userinfo => endpoints.userinfo_url = Some(format!("{base}/oauth/userinfo")),
        }
        self.secret(
            &format!("{name}-client"),
            &[("client_secret", "sandbox-secret")],
        )
        .await;
        self.provider_with(name, endpoints).await;
    }

    pub async fn provider_with(&self, name: &str, endpoints: ProviderEndpoints) {
        let p = ChannelProvider::new(
            name,
            ChannelProviderSpec {
                type_: ProviderType::OAuth2,
                client_id: "relink-sandbox".into(),
                client_secret_ref: Some(ClientSecretRef {
                    name: format!("{name}-client"),
                    key: "client_secret".into(),
                    namespace: None,
                }),
                redirect_url: None,
                scopes: vec![],
                endpoints,
                authorization_params: BTreeMap::new(),
                refresh_token_lifetime: None,
            },
        );
        let api: Api<ChannelProvider> = Api::namespaced(self.client.clone(), &self.ns);
        api.patch(name, &PatchParams::apply("e2e").force(), &Patch::Apply(&p))
            .await
            .expect("provider applies");
    }

    /// Creates or replaces a Secret with string data.
    pub async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        api.patch(
            name,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("secret applies");
    }

    /// A connection `name` using provider `provider` and Secret `secret`.
    pub async fn connection(
        &self,
        name: &str,
        provider: &str,
        secret: &str,
        account: &str,
        required: &[&str],
    ) {
        let spec = connection_spec(provider, secret, account, required);
        self.apply_connection(name, spec).await;
    }

    pub async fn apply_connection(&self, name: &str, spec: ChannelConnectionSpec) {
        let c = ChannelConnection::new(name, spec);
        self.connections()
            .create(&PostParams::default(), &c)
            .await
            .expect("connection is accepted");
    }

    /// Sets the check-request annotation to a new value; returns it.
    pub async fn request_check(&self, name: &str) -> String {
        let value = jiff::Timestamp::now().as_nanosecond().to_string();
        let patch =
            serde_json::json!({"metadata": {"annotations": {CHECK_REQUESTED_ANNOTATION: value}}});
        self.connections()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
        value
    }

    pub async fn status(&self, name: &str) -> ChannelConnectionStatus {
        self.connections()
            .get(name)
            .await
            .expect("connection exists")
            .status
            .unwrap_or_default()
    }

    /// Waits until `Ready` has `reason` (and returns the status then).
    pub async fn wait_ready_reason(&self, name: &str, reason: &str) -> ChannelConnectionStatus {
        self.wait_condition(name, ConditionType::Ready, reason)
            .await
    }

    pub async fn wait_condition(
        &self,
        name: &str,
        t: ConditionType,
        reason: &str,
    ) -> ChannelConnectionStatus {
        let api = self.connections();
        support::eventually(
            &format!(
                "{}/{name} condition {} reason {reason}",
                self.ns,
                t.as_str()
            ),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move {
                    let s = api.get(name).await.ok()?.status?;
                    let c = s.condition(t)?;
                    (c.reason == reason).then_some(s)
                }
            },
        )
        .await
    }

    /// Events about connection `name`, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let mut list: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list
    }

    /// Waits for an Event about `name` with `reason` and type `Warning`/`Normal`.
    pub async fn wait_event(&self, name: &str, type_: &str, reason: &str) -> Event {
        support::eventually(
            &format!("{type_} event {reason} for {name}"),
            Duration::from_secs(20),
            || async {
                self.events(name).await.into_iter().find(|e| {
                    e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason)
                })
            },
        )
        .await
    }

    /// Proves that no token of this scenario appears in the operator's output, in any Event or
    /// in any connection status of the namespace.
    pub async fn assert_no_token_leaked(&self) {
        let output = self.operator.output();
        let events = serde_json::to_string(
            &Api::<Event>::namespaced(self.client.clone(), &self.ns)
                .list(&ListParams::default())
                .await
                .expect("events")
                .items,
        )
        .expect("json");
        let statuses = serde_json::to_string(
            &self
                .connections()
                .list(&ListParams::default())
                .await
                .expect("list")
                .items,
        )
        .expect("json");
        assert!(
            !output.is_empty(),
            "the operator printed nothing; the leak check would be vacuous"
        );
        for t in &self.tokens {
            assert!(
                !output.contains(t.as_str()),
                "a token appears in the operator output"
            );
            assert!(!events.contains(t.as_str()), "a token appears in an Event");
            assert!(
                !statuses.contains(t.as_str()),
                "a token appears in a connection"
            );
        }
        for prefix in ["sbx-at-", "sbx-rt-", "sbx-code-"] {
            assert!(
                !output.contains(prefix),
                "something token-shaped ({prefix}…) appears in the operator output"
            );
        }
    }
}

/// `args` with `flag` set to `value`: replaced when present, appended otherwise.
pub fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_owned(),
        None => args.extend([flag.to_owned(), value.to_owned()]),
    }
    args
}

/// An HTTP client that, like a browser here, does not follow redirects on its own.
pub fn browser() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// GET `url` as a browser would; returns status and body.
pub async fn open(url: &str) -> (u16, String) {
    let resp = browser().get(url).send().await.expect("page answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

pub fn connection_spec(
    provider: &str,
    secret: &str,
    account: &str,
    required: &[&str],
) -> ChannelConnectionSpec {
    ChannelConnectionSpec {
        account: Some(AccountRef {
            id: account.into(),
            display_name: Some(format!("{account} display")),
            kind: None,
        }),
        required_scopes: required.iter().map(|s| s.to_string()).collect(),
        owners: vec!["owner@example.com".into()],
        ..ChannelConnectionSpec::new(provider, secret)
    }
}
