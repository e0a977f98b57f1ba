//! NDP messages (RFC 4861 section 4, options RFC 4861 section 4.6, RFC 7527, RFC 8106):
//! parsing with the validity checks of sections 6.1.1 and 7.1.1 that need no IPv6 header,
//! writers for the messages and options we send, and a readable dump (`Display`).
//!
//! What we answer, and with which values, is [`services::ndp`](crate::services::ndp)'s.

use std::fmt;
use std::net::Ipv6Addr;

use super::dns_name::{Names, Pointers};
use super::{fmt_flags, fmt_hex, Lifetime, MacAddr, INFINITE_LIFETIME};

/// Why an NDP message fails the validity checks of RFC 4861 sections 6.1.1 and 7.1.1 (the
/// ones that need the IPv6 header or the sender's address included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NdpError {
    #[error("empty message")]
    Empty,
    #[error("not an NDP message type")]
    NotNdp,
    #[error("message shorter than its fixed part")]
    Short,
    #[error("code is not 0")]
    CodeNotZero,
    #[error("option of zero length")]
    ZeroLengthOption,
    #[error("truncated option")]
    OptionTruncated,
    #[error("option beyond the message")]
    OptionOverrun,
    #[error("hop limit is not 255")]
    HopLimit,
    #[error("bad ICMPv6 checksum")]
    Checksum,
    #[error("RS from :: with a source link-layer address")]
    RsFromUnspecifiedWithSourceLl,
    #[error("NS for a multicast target")]
    NsMulticastTarget,
    #[error("NS from :: with a source link-layer address")]
    NsFromUnspecifiedWithSourceLl,
}

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
/// An infinite lifetime (prefixes, RFC 4861 section 4.6.2).
pub const INFINITE: u32 = INFINITE_LIFETIME;

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
pub const OPTION_UNIT: usize = 8;
/// An RDNSS or DNSSL option before its addresses or names (RFC 8106 sections 5.1, 5.2).
pub const DNS_OPTION_HEADER_LEN: usize = 8;

/// Whether an ICMPv6 message is NDP (types 133 to 137).
pub fn is_ndp(icmp: &[u8]) -> bool {
    icmp.first().is_some_and(|t| (133..=137).contains(t))
}

// --- Writing: messages with their checksum left zero, for `build::icmpv6_frame` ---

/// A Neighbour Advertisement for `target` with a Target Link-Layer Address option
/// (RFC 4861 section 4.4).
pub fn neighbor_advertisement(flags: u32, target: Ipv6Addr, mac: MacAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(NA_LEN + OPTION_UNIT);
    m.extend_from_slice(&[icmp_type::NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&target.octets());
    push_ll_addr(&mut m, option_type::TARGET_LL_ADDR, mac);
    m
}

/// The fixed part of a Router Advertisement (RFC 4861 section 4.2). Reachable Time and
/// Retrans Timer are zero: the guest keeps its own defaults.
pub fn push_ra_header(m: &mut Vec<u8>, cur_hop_limit: u8, flags: u8, router_lifetime: u16) {
    m.extend_from_slice(&[icmp_type::ROUTER_ADVERTISEMENT, 0, 0, 0]);
    m.extend_from_slice(&[cur_hop_limit, flags]);
    m.extend_from_slice(&router_lifetime.to_be_bytes());
    m.extend_from_slice(&[0; 8]);
}

/// A Source or Target Link-Layer Address option for Ethernet (RFC 4861 section 4.6.1).
pub fn push_ll_addr(m: &mut Vec<u8>, kind: u8, mac: MacAddr) {
    m.extend_from_slice(&[kind, 1]);
    m.extend_from_slice(&mac.0);
}

/// An MTU option (RFC 4861 section 4.6.4).
pub fn push_mtu(m: &mut Vec<u8>, mtu: u32) {
    m.extend_from_slice(&[option_type::MTU, 1, 0, 0]);
    m.extend_from_slice(&mtu.to_be_bytes());
}

/// A Prefix Information option (RFC 4861 section 4.6.2); `valid` and `preferred` in seconds.
pub fn push_prefix_info(
    m: &mut Vec<u8>,
    prefix: Ipv6Addr,
    len: u8,
    flags: u8,
    valid: u32,
    preferred: u32,
) {
    m.extend_from_slice(&[option_type::PREFIX_INFO, 4, len, flags]);
    m.extend_from_slice(&valid.to_be_bytes());
    m.extend_from_slice(&preferred.to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&prefix.octets());
}

/// A Recursive DNS Server option (RFC 8106 section 5.1), for at most 127 servers.
pub fn push_rdnss(m: &mut Vec<u8>, lifetime: u32, servers: &[Ipv6Addr]) {
    let units = 1 + 2 * servers.len();
    m.extend_from_slice(&[option_type::RDNSS, units as u8, 0, 0]);
    m.extend_from_slice(&lifetime.to_be_bytes());
    for s in servers {
        m.extend_from_slice(&s.octets());
    }
}

/// A DNS Search List option (RFC 8106 section 5.2): `names` in DNS wire format, uncompressed,
/// zero-padded to whole units here; at most 2032 octets of names.
pub fn push_dnssl(m: &mut Vec<u8>, lifetime: u32, names: &[u8]) {
    let len = DNS_OPTION_HEADER_LEN + padded(names.len());
    m.extend_from_slice(&[option_type::DNSSL, (len / OPTION_UNIT) as u8, 0, 0]);
    m.extend_from_slice(&lifetime.to_be_bytes());
    m.extend_from_slice(names);
    m.resize(m.len() + padded(names.len()) - names.len(), 0);
}

/// `len` rounded up to whole option units.
pub fn padded(len: usize) -> usize {
    len.div_ceil(OPTION_UNIT) * OPTION_UNIT
}

// --- Reading ---

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
    pub fn parse(icmp: &'a [u8]) -> Result<NdpMessage<'a>, NdpError> {
        let (&kind, rest) = icmp.split_first().ok_or(NdpError::Empty)?;
        let fixed = match kind {
            icmp_type::ROUTER_SOLICITATION => RS_LEN,
            icmp_type::ROUTER_ADVERTISEMENT => RA_LEN,
            icmp_type::NEIGHBOR_SOLICITATION => NS_LEN,
            icmp_type::NEIGHBOR_ADVERTISEMENT => NA_LEN,
            icmp_type::REDIRECT => REDIRECT_LEN,
            _ => return Err(NdpError::NotNdp),
        };
        if icmp.len() < fixed {
            return Err(NdpError::Short);
        }
        if rest.first() != Some(&0) {
            return Err(NdpError::CodeNotZero);
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
    pub fn parse(mut b: &'a [u8]) -> Result<Options<'a>, NdpError> {
        let all = b;
        while !b.is_empty() {
            let len = match b.get(1) {
                Some(0) => return Err(NdpError::ZeroLengthOption),
                Some(&units) => usize::from(units) * OPTION_UNIT,
                None => return Err(NdpError::OptionTruncated),
            };
            if len > b.len() {
                return Err(NdpError::OptionOverrun);
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
    fn padding_rounds_up_to_units() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 8);
        assert_eq!(padded(8), 8);
        assert_eq!(padded(13), 16);
    }
}
