//! The kernel's answers to dumps, decoded: pure functions over raw bytes (the fuzzer's and
//! the canned dumps' entry points), each message checked against the bytes around it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeader};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteLwEnCapType, RouteMetric,
    RouteNextHop, RouteVia,
};
use netlink_packet_route::AddressFamily;
use sans_io::config::host::{HostAddr, HostLink, HostNet, HostRoute, NextHop};
use sans_io::wire::MacAddr;

use super::{uapi, Dump, NetlinkError};

/// One netlink message header, checked against the bytes around it.
pub(super) struct Frame<'a> {
    pub(super) len: usize,
    pub(super) kind: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

pub(super) fn align4(len: usize) -> usize {
    (len + 3) & !3
}

pub(super) fn malformed(dump: Dump, offset: usize, what: impl fmt::Display) -> NetlinkError {
    NetlinkError::Malformed {
        dump,
        offset,
        what: what.to_string(),
    }
}

pub(super) fn frame_at(dump: Dump, buf: &[u8], offset: usize) -> Result<Frame<'_>, NetlinkError> {
    let nl = NetlinkBuffer::new_checked(&buf[offset..]).map_err(|e| malformed(dump, offset, e))?;
    Ok(Frame {
        len: nl.length() as usize,
        kind: nl.message_type(),
        flags: nl.flags(),
        seq: nl.sequence_number(),
        payload: nl.payload(),
    })
}

/// NLMSG_ERROR: an error code of 0 is an acknowledgement, anything else fails the dump.
pub(super) fn check_error(dump: Dump, payload: &[u8], offset: usize) -> Result<(), NetlinkError> {
    let err = ErrorBuffer::new_checked(&payload).map_err(|e| malformed(dump, offset, e))?;
    match err.code() {
        None => Ok(()),
        Some(code) => Err(NetlinkError::Kernel {
            dump,
            errno: code.get().checked_neg().unwrap_or(i32::MAX),
        }),
    }
}

/// Walks the messages of one or more dump answers, each ended by NLMSG_DONE, and hands each
/// message of the expected type to `each`, with its payload and offset.
pub(super) fn walk<T>(
    dump: Dump,
    buf: &[u8],
    expected: u16,
    mut each: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<Vec<T>, NetlinkError> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut done = false;
    while offset < buf.len() {
        let frame = frame_at(dump, buf, offset)?;
        if frame.kind != NLMSG_NOOP {
            done = frame.kind == NLMSG_DONE;
        }
        match frame.kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // A dump that failed half-way ends with a negative errno in NLMSG_DONE.
                if let Ok(d) = DoneBuffer::new_checked(&frame.payload) {
                    if d.code() < 0 {
                        return Err(NetlinkError::Kernel {
                            dump,
                            errno: d.code().checked_neg().unwrap_or(i32::MAX),
                        });
                    }
                }
            }
            NLMSG_ERROR => check_error(dump, frame.payload, offset)?,
            NLMSG_OVERRUN => return Err(malformed(dump, offset, "NLMSG_OVERRUN")),
            kind if kind == expected => {
                if let Some(item) = each(frame.payload).map_err(|e| malformed(dump, offset, e))? {
                    out.push(item);
                }
            }
            kind => {
                return Err(malformed(
                    dump,
                    offset,
                    format!("unexpected message type {kind}"),
                ))
            }
        }
        offset += align4(frame.len);
    }
    if !done {
        return Err(malformed(
            dump,
            buf.len(),
            "answer does not end with NLMSG_DONE",
        ));
    }
    Ok(out)
}

/// The attributes of a message, after its fixed header of `header_len` bytes.
pub(super) fn attributes(
    payload: &[u8],
    header_len: usize,
) -> Result<Vec<NlaBuffer<&[u8]>>, String> {
    let Some(attrs) = payload.get(header_len..) else {
        return Err(format!("message shorter than its {header_len}-byte header"));
    };
    NlasIterator::new(attrs)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad attribute: {e}"))
}

/// RTM_NEWLINK messages from a link dump.
pub fn parse_links(buf: &[u8]) -> Result<Vec<HostLink>, NetlinkError> {
    walk(Dump::Links, buf, uapi::RTM_NEWLINK, |p| {
        decode_link(p).map(Some)
    })
}

pub(super) fn decode_link(payload: &[u8]) -> Result<HostLink, String> {
    use uapi::*;
    let header = LinkHeader::parse(payload).map_err(|e| e.to_string())?;
    let (mut name, mut mtu, mut mac) = (None, None, None);
    for nla in attributes(payload, IFINFOMSG_LEN)? {
        match nla.kind() {
            // Interface names are bytes to the kernel; don't let a non-UTF-8 one hide a link.
            IFLA_IFNAME => {
                let raw = nla.value().split(|&b| b == 0).next().unwrap_or_default();
                name = Some(String::from_utf8_lossy(raw).into_owned());
            }
            IFLA_MTU | IFLA_ADDRESS => {
                match LinkAttribute::parse_with_param(&nla, header.interface_family)
                    .map_err(|e| e.to_string())?
                {
                    LinkAttribute::Mtu(m) => mtu = Some(m),
                    LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a).ok().map(MacAddr),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let index = header.index;
    Ok(HostLink {
        index,
        name: name.ok_or_else(|| format!("link {index} without IFLA_IFNAME"))?,
        mac,
        mtu: mtu.ok_or_else(|| format!("link {index} without IFLA_MTU"))?,
        up: header.flags.contains(LinkFlags::Up),
        loopback: header.flags.contains(LinkFlags::Loopback),
    })
}

/// IPv4 and IPv6 addresses (RTM_NEWADDR) from an address dump; other families are skipped.
pub fn parse_addrs(buf: &[u8]) -> Result<Vec<HostAddr>, NetlinkError> {
    walk(Dump::Addrs, buf, uapi::RTM_NEWADDR, decode_addr)
}

pub(super) fn decode_addr(payload: &[u8]) -> Result<Option<HostAddr>, String> {
    use uapi::*;
    let header = AddressHeader::parse(payload).map_err(|e| e.to_string())?;
    let max_len = match header.family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return Ok(None),
    };
    let (mut address, mut local, mut flags) = (None, None, None);
    for nla in attributes(payload, IFADDRMSG_LEN)? {
        if !matches!(nla.kind(), IFA_ADDRESS | IFA_LOCAL | IFA_FLAGS) {
            continue;
        }
        match AddressAttribute::parse(&nla).map_err(|e| e.to_string())? {
            AddressAttribute::Address(a) => address = Some(a),
            AddressAttribute::Local(a) => local = Some(a),
            AddressAttribute::Flags(f) => flags = Some(f.bits()),
            _ => {}
        }
    }
    let addr = match header.family {
        AddressFamily::Inet => local.or(address),
        _ => address,
    }
    .ok_or_else(|| format!("address on link {} without IFA_ADDRESS", header.index))?;
    if addr.is_ipv4() != (header.family == AddressFamily::Inet) || header.prefix_len > max_len {
        return Err(format!(
            "address {addr}/{} of the wrong family",
            header.prefix_len
        ));
    }
    Ok(Some(HostAddr {
        ifindex: header.index,
        addr,
        prefix_len: header.prefix_len,
        scope: header.scope.into(),
        flags: flags.unwrap_or(u32::from(header.flags.bits())),
    }))
}

/// Routes of the main table (RTM_NEWROUTE) from route dumps, in the kernel's order. Other
/// tables, other families and cloned (cache, exception) routes are skipped.
pub fn parse_routes(buf: &[u8]) -> Result<Vec<HostRoute>, NetlinkError> {
    walk(Dump::Routes, buf, uapi::RTM_NEWROUTE, decode_route)
}

pub(super) fn route_ip(addr: RouteAddress) -> Result<IpAddr, String> {
    match addr {
        RouteAddress::Inet(a) => Ok(a.into()),
        RouteAddress::Inet6(a) => Ok(a.into()),
        other => Err(format!("not an IP address: {other:?}")),
    }
}

/// An IPv4 route may go through an IPv6 gateway (RTA_VIA); MPLS vias are ignored.
pub(super) fn via_ip(via: RouteVia) -> Option<IpAddr> {
    match via {
        RouteVia::Inet(a) => Some(a.into()),
        RouteVia::Inet6(a) => Some(a.into()),
        _ => None,
    }
}

pub(super) fn leg(hop: RouteNextHop) -> Result<NextHop, String> {
    let mut gateway = None;
    for attr in hop.attributes {
        match attr {
            RouteAttribute::Gateway(a) => gateway = Some(route_ip(a)?),
            RouteAttribute::Via(v) => gateway = via_ip(v),
            _ => {}
        }
    }
    Ok(NextHop {
        gateway,
        oif: (hop.interface_index != 0).then_some(hop.interface_index),
    })
}

pub(super) fn decode_route(payload: &[u8]) -> Result<Option<HostRoute>, String> {
    use uapi::*;
    let header = RouteHeader::parse(payload).map_err(|e| e.to_string())?;
    let (unspecified, max_len): (IpAddr, u8) = match header.address_family {
        AddressFamily::Inet => (Ipv4Addr::UNSPECIFIED.into(), 32),
        AddressFamily::Inet6 => (Ipv6Addr::UNSPECIFIED.into(), 128),
        _ => return Ok(None),
    };
    if header.flags.contains(RouteFlags::Cloned) {
        return Ok(None);
    }
    if header.destination_prefix_length > max_len {
        return Err(format!(
            "prefix length {}",
            header.destination_prefix_length
        ));
    }
    let nlas = attributes(payload, RTMSG_LEN)?;
    // rtm_table holds tables up to 255; RTA_TABLE, when present, is the whole truth.
    let mut table = u32::from(header.table);
    for nla in nlas.iter().filter(|n| n.kind() == RTA_TABLE) {
        table = netlink_packet_core::parse_u32(nla.value()).map_err(|e| e.to_string())?;
    }
    if table != RT_TABLE_MAIN {
        return Ok(None);
    }

    let mut route = HostRoute {
        dst: unspecified,
        dst_len: header.destination_prefix_length,
        nexthops: Vec::new(),
        priority: 0,
        protocol: header.protocol.into(),
        scope: header.scope.into(),
        kind: header.kind.into(),
        pref_src: None,
        mtu: None,
    };
    let mut single = NextHop {
        gateway: None,
        oif: None,
    };
    let mut multipath = None;
    let param = (header.address_family, header.kind, RouteLwEnCapType::None);
    for nla in nlas {
        if !matches!(
            nla.kind(),
            RTA_DST
                | RTA_OIF
                | RTA_GATEWAY
                | RTA_PRIORITY
                | RTA_PREFSRC
                | RTA_METRICS
                | RTA_MULTIPATH
                | RTA_VIA
        ) {
            continue;
        }
        match RouteAttribute::parse_with_param(&nla, param).map_err(|e| e.to_string())? {
            RouteAttribute::Destination(a) => route.dst = route_ip(a)?,
            RouteAttribute::Oif(i) => single.oif = Some(i),
            RouteAttribute::Gateway(a) => single.gateway = Some(route_ip(a)?),
            RouteAttribute::Via(v) => single.gateway = via_ip(v),
            RouteAttribute::Priority(p) => route.priority = p,
            RouteAttribute::PrefSource(a) => route.pref_src = Some(route_ip(a)?),
            RouteAttribute::Metrics(metrics) => {
                for m in metrics {
                    if let RouteMetric::Mtu(mtu) = m {
                        route.mtu = Some(mtu);
                    }
                }
            }
            RouteAttribute::MultiPath(hops) => {
                multipath = Some(hops.into_iter().map(leg).collect::<Result<Vec<_>, _>>()?)
            }
            _ => {}
        }
    }
    if route.dst.is_ipv4() != unspecified.is_ipv4() {
        return Err(format!("destination {} of the wrong family", route.dst));
    }
    route.nexthops = multipath.unwrap_or_else(|| vec![single]);
    Ok(Some(route))
}

/// Parses the raw answers to the link, address and route dumps (see [`super::Netlink::dump_raw`]).
pub fn parse_dump(links: &[u8], addrs: &[u8], routes: &[u8]) -> Result<HostNet, NetlinkError> {
    Ok(HostNet {
        links: parse_links(links)?,
        addrs: parse_addrs(addrs)?,
        routes: parse_routes(routes)?,
    })
}
