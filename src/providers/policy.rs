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
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // The list is lowercase (see `new`).
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks a URL a namespaced provider wants called; the error says why and names the flag.
    pub fn check_url(&self, raw: &str) -> Result<(), String> {
        let url =
            Url::parse(raw).map_err(|e| format!("endpoint {raw:?} is not a valid URL: {e}"))?;
        let host = url
            .host()
            .ok_or_else(|| format!("endpoint {raw:?} has no host"))?;
        let host_str: std::borrow::Cow<str> = match &host {
            Host::Domain(d) => (*d).into(),
            Host::Ipv4(ip) => ip.to_string().into(),
            Host::Ipv6(ip) => ip.to_string().into(),
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

/// True for globally routable unicast addresses only. IPv6 forms that carry an IPv4 address
/// (mapped, compatible, NAT64, 6to4, Teredo) are judged by the IPv4 address they reach.
pub fn ip_is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_is_public(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4_is_public(v4),
            None => v6_is_public(v6),
        },
    }
}

/// The IPv4 address an IPv6 address leads to, for the forms that embed one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let v4 = |b: [u8; 4]| Some(Ipv4Addr::from(b));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return v4([o[12], o[13], o[14], o[15]]); // ::a.b.c.d (deprecated compatible form)
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4([o[12], o[13], o[14], o[15]]); // NAT64 well-known prefix 64:ff9b::/96
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return v4([o[12], o[13], o[14], o[15]]); // local-use NAT64 64:ff9b:1::/48 (RFC 8215)
    }
    if s[0] == 0x2002 {
        return v4([o[2], o[3], o[4], o[5]]); // 6to4 2002:a.b.c.d::/48
    }
    if s[0] == 0x2001 && s[1] == 0 {
        // Teredo 2001::/32: the client's address is the last 32 bits, inverted.
        return v4([!o[12], !o[13], !o[14], !o[15]]);
    }
    None
}

/// IANA's special-purpose IPv4 ranges (RFC 6890 and successors) that are not globally
/// reachable, beyond what `Ipv4Addr`'s own predicates cover.
fn v4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0.0/24
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast 192.88.99.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18.0.0/15
        || a >= 240) // reserved 240.0.0.0/4
}

fn v6_is_public(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
        || (s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments 2001::/23
        || s[..4] == [0x0100, 0, 0, 0] // discard-only 100::/64
        || (s[0] == 0x5f00)) // SRv6 SIDs 5f00::/16
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
    fn addresses_hidden_in_other_spellings_are_judged_by_where_they_lead() {
        for bad in [
            "64:ff9b::a9fe:a9fe",                   // NAT64 of 169.254.169.254
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b:1::a00:1",                     // local-use NAT64 of 10.0.0.1
            "2002:a9fe:a9fe::1",                    // 6to4 of 169.254.169.254
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo of 10.0.0.1
            "::a9fe:a9fe",                          // IPv4-compatible 169.254.169.254
            "::ffff:10.0.0.1",                      // IPv4-mapped
            "::1",
            "fec0::1",
            "100::1",
            "3fff::1",
        ] {
            let ip: Ipv6Addr = bad.parse().unwrap();
            assert!(!ip_is_public(IpAddr::V6(ip)), "{bad} must be refused");
        }
        for bad in [
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "192.88.99.1",
            "100.64.0.1",
            "240.0.0.1",
            "0.1.2.3",
            "255.255.255.255",
        ] {
            let ip: Ipv4Addr = bad.parse().unwrap();
            assert!(!ip_is_public(IpAddr::V4(ip)), "{bad} must be refused");
        }
        for good in ["64:ff9b::5db8:d822", "2002:5db8:d822::1", "2606:4700::1111"] {
            let ip: Ipv6Addr = good.parse().unwrap();
            assert!(ip_is_public(IpAddr::V6(ip)), "{good} is public");
        }
        assert!(ip_is_public(IpAddr::V4("93.184.216.34".parse().unwrap())));
        let p = EndpointPolicy::default();
        assert!(p.check_url("https://[64:ff9b::a9fe:a9fe]/").is_err());
        assert!(p.check_url("https://[2002:a9fe:a9fe::1]/").is_err());
    }

    #[test]
    fn allowed_hosts_bypass() {
        let p = EndpointPolicy::new(vec!["127.0.0.1".into()]);
        assert!(p.check_url("http://127.0.0.1:8080/introspect").is_ok());
        assert!(p.check_url("http://10.0.0.1/").is_err());
    }
}
