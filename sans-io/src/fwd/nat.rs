//! Address translation between what the guest sees and what the host does, as the man page's
//! NOTES describe: pure functions over the configuration and what we know of the guest.
//!
//! From the guest: its connections to the host-loopback mapping address (the gateway, by
//! default) go to the host's loopback; to `--map-guest-addr`, to the host's own address; DNS to
//! `--dns-forward` goes to `--dns-host`; everything else goes where the guest said.
//!
//! Towards the guest: a host peer on a loopback address appears from the host-loopback mapping
//! address; one on the host's own address (which is also the guest's) from `--map-guest-addr`;
//! either, when no mapping exists, from our own address on the link. The destination is the
//! address the guest was last seen using (link-local for IPv6 when the host side is
//! link-local), else its configured one; or, for a forwarding rule with a target address,
//! that address: a peer the namespace routes to (a container on a bridge there), reached
//! through the tap with that destination, or through the loopback bypass by a connection to
//! it made inside the namespace. The peer appears to it as it would to the guest. A target
//! of the other family than the peer's can't be reached (we don't translate between
//! families): such a connection or datagram is dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{Config, IpConfig, IpFamily, Mode};
use crate::guest::GuestState;

/// DNS's well-known port, the one `--dns-forward` redirects.
pub const DNS_PORT: u16 = 53;

/// Where a guest's packet or connection to `dst` really goes on the host, or `None` when it
/// must not leave (a family we don't run).
pub fn from_guest(config: &Config, dst: SocketAddr) -> Option<SocketAddr> {
    match dst.ip() {
        IpAddr::V4(a) => {
            let c = config.ip4.as_ref()?;
            Some(SocketAddr::new(
                IpAddr::V4(translate_out(c, a, dst.port(), Ipv4Addr::LOCALHOST)),
                dst.port(),
            ))
        }
        IpAddr::V6(a) => {
            let c = config.ip6.as_ref()?;
            Some(SocketAddr::new(
                IpAddr::V6(translate_out(c, a, dst.port(), Ipv6Addr::LOCALHOST)),
                dst.port(),
            ))
        }
    }
}

fn translate_out<A: IpFamily>(c: &IpConfig<A>, dst: A, port: u16, loopback: A) -> A {
    if port == DNS_PORT && c.dns_match == Some(dst) {
        if let Some(host) = c.dns_host {
            return host;
        }
    }
    if c.map_host_loopback == Some(dst) {
        return loopback;
    }
    if c.map_guest_addr == Some(dst) {
        // The host's own address: the one we gave the guest is the host's.
        return c.addr;
    }
    dst
}

/// How a host peer at `src`, reaching us at local address `local`, appears to the guest, and
/// the guest address it reaches: `(source seen by the guest, guest destination)`. With a
/// forwarding rule's `target`, the destination is that address (of `src`'s family, else
/// `None`).
pub fn to_guest(
    config: &Config,
    guest: &GuestState,
    src: SocketAddr,
    local: IpAddr,
    target: Option<IpAddr>,
) -> Option<(SocketAddr, IpAddr)> {
    if let Some(t) = target {
        let (t, s) = (t.to_canonical(), src.ip().to_canonical());
        if t.is_ipv4() != s.is_ipv4() {
            return None;
        }
        let (seen, _) = to_guest(config, guest, src, local, None)?;
        return Some((seen, t));
    }
    match src.ip() {
        IpAddr::V4(a) => {
            let c = config.ip4.as_ref()?;
            let seen = translate_in(c, a);
            let dst = guest.addr4.unwrap_or(c.addr);
            Some((
                SocketAddr::new(IpAddr::V4(seen), src.port()),
                IpAddr::V4(dst),
            ))
        }
        IpAddr::V6(a) => {
            let c = config.ip6.as_ref()?;
            let seen = translate_in(c, a);
            let link_local = IpFamily::is_link_local(&seen)
                || matches!(local, IpAddr::V6(l) if IpFamily::is_link_local(&l));
            let dst = match (link_local, guest.addr6_ll, guest.addr6) {
                (true, Some(ll), _) => ll,
                (_, _, Some(global)) => global,
                _ => c.addr,
            };
            Some((
                SocketAddr::new(IpAddr::V6(seen), src.port()),
                IpAddr::V6(dst),
            ))
        }
    }
}

/// Where a forwarded connection or datagram from host peer `src` to `(target, port)` (a
/// forwarding rule's target address, if it has one, and port) goes when it takes pasta's
/// loopback bypass (see the man page's "Handling of local traffic"),
/// or `None` when it takes the guest path: the bypass is pasta's only, it can be turned off
/// (`--no-splice`), and it serves local traffic alone, since a socket in the namespace can't
/// be bound to a foreign address. The target is the namespace's own address (the one last
/// seen from it, else the configured one), so that services listening on the namespace's
/// loopback only are not exposed to the host; `--host-lo-to-ns-lo` picks the loopback
/// instead. A rule's target address is connected to inside the namespace, which routes it
/// (same family as `src` only). Either way the kernel picks the source, which is the
/// namespace's own address or its loopback.
pub fn local_bypass(
    config: &Config,
    guest: &GuestState,
    src: SocketAddr,
    (target, port): (Option<IpAddr>, u16),
) -> Option<SocketAddr> {
    if config.mode != Mode::Pasta || !config.splice || !src.ip().to_canonical().is_loopback() {
        return None;
    }
    if let Some(t) = target.map(|t| t.to_canonical()) {
        return (t.is_ipv4() == src.ip().to_canonical().is_ipv4())
            .then_some(SocketAddr::new(t, port));
    }
    let ip = match src.ip().to_canonical() {
        IpAddr::V4(_) if config.host_lo_to_ns_lo => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(guest.addr4.unwrap_or(config.ip4.as_ref()?.addr)),
        IpAddr::V6(_) if config.host_lo_to_ns_lo => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(guest.addr6.unwrap_or(config.ip6.as_ref()?.addr)),
    };
    // Without an address of its own, the namespace has nothing to reach but the tap.
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

fn translate_in<A: IpFamily>(c: &IpConfig<A>, src: A) -> A {
    let host_own = src == c.addr;
    if src.is_loopback() || src == A::UNSPECIFIED {
        return c.map_host_loopback.unwrap_or(c.our_addr);
    }
    if host_own {
        return c.map_guest_addr.unwrap_or(c.our_addr);
    }
    if c.dns_host == Some(src) {
        if let Some(m) = c.dns_match {
            return m;
        }
    }
    src
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestAddr;

    fn ip4() -> IpConfig<Ipv4Addr> {
        let mut c = IpConfig::new(
            "eth0".into(),
            Ipv4Addr::new(192, 0, 2, 2),
            24,
            Some(Ipv4Addr::new(192, 0, 2, 1)),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        c.map_host_loopback = Some(Ipv4Addr::new(192, 0, 2, 1));
        c.guest_addrs = vec![GuestAddr {
            addr: c.addr.into(),
            prefix_len: 24,
        }];
        c
    }

    /// pasta's configuration for an empty host, with [`ip4`]'s IPv4.
    fn pasta_config() -> Config {
        let mut config = crate::config::derive::derive(
            &crate::config::NetOptions::new(Mode::Pasta),
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
        .config;
        config.ip4 = Some(ip4());
        config
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_reaches_the_host_loopback() {
        let c = ip4();
        assert_eq!(
            translate_out(&c, Ipv4Addr::new(192, 0, 2, 1), 80, Ipv4Addr::LOCALHOST),
            Ipv4Addr::LOCALHOST
        );
        assert_eq!(
            translate_out(&c, Ipv4Addr::new(203, 0, 113, 9), 80, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(203, 0, 113, 9)
        );
        let mut none = ip4();
        none.map_host_loopback = None;
        assert_eq!(
            translate_out(&none, Ipv4Addr::new(192, 0, 2, 1), 80, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(192, 0, 2, 1)
        );
    }

    #[test]
    fn dns_forward_and_guest_addr_mapping() {
        let mut c = ip4();
        c.dns_match = Some(Ipv4Addr::new(169, 254, 1, 1));
        c.dns_host = Some(Ipv4Addr::new(203, 0, 113, 53));
        c.map_guest_addr = Some(Ipv4Addr::new(169, 254, 1, 2));
        assert_eq!(
            translate_out(&c, Ipv4Addr::new(169, 254, 1, 1), 53, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(203, 0, 113, 53)
        );
        // Only DNS's port is redirected.
        assert_eq!(
            translate_out(&c, Ipv4Addr::new(169, 254, 1, 1), 80, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(169, 254, 1, 1)
        );
        assert_eq!(
            translate_out(&c, Ipv4Addr::new(169, 254, 1, 2), 80, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(192, 0, 2, 2)
        );
        // And back: answers from the resolver appear from the forwarding address.
        assert_eq!(
            translate_in(&c, Ipv4Addr::new(203, 0, 113, 53)),
            Ipv4Addr::new(169, 254, 1, 1)
        );
        assert_eq!(
            translate_in(&c, Ipv4Addr::new(192, 0, 2, 2)),
            Ipv4Addr::new(169, 254, 1, 2)
        );
    }

    #[test]
    fn local_sources_appear_from_the_gateway() {
        let c = ip4();
        // The man page's example: 127.0.0.1 -> the gateway; the host's own address, without a
        // guest-address mapping -> our address (the gateway).
        assert_eq!(
            translate_in(&c, Ipv4Addr::LOCALHOST),
            Ipv4Addr::new(192, 0, 2, 1)
        );
        assert_eq!(
            translate_in(&c, Ipv4Addr::new(192, 0, 2, 2)),
            Ipv4Addr::new(192, 0, 2, 1)
        );
        assert_eq!(
            translate_in(&c, Ipv4Addr::new(198, 51, 100, 7)),
            Ipv4Addr::new(198, 51, 100, 7)
        );
    }

    #[test]
    fn destination_is_the_guests_seen_address() {
        let config = pasta_config();
        let mut guest = GuestState::default();
        let (src, dst) = to_guest(
            &config,
            &guest,
            sa("127.0.0.1:5000"),
            "127.0.0.10".parse().unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            (src, dst),
            (sa("192.0.2.1:5000"), "192.0.2.2".parse().unwrap())
        );
        guest.addr4 = Some(Ipv4Addr::new(192, 0, 2, 77));
        let (_, dst) = to_guest(
            &config,
            &guest,
            sa("198.51.100.7:1"),
            "192.0.2.2".parse().unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(dst, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)));
    }

    #[test]
    fn a_rules_target_address_is_the_destination_in_its_family_only() {
        let mut config = pasta_config();
        config.splice = true;
        let guest = GuestState::default();
        let container: IpAddr = "10.88.0.2".parse().unwrap();
        let local: IpAddr = "192.0.2.2".parse().unwrap();
        // Through the tap: to the container, the peer translated as for the guest.
        assert_eq!(
            to_guest(
                &config,
                &guest,
                sa("127.0.0.1:5000"),
                local,
                Some(container)
            ),
            Some((sa("192.0.2.1:5000"), container))
        );
        assert_eq!(
            to_guest(
                &config,
                &guest,
                sa("198.51.100.7:5000"),
                local,
                Some(container)
            ),
            Some((sa("198.51.100.7:5000"), container))
        );
        // A v4-mapped target is its IPv4 self; the other family is unreachable.
        let mapped: IpAddr = "::ffff:10.88.0.2".parse().unwrap();
        assert_eq!(
            to_guest(&config, &guest, sa("198.51.100.7:1"), local, Some(mapped)).map(|t| t.1),
            Some(container)
        );
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(
            to_guest(&config, &guest, sa("198.51.100.7:1"), local, Some(v6)),
            None
        );
        // Through the bypass: a connection to the container from inside the namespace.
        assert_eq!(
            local_bypass(&config, &guest, sa("127.0.0.1:5000"), (Some(container), 80)),
            Some(sa("10.88.0.2:80"))
        );
        assert_eq!(
            local_bypass(&config, &guest, sa("[::1]:5000"), (Some(container), 80)),
            None
        );
    }

    #[test]
    fn local_traffic_bypasses_the_tap_in_pasta_only() {
        let mut config = pasta_config();
        config.ip6 = None;
        config.splice = true;
        let mut guest = GuestState::default();
        let bypass = |c: &Config, g: &GuestState, src| local_bypass(c, g, sa(src), (None, 80));
        // From the host's loopback, to the namespace's own address; v4-mapped sources too.
        assert_eq!(
            bypass(&config, &guest, "127.0.0.1:5000"),
            Some(sa("192.0.2.2:80"))
        );
        assert_eq!(
            bypass(&config, &guest, "[::ffff:127.0.0.1]:5000"),
            Some(sa("192.0.2.2:80"))
        );
        guest.addr4 = Some(Ipv4Addr::new(192, 0, 2, 77));
        assert_eq!(
            bypass(&config, &guest, "127.0.0.1:5000"),
            Some(sa("192.0.2.77:80"))
        );
        // Anything else takes the guest path.
        assert_eq!(bypass(&config, &guest, "198.51.100.7:5000"), None);
        // No IPv6 configured: nowhere to go.
        assert_eq!(bypass(&config, &guest, "[::1]:5000"), None);
        config.host_lo_to_ns_lo = true;
        assert_eq!(
            bypass(&config, &guest, "127.0.0.1:5000"),
            Some(sa("127.0.0.1:80"))
        );
        assert_eq!(bypass(&config, &guest, "[::1]:5000"), Some(sa("[::1]:80")));
        config.splice = false;
        assert_eq!(bypass(&config, &guest, "127.0.0.1:5000"), None);
        config.splice = true;
        config.mode = Mode::Passt;
        assert_eq!(bypass(&config, &guest, "127.0.0.1:5000"), None);
    }
}
