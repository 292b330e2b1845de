//! Token renewal for one connection: ask the provider, write the new tokens into the Secret.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::Context;
use super::tokens::{read_key, write_tokens};
use crate::api::{ChannelConnection, Reason};
use crate::providers::{App, Renewal, Token, Verdict, validator_for};
use crate::telemetry::metrics::ResultLabels;

/// One connection's token renewal: calls the provider, writes the Secret with optimistic
/// concurrency, and re-reads it before declaring a refresh token dead.
pub(super) struct Refresher<'a> {
    pub(super) ctx: &'a Context,
    pub(super) conn: &'a ChannelConnection,
    pub(super) ns: &'a str,
    pub(super) app: &'a App,
    pub(super) refresh_token: Option<Token>,
    /// `resourceVersion` of the Secret as last read or written.
    pub(super) version: Option<String>,
    pub(super) refreshed: bool,
}

pub(super) enum RefreshResult {
    Renewed(Token, Option<jiff::Timestamp>),
    /// A verdict to report instead of checking further.
    Failed(Verdict),
    NotPossible,
}

impl Refresher<'_> {
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

    pub(super) async fn run(&mut self, access: &Token) -> RefreshResult {
        let validator = validator_for(self.app.settings.type_);
        let answer = validator
            .renew(
                &self.ctx.http,
                self.app,
                access,
                self.refresh_token.as_ref(),
            )
            .await;
        let name = self.conn.name_any();
        match answer {
            Renewal::Renewed(tokens) => {
                match write_tokens(
                    &self.ctx.client,
                    self.ns,
                    &self.conn.spec.secret_ref,
                    &tokens,
                    self.version.as_deref(),
                )
                .await
                {
                    Ok(version) => {
                        self.version = version;
                        self.refreshed = true;
                        if tokens.refresh_token.is_some() {
                            self.refresh_token = tokens.refresh_token.clone();
                        }
                        self.count("renewed");
                        info!(namespace = %self.ns, name = %name, "token refreshed");
                        RefreshResult::Renewed(tokens.access_token, tokens.expires_at)
                    }
                    Err(e) => {
                        self.count("write_failed");
                        warn!(namespace = %self.ns, name = %name, error = %e, "refreshed token not written; checking again soon");
                        RefreshResult::Failed(Verdict::Transient {
                            message: format!("refreshed but {e}"),
                            retry_after: None,
                        })
                    }
                }
            }
            Renewal::Rejected { message } => {
                // A refresh token rotated by someone else is not a dead one: re-read first.
                let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), self.ns);
                let current = secrets
                    .get_opt(&self.conn.spec.secret_ref.name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| read_key(&s, &self.conn.spec.secret_ref.refresh_token_key));
                if current.is_some() && current != self.refresh_token {
                    self.count("rotated_elsewhere");
                    return RefreshResult::Failed(Verdict::Transient {
                        message:
                            "the refresh token changed in the Secret meanwhile; checking again"
                                .into(),
                        retry_after: None,
                    });
                }
                self.count("rejected");
                RefreshResult::Failed(Verdict::Invalid {
                    reason: Reason::RefreshFailed,
                    message: format!(
                        "refreshing the token failed: {message}; a person must log in again"
                    ),
                })
            }
            Renewal::Transient {
                message,
                retry_after,
            } => {
                self.count("unavailable");
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
}
