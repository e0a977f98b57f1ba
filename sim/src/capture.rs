//! Looking at transcripts: TCP segments decoded from the frames (independently of the engine's
//! parser), and pcap files for a human look.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sans_io::time::Instant;

use crate::world::{Direction, Transcript};

/// TCP flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A TCP segment as it crossed the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub at: Instant,
    pub dir: Direction,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field as sent (unscaled).
    pub window: u16,
    pub payload_len: usize,
    /// The MSS option, on SYNs.
    pub mss: Option<u16>,
    /// The window scale option, on SYNs.
    pub wscale: Option<u8>,
}

impl Segment {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// Decodes a frame's TCP segment, if it carries a whole one.
pub fn tcp_segment(at: Instant, dir: Direction, frame: &[u8]) -> Option<Segment> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let ip = frame.get(14..)?;
    let (src, dst, tcp) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?));
            if *ip.get(9)? != 6 || total > ip.len() || ihl < 20 {
                return None;
            }
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                ip.get(ihl..total)?,
            )
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?));
            if *ip.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                ip.get(40..40 + plen)?,
            )
        }
        _ => return None,
    };
    let be16 = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(tcp.get(at..at + 2)?.try_into().ok()?))
    };
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(tcp.get(at..at + 4)?.try_into().ok()?))
    };
    let off = usize::from(tcp.get(12)? >> 4) * 4;
    if off < 20 || off > tcp.len() {
        return None;
    }
    let (mut mss, mut wscale) = (None, None);
    let mut opts = &tcp[20..off];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if len < 2 || len > opts.len() {
                    break;
                }
                match (kind, len) {
                    (2, 4) => mss = Some(u16::from_be_bytes([opts[2], opts[3]])),
                    (3, 3) => wscale = Some(opts[2]),
                    _ => {}
                }
                opts = &opts[len..];
            }
        }
    }
    Some(Segment {
        at,
        dir,
        src: SocketAddr::new(src, be16(0)?),
        dst: SocketAddr::new(dst, be16(2)?),
        seq: be32(4)?,
        ack: be32(8)?,
        flags: tcp[13],
        window: be16(14)?,
        payload_len: tcp.len() - off,
        mss,
        wscale,
    })
}

/// Every TCP segment in a transcript.
pub fn tcp_segments(t: &[(Instant, Direction, Vec<u8>)]) -> Vec<Segment> {
    t.iter()
        .filter_map(|(at, dir, f)| tcp_segment(*at, *dir, f))
        .collect()
}

/// A pcap file (Ethernet link type, microsecond timestamps) of a transcript.
pub fn pcap(t: &Transcript) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (at, _, frame) in t {
        let us = at.as_nanos() / 1000;
        out.extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}
