//! Requests that change links, addresses and routes, built as `ip` would build them, and the
//! kernel's acknowledgements of them. Pure: [`super::Netlink`] sends and receives.

use std::net::IpAddr;

use netlink_packet_core::{ErrorBuffer, NlasIterator, NLM_F_ACK_TLVS, NLM_F_CAPPED};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteScope, RouteType,
    RouteVia,
};
use netlink_packet_route::AddressFamily;
use sans_io::config::{GuestRoute, IpFamily};

use super::decode::align4;

/// `NLMSGERR_ATTR_MSG` (`linux/netlink.h`): the kernel's extended-ack text.
pub(super) const NLMSGERR_ATTR_MSG: u16 = 1;
/// `RTPROT_BOOT`: what `ip route add` marks its routes with.
pub(super) const RTPROT_BOOT: u8 = 3;

/// An NLMSG_ERROR payload: `None` for an acknowledgement, else the errno and the kernel's
/// extended-ack message (`NETLINK_EXT_ACK`), when it gave one.
pub(super) fn parse_ack(
    flags: u16,
    payload: &[u8],
) -> Result<Option<(i32, Option<String>)>, String> {
    let err = ErrorBuffer::new_checked(&payload).map_err(|e| e.to_string())?;
    let Some(code) = err.code() else {
        return Ok(None);
    };
    let errno = code.get().checked_neg().unwrap_or(i32::MAX);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // struct nlmsgerr: the error, then the request's header, then (unless capped) the
        // request's payload; the attributes follow.
        let echoed = payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(0);
        let skip = if flags & NLM_F_CAPPED != 0 {
            4 + 16
        } else {
            4 + align4(echoed.max(16))
        };
        for nla in NlasIterator::new(payload.get(skip..).unwrap_or_default()).flatten() {
            if nla.kind() == NLMSGERR_ATTR_MSG {
                let raw = nla.value().split(|&b| b == 0).next().unwrap_or_default();
                if !raw.is_empty() {
                    message = Some(String::from_utf8_lossy(raw).into_owned());
                }
            }
        }
    }
    Ok(Some((errno, message)))
}

pub(super) fn link_up_message(ifindex: u32, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.header.change_mask = LinkFlags::Up;
    msg.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    msg
}

pub(super) fn check_prefix(addr: IpAddr, prefix_len: u8) -> Result<AddressFamily, String> {
    let (family, max) = match addr {
        IpAddr::V4(_) => (AddressFamily::Inet, 32),
        IpAddr::V6(_) => (AddressFamily::Inet6, 128),
    };
    if prefix_len > max {
        return Err(format!("prefix length {prefix_len} is over {max}"));
    }
    Ok(family)
}

/// RTM_NEWADDR for `addr/prefix_len` on `ifindex`, scoped as `ip address add` would.
pub(super) fn address_message(
    ifindex: u32,
    addr: IpAddr,
    prefix_len: u8,
    nodad: bool,
) -> Result<AddressMessage, String> {
    let family = check_prefix(addr, prefix_len)?;
    let mut msg = AddressMessage::default();
    msg.header.family = family;
    msg.header.prefix_len = prefix_len;
    msg.header.index = ifindex;
    msg.header.scope = match addr {
        IpAddr::V4(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if a.is_loopback() => AddressScope::Host,
        IpAddr::V6(a) if IpFamily::is_link_local(&a) => AddressScope::Link,
        _ => AddressScope::Universe,
    };
    let mut flags = AddressFlags::empty();
    if nodad {
        flags |= AddressFlags::Nodad;
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    msg.attributes.push(AddressAttribute::Flags(flags));
    Ok(msg)
}

/// RTM_NEWROUTE for `route` through `ifindex`, in the main table.
pub(super) fn route_message(ifindex: u32, route: &GuestRoute) -> Result<RouteMessage, String> {
    let family = check_prefix(route.dst, route.dst_len)?;
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = route.dst_len;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RTPROT_BOOT.into();
    msg.header.kind = RouteType::Unicast;
    // Like `ip route add`: an IPv4 route without a gateway is on the link.
    msg.header.scope = match (route.dst, route.gateway) {
        (IpAddr::V4(_), None) => RouteScope::Link,
        _ => RouteScope::Universe,
    };
    if route.dst_len > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(route.dst)));
    }
    match route.gateway {
        None => {}
        Some(gw) if gw.is_ipv4() == route.dst.is_ipv4() => msg
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw))),
        Some(IpAddr::V6(gw)) => msg
            .attributes
            .push(RouteAttribute::Via(RouteVia::Inet6(gw))),
        Some(IpAddr::V4(gw)) => {
            return Err(format!("IPv4 gateway {gw} for an IPv6 destination"));
        }
    }
    msg.attributes.push(RouteAttribute::Oif(ifindex));
    if route.priority != 0 {
        msg.attributes
            .push(RouteAttribute::Priority(route.priority));
    }
    if let Some(mtu) = route.mtu {
        msg.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
    }
    Ok(msg)
}

/// A route as `ip route` would show it: "default via 192.0.2.1", "203.0.113.0/24 via
/// 198.51.100.1 metric 100", "192.0.2.0/24 mtu 1400".
pub fn describe_route(route: &GuestRoute) -> String {
    let mut out = if route.dst_len == 0 && route.dst.is_unspecified() {
        "default".to_owned()
    } else {
        format!("{}/{}", route.dst, route.dst_len)
    };
    if let Some(gw) = route.gateway {
        out += &format!(" via {gw}");
    }
    if route.priority != 0 {
        out += &format!(" metric {}", route.priority);
    }
    if let Some(mtu) = route.mtu {
        out += &format!(" mtu {mtu}");
    }
    out
}
