//! What the engine has learnt about the guest from its frames: its MAC address and the
//! addresses it uses. Services answer with it, flows route to it, the NAT maps to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::IpFamily;
use crate::flow::unicast;
use crate::wire::MacAddr;

/// What we have learnt about the guest from its frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestState {
    /// The guest's MAC address, from the source of its frames.
    pub mac: Option<MacAddr>,
    /// The last IPv4 source address it used.
    pub addr4: Option<Ipv4Addr>,
    /// The last global IPv6 source address it used.
    pub addr6: Option<Ipv6Addr>,
    /// The last link-local IPv6 source address it used.
    pub addr6_ll: Option<Ipv6Addr>,
}

impl GuestState {
    /// Learns the guest's MAC address from a frame's source, unless it is a group address.
    #[inline]
    pub fn learn_mac(&mut self, src: MacAddr) {
        if src.is_unicast() {
            self.mac = Some(src);
        }
    }

    /// Learns the address the guest uses from an IP packet's source. Unspecified sources
    /// (DHCP DISCOVER, duplicate address detection) and group addresses teach nothing; over
    /// IPv6, link-local and global addresses are kept apart and loopback teaches nothing
    /// either (over IPv4 it does, as it always has).
    #[inline]
    pub fn learn_source(&mut self, src: IpAddr) {
        match src {
            IpAddr::V4(a) if unicast(src) => self.addr4 = Some(a),
            IpAddr::V6(a) if IpFamily::is_link_local(&a) => self.addr6_ll = Some(a),
            IpAddr::V6(a) if unicast(src) && !a.is_loopback() => self.addr6 = Some(a),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_unicast_sources_by_family_and_scope() {
        let mut g = GuestState::default();
        for src in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "::1",
        ] {
            g.learn_source(src.parse().unwrap());
        }
        assert_eq!(g, GuestState::default());
        for src in ["192.0.2.2", "fe80::9", "2001:db8::9"] {
            g.learn_source(src.parse().unwrap());
        }
        assert_eq!(g.addr4, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(g.addr6_ll, Some("fe80::9".parse().unwrap()));
        assert_eq!(g.addr6, Some("2001:db8::9".parse().unwrap()));
    }

    #[test]
    fn learns_only_unicast_macs() {
        let mut g = GuestState::default();
        g.learn_mac(MacAddr::BROADCAST);
        assert_eq!(g.mac, None);
        g.learn_mac(MacAddr::FALLBACK);
        assert_eq!(g.mac, Some(MacAddr::FALLBACK));
    }
}
