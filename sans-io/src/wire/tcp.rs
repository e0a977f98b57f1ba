//! TCP segments: a zero-copy view of the guest's ([`parse`]) and an emitter that writes ours
//! in place ([`write_frame`]), around a payload already sitting in the frame buffer.
//!
//! Checksums of the guest's segments are not verified: the link is virtual (a tap device or
//! qemu's socket), and the data is checked end to end by the host's TCP anyway. Ours are
//! always filled in.

use std::net::IpAddr;

use super::build::{ip_header_len, write_eth_ip, FrameQueue, Route};
use super::external::{ExternalPayload, Payload};
use super::offload::{partial_sum, set_transport_checksum, L4Checksum};
use super::parse::{bytes_at, ip_proto, ETH_HEADER_LEN};

/// A TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
/// The largest window scale shift (RFC 7323 section 2.3).
pub const MAX_WSCALE: u8 = 14;

pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// A TCP segment from the guest.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: &'a [u8],
    /// The payload in the frame we parsed (all of it, but for a frame whose rest the link
    /// left in the guest's memory: see `rest`).
    pub payload: &'a [u8],
    /// The payload beyond the frame's copied head, where a link left it in place.
    pub rest: Option<ExternalPayload>,
}

impl<'a> Segment<'a> {
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// All of the payload, wherever it lies.
    pub fn data(&self) -> Payload<'a> {
        Payload {
            bytes: self.payload,
            rest: self.rest,
        }
    }

    /// Sequence space the segment occupies: payload, SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.data().len() as u32 + u32::from(self.has(flags::SYN)) + u32::from(self.has(flags::FIN))
    }
}

/// Why a guest segment isn't TCP we can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    #[error("shorter than its header")]
    Short,
    #[error("data offset out of bounds")]
    DataOffset,
    /// In IP fragments: we don't reassemble, and guests don't fragment TCP.
    #[error("fragmented")]
    Fragmented,
}

#[inline]
pub fn parse(segment: &[u8]) -> Result<Segment<'_>, TcpError> {
    if segment.len() < TCP_HEADER_LEN {
        return Err(TcpError::Short);
    }
    let header_len = usize::from(segment[12] >> 4) * 4;
    if header_len < TCP_HEADER_LEN || header_len > segment.len() {
        return Err(TcpError::DataOffset);
    }
    let be32 = |at: usize| u32::from_be_bytes(bytes_at(segment, at));
    Ok(Segment {
        src_port: u16::from_be_bytes([segment[0], segment[1]]),
        dst_port: u16::from_be_bytes([segment[2], segment[3]]),
        seq: be32(4),
        ack: be32(8),
        flags: segment[13],
        window: u16::from_be_bytes([segment[14], segment[15]]),
        options: &segment[TCP_HEADER_LEN..header_len],
        payload: &segment[header_len..],
        rest: None,
    })
}

/// The options we care about in a SYN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    /// Window scale shift, clamped to [`MAX_WSCALE`].
    pub wscale: Option<u8>,
}

/// Reads MSS and window scale from an options area; stops quietly at anything malformed.
pub fn syn_options(mut opts: &[u8]) -> SynOptions {
    let mut out = SynOptions::default();
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > opts.len() {
            break;
        }
        match (kind, len) {
            (2, 4) => out.mss = Some(u16::from_be_bytes([opts[2], opts[3]])),
            (3, 3) => out.wscale = Some(opts[2].min(MAX_WSCALE)),
            _ => {}
        }
        opts = &opts[len..];
    }
    out
}

/// The header of a segment we send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Options, for SYNs.
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
}

impl Header {
    fn options_len(&self) -> usize {
        (if self.mss.is_some() { 4 } else { 0 }) + (if self.wscale.is_some() { 4 } else { 0 })
    }
}

/// Where the payload starts in a frame for `route` with header `h`.
pub fn payload_offset(route: &Route, h: &Header) -> usize {
    ETH_HEADER_LEN + ip_header_len(route) + TCP_HEADER_LEN + h.options_len()
}

/// Writes the Ethernet, IP and TCP headers of a frame whose `payload_len` bytes of payload
/// already sit at [`payload_offset`] in `frame`; returns the frame's length. `frame` must hold
/// at least that much (the caller sized it).
pub fn write_frame(
    frame: &mut [u8],
    route: &Route,
    h: &Header,
    payload_len: usize,
    csum: L4Checksum,
) -> usize {
    let (start, src, dst) = write_header_fields(frame, route, h, payload_len);
    let total = start + TCP_HEADER_LEN + h.options_len() + payload_len;
    set_transport_checksum(&mut frame[start..total], 16, src, dst, ip_proto::TCP, csum);
    total
}

/// Writes the Ethernet, IP and TCP headers of a frame of `payload_len` bytes of payload kept
/// elsewhere (lent memory, see [`crate::wire::lent`]) into `headers`, with the checksum left
/// for the device to finish (the payload is never read); returns the headers' length, which
/// is [`payload_offset`]. `headers` must hold that much.
pub fn write_headers_partial(
    headers: &mut [u8],
    route: &Route,
    h: &Header,
    payload_len: usize,
) -> usize {
    let (start, src, dst) = write_header_fields(headers, route, h, payload_len);
    let tcp_len = TCP_HEADER_LEN + h.options_len();
    let sum = partial_sum(src, dst, ip_proto::TCP, tcp_len + payload_len);
    headers[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
    start + tcp_len
}

/// The headers with the checksum field zero; returns where TCP starts and the addresses.
fn write_header_fields(
    frame: &mut [u8],
    route: &Route,
    h: &Header,
    payload_len: usize,
) -> (usize, IpAddr, IpAddr) {
    let ip_len = ip_header_len(route);
    let tcp_len = TCP_HEADER_LEN + h.options_len();
    let l4_len = tcp_len + payload_len;

    let (src, dst) = write_eth_ip(frame, route, ip_proto::TCP, l4_len);
    let start = ETH_HEADER_LEN + ip_len;
    let t = &mut frame[start..start + tcp_len];
    t[0..2].copy_from_slice(&h.src_port.to_be_bytes());
    t[2..4].copy_from_slice(&h.dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&h.seq.to_be_bytes());
    t[8..12].copy_from_slice(&h.ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = h.flags;
    t[14..16].copy_from_slice(&h.window.to_be_bytes());
    t[16..20].copy_from_slice(&[0, 0, 0, 0]);
    let mut at = TCP_HEADER_LEN;
    if let Some(mss) = h.mss {
        t[at..at + 4].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
        at += 4;
    }
    if let Some(ws) = h.wscale {
        t[at..at + 4].copy_from_slice(&[1, 3, 3, ws]);
    }
    (start, src, dst)
}

/// Queues a frame carrying a copy of `payload` (control segments, tests).
pub fn frame(out: &mut FrameQueue, route: &Route, h: &Header, payload: &[u8]) {
    let off = payload_offset(route, h);
    let csum = out.l4_checksum();
    out.push_in_place(off + payload.len(), |buf| {
        buf[off..off + payload.len()].copy_from_slice(payload);
        write_frame(buf, route, h, payload.len(), csum)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{checksum, parse as p};
    use proptest::prelude::*;

    #[test]
    fn frames_parse_back_with_valid_checksums() {
        let mut q = FrameQueue::new();
        let h = Header {
            src_port: 80,
            dst_port: 40000,
            seq: 0xdead_beef,
            ack: 7,
            flags: flags::SYN | flags::ACK,
            window: 1234,
            mss: Some(1460),
            wscale: Some(8),
        };
        frame(&mut q, &Route::between("192.0.2.1", "192.0.2.2"), &h, b"");
        let d = Header {
            mss: None,
            wscale: None,
            flags: flags::ACK | flags::PSH,
            ..h
        };
        frame(
            &mut q,
            &Route::between("2001:db8::1", "2001:db8::2"),
            &d,
            b"hello",
        );

        let eth = p::ethernet(q.get(0).unwrap()).unwrap();
        let ip = p::ipv4(eth.payload).unwrap();
        assert_eq!(ip.protocol, ip_proto::TCP);
        assert_eq!(
            checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::TCP, ip.payload),
            0
        );
        let s = parse(ip.payload).unwrap();
        assert_eq!(
            (s.src_port, s.dst_port, s.seq, s.ack, s.window),
            (80, 40000, 0xdead_beef, 7, 1234)
        );
        assert!(s.has(flags::SYN) && s.has(flags::ACK) && !s.has(flags::FIN));
        assert_eq!(
            syn_options(s.options),
            SynOptions {
                mss: Some(1460),
                wscale: Some(8)
            }
        );
        assert_eq!(s.seq_len(), 1);

        let eth = p::ethernet(q.get(1).unwrap()).unwrap();
        let ip = p::ipv6(eth.payload).unwrap();
        assert_eq!(
            checksum::transport(ip.src.into(), ip.dst.into(), ip_proto::TCP, ip.payload),
            0
        );
        let s = parse(ip.payload).unwrap();
        assert_eq!(s.payload, b"hello");
        assert!(s.options.is_empty());
    }

    #[test]
    fn options_with_padding_and_unknown_kinds() {
        // NOP, NOP, timestamps, MSS, SACK permitted, NOP, window scale 20 (clamped), EOL.
        let o = [
            1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 2, 4, 0x05, 0xb4, 4, 2, 1, 3, 3, 20, 0,
        ];
        assert_eq!(
            syn_options(&o),
            SynOptions {
                mss: Some(1460),
                wscale: Some(14)
            }
        );
        // A zero length doesn't loop forever.
        assert_eq!(syn_options(&[5, 0, 2, 4, 1, 1]), SynOptions::default());
    }

    proptest! {
        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(s) = parse(&data) {
                let _ = syn_options(s.options);
            }
        }
    }
}
