//! Emitting frames to the guest: a reusable frame queue and header writers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::offload::{set_transport_checksum, L4Checksum};
use super::parse::{
    ethertype, ip_proto, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN,
};
use super::{checksum, MacAddr};

/// Frames for the guest, packed into one reusable buffer: after warm-up, queuing a frame
/// allocates nothing.
///
/// The buffer is kept initialised up to its high-water mark, so that [`FrameQueue::push_in_place`]
/// can lend a slot of it (to peek socket data straight into a frame's payload) without
/// zeroing it again for every frame. Frames usually follow each other; those built in a batch
/// of slots ([`FrameQueue::push_slots_in_place`]) may leave gaps between them.
#[derive(Debug, Default)]
pub struct FrameQueue {
    buf: Vec<u8>,
    /// End of the last queued frame; `buf` beyond it is scratch.
    used: usize,
    /// Where each frame is in `buf`.
    spans: Vec<(usize, usize)>,
    /// Bytes in frames, gaps aside.
    queued: usize,
    /// How the TCP and UDP frames built into this queue carry their checksums: what the device
    /// the frames go to takes.
    l4_checksum: L4Checksum,
}

impl FrameQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one frame written by `write`, which appends its bytes to the vector it's given.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.buf.truncate(self.used);
        write(&mut self.buf);
        self.add(self.used, self.buf.len());
    }

    fn add(&mut self, start: usize, end: usize) {
        self.spans.push((start, end));
        self.queued += end - start;
        self.used = end;
    }

    /// Makes `len` bytes past the last frame usable, initialised once.
    fn room(&mut self, len: usize) -> usize {
        let end = self.used + len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        end
    }

    /// Lends `write` a slot of `max_len` bytes (contents unspecified) to build one frame in;
    /// `write` returns the frame's length, at most `max_len`, or 0 to queue nothing. Returns
    /// the length queued.
    pub fn push_in_place(
        &mut self,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> usize {
        let end = self.room(max_len);
        let start = self.used;
        let len = write(&mut self.buf[start..end]).min(max_len);
        if len > 0 {
            self.add(start, start + len);
        }
        len
    }

    /// Lends `write` `lens.len()` slots of `slot_len` bytes each, one after the other in one
    /// region (slot `i` at `i * slot_len`), to build up to that many frames in at once (say,
    /// datagrams received by one system call). `write` sets `lens[i]` to the length of the
    /// frame in slot `i`, 0 for none. Returns how many frames were queued.
    pub fn push_slots_in_place(
        &mut self,
        slot_len: usize,
        lens: &mut [usize],
        write: impl FnOnce(&mut [u8], &mut [usize]),
    ) -> usize {
        lens.fill(0);
        let end = self.room(slot_len * lens.len());
        let start = self.used;
        write(&mut self.buf[start..end], lens);
        let mut queued = 0;
        for (i, &len) in lens.iter().enumerate() {
            if len > 0 {
                let at = start + i * slot_len;
                self.add(at, at + len.min(slot_len));
                queued += 1;
            }
        }
        queued
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Chooses how TCP and UDP frames built into this queue carry their checksums (see
    /// [`crate::wire::offload`]); [`L4Checksum::Full`] until set.
    pub fn set_l4_checksum(&mut self, mode: L4Checksum) {
        self.l4_checksum = mode;
    }

    pub fn l4_checksum(&self) -> L4Checksum {
        self.l4_checksum
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes queued, over all frames.
    pub fn bytes(&self) -> usize {
        self.queued
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.spans.get(i)?;
        Some(&self.buf[start..end])
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|&(start, end)| &self.buf[start..end])
    }

    /// Forgets the queued frames, keeping the memory.
    pub fn clear(&mut self) {
        self.used = 0;
        self.queued = 0;
        self.spans.clear();
    }
}

/// Appends an Ethernet header.
pub fn ethernet(buf: &mut Vec<u8>, dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf.extend_from_slice(&dst.0);
    buf.extend_from_slice(&src.0);
    buf.extend_from_slice(&ethertype.to_be_bytes());
}

/// Appends an IPv4 header (no options, don't-fragment set) for `payload_len` bytes.
pub fn ipv4(
    buf: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload_len: usize,
) {
    let start = buf.len();
    let total = (IPV4_HEADER_LEN + payload_len) as u16;
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&total.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x40, 0, ttl, protocol, 0, 0]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    let sum = checksum::of(&buf[start..]);
    buf[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Appends an IPv6 header for `payload_len` bytes of `next_header`.
pub fn ipv6(
    buf: &mut Vec<u8>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) {
    buf.extend_from_slice(&[0x60, 0, 0, 0]);
    buf.extend_from_slice(&(payload_len as u16).to_be_bytes());
    buf.extend_from_slice(&[next_header, hop_limit]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
}

/// Where a UDP or ICMPv6 reply goes: link and network addresses.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src: IpAddr,
    pub dst: IpAddr,
}

/// Length of the IP header for `route` (IPv4 only when both ends are IPv4).
pub fn ip_header_len(route: &Route) -> usize {
    match (route.src, route.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_HEADER_LEN,
        _ => IPV6_HEADER_LEN,
    }
}

/// Writes the Ethernet and IP headers of a frame for `route` carrying `l4_len` bytes of
/// `protocol` at the start of `frame`, in place; returns the addresses as the transport
/// checksum needs them. `frame` must hold the headers (the caller sized it).
pub fn write_eth_ip(
    frame: &mut [u8],
    route: &Route,
    protocol: u8,
    l4_len: usize,
) -> (IpAddr, IpAddr) {
    frame[0..6].copy_from_slice(&route.dst_mac.0);
    frame[6..12].copy_from_slice(&route.src_mac.0);
    match (route.src, route.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
            let ip = &mut frame[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((IPV4_HEADER_LEN + l4_len) as u16).to_be_bytes());
            ip[4..10].copy_from_slice(&[0, 0, 0x40, 0, 64, protocol]);
            ip[10..12].copy_from_slice(&[0, 0]);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum::of(ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            (IpAddr::V4(s), IpAddr::V4(d))
        }
        (s, d) => {
            let (s6, d6) = (to_v6(s), to_v6(d));
            frame[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
            let ip = &mut frame[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV6_HEADER_LEN];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            ip[6] = protocol;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s6.octets());
            ip[24..40].copy_from_slice(&d6.octets());
            (IpAddr::V6(s6), IpAddr::V6(d6))
        }
    }
}

/// Where a UDP payload starts in a frame for `route`.
pub fn udp_payload_offset(route: &Route) -> usize {
    ETH_HEADER_LEN + ip_header_len(route) + UDP_HEADER_LEN
}

/// Writes the Ethernet, IP and UDP headers of a frame whose `payload_len` bytes of payload
/// already sit at [`udp_payload_offset`] in `frame`; returns the frame's length.
pub fn write_udp_frame(
    frame: &mut [u8],
    route: &Route,
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    csum: L4Checksum,
) -> usize {
    let udp_len = UDP_HEADER_LEN + payload_len;
    let (src, dst) = write_eth_ip(frame, route, ip_proto::UDP, udp_len);
    let start = ETH_HEADER_LEN + ip_header_len(route);
    let total = start + udp_len;
    let u = &mut frame[start..start + UDP_HEADER_LEN];
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&dst_port.to_be_bytes());
    u[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    set_transport_checksum(&mut frame[start..total], 6, src, dst, ip_proto::UDP, csum);
    total
}

/// Queues Ethernet + IP + UDP around a copy of `payload`, checksums filled in.
pub fn udp_frame(out: &mut FrameQueue, route: Route, src_port: u16, dst_port: u16, payload: &[u8]) {
    let off = udp_payload_offset(&route);
    let csum = out.l4_checksum();
    out.push_in_place(off + payload.len(), |buf| {
        buf[off..off + payload.len()].copy_from_slice(payload);
        write_udp_frame(buf, &route, src_port, dst_port, payload.len(), csum)
    });
}

/// Queues Ethernet + IPv6 + ICMPv6 (`message` from its type byte on, checksum field zero).
pub fn icmpv6_frame(out: &mut FrameQueue, route: Route, hop_limit: u8, message: &[u8]) {
    out.push(|buf| {
        ethernet(buf, route.dst_mac, route.src_mac, ethertype::IPV6);
        ipv6(
            buf,
            to_v6(route.src),
            to_v6(route.dst),
            ip_proto::ICMPV6,
            hop_limit,
            message.len(),
        );
        let start = buf.len();
        buf.extend_from_slice(message);
        if buf.len() >= start + 4 {
            buf[start + 2..start + 4].copy_from_slice(&[0, 0]);
            let sum = checksum::transport(route.src, route.dst, ip_proto::ICMPV6, &buf[start..]);
            buf[start + 2..start + 4].copy_from_slice(&sum.to_be_bytes());
        }
    });
}

/// Queues Ethernet + IPv4 + ICMP (`message` from its type byte on; the checksum is filled in).
pub fn icmp4_frame(out: &mut FrameQueue, route: Route, ttl: u8, message: &[u8]) {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (route.src, route.dst) else {
        return;
    };
    out.push(|buf| {
        ethernet(buf, route.dst_mac, route.src_mac, ethertype::IPV4);
        ipv4(buf, src, dst, ip_proto::ICMP, ttl, message.len());
        let start = buf.len();
        buf.extend_from_slice(message);
        if buf.len() >= start + 4 {
            buf[start + 2..start + 4].copy_from_slice(&[0, 0]);
            let sum = checksum::of(&buf[start..]);
            buf[start + 2..start + 4].copy_from_slice(&sum.to_be_bytes());
        }
    });
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Length of an Ethernet + IPv4 + UDP header stack, for callers sizing things.
pub const UDP4_OVERHEAD: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
pub const UDP6_OVERHEAD: usize = ETH_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse;

    #[test]
    fn udp_frames_parse_back_with_valid_checksums() {
        let mut q = FrameQueue::new();
        let route = Route {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
        };
        udp_frame(&mut q, route, 67, 68, b"hello");
        let route6 = Route {
            src: "fe80::1".parse().unwrap(),
            dst: "fe80::2".parse().unwrap(),
            ..route
        };
        udp_frame(&mut q, route6, 547, 546, b"world!");
        assert_eq!(q.len(), 2);

        let eth = parse::ethernet(q.get(0).unwrap()).unwrap();
        let ip = parse::ipv4(eth.payload).unwrap();
        assert_eq!(
            checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::UDP, ip.payload),
            0
        );
        assert_eq!(parse::udp(ip.payload).unwrap().payload, b"hello");

        let eth = parse::ethernet(q.get(1).unwrap()).unwrap();
        let ip = parse::ipv6(eth.payload).unwrap();
        assert_eq!(
            checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::UDP, ip.payload),
            0
        );
        let udp = parse::udp(ip.payload).unwrap();
        assert_eq!(
            (udp.src_port, udp.dst_port, udp.payload),
            (547, 546, &b"world!"[..])
        );

        q.clear();
        assert!(q.is_empty());
        assert!(q.get(0).is_none());
    }

    #[test]
    fn frames_built_in_slots_keep_their_order_and_skip_empty_slots() {
        let mut q = FrameQueue::new();
        q.push(|b| b.extend_from_slice(b"first"));
        let mut lens = [0usize; 3];
        let n = q.push_slots_in_place(8, &mut lens, |region, lens| {
            assert_eq!(region.len(), 24);
            region[0..3].copy_from_slice(b"one");
            lens[0] = 3;
            region[16..21].copy_from_slice(b"three");
            lens[2] = 5;
        });
        assert_eq!(n, 2);
        q.push_in_place(16, |b| {
            b[..4].copy_from_slice(b"last");
            4
        });
        let frames: Vec<&[u8]> = q.iter().collect();
        assert_eq!(frames, [&b"first"[..], b"one", b"three", b"last"]);
        assert_eq!(q.bytes(), 5 + 3 + 5 + 4);
        assert_eq!(q.get(2), Some(&b"three"[..]));
    }
}
