//! Prometheus metrics (prefix `relink_`), registered once and shared through the controller
//! context. Per-connection series are removed when the connection is deleted.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub namespace: String,
    pub name: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub provider: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub provider: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub namespace: String,
    pub name: String,
}

/// Outcome of an OAuth callback: `reauthorized`, or why it was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Every metric relink exports.
pub struct Metrics {
    pub registry: Registry,
    /// 1 when the connection is Ready, else 0.
    pub connection_ready: Family<ConnectionLabels, Gauge>,
    /// Unix time the access token expires, for tokens relink cannot renew itself (absent when
    /// it does not expire or relink refreshes it), so an alert on it always needs a person.
    pub token_expiration: Family<ConnectionLabels, Gauge<f64, AtomicU64>>,
    /// Checks by verdict (`Valid`, `Revoked`, `ProviderUnavailable`, ...).
    pub checks: Family<ResultLabels, Counter>,
    pub provider_request_duration: HistogramFamily<EndpointLabels>,
    pub refreshes: Family<ResultLabels, Counter>,
    /// Unix time since which refreshing the connection's token has been failing transiently
    /// (absent while refreshes succeed).
    pub refresh_failing_since: Family<ConnectionLabels, Gauge>,
    pub notifications: Family<ChannelLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Status writes; with `checks` it gives writes per check.
    pub status_writes: Counter,
    pub group_members: Family<GroupLabels, Gauge>,
    pub group_ready_members: Family<GroupLabels, Gauge>,
    /// OAuth callbacks by result.
    pub callbacks: Family<CallbackLabels, Counter>,
}

impl Default for Metrics {
    // Long by nature, not by logic: one registration (name, help, family) per metric, in the
    // order of the struct, and nothing else.
    fn default() -> Self {
        let mut registry = Registry::with_prefix("relink");
        let m = Self {
            connection_ready: Family::default(),
            token_expiration: Family::default(),
            checks: Family::default(),
            provider_request_duration: Family::new_with_constructor(latency_histogram),
            refreshes: Family::default(),
            refresh_failing_since: Family::default(),
            notifications: Family::default(),
            reconcile_duration: latency_histogram(),
            reconcile_errors: Family::default(),
            status_writes: Counter::default(),
            group_members: Family::default(),
            group_ready_members: Family::default(),
            callbacks: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connection_ready",
            "1 when the ChannelConnection is Ready, else 0",
            m.connection_ready.clone(),
        );
        registry.register(
            "token_expiration_timestamp_seconds",
            "Unix time at which the connection's access token expires, when relink cannot refresh it",
            m.token_expiration.clone(),
        );
        registry.register(
            "checks",
            "Token checks by provider object and verdict",
            m.checks.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Duration of calls to providers",
            m.provider_request_duration.clone(),
        );
        registry.register(
            "refresh",
            "Token refreshes by provider object and result",
            m.refreshes.clone(),
        );
        registry.register(
            "refresh_failing_since_timestamp_seconds",
            "Unix time since which refreshing the connection's token has been failing transiently",
            m.refresh_failing_since.clone(),
        );
        registry.register(
            "notifications",
            "Notifications by channel (email, webhook) and result",
            m.notifications.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles, checks included",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error kind",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "status_writes",
            "ChannelConnection status writes",
            m.status_writes.clone(),
        );
        registry.register(
            "callbacks",
            "OAuth callbacks by result (reauthorized, or why one was refused)",
            m.callbacks.clone(),
        );
        registry.register(
            "group_members",
            "Members of the ChannelGroup",
            m.group_members.clone(),
        );
        registry.register(
            "group_ready_members",
            "Members of the ChannelGroup that are Ready",
            m.group_ready_members.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Text exposition format for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The exposition with one series in every family, so each registered metric shows its
    /// name, type, help and label names (an empty family is not encoded at all). Read by the
    /// API reference and by the test that dashboards and alerts query only exported names.
    pub fn describe() -> String {
        let m = Metrics::default();
        // No `..`: a new metric does not compile here until it gets a series too.
        let Metrics {
            registry: _,
            connection_ready,
            token_expiration,
            checks,
            provider_request_duration,
            refreshes,
            refresh_failing_since,
            notifications,
            reconcile_duration,
            reconcile_errors,
            status_writes,
            group_members,
            group_ready_members,
            callbacks,
        } = &m;
        let c = ConnectionLabels {
            namespace: String::new(),
            name: String::new(),
            provider: String::new(),
        };
        let r = ResultLabels {
            provider: String::new(),
            result: String::new(),
        };
        let g = GroupLabels {
            namespace: String::new(),
            name: String::new(),
        };
        connection_ready.get_or_create(&c).set(0);
        token_expiration.get_or_create(&c).set(0.0);
        refresh_failing_since.get_or_create(&c).set(0);
        checks.get_or_create(&r).inc();
        refreshes.get_or_create(&r).inc();
        provider_request_duration
            .get_or_create(&EndpointLabels {
                provider: String::new(),
                endpoint: String::new(),
            })
            .observe(0.0);
        notifications
            .get_or_create(&ChannelLabels {
                channel: String::new(),
                result: String::new(),
            })
            .inc();
        reconcile_duration.observe(0.0);
        reconcile_errors
            .get_or_create(&ErrorLabels {
                error: String::new(),
            })
            .inc();
        status_writes.inc();
        group_members.get_or_create(&g).set(0);
        group_ready_members.get_or_create(&g).set(0);
        callbacks
            .get_or_create(&CallbackLabels {
                result: String::new(),
            })
            .inc();
        m.encode()
    }

    /// Drops the series of a deleted connection.
    pub fn forget_group(&self, labels: &GroupLabels) {
        self.group_members.remove(labels);
        self.group_ready_members.remove(labels);
    }

    pub fn forget_connection(&self, labels: &ConnectionLabels) {
        self.connection_ready.remove(labels);
        self.token_expiration.remove(labels);
        self.refresh_failing_since.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_as_designed_and_removed_on_delete() {
        let m = Metrics::default();
        let l = ConnectionLabels {
            namespace: "ns".into(),
            name: "c".into(),
            provider: "app".into(),
        };
        m.connection_ready.get_or_create(&l).set(1);
        m.token_expiration.get_or_create(&l).set(1.7e9);
        m.checks
            .get_or_create(&ResultLabels {
                provider: "app".into(),
                result: "Valid".into(),
            })
            .inc();
        let text = m.encode();
        assert!(
            text.contains(
                "relink_connection_ready{namespace=\"ns\",name=\"c\",provider=\"app\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("relink_token_expiration_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            text.contains("relink_checks_total{provider=\"app\",result=\"Valid\"} 1"),
            "{text}"
        );
        let g = GroupLabels {
            namespace: "ns".into(),
            name: "g".into(),
        };
        m.group_members.get_or_create(&g).set(3);
        m.group_ready_members.get_or_create(&g).set(2);
        let text = m.encode();
        assert!(
            text.contains("relink_group_members{namespace=\"ns\",name=\"g\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("relink_group_ready_members{namespace=\"ns\",name=\"g\"} 2"),
            "{text}"
        );
        m.forget_group(&g);
        m.forget_connection(&l);
        assert!(!m.encode().contains("name=\"c\""));
    }
}
