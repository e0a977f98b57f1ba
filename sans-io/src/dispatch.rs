//! Where a guest frame goes: to a configuration service (ARP, DHCP, NDP, DHCPv6), to a
//! transport translation (TCP, UDP, ICMP echo), or nowhere (ignored or malformed). Decided
//! from the frame's headers and the configuration alone; the engine then does it.
//!
//! Both IP families share one transport dispatch over the family-neutral [`IpPacket`]; only
//! what truly differs is per family: what the guest's source address teaches us
//! ([`GuestState::learn_source`]) and the services that answer in place of a flow, which need
//! their family's header view (NDP ahead of ICMPv6 echo, DHCP on UDP port 67 over IPv4,
//! DHCPv6 on 547 over IPv6).
//!
//! Every guest frame comes through here, so the small functions on its way (these, the packet
//! view, the TCP header parser, the guest's address learning) are `#[inline]`: split into
//! other codegen units, a TCP segment took ~8% longer to dispatch (a frames-only
//! micro-benchmark, release build).

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Services};
use crate::fwd::forwards::Forwards;
use crate::guest::GuestState;
use crate::wire::external::{ExternalPayload, GuestFrame};
use crate::wire::parse::{self, ethertype, Ethernet, Ip, IpPacket, Ipv4, Ipv6, Transport, Udp};
use crate::wire::tcp::{self as wtcp, Segment, TcpError};
use crate::wire::{self, Malformed};

/// Who takes a guest frame, with the views of it they read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Destination<'a> {
    Arp(Ethernet<'a>),
    Dhcp(Ethernet<'a>, Ipv4<'a>, Udp<'a>),
    /// An NDP message: the ICMPv6 bytes are the header view's payload.
    Ndp(Ethernet<'a>, Ipv6<'a>),
    Dhcpv6(Ethernet<'a>, Ipv6<'a>, Udp<'a>),
    Tcp {
        src: IpAddr,
        dst: IpAddr,
        segment: Segment<'a>,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// An ICMP or ICMPv6 message no service took: the echo translation reads it.
    Icmp {
        src: IpAddr,
        dst: IpAddr,
        message: &'a [u8],
    },
    /// Well-formed, but nothing here wants it (a disabled family, another ethertype or
    /// transport protocol, a fragment of anything but TCP).
    Unhandled,
    Malformed(Malformed),
}

/// Whether `frame` would teach us a MAC address for the guest other than the one we know.
#[inline]
pub(crate) fn changes_guest_mac(frame: &[u8], guest: &GuestState) -> bool {
    let Some(src) = frame.get(6..12) else {
        return false;
    };
    guest.mac.is_none_or(|known| known.0 != src)
        && parse::ethernet(frame).is_ok_and(|eth| eth.src.is_unicast())
}

/// Where `frame` goes, learning the guest's MAC and IP addresses from it on the way (from
/// every frame whose headers got that far, whatever happens to it next), but for frames from
/// the target address of a forwarding rule: the namespace routes those from a peer of its
/// own (a container on a bridge), whose address is not the guest's.
#[inline]
pub(crate) fn route<'a>(
    frame: GuestFrame<'a>,
    config: &Config,
    forwards: &Forwards,
    guest: &mut GuestState,
) -> Destination<'a> {
    let eth = match parse::ethernet(frame.head) {
        Ok(eth) => eth,
        Err(why) => return Destination::Malformed(why.into()),
    };
    guest.learn_mac(eth.src);
    let rest_len = frame.rest.map_or(0, |r| r.len);
    let ip = match eth.ethertype {
        ethertype::ARP if config.ip4.is_some() => return Destination::Arp(eth),
        ethertype::IPV4 if config.ip4.is_some() => parse::ipv4_with_rest(eth.payload, rest_len)
            .map(|(ip, in_rest)| (Ip::V4(ip), in_rest))
            .map_err(Malformed::from),
        ethertype::IPV6 if config.ip6.is_some() => parse::ipv6_with_rest(eth.payload, rest_len)
            .map(|(ip, in_rest)| (Ip::V6(ip), in_rest))
            .map_err(Malformed::from),
        _ => return Destination::Unhandled,
    };
    let (ip, in_rest) = match ip {
        Ok(ip) => ip,
        Err(why) => return Destination::Malformed(why),
    };
    if !forwards.is_target(ip.src()) {
        guest.learn_source(ip.src());
    }
    let rest = frame.rest.filter(|_| in_rest > 0).map(|r| r.take(in_rest));
    transport(eth, ip, config.services, rest)
}

/// The one transport dispatch, for both families. `rest`: the part of the packet a link left
/// in place, which only TCP payload may be (the link copies any other frame whole), so a
/// packet with one is TCP or not ours.
#[inline]
fn transport<'a>(
    eth: Ethernet<'a>,
    ip: Ip<'a>,
    services: Services,
    rest: Option<ExternalPayload>,
) -> Destination<'a> {
    let IpPacket {
        src,
        dst,
        transport,
        fragmented,
        payload,
    } = ip.packet();
    match transport {
        // We don't reassemble, and guests don't fragment TCP: a fragment is an error where
        // other protocols' fragments are only not ours.
        Transport::Tcp if fragmented => Destination::Malformed(TcpError::Fragmented.into()),
        // With a rest, the header is within the copied head, as the link made sure.
        Transport::Tcp => match wtcp::parse(payload) {
            Ok(segment) => Destination::Tcp {
                src,
                dst,
                segment: Segment { rest, ..segment },
            },
            Err(why) => Destination::Malformed(why.into()),
        },
        _ if rest.is_some() => Destination::Unhandled,
        Transport::Icmp => match icmp_service(eth, ip, services) {
            Some(service) => service,
            None if fragmented => Destination::Unhandled,
            None => Destination::Icmp {
                src,
                dst,
                message: payload,
            },
        },
        Transport::Udp if fragmented => Destination::Unhandled,
        Transport::Udp => {
            let udp = match parse::udp(payload) {
                Ok(udp) => udp,
                Err(why) => return Destination::Malformed(why.into()),
            };
            match udp_service(eth, ip, udp, services) {
                Some(service) => service,
                None => Destination::Udp {
                    src: SocketAddr::new(src, udp.src_port),
                    dst: SocketAddr::new(dst, udp.dst_port),
                    payload: udp.payload,
                },
            }
        }
        Transport::Other(_) => Destination::Unhandled,
    }
}

/// The service that answers an ICMP message in place of the echo translation: NDP, over
/// IPv6, whole messages only (RFC 6980: NDP in fragments is dropped).
#[inline]
fn icmp_service<'a>(eth: Ethernet<'a>, ip: Ip<'a>, services: Services) -> Option<Destination<'a>> {
    match ip {
        Ip::V6(ip) if services.ndp && !ip.fragmented && wire::ndp::is_ndp(ip.payload) => {
            Some(Destination::Ndp(eth, ip))
        }
        _ => None,
    }
}

/// The service that answers a UDP datagram in place of a flow: DHCP over IPv4, DHCPv6 over
/// IPv6, each on its server port.
#[inline]
fn udp_service<'a>(
    eth: Ethernet<'a>,
    ip: Ip<'a>,
    udp: Udp<'a>,
    services: Services,
) -> Option<Destination<'a>> {
    match ip {
        Ip::V4(ip) if udp.dst_port == wire::dhcp::SERVER_PORT && services.dhcp => {
            Some(Destination::Dhcp(eth, ip, udp))
        }
        Ip::V6(ip) if udp.dst_port == wire::dhcpv6::SERVER_PORT && services.dhcpv6 => {
            Some(Destination::Dhcpv6(eth, ip, udp))
        }
        _ => None,
    }
}
