//! A transmit frame split where it may be parsed in place: its head (the headers, up to
//! [`TX_HEAD`] bytes) copied into our buffer, the rest left in guest memory as opaque areas.
//!
//! How the link sends a guest's TCP payload from the guest's own memory ([`take_tx_frame`]
//! decides per frame; anything but TCP with payload past the head is copied whole, as
//! [`super::virtq::read_tx_frame`] does). The guest may write its buffers while we look at them, so no Rust reference to the rest is
//! ever made: it is kept as host addresses ([`LentArea`]s, for an iovec) beside the guest
//! addresses they came from (for [`TxTail::read`], a checked copy through the memory table).
//! The host addresses stay valid only while the memory table the chain was walked with stays
//! mapped: whoever hands them to the kernel holds that table (as the receive lender does).

use sans_io::wire::external::{may_leave_rest, ExternalPayload, ExternalPayloads, GuestFrame};
use sans_io::wire::lent::LentArea;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

use super::virtq::{for_each_tx_piece, read_tx_frame, ChainError};

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
    let mut split = TxSplit { head: 0, tail: 0 };
    for_each_tx_piece(descriptors, |addr, dlen| {
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
        Ok(())
    })?;
    Ok(split)
}

/// Takes the frame a transmit chain carries into `slot` (as large as a frame may be): split,
/// its rest left in `tail`, if it is TCP whose payload goes past the first [`TX_HEAD`] bytes
/// (see [`may_leave_rest`]); copied whole otherwise, `tail` empty. The returned split's `tail`
/// is 0 for a frame copied whole.
pub fn take_tx_frame<M: GuestMemory + ?Sized>(
    mem: &M,
    chain: impl Iterator<Item = Descriptor> + Clone,
    slot: &mut [u8],
    tail: &mut TxTail,
) -> Result<TxSplit, ChainError> {
    tail.clear();
    let max_frame = slot.len();
    let head = TX_HEAD.min(max_frame);
    match read_tx_frame_split(mem, chain.clone(), &mut slot[..head], tail, max_frame) {
        Ok(split) if split.tail == 0 => return Ok(split),
        Ok(split) if may_leave_rest(&slot[..split.head], split.tail) => return Ok(split),
        _ => {}
    }
    // Anything else whole (a chain the split refused is walked again: the copy says what is
    // wrong with it, or takes a frame in more pieces than a rest keeps).
    tail.clear();
    let len = read_tx_frame(mem, chain, slot)?;
    Ok(TxSplit { head: len, tail: 0 })
}

/// The rests of one read's frames (`tails[i]` frame `i`'s), answering copies of them through
/// the memory table: for socket layers that can't give the kernel the areas (the simulator's),
/// a stash, a capture.
pub struct TxRests<'a, M: GuestMemory + ?Sized> {
    pub mem: &'a M,
    pub tails: &'a [TxTail],
}

impl<M: GuestMemory + ?Sized> ExternalPayloads for TxRests<'_, M> {
    fn read(&self, payload: ExternalPayload, dst: &mut [u8]) -> usize {
        let Some(tail) = self.tails.get(payload.frame as usize) else {
            return 0;
        };
        let want = payload.len.min(dst.len());
        if payload
            .at
            .checked_add(want)
            .is_none_or(|end| end > tail.len())
        {
            return 0;
        }
        tail.read(self.mem, payload.at, &mut dst[..want])
            .unwrap_or(0)
    }
}

/// Frame `i` of a read as the engine takes it: its head in `head`, its rest (if `tail` holds
/// one) named for [`TxRests`].
pub fn guest_frame<'f>(i: usize, head: &'f [u8], tail: &TxTail) -> GuestFrame<'f> {
    GuestFrame {
        head,
        rest: (!tail.is_empty()).then(|| ExternalPayload {
            frame: i as u32,
            at: 0,
            len: tail.len(),
        }),
    }
}

#[cfg(test)]
mod tests;
