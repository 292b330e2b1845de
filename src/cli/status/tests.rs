use super::actions::publishes_event;
use super::cluster::select_events;
use super::render::*;
use super::*;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use relink::api::{CHECK_REQUESTED_ANNOTATION, ChannelConnectionStatus};

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
    let ready = Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{reason} message"),
        last_transition_time: Time(now),
        observed_generation: None,
    };
    let mut c = crate::cli::fixtures::page_connection("chan", vec![ready], reauth);
    if let Some(s) = c.status.as_mut() {
        s.last_check_time = Some(Time(now));
    }
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

fn cond(type_: &str, status: &str, reason: &str, at: jiff::Timestamp) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("{type_} says\n{reason}"),
        last_transition_time: Time(at),
        observed_generation: Some(1),
    }
}

fn event(
    name: &str,
    kind: &str,
    type_: &str,
    reason: &str,
    at: jiff::Timestamp,
    count: Option<i32>,
) -> Event {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::EventSeries;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    Event {
        regarding: Some(ObjectReference {
            kind: Some(kind.into()),
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        }),
        type_: Some(type_.into()),
        reason: Some(reason.into()),
        note: Some(format!("{reason} note")),
        event_time: Some(MicroTime(at)),
        series: count.map(|count| EventSeries {
            count,
            last_observed_time: MicroTime(at),
        }),
        ..Default::default()
    }
}

/// A revoked connection as the operator leaves it, checked 200 s before `now`.
fn revoked(now: jiff::Timestamp) -> ChannelConnection {
    let mut c = connection(
        "Revoked",
        "False",
        Some("https://example.test/auth?state=s1"),
    );
    c.metadata.uid = Some("uid-1".into());
    c.metadata.generation = Some(1);
    c.spec.required_scopes = vec!["read".into(), "write".into()];
    let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
    let s = c.status.as_mut().unwrap();
    s.observed_generation = Some(1);
    s.conditions = vec![
        cond("Reconciling", "False", "Revoked", t(200)),
        cond("Stalled", "True", "Revoked", t(200)),
        cond("Ready", "False", "Revoked", t(200)),
        cond("ScopesGranted", "Unknown", "Revoked", t(200)),
        cond("TokenValid", "False", "Revoked", t(200)),
    ];
    s.account = Some(relink::api::ReportedAccount {
        id: Some("page-1".into()),
        name: Some("page-1 name".into()),
    });
    s.granted_scopes = vec!["read".into()];
    s.missing_scopes = vec!["write".into()];
    s.expires_at = Some(Time(now + jiff::SignedDuration::from_hours(50)));
    s.last_check_time = Some(Time(t(200)));
    s.next_check_time = Some(Time(now + jiff::SignedDuration::from_secs(700)));
    s.last_valid_time = Some(Time(t(3600)));
    s.consecutive_failures = 0;
    s.last_handled_check_request = Some("42".into());
    c.metadata.annotations =
        Some([(CHECK_REQUESTED_ANNOTATION.to_owned(), "42".to_owned())].into());
    c
}

#[test]
fn detail_shows_conditions_scopes_events_link_and_what_to_do() {
    let now: jiff::Timestamp = "2026-11-22T02:00:00Z".parse().unwrap();
    let c = revoked(now);
    let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
    let events = select_events(
        vec![
            event(
                "chan",
                "ChannelConnection",
                "Warning",
                "Revoked",
                t(200),
                Some(3),
            ),
            event(
                "chan",
                "ChannelConnection",
                "Normal",
                "Valid",
                t(3600),
                None,
            ),
            event(
                "other",
                "ChannelConnection",
                "Warning",
                "Expired",
                t(10),
                None,
            ),
            event("chan", "ChannelGroup", "Warning", "Down", t(10), None),
        ],
        &c,
        5,
    );
    assert_eq!(events.len(), 2, "only Events about this connection");
    let text = render_detail(&c, &Ok(events), now);
    for want in [
        "Name:                 chan\n",
        "Namespace:            ns\n",
        "Provider:             ChannelProvider/app\n",
        "Status:               ✖ Revoked (Ready False since 2026-11-22T01:56:40Z (3m20s ago))\n",
        "Account:              page-1 name (id page-1)\n",
        "Expected account:     Page One (id page-1)\n",
        "Scopes required:      read, write\n",
        "Scopes granted:       read\n",
        "Scopes missing:       write\n",
        "Expires:              2026-11-24T04:00:00Z (in 2d2h)\n",
        "Data access expires:  -\n",
        "Last check:           2026-11-22T01:56:40Z (3m20s ago)\n",
        "Next check:           2026-11-22T02:11:40Z (in 11m)\n",
        "Last valid:           2026-11-22T01:00:00Z (60m ago)\n",
        "Last refresh:         -\n",
        "Consecutive failures: 0\n",
        "Check request:        42 (handled)\n",
        "  TYPE           STATUS   REASON   LAST TRANSITION  MESSAGE\n",
        "  Ready          False    Revoked  3m20s ago        Ready says Revoked\n",
        "Events (last 2, newest last):\n",
        "  TYPE     REASON   AGE             MESSAGE\n",
        "  Normal   Valid    60m ago         Valid note\n",
        "  Warning  Revoked  3m20s ago (x3)  Revoked note\n",
        "Re-authorization link:\n  https://example.test/auth?state=s1\n",
        "what to do: open the link above in a browser and log in as someone who manages Page One",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Conditions in the documented order, whatever order the status holds them in.
    let order: Vec<usize> = [
        "  Ready ",
        "  TokenValid ",
        "  ScopesGranted ",
        "  Stalled ",
        "  Reconciling ",
    ]
    .iter()
    .map(|t| text.find(t).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(!summarize(&c, now).ready);
}

#[test]
fn detail_of_a_healthy_connection() {
    let now = jiff::Timestamp::now();
    let mut c = connection("Valid", "True", None);
    c.metadata.annotations = Some([(CHECK_REQUESTED_ANNOTATION.to_owned(), "7".to_owned())].into());
    let text = render_detail(&c, &Ok(vec![]), now);
    assert!(
        text.contains("Status:               ✔ Valid (Ready True since"),
        "{text}"
    );
    assert!(text.contains("Events: none\n"), "{text}");
    assert!(
        text.contains("Check request:        7 (pending)\n"),
        "{text}"
    );
    assert!(
        text.contains("Account:              - (not reported yet)\n"),
        "{text}"
    );
    assert!(!text.contains("Re-authorization link"), "{text}");
    assert!(
        text.ends_with("\nnothing to do: the channel works\n"),
        "{text}"
    );
    assert!(summarize(&c, now).ready);

    // Provider trouble keeps the verdict and says so; an Event list error is shown, not fatal.
    let s = c.status.as_mut().unwrap();
    s.conditions
        .push(cond("Reconciling", "True", "ProviderUnavailable", now));
    s.consecutive_failures = 3;
    let text = render_detail(
        &c,
        &Err("cannot list Events in namespace ns: forbidden".into()),
        now,
    );
    assert!(text.contains("Consecutive failures: 3\n"), "{text}");
    assert!(
        text.contains("Events: cannot list Events in namespace ns: forbidden\n"),
        "{text}"
    );
    assert!(
        text.contains("nothing to do: the provider is unreachable; relink retries"),
        "{text}"
    );

    // Never checked: no conditions, and a hint.
    let pending = ChannelConnection { status: None, ..c };
    let text = render_detail(&pending, &Ok(vec![]), now);
    assert!(
        text.contains("Status:               … not checked yet\n"),
        "{text}"
    );
    assert!(
        text.contains("none yet: the connection has not been checked"),
        "{text}"
    );
    assert!(
        text.contains("nothing to do yet: the first check has not happened"),
        "{text}"
    );

    // A missing Secret has no link, but a hint.
    let missing = connection("SecretNotFound", "False", None);
    let text = render_detail(&missing, &Ok(vec![]), now);
    assert!(
        text.contains("what to do: create the Secret named in spec.secretRef"),
        "{text}"
    );
}

#[test]
fn newest_events_are_kept_oldest_first() {
    let now = jiff::Timestamp::now();
    let c = revoked(now);
    let t = |s: i64| now - jiff::SignedDuration::from_secs(s);
    let mut stale = event("chan", "ChannelConnection", "Warning", "Gone", t(1), None);
    stale.regarding.as_mut().unwrap().uid = Some("uid-of-a-deleted-object".into());
    let items = (0..8)
        .map(|i| {
            event(
                "chan",
                "ChannelConnection",
                "Normal",
                &format!("R{i}"),
                t(100 - i),
                None,
            )
        })
        .chain([stale])
        .collect();
    let reasons: Vec<String> = select_events(items, &c, 5)
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, ["R3", "R4", "R5", "R6", "R7"]);
}

#[test]
fn events_are_expected_on_ready_changes_and_new_trouble_only() {
    let now = jiff::Timestamp::now();
    let status = |conds: Vec<Condition>| ChannelConnectionStatus {
        conditions: conds,
        ..Default::default()
    };
    let valid = status(vec![cond("Ready", "True", "Valid", now)]);
    let revoked = status(vec![cond("Ready", "False", "Revoked", now)]);
    let trouble = status(vec![
        cond("Ready", "True", "Valid", now),
        cond("Reconciling", "True", "ProviderUnavailable", now),
    ]);
    let first_trouble = status(vec![cond("Ready", "Unknown", "ProviderUnavailable", now)]);
    assert!(!publishes_event(&valid, &valid));
    assert!(publishes_event(&valid, &revoked));
    assert!(!publishes_event(
        &ChannelConnectionStatus::default(),
        &valid
    ));
    assert!(publishes_event(&valid, &trouble));
    assert!(!publishes_event(&trouble, &trouble));
    assert!(!publishes_event(
        &ChannelConnectionStatus::default(),
        &first_trouble
    ));
}

#[test]
fn check_flags() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }
    let parse = |args: &[&str]| Cli::try_parse_from([&["check"], args].concat()).map(|c| c.check);
    let a = parse(&["chan"]).unwrap();
    assert!(a.wait && !a.no_wait);
    assert_eq!(a.timeout, Duration::from_secs(60));
    assert_eq!(a.name, "chan");
    let a = parse(&["chan", "-n", "ns", "--wait", "--timeout", "1m30s"]).unwrap();
    assert!(a.wait);
    assert_eq!(a.namespace.as_deref(), Some("ns"));
    assert_eq!(a.timeout, Duration::from_secs(90));
    assert!(!parse(&["chan", "--wait=false"]).unwrap().wait);
    assert!(parse(&["chan", "--no-wait"]).unwrap().no_wait);
    assert!(parse(&["chan", "--timeout", "soon"]).is_err());
    assert!(parse(&[]).is_err(), "NAME is required");
}

#[test]
fn times_read_both_ways() {
    let now: jiff::Timestamp = "2026-11-22T02:00:00.5Z".parse().unwrap();
    let t = |s: i64| Time(now + jiff::SignedDuration::from_secs(s));
    assert_eq!(when(None, now), "-");
    assert_eq!(when(Some(&t(-30)), now), "2026-11-22T01:59:30Z (30s ago)");
    assert_eq!(
        when(Some(&t(3 * 3600)), now),
        "2026-11-22T05:00:00Z (in 3h)"
    );
    assert_eq!(one_line("a\n  b\tc "), "a b c");
    assert_eq!(account_text(Some("x"), Some("x")), "x");
    assert_eq!(account_text(None, Some("1")), "id 1");
}
