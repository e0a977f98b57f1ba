//! NDP (RFC 4861): we are the guest's only neighbour and its router.
//!
//! Theory of operation. Everything the guest sends leaves through us, so every neighbour it
//! looks for is us:
//!
//! - A Neighbour Solicitation gets a Neighbour Advertisement naming our MAC for any target,
//!   except the guest's own addresses (answering those would claim its address) and except
//!   Duplicate Address Detection probes (source `::`): the guest is checking that an address
//!   is free, and an answer would make it give the address up (RFC 4862 section 5.4.3).
//! - A Router Solicitation gets a Router Advertisement; the engine's timer also sends the same
//!   advertisement to all nodes every few minutes ([`unsolicited_ra`]). The advertisement
//!   carries our MAC, the MTU, the guest's prefix, and the DNS servers and search list
//!   (RFC 8106) when those are handed out. M and O are set: the address itself, DNS and the
//!   search list also come from our DHCPv6 server (M is clear in local mode: no address).
//! - Advertisements and redirects from the guest are ignored: we have nothing to learn.
//!
//! Before acting on a message we apply the validity checks of RFC 4861 sections 6.1.1 and
//! 7.1.1: hop limit 255 (it was not forwarded by a router), a correct ICMPv6 checksum, code 0,
//! the fixed part present, every option of non-zero length and inside the message.
//!
//! No state is kept: answers are built from the [`Config`] alone, and
//! what the engine learnt in [`GuestState`](crate::guest::GuestState). Parsing and the
//! messages' layout are [`wire::ndp`](crate::wire::ndp)'s; this module decides what to send.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use super::{Ctx, Outcome, MAX_DNS_SERVERS, MAX_DOMAIN_LIST_LEN};
use crate::config::{Config, Ip6Config};
use crate::wire::build::{icmpv6_frame, Route};
use crate::wire::checksum;
use crate::wire::dns_name;
use crate::wire::ndp::{
    self, option_type, NdpError, NdpMessage, ALL_NODES, ALL_NODES_MAC, DNS_OPTION_HEADER_LEN,
    INFINITE, NA_OVERRIDE, NA_ROUTER, NA_SOLICITED, NDP_HOP_LIMIT, PIO_AUTONOMOUS, PIO_ON_LINK,
    RA_MANAGED, RA_OTHER, SLAAC_PREFIX_LEN,
};
use crate::wire::parse::{ip_proto, Ethernet, Ipv6};
use crate::wire::MacAddr;

/// How often we advertise ourselves as a router unprompted (RFC 4861 section 6.2.1 allows
/// 4 to 1800 seconds; the original picks 200 to 600 at random).
pub const RA_INTERVAL_MIN: Duration = Duration::from_secs(200);
pub const RA_INTERVAL_MAX: Duration = Duration::from_secs(600);

/// Cur Hop Limit we advertise for the guest's own packets (Linux's default).
pub const CUR_HOP_LIMIT: u8 = 64;
/// Router Lifetime: RFC 4861 section 6.2.1's maximum, 9000 s. Refreshed by every RA we send.
pub const ROUTER_LIFETIME_SECS: u16 = 9000;
/// RDNSS and DNSSL lifetimes: RFC 8106 section 5.1 asks for at least three times the longest
/// interval between our advertisements, so that two lost ones don't expire them.
pub const DNS_LIFETIME_SECS: u32 = 3 * RA_INTERVAL_MAX.as_secs() as u32;

/// Our RAs fit IPv6's minimum MTU (RFC 8200: 1280 bytes less the 40-byte header), whatever
/// the DNS configuration: servers and domains beyond the bounds DHCPv6 also applies, or that
/// don't fit, are left out.
const MAX_RA_LEN: usize = 1280 - 40;

/// Answers an NDP message from the guest.
pub fn handle(ctx: &mut Ctx, eth: &Ethernet, ip: &Ipv6, icmp: &[u8]) -> Outcome {
    let Some(ip6) = ctx.config.ip6.as_ref() else {
        return Outcome::Ignored;
    };
    // RFC 4861 7.1.1 and 6.1.1: a smaller hop limit means it came through a router.
    if ip.hop_limit != NDP_HOP_LIMIT {
        return Outcome::Malformed(NdpError::HopLimit.into());
    }
    if checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::ICMPV6, icmp) != 0 {
        return Outcome::Malformed(NdpError::Checksum.into());
    }
    let msg = match NdpMessage::parse(icmp) {
        Ok(msg) => msg,
        Err(why) => return Outcome::Malformed(why.into()),
    };
    let from_unspecified = ip.src.is_unspecified();
    match msg {
        NdpMessage::RouterSolicitation { options } => {
            if from_unspecified && options.find(option_type::SOURCE_LL_ADDR).is_some() {
                return Outcome::Malformed(NdpError::RsFromUnspecifiedWithSourceLl.into());
            }
            if !ctx.config.services.ra {
                return Outcome::Ignored;
            }
            // RFC 4861 6.2.6: unicast to the soliciting host when we know its address.
            let (dst, dst_mac) = if from_unspecified {
                (ALL_NODES, ALL_NODES_MAC)
            } else {
                (ip.src, eth.src)
            };
            send_ra(ctx, ip6, dst, dst_mac);
            Outcome::Answered
        }
        NdpMessage::NeighborSolicitation { target, options } => {
            if target.is_multicast() {
                return Outcome::Malformed(NdpError::NsMulticastTarget.into());
            }
            if from_unspecified {
                if options.find(option_type::SOURCE_LL_ADDR).is_some() {
                    return Outcome::Malformed(NdpError::NsFromUnspecifiedWithSourceLl.into());
                }
                // A DAD probe: the guest checks the address is free. Silence says it is.
                return Outcome::Ignored;
            }
            if target.is_unspecified() || is_guest_addr(ctx, ip6, target) {
                return Outcome::Ignored;
            }
            send_na(ctx, ip6, target, ip.src, eth.src);
            Outcome::Answered
        }
        NdpMessage::RouterAdvertisement { .. }
        | NdpMessage::NeighborAdvertisement { .. }
        | NdpMessage::Redirect { .. } => Outcome::Ignored,
    }
}

/// Queues an unsolicited router advertisement to all nodes (RFC 4861 section 6.2.4).
pub fn unsolicited_ra(ctx: &mut Ctx) -> Outcome {
    let Some(ip6) = ctx.config.ip6.as_ref() else {
        return Outcome::Ignored;
    };
    let services = ctx.config.services;
    if !services.ra || !services.ndp {
        return Outcome::Ignored;
    }
    send_ra(ctx, ip6, ALL_NODES, ALL_NODES_MAC);
    Outcome::Answered
}

/// Whether `addr` is the guest's: configured, or seen as the source of its frames.
fn is_guest_addr(ctx: &Ctx, ip6: &Ip6Config, addr: Ipv6Addr) -> bool {
    (!ip6.addr.is_unspecified() && addr == ip6.addr)
        || ctx.guest.addr6 == Some(addr)
        || ctx.guest.addr6_ll == Some(addr)
}

/// Our Neighbour Advertisement for `target` (RFC 4861 section 7.2.4).
fn send_na(ctx: &mut Ctx, ip6: &Ip6Config, target: Ipv6Addr, dst: Ipv6Addr, dst_mac: MacAddr) {
    let flags = NA_ROUTER | NA_SOLICITED | NA_OVERRIDE;
    let m = ndp::neighbor_advertisement(flags, target, ctx.config.our_mac);
    send(ctx, ip6, dst, dst_mac, &m);
}

fn send_ra(ctx: &mut Ctx, ip6: &Ip6Config, dst: Ipv6Addr, dst_mac: MacAddr) {
    let m = router_advertisement(ctx.config, ip6);
    send(ctx, ip6, dst, dst_mac, &m);
}

/// Queues an NDP message from our link-local address.
fn send(ctx: &mut Ctx, ip6: &Ip6Config, dst: Ipv6Addr, dst_mac: MacAddr, message: &[u8]) {
    let route = Route {
        src_mac: ctx.config.our_mac,
        dst_mac,
        src: IpAddr::V6(ip6.our_addr),
        dst: IpAddr::V6(dst),
    };
    icmpv6_frame(ctx.out, route, NDP_HOP_LIMIT, message);
}

/// Our Router Advertisement (RFC 4861 section 4.2), checksum left zero.
fn router_advertisement(config: &Config, ip6: &Ip6Config) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    // Local mode: DHCPv6 has no address to give, only DNS and the search list.
    let managed = if ip6.addr.is_unspecified() {
        0
    } else {
        RA_MANAGED
    };
    ndp::push_ra_header(
        &mut m,
        CUR_HOP_LIMIT,
        managed | RA_OTHER,
        ROUTER_LIFETIME_SECS,
    );
    ndp::push_ll_addr(&mut m, option_type::SOURCE_LL_ADDR, config.our_mac);

    if let Some(mtu) = config.mtu {
        ndp::push_mtu(&mut m, u32::from(mtu));
    }

    // Local mode: no address to derive a prefix from; the guest keeps its link-local one.
    if !ip6.addr.is_unspecified() {
        // A shorter prefix than /64 is on-link as a whole; a longer one (a host's /128) would
        // be useless to SLAAC, so its /64 is what we advertise.
        let len = match ip6.prefix_len {
            1..=SLAAC_PREFIX_LEN => ip6.prefix_len,
            _ => SLAAC_PREFIX_LEN,
        };
        let mask = u128::MAX << (128 - u32::from(len));
        let prefix = Ipv6Addr::from(u128::from(ip6.addr) & mask);
        let flags = PIO_ON_LINK | PIO_AUTONOMOUS;
        ndp::push_prefix_info(&mut m, prefix, len, flags, INFINITE, INFINITE);
    }

    if config.services.dhcp_dns {
        // 16 octets per address after the option's header.
        let room = MAX_RA_LEN.saturating_sub(m.len() + DNS_OPTION_HEADER_LEN) / 16;
        let max = room.min(MAX_DNS_SERVERS);
        let servers: Vec<Ipv6Addr> = config.dns6().take(max).collect();
        if !servers.is_empty() {
            ndp::push_rdnss(&mut m, DNS_LIFETIME_SECS, &servers);
        }
    }

    if config.services.dhcp_search {
        let room = MAX_RA_LEN
            .saturating_sub(m.len() + DNS_OPTION_HEADER_LEN)
            .min(MAX_DOMAIN_LIST_LEN);
        let names = dns_name::encode_list(&config.search, |len| ndp::padded(len) <= room);
        if !names.is_empty() {
            ndp::push_dnssl(&mut m, DNS_LIFETIME_SECS, &names);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_lifetime_is_three_intervals() {
        assert_eq!(DNS_LIFETIME_SECS, 1800);
    }
}
