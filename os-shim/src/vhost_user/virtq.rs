//! Frames in and out of virtqueue descriptor chains, for virtio-net as we negotiate it
//! (VIRTIO_F_VERSION_1 and VIRTIO_NET_F_MRG_RXBUF: every frame has the 12-byte
//! `virtio_net_hdr_v1` in front, and a received frame may fill several chains).
//!
//! This is where guest-controlled addresses and lengths meet our memory: every access goes
//! through `vm-memory`'s checked `Bytes` calls, which refuse anything outside the memory table,
//! and chains are walked with `virtio-queue`'s iterator, which ends a chain after as many
//! descriptors as the queue has (a cycle can't loop). Nothing here allocates: the frames of a
//! hot path go straight between guest memory and the caller's buffers.

use sans_io::wire::offload::ChecksumAt;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use crate::vnet_hdr::{self, VnetHeader};

/// `virtio_net_hdr_v1`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers, little-endian. Towards the guest we fill in num_buffers, and the checksum
/// fields when a frame's checksum is left to finish (GUEST_CSUM); from the guest we read only
/// what it leaves to segment ([`tx_gso`]: runs of datagrams to cut, TSO for the counters):
/// with CSUM its checksums may be unfinished and with HOST_TSO4/6 its TCP segments larger
/// than the MTU, and the engine takes both as they are.
pub const NET_HDR_LEN: usize = 12;
/// Where `num_buffers` sits in the header.
pub(crate) const NUM_BUFFERS_AT: usize = 10;
/// The header of a frame to the guest as it goes in front of it: `header`, and num_buffers
/// still zero (filled in once the frame's chains are known).
pub(crate) fn rx_header(header: &VnetHeader) -> [u8; NET_HDR_LEN] {
    let mut bytes = [0u8; NET_HDR_LEN];
    bytes[..vnet_hdr::HEADER_LEN].copy_from_slice(&header.bytes_le());
    bytes
}

/// What the transmit chain whose first descriptor is `first` leaves to segment, as its
/// header says (one read of the guest's memory): a TCP segment of up to 64 KiB (HOST_TSO4/6,
/// [`vnet_hdr::Gso::Other`]) or a run of datagrams (HOST_USO; gso_size little-endian, as
/// virtio 1.0 has it). Only the header's bytes in the first descriptor count.
pub fn tx_gso<M: GuestMemory + ?Sized>(mem: &M, first: &Descriptor) -> vnet_hdr::Gso {
    let mut header = [0u8; 6];
    let held = &mut header[..(first.len() as usize).min(6)];
    if mem.read_slice(held, first.addr()).is_err() {
        return vnet_hdr::Gso::None;
    }
    vnet_hdr::gso(held, u16::from_le_bytes)
}

/// What is wrong with a chain the guest gave us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the chain ends inside the virtio-net header")]
    ShortHeader,
    #[error("the frame is larger than {0} bytes")]
    Oversize(usize),
    #[error("a descriptor points outside the guest's memory table")]
    OutsideMemory,
    #[error("a transmit chain has a device-writable descriptor")]
    WritableInTx,
    #[error("a receive chain has a device-readable descriptor")]
    ReadableInRx,
    #[error("a receive chain has no room")]
    EmptyRx,
    #[error("a transmit frame lies in more pieces than we keep in place")]
    TooFragmented,
}

/// Hands `piece` the frame a transmit chain carries, piece by piece: each descriptor's bytes
/// past the virtio-net header, by guest address and length (empty ones skipped). A device-
/// writable descriptor, or a chain that ends inside the header, is refused; `piece`'s error
/// ends the walk.
pub fn for_each_tx_piece(
    descriptors: impl Iterator<Item = Descriptor>,
    mut piece: impl FnMut(GuestAddress, usize) -> Result<(), ChainError>,
) -> Result<(), ChainError> {
    let mut header_left = NET_HDR_LEN;
    for d in descriptors {
        if d.is_write_only() {
            return Err(ChainError::WritableInTx);
        }
        let mut addr = d.addr();
        let mut dlen = d.len() as usize;
        if header_left > 0 {
            let skip = header_left.min(dlen);
            header_left -= skip;
            dlen -= skip;
            addr = addr
                .checked_add(skip as u64)
                .ok_or(ChainError::OutsideMemory)?;
        }
        if dlen > 0 {
            piece(addr, dlen)?;
        }
    }
    if header_left > 0 {
        return Err(ChainError::ShortHeader);
    }
    Ok(())
}

/// Copies the frame a transmit chain carries (its readable bytes, less the virtio-net header)
/// into `buf`; returns the frame's length. The copy is what keeps a guest that changes the
/// buffer while we parse it from changing what we parsed.
pub fn read_tx_frame<M: GuestMemory + ?Sized>(
    mem: &M,
    descriptors: impl Iterator<Item = Descriptor>,
    buf: &mut [u8],
) -> Result<usize, ChainError> {
    let mut len = 0;
    for_each_tx_piece(descriptors, |addr, dlen| {
        let end = len + dlen;
        if end > buf.len() {
            return Err(ChainError::Oversize(buf.len()));
        }
        mem.read_slice(&mut buf[len..end], addr)
            .map_err(|_| ChainError::OutsideMemory)?;
        len = end;
        Ok(())
    })?;
    Ok(len)
}

/// What became of a frame offered to the receive queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// In the guest's buffers, over this many chains (used, not yet signalled).
    Placed(u16),
    /// Not enough buffers: nothing was consumed; try again when the guest adds some.
    NoRoom,
    /// A chain was unusable: the chains taken were returned empty (the guest drops them as
    /// too short) and the frame is lost.
    Bad(ChainError),
}

/// Scratch for [`write_rx_frame`], allocated once per queue: the chains a frame is filling.
#[derive(Debug, Default)]
pub struct RxScratch {
    used: Vec<(u16, u32)>,
}

impl RxScratch {
    pub fn new(queue_size: u16) -> RxScratch {
        RxScratch {
            used: Vec::with_capacity(usize::from(queue_size)),
        }
    }
}

/// Writes `frame`, with its header in front, into the receive queue's next chains, as many as
/// it takes, and marks them used. Chains are taken from the queue only once the frame fits
/// whole: with too few buffers the queue is left as it was. `partial`: the frame's checksum
/// is left to the guest (it negotiated GUEST_CSUM), here.
pub fn write_rx_frame<Q: QueueT, M: GuestMemory>(
    queue: &mut Q,
    mem: &M,
    frame: &[u8],
    partial: Option<ChecksumAt>,
    scratch: &mut RxScratch,
) -> RxOutcome {
    let header = match partial {
        Some(at) => VnetHeader::partial_checksum(at),
        None => VnetHeader::default(),
    };
    write_rx_parts(queue, mem, &header, &[frame], scratch)
}

/// Like [`write_rx_frame`], for a frame in `parts` (a run's headers and its segments'
/// payloads, say) behind the virtio-net header `header` (num_buffers is filled in here).
pub fn write_rx_parts<Q: QueueT, M: GuestMemory>(
    queue: &mut Q,
    mem: &M,
    header: &VnetHeader,
    parts: &[&[u8]],
    scratch: &mut RxScratch,
) -> RxOutcome {
    let first = queue.next_avail();
    let used = &mut scratch.used;
    used.clear();
    let header = rx_header(header);
    let frame_len: usize = parts.iter().map(|p| p.len()).sum();
    let total = NET_HDR_LEN + frame_len;
    // The part being written, and how far into it.
    let (mut part, mut part_at) = (0usize, 0usize);
    // Where the two bytes of num_buffers landed: known only once every chain is taken.
    let mut num_buffers_at: [Option<GuestAddress>; 2] = [None, None];
    let mut written = 0;
    let mut failure = None;
    'chains: while written < total {
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            queue.set_next_avail(first);
            return RxOutcome::NoRoom;
        };
        let head = chain.head_index();
        let mut in_chain = 0usize;
        for d in chain {
            if !d.is_write_only() {
                used.push((head, 0));
                failure = Some(ChainError::ReadableInRx);
                break 'chains;
            }
            let mut off = 0usize;
            while off < d.len() as usize && written < total {
                let piece = if written < NET_HDR_LEN {
                    &header[written..]
                } else {
                    while part_at == parts[part].len() {
                        part += 1;
                        part_at = 0;
                    }
                    &parts[part][part_at..]
                };
                let n = piece.len().min(d.len() as usize - off);
                let Some(addr) = d.addr().checked_add(off as u64) else {
                    used.push((head, 0));
                    failure = Some(ChainError::OutsideMemory);
                    break 'chains;
                };
                if mem.write_slice(&piece[..n], addr).is_err() {
                    used.push((head, 0));
                    failure = Some(ChainError::OutsideMemory);
                    break 'chains;
                }
                for (k, at) in num_buffers_at.iter_mut().enumerate() {
                    let byte = NUM_BUFFERS_AT + k;
                    if (written..written + n).contains(&byte) {
                        *at = addr.checked_add((byte - written) as u64);
                    }
                }
                if written >= NET_HDR_LEN {
                    part_at += n;
                }
                off += n;
                written += n;
                in_chain += n;
            }
            if written == total {
                break;
            }
        }
        used.push((head, in_chain as u32));
        if in_chain == 0 {
            // A chain with no room at all: counting it in num_buffers would only confuse.
            failure = Some(ChainError::EmptyRx);
            break;
        }
    }
    if let Some(e) = failure {
        for &(head, _) in used.iter() {
            let _ = queue.add_used(mem, head, 0);
        }
        return RxOutcome::Bad(e);
    }
    let count = used.len() as u16;
    for (k, at) in num_buffers_at.iter().enumerate() {
        if let Some(at) = at {
            let _ = mem.write_obj(count.to_le_bytes()[k], *at);
        }
    }
    for &(head, len) in used.iter() {
        let _ = queue.add_used(mem, head, len);
    }
    RxOutcome::Placed(count)
}

#[cfg(test)]
mod tests;
