//! The virtio-net header's first ten bytes (`struct virtio_net_hdr`), which say what a device
//! is to do with a frame: pasta's tap has them in front of each frame (`IFF_VNET_HDR`, the
//! legacy header, in the machine's byte order), a vhost-user guest's receive buffers at the
//! start of `virtio_net_hdr_v1` (little-endian, `num_buffers` after them).

use sans_io::wire::gso::{Run, Transport};
use sans_io::wire::offload::ChecksumAt;

/// `struct virtio_net_hdr` without `num_buffers`: flags, gso_type, hdr_len, gso_size,
/// csum_start, csum_offset.
pub const HEADER_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` is left to finish.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV4`, `_TCPV6`, `_UDP_L4`: cut the payload into pieces of
/// `gso_size` bytes, each a TCP segment or a datagram of its own.
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

/// Whether a frame read came with a segmentation type: the namespace's TSO.
pub fn is_segmented(header: &[u8; HEADER_LEN]) -> bool {
    // gso_type, less the ECN bit; VIRTIO_NET_HDR_GSO_NONE is zero.
    header[1] & 0x7f != 0
}

/// The payload size of the datagrams a frame read carries whole, if its header says it is a
/// UDP run (`VIRTIO_NET_HDR_GSO_UDP_L4`: the namespace's or a guest's UDP segmentation
/// offload), for [`sans_io::wire::gso::cut_udp_run`]. `header` holds at least the header's
/// first six bytes (flags, gso_type, hdr_len, gso_size; `None` if fewer); `order` reads
/// gso_size: the machine's for the tap, little-endian for a virtio 1.0 device.
pub fn udp_segment_size(header: &[u8], order: fn([u8; 2]) -> u16) -> Option<u16> {
    let h = header.get(..6)?;
    (h[1] & 0x7f == GSO_UDP_L4).then(|| order([h[4], h[5]]))
}

/// What the kernel is to do with a frame written to the tap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHeader {
    /// A frame whose transport checksum holds only the pseudo-header sum, at `at`.
    pub fn partial_checksum(at: ChecksumAt) -> Self {
        VnetHeader {
            flags: F_NEEDS_CSUM,
            csum_start: at.start,
            csum_offset: at.offset,
            ..VnetHeader::default()
        }
    }

    /// The frame carrying `run`: its headers go in front of each `segment_size` bytes of its
    /// payload, and the kernel makes that many frames of it (it needs the checksum left at
    /// `at`, as [`sans_io::wire::gso::run_headers`] leaves it).
    pub fn segments(run: &Run, at: ChecksumAt) -> Self {
        VnetHeader {
            gso_type: match (run.transport, run.ipv6) {
                (Transport::Udp, _) => GSO_UDP_L4,
                (Transport::Tcp, false) => GSO_TCPV4,
                (Transport::Tcp, true) => GSO_TCPV6,
            },
            hdr_len: run.header_len as u16,
            gso_size: run.segment_size,
            ..VnetHeader::partial_checksum(at)
        }
    }

    /// A TCP frame of `header_len` bytes of headers (Ethernet included) whose payload is
    /// segments of `segment_size` bytes, the last maybe shorter, taken whole by a guest that
    /// negotiated it (vhost-user's GUEST_TSO4/6); its checksum is left at `at` with the
    /// pseudo-header sum of the whole, as [`sans_io::wire::tcp::write_headers_partial`] leaves it.
    pub fn tcp_segments(ipv6: bool, header_len: usize, segment_size: u16, at: ChecksumAt) -> Self {
        VnetHeader {
            gso_type: if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: header_len as u16,
            gso_size: segment_size,
            ..VnetHeader::partial_checksum(at)
        }
    }

    /// Whether the frame is to be taken as several segments.
    pub fn is_segmented(&self) -> bool {
        self.gso_type != 0
    }

    /// In the machine's byte order: a legacy device's (the tap's).
    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        self.encode(u16::to_ne_bytes)
    }

    /// Little-endian: a virtio 1.0 device's (vhost-user).
    pub fn bytes_le(&self) -> [u8; HEADER_LEN] {
        self.encode(u16::to_le_bytes)
    }

    fn encode(&self, order: fn(u16) -> [u8; 2]) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&order(self.hdr_len));
        b[4..6].copy_from_slice(&order(self.gso_size));
        b[6..8].copy_from_slice(&order(self.csum_start));
        b[8..10].copy_from_slice(&order(self.csum_offset));
        b
    }
}
