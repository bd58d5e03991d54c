//! The SSRF guard: a webhook may only reach public addresses, unless an operator names a
//! private target in `WEBHOOK_ALLOWED_HOSTS` (or allows only what that names). Every address a host resolves to is checked
//! (one private address refuses the host, so DNS cannot slip one in beside public ones),
//! IPv4-mapped and other IPv4-embedding IPv6 forms are judged by the IPv4 inside them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Where webhooks may go: public addresses (unless `only_listed`), and the host names and
/// networks listed although private.
#[derive(Debug, Clone)]
pub struct Allowlist {
    hosts: Vec<String>,
    networks: Vec<IpNet>,
    public: bool,
}

impl Default for Allowlist {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            networks: Vec::new(),
            public: true,
        }
    }
}

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {address}, {}", refusal_reason(*public_allowed))]
pub struct Refusal {
    pub host: String,
    pub address: IpAddr,
    /// Whether public addresses were allowed (the address was not public), or only listed
    /// targets (it was not listed).
    pub public_allowed: bool,
}

fn refusal_reason(public_allowed: bool) -> &'static str {
    if public_allowed {
        "which is not a public address (loopback, private, link-local, shared or reserved); \
         allow it with WEBHOOK_ALLOWED_HOSTS"
    } else {
        "which is not in WEBHOOK_ALLOWED_HOSTS, the only targets allowed (WEBHOOK_PUBLIC_TARGETS=false)"
    }
}

impl Allowlist {
    /// `localhost,10.0.0.0/8,192.168.1.20`; `None` when an entry is neither a host name
    /// nor an address or network.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut list = Self::default();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(network) = entry.parse::<IpNet>() {
                list.networks.push(network);
            } else if let Ok(address) = entry.parse::<IpAddr>() {
                list.networks.push(IpNet::from(address));
            } else if entry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return None;
            }
        }
        Some(list)
    }

    /// Refuses public addresses too: only what is listed may be a target (an egress policy,
    /// or a test rig that must not reach out).
    pub fn only_listed(mut self) -> Self {
        self.public = false;
        self
    }

    fn permits(&self, host: &str, address: IpAddr) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self.networks.iter().any(|n| n.contains(&address))
    }
}

/// Whether `host`, resolved to `address`, may be sent to.
pub fn check_address(host: &str, address: IpAddr, allowlist: &Allowlist) -> Result<(), Refusal> {
    if (allowlist.public && is_public(address)) || allowlist.permits(host, address) {
        Ok(())
    } else {
        Err(Refusal {
            host: host.to_owned(),
            address,
            public_allowed: allowlist.public,
        })
    }
}

/// Whether an address is on the public internet.
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0                               // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))   // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (first & 0xffc0) == 0xfec0             // site-local (deprecated)
        || (first == 0x2001 && ip.segments()[1] == 0xdb8) // documentation
        || first == 0x2001 && ip.segments()[1] == 0 // Teredo: tunnels to any IPv4
        || first == 0x0100) // discard-only
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:ab:cd::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let last_four = || {
        let [.., a, b, c, d] = ip.octets();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        Some(last_four())
    } else if s[0] == 0x2002 {
        let [_, _, a, b, c, d, ..] = ip.octets();
        Some(Ipv4Addr::new(a, b, c, d))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(address: &str) -> bool {
        is_public(address.parse().expect("an address"))
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
        ] {
            assert!(!public(address), "{address} should be refused");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_as_ipv4() {
        for address in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            assert!(!public(address), "{address} should be refused");
        }
        assert!(public("::ffff:93.184.216.34"));
        assert!(public("2002:5db8:d822::1"));
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.216.34",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
        ] {
            assert!(public(address), "{address} should pass");
        }
    }

    #[test]
    fn the_allowlist_admits_named_hosts_and_networks_only() {
        let list = Allowlist::parse("localhost, 10.0.0.0/8,192.168.1.20").expect("valid");
        let loopback: IpAddr = "127.0.0.1".parse().expect("an address");
        assert!(check_address("LOCALHOST", loopback, &list).is_ok());
        assert!(check_address("127.0.0.1", loopback, &list).is_err());
        assert!(check_address("db", "10.9.9.9".parse().expect("an address"), &list).is_ok());
        assert!(check_address("x", "192.168.1.21".parse().expect("an address"), &list).is_err());
        assert!(Allowlist::parse("http://localhost").is_none());
    }

    #[test]
    fn listed_only_refuses_public_addresses_too() {
        let list = Allowlist::parse("hooks.partner.example")
            .expect("valid")
            .only_listed();
        let public: IpAddr = "93.184.216.34".parse().expect("an address");
        assert!(check_address("hooks.partner.example", public, &list).is_ok());
        let refused = check_address("example.com", public, &list).expect_err("refused");
        assert!(refused.to_string().contains("WEBHOOK_PUBLIC_TARGETS=false"));
        assert!(check_address("example.com", public, &Allowlist::default()).is_ok());
    }
}
