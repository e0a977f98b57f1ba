//! Runs of frames one write can carry: segmentation offload towards a device; and cutting
//! the UDP runs a device hands us whole into their datagrams ([`cut_udp_run`]).
//!
//! A device with a virtio-net header in front of each frame (pasta's tap, opened with
//! `IFF_VNET_HDR`) takes one large frame and a segment size and cuts it into frames itself,
//! each with its own headers: UDP datagrams (`VIRTIO_NET_HDR_GSO_UDP_L4`, the kernel's
//! `__udp_gso_segment`, Linux 6.2 and later) and TCP segments (`VIRTIO_NET_HDR_GSO_TCPV4`,
//! `_TCPV6`, `tcp_gso_segment`: each segment's sequence number advances, PSH stays on the
//! last only, which is where a sender's stack puts it: ours sets it on every segment, which a
//! receiver takes as no more than a hint to pass data on). Frames that follow each other in
//! the output queue, of one flow and one payload size (the last may be shorter), TCP segments
//! in sequence with the same acknowledgement and window, are such a frame: one system call instead of one per frame, and the transport
//! checksum is left for the device to finish (which, delivering locally, never computes it; a
//! TCP run is taken whole by the namespace's stack, as a GRO'd packet is). Only the frames
//! the engine builds are meant: IPv4 without options or fragments, IPv6 without extension
//! headers; anything else is no run and goes on its own.

use super::checksum;
use super::offload::{addresses, partial_sum, ChecksumAt};
use super::parse::{
    ethertype, ip_proto, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN,
};
use super::tcp::flags;

/// Frames one run carries at most: what every kernel with UDP segmentation takes
/// (`UDP_MAX_SEGMENTS` was 64 before it grew), and as many for TCP.
pub const MAX_SEGMENTS: usize = 64;

/// The longest headers of a run's frame: Ethernet, IPv6, TCP with 40 bytes of options.
pub const MAX_HEADER_LEN: usize = ETH_HEADER_LEN + IPV6_HEADER_LEN + TCP_MAX_HEADER_LEN;

const TCP_MIN_HEADER_LEN: usize = 20;
const TCP_MAX_HEADER_LEN: usize = 60;

/// The most a run's IP packet holds: its length fields are 16 bits.
const MAX_IP_PACKET: usize = u16::MAX as usize;

/// What a run carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A run of frames to send as one segmented frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub transport: Transport,
    /// Whether the frames are IPv6 (the device is told which TCP it segments).
    pub ipv6: bool,
    /// How many frames, from the first: at least two.
    pub frames: usize,
    /// Each frame's headers (Ethernet, IP, transport): its payload starts there.
    pub header_len: usize,
    /// The payload of every frame but the last, which may be shorter.
    pub segment_size: u16,
    /// The payload bytes of all of them.
    pub payload_len: usize,
}

/// A frame of ours a run may take: where its headers end and what it carries.
#[derive(Debug, Clone, Copy)]
struct Piece {
    transport: Transport,
    /// Where the transport header starts.
    l4: usize,
    header_len: usize,
    payload_len: usize,
}

/// The frame's layout if it is a UDP datagram or TCP segment a run may take: plain IP headers
/// whose lengths say what the frame holds, payload, and for TCP no flag but ACK and PSH.
fn piece(frame: &[u8]) -> Option<Piece> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH_HEADER_LEN..)?;
    let (ip_len, protocol, ip_total) = match ethertype {
        ethertype::IPV4 => {
            let plain = ip.len() >= IPV4_HEADER_LEN
                && ip[0] == 0x45
                // No fragment: MF clear, offset zero (DF may be either).
                && u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
            if !plain {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            (IPV4_HEADER_LEN, ip[9], total)
        }
        ethertype::IPV6 => {
            if ip.len() < IPV6_HEADER_LEN || ip[0] >> 4 != 6 {
                return None;
            }
            let total = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            (IPV6_HEADER_LEN, ip[6], total)
        }
        _ => return None,
    };
    // The lengths must say what the frame holds: a run rewrites them from its frames' sizes.
    if ip_total != frame.len() - ETH_HEADER_LEN {
        return None;
    }
    let l4 = ETH_HEADER_LEN + ip_len;
    let (transport, header_len) = match protocol {
        ip_proto::UDP => {
            let udp = frame.get(l4..l4 + UDP_HEADER_LEN)?;
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            if udp_len != ip_total - ip_len {
                return None;
            }
            (Transport::Udp, l4 + UDP_HEADER_LEN)
        }
        ip_proto::TCP => {
            let tcp = frame.get(l4..l4 + TCP_MIN_HEADER_LEN)?;
            let len = usize::from(tcp[12] >> 4) * 4;
            let only_ack_psh =
                tcp[13] & !(flags::ACK | flags::PSH) == 0 && tcp[13] & flags::ACK != 0;
            if len < TCP_MIN_HEADER_LEN || !only_ack_psh || frame.len() < l4 + len {
                return None;
            }
            (Transport::Tcp, l4 + len)
        }
        _ => return None,
    };
    Some(Piece {
        transport,
        l4,
        header_len,
        payload_len: frame.len() - header_len,
    })
}

/// Whether `frame`'s headers match `first`'s where a run needs them to: the same Ethernet
/// header, the same IP header but for lengths, checksum and identification, the same
/// transport header but for what each frame of the run has of its own (UDP: length and
/// checksum; TCP: sequence number, PSH and checksum).
fn same_flow(first: &[u8], frame: &[u8], p: &Piece) -> bool {
    let ip = ETH_HEADER_LEN;
    let ip_same = if p.l4 - ip == IPV4_HEADER_LEN {
        // Version, TOS; flags; TTL, protocol; addresses. Not the total length (2..4), the
        // identification (4..6) or the header checksum (10..12).
        first[ip..ip + 2] == frame[ip..ip + 2]
            && first[ip + 6..ip + 10] == frame[ip + 6..ip + 10]
            && first[ip + 12..ip + 20] == frame[ip + 12..ip + 20]
    } else {
        // Version, class, flow label; next header, hop limit; addresses. Not the payload
        // length (4..6).
        first[ip..ip + 4] == frame[ip..ip + 4] && first[ip + 6..ip + 40] == frame[ip + 6..ip + 40]
    };
    let l4 = p.l4;
    let transport_same = match p.transport {
        // Ports.
        Transport::Udp => first[l4..l4 + 4] == frame[l4..l4 + 4],
        // Ports; acknowledgement, header length; window, urgent pointer, options. Not the
        // sequence number (4..8), the flags (13, PSH may differ) or the checksum (16..18).
        Transport::Tcp => {
            first[l4..l4 + 4] == frame[l4..l4 + 4]
                && first[l4 + 8..l4 + 13] == frame[l4 + 8..l4 + 13]
                && first[l4 + 14..l4 + 16] == frame[l4 + 14..l4 + 16]
                && first[l4 + 18..p.header_len] == frame[l4 + 18..p.header_len]
        }
    };
    first[..ETH_HEADER_LEN] == frame[..ETH_HEADER_LEN] && ip_same && transport_same
}

fn tcp_seq(frame: &[u8], l4: usize) -> u32 {
    u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]])
}

fn tcp_psh(frame: &[u8], l4: usize) -> bool {
    frame[l4 + 13] & flags::PSH != 0
}

/// The run that starts with `frames`' first: consecutive frames of one flow, each
/// `segment_size` bytes of payload but the last, which may be shorter (TCP: in sequence; the
/// device leaves PSH on the last only), at most [`MAX_SEGMENTS`] of them and one IP packet's
/// worth together. `None` when the first frame can't start one or nothing joins it.
pub fn run<'a>(mut frames: impl Iterator<Item = &'a [u8]>) -> Option<Run> {
    let first = frames.next()?;
    let head = piece(first)?;
    let segment_size = head.payload_len;
    if segment_size == 0 {
        // Nothing to cut a frame into.
        return None;
    }
    let max_payload = MAX_IP_PACKET - (head.header_len - ETH_HEADER_LEN);
    let mut run = Run {
        transport: head.transport,
        ipv6: head.l4 - ETH_HEADER_LEN == IPV6_HEADER_LEN,
        frames: 1,
        header_len: head.header_len,
        segment_size: u16::try_from(segment_size).ok()?,
        payload_len: segment_size,
    };
    let mut next_seq = tcp_seq(first, head.l4).wrapping_add(segment_size as u32);
    for frame in frames {
        if run.frames == MAX_SEGMENTS {
            break;
        }
        let Some(next) = piece(frame).filter(|p| {
            p.transport == head.transport && p.header_len == head.header_len && p.l4 == head.l4
        }) else {
            break;
        };
        let fits = next.payload_len <= segment_size
            && next.payload_len > 0
            && run.payload_len + next.payload_len <= max_payload;
        if !fits || !same_flow(first, frame, &next) {
            break;
        }
        if head.transport == Transport::Tcp {
            if tcp_seq(frame, head.l4) != next_seq {
                break;
            }
            next_seq = next_seq.wrapping_add(next.payload_len as u32);
        }
        run.frames += 1;
        run.payload_len += next.payload_len;
        if next.payload_len < segment_size {
            // A shorter frame is where the device's cutting ends.
            break;
        }
    }
    (run.frames >= 2).then_some(run)
}

/// The headers of the one frame that carries `run`, written into `out` from the run's first
/// frame (and, for TCP, the PSH of its `last`): the lengths those of the whole, the IPv4 header
/// checksum redone, the transport checksum the pseudo-header sum of the whole (the device
/// adjusts it to each piece's length and finishes it). The headers are `run.header_len`
/// bytes; returns where the checksum is, or `None` if `first` isn't the frame [`run`]
/// measured `run` from.
pub fn run_headers(
    first: &[u8],
    last: &[u8],
    run: &Run,
    out: &mut [u8; MAX_HEADER_LEN],
) -> Option<ChecksumAt> {
    let hl = run.header_len;
    let out = &mut out[..hl];
    out.copy_from_slice(first.get(..hl)?);
    let ip = ETH_HEADER_LEN;
    let l4 = ip
        + if run.ipv6 {
            IPV6_HEADER_LEN
        } else {
            IPV4_HEADER_LEN
        };
    let l4_len = hl - l4 + run.payload_len;
    if run.ipv6 {
        out[ip + 4..ip + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        let total = (IPV4_HEADER_LEN + l4_len) as u16;
        out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        out[ip + 10..ip + 12].fill(0);
        let sum = checksum::of(&out[ip..ip + IPV4_HEADER_LEN]);
        out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    }
    let (src, dst, protocol) = addresses(out)?;
    let field = match run.transport {
        Transport::Udp => {
            out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            6
        }
        Transport::Tcp => {
            // The device puts the frame's PSH on its last segment: the last frame's.
            out[l4 + 13] &= !flags::PSH;
            if tcp_psh(last.get(..hl)?, l4) {
                out[l4 + 13] |= flags::PSH;
            }
            16
        }
    };
    let sum = partial_sum(src, dst, protocol, l4_len);
    out[l4 + field..l4 + field + 2].copy_from_slice(&sum.to_be_bytes());
    Some(ChecksumAt {
        start: l4 as u16,
        offset: field as u16,
    })
}

/// Datagrams a cut run may give at most: what the kernel's UDP segmentation makes of one
/// send (`UDP_MAX_SEGMENTS`, 128 since Linux 5.8). A device that says it sent more is not one
/// we know: its frame is no run to cut.
pub const MAX_CUT_SEGMENTS: usize = 128;

/// Cuts a UDP run a device handed us as one frame (the namespace's or a guest's UDP
/// segmentation offload: `VIRTIO_NET_HDR_GSO_UDP_L4` with `segment_size`) into its
/// datagrams, each as the device would have sent it had it cut the run itself
/// (`__udp_gso_segment`): `segment_size` bytes of payload, the last maybe shorter; its own
/// lengths; the IPv4 identification one more than the one before and the header checksum
/// redone; the UDP checksum left as the pseudo-header sum, as every frame whose checksum the
/// device leaves to us holds it (the engine never reads it; captures finish it). Appends each
/// frame to `out` and its length to `lens`, and returns how many.
///
/// `None` when `frame` is no run we can cut: not IPv4 or IPv6 UDP (options and extension
/// headers go with every datagram), a fragment, lengths that don't fit the frame, a zero segment size, or more than
/// [`MAX_CUT_SEGMENTS`] datagrams. The frame claims to be a run, so it is not one datagram
/// either: drop it.
pub fn cut_udp_run(
    frame: &[u8],
    segment_size: usize,
    out: &mut Vec<u8>,
    lens: &mut Vec<usize>,
) -> Option<usize> {
    let ip = ETH_HEADER_LEN;
    let h = frame.get(ip..)?;
    let (l4, ip_end, ipv6) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ethertype::IPV4 if h.len() >= IPV4_HEADER_LEN => {
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let fragmented = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
            if h[0] >> 4 != 4 || ihl < IPV4_HEADER_LEN || h[9] != ip_proto::UDP || fragmented {
                return None;
            }
            (
                ip + ihl,
                ip + usize::from(u16::from_be_bytes([h[2], h[3]])),
                false,
            )
        }
        ethertype::IPV6 => {
            // Extension headers (an application's options, say) go with every datagram.
            let v6 = super::parse::ipv6(h).ok()?;
            if v6.next_header != ip_proto::UDP || v6.fragmented {
                return None;
            }
            let l4 = ip + v6.header_len;
            let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (l4, ip + IPV6_HEADER_LEN + payload_len, true)
        }
        _ => return None,
    };
    let header_len = l4 + UDP_HEADER_LEN;
    if segment_size == 0 || ip_end > frame.len() || ip_end < header_len {
        return None;
    }
    // Past the IP packet's end is the link's padding.
    let payload = &frame[header_len..ip_end];
    let count = payload.len().div_ceil(segment_size).max(1);
    if count > MAX_CUT_SEGMENTS {
        return None;
    }
    let (src, dst, _) = addresses(frame)?;
    let first_id = u16::from_be_bytes([frame[ip + 4], frame[ip + 5]]);
    // What every datagram's checksums share, summed once: the pseudo-header but its length,
    // the IPv4 header but its length, identification and checksum (the sum is linear: each
    // datagram adds its own fields).
    let pseudo = checksum::pseudo_header(src, dst, ip_proto::UDP, 0);
    let ip_base = if ipv6 {
        0
    } else {
        let mut header = [0u8; 60];
        let header = &mut header[..l4 - ip];
        header.copy_from_slice(&frame[ip..l4]);
        header[2..6].fill(0);
        header[10..12].fill(0);
        checksum::add(0, header)
    };
    out.reserve(count * header_len + payload.len());
    for i in 0..count {
        let chunk = &payload
            [(i * segment_size).min(payload.len())..((i + 1) * segment_size).min(payload.len())];
        let start = out.len();
        out.extend_from_slice(&frame[..header_len]);
        out.extend_from_slice(chunk);
        let f = &mut out[start..];
        let udp_len = UDP_HEADER_LEN + chunk.len();
        if ipv6 {
            let payload_len = (l4 - ip - IPV6_HEADER_LEN + udp_len) as u16;
            f[ip + 4..ip + 6].copy_from_slice(&payload_len.to_be_bytes());
        } else {
            let total = (l4 - ip + udp_len) as u16;
            f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            let id = first_id.wrapping_add(i as u16);
            f[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
            let sum = checksum::finish(ip_base + u64::from(total) + u64::from(id));
            f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
        }
        f[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        // As `partial_sum` has it: the folded pseudo-header sum, not complemented.
        let sum = !checksum::finish(pseudo + udp_len as u64);
        f[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
        lens.push(header_len + chunk.len());
    }
    Some(count)
}

#[cfg(test)]
mod tests;
