//! The receive queue's chains lent as payload memory ([`sans_io::wire::lent`]): host TCP data
//! is peeked by the kernel straight into the guest's receive buffers, and a frame is published
//! by writing only its virtio-net header and its Ethernet/IP/TCP headers in front of the
//! payload (through `vm-memory`'s checked accesses) and marking its chains used.
//!
//! Reserve: chains are taken (those held from before first, then the queue's), each checked
//! whole against the memory table before any of its addresses is lent, as many per frame as
//! its header room and payload need (with mergeable receive buffers a 64 KiB segment spans
//! many small buffers). Settle: the chains a frame filled are committed, in order, under a
//! ticket; those a short peek left unused are held for the next frame, not returned. Publish:
//! the committed frame of a ticket goes into the used ring, its chains consecutive.
//!
//! A few chains are always left on the ring for the frames the link copies (ACKs, ARP...), so
//! that they needn't wait behind lent ones. Held chains that are the last ones taken go back
//! to the ring before the link copies frames ([`RxLend::rewind`]). When the device's rings or
//! memory table change, everything held, committed or reserved is forgotten
//! ([`RxLend::sync_epoch`]). The lender keeps a handle on the memory table its chains were
//! taken with, so the memory a reservation's areas point into stays mapped until it settles,
//! and chains taken with another table are forgotten too.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sans_io::wire::gso::{Run, Transport};
use sans_io::wire::lent::{LentArea, LentPayload, MAX_LENT_AREAS};
use sans_io::wire::offload::partial_checksum_at;
use sans_io::wire::parse::ethertype;
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

use super::virtq::{rx_header, NET_HDR_LEN, NUM_BUFFERS_AT};
use crate::loans;
use crate::vnet_hdr::VnetHeader;

/// Chains left on the ring for the frames the link copies.
pub const KEEP_ON_RING: u16 = 16;
/// Descriptors of a chain used at most (a Linux guest's receive buffers have one).
const MAX_DESCS: usize = 8;

/// A receive chain taken off the ring: its head, its writable descriptors, its room.
#[derive(Debug, Clone, Copy)]
struct Chain {
    head: u16,
    /// Where it was on the available ring (to put it back there).
    pos: u16,
    descs: [(GuestAddress, u32); MAX_DESCS],
    /// Where each descriptor is in our address space, in the memory table it was taken with.
    host: [usize; MAX_DESCS],
    n: u8,
    room: usize,
}

impl Chain {
    fn descs(&self) -> &[(GuestAddress, u32)] {
        &self.descs[..usize::from(self.n)]
    }
}

/// A frame waiting to be published: its ticket, chains (at the front of `committed_chains`),
/// bytes.
#[derive(Debug, Clone, Copy)]
struct Committed {
    ticket: u64,
    chains: usize,
    header_room: usize,
    payload: usize,
}

/// Why a lent frame was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("its buffers were given up (the rings or the memory table changed)")]
    Gone,
    #[error("its headers don't match the room reserved for them")]
    Mismatch,
    #[error("its buffers are outside the guest's memory")]
    OutsideMemory,
}

/// What the guest takes of frames to it, as its features say (see `super::device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestOffloads {
    /// Checksums left to finish (GUEST_CSUM).
    pub csum: bool,
    /// TCP segments of up to 64 KiB, IPv4 and IPv6 (GUEST_TSO4, GUEST_TSO6).
    pub tso4: bool,
    pub tso6: bool,
    /// Runs of datagrams as one frame, IPv4 and IPv6 (GUEST_USO4, GUEST_USO6).
    pub uso4: bool,
    pub uso6: bool,
}

impl GuestOffloads {
    /// Whether the guest takes large TCP segments of the family (`ipv6`, else IPv4).
    pub fn tso(&self, ipv6: bool) -> bool {
        if ipv6 {
            self.tso6
        } else {
            self.tso4
        }
    }

    /// Whether the guest takes `run` as one frame.
    pub fn takes(&self, run: &Run) -> bool {
        match run.transport {
            Transport::Tcp => self.tso(run.ipv6),
            Transport::Udp if run.ipv6 => self.uso6,
            Transport::Udp => self.uso4,
        }
    }
}

/// The virtio-net header a lent frame goes with: its checksum left to finish (`headers` are a
/// TCP frame's, as the engine builds lent frames), and segmented when its payload is longer
/// than its segment size. `None` when the guest doesn't take what the frame needs (it changed
/// its features while the frame waited): the payload can't be read back to make it whole.
pub fn lent_header(headers: &[u8], lent: &LentPayload, guest: GuestOffloads) -> Option<VnetHeader> {
    let at = partial_checksum_at(headers).filter(|_| guest.csum)?;
    if lent.segment_size == 0 || lent.len <= usize::from(lent.segment_size) {
        return Some(VnetHeader::partial_checksum(at));
    }
    let ipv6 = headers.get(12..14)? == ethertype::IPV6.to_be_bytes();
    guest
        .tso(ipv6)
        .then(|| VnetHeader::tcp_segments(ipv6, headers.len(), lent.segment_size, at))
}

/// Counters of the lending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LendStats {
    /// Frames and payload bytes published from lent buffers.
    pub frames: u64,
    pub bytes: u64,
    /// Of those frames, the ones that carried several segments (GUEST_TSO4/6).
    pub large_segments: u64,
    /// Chains refused when taken (readable, outside the memory table, no room).
    pub bad_chains: u64,
    /// Reservations that got no frame for want of buffers (the ring down to the chains kept
    /// for copied frames, or frames waiting before any): the caller copied instead.
    pub no_room: u64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct RxLend {
    /// The device's epoch the chains were taken in.
    epoch: u64,
    /// The memory table they were taken with, kept (mapped) while they are: a table given in
    /// its place means their host addresses are stale. The areas of a reservation point into
    /// it until it settles.
    table: Option<Arc<GuestMemoryMmap>>,
    /// Chains known to be on the ring, less those taken since it was read.
    avail_seen: u16,
    held: VecDeque<Chain>,
    /// The reservation under way: its chains, and each frame's range of them.
    taken: Vec<Chain>,
    frames: Vec<(usize, usize)>,
    header_room: usize,
    /// Its payload areas in guest terms, as `fill` writes them.
    pieces: Vec<(GuestAddress, usize)>,
    committed: VecDeque<Committed>,
    committed_chains: VecDeque<Chain>,
    next_ticket: u64,
    /// The chains of the frame being published.
    publishing: Vec<Chain>,
    /// Zero-length chains went into the used ring (refused ones): the guest wants a call.
    pub returned: bool,
    pub stats: LendStats,
}

impl RxLend {
    pub fn new() -> RxLend {
        RxLend::default()
    }

    /// Chains held or committed.
    pub fn holds(&self) -> usize {
        self.held.len() + self.committed_chains.len()
    }

    /// Forgets every chain if the device's rings or memory table changed since they were
    /// taken (`epoch`, [`super::device::Device::epoch`]): the ring they came from is gone or
    /// being reset, and the guest reposts its buffers.
    pub fn sync_epoch(&mut self, epoch: u64) {
        if epoch != self.epoch {
            self.forget();
            self.epoch = epoch;
        }
    }

    /// Forgets every chain (the front-end left, or its rings changed).
    pub fn forget(&mut self) {
        self.held.clear();
        self.taken.clear();
        self.frames.clear();
        self.pieces.clear();
        self.table = None;
        self.committed.clear();
        self.committed_chains.clear();
        loans::end();
    }

    /// Reserves chains for frames of `header_room` bytes of headers and `lens[i]` of payload,
    /// as many as there is room for, leaving `keep` chains on the ring; appends their
    /// payload areas to `areas`. Returns how many frames.
    pub fn reserve<Q: QueueT>(
        &mut self,
        queue: &mut Q,
        mem: &Arc<GuestMemoryMmap>,
        keep: u16,
        header_room: usize,
        lens: &[usize],
        areas: &mut Vec<LentArea>,
    ) -> usize {
        if !self.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, mem)) {
            self.forget();
            self.table = Some(Arc::clone(mem));
        }
        self.taken.clear();
        self.frames.clear();
        self.pieces.clear();
        self.header_room = header_room;
        self.avail_seen = 0;
        let skip = NET_HDR_LEN + header_room;
        'frames: for &len in lens {
            let first = self.taken.len();
            let (area_mark, piece_mark) = (areas.len(), self.pieces.len());
            let need = skip + len;
            let mut room = 0;
            while room < need {
                let chain = match self.held.pop_front() {
                    Some(chain) => chain,
                    None => match self.take_chain(queue, mem, keep) {
                        Some(chain) => chain,
                        None => {
                            self.undo(first, areas, area_mark, piece_mark);
                            if self.frames.is_empty() {
                                self.stats.no_room += 1;
                            }
                            break 'frames;
                        }
                    },
                };
                room += chain.room;
                self.taken.push(chain);
            }
            // The payload's areas: past the headers, `len` bytes.
            let (mut to_skip, mut left) = (skip, len);
            for i in first..self.taken.len() {
                let chain = self.taken[i];
                for (k, &(addr, dlen)) in chain.descs().iter().enumerate() {
                    let dlen = dlen as usize;
                    if to_skip >= dlen {
                        to_skip -= dlen;
                        continue;
                    }
                    let n = (dlen - to_skip).min(left);
                    if n == 0 {
                        break;
                    }
                    if areas.len() == MAX_LENT_AREAS {
                        self.undo(first, areas, area_mark, piece_mark);
                        break 'frames;
                    }
                    // Inside the descriptor, which was checked whole when taken.
                    areas.push(LentArea {
                        addr: chain.host[k] + to_skip,
                        len: n,
                    });
                    self.pieces.push((addr.unchecked_add(to_skip as u64), n));
                    to_skip = 0;
                    left -= n;
                }
            }
            self.frames.push((first, self.taken.len() - first));
        }
        if self.frames.is_empty() {
            return 0;
        }
        // SAFETY: every area lies inside a descriptor checked whole inside one region of `mem`
        // (get_slice) when its chain was taken, with this very table, whose mapping
        // `self.table` keeps until `settle` ends the loan (only `forget` lets it go, and it
        // ends the loan too); the guest's buffers are ours (taken off the ring) and nothing
        // in this process references them.
        unsafe { loans::lend(&areas[..]) };
        self.frames.len()
    }

    /// Puts frame `first..`'s chains back in front of the held ones and its areas away.
    fn undo(
        &mut self,
        first: usize,
        areas: &mut Vec<LentArea>,
        area_mark: usize,
        piece_mark: usize,
    ) {
        areas.truncate(area_mark);
        self.pieces.truncate(piece_mark);
        for chain in self.taken.drain(first..).rev() {
            self.held.push_front(chain);
        }
    }

    /// The next usable chain off the ring, if more than `keep` are there; unusable ones are
    /// returned empty on the way.
    fn take_chain<Q: QueueT>(
        &mut self,
        queue: &mut Q,
        mem: &GuestMemoryMmap,
        keep: u16,
    ) -> Option<Chain> {
        loop {
            if self.avail_seen <= keep {
                // Read the ring's index again: the guest may have added buffers.
                let avail = queue.avail_idx(mem, Ordering::Acquire).ok()?.0;
                self.avail_seen = avail.wrapping_sub(queue.next_avail());
                if self.avail_seen <= keep {
                    return None;
                }
            }
            let pos = queue.next_avail();
            let chain = queue.pop_descriptor_chain(mem)?;
            self.avail_seen -= 1;
            let head = chain.head_index();
            let mut taken = Chain {
                head,
                pos,
                descs: [(GuestAddress(0), 0); MAX_DESCS],
                host: [0; MAX_DESCS],
                n: 0,
                room: 0,
            };
            let mut usable = true;
            for d in chain {
                if !d.is_write_only() {
                    usable = false;
                    break;
                }
                if usize::from(taken.n) == MAX_DESCS {
                    // The rest of a long chain is left unused.
                    break;
                }
                if d.len() == 0 {
                    continue;
                }
                let Ok(slice) = mem.get_slice(d.addr(), d.len() as usize) else {
                    usable = false;
                    break;
                };
                let k = usize::from(taken.n);
                taken.descs[k] = (d.addr(), d.len());
                taken.host[k] = slice.ptr_guard_mut().as_ptr() as usize;
                taken.n += 1;
                taken.room += d.len() as usize;
            }
            if usable && taken.room > 0 {
                return Some(taken);
            }
            self.stats.bad_chains += 1;
            let _ = queue.add_used(mem, head, 0);
            self.returned = true;
        }
    }

    /// Copies `data` into the reservation's payload, `at` bytes in (a socket layer that
    /// copies rather than hands the areas to the kernel).
    pub fn fill(&mut self, at: usize, data: &[u8]) {
        let Some(mem) = &self.table else { return };
        let (mut skip, mut data) = (at, data);
        for &(addr, len) in &self.pieces {
            if data.is_empty() {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = (len - skip).min(data.len());
            let _ = mem.write_slice(&data[..n], addr.unchecked_add(skip as u64));
            skip = 0;
            data = &data[n..];
        }
    }

    /// The reservation's frames got `filled[i]` bytes each: those with bytes are committed
    /// under consecutive tickets (the first returned), the chains left over are held.
    pub fn settle(&mut self, filled: &[usize]) -> u64 {
        loans::end();
        self.pieces.clear();
        let first_ticket = self.next_ticket;
        let mut unused = std::mem::take(&mut self.publishing);
        unused.clear();
        for (i, &(first, count)) in self.frames.iter().enumerate() {
            let chains = &self.taken[first..first + count];
            let n = filled.get(i).copied().unwrap_or(0);
            if n == 0 {
                unused.extend_from_slice(chains);
                continue;
            }
            let need = NET_HDR_LEN + self.header_room + n;
            let (mut room, mut used) = (0, 0);
            while room < need && used < chains.len() {
                room += chains[used].room;
                used += 1;
            }
            self.committed.push_back(Committed {
                ticket: self.next_ticket,
                chains: used,
                header_room: self.header_room,
                payload: n,
            });
            self.next_ticket += 1;
            self.committed_chains.extend(&chains[..used]);
            unused.extend_from_slice(&chains[used..]);
        }
        for chain in unused.drain(..).rev() {
            self.held.push_front(chain);
        }
        self.publishing = unused;
        self.taken.clear();
        self.frames.clear();
        first_ticket
    }

    /// Puts the held chains back on the ring if they are the last ones taken (so that the
    /// frames the link copies can have them); says whether it did.
    pub fn rewind<Q: QueueT>(&mut self, queue: &mut Q) -> bool {
        let Some(first) = self.held.front() else {
            return false;
        };
        let next = queue.next_avail();
        let contiguous = self
            .held
            .iter()
            .enumerate()
            .all(|(i, c)| c.pos == first.pos.wrapping_add(i as u16))
            && first.pos.wrapping_add(self.held.len() as u16) == next;
        if contiguous {
            queue.set_next_avail(first.pos);
            self.held.clear();
        }
        contiguous
    }

    /// Publishes the lent frame `lent` whose `headers` were queued: the virtio-net header
    /// (`header`, see [`lent_header`]; num_buffers is filled in here) and the headers go in
    /// front of the payload, and its chains into the used ring, consecutively. Frames committed before
    /// it and never published (their queue was dropped) are returned empty. Returns how many
    /// chains it took.
    pub fn publish<Q: QueueT, M: GuestMemory>(
        &mut self,
        queue: &mut Q,
        mem: &M,
        headers: &[u8],
        lent: LentPayload,
        header: VnetHeader,
    ) -> Result<u16, PublishError> {
        let frame = loop {
            let Some(front) = self.committed.front().copied() else {
                return Err(PublishError::Gone);
            };
            if front.ticket > lent.ticket {
                return Err(PublishError::Gone);
            }
            self.committed.pop_front();
            self.publishing.clear();
            self.publishing
                .extend(self.committed_chains.drain(..front.chains));
            if front.ticket == lent.ticket {
                break front;
            }
            self.return_publishing(queue, mem);
        };
        if headers.len() != frame.header_room || lent.len != frame.payload {
            self.return_publishing(queue, mem);
            return Err(PublishError::Mismatch);
        }
        let mut head = rx_header(&header);
        let count = self.publishing.len() as u16;
        head[NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2].copy_from_slice(&count.to_le_bytes());
        // The two headers, scattered over the first descriptors.
        let mut written = 0;
        let total_head = NET_HDR_LEN + headers.len();
        'chains: for chain in &self.publishing {
            for &(addr, len) in chain.descs() {
                if written == total_head {
                    break 'chains;
                }
                let mut off = 0;
                while off < len as usize && written < total_head {
                    let piece = if written < NET_HDR_LEN {
                        &head[written..]
                    } else {
                        &headers[written - NET_HDR_LEN..]
                    };
                    let n = piece.len().min(len as usize - off);
                    if mem
                        .write_slice(&piece[..n], addr.unchecked_add(off as u64))
                        .is_err()
                    {
                        self.return_publishing(queue, mem);
                        return Err(PublishError::OutsideMemory);
                    }
                    off += n;
                    written += n;
                }
            }
        }
        let mut left = total_head + frame.payload;
        for chain in &self.publishing {
            let n = chain.room.min(left);
            left -= n;
            let _ = queue.add_used(mem, chain.head, n as u32);
        }
        self.stats.frames += 1;
        self.stats.bytes += frame.payload as u64;
        self.stats.large_segments += u64::from(header.is_segmented());
        Ok(count)
    }

    /// The chains of `publishing` go back to the guest empty (it drops them as too short).
    fn return_publishing<Q: QueueT, M: GuestMemory>(&mut self, queue: &mut Q, mem: &M) {
        for chain in self.publishing.drain(..) {
            let _ = queue.add_used(mem, chain.head, 0);
            self.returned = true;
        }
    }
}

#[cfg(test)]
mod tests;
