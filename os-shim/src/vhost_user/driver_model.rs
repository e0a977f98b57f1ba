//! The guest driver's side of a split virtqueue, in a memory of our own: lays out the
//! descriptor table and the rings, offers chains, collects what the device used, and cuts a
//! frame given for segmentation as the guest's kernel would ([`cut_segmented`]). For the
//! tests of [`super::virtq`], the fuzz target over it and the simulator's virtqueue path; not
//! used by passt itself.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use sans_io::wire::checksum;
use sans_io::wire::offload::{finish_partial_checksum, partial_sum};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// One buffer of a chain: guest address, length, device-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct DriverQueue {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl DriverQueue {
    /// Size of the rings of a `size`-entry queue, to leave room for at `base`.
    pub fn footprint(size: u16) -> u64 {
        let size = u64::from(size);
        let avail = 16 * size;
        let used = (avail + 6 + 2 * size).next_multiple_of(4);
        used + 6 + 8 * size
    }

    /// A queue of `size` entries (a power of two) whose rings start at `base`.
    pub fn new<M: GuestMemory>(mem: &M, base: GuestAddress, size: u16) -> DriverQueue {
        let desc = base;
        let avail = base.unchecked_add(16 * u64::from(size));
        let used_off = (16 * u64::from(size) + 6 + 2 * u64::from(size)).next_multiple_of(4);
        let used = base.unchecked_add(used_off);
        let zeros = vec![0u8; Self::footprint(size) as usize];
        let _ = mem.write_slice(&zeros, base);
        DriverQueue {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// The device's view of the same queue, ready to process.
    pub fn device_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).expect("a power-of-two queue size");
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// Offers a chain of `buffers` (its descriptors taken in turn from the table); returns its
    /// head.
    pub fn add_chain<M: GuestMemory>(&mut self, mem: &M, buffers: &[Buffer]) -> u16 {
        let head = self.next_desc;
        for (i, b) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            if i + 1 < buffers.len() {
                flags |= DESC_F_NEXT;
            }
            self.write_desc(mem, index, b.addr, b.len, flags, self.next_desc);
        }
        self.offer(mem, head);
        head
    }

    /// Writes descriptor `index` as given, whatever it says (for hostile chains).
    pub fn write_desc<M: GuestMemory>(
        &self,
        mem: &M,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = self.desc.unchecked_add(16 * u64::from(index % self.size));
        let _ = mem.write_obj(addr.to_le(), at);
        let _ = mem.write_obj(len.to_le(), at.unchecked_add(8));
        let _ = mem.write_obj(flags.to_le(), at.unchecked_add(12));
        let _ = mem.write_obj(next.to_le(), at.unchecked_add(14));
    }

    /// Puts `head` on the available ring.
    pub fn offer<M: GuestMemory>(&mut self, mem: &M, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        let _ = mem.write_obj(head.to_le(), self.avail.unchecked_add(4 + 2 * slot));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = mem.store(
            self.avail_idx.to_le(),
            self.avail.unchecked_add(2),
            Ordering::Release,
        );
    }

    /// The next chain the device returned: its head and the bytes it wrote.
    pub fn take_used<M: GuestMemory>(&mut self, mem: &M) -> Option<(u16, u32)> {
        let idx: u16 = mem
            .load(self.used.unchecked_add(2), Ordering::Acquire)
            .ok()
            .map(u16::from_le)?;
        if idx == self.used_seen {
            return None;
        }
        let slot = u64::from(self.used_seen % self.size);
        let at = self.used.unchecked_add(4 + 8 * slot);
        let id: u32 = mem.read_obj(at).ok().map(u32::from_le)?;
        let len: u32 = mem.read_obj(at.unchecked_add(4)).ok().map(u32::from_le)?;
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id as u16, len))
    }
}

/// `virtio_net_hdr` segmentation types a guest may be given.
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;

/// What a guest's kernel makes of a frame the device gave it for segmentation (`header`: the
/// first ten bytes of its `virtio_net_hdr`): TCP segments (GSO_TCPV4/6) or datagrams
/// (GSO_UDP_L4) of the header's size of payload but the last, each with its own lengths and
/// its checksum finished (the identification as it was); TCP's sequence numbers follow on,
/// PSH and FIN on the last only. The header's fields are checked against the frame: the
/// checksum left to finish at the transport's, the headers' length. `None` for a frame not to
/// be segmented.
pub fn cut_segmented(header: &[u8], frame: &[u8]) -> Option<Vec<Vec<u8>>> {
    let gso = header[1] & 0x7f;
    if gso == 0 {
        return None;
    }
    let le = |at: usize| usize::from(u16::from_le_bytes([header[at], header[at + 1]]));
    let ipv6 = frame[12..14] == [0x86, 0xdd];
    let ip = 14;
    let l4 = if ipv6 { ip + 40 } else { ip + 20 };
    let (protocol, header_len, csum_offset) = match gso {
        GSO_UDP_L4 => (17u8, l4 + 8, 6),
        GSO_TCPV4 | GSO_TCPV6 => {
            let family = if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 };
            assert_eq!(gso, family, "gso_type of the frame's family");
            (6, l4 + usize::from(frame[l4 + 12] >> 4) * 4, 16)
        }
        other => panic!("gso_type {other}"),
    };
    assert_eq!(
        header[0] & 1,
        1,
        "a segmented frame's checksum is left to finish"
    );
    assert_eq!(
        (le(2), le(6), le(8)),
        (header_len, l4, csum_offset),
        "hdr_len, csum_start, csum_offset"
    );
    let size = le(4);
    let payload = &frame[header_len..];
    assert!(
        payload.len() > size,
        "{} bytes of payload to cut into {size}-byte pieces",
        payload.len()
    );
    let (src, dst): (IpAddr, IpAddr) = if ipv6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
        (a(ip + 8), a(ip + 24))
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&frame[at..at + 4]).unwrap());
        (a(ip + 12), a(ip + 16))
    };
    let tcp_seq = (protocol == 6)
        .then(|| u32::from_be_bytes(<[u8; 4]>::try_from(&frame[l4 + 4..l4 + 8]).unwrap()));
    let pieces = payload.len().div_ceil(size);
    let cut = payload.chunks(size).enumerate().map(|(i, chunk)| {
        let mut f = frame[..header_len].to_vec();
        f.extend_from_slice(chunk);
        let l4_len = header_len - l4 + chunk.len();
        if ipv6 {
            f[ip + 4..ip + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            f[ip + 2..ip + 4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f[ip + 10..ip + 12].fill(0);
            let sum = checksum::of(&f[ip..l4]);
            f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
        }
        match tcp_seq {
            Some(seq) => {
                let seq = seq.wrapping_add((i * size) as u32);
                f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < pieces {
                    // PSH and FIN.
                    f[l4 + 13] &= !0x09;
                }
            }
            None => f[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes()),
        }
        let sum = partial_sum(src, dst, protocol, l4_len);
        f[l4 + csum_offset..l4 + csum_offset + 2].copy_from_slice(&sum.to_be_bytes());
        finish_partial_checksum(&mut f);
        f
    });
    Some(cut.collect())
}
