//! A transmit frame split where it may be parsed in place: its head (the headers, up to
//! [`TX_HEAD`] bytes) copied into our buffer, the rest left in guest memory as opaque areas.
//!
//! The first step of sending a guest's TCP payload from its own memory (issue 16; not yet
//! used by the link, which still copies whole frames with [`super::virtq::read_tx_frame`]).
//! The guest may write its buffers while we look at them, so no Rust reference to the rest is
//! ever made: it is kept as host addresses ([`LentArea`]s, for an iovec) beside the guest
//! addresses they came from (for [`TxTail::read`], a checked copy through the memory table).
//! The host addresses stay valid only while the memory table the chain was walked with stays
//! mapped: whoever hands them to the kernel holds that table (as the receive lender does).

use sans_io::wire::lent::LentArea;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::virtq::{ChainError, NET_HDR_LEN};

/// Bytes of a frame copied whatever it carries: room for Ethernet, IPv6 with a few extension
/// headers and TCP with options. What lies beyond stays in the guest's memory.
pub const TX_HEAD: usize = 256;

/// Pieces a frame's rest may lie in at most (one per descriptor, more where a descriptor
/// crosses regions of the memory table); a frame in more is copied whole instead.
pub const MAX_TAIL_AREAS: usize = 64;

/// The rest of a transmit frame, beyond its copied head, where it lies in the guest's memory.
#[derive(Debug)]
pub struct TxTail {
    /// Host addresses, for an iovec.
    host: Vec<LentArea>,
    /// The same pieces as guest addresses, for checked copies.
    guest: Vec<(GuestAddress, usize)>,
}

impl Default for TxTail {
    fn default() -> Self {
        TxTail::new()
    }
}

impl TxTail {
    /// Room for [`MAX_TAIL_AREAS`] pieces, allocated once: splitting a frame allocates nothing.
    pub fn new() -> TxTail {
        TxTail {
            host: Vec::with_capacity(MAX_TAIL_AREAS),
            guest: Vec::with_capacity(MAX_TAIL_AREAS),
        }
    }

    pub fn clear(&mut self) {
        self.host.clear();
        self.guest.clear();
    }

    /// The pieces as host addresses, in frame order.
    pub fn areas(&self) -> &[LentArea] {
        &self.host
    }

    /// Bytes over all pieces.
    pub fn len(&self) -> usize {
        self.host.iter().map(|a| a.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// Copies the rest's bytes from `at` (counted from its start) into `dst`, through the
    /// memory table's checked reads; returns how many (fewer than `dst` holds only at the
    /// rest's end). This is how a stash keeps what a short write left unsent.
    pub fn read<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        mut at: usize,
        dst: &mut [u8],
    ) -> Result<usize, ChainError> {
        let mut done = 0;
        for &(addr, len) in &self.guest {
            if done == dst.len() {
                break;
            }
            if at >= len {
                at -= len;
                continue;
            }
            let n = (len - at).min(dst.len() - done);
            let from = addr
                .checked_add(at as u64)
                .ok_or(ChainError::OutsideMemory)?;
            mem.read_slice(&mut dst[done..done + n], from)
                .map_err(|_| ChainError::OutsideMemory)?;
            done += n;
            at = 0;
        }
        Ok(done)
    }

    fn push<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        addr: GuestAddress,
        len: usize,
    ) -> Result<(), ChainError> {
        let slices = mem
            .get_slices(addr, len, Permissions::Read)
            .map_err(|_| ChainError::OutsideMemory)?;
        for slice in slices {
            let slice = slice.map_err(|_| ChainError::OutsideMemory)?;
            if self.host.len() == MAX_TAIL_AREAS {
                return Err(ChainError::TooFragmented);
            }
            self.host.push(LentArea {
                addr: slice.ptr_guard().as_ptr() as usize,
                len: slice.len(),
            });
        }
        self.guest.push((addr, len));
        Ok(())
    }
}

/// How a frame was split: `head` bytes copied, `tail` left in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSplit {
    pub head: usize,
    pub tail: usize,
}

impl TxSplit {
    pub fn len(&self) -> usize {
        self.head + self.tail
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the frame a transmit chain carries (less its virtio-net header) as a head copied into
/// `head` (as much of the frame as it holds) and a rest appended to `tail`; the frame may be
/// `max_frame` bytes at most. Every piece of the rest is checked against the memory table now;
/// an error leaves `tail` with whatever it had been given plus some pieces (clear it first).
pub fn read_tx_frame_split<M: GuestMemory + ?Sized>(
    mem: &M,
    descriptors: impl Iterator<Item = Descriptor>,
    head: &mut [u8],
    tail: &mut TxTail,
    max_frame: usize,
) -> Result<TxSplit, ChainError> {
    let mut header_left = NET_HDR_LEN;
    let mut split = TxSplit { head: 0, tail: 0 };
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
        if dlen == 0 {
            continue;
        }
        if split.len() + dlen > max_frame {
            return Err(ChainError::Oversize(max_frame));
        }
        let copied = (head.len() - split.head).min(dlen);
        if copied > 0 {
            mem.read_slice(&mut head[split.head..split.head + copied], addr)
                .map_err(|_| ChainError::OutsideMemory)?;
            split.head += copied;
        }
        let rest = dlen - copied;
        if rest > 0 {
            let from = addr
                .checked_add(copied as u64)
                .ok_or(ChainError::OutsideMemory)?;
            tail.push(mem, from, rest)?;
            split.tail += rest;
        }
    }
    if header_left > 0 {
        return Err(ChainError::ShortHeader);
    }
    Ok(split)
}

#[cfg(test)]
mod tests;
