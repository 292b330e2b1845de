//! `relink check`, `relink refresh` and `relink reauth`: ask the operator for something through an
//! annotation, wait until it has acted, and show the outcome.

use std::time::Duration;

use kube::Api;
use relink::api::{
    CHECK_REQUESTED_ANNOTATION, ChannelConnection, ChannelConnectionStatus,
    REAUTHORIZE_REQUESTED_ANNOTATION, REFRESH_REQUESTED_ANNOTATION,
};

use super::cluster::{
    annotate, api_error, client_for, connections_in, event_time, events_about, get_connection,
    handled, request_check,
};
use super::render::{render_detail, summarize};
use super::{CheckArgs, ReauthArgs};

/// Asks for a re-authorization link and prints it once published.
pub(super) async fn reauth(args: &ReauthArgs) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    let (api, ns) = connections_in(&client, args.namespace.as_deref());
    let name = args.name.as_str();
    get_connection(&api, name, &ns).await?;
    let value = jiff::Timestamp::now().as_nanosecond().to_string();
    annotate(&api, &ns, name, REAUTHORIZE_REQUESTED_ANNOTATION, &value).await?;
    println!("Re-authorization requested: {ns}/{name} {REAUTHORIZE_REQUESTED_ANNOTATION}={value}");
    let deadline = tokio::time::Instant::now() + args.timeout;
    loop {
        let conn = get_connection(&api, name, &ns).await?;
        let status = conn.status.clone().unwrap_or_default();
        let ours = status
            .pending_reauthorization
            .as_ref()
            .is_some_and(|p| p.value == value);
        if let (true, Some(link)) = (ours, &status.reauth_url) {
            println!(
                "Open this link in a browser and log in as the channel's account; the link works once:\n  {link}"
            );
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the operator did not publish a link within {}s: is relink running and watching namespace {ns}, and does the provider have an authorization URL? See `relink status {name} -n {ns}`",
                args.timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sets the check-request annotation and, with `--wait`, waits for the operator to echo it.
pub(super) async fn check(args: &CheckArgs, refresh: bool) -> Result<bool, String> {
    let client = client_for(args.kubeconfig.as_deref()).await?;
    let (api, ns) = connections_in(&client, args.namespace.as_deref());
    let name = args.name.as_str();
    let before = get_connection(&api, name, &ns).await?;
    let requested = jiff::Timestamp::now();
    if refresh {
        // Asked before the check it rides on, so that check refreshes first.
        let value = requested.as_nanosecond().to_string();
        annotate(&api, &ns, name, REFRESH_REQUESTED_ANNOTATION, &value).await?;
        println!("Refresh requested: {ns}/{name} {REFRESH_REQUESTED_ANNOTATION}");
    }
    let value = request_check(&api, &ns, name, requested).await?;
    println!("Check requested: {ns}/{name} {CHECK_REQUESTED_ANNOTATION}={value}");
    if !args.wait || args.no_wait {
        println!(
            "Not waiting. `relink status {name} -n {ns}` shows the result once status.lastHandledCheckRequest is {value}."
        );
        return Ok(true);
    }
    if before.spec.suspend {
        println!(
            "The connection is suspended (spec.suspend: true): relink does not check it until it is resumed."
        );
        let events = events_about(&client, &before).await;
        let now = jiff::Timestamp::now();
        print!("\n{}", render_detail(&before, &events, now));
        return Ok(false);
    }
    let after = wait_until_handled(&api, &ns, name, &value, args.timeout).await?;
    println!("Handled by the operator: status.lastHandledCheckRequest={value}\n");
    let old = before.status.clone().unwrap_or_default();
    let new = after.status.clone().unwrap_or_default();
    let mut events = events_about(&client, &after).await;
    if publishes_event(&old, &new) {
        // The operator publishes the Event just after writing the status: give it a moment.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < until
            && !events
                .as_ref()
                .is_ok_and(|list| list.iter().any(|e| event_time(e) >= Some(requested)))
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            events = events_about(&client, &after).await;
        }
    }
    let now = jiff::Timestamp::now();
    print!("{}", render_detail(&after, &events, now));
    Ok(summarize(&after, now).ready)
}

/// The connection once the operator has echoed the check request `value`, or an error after
/// `timeout`.
async fn wait_until_handled(
    api: &Api<ChannelConnection>,
    ns: &str,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<ChannelConnection, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let conn =
            api.get_opt(name).await.map_err(api_error)?.ok_or_else(|| {
                format!("channelconnection {ns}/{name} was deleted while waiting")
            })?;
        if handled(&conn, value) {
            return Ok(conn);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the operator did not handle the check request within {}s (status.lastHandledCheckRequest is still {}): \
                 is relink running and watching namespace {ns}? See the operator's logs",
                timeout.as_secs(),
                conn.status
                    .as_ref()
                    .and_then(|s| s.last_handled_check_request.as_deref())
                    .unwrap_or("unset"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether going from `old` to `new` makes the operator publish an Event (as it does: one per
/// change of `Ready`, and one when provider trouble starts).
pub(super) fn publishes_event(
    old: &ChannelConnectionStatus,
    new: &ChannelConnectionStatus,
) -> bool {
    relink::controller::status::transition(old, new).is_some()
}
