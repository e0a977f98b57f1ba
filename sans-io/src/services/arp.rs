//! ARP (RFC 826): we answer for every IPv4 address on the guest's link except its own.
//!
//! # Theory of operation
//!
//! The guest's link has exactly two nodes: the guest and us. Whatever IPv4 address the guest
//! resolves — its gateway, a neighbour it believes is on its subnet, the host's address — the
//! frame has to come to us anyway, so we answer every ARP request with our own MAC
//! (`config.our_mac`). Three kinds of request are left unanswered:
//!
//! - **probes** (sender IP 0.0.0.0, RFC 5227 section 2.1.1): the guest is checking that the
//!   address it wants is free; an answer would tell it the address is taken;
//! - **announcements** (sender IP == target IP, RFC 5227 section 2.3, "gratuitous ARP"): the
//!   guest is telling the link about its own address, not asking;
//! - **requests for the guest's own address** (the configured one, or the one it was last seen
//!   using): answering would make the guest see a conflict with itself.
//!
//! Targets that no host can own (0.0.0.0, broadcast, multicast) are not answered either.
//! Replies (op 2) from the guest and ARP for other hardware or protocol types are ignored. The
//! service keeps no state: the engine learns the guest's MAC and address from its frames.

use std::fmt;
use std::net::Ipv4Addr;

use super::{Ctx, Outcome};
use crate::wire::build;
use crate::wire::parse::{ethertype, Ethernet, Malformed};
use crate::wire::MacAddr;

/// Hardware type for Ethernet ("Assigned Numbers", RFC 826 `ar$hrd`).
pub const HTYPE_ETHERNET: u16 = 1;
/// Protocol type for IPv4: the IPv4 ethertype (RFC 826 `ar$pro`).
pub const PTYPE_IPV4: u16 = ethertype::IPV4;
/// Operation codes (RFC 826 `ar$op`).
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;
/// The fixed part: hardware type, protocol type, their lengths, operation.
pub const HEADER_LEN: usize = 8;
/// A whole Ethernet/IPv4 ARP packet: the header plus two MAC and two IPv4 addresses.
pub const PACKET_LEN: usize = HEADER_LEN + 2 * (6 + 4);

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub op: u16,
    /// Sender hardware and protocol addresses.
    pub sha: MacAddr,
    pub spa: Ipv4Addr,
    /// Target hardware and protocol addresses.
    pub tha: MacAddr,
    pub tpa: Ipv4Addr,
}

impl ArpPacket {
    /// Parses the payload of an ARP frame. `Ok(None)`: well-formed ARP, but not for Ethernet
    /// and IPv4 addresses (trailing bytes, such as Ethernet padding, are allowed).
    pub fn parse(payload: &[u8]) -> Result<Option<ArpPacket>, Malformed> {
        let Some(header) = payload.get(..HEADER_LEN) else {
            return Err("arp: shorter than its header");
        };
        let htype = u16::from_be_bytes([header[0], header[1]]);
        let ptype = u16::from_be_bytes([header[2], header[3]]);
        let (hlen, plen) = (header[4], header[5]);
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || hlen != 6 || plen != 4 {
            return Ok(None);
        }
        let Some(p) = payload.get(..PACKET_LEN) else {
            return Err("arp: truncated addresses");
        };
        let mac = |at: usize| {
            let mut m = [0; 6];
            m.copy_from_slice(&p[at..at + 6]);
            MacAddr(m)
        };
        let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        Ok(Some(ArpPacket {
            op: u16::from_be_bytes([p[6], p[7]]),
            sha: mac(8),
            spa: ip(14),
            tha: mac(18),
            tpa: ip(24),
        }))
    }

    /// Appends the packet in wire format.
    pub fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        buf.extend_from_slice(&PTYPE_IPV4.to_be_bytes());
        buf.extend_from_slice(&[6, 4]);
        buf.extend_from_slice(&self.op.to_be_bytes());
        buf.extend_from_slice(&self.sha.0);
        buf.extend_from_slice(&self.spa.octets());
        buf.extend_from_slice(&self.tha.0);
        buf.extend_from_slice(&self.tpa.octets());
    }
}

impl fmt::Display for ArpPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            OP_REQUEST => "request",
            OP_REPLY => "reply",
            _ => "unknown",
        };
        writeln!(f, "op: {} ({op})", self.op)?;
        writeln!(f, "sender: {} at {}", self.spa, self.sha)?;
        writeln!(f, "target: {} at {}", self.tpa, self.tha)
    }
}

/// Answers an ARP request from the guest (see the module documentation for which).
pub fn handle(ctx: &mut Ctx, eth: &Ethernet) -> Outcome {
    let Some(ip4) = ctx.config.ip4.as_ref() else {
        return Outcome::Ignored;
    };
    let req = match ArpPacket::parse(eth.payload) {
        Ok(Some(req)) => req,
        Ok(None) => return Outcome::Ignored,
        Err(why) => return Outcome::Malformed(why),
    };
    if req.op != OP_REQUEST {
        return Outcome::Ignored;
    }
    // Probe or announcement: the guest is claiming an address, not looking for a neighbour.
    if req.spa.is_unspecified() || req.spa == req.tpa {
        return Outcome::Ignored;
    }
    // Answering for the guest's own address would look like an address conflict to it.
    if req.tpa == ip4.addr || ctx.guest.addr4 == Some(req.tpa) {
        return Outcome::Ignored;
    }
    if req.tpa.is_unspecified() || req.tpa.is_broadcast() || req.tpa.is_multicast() {
        return Outcome::Ignored;
    }
    // The reply goes to the requester only (RFC 826, "Packet Reception"); a sender hardware
    // address we can't unicast to leaves nobody to answer.
    if !req.sha.is_unicast() {
        return Outcome::Ignored;
    }
    let reply = ArpPacket {
        op: OP_REPLY,
        sha: ctx.config.our_mac,
        spa: req.tpa,
        tha: req.sha,
        tpa: req.spa,
    };
    let our_mac = ctx.config.our_mac;
    ctx.out.push(|buf| {
        build::ethernet(buf, req.sha, our_mac, ethertype::ARP);
        reply.write(buf);
    });
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(p)) = ArpPacket::parse(&data) {
                let mut buf = Vec::new();
                p.write(&mut buf);
                prop_assert_eq!(&buf[..], &data[..PACKET_LEN]);
            }
        }
    }

    #[test]
    fn other_hardware_is_not_malformed() {
        // IEEE 802 hardware type (6), IPv4: valid ARP, not ours to answer.
        let p = [0, 6, 8, 0, 6, 4, 0, 1];
        assert_eq!(ArpPacket::parse(&p), Ok(None));
        assert!(ArpPacket::parse(&p[..7]).is_err());
        let eth_ipv4 = [0, 1, 8, 0, 6, 4, 0, 1];
        assert!(ArpPacket::parse(&eth_ipv4).is_err());
    }
}
