//! ARP packets for Ethernet and IPv4 (RFC 826): parsing, writing and a readable dump.
//!
//! Which requests we answer is [`services::arp`](crate::services::arp)'s.

use std::fmt;
use std::net::Ipv4Addr;

use super::parse::ethertype;
use super::MacAddr;

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

/// Why a packet isn't ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArpError {
    #[error("shorter than its header")]
    Short,
    #[error("truncated addresses")]
    Truncated,
}

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
    pub fn parse(payload: &[u8]) -> Result<Option<ArpPacket>, ArpError> {
        let Some(header) = payload.get(..HEADER_LEN) else {
            return Err(ArpError::Short);
        };
        let htype = u16::from_be_bytes([header[0], header[1]]);
        let ptype = u16::from_be_bytes([header[2], header[3]]);
        let (hlen, plen) = (header[4], header[5]);
        if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || hlen != 6 || plen != 4 {
            return Ok(None);
        }
        let Some(p) = payload.get(..PACKET_LEN) else {
            return Err(ArpError::Truncated);
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
