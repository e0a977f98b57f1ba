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
    AddrChoice, Config, Family, Forwarding, GuestAddr, GuestRoute, Ip4Config, Ip6Config,
    ListChoice, Mode, NetOptions, Protocols, Services, DEFAULT_MTU, MIN_MTU_IPV6,
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

    if let Some(name) = &opts.interface {
        check_link(host, "--interface", name)?;
    }
    if let Some(name) = &opts.outbound_if4 {
        check_link(host, "--outbound-if4", name)?;
    }
    if let Some(name) = &opts.outbound_if6 {
        check_link(host, "--outbound-if6", name)?;
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

    let template4 = want4
        .then(|| {
            template_link(
                host,
                opts.interface.as_deref(),
                opts.outbound_if4.as_deref(),
                V4,
            )
        })
        .flatten();
    let template6 = want6
        .then(|| {
            template_link(
                host,
                opts.interface.as_deref(),
                opts.outbound_if6.as_deref(),
                V6,
            )
        })
        .flatten();

    let mut ip4 = template4.and_then(|ifindex| ip4_from_host(opts, host, ifindex, &mut notices));
    let mut ip6 = template6.and_then(|ifindex| ip6_from_host(opts, host, ifindex, &mut notices));

    let local_mode = ip4.is_none() && ip6.is_none();
    if local_mode {
        notices.push(warn(
            "no usable host interface: starting in local mode, with link-local addresses"
                .to_owned(),
        ));
        ip4 = want4.then(|| ip4_local(opts));
        ip6 = want6.then(|| ip6_local(opts));
    } else {
        if want4 && ip4.is_none() {
            notices.push(warn(
                "IPv4 disabled: no usable default route and address on the host".to_owned(),
            ));
        }
        if want6 && ip6.is_none() {
            notices.push(warn(
                "IPv6 disabled: no usable default route and address on the host".to_owned(),
            ));
        }
    }

    if let Some(ip4) = &mut ip4 {
        ip4.map_host_loopback = match opts.map_host_loopback4 {
            AddrChoice::Default => ip4.gateway,
            AddrChoice::Disabled => None,
            AddrChoice::Addr(a) => Some(a),
        };
        ip4.map_guest_addr = choice(opts.map_guest_addr4);
        ip4.dns_match = opts.dns_forward4;
        ip4.outbound_addr = opts.outbound4;
        ip4.outbound_if = opts.outbound_if4.clone();
    }
    if let Some(ip6) = &mut ip6 {
        ip6.map_host_loopback = match opts.map_host_loopback6 {
            AddrChoice::Default => ip6.gateway,
            AddrChoice::Disabled => None,
            AddrChoice::Addr(a) => Some(a),
        };
        ip6.map_guest_addr = choice(opts.map_guest_addr6);
        ip6.dns_match = opts.dns_forward6;
        ip6.outbound_addr = opts.outbound6;
        ip6.outbound_if = opts.outbound_if6.clone();
    }

    let dns = resolve_dns(opts, resolv, ip4.as_mut(), ip6.as_mut(), &mut notices);
    let search = match &opts.search {
        ListChoice::FromHost => resolv.search.clone(),
        ListChoice::Disabled => Vec::new(),
        ListChoice::List(list) => list.clone(),
    };

    let template_link_of = |ifindex: Option<u32>| ifindex.and_then(|i| host.link(i));
    let primary = if local_mode {
        None
    } else {
        template_link_of(template4.filter(|_| ip4.is_some()))
            .or_else(|| template_link_of(template6.filter(|_| ip6.is_some())))
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
        udp_in: opts.udp_in.clone().or_default(default_fwd()),
        tcp_out: opts.tcp_out.clone().or_default(default_fwd()),
        udp_out: opts.udp_out.clone().or_default(default_fwd()),
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

fn choice<A>(c: AddrChoice<A>) -> Option<A> {
    match c {
        AddrChoice::Addr(a) => Some(a),
        AddrChoice::Default | AddrChoice::Disabled => None,
    }
}

fn check_link(host: &HostNet, option: &'static str, name: &str) -> Result<(), ConfigError> {
    match host.link_by_name(name) {
        Some(_) => Ok(()),
        None => Err(ConfigError::NoSuchInterface {
            option,
            name: name.to_owned(),
        }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Af {
    V4,
    V6,
}
use Af::{V4, V6};

fn family_of(a: &IpAddr) -> Af {
    if a.is_ipv4() {
        V4
    } else {
        V6
    }
}

/// Usable default routes of a family, lowest metric first (stable for equal metrics).
fn default_routes(host: &HostNet, af: Af) -> Vec<&HostRoute> {
    let mut routes: Vec<&HostRoute> = host
        .routes
        .iter()
        .filter(|r| r.is_default() && r.kind == route_type::UNICAST && family_of(&r.dst) == af)
        .collect();
    routes.sort_by_key(|r| r.priority);
    routes
}

/// The interface whose addresses and routes the guest gets, for one family.
fn template_link(
    host: &HostNet,
    interface: Option<&str>,
    outbound_if: Option<&str>,
    af: Af,
) -> Option<u32> {
    if let Some(name) = interface.or(outbound_if) {
        return host.link_by_name(name).map(|l| l.index);
    }
    default_routes(host, af)
        .into_iter()
        .flat_map(|r| r.nexthops.iter())
        .find_map(|h| h.oif.filter(|&i| host.link(i).is_some_and(|l| !l.loopback)))
}

/// The gateway of the first default route leaving through `ifindex`, if it has one.
fn default_gateway(host: &HostNet, ifindex: u32, af: Af) -> Option<IpAddr> {
    default_routes(host, af)
        .into_iter()
        .flat_map(|r| r.nexthops.iter())
        .filter(|h| h.oif == Some(ifindex))
        .find_map(|h| h.gateway)
}

fn link_addrs(host: &HostNet, ifindex: u32, af: Af) -> impl Iterator<Item = &HostAddr> {
    host.addrs
        .iter()
        .filter(move |a| a.ifindex == ifindex && family_of(&a.addr) == af)
}

/// Addresses that may be handed out: not failed or still in duplicate address detection.
fn usable(a: &&HostAddr) -> bool {
    a.flags & (addr_flags::DADFAILED | addr_flags::TENTATIVE) == 0
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

/// The prefix length of the old address classes, for an address the host doesn't have
/// (RFC 4632 section 2 describes what classful addressing was).
fn classful_prefix_len(addr: Ipv4Addr) -> u8 {
    match addr.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        192..=223 => 24,
        _ => 32,
    }
}

fn ip4_from_host(
    opts: &NetOptions,
    host: &HostNet,
    ifindex: u32,
    notices: &mut Vec<Notice>,
) -> Option<Ip4Config> {
    let link = host.link(ifindex)?;
    let gateway = match opts.gateway4 {
        Some(gw) => Some(gw),
        None => match default_gateway(host, ifindex, V4) {
            Some(IpAddr::V4(gw)) => Some(gw),
            _ => None,
        },
    };
    let candidates: Vec<&HostAddr> = link_addrs(host, ifindex, V4).filter(usable).collect();
    // Prefer a primary address on the gateway's subnet, then any primary, then anything.
    let on_gateway_subnet = |a: &&&HostAddr| {
        gateway.is_some_and(|gw| prefix_contains(a.addr, a.prefix_len, IpAddr::V4(gw)))
    };
    let primary = |a: &&&HostAddr| a.flags & addr_flags::SECONDARY == 0;
    let host_addr = candidates
        .iter()
        .find(|a| primary(a) && on_gateway_subnet(a))
        .or_else(|| candidates.iter().find(|a| primary(a) && !a.is_link_local()))
        .or_else(|| candidates.first())
        .copied();

    let (addr, host_prefix) = match (opts.addr4, host_addr) {
        (Some(a), _) => {
            let on_host = candidates.iter().find(|h| h.addr == IpAddr::V4(a));
            (a, on_host.map(|h| h.prefix_len))
        }
        (None, Some(h)) => match h.addr {
            IpAddr::V4(a) => (a, Some(h.prefix_len)),
            IpAddr::V6(_) => return None,
        },
        (None, None) => {
            notices.push(info(format!("IPv4: no address on {}", link.name)));
            return None;
        }
    };
    let prefix_len = opts
        .prefix_len4
        .or(host_prefix)
        .unwrap_or_else(|| classful_prefix_len(addr));
    if gateway.is_none() {
        notices.push(warn(format!(
            "IPv4: no gateway on the default route via {}: DHCP and gateway mapping are off",
            link.name
        )));
    }

    let copy_addrs = !(opts.no_copy_addrs || opts.addr4.is_some());
    let guest_addrs = if copy_addrs {
        candidates
            .iter()
            .filter(|a| !a.is_link_local())
            .map(|a| GuestAddr {
                addr: a.addr,
                prefix_len: a.prefix_len,
            })
            .collect()
    } else {
        vec![GuestAddr {
            addr: IpAddr::V4(addr),
            prefix_len,
        }]
    };
    let copy_routes = !(opts.no_copy_routes || opts.gateway4.is_some());
    let guest_routes = guest_routes(host, ifindex, V4, copy_routes, gateway.map(IpAddr::V4));

    Some(Ip4Config {
        template_if: link.name.clone(),
        addr,
        prefix_len,
        gateway,
        our_addr: gateway.unwrap_or(LOCAL_GATEWAY4),
        map_host_loopback: None,
        map_guest_addr: None,
        dns_match: None,
        dns_host: None,
        outbound_addr: None,
        outbound_if: None,
        guest_addrs,
        guest_routes,
    })
}

fn ip6_from_host(
    opts: &NetOptions,
    host: &HostNet,
    ifindex: u32,
    notices: &mut Vec<Notice>,
) -> Option<Ip6Config> {
    let link = host.link(ifindex)?;
    let gateway = match opts.gateway6 {
        Some(gw) => Some(gw),
        None => match default_gateway(host, ifindex, V6) {
            Some(IpAddr::V6(gw)) => Some(gw),
            _ => None,
        },
    };
    let addrs: Vec<&HostAddr> = link_addrs(host, ifindex, V6).filter(usable).collect();
    let global: Vec<&HostAddr> = addrs
        .iter()
        .copied()
        .filter(|a| a.scope == scope::UNIVERSE && !a.is_link_local())
        .collect();
    // Prefer stable addresses: not deprecated, not temporary (privacy) ones.
    let stable = |a: &&&HostAddr| a.flags & (addr_flags::DEPRECATED | addr_flags::SECONDARY) == 0;
    let host_addr = global
        .iter()
        .find(stable)
        .or_else(|| global.first())
        .copied();

    let (addr, prefix_len) = match (opts.addr6, host_addr) {
        (Some(a), _) => {
            let on_host = global.iter().find(|h| h.addr == IpAddr::V6(a));
            (a, on_host.map_or(64, |h| h.prefix_len))
        }
        (None, Some(h)) => match h.addr {
            IpAddr::V6(a) => (a, h.prefix_len),
            IpAddr::V4(_) => return None,
        },
        (None, None) => {
            notices.push(info(format!("IPv6: no global address on {}", link.name)));
            return None;
        }
    };
    let host_link_local = addrs.iter().find_map(|a| match a.addr {
        IpAddr::V6(a6) if a.is_link_local() => Some(a6),
        _ => None,
    });
    let our_link_local = match gateway {
        Some(gw) if is_link_local6(gw) => gw,
        _ => host_link_local.unwrap_or(LOCAL_GATEWAY6),
    };

    let copy_addrs = !(opts.no_copy_addrs || opts.addr6.is_some());
    let guest_addrs = if copy_addrs {
        global
            .iter()
            .map(|a| GuestAddr {
                addr: a.addr,
                prefix_len: a.prefix_len,
            })
            .collect()
    } else {
        vec![GuestAddr {
            addr: IpAddr::V6(addr),
            prefix_len,
        }]
    };
    let copy_routes = !(opts.no_copy_routes || opts.gateway6.is_some());
    let guest_routes = guest_routes(host, ifindex, V6, copy_routes, gateway.map(IpAddr::V6));

    Some(Ip6Config {
        template_if: link.name.clone(),
        addr,
        prefix_len,
        gateway,
        our_link_local,
        map_host_loopback: None,
        map_guest_addr: None,
        dns_match: None,
        dns_host: None,
        outbound_addr: None,
        outbound_if: None,
        guest_addrs,
        guest_routes,
    })
}

fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The routes `--config-net` installs: the template interface's own routes when copying,
/// else the default route alone. Prefix routes the kernel makes for addresses, link-local
/// and multicast routes are left to the guest's kernel; routes without a gateway come first
/// so that the gateways of later ones are reachable when they are added.
fn guest_routes(
    host: &HostNet,
    ifindex: u32,
    af: Af,
    copy: bool,
    gateway: Option<IpAddr>,
) -> Vec<GuestRoute> {
    const RTPROT_KERNEL: u8 = 2;
    if !copy {
        return gateway
            .map(|gw| {
                let dst = match af {
                    V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                vec![GuestRoute {
                    dst,
                    dst_len: 0,
                    gateway: Some(gw),
                    priority: 0,
                    mtu: None,
                }]
            })
            .unwrap_or_default();
    }
    let mut routes: Vec<GuestRoute> = host
        .routes
        .iter()
        .filter(|r| family_of(&r.dst) == af && r.kind == route_type::UNICAST)
        .filter(|r| r.protocol != RTPROT_KERNEL)
        .filter(|r| match r.dst {
            IpAddr::V6(d) => !is_link_local6(d) && !d.is_multicast(),
            IpAddr::V4(d) => !d.is_multicast(),
        })
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

fn ip4_local(opts: &NetOptions) -> Ip4Config {
    let addr = opts.addr4.unwrap_or(LOCAL_ADDR4);
    let gateway = opts.gateway4.unwrap_or(LOCAL_GATEWAY4);
    let prefix_len = opts.prefix_len4.unwrap_or(LOCAL_PREFIX_LEN4);
    Ip4Config {
        template_if: String::new(),
        addr,
        prefix_len,
        gateway: Some(gateway),
        our_addr: gateway,
        map_host_loopback: None,
        map_guest_addr: None,
        dns_match: None,
        dns_host: None,
        outbound_addr: None,
        outbound_if: None,
        guest_addrs: vec![GuestAddr {
            addr: IpAddr::V4(addr),
            prefix_len,
        }],
        guest_routes: vec![GuestRoute {
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_len: 0,
            gateway: Some(IpAddr::V4(gateway)),
            priority: 0,
            mtu: None,
        }],
    }
}

fn ip6_local(opts: &NetOptions) -> Ip6Config {
    let gateway = opts.gateway6.unwrap_or(LOCAL_GATEWAY6);
    let (addr, guest_addrs) = match opts.addr6 {
        Some(a) => (
            a,
            vec![GuestAddr {
                addr: IpAddr::V6(a),
                prefix_len: 64,
            }],
        ),
        // No global address: the guest keeps its own link-local one.
        None => (Ipv6Addr::UNSPECIFIED, Vec::new()),
    };
    Ip6Config {
        template_if: String::new(),
        addr,
        prefix_len: 64,
        gateway: Some(gateway),
        our_link_local: if is_link_local6(gateway) {
            gateway
        } else {
            LOCAL_GATEWAY6
        },
        map_host_loopback: None,
        map_guest_addr: None,
        dns_match: None,
        dns_host: None,
        outbound_addr: None,
        outbound_if: None,
        guest_addrs,
        guest_routes: vec![GuestRoute {
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            dst_len: 0,
            gateway: Some(IpAddr::V6(gateway)),
            priority: 0,
            mtu: None,
        }],
    }
}

/// The DNS servers handed to the guest, and per family the target of `--dns-forward`.
///
/// A loopback resolver (systemd-resolved's 127.0.0.53, a local dnsmasq) is not reachable
/// from the guest as such: it is handed out as the address that maps to the host's loopback,
/// when there is one, and skipped otherwise.
fn resolve_dns(
    opts: &NetOptions,
    resolv: &ResolvConf,
    mut ip4: Option<&mut Ip4Config>,
    mut ip6: Option<&mut Ip6Config>,
    notices: &mut Vec<Notice>,
) -> Vec<IpAddr> {
    let servers: &[IpAddr] = match &opts.dns {
        ListChoice::FromHost => &resolv.nameservers,
        ListChoice::Disabled => &[],
        ListChoice::List(list) => list,
    };
    let explicit = matches!(opts.dns, ListChoice::List(_));
    let mut handed = Vec::new();
    for &server in servers {
        match server {
            IpAddr::V4(a) => {
                let Some(ip4) = ip4.as_deref_mut() else {
                    continue;
                };
                ip4.dns_host.get_or_insert(a);
                let guest_sees = if a.is_loopback() {
                    ip4.map_host_loopback
                } else {
                    Some(a)
                };
                handed.extend(guest_sees.map(IpAddr::V4));
            }
            IpAddr::V6(a) => {
                let Some(ip6) = ip6.as_deref_mut() else {
                    continue;
                };
                ip6.dns_host.get_or_insert(a);
                let guest_sees = if a.is_loopback() {
                    ip6.map_host_loopback
                } else {
                    Some(a)
                };
                handed.extend(guest_sees.map(IpAddr::V6));
            }
        }
    }
    // --dns-host overrides the target; --dns-forward is what the guest should use, unless
    // servers were given explicitly.
    if let Some(ip4) = ip4 {
        if let Some(h) = opts.dns_host4 {
            ip4.dns_host = Some(h);
        }
        if let (Some(m), false) = (ip4.dns_match, explicit) {
            handed.retain(|a| !a.is_ipv4());
            handed.push(IpAddr::V4(m));
        }
    }
    if let Some(ip6) = ip6 {
        if let Some(h) = opts.dns_host6 {
            ip6.dns_host = Some(h);
        }
        if let (Some(m), false) = (ip6.dns_match, explicit) {
            handed.retain(|a| !a.is_ipv6());
            handed.push(IpAddr::V6(m));
        }
    }
    // IPv4 first, each family in the order given.
    handed.sort_by_key(|a| a.is_ipv6());
    handed.dedup();
    if handed.is_empty() && opts.dns != ListChoice::Disabled {
        notices.push(info(
            "no usable nameserver address found for the guest".to_owned(),
        ));
    }
    handed
}
