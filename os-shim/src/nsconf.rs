//! Setting up pasta's target namespace over rtnetlink: loopback, the tap's MAC and, with
//! `--config-net`, its MTU, state, addresses and routes.

use std::net::IpAddr;
use std::os::fd::AsFd;

use sans_io::config::{Config, GuestAddr, GuestRoute};
use sans_io::wire::MacAddr;

use crate::netlink::{describe_route, Netlink, NetlinkError};
use crate::ns::{in_netns, NsError};

#[derive(Debug, thiserror::Error)]
pub enum NsConfError {
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error("in the namespace: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("in the namespace: tap device {ifname} has no MAC address")]
    NoMac { ifname: String },
}

/// What [`configure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsConf {
    /// The tap's MAC address: the guest's, the destination of the frames we send it.
    pub mac: MacAddr,
    /// Addresses and routes the kernel refused, one line each, to be logged as warnings:
    /// "cannot copy route 203.0.113.0/24 via 198.51.100.1: Network is unreachable".
    pub warnings: Vec<String>,
}

/// Configures the namespace `netns` (from a thread in it, with a netlink socket of its own;
/// unprivileged, join its user namespace first) as pasta does, for the tap `tap_ifindex`:
///
/// - brings `lo` up;
/// - sets the tap's MAC to `config.ns_mac` if given, and returns the tap's MAC either way;
/// - with `config_net` (`--config-net`): sets the MTU to `config.mtu` (if any, and not 0),
///   switches IPv6 duplicate address detection off on the tap (so that its link-local address
///   is usable at once; best effort), brings the tap up, adds each `guest_addrs` of
///   `config.ip4` and `config.ip6` (IPv6 ones `nodad`), then each `guest_routes`.
///
/// Only the first steps are fatal. An address or route the kernel refuses is skipped with a
/// warning; routes are retried while others get in, so that one whose gateway becomes
/// reachable through a route added later still gets in. Existing addresses and routes
/// (EEXIST) are fine.
pub fn configure(
    netns: impl AsFd,
    tap_ifindex: u32,
    config: &Config,
    config_net: bool,
) -> Result<NsConf, NsConfError> {
    in_netns(netns, || configure_here(tap_ifindex, config, config_net))?
}

/// [`configure`], in the calling thread's network namespace.
pub fn configure_here(
    tap_ifindex: u32,
    config: &Config,
    config_net: bool,
) -> Result<NsConf, NsConfError> {
    let mut nl = Netlink::open()?;
    let lo = nl.link_index("lo")?;
    nl.set_link_up(lo, true)?;

    if let Some(mac) = config.ns_mac {
        nl.set_link_mac(tap_ifindex, mac)?;
    }
    let link = nl.link(tap_ifindex)?;
    let mac = link.mac.ok_or_else(|| NsConfError::NoMac {
        ifname: link.name.clone(),
    })?;

    let mut warnings = Vec::new();
    if !config_net {
        return Ok(NsConf { mac, warnings });
    }
    if let Some(mtu) = config.mtu.filter(|&m| m != 0) {
        nl.set_link_mtu(tap_ifindex, mtu.into())?;
    }
    if config.ip6.is_some() {
        static_ipv6(&link.name);
    }
    nl.set_link_up(tap_ifindex, true)?;

    let copied = !config.local_mode;
    let addr_verb = if copied && !config.no_copy_addrs {
        "copy"
    } else {
        "add"
    };
    let route_verb = if copied && !config.no_copy_routes {
        "copy"
    } else {
        "add"
    };

    let addrs: Vec<GuestAddr> = config
        .ip4
        .iter()
        .flat_map(|c| c.guest_addrs.iter().copied())
        .chain(
            config
                .ip6
                .iter()
                .flat_map(|c| c.guest_addrs.iter().copied()),
        )
        .filter(|a| !a.addr.is_unspecified())
        .collect();
    for a in addrs {
        let nodad = matches!(a.addr, IpAddr::V6(_));
        match nl.add_address(tap_ifindex, a.addr, a.prefix_len, nodad) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => warnings.push(format!(
                "cannot {addr_verb} address {}/{}: {}",
                a.addr,
                a.prefix_len,
                e.reason()
            )),
        }
    }

    let routes: Vec<&GuestRoute> = config
        .ip4
        .iter()
        .flat_map(|c| c.guest_routes.iter())
        .chain(config.ip6.iter().flat_map(|c| c.guest_routes.iter()))
        .collect();
    for (route, err) in add_routes(&mut nl, tap_ifindex, &routes) {
        warnings.push(format!(
            "cannot {route_verb} route {}: {}",
            describe_route(route),
            err.reason()
        ));
    }
    Ok(NsConf { mac, warnings })
}

/// Adds `routes` in passes, for as long as a pass gets one in; returns those refused in the
/// last pass, in their order, with the kernel's answer.
fn add_routes<'a>(
    nl: &mut Netlink,
    ifindex: u32,
    routes: &[&'a GuestRoute],
) -> Vec<(&'a GuestRoute, NetlinkError)> {
    let mut pending: Vec<&GuestRoute> = routes.to_vec();
    let mut refused = Vec::new();
    while !pending.is_empty() {
        refused.clear();
        let before = pending.len();
        for route in pending.drain(..) {
            match nl.add_route(ifindex, route) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => refused.push((route, e)),
            }
        }
        if refused.len() == before {
            break;
        }
        pending = refused.iter().map(|(r, _)| *r).collect();
    }
    refused
}

/// Makes IPv6 on `ifname` static, in the calling thread's network namespace (`/proc/sys/net`
/// is that of the thread opening it): no duplicate address detection, so that the link-local
/// address is usable at once, and no router advertisements accepted, because `--config-net`
/// installs the routes and addresses itself (an RA would add a second default route and a
/// SLAAC address beside the copied one). Best effort: without them the namespace still works.
fn static_ipv6(ifname: &str) {
    for (knob, value) in [("accept_dad", "0"), ("accept_ra", "0")] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{ifname}/{knob}"), value);
    }
}
