//! Objects the CLI's unit tests render (the dashboard, `relink status`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use relink::api::{AccountRef, ChannelConnection, ChannelConnectionSpec, ChannelConnectionStatus};

/// Connection `ns/{name}` of provider `app` for account `page-1` ("Page One"), with these
/// conditions and re-authorization link in its status.
pub(crate) fn page_connection(
    name: &str,
    conditions: Vec<Condition>,
    reauth_url: Option<&str>,
) -> ChannelConnection {
    let mut c = ChannelConnection::new(
        name,
        ChannelConnectionSpec {
            account: Some(AccountRef {
                id: "page-1".into(),
                display_name: Some("Page One".into()),
                kind: None,
            }),
            ..ChannelConnectionSpec::new("app", "tok")
        },
    );
    c.metadata.namespace = Some("ns".into());
    c.status = Some(ChannelConnectionStatus {
        conditions,
        reauth_url: reauth_url.map(str::to_owned),
        ..Default::default()
    });
    c
}
