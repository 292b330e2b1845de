//! Which endpoints a tenant-written `ChannelProvider` may make the operator call.
//!
//! The operator sends tokens and client secrets to provider endpoints from inside the cluster,
//! so a namespaced provider pointing at `169.254.169.254` or an internal service would be a
//! server-side request forgery. `ClusterChannelProvider`s are written by administrators and
//! are trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// The flag that relaxes the policy, named in every rejection so users know the way out.
pub const ALLOW_FLAG: &str = "--allow-namespaced-endpoint-hosts";

/// Endpoint policy for namespaced providers: https only, public addresses only, except for the
/// hosts an administrator allowed.
#[derive(Clone, Debug, Default)]
pub struct EndpointPolicy {
    allowed_hosts: Arc<Vec<String>>,
}

impl EndpointPolicy {
    pub fn new(allowed_hosts: Vec<String>) -> Self {
        Self {
            allowed_hosts: Arc::new(
                allowed_hosts
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }

    /// Whether `host` was allowed explicitly (then any scheme and address is fine).
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allowed_hosts.contains(&host)
    }

    /// Checks a URL a namespaced provider wants called; the error says why and names the flag.
    pub fn check_url(&self, raw: &str) -> Result<(), String> {
        let url =
            Url::parse(raw).map_err(|e| format!("endpoint {raw:?} is not a valid URL: {e}"))?;
        let host = url
            .host()
            .ok_or_else(|| format!("endpoint {raw:?} has no host"))?;
        let host_str = match &host {
            Host::Domain(d) => d.to_string(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        if self.host_allowed(&host_str) {
            return Ok(());
        }
        let denied = |why: &str| {
            Err(format!(
                "endpoint {host_str} of a namespaced ChannelProvider is refused: {why}; use a ClusterChannelProvider, or allow the host with the operator flag {ALLOW_FLAG}"
            ))
        };
        if url.scheme() != "https" {
            return denied("only https is allowed");
        }
        match host {
            Host::Ipv4(ip) if !ip_is_public(IpAddr::V4(ip)) => denied("the address is not public"),
            Host::Ipv6(ip) if !ip_is_public(IpAddr::V6(ip)) => denied("the address is not public"),
            Host::Domain(d) if is_internal_name(d) => {
                denied("the name is internal to the cluster or cloud")
            }
            _ => Ok(()),
        }
    }

    /// Drops resolved addresses that are not public, so a public name that resolves to an
    /// internal address (DNS rebinding) is refused at connect time too.
    pub fn filter_resolved(&self, host: &str, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
        if self.host_allowed(host) {
            return addrs;
        }
        addrs.into_iter().filter(|a| ip_is_public(a.ip())).collect()
    }
}

fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "metadata"
        || name == "metadata.google.internal"
        || name.ends_with(".internal")
        || name.ends_with(".local")
        || name.ends_with(".svc")
        || name.contains(".svc.")
        || !name.contains('.')
}

/// True for globally routable unicast addresses only.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_is_public(v4),
            None => v6_is_public(v6),
        },
    }
}

fn v4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0)
        || a >= 240)
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link local
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_internal_targets() {
        let p = EndpointPolicy::default();
        for bad in [
            "http://example.com/token",
            "https://127.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.1.2.3/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://metadata.google.internal/",
            "https://localhost:8443/",
            "https://kubernetes.default.svc/",
            "https://[::ffff:127.0.0.1]/",
        ] {
            let err = p.check_url(bad).unwrap_err();
            assert!(err.contains(ALLOW_FLAG), "{bad}: {err}");
        }
        assert!(p.check_url("https://graph.facebook.com/v21.0").is_ok());
        assert!(p.check_url("https://93.184.216.34/").is_ok());
    }

    #[test]
    fn allowed_hosts_bypass() {
        let p = EndpointPolicy::new(vec!["127.0.0.1".into()]);
        assert!(p.check_url("http://127.0.0.1:8080/introspect").is_ok());
        assert!(p.check_url("http://10.0.0.1/").is_err());
    }
}
