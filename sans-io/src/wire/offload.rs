//! Transport checksums of frames to the guest, in full or left for the device to finish.
//!
//! A device with a virtio-net header in front of each frame (a vhost-user guest that
//! negotiated `VIRTIO_NET_F_GUEST_CSUM`; a tap opened with `IFF_VNET_HDR` could too) can take
//! TCP and UDP frames whose checksum is only begun: the field holds the pseudo-header sum and
//! the header says where the checksum starts and where it goes (`VIRTIO_NET_HDR_F_NEEDS_CSUM`,
//! the kernel's `CHECKSUM_PARTIAL`). A kernel delivering such a frame locally neither computes
//! nor verifies the checksum, so neither we nor the guest's kernel pass over the payload for
//! it; one that forwards the frame on finishes it first. Measured: a guest under TCG moves
//! 1.3-2x the data through vhost-user with it. pasta's tap takes it for UDP only
//! ([`L4Checksum::PartialUdp`]): datagrams to the namespace moved 1.2x with it; TCP segments
//! moved *less* (by 20-50 %) in two sessions, and level in a third (6 % less CPU per GB, the
//! time saved spent in more wake-ups), so they stay complete (BENCHMARKS.md). The
//! driver chooses the mode for its output queue ([`crate::wire::FrameQueue::set_l4_checksum`]);
//! every TCP and UDP frame the engine builds then follows it, and [`L4Checksum::left_at`]
//! tells the driver what to put in each frame's header.

use std::net::IpAddr;

use super::checksum;
use super::parse::{ethertype, ip_proto, ETH_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN};

/// How the transport checksum of TCP and UDP frames to the guest is filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4Checksum {
    /// Computed in full: the frame is valid as it stands (the qemu socket, captures).
    #[default]
    Full,
    /// Only the pseudo-header sum, for the device to finish.
    Partial,
    /// Only the pseudo-header sum for UDP, TCP's in full.
    PartialUdp,
}

impl L4Checksum {
    /// How the checksum of a segment of `protocol` is filled in: in full or partly.
    fn for_protocol(self, protocol: u8) -> L4Checksum {
        match (self, protocol) {
            (L4Checksum::PartialUdp, ip_proto::UDP) | (L4Checksum::Partial, _) => {
                L4Checksum::Partial
            }
            _ => L4Checksum::Full,
        }
    }

    /// Where a frame of ours built under this mode has its checksum left for the device:
    /// `None` if it went complete.
    pub fn left_at(self, frame: &[u8]) -> Option<ChecksumAt> {
        if self == L4Checksum::Full {
            return None;
        }
        let (at, protocol) = checksum_field(frame)?;
        (self.for_protocol(protocol) == L4Checksum::Partial).then_some(at)
    }
}

/// Where a frame's transport checksum starts and where its field is, from the start of the
/// frame: what a virtio-net header's `csum_start` and `csum_offset` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumAt {
    pub start: u16,
    pub offset: u16,
}

/// Fills the checksum field at `field` of the transport `segment` (whose field is zero), in
/// full or, for [`L4Checksum::Partial`], with the folded pseudo-header sum.
pub fn set_transport_checksum(
    segment: &mut [u8],
    field: usize,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    mode: L4Checksum,
) {
    let sum = match mode.for_protocol(protocol) {
        L4Checksum::Full | L4Checksum::PartialUdp => {
            let sum = checksum::transport(src, dst, protocol, segment);
            // Zero means "no checksum" in UDP; its complement stands for it.
            if sum == 0 && protocol == ip_proto::UDP {
                0xffff
            } else {
                sum
            }
        }
        L4Checksum::Partial => partial_sum(src, dst, protocol, segment.len()),
    };
    segment[field..field + 2].copy_from_slice(&sum.to_be_bytes());
}

/// What the checksum field of a transport segment of `len` bytes holds when the device
/// finishes it: the folded pseudo-header sum (the device adds the segment to it and
/// complements the total).
pub fn partial_sum(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u16 {
    !checksum::finish(checksum::pseudo_header(src, dst, protocol, len as u32))
}

/// For a TCP or UDP frame, where the device must finish its checksum (after IPv4 options
/// and IPv6 extension headers); `None` for any other frame (ARP, ICMP, a fragment, ...),
/// which goes with its checksums complete.
pub fn partial_checksum_at(frame: &[u8]) -> Option<ChecksumAt> {
    checksum_field(frame).map(|(at, _)| at)
}

/// Where a TCP or UDP frame's checksum starts and goes, and which of the two it is.
fn checksum_field(frame: &[u8]) -> Option<(ChecksumAt, u8)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (l4, proto) = match ethertype {
        ethertype::IPV4 => {
            let ihl = usize::from(frame.get(ETH_HEADER_LEN)? & 0x0f) * 4;
            if ihl < IPV4_HEADER_LEN {
                return None;
            }
            (ETH_HEADER_LEN + ihl, *frame.get(ETH_HEADER_LEN + 9)?)
        }
        ethertype::IPV6 => match *frame.get(ETH_HEADER_LEN + 6)? {
            // Ours, and nearly every guest's: the transport header right after IPv6's.
            next @ (ip_proto::TCP | ip_proto::UDP) => (ETH_HEADER_LEN + IPV6_HEADER_LEN, next),
            // Extension headers (a guest's options): walked to the transport header. A
            // fragment has no checksum of its own to finish.
            _ => {
                let ip = frame.get(ETH_HEADER_LEN..)?;
                let v6 = super::parse::ipv6(ip).ok().filter(|v6| !v6.fragmented)?;
                (ETH_HEADER_LEN + v6.header_len, v6.next_header)
            }
        },
        _ => return None,
    };
    let offset = match proto {
        ip_proto::TCP => 16,
        ip_proto::UDP => 6,
        _ => return None,
    };
    if frame.len() < l4 + offset + 2 {
        return None;
    }
    let at = ChecksumAt {
        start: l4 as u16,
        offset: offset as u16,
    };
    Some((at, proto))
}

/// Finishes a partial checksum in place, as the device would: for captures of what the guest
/// received. Frames without one are left alone.
pub fn finish_partial_checksum(frame: &mut [u8]) {
    let Some((at, protocol)) = checksum_field(frame) else {
        return;
    };
    finish_at(frame, at, protocol);
}

/// Whether a TCP or UDP frame from the guest holds only the pseudo-header sum (what the
/// guest's kernel leaves when the link takes partial checksums), for captures of what the
/// guest sent to finish ([`finish_partial_checksum`]). A complete checksum equals that sum
/// only by a 1-in-65536 chance over its frame's bytes; finishing such a frame recomputes the
/// same correct value.
pub fn left_partial(frame: &[u8]) -> bool {
    let Some((at, proto)) = checksum_field(frame) else {
        return false;
    };
    let start = usize::from(at.start);
    let field = start + usize::from(at.offset);
    let Some((src, dst, _)) = addresses(frame) else {
        return false;
    };
    let len = ip_end(frame).saturating_sub(start) as u32;
    let pseudo = !checksum::finish(checksum::pseudo_header(src, dst, proto, len));
    frame[field..field + 2] == pseudo.to_be_bytes()
}

/// The addresses and transport protocol of an IPv4 or IPv6 frame.
pub(super) fn addresses(frame: &[u8]) -> Option<(IpAddr, IpAddr, u8)> {
    let ip = frame.get(ETH_HEADER_LEN..)?;
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ethertype::IPV4 if ip.len() >= IPV4_HEADER_LEN => {
            let a = |o: usize| <[u8; 4]>::try_from(&ip[o..o + 4]).ok();
            Some((a(12)?.into(), a(16)?.into(), ip[9]))
        }
        ethertype::IPV6 if ip.len() >= IPV6_HEADER_LEN => {
            let a = |o: usize| <[u8; 16]>::try_from(&ip[o..o + 16]).ok();
            Some((a(8)?.into(), a(24)?.into(), ip[6]))
        }
        _ => None,
    }
}

/// Where the IP packet of a frame ends, as its header says (Ethernet padding aside), within
/// the frame.
fn ip_end(frame: &[u8]) -> usize {
    let len = |o: usize| usize::from(u16::from_be_bytes([frame[o], frame[o + 1]]));
    let end = match u16::from_be_bytes([frame[12], frame[13]]) {
        ethertype::IPV4 => ETH_HEADER_LEN + len(ETH_HEADER_LEN + 2),
        _ => ETH_HEADER_LEN + IPV6_HEADER_LEN + len(ETH_HEADER_LEN + 4),
    };
    end.min(frame.len())
}

/// Completes the checksum at `at`, whose field holds the pseudo-header sum.
fn finish_at(frame: &mut [u8], at: ChecksumAt, protocol: u8) {
    let start = usize::from(at.start);
    let field = start + usize::from(at.offset);
    let end = ip_end(frame).max(field + 2);
    let mut sum = checksum::finish(checksum::add(0, &frame[start..end]));
    if sum == 0 && protocol == ip_proto::UDP {
        // Zero means "no checksum" in UDP: a computed zero goes as all ones (RFC 768), as
        // the device sends it.
        sum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{write_udp_frame, Route};
    use crate::wire::parse::ipv4;
    use crate::wire::tcp::{flags, payload_offset, write_frame, Header};

    fn tcp_frame(r: &Route, payload: &[u8], mode: L4Checksum) -> Vec<u8> {
        let h = Header {
            src_port: 80,
            dst_port: 40000,
            seq: 1000,
            ack: 2000,
            flags: flags::ACK | flags::PSH,
            window: 512,
            mss: None,
            wscale: None,
        };
        let at = payload_offset(r, &h);
        let mut frame = vec![0u8; at + payload.len()];
        frame[at..].copy_from_slice(payload);
        let n = write_frame(&mut frame, r, &h, payload.len(), mode);
        frame.truncate(n);
        frame
    }

    fn udp_frame(r: &Route, payload: &[u8], mode: L4Checksum) -> Vec<u8> {
        let at = crate::wire::build::udp_payload_offset(r);
        let mut frame = vec![0u8; at + payload.len()];
        frame[at..].copy_from_slice(payload);
        let n = write_udp_frame(&mut frame, r, 53, 40000, payload.len(), mode);
        frame.truncate(n);
        frame
    }

    #[test]
    fn a_finished_partial_checksum_is_the_full_one() {
        for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
            let r = Route::between(src, dst);
            for len in [0, 1, 2, 1459, 1460, 65000] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                for build in [tcp_frame, udp_frame] {
                    let full = build(&r, &payload, L4Checksum::Full);
                    let mut partial = build(&r, &payload, L4Checksum::Partial);
                    assert_ne!(full, partial, "{src} {len}: nothing was left to finish");
                    assert!(partial_checksum_at(&partial).is_some());
                    finish_partial_checksum(&mut partial);
                    assert_eq!(full, partial, "{src} {len}");
                }
            }
        }
    }

    #[test]
    fn a_guests_partial_checksum_is_told_and_finished_a_complete_one_left() {
        let r = Route::between("2001:db8::1", "2001:db8::2");
        let full = tcp_frame(&r, b"some payload", L4Checksum::Full);
        let mut partial = tcp_frame(&r, b"some payload", L4Checksum::Partial);
        assert!(left_partial(&partial));
        finish_partial_checksum(&mut partial);
        assert_eq!(partial, full);
        assert!(!left_partial(&full));
        // Ethernet padding after a short IPv4 packet is not summed.
        let r4 = Route::between("192.0.2.1", "192.0.2.2");
        let full = udp_frame(&r4, b"hi", L4Checksum::Full);
        let mut padded = udp_frame(&r4, b"hi", L4Checksum::Partial);
        padded.resize(60, 0xaa);
        assert!(left_partial(&padded));
        finish_partial_checksum(&mut padded);
        assert_eq!(&padded[..full.len()], &full[..]);
    }

    /// A guest's IPv6 frame with extension headers (destination options here) and its
    /// transport checksum left partial: found behind the options and finished, TCP and UDP.
    /// A fragment is left alone.
    #[test]
    fn a_partial_checksum_behind_ipv6_extension_headers_is_finished() {
        let r = Route::between("2001:db8::1", "2001:db8::2");
        let ip = ETH_HEADER_LEN;
        // Inserts an 8-byte destination options header (a PadN option) before the transport
        // header, the pseudo-header sum left as it was (it counts the transport bytes only).
        let with_options = |mut f: Vec<u8>| {
            let next = f[ip + 6];
            f.splice(ip + 40..ip + 40, [next, 0, 1, 4, 0, 0, 0, 0]);
            f[ip + 6] = ip_proto::DEST_OPTS;
            let len = u16::from_be_bytes([f[ip + 4], f[ip + 5]]) + 8;
            f[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
            f
        };
        for build in [tcp_frame, udp_frame] {
            let full = with_options(build(&r, b"behind the options", L4Checksum::Full));
            let mut partial = with_options(build(&r, b"behind the options", L4Checksum::Partial));
            assert_ne!(full, partial);
            assert_eq!(partial_checksum_at(&partial).map(|at| at.start), Some(62));
            assert!(left_partial(&partial));
            assert!(!left_partial(&full));
            finish_partial_checksum(&mut partial);
            assert_eq!(partial, full);
        }
        let mut fragment = udp_frame(&r, b"a fragment", L4Checksum::Partial);
        let next = fragment[ip + 6];
        fragment.splice(ip + 40..ip + 40, [next, 0, 0, 0x08, 0, 0, 0, 1]);
        fragment[ip + 6] = ip_proto::FRAGMENT;
        let len = u16::from_be_bytes([fragment[ip + 4], fragment[ip + 5]]) + 8;
        fragment[ip + 4..ip + 6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(partial_checksum_at(&fragment), None);
        assert!(!left_partial(&fragment));
    }

    #[test]
    fn partial_for_udp_leaves_tcp_complete() {
        for (src, dst) in [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")] {
            let r = Route::between(src, dst);
            let tcp = tcp_frame(&r, b"segment", L4Checksum::PartialUdp);
            assert_eq!(tcp, tcp_frame(&r, b"segment", L4Checksum::Full), "{src}");
            assert_eq!(L4Checksum::PartialUdp.left_at(&tcp), None);
            let udp = udp_frame(&r, b"datagram", L4Checksum::PartialUdp);
            assert_eq!(
                udp,
                udp_frame(&r, b"datagram", L4Checksum::Partial),
                "{src}"
            );
            assert_eq!(
                L4Checksum::PartialUdp.left_at(&udp),
                partial_checksum_at(&udp)
            );
            assert!(L4Checksum::PartialUdp.left_at(&udp).is_some());
            assert_eq!(L4Checksum::Full.left_at(&udp), None);
            assert_eq!(L4Checksum::Partial.left_at(&tcp), partial_checksum_at(&tcp));
        }
    }

    #[test]
    fn where_the_checksum_goes() {
        let v4 = tcp_frame(
            &Route::between("192.0.2.1", "192.0.2.2"),
            b"x",
            L4Checksum::Full,
        );
        assert_eq!(
            partial_checksum_at(&v4),
            Some(ChecksumAt {
                start: 34,
                offset: 16
            })
        );
        assert!(ipv4(&v4[ETH_HEADER_LEN..]).is_ok());
        let v6 = udp_frame(
            &Route::between("2001:db8::1", "2001:db8::2"),
            b"x",
            L4Checksum::Full,
        );
        assert_eq!(
            partial_checksum_at(&v6),
            Some(ChecksumAt {
                start: 54,
                offset: 6
            })
        );
        // ARP, ICMP, truncated frames: nothing to finish.
        let mut icmp = v4.clone();
        icmp[ETH_HEADER_LEN + 9] = ip_proto::ICMP;
        assert_eq!(partial_checksum_at(&icmp), None);
        assert_eq!(partial_checksum_at(&v4[..40]), None);
        assert_eq!(partial_checksum_at(&[0u8; 13]), None);
        let mut arp = v4;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(partial_checksum_at(&arp), None);
    }
}
