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
//! No state is kept: answers are built from the [`Config`](crate::config::Config) alone, and
//! what the engine learnt in [`GuestState`](crate::guest::GuestState).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::dhcpv6::{MAX_DNS_SERVERS, MAX_DOMAIN_LIST_LEN};
use super::{Ctx, Outcome};
use crate::config::{Config, Ip6Config};
use crate::engine::RA_INTERVAL_MAX;
use crate::wire::build::{icmpv6_frame, Route};
use crate::wire::dns_name::{self, Names, Pointers};
use crate::wire::parse::{ip_proto, Ethernet, Ipv6, Malformed};
use crate::wire::{checksum, fmt_hex, MacAddr};

/// ICMPv6 message types of NDP (RFC 4861 section 4).
pub mod icmp_type {
    pub const ROUTER_SOLICITATION: u8 = 133;
    pub const ROUTER_ADVERTISEMENT: u8 = 134;
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    pub const REDIRECT: u8 = 137;
}

/// NDP option types (RFC 4861 section 4.6, RFC 7527, RFC 8106).
pub mod option_type {
    pub const SOURCE_LL_ADDR: u8 = 1;
    pub const TARGET_LL_ADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const REDIRECTED_HEADER: u8 = 4;
    pub const MTU: u8 = 5;
    /// Enhanced DAD (RFC 7527): Linux puts one in its DAD probes.
    pub const NONCE: u8 = 14;
    pub const RDNSS: u8 = 25;
    pub const DNSSL: u8 = 31;
}

/// Hop limit of every NDP message, checked on receipt (RFC 4861 sections 6.1.1, 7.1.1).
pub const NDP_HOP_LIMIT: u8 = 255;
/// Cur Hop Limit we advertise for the guest's own packets (Linux's default).
pub const CUR_HOP_LIMIT: u8 = 64;
/// Router Lifetime: RFC 4861 section 6.2.1's maximum, 9000 s. Refreshed by every RA we send.
pub const ROUTER_LIFETIME_SECS: u16 = 9000;
/// RDNSS and DNSSL lifetimes: RFC 8106 section 5.1 asks for at least three times the longest
/// interval between our advertisements, so that two lost ones don't expire them.
pub const DNS_LIFETIME_SECS: u32 = 3 * RA_INTERVAL_MAX.as_secs() as u32;
/// An infinite lifetime (prefixes, RFC 4861 section 4.6.2).
pub const INFINITE: u32 = u32::MAX;

/// RA flags: addresses from DHCPv6 (Managed), other configuration too (Other).
pub const RA_MANAGED: u8 = 0x80;
pub const RA_OTHER: u8 = 0x40;
/// NA flags: we are a router, this answers a solicitation, replace any cached address.
pub const NA_ROUTER: u32 = 0x8000_0000;
pub const NA_SOLICITED: u32 = 0x4000_0000;
pub const NA_OVERRIDE: u32 = 0x2000_0000;
/// Prefix Information flags: on-link, usable for address autoconfiguration.
pub const PIO_ON_LINK: u8 = 0x80;
pub const PIO_AUTONOMOUS: u8 = 0x40;
/// The prefix length SLAAC works with on Ethernet (RFC 4862 section 5.5.3, RFC 2464).
pub const SLAAC_PREFIX_LEN: u8 = 64;

/// All-nodes multicast, where unsolicited RAs go (RFC 4861 section 6.2.4), and its MAC
/// (RFC 2464 section 7: 33:33 then the low 32 bits).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

/// Fixed part lengths, type byte included (RFC 4861 section 4).
const RS_LEN: usize = 8;
const RA_LEN: usize = 16;
const NS_LEN: usize = 24;
const NA_LEN: usize = 24;
const REDIRECT_LEN: usize = 40;
/// Options are sized in units of 8 octets.
const OPTION_UNIT: usize = 8;
/// Our RAs fit IPv6's minimum MTU (RFC 8200: 1280 bytes less the 40-byte header), whatever
/// the DNS configuration: servers and domains beyond the bounds DHCPv6 also applies, or that
/// don't fit, are left out.
const MAX_RA_LEN: usize = 1280 - 40;

/// Whether an ICMPv6 message is NDP (types 133 to 137).
pub fn is_ndp(icmp: &[u8]) -> bool {
    icmp.first().is_some_and(|t| (133..=137).contains(t))
}

/// Answers an NDP message from the guest.
pub fn handle(ctx: &mut Ctx, eth: &Ethernet, ip: &Ipv6, icmp: &[u8]) -> Outcome {
    let Some(ip6) = ctx.config.ip6.as_ref() else {
        return Outcome::Ignored;
    };
    // RFC 4861 7.1.1 and 6.1.1: a smaller hop limit means it came through a router.
    if ip.hop_limit != NDP_HOP_LIMIT {
        return Outcome::Malformed("ndp: hop limit is not 255");
    }
    if checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::ICMPV6, icmp) != 0 {
        return Outcome::Malformed("ndp: bad ICMPv6 checksum");
    }
    let msg = match NdpMessage::parse(icmp) {
        Ok(msg) => msg,
        Err(why) => return Outcome::Malformed(why),
    };
    let from_unspecified = ip.src.is_unspecified();
    match msg {
        NdpMessage::RouterSolicitation { options } => {
            if from_unspecified && options.find(option_type::SOURCE_LL_ADDR).is_some() {
                return Outcome::Malformed("ndp: RS from :: with a source link-layer address");
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
                return Outcome::Malformed("ndp: NS for a multicast target");
            }
            if from_unspecified {
                if options.find(option_type::SOURCE_LL_ADDR).is_some() {
                    return Outcome::Malformed("ndp: NS from :: with a source link-layer address");
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
    let mut m = Vec::with_capacity(NA_LEN + OPTION_UNIT);
    m.extend_from_slice(&[icmp_type::NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    m.extend_from_slice(&(NA_ROUTER | NA_SOLICITED | NA_OVERRIDE).to_be_bytes());
    m.extend_from_slice(&target.octets());
    push_ll_addr(&mut m, option_type::TARGET_LL_ADDR, ctx.config.our_mac);
    let route = Route {
        src_mac: ctx.config.our_mac,
        dst_mac,
        src: IpAddr::V6(ip6.our_addr),
        dst: IpAddr::V6(dst),
    };
    icmpv6_frame(ctx.out, route, NDP_HOP_LIMIT, &m);
}

fn send_ra(ctx: &mut Ctx, ip6: &Ip6Config, dst: Ipv6Addr, dst_mac: MacAddr) {
    let m = router_advertisement(ctx.config, ip6);
    let route = Route {
        src_mac: ctx.config.our_mac,
        dst_mac,
        src: IpAddr::V6(ip6.our_addr),
        dst: IpAddr::V6(dst),
    };
    icmpv6_frame(ctx.out, route, NDP_HOP_LIMIT, &m);
}

/// Our Router Advertisement (RFC 4861 section 4.2), checksum left zero.
fn router_advertisement(config: &Config, ip6: &Ip6Config) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(&[icmp_type::ROUTER_ADVERTISEMENT, 0, 0, 0]);
    // Local mode: DHCPv6 has no address to give, only DNS and the search list.
    let managed = if ip6.addr.is_unspecified() {
        0
    } else {
        RA_MANAGED
    };
    m.extend_from_slice(&[CUR_HOP_LIMIT, managed | RA_OTHER]);
    m.extend_from_slice(&ROUTER_LIFETIME_SECS.to_be_bytes());
    // Reachable Time and Retrans Timer: zero leaves the guest's own defaults.
    m.extend_from_slice(&[0; 8]);
    push_ll_addr(&mut m, option_type::SOURCE_LL_ADDR, config.our_mac);

    if let Some(mtu) = config.mtu {
        m.extend_from_slice(&[option_type::MTU, 1, 0, 0]);
        m.extend_from_slice(&u32::from(mtu).to_be_bytes());
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
        m.extend_from_slice(&[
            option_type::PREFIX_INFO,
            4,
            len,
            PIO_ON_LINK | PIO_AUTONOMOUS,
        ]);
        m.extend_from_slice(&INFINITE.to_be_bytes()); // valid lifetime
        m.extend_from_slice(&INFINITE.to_be_bytes()); // preferred lifetime
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&prefix.octets());
    }

    if config.services.dhcp_dns {
        // RFC 8106 section 5.1: header of 8 octets, then 16 per address.
        let room = MAX_RA_LEN.saturating_sub(m.len() + OPTION_UNIT) / 16;
        let max = room.min(MAX_DNS_SERVERS);
        let servers: Vec<Ipv6Addr> = config.dns6().take(max).collect();
        if !servers.is_empty() {
            let units = 1 + 2 * servers.len();
            m.extend_from_slice(&[option_type::RDNSS, units as u8, 0, 0]);
            m.extend_from_slice(&DNS_LIFETIME_SECS.to_be_bytes());
            for s in servers {
                m.extend_from_slice(&s.octets());
            }
        }
    }

    if config.services.dhcp_search {
        // RFC 8106 section 5.2: names in DNS wire format, uncompressed, zero-padded.
        let room = MAX_RA_LEN
            .saturating_sub(m.len() + OPTION_UNIT)
            .min(MAX_DOMAIN_LIST_LEN);
        let names = dns_name::encode_list(&config.search, |len| padded(len) <= room);
        if !names.is_empty() {
            let len = OPTION_UNIT + padded(names.len());
            m.extend_from_slice(&[option_type::DNSSL, (len / OPTION_UNIT) as u8, 0, 0]);
            m.extend_from_slice(&DNS_LIFETIME_SECS.to_be_bytes());
            m.extend_from_slice(&names);
            m.resize(m.len() + padded(names.len()) - names.len(), 0);
        }
    }
    m
}

/// `len` rounded up to whole option units.
fn padded(len: usize) -> usize {
    len.div_ceil(OPTION_UNIT) * OPTION_UNIT
}

/// A Source or Target Link-Layer Address option for Ethernet (RFC 4861 section 4.6.1).
fn push_ll_addr(m: &mut Vec<u8>, kind: u8, mac: MacAddr) {
    m.extend_from_slice(&[kind, 1]);
    m.extend_from_slice(&mac.0);
}

/// A parsed NDP message: its fixed fields and its (validated) options.
#[derive(Debug, Clone, Copy)]
pub enum NdpMessage<'a> {
    RouterSolicitation {
        options: Options<'a>,
    },
    RouterAdvertisement {
        cur_hop_limit: u8,
        flags: u8,
        router_lifetime: u16,
        reachable_time: u32,
        retrans_timer: u32,
        options: Options<'a>,
    },
    NeighborSolicitation {
        target: Ipv6Addr,
        options: Options<'a>,
    },
    NeighborAdvertisement {
        flags: u32,
        target: Ipv6Addr,
        options: Options<'a>,
    },
    Redirect {
        target: Ipv6Addr,
        destination: Ipv6Addr,
        options: Options<'a>,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

impl<'a> NdpMessage<'a> {
    /// Parses an ICMPv6 NDP message (from its type byte on), checking code, length and
    /// options; the checksum is the caller's, as it needs the IPv6 header.
    pub fn parse(icmp: &'a [u8]) -> Result<NdpMessage<'a>, Malformed> {
        let (&kind, rest) = icmp.split_first().ok_or("ndp: empty message")?;
        let fixed = match kind {
            icmp_type::ROUTER_SOLICITATION => RS_LEN,
            icmp_type::ROUTER_ADVERTISEMENT => RA_LEN,
            icmp_type::NEIGHBOR_SOLICITATION => NS_LEN,
            icmp_type::NEIGHBOR_ADVERTISEMENT => NA_LEN,
            icmp_type::REDIRECT => REDIRECT_LEN,
            _ => return Err("ndp: not an NDP message type"),
        };
        if icmp.len() < fixed {
            return Err("ndp: message shorter than its fixed part");
        }
        if rest.first() != Some(&0) {
            return Err("ndp: code is not 0");
        }
        let options = Options::parse(&icmp[fixed..])?;
        Ok(match kind {
            icmp_type::ROUTER_SOLICITATION => NdpMessage::RouterSolicitation { options },
            icmp_type::ROUTER_ADVERTISEMENT => NdpMessage::RouterAdvertisement {
                cur_hop_limit: icmp[4],
                flags: icmp[5],
                router_lifetime: u16_at(icmp, 6),
                reachable_time: u32_at(icmp, 8),
                retrans_timer: u32_at(icmp, 12),
                options,
            },
            icmp_type::NEIGHBOR_SOLICITATION => NdpMessage::NeighborSolicitation {
                target: v6_at(icmp, 8),
                options,
            },
            icmp_type::NEIGHBOR_ADVERTISEMENT => NdpMessage::NeighborAdvertisement {
                flags: u32_at(icmp, 4),
                target: v6_at(icmp, 8),
                options,
            },
            _ => NdpMessage::Redirect {
                target: v6_at(icmp, 8),
                destination: v6_at(icmp, 24),
                options,
            },
        })
    }

    pub fn options(&self) -> Options<'a> {
        match *self {
            NdpMessage::RouterSolicitation { options }
            | NdpMessage::RouterAdvertisement { options, .. }
            | NdpMessage::NeighborSolicitation { options, .. }
            | NdpMessage::NeighborAdvertisement { options, .. }
            | NdpMessage::Redirect { options, .. } => options,
        }
    }
}

/// NDP options whose lengths were checked: each non-zero and inside the message.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a>(&'a [u8]);

/// One NDP option: its type and the octets after the type and length fields.
#[derive(Debug, Clone, Copy)]
pub struct NdpOption<'a> {
    pub kind: u8,
    pub data: &'a [u8],
}

impl<'a> Options<'a> {
    /// Checks option lengths (RFC 4861 section 4.6: zero is invalid).
    pub fn parse(mut b: &'a [u8]) -> Result<Options<'a>, Malformed> {
        let all = b;
        while !b.is_empty() {
            let len = match b.get(1) {
                Some(0) => return Err("ndp: option of zero length"),
                Some(&units) => usize::from(units) * OPTION_UNIT,
                None => return Err("ndp: truncated option"),
            };
            if len > b.len() {
                return Err("ndp: option beyond the message");
            }
            b = &b[len..];
        }
        Ok(Options(all))
    }

    pub fn iter(&self) -> impl Iterator<Item = NdpOption<'a>> {
        let mut b = self.0;
        std::iter::from_fn(move || {
            let units = usize::from(*b.get(1)?);
            let len = units * OPTION_UNIT;
            if units == 0 || len > b.len() {
                return None; // not after Options::parse; ends the walk regardless
            }
            let opt = NdpOption {
                kind: b[0],
                data: &b[2..len],
            };
            b = &b[len..];
            Some(opt)
        })
    }

    pub fn find(&self, kind: u8) -> Option<NdpOption<'a>> {
        self.iter().find(|o| o.kind == kind)
    }
}

/// A lifetime in seconds, "infinite" for all ones (NDP and DHCPv6 alike).
pub(crate) struct Lifetime(pub(crate) u32);

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == INFINITE {
            f.write_str("infinite")
        } else {
            write!(f, "{} s", self.0)
        }
    }
}

/// Named bits of a flags field, e.g. "0xc0 (M O)", "0x0 (none)".
pub(crate) fn fmt_flags(
    f: &mut fmt::Formatter<'_>,
    value: u32,
    names: &[(u32, &str)],
) -> fmt::Result {
    write!(f, "{value:#x} (")?;
    if value == 0 {
        f.write_str("none")?;
    }
    let mut first = true;
    for &(bit, name) in names {
        if value & bit != 0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
            first = false;
        }
    }
    f.write_str(")")
}

impl fmt::Display for NdpMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NdpMessage::RouterSolicitation { .. } => f.write_str("router solicitation")?,
            NdpMessage::RouterAdvertisement {
                cur_hop_limit,
                flags,
                router_lifetime,
                reachable_time,
                retrans_timer,
                ..
            } => {
                write!(
                    f,
                    "router advertisement: cur hop limit {cur_hop_limit}, flags "
                )?;
                // H: home agent (RFC 6275), P: proxied (RFC 4389); never ours.
                let names = [
                    (RA_MANAGED.into(), "M"),
                    (RA_OTHER.into(), "O"),
                    (0x20, "H"),
                    (0x04, "P"),
                ];
                fmt_flags(f, flags.into(), &names)?;
                write!(
                    f,
                    ", router lifetime {router_lifetime} s, reachable time {reachable_time} ms, \
                     retrans timer {retrans_timer} ms"
                )?;
            }
            NdpMessage::NeighborSolicitation { target, .. } => {
                write!(f, "neighbour solicitation for {target}")?
            }
            NdpMessage::NeighborAdvertisement { flags, target, .. } => {
                write!(f, "neighbour advertisement for {target}, flags ")?;
                let names = [(NA_ROUTER, "R"), (NA_SOLICITED, "S"), (NA_OVERRIDE, "O")];
                fmt_flags(f, flags, &names)?;
            }
            NdpMessage::Redirect {
                target,
                destination,
                ..
            } => write!(f, "redirect to {target} for {destination}")?,
        }
        for opt in self.options().iter() {
            write!(f, "\n  {opt}")?;
        }
        Ok(())
    }
}

impl fmt::Display for NdpOption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.data;
        match self.kind {
            option_type::SOURCE_LL_ADDR | option_type::TARGET_LL_ADDR if d.len() == 6 => {
                let name = if self.kind == option_type::SOURCE_LL_ADDR {
                    "source"
                } else {
                    "target"
                };
                let mut mac = [0u8; 6];
                mac.copy_from_slice(d);
                write!(f, "{name} link-layer address: {}", MacAddr(mac))
            }
            option_type::PREFIX_INFO if d.len() == 30 => {
                write!(f, "prefix information: {}/{}, flags ", v6_at(d, 14), d[0])?;
                // R: router address (RFC 6275); never ours.
                let names = [
                    (PIO_ON_LINK.into(), "L"),
                    (PIO_AUTONOMOUS.into(), "A"),
                    (0x20, "R"),
                ];
                fmt_flags(f, d[1].into(), &names)?;
                write!(
                    f,
                    ", valid lifetime {}, preferred lifetime {}",
                    Lifetime(u32_at(d, 2)),
                    Lifetime(u32_at(d, 6))
                )
            }
            option_type::MTU if d.len() == 6 => write!(f, "MTU: {}", u32_at(d, 2)),
            option_type::NONCE => {
                f.write_str("nonce: ")?;
                fmt_hex(f, d)
            }
            option_type::RDNSS if d.len() >= 22 && (d.len() - 6) % 16 == 0 => {
                write!(
                    f,
                    "recursive DNS servers: lifetime {}",
                    Lifetime(u32_at(d, 2))
                )?;
                for a in d[6..].chunks_exact(16) {
                    write!(f, ", {}", v6_at(a, 0))?;
                }
                Ok(())
            }
            option_type::DNSSL if d.len() >= 6 => {
                let names = Names::new(&d[6..], Pointers::Refused).padded();
                write!(
                    f,
                    "DNS search list: lifetime {}, {names}",
                    Lifetime(u32_at(d, 2))
                )
            }
            kind => {
                write!(f, "option {kind} ({} octets): ", d.len() + 2)?;
                fmt_hex(f, d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reject_zero_length_and_overrun() {
        assert!(Options::parse(&[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Options::parse(&[1, 2, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Options::parse(&[1]).is_err());
        assert_eq!(
            Options::parse(&[1, 1, 1, 2, 3, 4, 5, 6])
                .unwrap()
                .iter()
                .count(),
            1
        );
    }

    #[test]
    fn dns_lifetime_is_three_intervals() {
        assert_eq!(DNS_LIFETIME_SECS, 1800);
    }

    #[test]
    fn padding_rounds_up_to_units() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 8);
        assert_eq!(padded(8), 8);
        assert_eq!(padded(13), 16);
    }
}
