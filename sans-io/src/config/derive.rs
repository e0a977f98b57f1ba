//! From what the user asked for and what the host looks like to one [`Config`].
//!
//! The rules follow the original: per family, the template interface is the one named by
//! `-i` or `--outbound-if4/6`, else the one carrying the first default route (the kernel dumps
//! routes of equal prefix in metric order, and we pick the lowest metric). Its gateway, first
//! usable address and prefix length become the guest's. Where the original gives up — a host
//! with no default route at all — we start in *local mode* with link-local addressing instead,
//! and a family that cannot be configured is switched off with a notice rather than an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::host::{addr_flags, route_type, scope, HostAddr, HostNet, HostRoute};
use super::resolv::ResolvConf;
use super::{
    AddrChoice, Config, Family, Forwarding, GuestAddr, GuestRoute, IpConfig, IpFamily, ListChoice,
    Mode, NetOptions, Protocols, Services, DEFAULT_MTU, MIN_MTU_IPV6,
};
use crate::fwd::ForwardMode;
use crate::wire::MacAddr;

/// Local mode: the guest's IPv4 address and prefix length.
pub const LOCAL_ADDR4: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 1);
pub const LOCAL_PREFIX_LEN4: u8 = 16;
/// Local mode: the IPv4 gateway, which is us.
pub const LOCAL_GATEWAY4: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 2);
/// Local mode, and any host link without a link-local address: our IPv6 link-local address.
pub const LOCAL_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Tap name in the namespace when the host offers none to copy.
pub const DEFAULT_NS_IFNAME: &str = "tap0";

/// How loud a [`Notice`] is: warnings are shown even with `--quiet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Warning,
    Info,
}

/// Something the user should hear about how the configuration came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub level: Level,
    pub text: String,
}

/// A configuration that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{option}: no interface named '{name}' on the host")]
    NoSuchInterface { option: &'static str, name: String },
}

/// The result of [`derive()`]: the configuration and what to tell the user about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub config: Config,
    pub notices: Vec<Notice>,
}

/// Combines options, host state and resolv.conf into the configuration.
pub fn derive(
    opts: &NetOptions,
    host: &HostNet,
    resolv: &ResolvConf,
) -> Result<Derived, ConfigError> {
    let mut notices = Vec::new();
    let want4 = opts.family != Family::V6Only;
    let mut want6 = opts.family != Family::V4Only;

    for (option, name) in [
        ("--interface", &opts.interface),
        ("--outbound-if4", &opts.outbound_if4),
        ("--outbound-if6", &opts.outbound_if6),
    ] {
        if let Some(name) = name {
            if host.link_by_name(name).is_none() {
                return Err(ConfigError::NoSuchInterface {
                    option,
                    name: name.clone(),
                });
            }
        }
    }

    let mtu = match opts.mtu {
        Some(0) => None,
        Some(m) => Some(m),
        None => Some(DEFAULT_MTU),
    };
    if want6 && mtu.is_some_and(|m| m < MIN_MTU_IPV6) {
        want6 = false;
        notices.push(warn(format!(
            "IPv6 disabled: it needs an MTU of at least {MIN_MTU_IPV6}"
        )));
    }

    let fam4 = FamilyOptions::v4(opts);
    let fam6 = FamilyOptions::v6(opts);
    let template4 = want4
        .then(|| template_link::<Ipv4Addr>(host, &fam4))
        .flatten();
    let template6 = want6
        .then(|| template_link::<Ipv6Addr>(host, &fam6))
        .flatten();
    let mut ip4 = template4.and_then(|i| from_host(&fam4, host, i, &mut notices));
    let mut ip6 = template6.and_then(|i| from_host(&fam6, host, i, &mut notices));

    let local_mode = ip4.is_none() && ip6.is_none();
    if local_mode {
        notices.push(warn(
            "no usable host interface: starting in local mode, with link-local addresses"
                .to_owned(),
        ));
        ip4 = want4.then(|| local(&fam4));
        ip6 = want6.then(|| local(&fam6));
    } else {
        for (wanted, got, name) in [
            (want4, ip4.is_some(), "IPv4"),
            (want6, ip6.is_some(), "IPv6"),
        ] {
            if wanted && !got {
                notices.push(warn(format!(
                    "{name} disabled: no usable default route and address on the host"
                )));
            }
        }
    }
    if let Some(c) = &mut ip4 {
        apply_mappings(c, &fam4);
    }
    if let Some(c) = &mut ip6 {
        apply_mappings(c, &fam6);
    }

    let explicit_dns = matches!(opts.dns, ListChoice::List(_));
    let servers: &[IpAddr] = match &opts.dns {
        ListChoice::FromHost => &resolv.nameservers,
        ListChoice::Disabled => &[],
        ListChoice::List(list) => list,
    };
    let mut dns = Vec::new();
    if let Some(c) = &mut ip4 {
        dns.extend(
            resolve_dns(c, &fam4, servers, explicit_dns)
                .into_iter()
                .map(IpAddr::V4),
        );
    }
    if let Some(c) = &mut ip6 {
        dns.extend(
            resolve_dns(c, &fam6, servers, explicit_dns)
                .into_iter()
                .map(IpAddr::V6),
        );
    }
    if dns.is_empty() && opts.dns != ListChoice::Disabled {
        notices.push(info(
            "no usable nameserver address found for the guest".to_owned(),
        ));
    }
    let search = match &opts.search {
        ListChoice::FromHost => resolv.search.clone(),
        ListChoice::Disabled => Vec::new(),
        ListChoice::List(list) => list.clone(),
    };

    // The link whose MAC, MTU and name we mirror: IPv4's template, else IPv6's.
    let primary = if local_mode {
        None
    } else {
        template4
            .filter(|_| ip4.is_some())
            .or(template6.filter(|_| ip6.is_some()))
            .and_then(|i| host.link(i))
    };
    let our_mac = opts
        .our_mac
        .or_else(|| primary.and_then(|l| l.mac).filter(MacAddr::is_unicast))
        .unwrap_or(MacAddr::FALLBACK);
    let ns_ifname = opts
        .ns_ifname
        .clone()
        .or_else(|| primary.map(|l| l.name.clone()))
        .unwrap_or_else(|| DEFAULT_NS_IFNAME.to_owned());

    let passt = opts.mode == Mode::Passt;
    let services = Services {
        dhcp: !opts.no_dhcp && ip4.as_ref().is_some_and(|c| c.gateway.is_some()),
        ndp: !opts.no_ndp && ip6.is_some(),
        ra: !opts.no_ra && !opts.no_ndp && ip6.is_some(),
        dhcpv6: !opts.no_dhcpv6 && ip6.is_some(),
        dhcp_dns: opts.dhcp_dns.unwrap_or(passt),
        dhcp_search: opts.dhcp_search.unwrap_or(passt),
    };
    let default_fwd = || {
        if passt {
            ForwardMode::None
        } else {
            ForwardMode::Auto
        }
    };
    let forwarding = Forwarding {
        tcp_in: opts.tcp_in.clone().or_default(default_fwd()),
        // Without -u, UDP follows TCP's explicit ports, untranslated.
        udp_in: opts
            .udp_in
            .clone()
            .or_default(opts.tcp_in.untranslated().unwrap_or_else(default_fwd)),
        tcp_out: opts.tcp_out.clone().or_default(default_fwd()),
        udp_out: opts
            .udp_out
            .clone()
            .or_default(opts.tcp_out.untranslated().unwrap_or_else(default_fwd)),
    };

    let config = Config {
        mode: opts.mode,
        host_mtu: primary.map(|l| l.mtu),
        ip4,
        ip6,
        local_mode,
        our_mac,
        mtu,
        dns,
        search,
        hostname: opts.hostname.clone(),
        fqdn: opts.fqdn.clone(),
        services,
        protocols: Protocols {
            tcp: !opts.no_tcp,
            udp: !opts.no_udp,
            icmp: !opts.no_icmp,
        },
        forwarding,
        ns_ifname,
        ns_mac: opts.ns_mac,
        no_copy_routes: opts.no_copy_routes,
        no_copy_addrs: opts.no_copy_addrs,
        freebind: opts.freebind,
        splice: !opts.no_splice,
        host_lo_to_ns_lo: opts.host_lo_to_ns_lo,
    };
    Ok(Derived { config, notices })
}

fn warn(text: String) -> Notice {
    Notice {
        level: Level::Warning,
        text,
    }
}

fn info(text: String) -> Notice {
    Notice {
        level: Level::Info,
        text,
    }
}

/// What differs between the families when deriving their configuration.
trait Derivable: IpFamily {
    const NAME: &'static str;
    /// The guest's address and prefix length in local mode, if it gets one from us.
    const LOCAL_ADDR: Option<(Self, u8)>;
    /// Our address in local mode, also the guest's gateway.
    const LOCAL_GATEWAY: Self;
    /// Prefix length for an address given with `-a` that the host doesn't have.
    fn default_prefix_len(self) -> u8;
    /// Our address on the guest's link, given the gateway and the host's link-local address.
    fn our_addr(gateway: Option<Self>, host_link_local: Option<Self>) -> Self;
}

impl Derivable for Ipv4Addr {
    const NAME: &'static str = "IPv4";
    const LOCAL_ADDR: Option<(Self, u8)> = Some((LOCAL_ADDR4, LOCAL_PREFIX_LEN4));
    const LOCAL_GATEWAY: Self = LOCAL_GATEWAY4;

    /// The prefix length of the old address classes (RFC 4632 section 2 tells the history).
    fn default_prefix_len(self) -> u8 {
        match self.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            192..=223 => 24,
            _ => 32,
        }
    }

    fn our_addr(gateway: Option<Self>, _: Option<Self>) -> Self {
        gateway.unwrap_or(LOCAL_GATEWAY4)
    }
}

impl Derivable for Ipv6Addr {
    const NAME: &'static str = "IPv6";
    // No global address: the guest keeps its own link-local one.
    const LOCAL_ADDR: Option<(Self, u8)> = None;
    const LOCAL_GATEWAY: Self = LOCAL_GATEWAY6;

    fn default_prefix_len(self) -> u8 {
        64
    }

    /// A link-local router is the address the guest routes through, so NDP and DHCPv6 come
    /// from it; otherwise we speak from the host interface's link-local address.
    fn our_addr(gateway: Option<Self>, host_link_local: Option<Self>) -> Self {
        gateway
            .filter(IpFamily::is_link_local)
            .or(host_link_local)
            .unwrap_or(LOCAL_GATEWAY6)
    }
}

/// The user's options for one family.
struct FamilyOptions<'a, A> {
    interface: Option<&'a str>,
    outbound_if: Option<&'a str>,
    outbound: Option<A>,
    addr: Option<A>,
    prefix_len: Option<u8>,
    gateway: Option<A>,
    map_host_loopback: AddrChoice<A>,
    map_guest_addr: AddrChoice<A>,
    dns_forward: Option<A>,
    dns_host: Option<A>,
    copy_addrs: bool,
    copy_routes: bool,
}

impl<'a> FamilyOptions<'a, Ipv4Addr> {
    fn v4(o: &'a NetOptions) -> Self {
        FamilyOptions {
            interface: o.interface.as_deref(),
            outbound_if: o.outbound_if4.as_deref(),
            outbound: o.outbound4,
            addr: o.addr4,
            prefix_len: o.prefix_len4,
            gateway: o.gateway4,
            map_host_loopback: o.map_host_loopback4,
            map_guest_addr: o.map_guest_addr4,
            dns_forward: o.dns_forward4,
            dns_host: o.dns_host4,
            copy_addrs: !(o.no_copy_addrs || o.addr4.is_some()),
            copy_routes: !(o.no_copy_routes || o.gateway4.is_some()),
        }
    }
}

impl<'a> FamilyOptions<'a, Ipv6Addr> {
    fn v6(o: &'a NetOptions) -> Self {
        FamilyOptions {
            interface: o.interface.as_deref(),
            outbound_if: o.outbound_if6.as_deref(),
            outbound: o.outbound6,
            addr: o.addr6,
            prefix_len: None,
            gateway: o.gateway6,
            map_host_loopback: o.map_host_loopback6,
            map_guest_addr: o.map_guest_addr6,
            dns_forward: o.dns_forward6,
            dns_host: o.dns_host6,
            copy_addrs: !(o.no_copy_addrs || o.addr6.is_some()),
            copy_routes: !(o.no_copy_routes || o.gateway6.is_some()),
        }
    }
}

fn is_family<A: IpFamily>(addr: IpAddr) -> bool {
    A::from_ip(addr).is_some()
}

/// Usable default routes of a family, lowest metric first (stable for equal metrics).
fn default_routes<A: IpFamily>(host: &HostNet) -> Vec<&HostRoute> {
    let mut routes: Vec<&HostRoute> = host
        .routes
        .iter()
        .filter(|r| r.is_default() && r.kind == route_type::UNICAST && is_family::<A>(r.dst))
        .collect();
    routes.sort_by_key(|r| r.priority);
    routes
}

/// The interface whose addresses and routes the guest gets, for one family.
fn template_link<A: IpFamily>(host: &HostNet, fam: &FamilyOptions<A>) -> Option<u32> {
    if let Some(name) = fam.interface.or(fam.outbound_if) {
        return host.link_by_name(name).map(|l| l.index);
    }
    default_routes::<A>(host)
        .into_iter()
        .flat_map(|r| r.nexthops.iter())
        .find_map(|h| h.oif.filter(|&i| host.link(i).is_some_and(|l| !l.loopback)))
}

/// The gateway of the first default route leaving through `ifindex`, if it has one of the
/// same family (RTA_VIA can give an IPv4 route an IPv6 next hop; we don't use those).
fn default_gateway<A: IpFamily>(host: &HostNet, ifindex: u32) -> Option<A> {
    default_routes::<A>(host)
        .into_iter()
        .flat_map(|r| r.nexthops.iter())
        .filter(|h| h.oif == Some(ifindex))
        .find_map(|h| h.gateway.and_then(A::from_ip))
}

fn prefix_contains(net: IpAddr, prefix_len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// One family's configuration from the template interface `ifindex`, or `None` (with a
/// notice) when that interface has no usable address of the family.
fn from_host<A: Derivable>(
    fam: &FamilyOptions<A>,
    host: &HostNet,
    ifindex: u32,
    notices: &mut Vec<Notice>,
) -> Option<IpConfig<A>> {
    let link = host.link(ifindex)?;
    let gateway = fam.gateway.or_else(|| default_gateway::<A>(host, ifindex));

    let on_link: Vec<&HostAddr> = host
        .addrs
        .iter()
        .filter(|a| a.ifindex == ifindex && is_family::<A>(a.addr))
        // Failed or still in duplicate address detection: not ours to hand out.
        .filter(|a| a.flags & (addr_flags::DADFAILED | addr_flags::TENTATIVE) == 0)
        .collect();
    let global: Vec<&HostAddr> = on_link
        .iter()
        .copied()
        .filter(|a| a.scope == scope::UNIVERSE && !a.is_link_local())
        .collect();
    // Prefer stable addresses (not secondary or temporary, not deprecated), and of those one
    // on the gateway's subnet.
    let stable = |a: &&&HostAddr| a.flags & (addr_flags::SECONDARY | addr_flags::DEPRECATED) == 0;
    let near_gateway =
        |a: &&&HostAddr| gateway.is_some_and(|gw| prefix_contains(a.addr, a.prefix_len, gw.into()));
    let chosen = global
        .iter()
        .find(|a| stable(a) && near_gateway(a))
        .or_else(|| global.iter().find(stable))
        .or_else(|| global.first())
        .copied();

    let (addr, host_prefix) = match (fam.addr, chosen) {
        (Some(a), _) => {
            let on_host = global.iter().find(|h| h.addr == a.into());
            (a, on_host.map(|h| h.prefix_len))
        }
        (None, Some(h)) => (A::from_ip(h.addr)?, Some(h.prefix_len)),
        (None, None) => {
            notices.push(info(format!(
                "{}: no global address on {}",
                A::NAME,
                link.name
            )));
            return None;
        }
    };
    let prefix_len = fam
        .prefix_len
        .or(host_prefix)
        .unwrap_or_else(|| addr.default_prefix_len());
    if gateway.is_none() {
        notices.push(warn(format!(
            "{}: no gateway on the default route via {}: its services and gateway mapping are off",
            A::NAME,
            link.name
        )));
    }
    let host_link_local = on_link
        .iter()
        .find_map(|a| A::from_ip(a.addr).filter(IpFamily::is_link_local));

    let mut config = IpConfig::new(
        link.name.clone(),
        addr,
        prefix_len,
        gateway,
        A::our_addr(gateway, host_link_local),
    );
    config.guest_addrs = if fam.copy_addrs {
        global
            .iter()
            .map(|a| GuestAddr {
                addr: a.addr,
                prefix_len: a.prefix_len,
            })
            .collect()
    } else {
        vec![GuestAddr {
            addr: addr.into(),
            prefix_len,
        }]
    };
    config.guest_routes = if fam.copy_routes {
        copied_routes::<A>(host, ifindex)
    } else {
        gateway
            .map(|gw| vec![default_route(gw)])
            .unwrap_or_default()
    };
    Some(config)
}

fn default_route<A: IpFamily>(gateway: A) -> GuestRoute {
    GuestRoute {
        dst: A::UNSPECIFIED.into(),
        dst_len: 0,
        gateway: Some(gateway.into()),
        priority: 0,
        mtu: None,
    }
}

/// The template interface's routes for `--config-net`. Prefix routes the kernel makes for
/// addresses, link-local and multicast routes are left to the guest's kernel; routes without a
/// gateway come first so that the gateways of later ones are reachable when they are added.
fn copied_routes<A: IpFamily>(host: &HostNet, ifindex: u32) -> Vec<GuestRoute> {
    const RTPROT_KERNEL: u8 = 2;
    let mut routes: Vec<GuestRoute> = host
        .routes
        .iter()
        .filter(|r| is_family::<A>(r.dst) && r.kind == route_type::UNICAST)
        .filter(|r| r.protocol != RTPROT_KERNEL)
        .filter(|r| !r.dst.is_multicast() && A::from_ip(r.dst).is_some_and(|d| !d.is_link_local()))
        .flat_map(|r| {
            r.nexthops
                .iter()
                .filter(|h| h.oif == Some(ifindex))
                .map(|h| GuestRoute {
                    dst: r.dst,
                    dst_len: r.dst_len,
                    gateway: h.gateway,
                    priority: r.priority,
                    mtu: r.mtu,
                })
        })
        .collect();
    routes.sort_by_key(|r| r.gateway.is_some());
    routes.dedup();
    routes
}

/// Local mode: our own link-local addressing, with whatever the user gave explicitly.
fn local<A: Derivable>(fam: &FamilyOptions<A>) -> IpConfig<A> {
    let gateway = fam.gateway.unwrap_or(A::LOCAL_GATEWAY);
    let assigned = match (fam.addr, A::LOCAL_ADDR) {
        (Some(a), _) => Some((a, fam.prefix_len.unwrap_or_else(|| a.default_prefix_len()))),
        (None, Some((a, len))) => Some((a, fam.prefix_len.unwrap_or(len))),
        (None, None) => None,
    };
    let (addr, prefix_len) = assigned.unwrap_or((A::UNSPECIFIED, 64));
    let mut config = IpConfig::new(
        String::new(),
        addr,
        prefix_len,
        Some(gateway),
        A::our_addr(Some(gateway), None),
    );
    config.guest_addrs = assigned
        .map(|(a, len)| GuestAddr {
            addr: a.into(),
            prefix_len: len,
        })
        .into_iter()
        .collect();
    config.guest_routes = vec![default_route(gateway)];
    config
}

/// Host-loopback and guest-address mappings, and the outbound binding.
fn apply_mappings<A: IpFamily>(c: &mut IpConfig<A>, fam: &FamilyOptions<A>) {
    c.map_host_loopback = match fam.map_host_loopback {
        AddrChoice::Default => c.gateway,
        AddrChoice::Disabled => None,
        AddrChoice::Addr(a) => Some(a),
    };
    c.map_guest_addr = match fam.map_guest_addr {
        AddrChoice::Addr(a) => Some(a),
        AddrChoice::Default | AddrChoice::Disabled => None,
    };
    c.dns_match = fam.dns_forward;
    c.outbound_addr = fam.outbound;
    c.outbound_if = fam.outbound_if.map(str::to_owned);
}

/// The DNS servers of one family handed to the guest, setting the target of `--dns-forward`.
///
/// A loopback resolver (systemd-resolved's 127.0.0.53, a local dnsmasq) is not reachable
/// from the guest as such: it is handed out as the address that maps to the host's loopback,
/// when there is one, and skipped otherwise. `--dns-forward` is what the guest should use,
/// unless servers were given explicitly.
fn resolve_dns<A: IpFamily>(
    c: &mut IpConfig<A>,
    fam: &FamilyOptions<A>,
    servers: &[IpAddr],
    explicit: bool,
) -> Vec<A> {
    let mut handed = Vec::new();
    for server in servers.iter().filter_map(|&s| A::from_ip(s)) {
        c.dns_host.get_or_insert(server);
        let guest_sees = if server.is_loopback() {
            c.map_host_loopback
        } else {
            Some(server)
        };
        if let Some(a) = guest_sees.filter(|a| !handed.contains(a)) {
            handed.push(a);
        }
    }
    if let Some(h) = fam.dns_host {
        c.dns_host = Some(h);
    }
    if let (Some(m), false) = (c.dns_match, explicit) {
        handed = vec![m];
    }
    handed
}
