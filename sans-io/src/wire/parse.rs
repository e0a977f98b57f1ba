//! Zero-copy views of guest frames, layer by layer, for dispatch: Ethernet, IPv4, IPv6 (with
//! extension headers skipped), UDP. Every parser checks lengths first and fails with its
//! layer's error (see [`Malformed`](super::Malformed)); none panics on any input.
//!
//! Above the two IP views, [`Ip::packet`] gives one family-neutral [`IpPacket`] (addresses,
//! [`Transport`], fragmentation, upper-layer bytes), so that the transport dispatch is
//! written once for both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::MacAddr;

/// Why a frame isn't Ethernet II.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EthernetError {
    #[error("shorter than its header")]
    Short,
}

/// Why a packet isn't IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    #[error("shorter than its header")]
    Short,
    #[error("version is not 4")]
    Version,
    #[error("header or total length out of bounds")]
    Lengths,
    #[error("bad header checksum")]
    Checksum,
}

/// Why a packet isn't IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv6Error {
    #[error("shorter than its header")]
    Short,
    #[error("version is not 6")]
    Version,
    #[error("payload length beyond the frame")]
    PayloadLength,
    #[error("truncated extension header")]
    ExtensionTruncated,
    #[error("extension header beyond the payload")]
    ExtensionOverrun,
    #[error("truncated fragment header")]
    FragmentTruncated,
    #[error("too many extension headers")]
    TooManyExtensions,
}

/// Why a datagram isn't UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("shorter than its header")]
    Short,
    #[error("length out of bounds")]
    Length,
}

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
}

pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

pub const ETH_HEADER_LEN: usize = 14;
pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const UDP_HEADER_LEN: usize = 8;

/// An Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct Ethernet<'a> {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    pub payload: &'a [u8],
}

/// The `N` bytes at `at` of a buffer whose length the caller has checked.
#[inline]
pub(super) fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

pub fn ethernet(frame: &[u8]) -> Result<Ethernet<'_>, EthernetError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(EthernetError::Short);
    }
    Ok(Ethernet {
        dst: MacAddr(bytes_at(frame, 0)),
        src: MacAddr(bytes_at(frame, 6)),
        ethertype: u16::from_be_bytes([frame[12], frame[13]]),
        payload: &frame[ETH_HEADER_LEN..],
    })
}

/// An IPv4 datagram; `payload` is cut to the header's total length (frames may be padded).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// A fragment other than the first, or a first fragment with more to come.
    pub fragmented: bool,
    pub header: &'a [u8],
    pub payload: &'a [u8],
}

pub fn ipv4(packet: &[u8]) -> Result<Ipv4<'_>, Ipv4Error> {
    ipv4_with_rest(packet, 0).map(|(ip, _)| ip)
}

/// [`ipv4`] of a packet whose `packet` bytes are followed by `rest_len` more we don't hold
/// (a link left them in the guest's memory): the header must be within `packet`, the total
/// length within both. Returns the view, its payload cut to what `packet` holds, and how many
/// of the rest's bytes are the packet's (the others are padding).
pub fn ipv4_with_rest(packet: &[u8], rest_len: usize) -> Result<(Ipv4<'_>, usize), Ipv4Error> {
    if packet.len() < IPV4_HEADER_LEN {
        return Err(Ipv4Error::Short);
    }
    if packet[0] >> 4 != 4 {
        return Err(Ipv4Error::Version);
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header_len < IPV4_HEADER_LEN
        || header_len > packet.len()
        || total_len < header_len
        || total_len > packet.len() + rest_len
    {
        return Err(Ipv4Error::Lengths);
    }
    let held = total_len.min(packet.len());
    if super::checksum::of(&packet[..header_len]) != 0 {
        return Err(Ipv4Error::Checksum);
    }
    let flags_frag = u16::from_be_bytes([packet[6], packet[7]]);
    let more_fragments = flags_frag & 0x2000 != 0;
    let offset = flags_frag & 0x1fff;
    let ip = Ipv4 {
        src: Ipv4Addr::from(bytes_at::<4>(packet, 12)),
        dst: Ipv4Addr::from(bytes_at::<4>(packet, 16)),
        protocol: packet[9],
        ttl: packet[8],
        fragmented: more_fragments || offset != 0,
        header: &packet[..header_len],
        payload: &packet[header_len..held],
    };
    Ok((ip, total_len - held))
}

/// An IPv6 datagram, its extension headers skipped: `next_header` and `payload` are those of
/// the upper layer.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub fragmented: bool,
    /// The IPv6 header and the extension headers walked, bytes: where `payload` starts in the
    /// packet.
    pub header_len: usize,
    pub payload: &'a [u8],
}

/// Extension headers we walk through before giving up: a bound, not a protocol limit.
const MAX_EXTENSION_HEADERS: usize = 8;

pub fn ipv6(packet: &[u8]) -> Result<Ipv6<'_>, Ipv6Error> {
    ipv6_with_rest(packet, 0).map(|(ip, _)| ip)
}

/// [`ipv6`] of a packet followed by `rest_len` bytes we don't hold (see [`ipv4_with_rest`]):
/// its extension headers must be within `packet`.
pub fn ipv6_with_rest<'p>(
    packet: &'p [u8],
    rest_len: usize,
) -> Result<(Ipv6<'p>, usize), Ipv6Error> {
    if packet.len() < IPV6_HEADER_LEN {
        return Err(Ipv6Error::Short);
    }
    if packet[0] >> 4 != 6 {
        return Err(Ipv6Error::Version);
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let total_len = IPV6_HEADER_LEN + payload_len;
    if total_len > packet.len() + rest_len {
        return Err(Ipv6Error::PayloadLength);
    }
    let held = total_len.min(packet.len());
    let in_rest = total_len - held;
    let mut next = packet[6];
    let mut rest = &packet[IPV6_HEADER_LEN..held];
    let mut fragmented = false;
    let view = |next_header, fragmented, payload: &'p [u8]| {
        let ip = Ipv6 {
            src: Ipv6Addr::from(bytes_at::<16>(packet, 8)),
            dst: Ipv6Addr::from(bytes_at::<16>(packet, 24)),
            next_header,
            hop_limit: packet[7],
            fragmented,
            // `payload` is what is left of the held packet after the headers.
            header_len: held - payload.len(),
            payload,
        };
        (ip, in_rest)
    };
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            ip_proto::HOP_BY_HOP | ip_proto::ROUTING | ip_proto::DEST_OPTS => {
                if rest.len() < 8 {
                    return Err(Ipv6Error::ExtensionTruncated);
                }
                let len = (usize::from(rest[1]) + 1) * 8;
                if len > rest.len() {
                    return Err(Ipv6Error::ExtensionOverrun);
                }
                next = rest[0];
                rest = &rest[len..];
            }
            ip_proto::FRAGMENT => {
                if rest.len() < 8 {
                    return Err(Ipv6Error::FragmentTruncated);
                }
                let offset = u16::from_be_bytes([rest[2], rest[3]]) >> 3;
                let more = rest[3] & 1 != 0;
                // An atomic fragment (offset 0, no more to come) is a whole packet (RFC 6946).
                fragmented |= offset != 0 || more;
                next = rest[0];
                rest = &rest[8..];
                if offset != 0 {
                    // A later fragment: what follows is data, not headers to walk.
                    return Ok(view(next, fragmented, rest));
                }
            }
            _ => return Ok(view(next, fragmented, rest)),
        }
    }
    Err(Ipv6Error::TooManyExtensions)
}

/// A guest's IP packet in its family's own view, which the family's services (DHCP, NDP,
/// DHCPv6) need.
#[derive(Debug, Clone, Copy)]
pub enum Ip<'a> {
    V4(Ipv4<'a>),
    V6(Ipv6<'a>),
}

/// The transport protocols the engine translates, named the same for both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    /// ICMP over IPv4, ICMPv6 over IPv6: the family's own ICMP, the one that carries echo
    /// (the other family's protocol number is [`Transport::Other`]).
    Icmp,
    Other(u8),
}

impl Transport {
    /// The transport `protocol` names, where `icmp` is the family's own ICMP number.
    #[inline]
    fn of(protocol: u8, icmp: u8) -> Transport {
        match protocol {
            ip_proto::TCP => Transport::Tcp,
            ip_proto::UDP => Transport::Udp,
            p if p == icmp => Transport::Icmp,
            p => Transport::Other(p),
        }
    }
}

/// An IP packet of either family, as the transport dispatch needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    /// Part of a fragmented datagram, which we don't reassemble: more fragments to come or a
    /// non-zero offset, in either family (an IPv6 atomic fragment is whole, RFC 6946).
    pub fragmented: bool,
    /// The upper layer's bytes: after IPv4's header (cut to its total length), or after
    /// IPv6's extension headers.
    pub payload: &'a [u8],
}

impl<'a> Ip<'a> {
    /// The source address.
    #[inline]
    pub fn src(&self) -> IpAddr {
        match self {
            Ip::V4(ip) => IpAddr::V4(ip.src),
            Ip::V6(ip) => IpAddr::V6(ip.src),
        }
    }

    /// The family-neutral view of the packet.
    #[inline]
    pub fn packet(&self) -> IpPacket<'a> {
        match *self {
            Ip::V4(ip) => IpPacket {
                src: IpAddr::V4(ip.src),
                dst: IpAddr::V4(ip.dst),
                transport: Transport::of(ip.protocol, ip_proto::ICMP),
                fragmented: ip.fragmented,
                payload: ip.payload,
            },
            Ip::V6(ip) => IpPacket {
                src: IpAddr::V6(ip.src),
                dst: IpAddr::V6(ip.dst),
                transport: Transport::of(ip.next_header, ip_proto::ICMPV6),
                fragmented: ip.fragmented,
                payload: ip.payload,
            },
        }
    }
}

/// A UDP datagram; `payload` is cut to the UDP length.
#[derive(Debug, Clone, Copy)]
pub struct Udp<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

pub fn udp(segment: &[u8]) -> Result<Udp<'_>, UdpError> {
    if segment.len() < UDP_HEADER_LEN {
        return Err(UdpError::Short);
    }
    let len = usize::from(u16::from_be_bytes([segment[4], segment[5]]));
    if len < UDP_HEADER_LEN || len > segment.len() {
        return Err(UdpError::Length);
    }
    Ok(Udp {
        src_port: u16::from_be_bytes([segment[0], segment[1]]),
        dst_port: u16::from_be_bytes([segment[2], segment[3]]),
        payload: &segment[UDP_HEADER_LEN..len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ethernet(&data);
            let _ = ipv4(&data);
            let _ = ipv6(&data);
            let _ = udp(&data);
        }
    }

    /// An IPv4 packet 192.0.2.2 -> 192.0.2.1 with `flags_frag` (flags and fragment offset),
    /// its header checksum filled in.
    fn v4(protocol: u8, flags_frag: u16, payload: &[u8]) -> Vec<u8> {
        let total = (IPV4_HEADER_LEN + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&flags_frag.to_be_bytes());
        p.extend_from_slice(&[64, protocol, 0, 0, 192, 0, 2, 2, 192, 0, 2, 1]);
        let sum = super::super::checksum::of(&p);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// An IPv6 packet fe80::2 -> 2001:db8::1 whose first next header is `next`.
    fn v6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"fe80::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    /// A fragment header for `next`, with `offset_flags` as the wire has them.
    fn fragment_header(next: u8, offset_flags: u16) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&offset_flags.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 1]);
        h
    }

    fn packet4(p: &[u8]) -> IpPacket<'_> {
        Ip::V4(ipv4(p).unwrap()).packet()
    }

    fn packet6(p: &[u8]) -> IpPacket<'_> {
        Ip::V6(ipv6(p).unwrap()).packet()
    }

    #[test]
    fn a_packet_whose_rest_lies_elsewhere_is_measured_against_head_and_rest() {
        let payload: Vec<u8> = (0..100u8).collect();
        let (p4, p6) = (v4(ip_proto::TCP, 0, &payload), v6(ip_proto::TCP, &payload));
        // Split 30 bytes into the payload: 70 in the rest, and any more is padding.
        let (head4, head6) = (&p4[..IPV4_HEADER_LEN + 30], &p6[..IPV6_HEADER_LEN + 30]);
        for rest_len in [70, 71, 500] {
            let (ip, in_rest) = ipv4_with_rest(head4, rest_len).unwrap();
            assert_eq!((ip.payload, in_rest), (&payload[..30], 70));
            let (ip, in_rest) = ipv6_with_rest(head6, rest_len).unwrap();
            assert_eq!((ip.payload, in_rest), (&payload[..30], 70));
        }
        // A rest too short for the lengths the header says.
        assert_eq!(ipv4_with_rest(head4, 69).unwrap_err(), Ipv4Error::Lengths);
        assert_eq!(
            ipv6_with_rest(head6, 69).unwrap_err(),
            Ipv6Error::PayloadLength
        );
        // All in the head: the rest is padding.
        let (ip, in_rest) = ipv4_with_rest(&p4, 10).unwrap();
        assert_eq!((ip.payload, in_rest), (&payload[..], 0));
        // The IPv4 header itself cut by the split.
        assert_eq!(
            ipv4_with_rest(&p4[..IPV4_HEADER_LEN + 4][..18], 500).unwrap_err(),
            Ipv4Error::Short
        );
        let mut long_header = v4(ip_proto::TCP, 0, &payload);
        long_header[0] = 0x4f; // 60 bytes of header claimed, 22 held
        assert_eq!(
            ipv4_with_rest(&long_header[..22], 500).unwrap_err(),
            Ipv4Error::Lengths
        );
        // IPv6 extension headers must be in the head.
        let mut opts = vec![ip_proto::TCP, 1];
        opts.extend_from_slice(&[0; 14]);
        opts.extend_from_slice(&payload);
        let p = v6(ip_proto::DEST_OPTS, &opts);
        assert_eq!(
            ipv6_with_rest(&p[..IPV6_HEADER_LEN + 8], 108).unwrap_err(),
            Ipv6Error::ExtensionOverrun
        );
        let (ip, in_rest) = ipv6_with_rest(&p[..IPV6_HEADER_LEN + 20], 96).unwrap();
        assert_eq!(
            (ip.next_header, ip.payload, in_rest),
            (ip_proto::TCP, &payload[..4], 96)
        );
    }

    #[test]
    fn both_families_give_the_same_packet_view() {
        let (p4, p6) = (v4(ip_proto::UDP, 0, b"data"), v6(ip_proto::UDP, b"data"));
        let cases = [
            (packet4(&p4), "192.0.2.2", "192.0.2.1"),
            (packet6(&p6), "fe80::2", "2001:db8::1"),
        ];
        for (packet, src, dst) in cases {
            let expected = IpPacket {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                transport: Transport::Udp,
                fragmented: false,
                payload: b"data",
            };
            assert_eq!(packet, expected);
        }
    }

    #[test]
    fn each_family_names_its_own_icmp_and_the_other_one_is_not_icmp() {
        assert_eq!(
            packet4(&v4(ip_proto::TCP, 0, &[])).transport,
            Transport::Tcp
        );
        assert_eq!(
            packet4(&v4(ip_proto::ICMP, 0, &[])).transport,
            Transport::Icmp
        );
        assert_eq!(
            packet4(&v4(ip_proto::ICMPV6, 0, &[])).transport,
            Transport::Other(ip_proto::ICMPV6)
        );
        assert_eq!(packet6(&v6(ip_proto::TCP, &[])).transport, Transport::Tcp);
        assert_eq!(
            packet6(&v6(ip_proto::ICMPV6, &[])).transport,
            Transport::Icmp
        );
        assert_eq!(
            packet6(&v6(ip_proto::ICMP, &[])).transport,
            Transport::Other(ip_proto::ICMP)
        );
        assert_eq!(
            packet6(&v6(ip_proto::NO_NEXT, &[])).transport,
            Transport::Other(59)
        );
    }

    #[test]
    fn ipv4_fragments_are_marked_but_dont_fragment_is_not() {
        const DONT_FRAGMENT: u16 = 0x4000;
        const MORE_FRAGMENTS: u16 = 0x2000;
        let whole = v4(ip_proto::TCP, DONT_FRAGMENT, &[]);
        assert!(!packet4(&whole).fragmented);
        let first = v4(ip_proto::TCP, MORE_FRAGMENTS, &[]);
        assert!(packet4(&first).fragmented);
        let last = v4(ip_proto::TCP, 185, &[]);
        assert!(packet4(&last).fragmented);
    }

    #[test]
    fn ipv6_fragments_are_marked_but_atomic_ones_are_whole() {
        let mut payload = fragment_header(ip_proto::UDP, 0x0001);
        payload.extend_from_slice(b"first");
        let p = v6(ip_proto::FRAGMENT, &payload);
        let packet = packet6(&p);
        assert!(packet.fragmented);
        assert_eq!(packet.transport, Transport::Udp);
        assert_eq!(packet.payload, b"first");
        // Offset 0 and no more fragments (RFC 6946's atomic fragment): a whole packet.
        let p = v6(ip_proto::FRAGMENT, &fragment_header(ip_proto::TCP, 0));
        assert!(!packet6(&p).fragmented);
        // A later fragment whose data looks like a header: data all the same.
        let mut later = fragment_header(ip_proto::HOP_BY_HOP, 0x0008);
        later.extend_from_slice(&[0xff; 16]);
        let later = v6(ip_proto::FRAGMENT, &later);
        let packet = packet6(&later);
        assert!(packet.fragmented);
        assert_eq!(packet.payload, [0xff; 16]);
        let p = v6(ip_proto::FRAGMENT, &[ip_proto::TCP, 0, 0]);
        assert!(matches!(ipv6(&p), Err(Ipv6Error::FragmentTruncated)));
    }

    #[test]
    fn payloads_are_cut_to_the_ip_length_and_truncation_is_an_error() {
        // Ethernet pads short frames: the padding is not payload.
        let mut p = v4(ip_proto::UDP, 0, b"abc");
        p.extend_from_slice(&[0; 7]);
        assert_eq!(packet4(&p).payload, b"abc");
        let mut p = v6(ip_proto::UDP, b"abc");
        p.extend_from_slice(&[0; 7]);
        assert_eq!(packet6(&p).payload, b"abc");
        // Cut short of the length its header claims.
        let p = v4(ip_proto::UDP, 0, b"abc");
        assert!(matches!(ipv4(&p[..p.len() - 1]), Err(Ipv4Error::Lengths)));
        assert!(matches!(ipv4(&p[..19]), Err(Ipv4Error::Short)));
        let p = v6(ip_proto::UDP, b"abc");
        assert!(matches!(
            ipv6(&p[..p.len() - 1]),
            Err(Ipv6Error::PayloadLength)
        ));
        assert!(matches!(ipv6(&p[..39]), Err(Ipv6Error::Short)));
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        // Hop-by-hop (8 bytes, router alert) then ICMPv6 (MLDv2 report as the kernel sends).
        let mut p = vec![0x60, 0, 0, 0, 0, 16, ip_proto::HOP_BY_HOP, 1];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[ip_proto::ICMPV6, 0, 5, 2, 0, 0, 1, 0]);
        p.extend_from_slice(&[143, 0, 0, 0, 0, 0, 0, 0]);
        let ip = ipv6(&p).unwrap();
        assert_eq!(ip.next_header, ip_proto::ICMPV6);
        assert_eq!(ip.payload, &[143, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ip.header_len, 48);
    }
}
