//! Runs of UDP frames one write can carry: UDP segmentation offload towards a device.
//!
//! A device with a virtio-net header in front of each frame (pasta's tap, opened with
//! `IFF_VNET_HDR`) takes one large UDP frame with `VIRTIO_NET_HDR_GSO_UDP_L4` and cuts it into
//! datagrams of `gso_size` bytes itself, each with its own IP and UDP header (the kernel's
//! `__udp_gso_segment`; Linux 6.2 and later). Datagrams from the host that follow each other
//! in the output queue, of one flow and one size (the last may be shorter), are such a frame:
//! one system call instead of one per datagram, and the transport checksum is left for the
//! device to finish (which, delivering locally, never computes it). Only the frames the
//! engine builds are meant: IPv4 without options or fragments, IPv6 without extension
//! headers; anything else is no run and goes on its own.

use super::checksum;
use super::offload::{addresses, partial_sum, ChecksumAt};
use super::parse::{
    ethertype, ip_proto, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, UDP_HEADER_LEN,
};

/// Segments one frame may carry at most: what every kernel with the offload takes
/// (`UDP_MAX_SEGMENTS` was 64 before it grew).
pub const MAX_SEGMENTS: usize = 64;

/// The longest headers of a run's frame: Ethernet, IPv6, UDP.
pub const MAX_HEADER_LEN: usize = ETH_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

/// The most payload one segmented frame carries: the IP length fields are 16 bits (IPv4's
/// counts its own header too).
const MAX_PAYLOAD: usize = u16::MAX as usize - IPV4_HEADER_LEN - UDP_HEADER_LEN;

/// A run of frames to send as one segmented frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRun {
    /// How many frames, from the first: at least two.
    pub frames: usize,
    /// Each frame's headers (Ethernet, IP, UDP): its payload starts there.
    pub header_len: usize,
    /// The payload of every datagram but the last, which may be shorter.
    pub segment_size: u16,
    /// The payload bytes of all of them.
    pub payload_len: usize,
}

/// The headers of a UDP frame of ours and what a run compares: everything of the first
/// frame's headers but the lengths, the checksums and IPv4's identification must be the same.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    header_len: usize,
    payload_len: usize,
}

/// The frame's headers and payload if it is a UDP datagram a run may take.
fn datagram(frame: &[u8]) -> Option<Datagram> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH_HEADER_LEN..)?;
    let (ip_len, ip_total) = match ethertype {
        ethertype::IPV4 => {
            let plain = ip.len() >= IPV4_HEADER_LEN
                && ip[0] == 0x45
                && ip[9] == ip_proto::UDP
                // No fragment: MF clear, offset zero (DF may be either).
                && u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
            if !plain {
                return None;
            }
            (
                IPV4_HEADER_LEN,
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
            )
        }
        ethertype::IPV6 => {
            if ip.len() < IPV6_HEADER_LEN || ip[0] >> 4 != 6 || ip[6] != ip_proto::UDP {
                return None;
            }
            (
                IPV6_HEADER_LEN,
                IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            )
        }
        _ => return None,
    };
    let header_len = ETH_HEADER_LEN + ip_len + UDP_HEADER_LEN;
    let udp = frame.get(ETH_HEADER_LEN + ip_len..header_len)?;
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // The lengths must say what the frame holds: a run rewrites them from its frames' sizes.
    let consistent = ip_total == frame.len() - ETH_HEADER_LEN && udp_len == ip_total - ip_len;
    consistent.then(|| Datagram {
        header_len,
        payload_len: frame.len() - header_len,
    })
}

/// Whether `frame`'s headers match `first`'s where a run needs them to: the same Ethernet
/// header, the same IP header but for lengths, checksum and identification, the same ports.
fn same_flow(first: &[u8], frame: &[u8], header_len: usize) -> bool {
    if frame.len() < header_len {
        return false;
    }
    let udp = header_len - UDP_HEADER_LEN;
    let ip_same = if header_len - UDP_HEADER_LEN - ETH_HEADER_LEN == IPV4_HEADER_LEN {
        // Version, TOS; flags; TTL, protocol; addresses. Not the total length (2..4), the
        // identification (4..6) or the header checksum (10..12).
        let ip = ETH_HEADER_LEN;
        first[ip..ip + 2] == frame[ip..ip + 2]
            && first[ip + 6..ip + 10] == frame[ip + 6..ip + 10]
            && first[ip + 12..ip + 20] == frame[ip + 12..ip + 20]
    } else {
        // Version, class, flow label; next header, hop limit; addresses. Not the payload
        // length (4..6).
        let ip = ETH_HEADER_LEN;
        first[ip..ip + 4] == frame[ip..ip + 4] && first[ip + 6..ip + 40] == frame[ip + 6..ip + 40]
    };
    first[..ETH_HEADER_LEN] == frame[..ETH_HEADER_LEN]
        && ip_same
        && first[udp..udp + 4] == frame[udp..udp + 4]
}

/// The run of UDP datagrams that starts with `frames`' first: consecutive frames of one flow,
/// each `segment_size` bytes of payload but the last, which may be shorter, at most
/// [`MAX_SEGMENTS`] of them and fewer than 64 KiB together. `None` when the first frame isn't
/// such a datagram or nothing joins it.
pub fn udp_run<'a>(mut frames: impl Iterator<Item = &'a [u8]>) -> Option<UdpRun> {
    let first = frames.next()?;
    let head = datagram(first)?;
    let segment_size = head.payload_len;
    if segment_size == 0 {
        // Nothing to cut a frame into.
        return None;
    }
    let mut run = UdpRun {
        frames: 1,
        header_len: head.header_len,
        segment_size: u16::try_from(segment_size).ok()?,
        payload_len: segment_size,
    };
    for frame in frames {
        if run.frames == MAX_SEGMENTS {
            break;
        }
        let Some(next) = datagram(frame).filter(|d| d.header_len == head.header_len) else {
            break;
        };
        let fits = next.payload_len <= segment_size
            && next.payload_len > 0
            && run.payload_len + next.payload_len <= MAX_PAYLOAD;
        if !fits || !same_flow(first, frame, head.header_len) {
            break;
        }
        run.frames += 1;
        run.payload_len += next.payload_len;
        if next.payload_len < segment_size {
            // A shorter datagram is where the device's cutting ends.
            break;
        }
    }
    (run.frames >= 2).then_some(run)
}

/// The headers of the one frame that carries `run`, written into `out` from the run's first
/// frame: the lengths those of the whole, the IPv4 header checksum redone, the UDP checksum the
/// pseudo-header sum of the whole (the device adjusts it to each datagram's length and
/// finishes it). The headers are `run.header_len` bytes; returns where the checksum is, or
/// `None` if `first` isn't the frame [`udp_run`] measured `run` from.
pub fn run_headers(
    first: &[u8],
    run: &UdpRun,
    out: &mut [u8; MAX_HEADER_LEN],
) -> Option<ChecksumAt> {
    let hl = run.header_len;
    let out = &mut out[..hl];
    out.copy_from_slice(first.get(..hl)?);
    let udp_len = UDP_HEADER_LEN + run.payload_len;
    let ip = ETH_HEADER_LEN;
    let udp = hl - UDP_HEADER_LEN;
    if udp - ip == IPV4_HEADER_LEN {
        let total = (IPV4_HEADER_LEN + udp_len) as u16;
        out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        out[ip + 10..ip + 12].fill(0);
        let sum = checksum::of(&out[ip..ip + IPV4_HEADER_LEN]);
        out[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    } else {
        out[ip + 4..ip + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    }
    let (src, dst, _) = addresses(out)?;
    out[udp + 4..udp + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = partial_sum(src, dst, ip_proto::UDP, udp_len);
    out[udp + 6..udp + 8].copy_from_slice(&sum.to_be_bytes());
    Some(ChecksumAt {
        start: udp as u16,
        offset: 6,
    })
}

#[cfg(test)]
mod tests;
