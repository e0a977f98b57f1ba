//! Emitting frames to the guest: a reusable frame queue and header writers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lent::{
    LentArea, LentAreas, LentPayload, PayloadLender, MAX_LENT_AREAS, MAX_LENT_FRAMES,
};
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
///
/// With a [`PayloadLender`] (the vhost-user link's), a frame may hold only its headers, its
/// payload sitting in memory the lender lent ([`FrameQueue::push_lent`]): such a frame is
/// whole only once that link publishes it, and only that link gets it.
#[derive(Debug, Default)]
pub struct FrameQueue {
    buf: Vec<u8>,
    /// End of the last queued frame; `buf` beyond it is scratch.
    used: usize,
    /// Where each frame (or a lent frame's headers) is in `buf`.
    spans: Vec<Span>,
    /// Bytes in frames, gaps aside, lent payloads included.
    queued: usize,
    /// How the TCP and UDP frames built into this queue carry their checksums: what the device
    /// the frames go to takes.
    l4_checksum: L4Checksum,
    lender: Option<Lender>,
    /// Frames with lent payloads.
    lent_frames: usize,
    /// The areas of the reservation under way (empty between reservations).
    areas: Vec<LentArea>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    lent: Option<LentPayload>,
}

/// The driver's lender, named in `Debug` output only.
struct Lender(Box<dyn PayloadLender>);

impl std::fmt::Debug for Lender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadLender")
    }
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
        self.spans.push(Span {
            start,
            end,
            lent: None,
        });
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

    /// Lends the frames built from now on payload memory (see [`PayloadLender`]), or stops
    /// (`None`). Frames already queued keep what they hold.
    pub fn set_payload_lender(&mut self, lender: Option<Box<dyn PayloadLender>>) {
        self.lender = lender.map(Lender);
        if self.lender.is_some() && self.areas.capacity() == 0 {
            self.areas.reserve_exact(MAX_LENT_AREAS);
        }
    }

    /// Whether TCP frames built with [`FrameQueue::push_lent`] may carry more than one segment
    /// (see [`PayloadLender::large_tcp_segments`]): there is a lender that says so, and the
    /// frames' checksums are left unfinished, as its payloads must be.
    pub fn lends_large_tcp(&self, ipv6: bool) -> bool {
        self.l4_checksum == L4Checksum::Partial
            && self
                .lender
                .as_ref()
                .is_some_and(|l| l.0.large_tcp_segments(ipv6))
    }

    /// Builds up to `lens.len()` frames whose payloads (`lens[i]` bytes after `header_room`
    /// bytes of headers) go into memory the lender lends: `peek` fills the areas in order and
    /// returns how many bytes it wrote; `write_headers(i, headers, n)` writes frame `i`'s
    /// headers for `n` bytes of payload and returns their length (`header_room` at most).
    /// A payload longer than `segment_size` (0: none may be) is one large TCP segment of
    /// segments that size ([`FrameQueue::lends_large_tcp`]).
    /// The frames are queued with only their headers here ([`FrameQueue::entries`]).
    /// Returns how many frames the lender had room for (the first ones) and the bytes peeked,
    /// or `None` without a lender, without room, or for frames with full checksums (their
    /// payload would have to be read back): the caller builds them in place then.
    pub fn push_lent(
        &mut self,
        header_room: usize,
        lens: &[usize],
        segment_size: u16,
        peek: impl FnOnce(&mut LentAreas<'_>) -> usize,
        mut write_headers: impl FnMut(usize, &mut [u8], usize) -> usize,
    ) -> Option<(usize, usize)> {
        if self.l4_checksum != L4Checksum::Partial {
            return None;
        }
        let lender = &mut self.lender.as_mut()?.0;
        let lens = &lens[..lens.len().min(MAX_LENT_FRAMES)];
        self.areas.clear();
        let frames = lender
            .reserve(header_room, lens, &mut self.areas)
            .min(lens.len());
        if frames == 0 {
            // Nothing was reserved; the lender expects no settling.
            self.areas.clear();
            return None;
        }
        let asked: usize = lens[..frames].iter().sum();
        let peeked = peek(&mut LentAreas::new(&self.areas, lender.as_mut())).min(asked);
        self.areas.clear();
        let mut filled = [0usize; MAX_LENT_FRAMES];
        let mut left = peeked;
        for (fill, &len) in filled.iter_mut().zip(&lens[..frames]) {
            *fill = left.min(len);
            left -= *fill;
        }
        let first_ticket = lender.settle(&filled[..frames]);
        for (i, &n) in filled[..frames].iter().enumerate() {
            if n == 0 {
                break;
            }
            let end = self.room(header_room);
            let start = self.used;
            let len = write_headers(i, &mut self.buf[start..end], n).min(header_room);
            let ticket = first_ticket + i as u64;
            self.push_lent_span(
                start,
                start + len,
                LentPayload {
                    len: n,
                    ticket,
                    segment_size,
                },
            );
        }
        Some((frames, peeked))
    }

    /// Queues a copy of a lent frame's headers with its payload's place in line (`lent`): a
    /// link's frames waiting for buffers keep their order so.
    pub fn push_lent_headers(&mut self, headers: &[u8], lent: LentPayload) {
        self.buf.truncate(self.used);
        let start = self.used;
        self.buf.extend_from_slice(headers);
        self.push_lent_span(start, self.buf.len(), lent);
    }

    fn push_lent_span(&mut self, start: usize, end: usize, lent: LentPayload) {
        self.spans.push(Span {
            start,
            end,
            lent: Some(lent),
        });
        self.queued += end - start + lent.len;
        self.used = end;
        self.lent_frames += 1;
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

    /// Frame `i`'s bytes (a lent frame's headers only: see [`FrameQueue::entries`]).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let span = self.spans.get(i)?;
        Some(&self.buf[span.start..span.end])
    }

    /// Frame `i`, and where its payload is if it was lent.
    pub fn entry(&self, i: usize) -> Option<(&[u8], Option<LentPayload>)> {
        let span = self.spans.get(i)?;
        Some((&self.buf[span.start..span.end], span.lent))
    }

    /// Every frame's bytes, in order; a lent frame's are its headers only, which only the
    /// link that lent its payload knows what to do with (it reads [`FrameQueue::entries`]).
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|s| &self.buf[s.start..s.end])
    }

    /// Every frame in order, with where its payload is if it was lent.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], Option<LentPayload>)> + '_ {
        self.spans
            .iter()
            .map(|s| (&self.buf[s.start..s.end], s.lent))
    }

    /// How many queued frames have lent payloads.
    pub fn lent_len(&self) -> usize {
        self.lent_frames
    }

    /// Forgets the queued frames, keeping the memory.
    pub fn clear(&mut self) {
        self.used = 0;
        self.queued = 0;
        self.spans.clear();
        self.lent_frames = 0;
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

impl Route {
    /// A route between two addresses written out, with made-up MAC addresses: for tests.
    #[cfg(test)]
    pub(crate) fn between(src: &str, dst: &str) -> Route {
        Route {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }
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

    /// Lends room for `frames` frames, keeping what is filled in a buffer of its own.
    struct TestLender {
        frames: usize,
        filled: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        settled: Vec<usize>,
    }

    impl PayloadLender for TestLender {
        fn reserve(&mut self, _room: usize, lens: &[usize], areas: &mut Vec<LentArea>) -> usize {
            let n = self.frames.min(lens.len());
            for &len in &lens[..n] {
                areas.push(LentArea { addr: 0x1000, len });
            }
            n
        }
        fn fill(&mut self, at: usize, data: &[u8]) {
            let mut filled = self.filled.borrow_mut();
            let len = filled.len().max(at + data.len());
            filled.resize(len, 0);
            filled[at..at + data.len()].copy_from_slice(data);
        }
        fn settle(&mut self, filled: &[usize]) -> u64 {
            self.settled = filled.to_vec();
            40
        }
    }

    #[test]
    fn lent_frames_queue_their_headers_with_tickets_in_order() {
        let filled = std::rc::Rc::default();
        let mut q = FrameQueue::new();
        let peek = |areas: &mut LentAreas<'_>| {
            assert_eq!(areas.total(), 30);
            areas.fill(0, b"payload of the first, and");
            25
        };
        let headers = |i: usize, h: &mut [u8], n: usize| {
            h[..3].copy_from_slice(&[i as u8, n as u8, 0xaa]);
            3
        };
        // Without a lender, or with full checksums: the caller builds the frames.
        assert_eq!(q.push_lent(8, &[20, 10], 0, peek, headers), None);
        q.set_payload_lender(Some(Box::new(TestLender {
            frames: 2,
            filled: std::rc::Rc::clone(&filled),
            settled: Vec::new(),
        })));
        assert_eq!(q.push_lent(8, &[20, 10], 0, peek, headers), None);
        q.set_l4_checksum(L4Checksum::Partial);
        q.push(|b| b.extend_from_slice(b"an ACK first"));
        // Room for two of three frames; 25 bytes peeked: 20 and 5.
        assert_eq!(
            q.push_lent(8, &[20, 10, 10], 12, peek, headers),
            Some((2, 25))
        );
        let entries: Vec<_> = q.entries().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], (&b"an ACK first"[..], None));
        let lent = |len, ticket| {
            Some(LentPayload {
                len,
                ticket,
                segment_size: 12,
            })
        };
        assert_eq!(entries[1], (&[0u8, 20, 0xaa][..], lent(20, 40)));
        assert_eq!(entries[2], (&[1u8, 5, 0xaa][..], lent(5, 41)));
        assert_eq!(q.bytes(), 12 + 3 + 20 + 3 + 5);
        assert_eq!(&filled.borrow()[..25], b"payload of the first, and");
        assert_eq!(q.lent_len(), 2);
        q.clear();
        assert_eq!(q.lent_len(), 0);
    }

    /// A lender that says whether it takes large TCP segments.
    struct LargeTcpLender(bool);

    impl PayloadLender for LargeTcpLender {
        fn reserve(&mut self, _: usize, _: &[usize], _: &mut Vec<LentArea>) -> usize {
            0
        }
        fn large_tcp_segments(&self, ipv6: bool) -> bool {
            self.0 && ipv6
        }
        fn fill(&mut self, _: usize, _: &[u8]) {}
        fn settle(&mut self, _: &[usize]) -> u64 {
            0
        }
    }

    #[test]
    fn large_tcp_segments_are_lent_only_where_the_lender_takes_them_unfinished() {
        let mut q = FrameQueue::new();
        q.set_l4_checksum(L4Checksum::Partial);
        assert!(!q.lends_large_tcp(true), "no lender");
        q.set_payload_lender(Some(Box::new(LargeTcpLender(true))));
        assert!(q.lends_large_tcp(true));
        assert!(!q.lends_large_tcp(false), "the lender's answer per family");
        q.set_l4_checksum(L4Checksum::Full);
        assert!(!q.lends_large_tcp(true), "full checksums are never lent");
        q.set_l4_checksum(L4Checksum::Partial);
        q.set_payload_lender(Some(Box::new(LargeTcpLender(false))));
        assert!(!q.lends_large_tcp(true));
    }
}
