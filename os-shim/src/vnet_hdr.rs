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

/// What the header of a frame read (the namespace's, a guest's) says it left to segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gso {
    /// Nothing: the frame is one packet.
    None,
    /// A run of UDP datagrams of this payload size, the last maybe shorter
    /// (`VIRTIO_NET_HDR_GSO_UDP_L4`: the sender's UDP segmentation offload), for
    /// [`sans_io::wire::gso::cut_udp_run`].
    UdpRun(u16),
    /// Another type (TSO: a TCP segment of up to 64 KiB, which the engine takes whole).
    Other,
}

/// What `header` (its first bytes: flags, gso_type, hdr_len, gso_size) says is left to
/// segment; `order` reads gso_size: the machine's for the tap, little-endian for a virtio 1.0
/// device. A header too short to hold gso_type says nothing; one that holds gso_type but not
/// gso_size is no run.
pub fn gso(header: &[u8], order: fn([u8; 2]) -> u16) -> Gso {
    // gso_type, less the ECN bit; VIRTIO_NET_HDR_GSO_NONE is zero.
    match (header.get(1).map(|t| t & 0x7f), header.get(4..6)) {
        (None | Some(0), _) => Gso::None,
        (Some(GSO_UDP_L4), Some(size)) => Gso::UdpRun(order([size[0], size[1]])),
        _ => Gso::Other,
    }
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
